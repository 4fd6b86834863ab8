"""Editing message heads on their way through the proxy, without re-parsing them.

What lives here: ``request_head`` (the head sent upstream) and
``response_head`` (the head sent to the client), plus ``local_reply`` for
answers the proxy makes itself. Heads arrive already validated
(``core.http1_checks`` for requests, ``proxy.response`` for responses), so
edits work on the raw bytes.

Performance rule (shared/bench/README.md): the common head is forwarded as it
came, after ONE compiled regex looks for hop-by-hop fields (RFC 9110 §7.6.1)
and strips them; there is no per-header Python work. Only a head that needs
real edits (header set/add/remove, path or authority rewrite, a Connection
header nominating other fields) is split into fields and rebuilt.

What must not live here: I/O, framing decisions, routing.
"""

from __future__ import annotations

import re
from typing import Final

from meshwork.core.http1 import Request, format_response_head
from meshwork.core.http1_checks import split_fields
from meshwork.proxy.plan import Forward, HeaderEdits

__all__ = ["cut_hop", "local_reply", "request_head", "response_head"]

# Hop-by-hop fields a proxy must not forward (RFC 9110 §7.6.1). Expect is ours
# to answer (Envoy's default: strip it and send 100 Continue itself). Heads are
# validated, so a field name is followed directly by ":".
_REQ_HOP: Final = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|upgrade|expect|http2-settings):[^\r\n]*",
    re.I,
)
_REQ_HOP_UPGRADE: Final = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|expect|http2-settings):[^\r\n]*", re.I
)
_RESP_HOP: Final = re.compile(rb"\r\n(?:connection|keep-alive|proxy-connection|upgrade):[^\r\n]*", re.I)
_RESP_HOP_101: Final = re.compile(rb"\r\n(?:connection|keep-alive|proxy-connection):[^\r\n]*", re.I)
_CONNECTION: Final = re.compile(rb"\r\nconnection:([^\r\n]*)", re.I)
# A Connection header that may name fields to drop: anything but a lone
# close / keep-alive / upgrade (the usual values, checked in C).
_NOMINATES: Final = re.compile(
    rb"\r\nconnection:[ \t]*+(?!(?:close|keep-alive|upgrade)[ \t]*\r\n)[^\r\n]", re.I
)
# Connection options that are not field names (RFC 9112 §9.3, §9.6; RFC 9110 §7.8).
_OPTIONS: Final = frozenset((b"close", b"keep-alive", b"upgrade"))
# Never removed because a Connection header names them: dropping them would
# change framing or routing (a known smuggling trick).
_PROTECTED: Final = frozenset((b"host", b"content-length", b"transfer-encoding"))

_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
_CLOSE: Final = b"Connection: close\r\n"
_UPGRADE: Final = b"Connection: upgrade\r\n"


def _nominated(head: bytes) -> set[bytes]:
    """Field names that a Connection header declares hop-by-hop (lower-cased)."""
    names: set[bytes] = set()
    for value in _CONNECTION.findall(head):
        for token in value.split(b","):
            token = token.strip(b" \t").lower()
            if token and token not in _OPTIONS and token not in _PROTECTED:
                names.add(token)
    return names


def _rebuild(
    first_line: bytes,
    fields: list[tuple[bytes, bytes]],
    drop: set[bytes],
    edits: HeaderEdits | None,
    extra: bytes,
) -> bytes:
    if edits is not None:
        drop = drop | {n.lower() for n in edits.remove} | {n.lower() for n, _ in edits.set}
    parts = [first_line]
    for name, value in fields:
        if name.lower() not in drop:
            parts.append(b"%s: %s\r\n" % (name, value))
    if edits is not None:
        for name, value in edits.set:
            parts.append(b"%s: %s\r\n" % (name, value))
        for name, value in edits.add:
            parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


_REQ_DROP: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"expect", b"http2-settings")
)


def request_head(req: Request, plan: Forward) -> bytes:
    """The head to send upstream: hop-by-hop fields gone, the plan's edits applied.

    HTTP/1.0 requests keep their version (so the upstream never answers with
    chunked framing a 1.0 client cannot read) and ask for keep-alive so the
    pooled connection survives. An upgrade request keeps ``Upgrade`` and says
    ``Connection: upgrade``.
    """
    head = req.head
    start = req.fields_start - 2
    upgrade = req.upgrade is not None
    if (
        plan.request_headers is None
        and plan.rewrite_path is None
        and plan.rewrite_authority is None
    ):
        hop = _REQ_HOP_UPGRADE if upgrade else _REQ_HOP
        if not req.hop_free and hop.search(head, start) is not None:
            if _NOMINATES.search(head, start) is not None and _nominated(head):
                return _slow_request_head(req, plan)
            head = head[:start] + hop.sub(b"", head[start:])
        if upgrade:
            return head[:-2] + _UPGRADE + b"\r\n"
        if req.http_version == b"1.0":
            return head[:-2] + _KEEP_ALIVE + b"\r\n"
        return head
    return _slow_request_head(req, plan)


def _slow_request_head(req: Request, plan: Forward) -> bytes:
    head = req.head
    target = req.target
    if plan.rewrite_path is not None:  # the whole origin-form target (an absolute-form one too)
        target = plan.rewrite_path
    first = b"%s %s HTTP/%s\r\n" % (req.method, target, req.http_version)
    drop = set(_REQ_DROP) | _nominated(head)
    if req.upgrade is not None:
        drop.discard(b"upgrade")
        extra = _UPGRADE
    else:
        extra = _KEEP_ALIVE if req.http_version == b"1.0" else b""
    fields = split_fields(head, req.fields_start)
    if plan.rewrite_authority is not None:
        fields = [
            (n, plan.rewrite_authority if n.lower() == b"host" else v) for n, v in fields
        ]
    return _rebuild(first, fields, drop, plan.request_headers, extra)


def response_head(
    head: bytes,
    *,
    close: bool,
    http10_keep_alive: bool = False,
    upgraded: bool = False,
    edits: HeaderEdits | None = None,
    extra: bytes = b"",
    hop: list[bytes] | None = None,
) -> bytes:
    """The upstream's response head as the client gets it.

    Hop-by-hop fields are stripped; then ``Connection: close`` when the client
    connection ends after this response, ``keep-alive`` for an HTTP/1.0 client
    that keeps it, ``upgrade`` after a 101. ``extra`` is preformatted field
    lines to append. ``hop``, when given, is the hop-by-hop lines already found
    (``ResponseReader.hop``: each "CRLF name: value", none nominating other
    fields): they are cut out without scanning the head again.
    """
    if head[7] == 48:  # "HTTP/1.0": we speak 1.1 to the client, whatever the upstream spoke
        head = b"HTTP/1.1" + head[8:]
    if hop is not None and not edits:
        for line in hop:
            head = head.replace(line + b"\r\n", b"\r\n", 1)
    else:
        head = _strip_response_hop(head, upgraded, edits)
    if upgraded:
        extra += _UPGRADE
    elif close:
        extra += _CLOSE
    elif http10_keep_alive:
        extra += _KEEP_ALIVE
    if extra:
        return head[:-2] + extra + b"\r\n"
    return head


# Upstream heads already cut for a kept-alive HTTP/1.1 client, by the upstream's head: a
# backend repeats its head byte for byte (only Date moves, once a second; see
# proxy.response). The key is the whole head, so a hit is what cutting would give.
# Bounded like the response reader's memo: emptied when full, long heads not kept.
_CUT: Final[dict[bytes, bytes]] = {}
_CUT_MAX: Final = 256
_CUT_HEAD_MAX: Final = 1024


def cut_hop(head: bytes, hop: list[bytes], close: bool, http10_keep_alive: bool) -> bytes:
    """``response_head`` for the usual case, positionally: no edits, no upgrade, ``hop`` known."""
    plain = not close and not http10_keep_alive
    if plain:
        cut = _CUT.get(head)
        if cut is not None:
            return cut
    key = head
    if head[7] == 48:  # "HTTP/1.0"
        head = b"HTTP/1.1" + head[8:]
    for line in hop:
        head = head.replace(line + b"\r\n", b"\r\n", 1)
    if close:
        return head[:-2] + _CLOSE + b"\r\n"
    if http10_keep_alive:
        return head[:-2] + _KEEP_ALIVE + b"\r\n"
    if len(key) <= _CUT_HEAD_MAX:
        if len(_CUT) >= _CUT_MAX:
            _CUT.clear()
        _CUT[key] = head
    return head


def _strip_response_hop(head: bytes, upgraded: bool, edits: HeaderEdits | None) -> bytes:
    hop = _RESP_HOP_101 if upgraded else _RESP_HOP
    line_end = head.find(b"\r\n")
    if edits or (_NOMINATES.search(head, line_end) is not None and _nominated(head)):
        drop = {b"connection", b"keep-alive", b"proxy-connection"} | _nominated(head)
        if not upgraded:
            drop.add(b"upgrade")
        return _rebuild(head[: line_end + 2], split_fields(head, line_end + 2), drop, edits, b"")
    return hop.sub(b"", head)  # field names cannot start a line's first byte, so no anchor needed


def local_reply(
    status: int,
    body: bytes,
    *,
    close: bool,
    reason: str = "",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    content_type: bytes = b"text/plain",
    head_only: bool = False,
) -> bytes:
    """A complete response made by the proxy (Envoy's local replies are text/plain)."""
    fields: list[tuple[bytes | str, bytes | str]] = list(headers)
    if body:
        fields.append((b"content-type", content_type))
    fields.append((b"content-length", b"%d" % len(body)))
    if reason:
        fields.append((b"x-meshwork-reason", reason.encode("latin-1", "replace")))
    if close:
        fields.append((b"connection", b"close"))
    out = format_response_head(status, fields)
    return out if head_only else out + body
