"""Request-path normalisation: one spelling per path, before routing, authorization and forwarding.

What lives here: ``normalize_target(target, options)``, which turns the raw
request-target of an HTTP/1.1 request line into the path the proxy matches
routes and AuthorizationPolicy ``paths`` against *and* forwards to the app,
or a ``PathRejected`` (answer 400 and close). The same string must serve all
three uses: if authorization saw one path and the app another, a DENY on
``/admin`` could be walked around with ``/public/../admin`` (CVE-2021-31920).

The modes are Istio's meshConfig ``pathNormalization.normalization``:

- ``NONE``: the path is used as received (only the checks every mode makes).
- ``BASE``: RFC 3986 §6.2.2 syntax normalisation: percent-decode the
  unreserved characters (``%61`` → ``a``, upper-case the hex of the escapes
  that stay), turn ``\\`` into ``/``, remove ``.`` and ``..`` segments
  (§5.2.4). Decoding happens once: ``%2561`` stays ``%2561``.
- ``MERGE_SLASHES``: BASE, then ``//`` → ``/``.
- ``DECODE_AND_MERGE_SLASHES``: first ``%2F`` → ``/`` and ``%5C`` → ``\\``, then
  MERGE_SLASHES. Istio recommends it whenever traffic is allowed by default;
  it is meshwork's default because it is the only mode in which no spelling
  of a denied path reaches the app.

Every mode rejects what no server should guess about: ``%00``, malformed
escapes, control characters, spaces, non-ASCII, a fragment (``#`` never
belongs in a request-target, RFC 9112 §3.2) and, by default, ``;`` path
parameters (servlet containers strip ``;x=1`` and would serve ``/admin;x=1``
as ``/admin``). The query is kept verbatim for forwarding and is never part
of what policies match.

What must not live here: header or method checks (``meshwork.core.http1``)
and the policies themselves (``authz``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

__all__ = [
    "DEFAULT_OPTIONS",
    "NormalizeOptions",
    "NormalizedPath",
    "PathNormalization",
    "PathRejected",
    "normalize_path",
    "normalize_target",
]


class PathNormalization(Enum):
    """Istio ``MeshConfig.ProxyPathNormalization.NormalizationType``."""

    NONE = "NONE"
    BASE = "BASE"
    MERGE_SLASHES = "MERGE_SLASHES"
    DECODE_AND_MERGE_SLASHES = "DECODE_AND_MERGE_SLASHES"


EscapedSlashes = Literal["keep", "reject", "decode"]  # Envoy path_with_escaped_slashes_action
Backslashes = Literal["slash", "reject", "keep"]
PathParams = Literal["reject", "keep"]


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """How to normalise. ``escaped_slashes`` None means "what the mode implies"."""

    mode: PathNormalization = PathNormalization.DECODE_AND_MERGE_SLASHES
    escaped_slashes: EscapedSlashes | None = None
    backslashes: Backslashes = "slash"
    path_params: PathParams = "reject"

    @property
    def slashes_action(self) -> EscapedSlashes:
        if self.escaped_slashes is not None:
            return self.escaped_slashes
        return "decode" if self.mode is PathNormalization.DECODE_AND_MERGE_SLASHES else "keep"


DEFAULT_OPTIONS = NormalizeOptions()


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """The path to match and forward; ``query`` is everything after ``?`` (without it), or None."""

    path: str
    query: str | None = None

    @property
    def target(self) -> str:
        """The request-target to forward: the normalised path plus the original query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


@dataclass(frozen=True, slots=True)
class PathRejected:
    """The target cannot be normalised safely: answer ``status`` and close the connection."""

    reason: str
    status: int = 400


# RFC 3986 §2.3 unreserved: the escapes of these mean the same as the character.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 pchar plus "/", "%" (checked separately) and "\" (handled by option); anything else
# in a path (space, control, quote, "<", ">", "{", "|", "^", "`", non-ASCII) is refused.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%\\]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\\\[\]{}|^`\"<>]*")
MAX_TARGET = (
    16 * 1024
)  # the request line limit of meshwork.core.http1 (nginx's large_client_header_buffers)


def normalize_target(
    target: str, options: NormalizeOptions = DEFAULT_OPTIONS
) -> NormalizedPath | PathRejected:
    """Normalise an origin-form (``/a/b?q``) or absolute-form (``http://h/a/b?q``) request-target.

    ``*`` (the target of ``OPTIONS *``) is returned unchanged.
    """
    if target == "*":
        return NormalizedPath("*")
    if len(target) > MAX_TARGET:
        return PathRejected("request-target too long", 414)
    if "#" in target:
        return PathRejected("a request-target has no fragment (RFC 9112 §3.2)")
    lowered = target[:8].lower()
    if lowered.startswith(("http://", "https://")):
        rest = target[target.index("//") + 2 :]
        slash = rest.find("/")
        question = rest.find("?")
        if slash == -1 or (question != -1 and question < slash):
            target = "/" + (rest[question:] if question != -1 else "")
        else:
            target = rest[slash:]
    path, sep, query = target.partition("?")
    if sep and not _QUERY_CHARS.fullmatch(query):
        return PathRejected("the query has characters that must be percent-encoded")
    result = normalize_path(path, options)
    if isinstance(result, PathRejected):
        return result
    return NormalizedPath(result, query if sep else None)


def normalize_path(path: str, options: NormalizeOptions = DEFAULT_OPTIONS) -> str | PathRejected:
    """Normalise the path part of a request-target (no query); see the module docstring."""
    if not path.startswith("/"):
        return PathRejected("the path must start with '/'")
    if not _PATH_CHARS.fullmatch(path):
        return PathRejected("the path has characters that must be percent-encoded")
    if options.path_params == "reject" and ";" in path:
        return PathRejected("path parameters (';') are refused: servers disagree on what they mean")
    if "\\" in path and options.backslashes == "reject":
        return PathRejected("backslashes are refused in paths")
    decoded = _decode(path, options)
    if isinstance(decoded, PathRejected):
        return decoded
    mode = options.mode
    if mode is PathNormalization.NONE:
        return decoded
    if options.backslashes == "slash":
        decoded = decoded.replace("\\", "/")
    out = remove_dot_segments(decoded)
    if mode in (PathNormalization.MERGE_SLASHES, PathNormalization.DECODE_AND_MERGE_SLASHES):
        # After dot removal: "/a//../b" is "/a/b" as RFC 3986 reads it (the ".." removes the
        # empty segment), the same answer Envoy gives. Merging creates no dot segment.
        out = _merge_slashes(out)
    return out


def _decode(path: str, options: NormalizeOptions) -> str | PathRejected:
    """Check every escape; decode unreserved ones (BASE and up) and slashes when asked."""
    if "%" not in path:
        return path
    base = options.mode is not PathNormalization.NONE
    slashes = options.slashes_action
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        hex2 = path[i + 1 : i + 3]
        if len(hex2) != 2 or not (hex2[0] in _HEX and hex2[1] in _HEX):
            return PathRejected("malformed percent-encoding in the path")
        value = chr(int(hex2, 16))
        if value == "\x00":
            return PathRejected("%00 in the path")
        if value in "/\\":
            if slashes == "reject":
                return PathRejected("percent-encoded slashes (%2F, %5C) are refused in paths")
            if slashes == "decode":
                out.append(value)
                i += 3
                continue
        if base and value in _UNRESERVED:
            out.append(value)
        else:
            out.append("%" + hex2.upper() if base else path[i : i + 3])
        i += 3
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path: ``/a/./b/../c`` → ``/a/c``; never climbs above ``/``."""
    if "." not in path:
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path
