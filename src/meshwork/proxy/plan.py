"""The seam between the proxy's byte-moving engine and whatever decides routes.

What lives here: the types the engine asks about each request and acts on.
Per request the engine calls ``Decider.decide(request, downstream)`` once and
gets a ``Plan``: either a ``DirectResponse`` (answer locally: a redirect, a
fault abort, no route) or a ``Forward`` to a ``Cluster``, with the timeout,
the retry policy and the header edits to apply. Per attempt the engine asks
the cluster to ``pick`` an endpoint (excluding the ones already tried) and
reports how the attempt went with ``release``.

What must not live here: sockets, asyncio, clocks, or any routing, load
balancing or retry *policy*. Those are decisions (``meshwork.core.mesh`` for
the control-plane-fed proxy, ``meshwork.proxy.static`` for standalone mode);
the engine only carries them out. A decider must be fast and must not block:
it runs on the event loop once per request.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from meshwork.core.http1 import Request

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_LIMITS",
    "Cancellable",
    "Cluster",
    "Decider",
    "DirectResponse",
    "Downstream",
    "Endpoint",
    "ErrorKind",
    "Forward",
    "HeaderEdits",
    "Hold",
    "Outcome",
    "Plan",
    "PoolLimits",
    "RetryPolicy",
    "TlsContextSource",
    "UpstreamTls",
]


class TlsContextSource(Protocol):
    """Where the current client SSLContext comes from (``proxy.tls.ContextHolder``: swapped on rotation)."""

    @property
    def context(self) -> ssl.SSLContext: ...


@dataclass(frozen=True, slots=True, eq=False)
class UpstreamTls:
    """Originate TLS to an endpoint (a DestinationRule's ISTIO_MUTUAL / MUTUAL / SIMPLE).

    ``source`` gives the client context (certificate and trust bundle) at connect
    time; ``sni`` is sent as server_hostname (None: none); ``identities`` are the
    URI SANs (``spiffe://...``) the server may present; empty: any the trust
    bundle accepts. ``key`` names the setting in pool keys: connections made
    with different settings are never shared.
    """

    source: TlsContextSource
    sni: str | None = None
    identities: frozenset[str] = frozenset()
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            ids = ",".join(sorted(self.identities))
            object.__setattr__(self, "key", f"tls:{id(self.source):x}:{self.sni or ''}:{ids}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream address. ``key`` ("host:port") names it for balancing and logs;
    ``pool_key`` names its connection pool (``key``, plus the TLS setting when there is one).
    """

    host: str
    port: int
    key: str = field(default="", compare=False)
    tls: UpstreamTls | None = field(default=None, compare=False)
    pool_key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", f"{self.host}:{self.port}")
        if not self.pool_key:
            tls = self.tls
            object.__setattr__(self, "pool_key", self.key if tls is None else f"{self.key}|{tls.key}")


@dataclass(frozen=True, slots=True)
class Downstream:
    """Who is calling, fixed for the client connection: made once per connection, not per request.

    ``address`` is the client's IP, ``port`` the listener's local port,
    ``principal`` the peer certificate's SPIFFE identity without the scheme
    (``cluster.local/ns/default/sa/sleep``, Istio's ``source.principal``) when
    the connection is mutual TLS, ``tls`` whether it is TLS at all, ``sni`` the
    server name the client asked for (None: none sent, or plaintext).
    """

    address: str
    port: int = 0
    principal: str | None = None
    tls: bool = False
    sni: str | None = None


class ErrorKind(enum.StrEnum):
    """Why an attempt failed without a response, named like Envoy's retry_on conditions."""

    CONNECT_FAILURE = "connect-failure"  # refused, unreachable or connect timeout (flag UF)
    RESET = "reset"  # the upstream closed or reset before the response head (flag UC)
    TIMEOUT = "per-try-timeout"  # the attempt's own timeout passed (flag UT)
    OVERFLOW = "overflow"  # the pool had no room for another request (flag UO)
    PROTOCOL = "protocol-error"  # the upstream's response was malformed (flag UPE)
    CANCELLED = "cancelled"  # the client went away or broke framing: not the endpoint's fault


# How an attempt ended: the upstream's status code, or why there was none.
Outcome = int | ErrorKind


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Per-endpoint connection pool bounds (DestinationRule connectionPool)."""

    # Istio's default maxConnections is 2^32-1; a local process cannot use
    # that many descriptors, so we bound it where a busy backend saturates.
    max_connections: int = 1024
    # http1MaxPendingRequests: requests waiting for a connection; beyond it, 503 UO.
    max_pending: int = 1024
    # Idle keep-alive connections kept per endpoint (nginx's "keepalive 256").
    max_idle: int = 256
    # maxRequestsPerConnection: 0 is unlimited (Istio's default).
    max_requests_per_connection: int = 0
    # tcp.connectTimeout: Istio's default is 10 s.
    connect_timeout: float = 10.0
    # http.idleTimeout for upstream connections: Istio's default is 1 h.
    idle_timeout: float = 3600.0


DEFAULT_LIMITS: Final = PoolLimits()


class Cluster(Protocol):
    """A set of endpoints and the policy that picks among them."""

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> PoolLimits: ...

    def pick(self, exclude: frozenset[Endpoint]) -> Endpoint | None:
        """An endpoint for the next attempt, avoiding ``exclude`` when another exists.

        None means there is no healthy endpoint at all (503, flag UH).
        """
        ...

    def release(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """The attempt that ``pick`` started on ``endpoint`` is over (outlier and LB state)."""
        ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Hold(Protocol):
    """Something the request waits for before its first attempt (a workload scaled to zero waking up).

    ``wait(done)`` calls ``done(None)`` once the cluster has an endpoint, or
    ``done(reason)`` when it will not (the request is answered 503 with the
    reason); never after the returned handle's ``cancel()`` (the client left).
    """

    def wait(self, done: Callable[[str | None], None]) -> Cancellable: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """VirtualService ``retries``: ``attempts`` is the number of retries after the first try."""

    attempts: int
    retry_on: Callable[[Outcome], bool]
    per_try_timeout: float | None = None
    # Envoy's default base interval between retries (fully jittered, doubling).
    backoff_base: float = 0.025
    # When set: exactly the response statuses ``retry_on`` accepts. The engine
    # then checks a response's status by membership, not by calling
    # ``retry_on`` (which still decides for errors). None: always call.
    retriable_statuses: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Header operations, applied in Istio's order: remove, then set, then add.

    Names are compared case-insensitively; values must hold no CR, LF or NUL.
    """

    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to ``cluster``.

    ``timeout`` bounds the whole exchange from the end of the request to the
    response head, retries included (None: no timeout, Istio's default).
    ``rewrite_path`` replaces the whole request target with this origin-form
    one (path and query; it also turns a proxy client's absolute-form target
    into origin form); ``rewrite_authority`` replaces Host. ``route`` names
    the route for logs.

    ``delay`` (VirtualService ``fault.delay``, already decided for this
    request: None or 0 means none) holds the request that long before the
    first endpoint is picked; the client's bytes keep being read meanwhile.
    ``mirror`` (VirtualService ``mirror`` + ``mirrorPercentage``) is
    ``(cluster, percentage)``: that share (0 to 100, Istio's
    ``mirrorPercentage.value``) of requests is copied to one endpoint of
    ``cluster`` with ``-shadow`` appended to the authority; the copy's answer
    is ignored and it never delays nor fails the main exchange.
    """

    cluster: Cluster
    timeout: float | None = None
    retries: RetryPolicy | None = None
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    rewrite_path: bytes | None = None
    rewrite_authority: bytes | None = None
    route: str = ""
    delay: float | None = None
    mirror: tuple[Cluster, float] | None = None
    hold: Hold | None = None  # wait for this before the first pick (proxy.activator)
    # Called once with the upstream's final status and raw head, before the head goes to the
    # client: returns the edits to apply INSTEAD of ``response_headers`` (which it includes).
    # None (the usual case): ``response_headers`` apply and nothing is called.
    on_response: Callable[[int, bytes], HeaderEdits | None] | None = None


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """Answer without an upstream. ``flag`` is the Envoy response flag for the log (NR, FI…).

    ``status`` 0 answers nothing: the connection is closed (a STRICT port refusing plaintext).
    """

    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    flag: str = ""
    reason: str = ""  # sent as x-meshwork-reason when set (and logged)
    route: str = ""
    cluster: str = ""  # the destination the route names (a fault abort's metrics report it)
    # Security refusals (401, 403, 400 on a path): the reason names policies, so it goes to
    # the access log only, never to the client (Envoy logs response_code_details, sends nothing).
    private: bool = False


Plan = Forward | DirectResponse


class Decider(Protocol):
    """Turns a validated request head into a Plan. Called once per request, on the loop."""

    def decide(self, request: Request, downstream: Downstream) -> Plan:
        """``downstream`` is the client connection (address for sourceIP hashing, TLS principal, SNI)."""
        ...
