"""The one HTTP/1.1 request parser (sans-IO), and the response-side byte writers.

What lives here: ``RequestParser``, which turns the bytes a client sends into
events (``Request``, ``Data``, ``EndOfMessage``, ``ConnectionClosed``) in the
style of h11: ``receive_data(bytes)``, then call ``next_event()`` until it
returns ``NEED_DATA``. Also the writers for the other direction:
``format_response_head``, ``format_chunk`` and ``format_trailers``.

What must not live here: sockets, asyncio, clocks, logging, or any lenient
mode. There is exactly one parser and it refuses (RELIABILITY.md §1, DESIGN
§3.7). The rules themselves live in ``http1_checks``.

How framing is decided, and by whom:

* This module decides every message boundary: the head ends at the first
  CRLFCRLF, a body is Content-Length bytes or chunked (decoded here, strictly),
  and nothing else (RFC 9112 §6.3). It has to: httptools gives no way to make
  llhttp stop at the end of a message, so llhttp alone would read on into a
  pipelined request before our checks had seen its head.
* Every message that has a body is also fed to llhttp (httptools, strict
  mode), head and body, exactly up to the boundary decided here. llhttp is an
  independent second opinion on the framing: if it refuses the bytes, or
  disagrees about where the message ends, the request is refused. It can only
  make the parser stricter, never looser. A message without a body (the hot
  path: a small GET) skips llhttp: its head grammar here is a strict subset of
  llhttp's (the differential tests check this), so there is no framing for
  llhttp to disagree about.
* The keep-alive decision is made from the head (RFC 9112 §9.3) and, for
  messages llhttp reads, ANDed with llhttp's verdict, taken inside its
  ``on_message_complete`` callback: ``should_keep_alive()`` read after
  ``feed_data`` returns sees flags llhttp has already reset
  (shared/bench/README.md).

After any ``RemoteProtocolError`` the parser is dead: it keeps raising the
same error and never looks at another byte, so pipelined bytes behind a
refused request are never parsed (RELIABILITY.md §1 row 22). The caller
answers ``status_hint`` and closes the connection.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

import httptools

from meshwork.core.http1_checks import (
    MAX_CHUNK_EXT_TOTAL,
    MAX_CHUNK_LINE,
    MAX_HEAD_BYTES,
    MAX_LEADING_EMPTY_LINES,
    MAX_REQUEST_LINE,
    MAX_TRAILER_BYTES,
    Head,
    check_chunk_line,
    check_head,
    check_partial_head,
    check_trailers,
    has_bare_cr_lf,
    split_fields,
)
from meshwork.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_BODY",
    "LAST_CHUNK",
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Pending",
    "Request",
    "RequestParser",
    "format_chunk",
    "format_response_head",
    "format_trailers",
    "reason_phrase",
]

# etcd's default request cap is about 1.5 MiB; the control plane's 3 MiB (see
# httpd) leaves room for JSON overhead. Callers pass their own.
DEFAULT_MAX_BODY: Final = 3 * 1024 * 1024


# --- Events ----------------------------------------------------------------------


@dataclass(slots=True, init=False)
class Request:
    """A request head that passed every check.

    ``head`` is the head to forward byte for byte (identical duplicate
    Content-Length lines already collapsed). ``headers`` is computed on first
    use, so a proxy that forwards ``head`` as is never pays for it. Names are
    as sent (compare them case-insensitively); values have OWS stripped.
    """

    method: bytes
    target: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    head: bytes
    content_length: int | None  # None: chunked, or no body at all
    chunked: bool
    keep_alive: bool  # what the head asks for; EndOfMessage has the final word
    expect_continue: bool  # "Expect: 100-continue" on an HTTP/1.1 request
    upgrade: bytes | None  # the Upgrade value when "Connection: upgrade" is present
    host: bytes | None  # lower-cased Host value
    fields_start: int = field(
        default=0, repr=False, compare=False
    )  # offset of the first field line
    # No hop-by-hop field at all: a proxy may forward ``head`` as it came (False: look).
    hop_free: bool = field(default=False, repr=False, compare=False)
    _headers: list[tuple[bytes, bytes]] | None = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        head: bytes,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bytes | None,
        host: bytes | None,
        fields_start: int = 0,
        hop_free: bool = False,
        _headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        # Written out (not generated by @dataclass) so that the compiled build
        # (meshwork._accel) constructs a Request natively, once per request.
        self.method = method
        self.target = target
        self.http_version = http_version
        self.head = head
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.host = host
        self.fields_start = fields_start
        self.hop_free = hop_free
        self._headers = _headers

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header field as (name, value), in order."""
        if self._headers is None:
            self._headers = split_fields(self.head, self.fields_start)
        return self._headers

    @property
    def has_body(self) -> bool:
        """Whether Data events may follow (chunked, or a non-zero Content-Length)."""
        return self.chunked or bool(self.content_length)


def _request(h: Head) -> Request:
    """``Request(*h)``, spelled out: a positional call the compiled build makes directly."""
    return Request(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11])


@dataclass(slots=True)
class Data:
    """A piece of the request body, de-chunked."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request is complete. ``keep_alive`` False: answer, then close."""

    trailers: tuple[tuple[bytes, bytes], ...] = ()
    keep_alive: bool = True


# Shared instances for the common no-trailer ends (EndOfMessage is immutable).
_EOM_KEEP_ALIVE: Final = EndOfMessage((), True)
_EOM_CLOSE: Final = EndOfMessage((), False)


@dataclass(slots=True)
class ConnectionClosed:
    """The client closed its side cleanly, between requests."""


class Pending(enum.Enum):
    """What ``next_event`` returns when it has no event to give."""

    NEED_DATA = "NEED_DATA"  # call receive_data() first
    PAUSED = "PAUSED"  # an upgrade/CONNECT was proposed: call resume() or take trailing_data


NEED_DATA: Final = Pending.NEED_DATA
PAUSED: Final = Pending.PAUSED

Event = Request | Data | EndOfMessage | ConnectionClosed

# Parser states (plain ints: compared on every call).
_IDLE: Final = 0  # waiting for a request head
_BODY: Final = 1  # Content-Length body
_CHUNK_SIZE: Final = 2
_CHUNK_DATA: Final = 3
_CHUNK_CRLF: Final = 4
_TRAILERS: Final = 5
_PAUSED: Final = 6  # after an upgrade proposal, until resume()
_DONE: Final = 7  # after a message that ends the connection: parse nothing more
_CLOSED: Final = 8  # EOF reported
_ERROR: Final = 9


class _LlhttpWitness:
    """llhttp as a second opinion: it only reports where it thinks a message ends."""

    __slots__ = ("done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.done = False
        self.keep_alive = False
        self.parser = httptools.HttpRequestParser(self)

    def on_message_complete(self) -> None:
        self.done = True
        # Must be read here: llhttp resets its flags before feed_data returns.
        self.keep_alive = self.parser.should_keep_alive()

    def feed(self, data: bytes) -> None:
        if self.done:
            raise _disagree()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # We never feed an upgrade head (those have no body), so llhttp
            # seeing one means the two parsers read the head differently.
            raise _disagree() from exc
        except httptools.HttpParserError as exc:
            reason = str(exc) or type(exc).__name__
            raise RemoteProtocolError(f"malformed request ({reason})", status_hint=400) from exc


def _disagree() -> RemoteProtocolError:
    return RemoteProtocolError("malformed request (llhttp disagrees about where it ends)")


def _head_too_large(buf: bytes | bytearray) -> RemoteProtocolError:
    if buf.find(b"\r\n", 0, MAX_REQUEST_LINE + 2) < 0:
        return RemoteProtocolError("request line too long", status_hint=414)
    return RemoteProtocolError("request head too large", status_hint=431)


# Once a leftover in a bytes buffer is this big, it moves to a bytearray so
# that taking small pieces off its front stops copying the rest each time.
_COPY_REMAINDER_MAX: Final = 4096


class RequestParser:
    """Server side of one HTTP/1.1 connection: request bytes in, events out.

    ``max_body`` (bytes, or None for no limit) makes a larger body a 413: from
    Content-Length before any body byte, or as soon as chunk sizes pass it.

    Messages with a body are also fed to llhttp (see the module docstring).
    """

    __slots__ = (
        "_body_left",
        "_body_seen",
        "_buf",
        "_empty_lines",
        "_eof",
        "_error",
        "_ext_total",
        "_keep_alive",
        "_line_seen",
        "_ll",
        "_max_body",
        "_scan",
        "_state",
        "_switch",
        "_witnessed",
    )

    def __init__(self, *, max_body: int | None = DEFAULT_MAX_BODY) -> None:
        self._max_body = max_body
        # Unparsed bytes. A bytes object while data arrives in whole messages
        # (no copy), a bytearray once pieces accumulate (amortised appends).
        self._buf: bytes | bytearray = b""
        self._state = _IDLE
        self._error: RemoteProtocolError | None = None
        self._eof = False
        self._scan = 0  # where the search for the end of a head/trailer section resumes
        self._line_seen = False  # the request line's CRLF has arrived
        self._empty_lines = 0
        self._body_left = 0  # Content-Length bytes, or bytes of the current chunk, still due
        self._body_seen = 0  # declared chunk bytes so far (for max_body)
        self._ext_total = 0
        self._keep_alive = True
        self._switch = False  # this request proposed an upgrade or CONNECT
        self._ll: _LlhttpWitness | None = None  # created for the first message with a body
        self._witnessed = False  # llhttp is reading the current message

    # --- Input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side."""
        if not data:
            self._eof = True
            return
        if self._state >= _DONE:
            return  # finished or dead: these bytes are never looked at
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream")
        buf = self._buf
        if not buf:
            self._buf = data if type(data) is bytes else bytes(data)
        elif type(buf) is bytes:
            grown = bytearray(buf)
            grown += data
            self._buf = grown
        else:
            buf += data  # type: ignore[operator]  # bytearray in place

    def _take(self, n: int) -> bytes:
        """Remove and return the first ``n`` buffered bytes."""
        buf = self._buf
        if n >= len(buf):
            self._buf = b""
            return buf if type(buf) is bytes else bytes(buf)
        if type(buf) is bytes:
            rest = len(buf) - n
            self._buf = buf[n:] if rest <= _COPY_REMAINDER_MAX else bytearray(memoryview(buf)[n:])
            return buf[:n]
        piece = bytes(buf[:n])
        del buf[:n]  # type: ignore[union-attr]  # O(1): CPython moves the bytearray's start
        return piece

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (for flow control)."""
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """Whether a request has started (a byte of it arrived) but has not ended."""
        state = self._state
        return _BODY <= state <= _TRAILERS or (state == _IDLE and bool(self._buf))

    @property
    def trailing_data(self) -> bytes:
        """After PAUSED: the bytes that followed the upgrade/CONNECT request."""
        return bytes(self._buf)

    def resume(self) -> None:
        """The server declined an upgrade: go on parsing requests (state was PAUSED)."""
        if self._state != _PAUSED:
            raise LocalProtocolError("resume() is only valid while PAUSED")
        self._state = _IDLE

    # --- Output --------------------------------------------------------------

    def next_event(self) -> Event | Pending:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError on bad input."""
        if self._error is not None:
            raise self._error
        try:
            state = self._state
            if state == _IDLE:
                return self._read_head()
            if state == _BODY:
                if not self._body_left:
                    return self._end_message(())
                return self._read_body()
            if state <= _TRAILERS:
                return self._read_chunked()
            if state == _PAUSED:
                return PAUSED
            if state == _DONE:
                if self._eof:
                    self._state = _CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            return ConnectionClosed()  # _CLOSED
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = _ERROR
            self._buf = b""
            raise

    def receive_request(self, data: bytes) -> tuple[Request, EndOfMessage | None] | None:
        """A shortcut for the common case, with exactly the same checks and results.

        When nothing is buffered, no message is under way, and ``data`` is
        exactly one whole request head (the usual read on a kept-alive
        connection), this is ``receive_data(data)`` followed by the
        ``next_event()`` calls that return its ``Request`` and, for a request
        without a body, its ``EndOfMessage`` (else None: body events follow
        from ``next_event``). Otherwise it returns None and consumes nothing:
        call ``receive_data``. A refusal raises ``RemoteProtocolError`` and
        leaves the parser dead, as ``next_event`` does.
        """
        n = len(data)
        if (
            self._state != _IDLE
            or self._buf
            or self._eof
            or n > MAX_HEAD_BYTES
            or data[0] == 13  # leading empty lines: the general path counts them
            or data.find(b"\r\n\r\n") != n - 4
        ):
            return None
        try:
            h = check_head(data, self._max_body)
            if h[6] and not (h[4] or h[5]) and h[8] is None and h[0] != b"CONNECT":
                # No body, no upgrade, kept alive: the state _start_message
                # and _end_message would leave, set directly.
                self._empty_lines = self._body_left = 0
                self._keep_alive = True
                self._switch = False
                return _request(h), _EOM_KEEP_ALIVE
            req = self._start_message(h)
            if self._state == _BODY and not self._body_left:
                return req, self._end_message(())
            return req, None
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = _ERROR
            self._buf = b""
            raise

    # --- Head ----------------------------------------------------------------

    def _read_head(self) -> Event | Pending:
        buf = self._buf
        if buf and buf[0] == 13:  # CR: maybe empty lines before the request line
            while buf[:2] == b"\r\n":
                self._empty_lines += 1
                if self._empty_lines > MAX_LEADING_EMPTY_LINES:
                    raise RemoteProtocolError("too many empty lines before a request")
                self._take(2)
                buf = self._buf
        if not buf:
            if self._eof:
                self._state = _CLOSED
                return ConnectionClosed()
            return NEED_DATA
        end = buf.find(b"\r\n\r\n", self._scan, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(buf) >= MAX_HEAD_BYTES + 4:
                raise _head_too_large(buf)
            if self._eof:
                raise RemoteProtocolError("connection closed inside a request head")
            self._line_seen = check_partial_head(buf, self._scan, self._line_seen)
            self._scan = max(len(buf) - 3, 0)
            return NEED_DATA
        if end + 4 > MAX_HEAD_BYTES:
            raise _head_too_large(buf)
        if end + 4 == len(buf) and type(buf) is bytes:  # the usual: exactly one head arrived
            self._buf = b""
            h = check_head(buf, self._max_body)
        else:
            h = check_head(self._take(end + 4), self._max_body)
        return self._start_message(h)

    def _start_message(self, h: Head) -> Request:
        self._scan = 0
        self._line_seen = False
        self._empty_lines = 0
        self._keep_alive = h[6]
        self._switch = h[8] is not None or h[0] == b"CONNECT"
        if h[5]:
            self._state = _CHUNK_SIZE
            self._body_seen = 0
            self._ext_total = 0
            self._witness(h[3])
        else:
            self._state = _BODY
            left = self._body_left = h[4] or 0
            if left:
                self._witness(h[3])
        return _request(h)

    def _witness(self, head: bytes) -> None:
        """Start llhttp on a message that has a body."""
        ll = self._ll
        if ll is None:
            ll = self._ll = _LlhttpWitness()
        ll.done = False
        self._witnessed = True
        ll.feed(head)

    # --- Content-Length body ---------------------------------------------------

    def _read_body(self) -> Event | Pending:
        left = self._body_left
        if not self._buf:
            if self._eof:
                raise RemoteProtocolError("connection closed inside a request body")
            return NEED_DATA
        chunk = self._take(left)
        self._body_left = left - len(chunk)
        assert self._ll is not None
        self._ll.feed(chunk)
        return Data(chunk)

    # --- Chunked body ----------------------------------------------------------

    def _read_chunked(self) -> Event | Pending:
        ll = self._ll
        assert ll is not None
        while True:
            buf = self._buf
            state = self._state
            if state == _CHUNK_DATA:
                if not buf:
                    break
                chunk = self._take(self._body_left)
                self._body_left -= len(chunk)
                if not self._body_left:
                    self._state = _CHUNK_CRLF
                ll.feed(chunk)
                return Data(chunk)
            if state == _CHUNK_CRLF:
                if buf[:2] != b"\r\n":
                    if len(buf) >= 2 or buf[:1] not in (b"", b"\r"):
                        raise RemoteProtocolError("chunk data not followed by CRLF")
                    break
                ll.feed(self._take(2))
                self._state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE + 2)
                if end < 0:
                    if has_bare_cr_lf(buf, 0):
                        raise RemoteProtocolError("bare CR or LF in chunked framing")
                    if len(buf) > MAX_CHUNK_LINE:
                        raise RemoteProtocolError("chunk-size line too long")
                    break
                line = self._take(end + 2)
                size, ext = check_chunk_line(line[:-2])
                self._ext_total += ext
                if self._ext_total > MAX_CHUNK_EXT_TOTAL:
                    raise RemoteProtocolError("too many chunk-extension bytes")
                self._body_seen += size
                if self._max_body is not None and self._body_seen > self._max_body:
                    raise RemoteProtocolError(
                        f"body exceeds the {self._max_body}-byte limit", status_hint=413
                    )
                ll.feed(line)
                if size:
                    self._body_left = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            else:  # _TRAILERS
                if buf[:2] == b"\r\n":
                    end = 0
                else:
                    end = buf.find(b"\r\n\r\n", self._scan, MAX_TRAILER_BYTES + 4)
                    if end < 0:
                        if len(buf) >= MAX_TRAILER_BYTES + 4:
                            raise RemoteProtocolError("trailer section too large", status_hint=431)
                        if has_bare_cr_lf(buf, self._scan):
                            raise RemoteProtocolError("bare CR or LF in trailer section")
                        self._scan = max(len(buf) - 3, 0)
                        break
                    end += 2
                    if end + 2 > MAX_TRAILER_BYTES:
                        raise RemoteProtocolError("trailer section too large", status_hint=431)
                self._scan = 0
                section = self._take(end + 2)
                trailers = check_trailers(section)
                ll.feed(section)
                return self._end_message(trailers)
        if self._eof:
            raise RemoteProtocolError("connection closed inside a chunked body")
        return NEED_DATA

    # --- End of message --------------------------------------------------------

    def _end_message(self, trailers: tuple[tuple[bytes, bytes], ...]) -> EndOfMessage:
        keep_alive = self._keep_alive
        if self._witnessed:
            self._witnessed = False
            ll = self._ll
            assert ll is not None
            if not ll.done:
                raise _disagree()
            keep_alive = keep_alive and ll.keep_alive
        if self._switch:
            self._state = _PAUSED
        elif keep_alive:
            self._state = _IDLE
        else:
            self._state = _DONE
            self._buf = b""
        if trailers:
            return EndOfMessage(trailers, keep_alive)
        return _EOM_KEEP_ALIVE if keep_alive else _EOM_CLOSE


# --- Writers ---------------------------------------------------------------------

# Response field names are tokens; values may not hold CR, LF, NUL or other CTLs.
_OUT_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_OUT_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*").fullmatch
_REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
LAST_CHUNK: Final = b"0\r\n\r\n"


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for ``status`` (empty if there is none)."""
    return _REASONS.get(status, b"")


def _as_bytes(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode("latin-1")


def format_response_head(
    status: int,
    headers: Iterable[tuple[bytes | str, bytes | str]],
    *,
    reason: bytes | str | None = None,
) -> bytes:
    """``HTTP/1.1 <status> <reason>`` plus the fields and the empty line.

    Names must be tokens and values must hold no CR, LF or NUL (response
    splitting); a violation is a LocalProtocolError, our bug, not the peer's.
    """
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"status {status} is not a three-digit code")
    phrase = reason_phrase(status) if reason is None else _as_bytes(reason)
    if b"\r" in phrase or b"\n" in phrase:
        raise LocalProtocolError("CR or LF in reason phrase")
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    for name, value in headers:
        n = _as_bytes(name)
        v = _as_bytes(value)
        if not _OUT_NAME(n) or not _OUT_VALUE(v):
            raise LocalProtocolError(f"invalid response header {n!r}: {v!r}")
        parts.append(b"%s: %s\r\n" % (n, v))
    parts.append(b"\r\n")
    return b"".join(parts)


def format_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data gives b"" (an empty chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def format_trailers(trailers: Iterable[tuple[bytes | str, bytes | str]] = ()) -> bytes:
    """The last chunk and a trailer section that ends a chunked body."""
    parts = [b"0\r\n"]
    for name, value in trailers:
        n = _as_bytes(name)
        v = _as_bytes(value)
        if not _OUT_NAME(n) or not _OUT_VALUE(v):
            raise LocalProtocolError(f"invalid trailer {n!r}: {v!r}")
        parts.append(b"%s: %s\r\n" % (n, v))
    parts.append(b"\r\n")
    return b"".join(parts)
