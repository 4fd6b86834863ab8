"""The HTTP/1.1 side of the proxy: one client connection, one request in flight at a time.

What lives here: ``HttpProxyConnection``, an ``asyncio.Protocol`` that feeds
the client's bytes to ``core.http1.RequestParser`` (the one strict parser),
asks the ``Decider`` what to do with each request, and carries the plan out
over pooled upstream connections: fault delays, mirror copies, attempts,
retries to other endpoints, body streaming with backpressure both ways,
``Expect: 100-continue`` and Upgrade tunnels; and reports each finished
request to the observer (``proxy.observe``).

What must not live here: routing or load-balancing policy (the plan's), the
framing rules (``core.http1`` and ``proxy.response``), head editing
(``proxy.heads``), endpoint picks, delays and retries (``proxy.attempts``),
the connection's state, local replies, refusals and timeouts
(``proxy.local``), the mirror's own exchange (``proxy.mirror``).

The hot path (a small GET on a kept-alive client and a pooled upstream) is
written for speed (shared/bench/README.md): all work happens in callbacks, no
task per request; a read holding exactly one bodyless request head skips the
parser's event loop (``RequestParser.receive_request``, same checks); the
head goes upstream as it came after one regex, in one write; the response
head and body go back in one write; no clock is read unless the plan has a
timeout or an observer is set. Idle and header timeouts are enforced by the
server's periodic sweep (``proxy.local``).

Invariants:
* A request refused by the parser gets its status, ``Connection: close`` and
  a close; nothing after it is parsed (the parser is dead).
* An upstream connection is reused only after a response that ended where
  its framing said, with nothing after it, and a request we sent completely.
* A request is retried only before any response byte reached the client; a
  non-idempotent one only if none of its bytes reached an upstream.
* The observer hears of every request that got a head exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from mypy_extensions import mypyc_attr

from meshwork.core import http1
from meshwork.errors import RemoteProtocolError
from meshwork.proxy.attempts import IDEMPOTENT, Attempts
from meshwork.proxy.heads import cut_hop, request_head, response_head
from meshwork.proxy.local import CLOSED, HTTP, MAX_PENDING, RESET_BEFORE_HEADERS, TUNNEL, log
from meshwork.proxy.plan import DirectResponse, Downstream, Endpoint, ErrorKind, Forward
from meshwork.proxy.tls import peer_principal
from meshwork.proxy.upstream import UpstreamConnection

__all__ = ["HttpProxyConnection"]

# Request bodies up to this size are kept for a retry; larger or chunked
# bodies are streamed only (Envoy's per_request_buffer_limit_bytes is 16 KiB
# by default; 64 KiB covers typical JSON posts).
MAX_RETRY_BODY: Final = 64 * 1024

_EMPTY: Final[frozenset[Endpoint]] = frozenset()
# The body log of a request without a body: shared, never appended to.
_NO_BODY: Final[list[bytes]] = []
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_Request: Final = http1.Request
_Data: Final = http1.Data
_EOM: Final = http1.EndOfMessage
_NEED_DATA: Final = http1.NEED_DATA
_PAUSED: Final = http1.PAUSED
_HTTP: Final = HTTP
_TUNNEL: Final = TUNNEL
_CLOSED: Final = CLOSED

# Compiled by mypyc (meshwork._accel); tests substitute a subclass (HttpProxy.connection_class).
@mypyc_attr(allow_interpreted_subclasses=True)
class HttpProxyConnection(Attempts, asyncio.Protocol):
    """One client connection: parse, plan, forward, answer, repeat.

    Its state is declared and initialised in ``proxy.local.LocalReplies``.
    """

    # --- asyncio.Protocol (client side) --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.source = source = str(peer[0]) if isinstance(peer, tuple) else ""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            self.downstream = Downstream(source, self.listen_port)
        else:
            self.downstream = Downstream(source, self.listen_port, peer_principal(ssl_object), True, self.sni)
        self.server.conns.add(self)
        if self.server.closing:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == _HTTP:
            if self.req is None and not self.in_process:
                # The usual read between requests: one whole head, maybe no body.
                try:
                    got = self.parser.receive_request(data)
                except RemoteProtocolError as exc:
                    self._refuse(exc.status_hint, str(exc))
                    return
                if got is not None:
                    req, eom = got
                    self._on_request(req)
                    if eom is not None and self.mode == _HTTP and not self.req_done:
                        self._on_end(eom)
                    if self.finish_pending or self.read_paused:
                        self._settle()
                    return
            self.parser.receive_data(data)
            if not self.in_process:
                self._process()
        elif mode == _TUNNEL:
            up = self.up
            if up is not None:
                up.transport.write(data)
        # LINGER / CLOSED: dropped

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
            self._report()
            self.req = None
        self.shadow = None
        up = self.up
        if up is not None:
            self.up = None
            up.owner = None
            up.transport.abort()
        elif self.pool is not None:
            self.pool.cancel(self)

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
        self._settle()

    def _settle(self) -> None:
        """After a batch of client events: finish a deferred exchange, adjust reading."""
        if self.finish_pending:
            self.finish_pending = False
            self._complete()
            return
        if self.read_paused or self.pending_size or (
            self.req_done and self.parser.buffered > MAX_PENDING
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
        self.received = 0
        self.sent = 0
        self.attempts = 0
        if self.flags or self.reason:
            self.flags = self.reason = ""
        if self.tried:
            self.tried = _EMPTY
        self.answered = self.fresh = False
        server = self.server
        if server.observer is not None:
            self.started = server.loop.time()
        try:
            plan = server.decider.decide(req, self.downstream)
        except Exception:
            log.exception("decider failed on %r", req.target)
            plan = DirectResponse(500, b"internal error\n", flag="", reason="the route decision failed")
        self.decided = plan
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
        if plan.mirror is not None and req.upgrade is None:
            self._mirror(plan.mirror[0], plan.mirror[1])
        if req.expect_continue:
            self.transport.write(_CONTINUE)
        if plan.delay:
            # VirtualService fault.delay: hold the request, keep reading its body.
            self.flags = "DI"
            self.delayed = True
            self.retry_handle = server.loop.call_later(plan.delay, self._delay_over)
            return
        if plan.hold is not None:  # a workload waking from zero (proxy.activator); the body keeps coming
            self.delayed = True
            self.retry_handle = plan.hold.wait(self._hold_over)
            return
        self._attempt()

    def _on_body(self, data: bytes) -> None:
        self.received += len(data)
        if self.plan is None or self.resp_done:
            return  # a direct response, or one already complete: the body is dropped
        req = self.req
        if req is not None and req.chunked:
            data = http1.format_chunk(data)
        self._on_body_raw(data)
        if self.up is None and self.body_log is None:
            self.pending_size += len(data)

    def _on_body_raw(self, data: bytes) -> None:
        if self.body_log is not None:
            self.body_log.append(data)
        if self.shadow is not None:
            self.shadow.add(data)
        if self.up is not None:
            self.out.append(data)
        elif self.body_log is None:
            self.pending.append(data)

    def _on_end(self, eom: http1.EndOfMessage) -> None:
        self.req_done = True
        self.keep = eom.keep_alive
        if self.direct is not None:
            self._answer_direct(self.direct)
            return
        plan = self.plan
        if self.answered or plan is None:
            self._end_exchange()  # a local reply went out before the body ended
            return
        req = self.req
        if req is not None and req.chunked and not self.resp_done:
            self._on_body_raw(http1.LAST_CHUNK)  # trailers are not forwarded
        shadow = self.shadow
        if shadow is not None:
            self.shadow = None
            try:
                shadow.send()
            except Exception:
                log.exception("mirroring failed")
        if self.resp_done:
            self.finish_pending = True  # _settle completes it once the last bytes are sent
            return
        if not self.delayed and (
            plan.timeout or (plan.retries is not None and plan.retries.per_try_timeout)
        ):
            self._arm_timeouts()

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
            plan = self.plan
            retries = plan.retries if plan is not None else None
            if (
                retries is not None
                and (retries.retriable_statuses is None or status in retries.retriable_statuses)
                and self._may_retry(status)
            ):
                self._release(status)
                self._retry()
                return
            self.sent += len(body)
            self.transport.write(self._start_response(head, status) + body)
        elif body:
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
            or (not self.keep if self.req_done else not req.keep_alive)
            or (not reader.keep_alive and reader.close_delimited)
            or self.server.closing
        )
        self.close_after = close
        edits = plan.response_headers
        on_response = plan.on_response
        if on_response is not None:  # ProxyPlugins' response hooks (proxy.plugins)
            try:
                edits = on_response(status, head)
            except Exception:
                log.exception("the response hook failed on %r", req.target)
        hop = reader.hop
        if hop is not None and edits is None and not reader.upgraded:
            return cut_hop(head, hop, close, req.http_version == b"1.0")
        return response_head(
            head,
            close=close and not reader.upgraded,
            http10_keep_alive=req.http_version == b"1.0",
            upgraded=reader.upgraded,
            edits=edits,
            hop=reader.hop,
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
        if self.picked:
            self._release(self.status)
        reader = self.reader
        up = self.up
        if reader.upgraded and up is not None:
            self.up = None
            self._tunnel(up)
            return
        if not self.req_done:
            # The upstream answered before the request ended (it may still read
            # the rest): the request's end completes the exchange.
            self.resp_done = True
            return
        if up is not None:  # _complete, inlined on the hot path
            self.up = None
            up.pool.release(up, reader.keep_alive and not reader.excess)
        self._end_exchange()

    def _complete(self) -> None:
        up = self.up
        if up is not None:
            self.up = None
            reader = self.reader
            up.pool.release(up, reader.keep_alive and not reader.excess and self.req_done)
        self._end_exchange()

    def _end_exchange(self) -> None:
        server = self.server
        if server.observer is not None:
            self._report()
        self.req = None
        self.decided = None
        self.plan = None
        self.direct = None
        self.body_log = None
        self.shadow = None
        self.resp_done = False
        if self.deadline or self.try_deadline:
            self.deadline = self.try_deadline = 0.0
        if self.pending:
            self.pending = []
            self.pending_size = 0
        self.activity += 1
        if self.close_after or server.closing:
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
        self._report()
        excess = self.reader.excess
        if excess:
            self.sent += len(excess)
            self.transport.write(excess)
        trailing = self.parser.trailing_data
        if trailing:
            up.transport.write(trailing)
        self._sync_reading()

