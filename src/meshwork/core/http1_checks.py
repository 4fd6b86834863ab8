"""Strict checks on HTTP/1.1 request bytes: the grammar, the limits, the framing rules.

What lives here: the limits, the compiled grammars and the pure functions that
decide whether a request head, a chunk-size line or a trailer section is
acceptable (RFC 9112, RELIABILITY.md §1), and that pull the framing facts
(Content-Length, chunked, Host, keep-alive, Expect, Upgrade) out of a head.
Every refusal is a ``RemoteProtocolError`` whose ``status_hint`` is the status
to answer with before closing the connection.

What must not live here: buffering, per-connection state, events or llhttp.
``http1.py`` owns the byte stream and calls into this module. The only thing
remembered between calls is a bounded memo of Host values already found valid,
which never changes an answer.

Performance rule: a well-formed head is validated by one compiled regex
(``_HEAD``) and its framing headers are found by a second one (``_SPECIAL``),
so a small GET costs a handful of C-level scans and no per-header Python
callback. Compiled (``meshwork._accel``), the usual head (a known method, an
origin-form target) is checked instead by ``_scan``, a loop over its bytes
that reaches the same verdict in about half the time. The slow, line-by-line
``diagnose_head`` runs only on the error path, to say precisely what was wrong.
"""

from __future__ import annotations

import re
from typing import Final

from meshwork.errors import RemoteProtocolError

# --- Limits -----------------------------------------------------------------

# Envoy's default max_request_headers_kb is 60; the whole head (request line
# and fields) must fit in it, else 431.
MAX_HEAD_BYTES: Final = 60 * 1024
# Envoy's default max_headers_count.
MAX_HEADERS: Final = 100
# Twice nginx's and Apache's 8 KiB request-line buffer, so long Kubernetes
# label/field selectors fit; longer request lines get 414.
MAX_REQUEST_LINE: Final = 16 * 1024
# Go's net/http caps a chunk-size line (size plus extensions) at 4096 bytes.
MAX_CHUNK_LINE: Final = 4096
# Total chunk-extension bytes allowed in one message: nobody needs extensions,
# and an unbounded amount of them costs CPU with no body to show for it
# (Kestrel CVE-2025-55315, aiohttp threat model 1.10).
MAX_CHUNK_EXT_TOTAL: Final = 16 * 1024
# The trailer section obeys the same caps as a head (it is a field section too).
MAX_TRAILER_BYTES: Final = MAX_HEAD_BYTES
# Content-Length longer than 19 digits cannot fit a signed 64-bit length.
MAX_CONTENT_LENGTH_DIGITS: Final = 19
# Chunk sizes longer than 16 hex digits overflow 64 bits.
MAX_CHUNK_SIZE_DIGITS: Final = 16
# Empty lines (bare CRLF) skipped before a request line: RFC 9112 §2.2 says a
# server SHOULD ignore "at least one"; old clients add one after a POST body.
MAX_LEADING_EMPTY_LINES: Final = 2

# Methods llhttp knows in request mode; an upper-case token outside this set is
# 501 (RFC 9110 §9.1), anything else in the method position is 400.
KNOWN_METHODS: Final = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE PATCH COPY LOCK MKCOL MOVE "
    b"PROPFIND PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY "
    b"CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PURGE MKCALENDAR LINK "
    b"UNLINK SOURCE QUERY".split()
)
# Methods that must not carry content (RFC 9110 §9.3.1/9.3.2/9.3.8 give it no
# meaning; RELIABILITY.md §1 row 16 chooses 400). CONNECT is handled apart.
NO_BODY_METHODS: Final = frozenset((b"GET", b"HEAD", b"TRACE"))
# Trailer fields that would change framing or routing if anyone merged them.
FORBIDDEN_TRAILERS: Final = frozenset((b"content-length", b"transfer-encoding", b"host"))

# --- Grammar (RFC 9110 §5.6.2, RFC 9112 §3, §5) -------------------------------

_TCHAR: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
# Field names: tchar minus "_" (RELIABILITY.md row 7, Envoy's
# headers_with_underscores_action: REJECT_REQUEST).
_NAME_CHAR: Final = rb"!#$%&'*+\-.^`|~0-9A-Za-z"
# Field values: VCHAR, obs-text, SP and HTAB; never CR, LF, NUL or other CTLs.
_VALUE_CHAR: Final = rb"\t\x20-\x7e\x80-\xff"
_UPPER_TCHAR: Final = rb"!#$%&'*+\-.^_`|~0-9A-Z"

# One pass over a whole head. Every quantifier stops at a byte the next token
# cannot start with, so matching is linear in the head length.
_HEAD: Final = re.compile(
    rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/1\.([01])\r\n"
    rb"(?:[" + _NAME_CHAR + rb"]+:[" + _VALUE_CHAR + rb"]*\r\n)*\r\n"
)
# A field section alone (trailers): the same field grammar.
_FIELDS: Final = re.compile(rb"(?:[" + _NAME_CHAR + rb"]+:[" + _VALUE_CHAR + rb"]*\r\n)*\r\n")
# The headers that decide framing, routing and connection handling, found in a
# lower-cased copy of a validated head (so ``name:`` is exact: no whitespace can
# precede the colon once ``_HEAD`` matched); and the other hop-by-hop fields
# (RFC 9110 §7.6.1), only so that a head without any is known to be hop-free.
_SPECIAL: Final = re.compile(
    rb"\r\n(content-length|transfer-encoding|host|connection|expect|upgrade"
    rb"|keep-alive|proxy-connection|te|http2-settings):([^\r\n]*)"
)
# What a proxy may forward as it came: any special field but these is hop-by-hop.
_END_TO_END: Final = frozenset((b"host", b"content-length", b"transfer-encoding"))
# Splits a validated field section into (name, value) pairs; values still carry
# any trailing OWS, which ``split_fields`` strips only when there is some.
_FIELD: Final = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*)\r\n")
_TRAILING_WS: Final = re.compile(rb"[ \t]\r\n")
_DIGITS: Final = re.compile(rb"[0-9]+")
_TOKEN: Final = re.compile(rb"[" + _TCHAR + rb"]+")
_NAME: Final = re.compile(rb"[" + _NAME_CHAR + rb"]+")
_VALUE: Final = re.compile(rb"[" + _VALUE_CHAR + rb"]*")
# Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal
# or a reg-name / IPv4 address; no userinfo, at most five port digits.
_HOST: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?")
_AUTHORITY: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+):[0-9]{1,5}")
_ABSOLUTE_FORM: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[\x21-\x7e]*")
# chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1). No BWS around ";" or
# "=" (llhttp refuses it too), quoted-string values allowed.
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)"
    rb"((?:;[" + _TCHAR + rb"]+(?:=(?:[" + _TCHAR + rb"]+"
    rb"|\"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*\"))?)*)"
)
# A CR not followed by LF, or an LF not preceded by CR.
_BARE_CR_LF: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_VERSION: Final = re.compile(rb"HTTP/([0-9])\.([0-9])")


# Compiled (``meshwork._accel``), a loop over bytes costs a few machine
# instructions per byte, and the fast scan below (``_scan``) checks a usual
# head in about half the time the regex takes; interpreted, the regex's C loop
# wins, so only a compiled build scans. (``make test`` runs this module's tests
# both ways; the scan's own tests call it either way.)
_COMPILED: Final = not __file__.endswith(".py")

# The fast scan's byte sets. ``_LINE_TABLE`` is a ``bytes.translate`` table
# mapping every byte a field value may hold (and so a request line) to itself
# and every other byte elsewhere: a translation equal to its input had only
# such bytes (CPython then returns the input itself: one table pass, no copy).
# ``_NAME_OK`` and ``_TARGET_OK`` say per byte value whether it may appear in a
# field name and in an origin-form target; compiled, indexing them is a load.
def _allowed(pattern: bytes) -> list[int]:
    return [b for b in range(256) if re.fullmatch(pattern, bytes([b]))]


def _translate_table(allowed: list[int]) -> bytes:
    return bytes(b if b in allowed else (b + 1) % 256 for b in range(256))


def _flags(allowed: list[int]) -> bytes:
    return bytes(1 if b in allowed else 0 for b in range(256))


_LINE_TABLE: Final = _translate_table(_allowed(rb"[" + _VALUE_CHAR + rb"]"))
_NAME_OK: Final = _flags(_allowed(rb"[" + _NAME_CHAR + rb"]"))
_TARGET_OK: Final = _flags(_allowed(rb"[\x21-\x7e]"))
# The names ``_SPECIAL`` finds, by length (te 2 ... transfer-encoding 17), all
# lower-case letters, digits and "-": a field name of another length is not one.
_SPECIAL_NAMES: Final = (
    b"content-length", b"transfer-encoding", b"host", b"connection", b"expect", b"upgrade",
    b"keep-alive", b"proxy-connection", b"te", b"http2-settings",
)  # fmt: skip
_SPECIAL_BY_LENGTH: Final[tuple[tuple[bytes, ...], ...]] = tuple(
    tuple(n for n in _SPECIAL_NAMES if len(n) == i) for i in range(18)
)


def _reject(msg: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(msg, status_hint=status)


# The framing facts of one validated head, in ``Request``'s field order:
# (method, target, version, head, content_length, chunked, keep_alive,
#  expect_continue, upgrade, host, fields_start, hop_free). ``hop_free``: no
# hop-by-hop field at all (Connection, Keep-Alive, Proxy-Connection, TE,
# Upgrade, Expect, HTTP2-Settings), so a proxy forwards the head as it came.
# A plain tuple, because this is built once per request on the proxy's hot path.
Head = tuple[
    bytes, bytes, bytes, bytes, int | None, bool, bool, bool, bytes | None, bytes | None, int, bool
]

# Host values (as they appear after the colon, lower-cased) already found
# valid, mapped to their OWS-stripped form; a proxy sees the same few again
# and again.
_HOST_CACHE: Final[dict[bytes, bytes]] = {}
_HOST_CACHE_MAX: Final = 1024  # entries; cleared when full, so memory stays bounded
_HOST_CACHE_ENTRY_MAX: Final = 300  # bytes: a DNS name (253) plus a port; longer ones are not kept


def check_head(head: bytes, max_body: int | None) -> Head:
    """Validate a complete request head (request line through the empty line).

    Returns the framing facts, or raises ``RemoteProtocolError``. ``max_body``
    turns a Content-Length above it into 413 before any body byte is read.
    """
    scanned = _scan(head) if _COMPILED else None
    if scanned is not None:
        # The usual head: a known method, an origin-form target, few fields.
        method, target, line_end, specials = scanned
        version = b"1.1" if head[line_end - 1] == 49 else b"1.0"  # 49 is "1"
    else:
        m = _HEAD.fullmatch(head)
        if m is None:
            raise diagnose_head(head)
        method, target = m.group(1, 2)
        line_end = m.end(3)
        if line_end > MAX_REQUEST_LINE:
            raise _reject("request line too long", 414)
        if method not in KNOWN_METHODS:
            if _UPPER_TOKEN.fullmatch(method):
                raise _reject(f"method {method.decode('ascii')!r} is not implemented", 501)
            raise _reject("method must be an upper-case token")
        version = b"1.1" if head[line_end - 1] == 49 else b"1.0"  # 49 is "1"
        # A field line takes at least 4 bytes ("a:" CRLF), so small heads skip the count.
        if len(head) > 4 * MAX_HEADERS and head.count(b"\n", line_end + 2) > MAX_HEADERS + 1:
            raise _reject(f"more than {MAX_HEADERS} header fields", 431)
        if target[0] != 47 or method == b"CONNECT":  # 47 is "/": origin-form is the common case
            _check_target(method, target)
        specials = _SPECIAL.findall(head.lower(), line_end)
    if len(specials) == 1 and specials[0][0] == b"host" and specials[0][1] in _HOST_CACHE:
        # Fast path, the usual GET: a known-good Host and no other framing or
        # connection header, so no body, no options, and the version's default
        # keep-alive (RFC 9112 §9.3). Same result as the general path below.
        return (
            method,
            target,
            version,
            head,
            None,
            False,
            version == b"1.1",
            False,
            None,
            _HOST_CACHE[specials[0][1]],
            line_end + 2,
            True,
        )

    host: bytes | None = None
    hosts = 0
    cls: list[bytes] | None = None
    tes: list[bytes] | None = None
    conns: list[bytes] | None = None
    expects: list[bytes] | None = None
    upgrades: list[bytes] | None = None
    hop_free = True
    for name, raw in specials:
        value = raw.strip(b" \t")
        if name == b"host":
            host = raw
            hosts += 1
        elif name == b"content-length":
            cls = [value] if cls is None else [*cls, value]
        elif name == b"transfer-encoding":
            tes = [value] if tes is None else [*tes, value]
        elif name == b"connection":
            conns = [value] if conns is None else [*conns, value]
        elif name == b"expect":
            expects = [value] if expects is None else [*expects, value]
        elif name == b"upgrade":
            upgrades = [value] if upgrades is None else [*upgrades, value]
        if hop_free and name not in _END_TO_END:
            hop_free = False  # keep-alive, proxy-connection, te, http2-settings: only this

    if host is not None and hosts == 1 and host in _HOST_CACHE:
        host = _HOST_CACHE[host]
    else:
        _check_host(host, hosts, version)
        if host is not None:
            host = host.strip(b" \t")

    content_length: int | None = None
    chunked = False
    if tes is not None:
        if version == b"1.0":
            raise _reject("Transfer-Encoding in an HTTP/1.0 request")
        if cls is not None:
            raise _reject("both Content-Length and Transfer-Encoding")
        chunked = _check_transfer_encoding(tes)
    elif cls is not None:
        content_length = _check_content_length(cls)
        if len(cls) > 1:
            head = _collapse_content_length(head, line_end)
    if content_length or chunked:
        if method in NO_BODY_METHODS or method == b"CONNECT":
            raise _reject(f"a {method.decode('ascii')} request must not carry a body")
        if max_body is not None and content_length is not None and content_length > max_body:
            raise _reject(f"body of {content_length} bytes exceeds the {max_body}-byte limit", 413)

    tokens = _connection_tokens(conns) if conns is not None else ()
    if version == b"1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    expect_continue = False
    if expects is not None and version == b"1.1":
        # RFC 9110 §10.1.1: only 100-continue is defined; a 1.0 client's
        # expectation is ignored.
        if len(expects) > 1 or expects[0] != b"100-continue":
            raise _reject("unsupported expectation", 417)
        expect_continue = True
    upgrade: bytes | None = None
    if upgrades is not None and b"upgrade" in tokens:
        if len(upgrades) > 1 or not upgrades[0]:
            raise _reject("malformed Upgrade header")
        if content_length or chunked:
            raise _reject("an Upgrade request must not carry a body")
        # The application sees the protocol name in its original case.
        upgrade = _original_value(head, b"upgrade", line_end)
    return (
        method,
        target,
        version,
        head,
        content_length,
        chunked,
        keep_alive,
        expect_continue,
        upgrade,
        host,
        line_end + 2,
        hop_free,
    )


def _scan(head: bytes) -> tuple[bytes, bytes, int, list[tuple[bytes, bytes]]] | None:
    """The common head checked without the regex, with the same verdict; None: not sure.

    Accepts only what ``_HEAD`` accepts *and* the general path would pass
    (a known method, an origin-form target, a request line and field count
    within the limits); returns (method, target, end of the request line,
    and what ``_SPECIAL`` finds in the lower-cased head). Anything else,
    valid or not, returns None and takes the general path, which decides and
    explains. This is one split, one table pass over the head and a look at
    each field name, instead of a regex engine step per byte.
    """
    lines = head.split(b"\r\n")
    n = len(lines)
    if n < 3 or n - 3 > MAX_HEADERS or lines[n - 2] or lines[n - 1]:
        return None
    joined = b"".join(lines)
    if joined.translate(_LINE_TABLE) != joined:
        return None  # a control byte, DEL, NUL, or a CR or LF not in a CRLF pair
    request_line = lines[0]
    if len(request_line) > MAX_REQUEST_LINE:
        return None
    parsed = _method_and_target(request_line)
    if parsed is None:
        return None
    method, target = parsed
    if not (method == b"GET" or method in KNOWN_METHODS) or method == b"CONNECT":
        return None
    specials: list[tuple[bytes, bytes]] = []
    for i in range(1, n - 2):
        line = lines[i]
        colon = _name_length(line)
        if colon == 0:
            return None  # no name, no colon, or a byte no name may hold (whitespace, "_", obs-fold)
        if colon < 18:
            special = _special_name(line, colon)
            if special is not None:
                specials.append((special, line[colon + 1 :].lower()))
    return method, target, len(request_line), specials


def _method_and_target(line: bytes) -> tuple[bytes, bytes] | None:
    """(method, target) of ``METHOD SP origin-form SP HTTP/1.x`` (1.0 or 1.1), else None."""
    size = len(line)
    sp = 0
    while sp < size and line[sp] != 32:  # 32 is SP
        sp += 1
    end = sp + 1
    if end >= size or line[end] != 47:  # 47 is "/": origin-form
        return None
    while end < size and _TARGET_OK[line[end]]:
        end += 1
    version = line[end:]
    if version != b" HTTP/1.1" and version != b" HTTP/1.0":
        return None
    return line[:sp], line[sp + 1 : end]


def _name_length(line: bytes) -> int:
    """The length of a field line's name, or 0: no colon, an empty name, or a byte no name may hold."""
    size = len(line)
    colon = 0
    while colon < size and _NAME_OK[line[colon]]:
        colon += 1
    if colon == size or line[colon] != 58:  # 58 is ":"
        return 0
    return colon


def _special_name(line: bytes, length: int) -> bytes | None:
    """The lower-case special name (``_SPECIAL``'s) the line's name of ``length`` bytes is, or None."""
    for special in _SPECIAL_BY_LENGTH[length]:
        for i in range(length):
            b = line[i]
            if b != special[i] and b + 32 != special[i]:  # the name's bytes passed _NAME_OK
                break
        else:
            return special
    return None


_UPPER_TOKEN: Final = re.compile(rb"[" + _UPPER_TCHAR + rb"]+")


def _check_target(method: bytes, target: bytes) -> None:
    """The request-target form must fit the method (RFC 9112 §3.2)."""
    if method == b"CONNECT":
        if not _AUTHORITY.fullmatch(target):
            raise _reject("CONNECT needs an authority-form target (host:port)")
    elif target[:1] == b"/":
        return
    elif target == b"*":
        if method != b"OPTIONS":
            raise _reject("asterisk-form target is only for OPTIONS")
    elif not _ABSOLUTE_FORM.fullmatch(target):
        raise _reject("request target must be origin-form or absolute-form")


def _check_content_length(values: list[bytes]) -> int:
    """RFC 9112 §6.3: 1*DIGIT; identical duplicate lines collapse, any list is 400."""
    first = values[0]
    for value in values:
        if b"," in value:
            raise _reject("list-valued Content-Length")
        if not _DIGITS.fullmatch(value):
            raise _reject("Content-Length is not a decimal number")
        if len(value) > MAX_CONTENT_LENGTH_DIGITS:
            raise _reject("Content-Length has too many digits")
        if value != first:
            raise _reject("conflicting Content-Length values")
    return int(first)


def _collapse_content_length(head: bytes, line_end: int) -> bytes:
    """Drop every Content-Length line after the first (they are identical)."""
    lines = head[line_end + 2 : -2].split(b"\r\n")
    kept: list[bytes] = []
    seen = False
    for line in lines[:-1]:
        if line[:15].lower() == b"content-length:":
            if seen:
                continue
            seen = True
        kept.append(line)
    return head[: line_end + 2] + b"".join(line + b"\r\n" for line in kept) + b"\r\n"


def _check_transfer_encoding(values: list[bytes]) -> bool:
    """Only a lone ``chunked`` is accepted (RFC 9112 §6.1, §6.3; row 5)."""
    if len(values) == 1 and values[0] == b"chunked":  # the usual case (already lower-cased)
        return True
    codings = [c.strip(b" \t").lower() for c in b",".join(values).split(b",")]
    if any(not c for c in codings):
        raise _reject("empty element in Transfer-Encoding")
    if codings[-1] != b"chunked":
        raise _reject("Transfer-Encoding does not end in chunked")
    if codings.count(b"chunked") > 1:
        raise _reject("chunked applied more than once")
    if len(codings) > 1:
        # A coding before chunked that we would have to decode: we implement none.
        raise _reject("transfer codings other than chunked are not implemented", 501)
    return True


def _check_host(raw: bytes | None, count: int, version: bytes) -> None:
    """RFC 9112 §3.2: HTTP/1.1 needs exactly one valid Host; 1.0 at most one.

    ``raw`` is the lower-cased value with its OWS; a valid one is cached.
    """
    if count == 0:
        if version == b"1.1":
            raise _reject("missing Host header")
        return
    if count > 1:
        raise _reject("more than one Host header")
    assert raw is not None
    host = raw.strip(b" \t")
    if not _HOST.fullmatch(host):
        raise _reject("invalid Host header")
    if len(raw) <= _HOST_CACHE_ENTRY_MAX:
        if len(_HOST_CACHE) >= _HOST_CACHE_MAX:
            _HOST_CACHE.clear()
        _HOST_CACHE[raw] = host


def _connection_tokens(values: list[bytes]) -> set[bytes]:
    """The lower-cased connection options (RFC 9110 §7.6.1); empty list elements are skipped."""
    tokens = set()
    for part in b",".join(values).split(b","):
        token = part.strip(b" \t")
        if not token:
            continue
        if not _TOKEN.fullmatch(token):
            raise _reject("invalid Connection header")
        tokens.add(token)
    return tokens


def _original_value(head: bytes, lower_name: bytes, line_end: int) -> bytes:
    """The OWS-stripped value of the first field named ``lower_name``, in its original case."""
    for name, value in _FIELD.findall(head, line_end + 2):
        if name.lower() == lower_name:
            return bytes(value.strip(b" \t"))
    raise AssertionError("field vanished")  # pragma: no cover - checked by the caller


def split_fields(section: bytes, start: int = 0) -> list[tuple[bytes, bytes]]:
    """(name, value) pairs of a *validated* field section; names as sent, values OWS-stripped."""
    pairs: list[tuple[bytes, bytes]] = _FIELD.findall(section, start)
    if _TRAILING_WS.search(section, start):
        pairs = [(name, value.rstrip(b" \t")) for name, value in pairs]
    return pairs


# --- Incomplete heads ----------------------------------------------------------


def has_bare_cr_lf(buf: bytearray | bytes, start: int) -> bool:
    """Whether ``buf[start:]`` holds a CR without its LF or an LF without its CR.

    A CR as the very last byte may still get its LF and does not count.
    """
    end = len(buf)
    if end and buf[end - 1] == 13:
        end -= 1
    return _BARE_CR_LF.search(buf, start, end) is not None


def check_partial_head(buf: bytes | bytearray, scan_from: int, line_seen: bool) -> bool:
    """Refuse an unfinished head early: bare CR/LF, an over-long request line.

    ``scan_from`` is where the previous call stopped looking (so a slow client
    costs linear, not quadratic, time). Returns whether the request line's CRLF
    has been seen.
    """
    if has_bare_cr_lf(buf, scan_from):
        raise _reject("bare CR or LF in request head")
    if not line_seen:
        line_seen = buf.find(b"\r\n", max(scan_from - 1, 0)) >= 0
        if not line_seen and len(buf) > MAX_REQUEST_LINE:
            raise _reject("request line too long", 414)
    return line_seen


# --- Error diagnosis (slow path) -----------------------------------------------


def diagnose_head(head: bytes) -> RemoteProtocolError:
    """Explain why ``head`` failed ``_HEAD``: the first offending line decides."""
    if _BARE_CR_LF.search(head):
        return _reject("bare CR or LF in request head")
    lines = head[:-4].split(b"\r\n")
    err = _diagnose_request_line(lines[0])
    if err is not None:
        return err
    for line in lines[1:]:
        err = diagnose_field_line(line)
        if err is not None:
            return err
    return _reject("malformed request head")  # pragma: no cover - _HEAD and the above agree


def _diagnose_request_line(line: bytes) -> RemoteProtocolError | None:
    if len(line) > MAX_REQUEST_LINE:
        return _reject("request line too long", 414)
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        return _reject("request line must be 'METHOD SP target SP HTTP-version'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        return _reject("method must be an upper-case token")
    if not re.fullmatch(rb"[\x21-\x7e]+", target):
        return _reject("invalid character in request target")
    m = _VERSION.fullmatch(version)
    if m is None:
        return _reject("malformed HTTP version")
    if m.group(1, 2) not in ((b"1", b"1"), (b"1", b"0")):
        return _reject("only HTTP/1.0 and HTTP/1.1 are supported", 505)
    return None


def diagnose_field_line(line: bytes) -> RemoteProtocolError | None:
    """Why one field line (without its CRLF) is bad, or None if it is fine."""
    if line[:1] in (b" ", b"\t"):
        return _reject("obsolete line folding (obs-fold)")
    name, colon, value = line.partition(b":")
    if not colon:
        return _reject("header line without a colon")
    if not name.strip(b" \t"):
        return _reject("empty header name")
    if name[-1:] in (b" ", b"\t"):
        return _reject("whitespace between header name and colon")
    if b"_" in name:
        return _reject("underscore in header name")
    if not _NAME.fullmatch(name):
        return _reject("invalid character in header name")
    if not _VALUE.fullmatch(value):
        return _reject("invalid character in header value")
    return None


# --- Chunked framing -----------------------------------------------------------


def check_chunk_line(line: bytes) -> tuple[int, int]:
    """Parse a chunk-size line (without CRLF): returns (size, extension length)."""
    m = _CHUNK_LINE.fullmatch(line)
    if m is None:
        if not line or line[:1] not in b"0123456789abcdefABCDEF":
            raise _reject("invalid chunk size")
        raise _reject("invalid chunk size or chunk extension")
    digits = m.group(1)
    if len(digits) > MAX_CHUNK_SIZE_DIGITS:
        raise _reject("chunk size overflows")
    return int(digits, 16), len(line) - len(digits)


def check_trailers(section: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Validate a trailer section (fields plus the final CRLF) and split it."""
    if section == b"\r\n":
        return ()
    if _FIELDS.fullmatch(section) is None:
        if _BARE_CR_LF.search(section):
            raise _reject("bare CR or LF in trailer section")
        for line in section[:-4].split(b"\r\n"):
            err = diagnose_field_line(line)
            if err is not None:
                raise err
        raise _reject("malformed trailer section")  # pragma: no cover
    if section.count(b"\n") - 1 > MAX_HEADERS:
        raise _reject(f"more than {MAX_HEADERS} trailer fields", 431)
    trailers = tuple(split_fields(section))
    for name, _ in trailers:
        if name.lower() in FORBIDDEN_TRAILERS:
            raise _reject(f"{name.decode('ascii')} is not allowed in trailers")
    return trailers
