"""Attempts: getting one request to an upstream endpoint, again if it must.

What lives here: ``Attempts``, the base of ``proxy.http``'s
``HttpProxyConnection`` that carries out a ``Forward`` up to the response
head: the fault delay before the first pick, the mirror copy
(``proxy.mirror``), picking an endpoint, taking a pooled connection (or
waiting for one), sending the head and what is known of the body, and, when
an attempt fails before any response byte reached the client, deciding
whether to retry (the plan's policy, RFC 9110 §9.2.2 idempotency, the body
kept for replay) with Envoy's jittered exponential backoff.

What must not live here: reading the client (``proxy.http``), the response
path (``proxy.http``), local replies and timeouts (``proxy.local``), the
retry *policy* itself (the plan's).
"""

from __future__ import annotations

import logging
import random
from typing import Final

from mypy_extensions import mypyc_attr

from meshwork.proxy.local import HTTP, NO_HEALTHY_UPSTREAM, RESET_BEFORE_HEADERS, LocalReplies
from meshwork.proxy.mirror import Shadow
from meshwork.proxy.plan import Cluster, ErrorKind, Outcome
from meshwork.proxy.upstream import OVERFLOW, Pool, UpstreamConnection

__all__ = ["IDEMPOTENT", "Attempts"]

log: Final = logging.getLogger("meshwork.proxy")

# RFC 9110 §9.2.2: methods a retry cannot make worse.
IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_HTTP: Final = HTTP


@mypyc_attr(allow_interpreted_subclasses=True)  # a base of HttpProxyConnection (meshwork._accel)
class Attempts(LocalReplies):
    """Endpoint picks, upstream connections and retries for the request in flight."""

    # The rest of proxy.upstream.Owner, defined by proxy.http.
    def upstream_data(self, conn: UpstreamConnection, data: bytes) -> None:
        raise NotImplementedError

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def upstream_paused(self, paused: bool) -> None:
        raise NotImplementedError

    def _mirror(self, cluster: Cluster, percentage: float) -> None:
        if percentage < 100.0 and random.random() * 100.0 >= percentage:
            return
        req = self.req
        plan = self.plan
        assert req is not None and plan is not None
        try:
            self.shadow = Shadow(self.server, cluster, req, plan)
        except Exception:
            log.exception("could not mirror %r", req.target)

    def _delay_over(self) -> None:
        self.retry_handle = None
        self.delayed = False
        if self.req_done:
            self._arm_timeouts()
        self._attempt()

    def _hold_over(self, failure: str | None) -> None:
        """The plan's hold is over: attempt, or answer 503 with why the upstream did not come up."""
        self.retry_handle = None
        self.delayed = False
        if self.plan is None or self.mode != _HTTP:
            return
        if failure is not None:
            self._local_failure(503, NO_HEALTHY_UPSTREAM, "UH", failure)
            return
        if self.req_done:
            self._arm_timeouts()
        self._attempt()

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
        pool = pools.get(endpoint.pool_key)
        if pool is None:
            pool = pools[endpoint.pool_key] = Pool(endpoint, cluster.limits, self.server.source_address)
        elif pool.limits is not cluster.limits:  # a DestinationRule changed the connectionPool
            pool.limits = cluster.limits
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
        self._attach(conn)  # type: ignore[arg-type]  # neither None nor OVERFLOW here

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
            self.try_deadline = self.server.loop.time() + (plan.retries.per_try_timeout or 0.0)
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
        self.delayed = False
        self._release(outcome)
        self._detach(reusable=False)

    def _ep(self) -> str:
        return self.endpoint.key if self.endpoint is not None else "?"
