"""A small asyncio HTTP/1.1 server for the control plane (API server, agent, metrics).

What lives here: ``HttpServer`` and the request/response types its handlers
see. Each connection is an ``asyncio.Protocol`` (so it runs on uvloop and on
plain asyncio) that feeds ``meshwork.core.http1.RequestParser`` and answers
one request at a time, in order, so pipelined requests get their responses in
the order they were sent.

What must not live here: any HTTP parsing or framing rule (those are in
``core/http1``), routing, authentication or JSON. A handler is a plain
``async def handler(Request) -> Response | StreamingResponse``.

What the server promises (RELIABILITY.md §1):

* A refused request gets the parser's status hint, a short plain-text body and
  ``Connection: close``, and the connection is closed; nothing after it is read.
* A body over ``max_body`` is a 413 decided from Content-Length before the body
  is read (chunked bodies: as soon as the chunk sizes pass the limit).
* A head that is not complete ``headers_timeout`` seconds after its first byte
  (slowloris) gets 408 and a close; so does a body that stalls that long. An
  idle keep-alive connection is closed after ``idle_timeout``.
* A handler exception is logged and answered 500; the server keeps serving.
* Every response carries Content-Length, or chunked framing for a
  ``StreamingResponse`` (each chunk is flushed as it is produced). A streaming
  iterator is closed (``aclose()``) when the client goes away or the server
  closes.
* Flow control: reading pauses while the transport's write buffer is above
  its high-water mark (a slow reader), and while too many pipelined bytes wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl as _ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qs, urlsplit

from meshwork.core import http1
from meshwork.errors import RemoteProtocolError

__all__ = ["Handler", "Headers", "HttpServer", "Request", "Response", "StreamingResponse"]

log = logging.getLogger(__name__)

# Pipelined bytes we hold while a handler runs before we stop reading; the same
# figure as uvicorn's flow-control HIGH_WATER_LIMIT.
MAX_PIPELINE_BUFFER = 64 * 1024
# After refusing a request we half-close and read (and drop) for this long, so
# the client reads our answer instead of a reset (Apache's lingering close).
LINGER_SECONDS = 2.0
# Names the server owns in every response: a handler's copies are dropped.
_FRAMING_HEADERS = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))


class Headers:
    """Request headers: a case-insensitive multimap that keeps the order they came in.

    ``get`` joins repeated fields with ", " (RFC 9110 §5.3); ``get_all`` gives
    each value; iterating gives (name, value) pairs with names as sent.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)
        self._map: dict[str, list[str]] = {}
        for name, value in self._items:
            self._map.setdefault(name.lower(), []).append(value)

    @classmethod
    def from_raw(cls, pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
        """From the parser's (name, value) bytes; values are decoded as latin-1 (obs-text kept)."""
        return cls((n.decode("ascii"), v.decode("latin-1")) for n, v in pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._map.get(name.lower())
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._map.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class Request:
    """One complete request, body included. ``path`` is the raw (still percent-encoded) path."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    peer: tuple[str, int] | None
    version: str
    # The TLS connection, when the server runs with ssl: peer certificate for mTLS.
    ssl_object: _ssl.SSLObject | None = None
    # Who sent it, once the API server has authenticated it (a ``core.rbac.UserInfo``).
    user: object | None = None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


@dataclass(slots=True)
class StreamingResponse:
    """A response whose body is produced over time (``?watch=1``).

    Each chunk the iterator yields is sent at once as one chunk of a chunked
    body. The iterator is closed when the client disconnects or the server closes.
    """

    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


class HttpServer:
    """Serve ``handler`` over HTTP/1.1 (or HTTPS with ``ssl``) on one listening socket."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = 3 * 1024 * 1024,
        headers_timeout: float = 30.0,
        idle_timeout: float = 300.0,
        keepalive: bool = True,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.headers_timeout = headers_timeout
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive
        self.closing = False
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._port = 0

    async def start(self, host: str, port: int, *, ssl: _ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see ``port``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=ssl, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return self._port

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; end streams and idle connections now; give the rest ``grace`` seconds."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while (self._conns or self._tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header value (RFC 9110 §6.6.1), recomputed at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


# Connection phases, for the timers.
_IDLE, _HEAD, _BODY, _BUSY = range(4)


class _Connection(asyncio.Protocol):
    """One client connection: parse, dispatch one request at a time, write, repeat."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = http1.RequestParser(max_body=server.max_body)
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._ssl_object: _ssl.SSLObject | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _IDLE
        self._served = 0
        self._request: http1.Request | None = None
        self._body: list[bytes] = []
        self._closing = False  # close once the current response is written
        self._streaming = False
        self._ending = False  # the server asked a stream to end
        self._lingering = False
        self._peer_eof = False  # the client closed its sending side
        self._head_sent = False  # the current response's head is written
        self._write_paused = False
        self._read_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._ssl_object = transport.get_extra_info("ssl_object")
        self._server._conns.add(self)
        if self._server.closing:
            transport.close()
            return
        self._arm(self._server.headers_timeout)  # a fresh connection must start a request soon

    def data_received(self, data: bytes) -> None:
        if self._lingering or (self._closing and self._task is None):
            return
        self._parser.receive_data(data)
        if self._task is None:
            self._process()
        else:
            self._sync_reading()

    def eof_received(self) -> bool | None:
        if self._lingering:
            self._close()
            return None
        self._peer_eof = True
        self._parser.receive_data(b"")
        if self._task is None:
            self._process()
        elif self._streaming:
            # A watcher that stops sending is gone (Go's net/http cancels on
            # this too): end the stream rather than wait for a write to fail.
            self._task.cancel()
        # Keep our side open to answer a request still in flight; TLS cannot half-close.
        return self._ssl_object is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._conns.discard(self)
        self._cancel_timer()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("client went away"))
        self._drain_waiters.clear()
        if self._task is not None and self._streaming:
            self._task.cancel()  # stops the stream; its iterator is closed on the way out

    def pause_writing(self) -> None:
        self._write_paused = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        self._sync_reading()
        if self._task is None and not self._closing:
            self._process()

    # --- Server control --------------------------------------------------------

    def shutdown(self) -> None:
        """The server is closing: idle now, streams now (cleanly), others after their response."""
        if self._task is None:
            self._close()
        elif self._streaming:
            self._ending = True
            self._task.cancel()
        else:
            self._closing = True

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- Reading ---------------------------------------------------------------

    def _process(self) -> None:
        """Turn buffered bytes into events until a request is dispatched or bytes run out."""
        parser = self._parser
        while self._task is None and not self._closing and not self._write_paused:
            try:
                event = parser.next_event()
            except RemoteProtocolError as exc:
                self._refuse(exc.status_hint, str(exc))
                return
            if event is http1.NEED_DATA:
                break
            if type(event) is http1.Request:
                self._request = event
                self._body = []
                if event.expect_continue and event.has_body:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif type(event) is http1.Data:
                self._body.append(event.data)
                self._arm(self._server.headers_timeout)  # the body is still moving
                self._phase = _BODY
            elif type(event) is http1.EndOfMessage:
                self._dispatch(event.keep_alive)
            elif event is http1.PAUSED:
                parser.resume()  # we never switch protocols: go on with HTTP
            else:  # ConnectionClosed
                self._close()
                return
        self._sync_reading()
        self._update_timer()

    def _sync_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        pause = self._write_paused or (
            self._task is not None and self._parser.buffered > MAX_PIPELINE_BUFFER
        )
        if pause and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif not pause and self._read_paused:
            transport.resume_reading()
            self._read_paused = False

    # --- Timers ----------------------------------------------------------------

    def _update_timer(self) -> None:
        if self._task is not None:
            phase = _BUSY
        elif self._request is not None:
            phase = _BODY
        elif self._parser.in_message:
            phase = _HEAD
        else:
            phase = _IDLE
        if phase == self._phase and self._timer is not None:
            return
        self._phase = phase
        if phase == _BUSY:
            self._cancel_timer()
        elif phase == _IDLE:
            self._arm(self._server.idle_timeout if self._served else self._server.headers_timeout)
        else:
            self._arm(self._server.headers_timeout)

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._task is not None:
            return
        if self._phase == _IDLE:
            self._close()  # idle keep-alive (or a silent new connection): just close
        else:
            self._refuse(408, "request not received in time")

    # --- Dispatch --------------------------------------------------------------

    def _dispatch(self, keep_alive: bool) -> None:
        event = self._request
        assert event is not None
        self._request = None
        target = event.target.decode("ascii")
        if target.startswith("/"):
            path, _, query = target.partition("?")
        else:  # absolute-form, "*" or authority-form
            parts = urlsplit(target)
            path, query = parts.path or target, parts.query
        request = Request(
            method=event.method.decode("ascii"),
            target=target,
            path=path,
            query=parse_qs(query, keep_blank_values=True) if query else {},
            headers=Headers.from_raw(event.headers),
            body=b"".join(self._body),
            peer=self._peer,
            version=event.http_version.decode("ascii"),
            ssl_object=self._ssl_object,
        )
        self._body = []
        self._served += 1
        self._head_sent = False
        task = self._loop.create_task(self._respond(request, keep_alive))
        self._task = task
        self._server._tasks.add(task)
        task.add_done_callback(self._server._tasks.discard)
        self._cancel_timer()
        self._phase = _BUSY

    async def _respond(self, request: Request, keep_alive: bool) -> None:
        keep = False
        try:
            try:
                response = await self._server.handler(request)
                if not isinstance(response, Response | StreamingResponse):
                    raise TypeError(f"handler returned {type(response).__name__}")
            except Exception:
                log.exception("handler failed: %s %s", request.method, request.target)
                response = Response(
                    500, b"internal server error\n", content_type="text/plain; charset=utf-8"
                )
            if isinstance(response, StreamingResponse):
                keep = await self._send_stream(request, response, keep_alive)
            else:
                keep = self._send(request, response, keep_alive)
        except asyncio.CancelledError:
            self._close()  # the client went away mid-stream, or the server gave up waiting
            raise
        except Exception:
            # Sending failed (e.g. a handler header with a CR in it): our bug, not the client's.
            log.exception("could not send the response to %s %s", request.method, request.target)
            if not self._head_sent:
                self._task = None
                self._refuse(500, "internal server error")
                return
        finally:
            self._task = None
            self._streaming = False
        if keep and self._transport is not None and not self._transport.is_closing():
            self._process()
        else:
            self._close()

    def _keep(self, keep_alive: bool) -> bool:
        return (
            keep_alive and self._server.keepalive and not self._closing and not self._server.closing
        )

    def _head(
        self,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        content_type: str | None,
        keep_alive: bool,
    ) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        own_type = own_date = False
        for name, value in headers:
            lower = name.lower()
            if lower in _FRAMING_HEADERS:
                continue
            own_type = own_type or lower == "content-type"
            own_date = own_date or lower == "date"
            out.append((name, value))
        if not own_date:
            out.insert(0, ("Date", _http_date()))
        if content_type and not own_type and _has_content(status):
            out.append(("Content-Type", content_type))
        if not keep_alive:
            out.append(("Connection", "close"))
        elif request.version == "1.0":
            out.append(("Connection", "keep-alive"))
        return out

    def _send(self, request: Request, response: Response, keep_alive: bool) -> bool:
        keep_alive = self._keep(keep_alive)
        headers = self._head(
            request, response.status, response.headers, response.content_type, keep_alive
        )
        body = response.body
        if _has_content(response.status):
            headers.append(("Content-Length", str(len(body))))
        else:
            body = b""
        head = http1.format_response_head(response.status, headers)
        self._head_sent = True
        self._write(head if request.method == "HEAD" or not body else head + body)
        return keep_alive

    async def _send_stream(
        self, request: Request, response: StreamingResponse, keep_alive: bool
    ) -> bool:
        chunks = response.chunks
        self._streaming = True
        chunked = request.version == "1.1"
        # An HTTP/1.0 client cannot read chunked framing: the close ends the body.
        keep_alive = self._keep(keep_alive) and chunked
        try:
            headers = self._head(
                request, response.status, response.headers, response.content_type, keep_alive
            )
            body_allowed = _has_content(response.status) and request.method != "HEAD"
            if chunked and _has_content(response.status):
                headers.append(("Transfer-Encoding", "chunked"))
            head = http1.format_response_head(response.status, headers)
            self._head_sent = True
            self._write(head)
            if not body_allowed:
                return keep_alive
            if self._server.closing or self._peer_eof:
                if chunked:
                    self._write(http1.LAST_CHUNK)
                return False
            try:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    if not self._write(http1.format_chunk(chunk) if chunked else chunk):
                        return False
                    await self._drain()
            except asyncio.CancelledError:
                if not self._ending:
                    raise  # the client went away
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                keep_alive = False  # the server is closing: end the body cleanly, then close
            except ConnectionError:
                return False
            except Exception:
                log.exception("stream failed: %s %s", request.method, request.target)
                return False  # the body cannot be finished honestly: close without the last chunk
            if chunked:
                self._write(http1.LAST_CHUNK)
            return keep_alive
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("closing a stream iterator failed")

    async def _drain(self) -> None:
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # --- Writing and closing -----------------------------------------------------

    def _write(self, data: bytes) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request we will not serve, then close (lingering, so the answer arrives)."""
        body = (message + "\n").encode("utf-8", "replace")
        head = http1.format_response_head(
            status,
            [
                ("Date", _http_date()),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        self._closing = True
        self._request = None
        self._write(head + body)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self._lingering = True
            self._arm(LINGER_SECONDS)
            self._phase = _IDLE  # so the timer just closes
        else:
            transport.close()

    def _close(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _has_content(status: int) -> bool:
    """1xx, 204 and 304 responses never carry content (RFC 9110 §6.4.1)."""
    return status >= 200 and status != 204 and status != 304
