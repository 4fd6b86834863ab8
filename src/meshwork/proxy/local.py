"""A client connection's state, and what it says and does on its own.

What lives here: ``LocalReplies``, the base of ``proxy.http``'s
``HttpProxyConnection`` (through ``proxy.attempts.Attempts``). It declares
and initialises the connection's state, and holds the paths that end an
exchange without an upstream's answer: a ``DirectResponse``, Envoy's local
replies for an upstream that gave none (503/504 with a response flag and
``x-meshwork-reason``), the refusal of a malformed request (status,
``Connection: close``, lingering close), the server's periodic sweep
(response and per-try deadlines, idle and header timeouts), reading
backpressure, closing, and the per-request report to the observer
(``proxy.observe``).

What must not live here: parsing and the response path (``proxy.http``),
endpoint picks and retries (``proxy.attempts``). The steps those define and
this module uses (``_end_exchange``, ``_abandon``, ``_attempt_failed``,
``_detach``) are only named here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from meshwork.core import http1
from meshwork.proxy.heads import local_reply
from meshwork.proxy.observe import RequestInfo
from meshwork.proxy.plan import (
    Cancellable,
    DirectResponse,
    Downstream,
    Endpoint,
    ErrorKind,
    Forward,
    Outcome,
    Plan,
)
from meshwork.proxy.response import ResponseReader
from meshwork.proxy.telemetry import MetricsObserver

if TYPE_CHECKING:
    from meshwork.proxy.mirror import Shadow
    from meshwork.proxy.server import HttpProxy
    from meshwork.proxy.upstream import Pool, UpstreamConnection

__all__ = ["LINGER_SECONDS", "MAX_PENDING", "LocalReplies"]

log: Final = logging.getLogger("meshwork.proxy")

# After refusing a request, read and drop for this long before closing so the
# client reads our answer rather than a reset (Apache's lingering close).
LINGER_SECONDS: Final = 2.0
# Bytes held for an upstream that is still connecting, or pipelined behind a
# request in flight, before we stop reading the client (uvicorn's high water).
MAX_PENDING: Final = 64 * 1024

# Envoy's local reply bodies, so habits (and scripts) from Istio carry over.
RESET_BEFORE_HEADERS: Final = "upstream connect error or disconnect/reset before headers. reset reason: "
NO_HEALTHY_UPSTREAM: Final = b"no healthy upstream"
UPSTREAM_TIMEOUT: Final = b"upstream request timeout"

# Connection modes.
HTTP: Final = 0
TUNNEL: Final = 1  # after a 101: bytes spliced both ways
LINGER: Final = 2  # refused: dropping input until closed
CLOSED: Final = 3

_EMPTY: Final[frozenset[Endpoint]] = frozenset()
_NOBODY: Final = Downstream("")


@mypyc_attr(allow_interpreted_subclasses=True)  # a base of HttpProxyConnection (meshwork._accel)
class LocalReplies:
    """The connection state, and everything that answers or closes without an upstream."""

    server: HttpProxy
    transport: asyncio.Transport
    parser: http1.RequestParser
    reader: ResponseReader
    source: str
    downstream: Downstream  # made once per connection (connection_made)
    listen_port: int  # the listener's port (set by the server's protocol factory)
    sni: str | None  # the server name of a TLS ClientHello (set by the server's protocol factory)
    mode: int
    activity: int  # requests started + responses finished (for the idle sweep)
    sweep_mark: int
    sweep_since: float
    deadline: float  # the response deadline (0: none)
    try_deadline: float  # the current attempt's deadline (0: none)
    in_process: bool
    write_paused: bool
    read_paused: bool
    up_paused: bool
    req: http1.Request | None
    decided: Plan | None  # what the decider said (kept for the report)
    plan: Forward | None  # while forwarding
    direct: DirectResponse | None
    up: UpstreamConnection | None
    pool: Pool | None
    endpoint: Endpoint | None
    tried: frozenset[Endpoint]
    token: int
    attempts: int
    up_head: bytes
    body_log: list[bytes] | None
    pending: list[bytes]
    pending_size: int
    out: list[bytes]
    shadow: Shadow | None
    sent_up: bool
    req_done: bool
    keep: bool
    resp_started: bool
    close_after: bool
    status: int
    flags: str
    reason: str
    started: float
    received: int  # request body bytes from the client
    sent: int  # response body bytes to the client
    retry_handle: asyncio.TimerHandle | Cancellable | None  # a timer, or a plan's hold (proxy.activator)
    delayed: bool
    picked: bool
    answered: bool
    fresh: bool
    peer_eof: bool
    resp_done: bool
    finish_pending: bool

    def __init__(self, server: HttpProxy) -> None:
        self.server = server
        self.transport = None  # type: ignore[assignment]  # set on connect
        self.parser = http1.RequestParser(max_body=None)
        self.reader = ResponseReader()
        self.source = ""
        self.downstream = _NOBODY
        self.listen_port = 0
        self.sni = None
        self.mode = HTTP
        self.activity = 0
        self.sweep_mark = -1
        self.sweep_since = 0.0
        self.deadline = 0.0
        self.try_deadline = 0.0
        self.in_process = False
        self.write_paused = False  # the client's transport buffer is full
        self.read_paused = False
        self.up_paused = False  # the upstream's transport buffer is full
        # The exchange in flight (req is None when there is none).
        self.req = None
        self.decided = None
        self.plan = None
        self.direct = None
        self.up = None
        self.pool = None
        self.endpoint = None
        self.tried = _EMPTY
        self.token = 0
        self.attempts = 0
        self.up_head = b""
        self.body_log = None  # the body so far, kept for retries
        self.pending = []  # body bytes not yet sent to the current upstream
        self.pending_size = 0
        self.out = []  # upstream writes coalesced during one _process run
        self.shadow = None  # the mirror copy being collected
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
        self.retry_handle = None  # the backoff or fault-delay timer
        self.delayed = False  # a fault delay holds the first attempt
        self.picked = False  # the cluster's pick for this attempt is not yet released
        self.answered = False  # a local reply went out before the request ended
        self.fresh = False  # skip idle connections (one just turned out dead)
        self.peer_eof = False
        self.resp_done = False  # the response ended before the request did
        self.finish_pending = False

    # Defined by proxy.http and proxy.attempts.
    def _end_exchange(self) -> None:
        raise NotImplementedError

    def _abandon(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def _detach(self, reusable: bool) -> None:
        raise NotImplementedError

    def _attempt_failed(self, kind: ErrorKind, body: bytes, flag: str, reason: str) -> None:
        raise NotImplementedError

    # --- Local replies -------------------------------------------------------------

    def _answer_direct(self, plan: DirectResponse) -> None:
        req = self.req
        assert req is not None
        if plan.status == 0:  # refused without a word (plaintext for a STRICT port): just close
            self.reason = plan.reason
            self.close_after = True
            self._end_exchange()
            return
        self.status = plan.status
        self.flags = plan.flag
        self.reason = plan.reason
        close = self.close_after or not self.keep or self.server.closing
        self.close_after = close
        head_only = req.method == b"HEAD"
        data = local_reply(
            plan.status,
            plan.body,
            close=close,
            reason="" if plan.private else plan.reason,
            headers=plan.headers,
            head_only=head_only,
        )
        self.resp_started = True
        self.sent += 0 if head_only else len(plan.body)
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
        head_only = req.method == b"HEAD"
        data = local_reply(status, body, close=close, reason=reason, head_only=head_only)
        self.resp_started = True
        self.sent += 0 if head_only else len(body)
        self.plan = None
        self.shadow = None
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
            self._report()
            self.req = None
            if self.resp_started:
                self._abort_client()
                return
        self.mode = LINGER
        self.transport.write(
            local_reply(status, (message + "\n").encode("utf-8", "replace"), close=True)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.sweep_mark = -2  # the sweep closes us after LINGER_SECONDS
            self.sweep_since = self.server.loop.time()
        else:
            self._close()

    # --- Timeouts --------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Called by the server every tick: enforce deadlines and idle/header timeouts."""
        mode = self.mode
        if mode == LINGER:
            if now - self.sweep_since >= LINGER_SECONDS:
                self._close()
            return
        if mode == CLOSED:
            return
        deadline = self.deadline
        try_deadline = self.try_deadline
        if (deadline and now >= deadline) or (try_deadline and now >= try_deadline):
            self._timed_out(overall=bool(deadline and now >= deadline))
            return
        if mode == TUNNEL:
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

    def _arm_timeouts(self) -> None:
        """The request ended (and any fault delay is over): start the response and per-try clocks."""
        plan = self.plan
        if plan is None:
            return
        per_try = plan.retries.per_try_timeout if plan.retries is not None else None
        if plan.timeout or per_try:
            now = self.server.loop.time()
            if plan.timeout:
                self.deadline = now + plan.timeout
            if per_try:
                self.try_deadline = now + per_try

    def _timed_out(self, overall: bool) -> None:
        self.deadline = self.try_deadline = 0.0
        if self.req is None or self.resp_started:
            return
        body = UPSTREAM_TIMEOUT
        ep = self.endpoint.key if self.endpoint is not None else "?"
        reason = f"{ep} did not answer in time"
        if self.retry_handle is not None and not overall:
            return  # between attempts: the next one gets its own per-try timeout
        if overall or self.plan is None:
            self._abandon(ErrorKind.TIMEOUT)
            self._local_failure(504, body, "UT", reason)
        else:
            self._attempt_failed(ErrorKind.TIMEOUT, body, "UT", reason)

    # --- Closing ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping: close idle connections now, others after their response."""
        if self.req is None and self.mode == HTTP:
            self._close()

    def drain(self) -> None:
        """This connection may no longer be used (its listener now refuses its kind): close it
        now when idle, else after the response in flight."""
        self.close_after = True
        if self.req is None and self.mode == HTTP:
            self._close()

    def _abort_client(self) -> None:
        self.close_after = True
        self.mode = CLOSED
        self.transport.abort()

    def _close(self) -> None:
        if self.mode != CLOSED:
            self.mode = CLOSED
        if not self.transport.is_closing():
            self.transport.close()

    # --- Reporting and flow control ---------------------------------------------------

    def _report(self) -> None:
        """Tell the observer about the request in flight (once: callers then drop it)."""
        server = self.server
        observer = server.observer
        req = self.req
        if observer is None or req is None:
            return
        decided = self.decided
        if type(decided) is Forward:
            route, cluster = decided.route, decided.cluster.name
        else:
            route = decided.route if decided is not None else ""
            cluster = decided.cluster if isinstance(decided, DirectResponse) else ""
        endpoint = self.endpoint
        if endpoint is not None and self.attempts:
            upstream, upstream_tls = endpoint.key, endpoint.tls
        else:
            upstream, upstream_tls = "", None
        info = RequestInfo(
            req.method,
            req.host or b"",
            req.target,
            self.status,
            self.flags,
            route,
            cluster,
            upstream,
            self.started,
            server.loop.time() - self.started,
            self.received,
            self.sent,
            reason=self.reason,
            source=self.source,
            attempts=self.attempts,
            request=req,
            downstream=self.downstream,
            upstream_tls=upstream_tls,
        )
        try:
            if type(observer) is MetricsObserver:
                observer.request_done(info)  # compiled: a direct call, not a method lookup
            else:
                observer.request_done(info)
        except Exception:
            log.exception("the observer failed on a finished request")

    def _sync_reading(self) -> None:
        transport = self.transport
        if self.mode == CLOSED or transport.is_closing():
            return
        pause = self.up_paused or (
            self.mode == HTTP
            and (self.pending_size > MAX_PENDING or (self.req_done and self.parser.buffered > MAX_PENDING))
        )
        if pause != self.read_paused:
            self.read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None and not self.up.closed:
            self.up.transport.resume_reading()
