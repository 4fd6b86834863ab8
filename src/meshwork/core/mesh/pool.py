"""Connection-pool accounting for one cluster: Envoy's circuit breakers, as pure counters.

What lives here: ``PoolLimits`` (a DestinationRule ``connectionPool`` with
Istio's defaults) and ``PoolAccount``, which the proxy asks before sending a
request ("use an idle connection, open one, queue, or refuse?") and tells when
connections open and close and requests and retries end. A refusal is a
``LocalReply`` with flag ``UO`` and Envoy's overflow body.

Kept from Envoy/Istio:

* Istio's defaults are effectively unlimited (2^32-1 for connections,
  pending requests, requests and retries), so nothing overflows unless a
  DestinationRule says so.
* HTTP/1.1: one request per connection at a time. A request takes an idle
  connection if there is one; else opens a connection while below
  ``tcp.maxConnections``; else waits in the pending queue while below
  ``http.http1MaxPendingRequests``; else overflows.
* ``http.http2MaxRequests`` caps requests in flight to the cluster (Envoy's
  ``max_requests``) whatever the protocol.
* ``http.maxRequestsPerConnection`` closes a connection after that many
  requests (0: unlimited).
* ``http.maxRetries`` caps retries in flight (Envoy's ``max_retries``); a
  retry refused by it is not attempted and the answer in hand is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshwork.core.mesh.flags import LocalReply, local_reply
from meshwork.core.mesh.hosts import seconds
from meshwork.model.istio_traffic import ConnectionPoolSettings

UNLIMITED = 2**32 - 1  # Istio's default for every circuit breaker
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds; Istio's default connectTimeout

Admission = Literal["idle", "connect", "queue", "overflow"]


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_connections: int = UNLIMITED
    max_pending: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_requests_per_connection: int = 0
    max_retries: int = UNLIMITED
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float | None = None

    @staticmethod
    def from_model(pool: ConnectionPoolSettings | None) -> PoolLimits:
        if pool is None:
            return PoolLimits()
        tcp, http = pool.tcp, pool.http

        def limit(value: int | None) -> int:
            return UNLIMITED if not value or value < 0 else value

        return PoolLimits(
            max_connections=limit(tcp.max_connections if tcp else None),
            max_pending=limit(http.http1_max_pending_requests if http else None),
            max_requests=limit(http.http2_max_requests if http else None),
            max_requests_per_connection=(http.max_requests_per_connection or 0) if http else 0,
            max_retries=limit(http.max_retries if http else None),
            connect_timeout=(seconds(tcp.connect_timeout) if tcp else None)
            or DEFAULT_CONNECT_TIMEOUT,
            idle_timeout=seconds(http.idle_timeout) if http else None,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    admission: Admission
    reply: LocalReply | None = None  # set when the admission is "overflow"


class PoolAccount:
    """Counts connections, pending and active requests and retries of one cluster."""

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self.connections = 0
        self.pending = 0
        self.active = 0
        self.retries = 0

    def admit(self, idle_available: bool) -> Verdict:
        """Decide how a new request goes out; the counters move as the verdict says."""
        lim = self.limits
        if self.active >= lim.max_requests:
            return self._overflow(
                f"{self.active} requests in flight (maxRequests {lim.max_requests})"
            )
        if idle_available:
            self.active += 1
            return Verdict("idle")
        if self.connections < lim.max_connections:
            self.connections += 1
            self.active += 1
            return Verdict("connect")
        if self.pending < lim.max_pending:
            self.pending += 1
            return Verdict("queue")
        return self._overflow(
            f"{self.connections} connections (maxConnections {lim.max_connections}) and "
            f"{self.pending} pending (http1MaxPendingRequests {lim.max_pending})"
        )

    @staticmethod
    def _overflow(detail: str) -> Verdict:
        return Verdict("overflow", local_reply("UO", detail))

    def dequeued(self, *, got_connection: bool) -> None:
        """A queued request left the queue: it got a connection, or gave up."""
        self.pending = max(0, self.pending - 1)
        if got_connection:
            self.active += 1

    def may_open(self) -> bool:
        """Whether a queued request may open a new connection now."""
        return self.connections < self.limits.max_connections

    def connection_opened(self) -> None:
        self.connections += 1

    def connection_closed(self) -> None:
        self.connections = max(0, self.connections - 1)

    def request_finished(self) -> None:
        self.active = max(0, self.active - 1)

    def keep_connection(self, requests_served: int) -> bool:
        """Whether a connection that served ``requests_served`` requests may serve another."""
        cap = self.limits.max_requests_per_connection
        return not cap or requests_served < cap

    def admit_retry(self) -> bool:
        """Whether a retry may go out now (Envoy's ``max_retries`` circuit breaker)."""
        if self.retries >= self.limits.max_retries:
            return False
        self.retries += 1
        return True

    def retry_finished(self) -> None:
        self.retries = max(0, self.retries - 1)
