"""The HTTP/1.1 side of the proxy: one client connection, one request in flight at a time.

What lives here: ``HttpProxyConnection``, an ``asyncio.Protocol`` that feeds
the client's bytes to ``core.http1.RequestParser`` (the one strict parser),
asks the ``Decider`` what to do with each request, and carries the plan out
over pooled upstream connections: attempts, retries to other endpoints,
timeouts, Envoy's local replies and response flags, body streaming with
backpressure both ways, ``Expect: 100-continue`` and Upgrade tunnels.

What must not live here: routing or load-balancing policy (the plan's), the
framing rules (``core.http1`` and ``proxy.response``), head editing
(``proxy.heads``).

The hot path (a small GET on a kept-alive client and a pooled upstream) is
written for speed (shared/bench/README.md): all work happens in callbacks, no
task per request; the head goes upstream as it came after one regex, in one
write; the response head and body go back in one write; no clock is read
unless the plan has a timeout or the access log is on. Idle and header
timeouts are enforced by the server's periodic sweep (``sweep``).

Invariants:
* A request refused by the parser gets its status, ``Connection: close`` and
  a close; nothing after it is parsed (the parser is dead).
* An upstream connection is reused only after a response that ended where
  its framing said, with nothing after it, and a request we sent completely.
* A request is retried only before any response byte reached the client; a
  non-idempotent one only if none of its bytes reached an upstream.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, cast

from meshwork.core import http1
from meshwork.errors import RemoteProtocolError
from meshwork.proxy.heads import local_reply, request_head, response_head
from meshwork.proxy.plan import DirectResponse, Endpoint, ErrorKind, Forward, Outcome
from meshwork.proxy.response import ResponseReader
from meshwork.proxy.upstream import OVERFLOW, Pool, UpstreamConnection

if TYPE_CHECKING:
    from meshwork.proxy.server import HttpProxy

__all__ = ["HttpProxyConnection"]

# Request bodies up to this size are kept for a retry; larger or chunked
# bodies are streamed only (Envoy's per_request_buffer_limit_bytes is 16 KiB
# by default; 64 KiB covers typical JSON posts).
MAX_RETRY_BODY = 64 * 1024
# Bytes held for an upstream that is still connecting, or pipelined behind a
# request in flight, before we stop reading the client (uvicorn's high water).
MAX_PENDING = 64 * 1024
# After refusing a request, read and drop for this long before closing so the
# client reads our answer rather than a reset (Apache's lingering close).
LINGER_SECONDS = 2.0

# Envoy's local reply bodies, so habits (and scripts) from Istio carry over.
RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "
NO_HEALTHY_UPSTREAM = b"no healthy upstream"
UPSTREAM_TIMEOUT = b"upstream request timeout"
# RFC 9110 §9.2.2: methods a retry cannot make worse.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

_EMPTY: frozenset[Endpoint] = frozenset()
# The body log of a request without a body: shared, never appended to.
_NO_BODY: list[bytes] = []
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_Request = http1.Request
_Data = http1.Data
_EOM = http1.EndOfMessage
_NEED_DATA = http1.NEED_DATA
_PAUSED = http1.PAUSED

# Connection modes.
_HTTP = 0
_TUNNEL = 1  # after a 101: bytes spliced both ways
_LINGER = 2  # refused: dropping input until closed
_CLOSED = 3


class HttpProxyConnection(asyncio.Protocol):
    """One client connection: parse, plan, forward, answer, repeat."""

    def __init__(self, server: HttpProxy) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.parser = http1.RequestParser(max_body=None)
        self.reader = ResponseReader()
        self.source = ""
        self.mode = _HTTP
        self.activity = 0  # requests started + responses finished (for the idle sweep)
        self.sweep_mark = -1
        self.sweep_since = 0.0
        self.deadline = 0.0  # response/per-try deadline (0: none)
        self.try_deadline = 0.0
        self.in_process = False
        self.write_paused = False  # the client's transport buffer is full
        self.read_paused = False
        self.up_paused = False  # the upstream's transport buffer is full
        # The exchange in flight (req is None when there is none).
        self.req: http1.Request | None = None
        self.plan: Forward | None = None
        self.direct: DirectResponse | None = None
        self.up: UpstreamConnection | None = None
        self.pool: Pool | None = None
        self.endpoint: Endpoint | None = None
        self.tried: frozenset[Endpoint] = _EMPTY
        self.token = 0
        self.attempts = 0
        self.up_head = b""
        self.body_log: list[bytes] | None = None  # the body so far, kept for retries
        self.pending: list[bytes] = []  # body bytes not yet sent to the current upstream
        self.pending_size = 0
        self.out: list[bytes] = []  # upstream writes coalesced during one _process run
        self.sent_up = False  # some request bytes reached an upstream
        self.req_done = False
        self.keep = True
        self.resp_started = False
        self.close_after = False
        self.status = 0
        self.flags = ""
        self.reason = ""
        self.started = 0.0
        self.received = 0
        self.sent = 0
        self.retry_handle: asyncio.TimerHandle | None = None
        self.picked = False  # the cluster's pick for this attempt is not yet released
        self.answered = False  # a local reply went out before the request ended
        self.fresh = False  # skip idle connections (one just turned out dead)
        self.peer_eof = False
        self.resp_done = False  # the response ended before the request did
        self.finish_pending = False

    # --- asyncio.Protocol (client side) --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) else ""
        self.server.conns.add(self)
        if self.server.closing:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == _HTTP:
            self.parser.receive_data(data)
            if not self.in_process:
                self._process()
        elif mode == _TUNNEL:
            up = self.up
            if up is not None:
                up.transport.write(data)
        # _LINGER / _CLOSED: dropped

    def eof_received(self) -> bool:
        if self.mode == _TUNNEL:
            if self.up is not None and self.up.transport.can_write_eof():
                self.up.transport.write_eof()
            return True
        if self.mode != _HTTP:
            self._close()
            return False
        self.peer_eof = True
        self.parser.receive_data(b"")
        if not self.in_process:
            self._process()
        return True  # keep our side open to answer what is in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        mode = self.mode
        self.mode = _CLOSED
        if self.retry_handle is not None:
            self.retry_handle.cancel()
        if self.req is not None and mode != _TUNNEL:
            self.flags = self.flags or "DC"
            self._abandon(ErrorKind.CANCELLED)
            self._log()
        up = self.up
        if up is not None:
            self.up = None
            up.owner = None
            up.transport.abort()
        elif self.pool is not None:
            self.pool.cancel(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None and not self.up.closed:
            self.up.transport.resume_reading()

    # --- Reading requests ------------------------------------------------------------

    def _process(self) -> None:
        """Turn buffered client bytes into exchange steps, until one is waiting on upstream."""
        parser = self.parser
        self.in_process = True
        try:
            while self.mode == _HTTP:
                if self.req_done:
                    break  # a response is due first; later requests wait in the parser
                try:
                    event = parser.next_event()
                except RemoteProtocolError as exc:
                    self._refuse(exc.status_hint, str(exc))
                    return
                t = type(event)
                if t is _Request:
                    self._on_request(cast(http1.Request, event))
                elif t is _Data:
                    self._on_body(cast(http1.Data, event).data)
                elif t is _EOM:
                    self._on_end(cast(http1.EndOfMessage, event))
                elif event is _NEED_DATA:
                    break
                elif event is _PAUSED:
                    parser.resume()  # an upgrade nobody took (see _finish)
                else:  # ConnectionClosed: the client is done
                    self._close()
                    return
        finally:
            self.in_process = False
            out = self.out
            if out:
                self.out = []
                up = self.up
                if up is not None:
                    up.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.finish_pending:
            self.finish_pending = False
            self._complete()
            return
        if self.read_paused or self.pending_size or (
            self.req_done and parser.buffered > MAX_PENDING
        ):
            self._sync_reading()

    def _on_request(self, req: http1.Request) -> None:
        # Per-exchange state; what _end_exchange already reset is not repeated.
        self.req = req
        self.activity += 1
        self.close_after = False
        self.resp_started = False
        self.sent_up = False
        self.status = 0
        self.received = len(req.head)
        self.sent = 0
        self.attempts = 0
        if self.flags or self.reason:
            self.flags = self.reason = ""
        if self.tried:
            self.tried = _EMPTY
        self.answered = self.fresh = False
        server = self.server
        if server.log_requests:
            self.started = server.loop.time()
        try:
            plan = server.decider.decide(req, self.source)
        except Exception:
            server.log.exception("decider failed on %r", req.target)
            plan = DirectResponse(500, b"internal error\n", flag="", reason="the route decision failed")
        if type(plan) is not Forward:
            self.direct = cast(DirectResponse, plan)
            self.plan = None
            if req.expect_continue and req.has_body:
                self.close_after = True  # the client may or may not send the body now
            return
        self.direct = None
        self.plan = plan
        retries = plan.retries
        if retries is not None and retries.attempts > 0 and (
            not (req.chunked or req.content_length)
            or (req.content_length or MAX_RETRY_BODY + 1) <= MAX_RETRY_BODY
        ):
            self.body_log = _NO_BODY if req.content_length is None and not req.chunked else []
        else:
            self.body_log = None
        self.up_head = request_head(req, plan)
        if req.expect_continue:
            self.transport.write(_CONTINUE)
        self._attempt()

    def _on_body(self, data: bytes) -> None:
        self.received += len(data)
        if self.plan is None or self.resp_done:
            return  # a direct response, or one already complete: the body is dropped
        req = self.req
        if req is not None and req.chunked:
            data = http1.format_chunk(data)
        if self.body_log is not None:
            self.body_log.append(data)
        if self.up is not None:
            self.out.append(data)
        elif self.body_log is None:
            self.pending.append(data)
            self.pending_size += len(data)

    def _on_end(self, eom: http1.EndOfMessage) -> None:
        self.req_done = True
        self.keep = eom.keep_alive
        if self.direct is not None:
            self._answer_direct(self.direct)
            return
        if self.answered or self.plan is None:
            self._end_exchange()  # a local reply went out before the body ended
            return
        req = self.req
        if req is not None and req.chunked and not self.resp_done:
            self._on_body_raw(http1.LAST_CHUNK)  # trailers are not forwarded
        if self.resp_done:
            self.finish_pending = True  # _process completes it once the last bytes are sent
            return
        plan = self.plan
        if plan.timeout or (plan.retries is not None and plan.retries.per_try_timeout):
            now = self.server.loop.time()
            if plan.timeout:
                self.deadline = now + plan.timeout
            self._arm_try(now)

    def _on_body_raw(self, data: bytes) -> None:
        if self.body_log is not None:
            self.body_log.append(data)
        if self.up is not None:
            self.out.append(data)
        elif self.body_log is None:
            self.pending.append(data)

    def _arm_try(self, now: float) -> None:
        plan = self.plan
        if plan is not None and plan.retries is not None and plan.retries.per_try_timeout:
            self.try_deadline = now + plan.retries.per_try_timeout

    # --- Attempts --------------------------------------------------------------------

    def _attempt(self) -> None:
        self.retry_handle = None
        plan = self.plan
        if plan is None or self.mode != _HTTP:
            return
        cluster = plan.cluster
        endpoint = cluster.pick(self.tried)
        if endpoint is None:
            self._local_failure(503, NO_HEALTHY_UPSTREAM, "UH", "no endpoint of the cluster is healthy")
            return
        self.attempts += 1
        self.endpoint = endpoint
        self.picked = True
        self.token += 1
        pools = self.server.pools
        pool = pools.get(endpoint.key)
        if pool is None:
            pool = pools[endpoint.key] = Pool(endpoint, cluster.limits)
        self.pool = pool
        conn = pool.acquire(self, self.token, self.fresh)
        if conn is None:
            return  # connecting, or queued: upstream_ready/failed follows
        if conn is OVERFLOW:
            self._release(ErrorKind.OVERFLOW)
            self._local_failure(
                503,
                (RESET_BEFORE_HEADERS + "overflow").encode(),
                "UO",
                f"the connection pool to {endpoint.key} is full",
            )
            return
        self._attach(cast(UpstreamConnection, conn))

    def _attach(self, conn: UpstreamConnection) -> None:
        self.up = conn
        req = self.req
        assert req is not None
        self.reader.start(req.method == b"HEAD", req.upgrade is not None)
        if self.body_log:
            data = self.up_head + b"".join(self.body_log)
        elif self.pending:
            data = self.up_head + b"".join(self.pending)
            self.pending = []
            self.pending_size = 0
        else:
            data = self.up_head
        self.sent_up = True
        if self.in_process:
            self.out.append(data)
        else:
            conn.transport.write(data)
        if self.write_paused:
            conn.transport.pause_reading()

    def upstream_ready(self, conn: UpstreamConnection, token: int) -> None:
        if token != self.token or self.up is not None or self.mode != _HTTP or self.plan is None:
            conn.pool.release(conn, True)  # nobody wants it any more: keep it for later
            return
        self._attach(conn)
        self._sync_reading()

    def upstream_failed(self, token: int, kind: ErrorKind, detail: str) -> None:
        if token != self.token or self.mode != _HTTP or self.plan is None:
            return
        self._attempt_failed(kind, (RESET_BEFORE_HEADERS + detail).encode(), "UF",
                             f"could not connect to {self._ep()}: {detail}")

    def _attempt_failed(self, kind: ErrorKind, body: bytes, flag: str, reason: str) -> None:
        """The current attempt ended without a response head: retry or answer."""
        self._release(kind)
        if self._may_retry(kind):
            self._retry()
            return
        if self.attempts > 1:
            flag += ",URX"
        status = 504 if kind is ErrorKind.TIMEOUT else 503
        self._local_failure(status, body, flag, reason)

    def _may_retry(self, outcome: Outcome) -> bool:
        plan = self.plan
        if plan is None or self.resp_started:
            return False
        policy = plan.retries
        if policy is None or self.attempts > policy.attempts or not policy.retry_on(outcome):
            return False
        req = self.req
        assert req is not None
        if req.upgrade is not None:
            return False
        if self.sent_up:
            if self.body_log is None:
                return False  # the body went out and was not kept
            if outcome is not ErrorKind.CONNECT_FAILURE and req.method not in IDEMPOTENT:
                return False  # RELIABILITY.md §2: never replay a POST that reached a backend
        return True

    def _retry(self) -> None:
        self._detach(reusable=False)
        if self.endpoint is not None:
            self.tried = self.tried | {self.endpoint}
        plan = self.plan
        assert plan is not None and plan.retries is not None
        base = plan.retries.backoff_base * (2 ** (self.attempts - 1))
        self.token += 1  # late callbacks for the old attempt are ignored
        if self.try_deadline:
            self._arm_try(self.server.loop.time())
        self.retry_handle = self.server.loop.call_later(random.random() * base, self._attempt)

    def _detach(self, reusable: bool) -> None:
        up = self.up
        if up is not None:
            self.up = None
            if not reusable:
                up.owner = None
                up.transport.abort()
            else:
                up.pool.release(up, True)
        elif self.pool is not None:
            self.pool.cancel(self)

    def _release(self, outcome: Outcome) -> None:
        """Tell the cluster how the current attempt ended (once per pick)."""
        if self.picked:
            self.picked = False
            plan = self.plan
            if plan is not None and self.endpoint is not None:
                plan.cluster.release(self.endpoint, outcome)

    def _abandon(self, outcome: Outcome) -> None:
        """The exchange ends early: free the upstream side without reusing it."""
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        self._release(outcome)
        self._detach(reusable=False)

    def _ep(self) -> str:
        return self.endpoint.key if self.endpoint is not None else "?"

    # --- Upstream events ---------------------------------------------------------------

    def upstream_data(self, conn: UpstreamConnection, data: bytes) -> None:
        if conn is not self.up:
            conn.transport.abort()
            return
        if self.mode == _TUNNEL:
            self.sent += len(data)
            self.transport.write(data)
            return
        reader = self.reader
        try:
            body = reader.feed(data)
        except RemoteProtocolError as exc:
            self._upstream_broken(str(exc))
            return
        head = reader.head
        if head is not None:
            reader.head = None
            status = reader.status
            if self._may_retry(status):
                self._release(status)
                self._retry()
                return
            body = self._start_response(head, status) + body
        if body:
            self.sent += len(body)
            self.transport.write(body)
        if reader.done:
            self._finish()

    def _start_response(self, head: bytes, status: int) -> bytes:
        reader = self.reader
        req = self.req
        plan = self.plan
        assert req is not None and plan is not None
        self.resp_started = True
        self.status = status
        self.deadline = self.try_deadline = 0.0
        if self.attempts > 1 and plan.retries is not None and plan.retries.retry_on(status):
            self.flags = "URX"  # still failing when the retries ran out
        close = (
            self.close_after
            or (self.req_done and not self.keep)
            or (not self.req_done and not req.keep_alive)
            or reader.close_delimited
            or self.server.closing
        )
        self.close_after = close
        return response_head(
            head,
            close=close and not reader.upgraded,
            http10_keep_alive=req.http_version == b"1.0",
            upgraded=reader.upgraded,
            edits=plan.response_headers,
        )

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if conn is not self.up:
            return
        if self.mode == _TUNNEL:
            self.up = None
            self._close()
            return
        reader = self.reader
        if self.resp_done:
            self.up = None  # the response is complete; the request's end finishes the exchange
            return
        if self.resp_started:
            try:
                reader.eof()
            except RemoteProtocolError:
                self.up = None
                self.flags = "UC"
                self._abort_client()
                return
            self._finish()
            return
        self.up = None
        req = self.req
        if (
            conn.requests > 1
            and not reader.started
            and not self.fresh
            and req is not None
            and req.method in IDEMPOTENT
            and (self.body_log is not None or not req.has_body)
        ):
            # A pooled connection the upstream had already closed: the request
            # reached no live server. Try once more on a fresh connection.
            self._release(ErrorKind.CANCELLED)
            self.fresh = True
            self.attempts -= 1
            self._attempt()
            return
        self._attempt_failed(
            ErrorKind.RESET,
            (RESET_BEFORE_HEADERS + "connection termination").encode(),
            "UC",
            f"{self._ep()} closed the connection before answering",
        )

    def upstream_paused(self, paused: bool) -> None:
        self.up_paused = paused
        self._sync_reading()

    def _upstream_broken(self, detail: str) -> None:
        if not self.resp_started:
            up = self.up
            self.up = None
            if up is not None:
                up.owner = None
                up.transport.abort()
            self._release(ErrorKind.PROTOCOL)
            self._local_failure(
                502,
                (RESET_BEFORE_HEADERS + "protocol error").encode(),
                "UPE",
                f"{self._ep()} broke HTTP/1.1 framing: {detail}",
            )
            return
        self.flags = "UPE"
        self._abort_client()

    # --- Ending an exchange -------------------------------------------------------------

    def _finish(self) -> None:
        """The response is complete: recycle the upstream, then the next request."""
        reader = self.reader
        self._release(self.status)
        if reader.upgraded and self.up is not None:
            up = self.up
            self.up = None
            self._tunnel(up)
            return
        if not self.req_done:
            # The upstream answered before the request ended (it may still read
            # the rest): the request's end completes the exchange.
            self.resp_done = True
            return
        self._complete()

    def _complete(self) -> None:
        up = self.up
        self.up = None
        reader = self.reader
        if up is not None:
            up.pool.release(up, reader.keep_alive and not reader.excess and self.req_done)
        self._end_exchange()

    def _end_exchange(self) -> None:
        if self.server.log_requests:
            self._log()
        self.req = None
        self.plan = None
        self.direct = None
        self.body_log = None
        self.resp_done = False
        if self.deadline or self.try_deadline:
            self.deadline = self.try_deadline = 0.0
        if self.pending:
            self.pending = []
            self.pending_size = 0
        self.activity += 1
        if self.close_after or self.server.closing:
            self._close()
            return
        self.req_done = False
        if not self.in_process:
            if self.parser.buffered or self.peer_eof:
                self._process()
            elif self.read_paused:
                self._sync_reading()

    def _tunnel(self, up: UpstreamConnection) -> None:
        """After a 101: splice bytes both ways until either side closes."""
        self.mode = _TUNNEL
        self.up = up
        self.activity += 1
        self._log()
        excess = self.reader.excess
        if excess:
            self.sent += len(excess)
            self.transport.write(excess)
        trailing = self.parser.trailing_data
        if trailing:
            up.transport.write(trailing)
        self._sync_reading()

    def _answer_direct(self, plan: DirectResponse) -> None:
        req = self.req
        assert req is not None
        self.status = plan.status
        self.flags = plan.flag
        self.reason = plan.reason
        close = self.close_after or not self.keep or self.server.closing
        self.close_after = close
        data = local_reply(
            plan.status,
            plan.body,
            close=close,
            reason=plan.reason,
            headers=plan.headers,
            head_only=req.method == b"HEAD",
        )
        self.resp_started = True
        self.sent += len(data)
        self.transport.write(data)
        self._end_exchange()

    def _local_failure(self, status: int, body: bytes, flag: str, reason: str) -> None:
        """Answer for an upstream that gave no response (Envoy's local reply)."""
        self._detach(reusable=False)
        self.status = status
        self.flags = flag
        self.reason = reason
        req = self.req
        assert req is not None
        close = (
            self.close_after
            or self.server.closing
            or not (self.keep if self.req_done else req.keep_alive)
            or (not self.req_done and req.has_body)  # the rest of the body is not read
            or req.upgrade is not None  # the parser waits in PAUSED: do not resume it
        )
        self.close_after = close
        data = local_reply(status, body, close=close, reason=reason, head_only=req.method == b"HEAD")
        self.resp_started = True
        self.sent += len(data)
        self.plan = None
        self.transport.write(data)
        if self.req_done or close:
            self._end_exchange()
        else:
            self.answered = True  # the end of the request ends the exchange

    def _refuse(self, status: int, message: str) -> None:
        """The parser refused the client's bytes: answer if we still can, then close."""
        if self.req is not None:
            self._abandon(ErrorKind.CANCELLED)
            self.flags = "DPE"
            self.status = status
            self._log()
            self.req = None
            if self.resp_started:
                self._abort_client()
                return
        self.mode = _LINGER
        self.transport.write(
            local_reply(status, (message + "\n").encode("utf-8", "replace"), close=True)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.sweep_mark = -2  # the sweep closes us after LINGER_SECONDS
            self.sweep_since = self.server.loop.time()
        else:
            self._close()

    # --- Flow control, timers, closing ----------------------------------------------------

    def _sync_reading(self) -> None:
        transport = self.transport
        if self.mode == _CLOSED or transport.is_closing():
            return
        pause = self.up_paused or (
            self.mode == _HTTP
            and (self.pending_size > MAX_PENDING or (self.req_done and self.parser.buffered > MAX_PENDING))
        )
        if pause != self.read_paused:
            self.read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def sweep(self, now: float) -> None:
        """Called by the server every tick: enforce deadlines and idle/header timeouts."""
        if self.mode == _LINGER:
            if now - self.sweep_since >= LINGER_SECONDS:
                self._close()
            return
        if self.mode == _CLOSED:
            return
        deadline = self.deadline
        try_deadline = self.try_deadline
        if (deadline and now >= deadline) or (try_deadline and now >= try_deadline):
            self._timed_out(overall=bool(deadline and now >= deadline))
            return
        if self.mode == _TUNNEL:
            return  # tunnels live as long as both sides want
        in_message = self.parser.in_message
        mark = self.activity * 2 + in_message
        if mark != self.sweep_mark:
            self.sweep_mark = mark
            self.sweep_since = now
            return
        if self.req is not None:
            return  # an exchange in flight is bounded by its own timeouts
        waited = now - self.sweep_since
        if in_message:
            if waited >= self.server.headers_timeout:
                self._refuse(408, "request not received in time")
        elif waited >= (self.server.idle_timeout if self.activity else self.server.headers_timeout):
            self._close()

    def _timed_out(self, overall: bool) -> None:
        self.deadline = self.try_deadline = 0.0
        if self.req is None or self.resp_started:
            return
        body = UPSTREAM_TIMEOUT
        reason = f"{self._ep()} did not answer in time"
        if self.retry_handle is not None and not overall:
            return  # between attempts: the next one gets its own per-try timeout
        if overall or self.plan is None:
            self._abandon(ErrorKind.TIMEOUT)
            self._local_failure(504, body, "UT", reason)
        else:
            self._attempt_failed(ErrorKind.TIMEOUT, body, "UT", reason)

    def shutdown(self) -> None:
        """The server is stopping: close idle connections now, others after their response."""
        if self.req is None and self.mode == _HTTP:
            self._close()

    def _abort_client(self) -> None:
        self.close_after = True
        self.mode = _CLOSED
        self.transport.abort()

    def _close(self) -> None:
        if self.mode != _CLOSED:
            self.mode = _CLOSED
        if not self.transport.is_closing():
            self.transport.close()

    def _log(self) -> None:
        server = self.server
        if not server.log_requests or self.req is None:
            return
        server.record(self)
