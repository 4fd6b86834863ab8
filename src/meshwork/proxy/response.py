"""Where an upstream's response ends: framing for the bytes the proxy passes through.

What lives here: ``ResponseReader``, a sans-IO reader for one upstream
connection. It finds and validates each response head, decides the body's
framing (RFC 9112 §6.3) and then only *counts* the body bytes as they pass:
Content-Length bytes, or chunked framing scanned in place (chunk-size lines,
the CRLF after each chunk, the trailer section) so chunked bodies are passed
on as they came, never buffered or re-framed.

An upstream is trusted less than a client is strict: anything ambiguous (both
Content-Length and Transfer-Encoding, differing lengths, bad chunk framing, a
malformed head) is a ``RemoteProtocolError``. The engine answers 502 (flag
UPE) if nothing reached the client yet, and otherwise resets the client: it
never guesses where a response ends, so a response can never be spliced into
the next client's.

What must not live here: sockets, writes, header edits (``heads``).
"""

from __future__ import annotations

import re
from typing import Final

from meshwork.core.http1_checks import MAX_CHUNK_LINE, MAX_HEAD_BYTES, check_chunk_line
from meshwork.errors import RemoteProtocolError

__all__ = ["ResponseReader"]

_NAME: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_VALUE: Final = rb"\t\x20-\x7e\x80-\xff"
# status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4),
# then field lines; one C-level pass over the whole head.
_HEAD: Final = re.compile(
    rb"HTTP/1\.([01]) ([1-9][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*\r\n"
    rb"(?:[" + _NAME + rb"]+:[" + _VALUE + rb"]*\r\n)*\r\n"
)
# Some servers omit the SP after the code when there is no reason phrase.
_HEAD_NO_REASON: Final = re.compile(
    rb"HTTP/1\.([01]) ([1-9][0-9][0-9])\r\n(?:[" + _NAME + rb"]+:[" + _VALUE + rb"]*\r\n)*\r\n"
)
# The fields that decide framing, and the hop-by-hop ones (RFC 9110 §7.6.1):
# one case-insensitive pass captures each whole line, so the engine can cut
# the hop-by-hop lines out without scanning the head again.
_SPECIAL: Final = re.compile(
    rb"(\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection|upgrade)"
    rb":[ \t]*([^\r\n]*))",
    re.I,
)
# The usual spellings, lower-cased without a call.
_NAMES: Final = {
    n: n.lower()
    for n in (b"Content-Length", b"content-length", b"Transfer-Encoding", b"transfer-encoding",
              b"Connection", b"connection", b"Keep-Alive", b"keep-alive")
}
# Connection options that are not field names (RFC 9112 §9.3, §9.6), and
# fields a Connection header may not make disappear (framing, routing).
_NOT_NOMINATED: Final = frozenset((b"", b"close", b"keep-alive", b"upgrade", b"host", b"content-length",
                            b"transfer-encoding"))
_DIGITS: Final = re.compile(rb"[0-9]{1,19}")

# Response heads that passed every check, with what _framing made of them: a
# backend repeats the same head byte for byte (only Date moves, once a second),
# so the head's regex walk and field scan run about once per backend per
# second. The key is the whole head, so a hit is exactly the result a fresh
# parse would give; only responses to plain requests (not HEAD, no upgrade).
# Bounded: emptied when full; heads above 1 KiB are not kept.
MAX_REMEMBERED_HEADS: Final = 256
MAX_REMEMBERED_HEAD: Final = 1024
_FRAMINGS: Final[dict[bytes, tuple[int, list[bytes] | None, bool, int, int]]] = {}

# Framing states.
_HEAD_STATE: Final = 0
_LENGTH: Final = 1
_CLOSE_DELIMITED: Final = 2
_CHUNK_SIZE: Final = 3
_CHUNK_DATA: Final = 4
_CHUNK_CRLF: Final = 5
_TRAILERS: Final = 6
_DONE: Final = 7


def _bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"upstream sent a malformed response: {msg}", status_hint=502)


class ResponseReader:
    """Reads one response at a time off an upstream connection.

    Call ``start(head_request, upgrade)`` before each response, then ``feed``
    every received chunk. ``feed`` returns the body bytes to pass on (raw,
    framing included) and sets ``head`` (once, the head bytes) when the head
    completes. ``done`` says the response ended; ``excess`` holds bytes that
    arrived after its end (the connection must not be reused then).
    Interim 1xx responses are swallowed (the proxy answers Expect itself),
    except 101 to an upgrade request, which ends the response with
    ``upgraded`` set and everything after it passed on as tunnel bytes.
    """

    __slots__ = (
        "_head_request",
        "_left",
        "_line",
        "_state",
        "_upgrade",
        "done",
        "excess",
        "head",
        "hop",
        "keep_alive",
        "status",
        "upgraded",
    )

    def __init__(self) -> None:
        self._left = 0
        self.keep_alive = True
        self.start(False, False)

    def start(self, head_request: bool, upgrade: bool) -> None:
        # Only what a finished response leaves behind is reset (hot path).
        self._head_request = head_request
        self._upgrade = upgrade
        self._state = _HEAD_STATE
        self._line = b""
        self.head: bytes | None = None
        self.hop: list[bytes] | None = None
        self.status = 0
        self.done = False
        self.upgraded = False
        self.excess = b""

    @property
    def close_delimited(self) -> bool:
        """The body ends when the upstream closes (no length, not chunked)."""
        return self._state == _CLOSE_DELIMITED

    @property
    def started(self) -> bool:
        """Whether any byte of this response has arrived."""
        return self.status != 0 or bool(self._line)

    def feed(self, data: bytes) -> bytes:
        state = self._state
        if state == _HEAD_STATE:
            return self._feed_head(data)
        if state == _LENGTH:
            left = self._left
            n = len(data)
            if n < left:
                self._left = left - n
                return data
            self._finish(data, left)
            return data[:left] if n > left else data
        if state == _CLOSE_DELIMITED:
            return data
        if state == _DONE:
            self.excess += data
            return b""
        end = self._scan_chunked(data, 0)
        if end < len(data):
            return data[:end]
        return data

    def eof(self) -> None:
        """The upstream closed: fine only for a close-delimited body (it ends here)."""
        if self._state == _CLOSE_DELIMITED:
            self._state = _DONE
            self.done = True
            self.keep_alive = False
        elif self._state != _DONE:
            raise _bad("connection closed before the response ended")

    # --- head ------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> bytes:
        if self._line:
            data = self._line + data
            self._line = b""
        while True:
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(data) >= MAX_HEAD_BYTES:
                    raise _bad("response head too large")
                self._line = data
                return b""
            end += 4
            if end == len(data):
                head, rest = data, b""
            else:
                head, rest = data[:end], data[end:]
            known = None if self._head_request or self._upgrade else _FRAMINGS.get(head)
            if known is not None:  # these very bytes passed every check before
                self.head = head
                self.status, self.hop, self.keep_alive, state, self._left = known
                self._state = state
                self.done = state == _DONE
            else:
                m = _HEAD.match(head) or _HEAD_NO_REASON.match(head)
                if m is None or m.end() != end:
                    raise _bad("invalid status line or header field")
                status = int(head[9:12])  # the grammar fixed where: "HTTP/1.x NNN"
                if status < 200 and not (status == 101 and self._upgrade):
                    if status == 101:
                        raise _bad("101 Switching Protocols to a request that asked for none")
                    data = rest  # interim response: swallowed
                    if not data:
                        return b""
                    continue
                self.head = head
                self.status = status
                self._framing(head, head[7] == 49, status)  # 49 is "1": HTTP/1.1
                if not (self._head_request or self._upgrade or self.upgraded) and end <= MAX_REMEMBERED_HEAD:
                    if len(_FRAMINGS) >= MAX_REMEMBERED_HEADS:
                        _FRAMINGS.clear()
                    _FRAMINGS[head] = (status, self.hop, self.keep_alive, self._state, self._left)
            if not rest:
                return b""
            if self._state == _LENGTH and len(rest) == self._left:  # the usual: all of a small body
                self._state = _DONE
                self.done = True
                return rest
            return self.feed(rest)

    def _framing(self, head: bytes, http11: bool, status: int) -> None:
        cl: bytes | None = None
        te: bytes | None = None
        keep_alive = http11
        # Hop-by-hop lines to cut (None: a Connection header names other fields).
        hop: list[bytes] | None = []
        for line, name, value in _SPECIAL.findall(head):
            name = _NAMES.get(name) or name.lower()
            if name == b"content-length":
                value = value.rstrip(b" \t")
                if cl is not None and cl != value:
                    raise _bad("conflicting Content-Length values")
                cl = value
                continue
            if name == b"transfer-encoding":
                value = value.lower()
                te = value if te is None else te + b"," + value
                continue
            if name == b"connection":
                value = value.lower()
                if value != b"keep-alive" or not http11:
                    options = {t.strip(b" \t") for t in value.split(b",")}
                    if b"close" in options:
                        keep_alive = False
                    elif b"keep-alive" in options:
                        keep_alive = True
                    if not options <= _NOT_NOMINATED:
                        hop = None
            elif name == b"upgrade" and status == 101:
                continue  # a 101 keeps its Upgrade
            if hop is not None:
                hop.append(line)
        self.hop = hop
        self.keep_alive = keep_alive
        if status == 101:
            self.upgraded = True
            self.keep_alive = False
            self._end_at_head()
            return
        if self._head_request or status == 204 or status == 304:
            self._end_at_head()
            return
        if te is not None:
            if cl is not None:
                raise _bad("both Content-Length and Transfer-Encoding")
            codings = [c.strip(b" \t") for c in te.split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                # RFC 9112 §6.3: a response whose coding is not chunked last
                # runs until the connection closes.
                self._state = _CLOSE_DELIMITED
                self.keep_alive = False
                return
            self._state = _CHUNK_SIZE
            return
        if cl is not None:
            if not _DIGITS.fullmatch(cl):
                raise _bad("invalid Content-Length")
            self._left = int(cl)
            if self._left == 0:
                self._end_at_head()
            else:
                self._state = _LENGTH
            return
        self._state = _CLOSE_DELIMITED
        self.keep_alive = False

    def _end_at_head(self) -> None:
        self._state = _DONE
        self.done = True

    def _finish(self, data: bytes, end: int) -> None:
        self._state = _DONE
        self.done = True
        if end < len(data):
            self.excess = data[end:]

    # --- chunked ---------------------------------------------------------------

    def _scan_chunked(self, data: bytes, pos: int) -> int:
        """Advance through chunked framing; returns where the response ended (or len)."""
        n = len(data)
        while pos < n:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _CHUNK_CRLF
                continue
            if state == _CHUNK_CRLF:
                need = 2 - len(self._line)
                got = self._line + data[pos : pos + need]
                pos += len(got) - len(self._line)
                if got != b"\r\n"[: len(got)]:
                    raise _bad("chunk data not followed by CRLF")
                if len(got) < 2:
                    self._line = got
                    continue
                self._line = b""
                self._state = _CHUNK_SIZE
                continue
            # A line: chunk-size line, or a trailer line.
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise _bad("chunk-size or trailer line too long")
                return n
            line = self._line + data[pos : nl + 1]
            pos = nl + 1
            self._line = b""
            if len(line) > MAX_CHUNK_LINE + 2 or line[-2:-1] != b"\r" or b"\r" in line[:-2]:
                raise _bad("bad line ending in chunked framing")
            if state == _CHUNK_SIZE:
                size, _ = check_chunk_line(line[:-2])
                if size:
                    self._left = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            elif line == b"\r\n":  # the empty line that ends the trailer section
                self._finish(data, pos)
                return pos
            elif b":" not in line or line[:1] in (b" ", b"\t"):
                raise _bad("malformed trailer field")
        return n
