"""The compiled routing table of one proxy: what ``compile`` produces and ``route`` reads.

What lives here: frozen dataclasses only, Envoy's vocabulary in Istio's
terms. A ``RoutingTable`` has, per listener port, a ``PortRoutes`` (the
virtual hosts by domain) and the ``Cluster``\\ s routes point at. Each
``VirtualHost`` holds its ``Route``\\ s in VirtualService order, with their
match blocks precompiled (``StringMatcher`` with compiled regexes) and their
policies read into plain numbers (seconds, percentages, status codes).

Nothing here looks at a request; ``route.match_route`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from meshwork.core.mesh.lb import Endpoint, LbConfig
from meshwork.core.mesh.outlier import OutlierConfig
from meshwork.core.mesh.pool import PoolLimits

if TYPE_CHECKING:
    from meshwork.core.mesh.gateway_tls import PortTls
    from meshwork.core.mesh.route import RouteDecision

MatchKind = Literal["exact", "prefix", "regex", "present"]


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """An Istio ``StringMatch``; regexes must match the whole value (RE2 ``FullMatch``)."""

    kind: MatchKind
    value: str = ""
    pattern: re.Pattern[str] | None = None
    ignore_case: bool = False

    def matches(self, text: str) -> bool:
        if self.kind == "present":
            return True
        if self.kind == "regex":
            assert self.pattern is not None
            return self.pattern.fullmatch(text) is not None
        if self.ignore_case:
            text = text.lower()
        if self.kind == "exact":
            return text == self.value
        return text.startswith(self.value)

    def describe(self) -> str:
        return "present" if self.kind == "present" else f"{self.kind} {self.value!r}"


@dataclass(frozen=True, slots=True)
class MatchBlock:
    """One ``HTTPMatchRequest``: every condition must hold (source and port were settled at compile time)."""

    name: str = ""
    uri: StringMatcher | None = None
    scheme: StringMatcher | None = None
    method: StringMatcher | None = None
    authority: StringMatcher | None = None
    headers: tuple[tuple[str, StringMatcher], ...] = ()
    without_headers: tuple[tuple[str, StringMatcher], ...] = ()
    query_params: tuple[tuple[str, StringMatcher], ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """``set`` replaces, ``add`` appends, ``remove`` deletes (names lower-case)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


NO_HEADER_OPS = HeaderOps()


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    request: HeaderOps = NO_HEADER_OPS
    response: HeaderOps = NO_HEADER_OPS


NO_HEADERS = HeaderPolicy()


@dataclass(frozen=True, slots=True)
class WeightedDestination:
    """One ``route[]`` entry: a cluster and its share."""

    cluster: str
    host: str
    port: int
    subset: str | None
    weight: int
    headers: HeaderPolicy = NO_HEADERS


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: str | None = None
    scheme: str | None = None
    code: int = 301  # Istio's default redirectCode


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    regex: re.Pattern[str] | None = None
    regex_substitution: str = ""
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy's retry policy as Istio writes it."""

    attempts: int  # retries after the first try; 0 disables retries
    retry_on: frozenset[str]
    status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    other_host: bool = True  # Istio always sets the previous_hosts predicate
    backoff_base: float = 0.025  # Envoy's default base interval (25 ms)


# Istio's retry policy for routes without ``retries`` (pilot DefaultRetryPolicy).
DEFAULT_RETRY = RetryPolicy(
    attempts=2,
    retry_on=frozenset(
        {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    ),
    status_codes=frozenset({503}),
)
NO_RETRY = RetryPolicy(attempts=0, retry_on=frozenset())


@dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None  # seconds
    delay_percent: float = 0.0
    abort_status: int | None = None
    abort_grpc: str | None = None
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    host: str
    port: int
    subset: str | None
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Cors:
    origins: tuple[StringMatcher, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool = False
    unmatched_preflights: str = "FORWARD"


@dataclass(frozen=True, slots=True)
class Route:
    """One ``http[]`` entry of a VirtualService, or the default route of a service."""

    name: str
    virtual_service: str  # "namespace/name", "" for a default route
    matches: tuple[MatchBlock, ...] = ()  # empty: matches every request
    destinations: tuple[WeightedDestination, ...] = ()
    total_weight: int = 0
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    timeout: float | None = None  # None: no timeout (Istio's default)
    retry: RetryPolicy = DEFAULT_RETRY
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    cors: Cors | None = None
    headers: HeaderPolicy = NO_HEADERS


@dataclass(frozen=True, slots=True)
class TcpRoute:
    """The ``tcp[]`` route a TCP connection takes (its match was settled at compile time)."""

    name: str
    virtual_service: str  # "" for the default route to the service
    destinations: tuple[WeightedDestination, ...]


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str  # "host:port", as Istio names them
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class PortRoutes:
    """The route configuration of one listener port, indexed by domain."""

    port: int
    exact: Mapping[str, VirtualHost] = field(default_factory=dict)
    wildcards: tuple[
        tuple[str, VirtualHost], ...
    ] = ()  # ("*.example.com", vh), most specific first
    catch_all: VirtualHost | None = None

    def lookup(self, host: str) -> VirtualHost | None:
        """Envoy's domain search: exact, then the longest wildcard suffix, then ``*``."""
        found = self.exact.get(host)
        if found is not None:
            return found
        for pattern, vh in self.wildcards:
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return vh
        return self.catch_all


@dataclass(frozen=True, slots=True)
class Cluster:
    """An Envoy cluster: ``outbound|<port>|<subset>|<fqdn>`` and the endpoints behind it."""

    name: str
    host: str
    port: int
    subset: str | None
    endpoints: tuple[Endpoint, ...]
    lb: LbConfig = field(default_factory=LbConfig)
    pool: PoolLimits = field(default_factory=PoolLimits)
    outlier: OutlierConfig | None = None
    tls_mode: str | None = None  # DestinationRule tls.mode, when set
    protocol: str = "http"
    destination_rule: str = ""  # "namespace/name" of the rule applied, for `why`


def cluster_name(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Everything one proxy routes with."""

    ports: Mapping[int, PortRoutes]
    clusters: Mapping[str, Cluster]
    role: str = "sidecar"
    namespace: str = "default"
    domain: str = "cluster.local"
    version: str = ""
    allow_any: bool = True  # outboundTrafficPolicy ALLOW_ANY: unknown hosts pass through
    # TCP routes: port -> host -> route. A gateway's are under host "*", and each of its TCP
    # servers' ports is here, with no route when none applies (``core.mesh.gateway_tcp``).
    tcp: Mapping[int, Mapping[str, TcpRoute]] = field(default_factory=dict)
    gateway_tls: Mapping[int, PortTls] = field(default_factory=dict)  # gateways: each TLS port's servers
    # Decisions that do not depend on the request beyond the route and destination,
    # built once and shared (the fast path of ``route.match_route``), by id(vhost), id(dest).
    decisions: dict[tuple[int, int], RouteDecision] = field(
        default_factory=dict, compare=False, repr=False
    )
