"""The control-plane-fed decider: a compiled routing table behind the engine's ``Decider`` seam.

What lives here: ``MeshDecider`` (one per applied snapshot) turns each
request into a ``Plan`` with ``meshwork.core.mesh.route.match_route``, and
``ClusterState`` keeps what must outlive a snapshot: each cluster's load
balancer position and active requests, and its outlier-detection state,
carried over by cluster name when a new snapshot arrives, so a config push
never readmits an ejected endpoint or resets round robin.

Meshed endpoints (labelled ``security.istio.io/tlsMode: istio``, which
injection sets) are reached through their own sidecar: ``ClusterState``
maps them to ``<ip>:15006`` and the plan adds ``x-meshwork-inbound-port:
<app port>`` (``proxy.inbound`` reads and removes it). The header is one per
cluster: when meshed endpoints of one cluster listen on different app ports
(a named targetPort), those on the most common port go through their
sidecar and the others straight to the app; in a cluster mixing meshed and
plain endpoints the plain ones get the header too and ignore it. LB and
outlier state stay keyed by the app address (``ip:port``).

Which TLS each endpoint gets (auto mTLS, DestinationRule ``tls``) is asked of
an ``EndpointTls`` (``proxy.meshtls.OutboundMtls``, one per snapshot); a
change of its ``key`` rebuilds the clusters' endpoints.

ProxyPlugins (``proxy.plugins``) selected for this proxy's CLIENT side (by
``spec.match``: mode and the request's service port) run here: their
``on_request`` before routing, their ``pick`` through ``_Picked`` (a cluster
wrapper built only when a plugin has one), their ``on_response`` through the
plan's ``on_response`` (set only when a plugin has one). With no plugin the
plan is the same as without the feature.

What must not: routing policy (``core.mesh``), sockets or the event loop.
Time comes from ``clock`` (the engine's loop clock), randomness from one
``random.Random`` per proxy.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from meshwork.core.http1 import Request as HttpRequest
from meshwork.core.mesh import table as t
from meshwork.core.mesh.lb import Endpoint, HashInput, LoadBalancer
from meshwork.core.mesh.outlier import OutlierDetector
from meshwork.core.mesh.route import (
    Request,
    RouteDecision,
    hash_input,
    match_route,
    request_port,
    retry_on,
)
from meshwork.proxy import plan
from meshwork.proxy.inbound import INBOUND_PORT, INBOUND_PORT_HEADER
from meshwork.proxy.observe import ConnectionInfo, RequestInfo
from meshwork.proxy.plugins import (
    CLIENT,
    Plugin,
    PluginChain,
    PluginRequest,
    ResponseHooks,
    request_fields,
    run_pick,
    run_request,
)
from meshwork.proxy.tracing import Span, Tracer

UNBOUNDED_CONNECTIONS = 1024  # a local process cannot use Istio's 2^32-1
MESHED_LABEL = "security.istio.io/tlsMode"  # "istio" on pods with a sidecar (Istio's injector sets it)
_OUTCOMES: dict[str, str] = {
    plan.ErrorKind.CONNECT_FAILURE: "connect_failure",
    plan.ErrorKind.RESET: "reset",
    plan.ErrorKind.TIMEOUT: "timeout",
    plan.ErrorKind.PROTOCOL: "reset",
}


def _core_outcome(outcome: plan.Outcome) -> int | str | None:
    """The engine's outcome as core.mesh reads it (None: nothing the endpoint did)."""
    if isinstance(outcome, plan.ErrorKind):
        return _OUTCOMES.get(outcome)
    return outcome


def _limits(pool: t.Cluster) -> plan.PoolLimits:
    p = pool.pool

    def bounded(value: int) -> int:
        return min(value, UNBOUNDED_CONNECTIONS) if value > 0 else UNBOUNDED_CONNECTIONS

    return plan.PoolLimits(
        max_connections=bounded(p.max_connections),
        max_pending=bounded(p.max_pending),
        max_requests_per_connection=p.max_requests_per_connection,
        connect_timeout=p.connect_timeout,
        idle_timeout=p.idle_timeout if p.idle_timeout is not None else plan.DEFAULT_LIMITS.idle_timeout,
    )


def _edits(ops: tuple[t.HeaderOps, ...]) -> plan.HeaderEdits | None:
    if not any(ops):
        return None
    set_: list[tuple[bytes, bytes]] = []
    add: list[tuple[bytes, bytes]] = []
    remove: list[bytes] = []
    for o in ops:
        remove += [n.encode() for n in o.remove]
        set_ += [(n.encode(), v.encode()) for n, v in o.set]
        add += [(n.encode(), v.encode()) for n, v in o.add]
    return plan.HeaderEdits(set=tuple(set_), add=tuple(add), remove=tuple(remove))


def _with_set(edits: plan.HeaderEdits | None, extra: tuple[tuple[bytes, bytes], ...]) -> plan.HeaderEdits:
    """``edits`` with more headers to set (after its own)."""
    if edits is None:
        return plan.HeaderEdits(set=extra)
    return plan.HeaderEdits(set=edits.set + extra, add=edits.add, remove=edits.remove)


class EndpointTls(Protocol):
    """Which address and TLS reach an endpoint (``proxy.meshtls.OutboundMtls``: auto mTLS, DestinationRule tls).

    ``key`` changes whenever an answer could: clusters are then rebuilt.
    """

    @property
    def key(self) -> str: ...

    def endpoint(self, cluster: t.Cluster, ep: Endpoint, via_sidecar: bool) -> plan.Endpoint: ...


class ClusterState:
    """The live side of one cluster: balancer and outlier detection, kept across snapshots."""

    def __init__(
        self, spec: t.Cluster, rng: random.Random, clock: Callable[[], float], tls: EndpointTls | None = None
    ) -> None:
        self.rng, self.clock = rng, clock
        self.outlier: OutlierDetector | None = None
        self.tls = tls
        self.update(spec)

    @property
    def tls_key(self) -> str:
        return self.tls.key if self.tls is not None else ""

    def update(self, spec: t.Cluster, tls: EndpointTls | None = None) -> None:
        if tls is not None:
            self.tls = tls
        self.spec = spec
        self.name = spec.name
        self.limits = _limits(spec)
        old = getattr(self, "lb", None)
        self.lb = LoadBalancer(spec.lb, spec.endpoints)
        if old is not None:  # keep active counts (least request) for endpoints that stay
            for ep in spec.endpoints:
                for _ in range(old.active(ep.key)):
                    self.lb.request_started(ep.key)
        meshed = Counter(ep.port for ep in spec.endpoints if ep.labels.get(MESHED_LABEL) == "istio")
        # The most common app port of the meshed endpoints (the lowest on a tie) is the one the header names.
        inbound = min(meshed, key=lambda p: (-meshed[p], p)) if meshed else None
        self.endpoints: dict[str, plan.Endpoint] = {}
        self._keys: dict[plan.Endpoint, str] = {}  # the address we connect to -> the LB / outlier key
        for ep in spec.endpoints:
            via_sidecar = inbound is not None and ep.port == inbound and ep.labels.get(MESHED_LABEL) == "istio"
            if self.tls is not None:
                target = self.tls.endpoint(spec, ep, via_sidecar)
            else:
                target = plan.Endpoint(ep.address, INBOUND_PORT if via_sidecar else ep.port)
            self.endpoints[ep.key] = target
            self._keys[target] = ep.key
        self.inbound_edits = (
            plan.HeaderEdits(set=((INBOUND_PORT_HEADER, str(inbound).encode()),)) if inbound is not None else None
        )
        if spec.outlier is None:
            self.outlier = None
        elif self.outlier is None or self.outlier.config != spec.outlier:
            self.outlier = OutlierDetector(spec.outlier, self.endpoints)
        else:
            self.outlier.set_endpoints(self.endpoints)

    def candidates(self, exclude: frozenset[plan.Endpoint]) -> tuple[Endpoint, ...]:
        """The endpoints neither ejected by outlier detection (panic mode aside) nor in ``exclude``."""
        unavailable = self.outlier.unavailable(self.clock()) if self.outlier is not None else frozenset()
        keys = self._keys
        tried = {keys.get(e, e.key) for e in exclude}
        return tuple(ep for ep in self.lb.endpoints if ep.key not in unavailable and ep.key not in tried)

    def take(self, ep: Endpoint) -> plan.Endpoint:
        """Start a request on ``ep`` (one of ``candidates``), chosen by someone other than the balancer."""
        self.lb.request_started(ep.key)
        return self.endpoints.get(ep.key) or plan.Endpoint(ep.address, ep.port)

    def pick(self, exclude: frozenset[plan.Endpoint], hashed: HashInput | None = None) -> plan.Endpoint | None:
        now = self.clock()
        unavailable = self.outlier.unavailable(now) if self.outlier is not None else frozenset()
        keys = self._keys
        chosen = self.lb.pick(self.rng, hash_input=hashed, unavailable=unavailable,
                              exclude={keys.get(e, e.key) for e in exclude})  # fmt: skip
        ep = chosen.endpoint
        if ep is None:
            return None
        self.lb.request_started(ep.key)
        return self.endpoints.get(ep.key) or plan.Endpoint(ep.address, ep.port)

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        key = self._keys.get(endpoint, endpoint.key)
        self.lb.request_finished(key)
        if self.outlier is not None:
            seen = _core_outcome(outcome)
            if seen is not None:
                self.outlier.record(key, seen, self.clock())


class _Bound:
    """A cluster with one request's hash input, for consistent-hash balancing."""

    __slots__ = ("hashed", "limits", "name", "state")

    def __init__(self, state: ClusterState, hashed: HashInput) -> None:
        self.state, self.hashed = state, hashed
        self.name, self.limits = state.name, state.limits

    def pick(self, exclude: frozenset[plan.Endpoint]) -> plan.Endpoint | None:
        return self.state.pick(exclude, self.hashed)

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        self.state.release(endpoint, outcome)


class _Picked:
    """A cluster whose endpoints ProxyPlugins' ``pick`` hooks choose first, the balancer after."""

    __slots__ = ("hashed", "limits", "name", "pickers", "request", "state")

    def __init__(
        self, state: ClusterState, hashed: HashInput | None, pickers: list[Plugin], request: PluginRequest
    ) -> None:
        self.state, self.hashed, self.pickers, self.request = state, hashed, pickers, request
        self.name, self.limits = state.name, state.limits

    def pick(self, exclude: frozenset[plan.Endpoint]) -> plan.Endpoint | None:
        state = self.state
        offered = state.candidates(exclude)
        if offered:  # none untried and healthy: the balancer decides (it may reuse a tried one)
            chosen = run_pick(self.pickers, self.request, offered)
            if chosen is not None:
                return state.take(chosen)
        return state.pick(exclude, self.hashed)

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        self.state.release(endpoint, outcome)


class _Passthrough:
    """Istio's PassthroughCluster: the address the client asked for, as it is."""

    __slots__ = ("endpoint", "limits", "name")

    def __init__(self, host: str, port: int) -> None:
        self.name = "PassthroughCluster"
        self.limits = plan.DEFAULT_LIMITS
        self.endpoint = plan.Endpoint(host, port)

    def pick(self, exclude: frozenset[plan.Endpoint]) -> plan.Endpoint | None:
        return self.endpoint

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        pass


class Tracing:
    """x-request-id and W3C traceparent on every forwarded request, and its span kept.

    A request without ``x-request-id`` gets one; its ``traceparent`` (if any)
    becomes the parent of a new span whose id goes upstream. The span ends
    when the engine reports the request done (``request_done``, an observer).
    """

    MAX_OPEN = 10_000  # spans of requests in flight; older ones are dropped if reports go missing

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.open: OrderedDict[int, Span] = OrderedDict()

    def headers_for(self, raw: HttpRequest, req: Request) -> tuple[tuple[bytes, bytes], ...]:
        """Start the request's span; the headers to set upstream (traceparent, and a request id if none)."""
        rid = req.headers.get("x-request-id")
        span = self.tracer.start(rid.encode() if rid else None, (req.headers.get("traceparent") or "").encode() or None)
        tp = span.headers(add_request_id=False).split(b": ", 1)[1].rstrip(b"\r\n")
        self.open[id(raw)] = span
        if len(self.open) > self.MAX_OPEN:
            self.open.popitem(last=False)
        if rid:
            return ((b"traceparent", tp),)
        return ((b"traceparent", tp), (b"x-request-id", span.request_id))

    # -- observer ----------------------------------------------------------------------
    def request_done(self, info: RequestInfo) -> None:
        span = self.open.pop(id(info.request), None) if info.request is not None else None
        if span is None:
            return
        name = f"{info.authority.decode('latin-1')}{info.path.decode('latin-1').partition('?')[0]}"
        self.tracer.finish(span, name=name, status=info.status, attributes={
            "http.method": info.method.decode("latin-1"), "http.status_code": info.status,
            "upstream_cluster": info.cluster, "response_flags": info.flags or "-",
        })  # fmt: skip

    def connection_opened(self, info: ConnectionInfo) -> None:
        pass

    def connection_closed(self, info: ConnectionInfo) -> None:
        pass


class MeshDecider:
    """Routes with one compiled table; ``states`` is shared with the decider it replaces."""

    def __init__(
        self,
        table: t.RoutingTable,
        *,
        states: dict[str, ClusterState] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        listener_port: int | None = None,
        tracing: Tracing | None = None,
        plugins: list[Plugin] | None = None,
        tls: EndpointTls | None = None,
    ) -> None:
        self.table = table
        self.tracing = tracing
        self.chain = PluginChain(plugins or [], CLIENT)  # the outbound side's: spec.match CLIENT
        self.plugins = self.chain.plugins
        self.rng = rng or random.Random()
        self.clock = clock
        self.listener_port = listener_port  # a gateway routes by the port it listens on
        self.states: dict[str, ClusterState] = states if states is not None else {}
        live = set()
        for name, spec in table.clusters.items():
            live.add(name)
            state = self.states.get(name)
            if state is None:
                self.states[name] = ClusterState(spec, self.rng, clock, tls)
            elif state.spec != spec or (tls is not None and state.tls_key != tls.key):
                state.update(spec, tls)
        for gone in [n for n in self.states if n not in live]:
            del self.states[gone]
        self._retry_cache: dict[int, plan.RetryPolicy] = {}

    def _retries(self, policy: t.RetryPolicy) -> plan.RetryPolicy | None:
        if policy.attempts <= 0:
            return None
        cached = self._retry_cache.get(id(policy))
        if cached is None:
            def decide(outcome: plan.Outcome, p: t.RetryPolicy = policy) -> bool:
                seen = _core_outcome(outcome)
                return seen is not None and retry_on(p, seen)

            # Which response statuses retry, worked out once: the engine then tests
            # membership per response instead of calling ``decide``.
            statuses = frozenset(code for code in range(100, 600) if retry_on(policy, code))
            cached = plan.RetryPolicy(attempts=policy.attempts, retry_on=decide,
                                      per_try_timeout=policy.per_try_timeout,
                                      backoff_base=policy.backoff_base, retriable_statuses=statuses)  # fmt: skip
            self._retry_cache[id(policy)] = cached
        return cached

    @staticmethod
    def routing_request(req: HttpRequest, listener_port: int | None = None) -> Request:
        """What routing reads: origin-form path, authority, lower-cased headers, the service port."""
        target = req.target.decode("latin-1")
        authority = (req.host or b"").decode("latin-1")
        scheme = "http"
        if not target.startswith("/") and "://" in target:  # absolute-form: a client using us as its proxy
            parts = urlsplit(target)
            scheme = parts.scheme or "http"
            authority = parts.netloc or authority
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers: dict[str, str] = {}
        for name, value in req.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        port = listener_port if listener_port is not None else request_port(authority, scheme)
        return Request(method=req.method.decode("latin-1"), path=target, authority=authority,
                       headers=headers, port=port, scheme=scheme)  # fmt: skip

    def decide(self, request: HttpRequest, downstream: plan.Downstream) -> plan.Plan:
        req = self.routing_request(request, self.listener_port)
        view: PluginRequest | None = None
        if self.plugins:
            hooks = self.chain.at(req.port)
            if hooks.plugins:
                view = PluginRequest(req.method, req.path, req.authority, req.headers, {})
                reply = run_request(hooks.plugins, view)
                if reply is not None:
                    return plan.DirectResponse(status=reply.status, body=reply.body, headers=reply.headers,
                                               reason=f"answered by ProxyPlugin {reply.plugin}")  # fmt: skip
        decision = match_route(self.table, req, self.rng)
        chosen = self.plan_for(decision, req, request, downstream.address)
        if type(chosen) is not plan.Forward or (view is None and self.tracing is None):
            return chosen
        extra = request_fields(view.headers_to_add) if view is not None else ()
        if self.tracing is not None:
            extra += self.tracing.headers_for(request, req)
        headers = _with_set(chosen.request_headers, extra) if extra else chosen.request_headers
        if view is None:
            return dataclasses.replace(chosen, request_headers=headers)
        cluster = chosen.cluster
        hooks = self.chain.at(req.port)
        if hooks.pickers:
            if type(cluster) is ClusterState and cluster.spec.lb.policy != "PASSTHROUGH":
                cluster = _Picked(cluster, None, hooks.pickers, view)
            elif type(cluster) is _Bound:
                cluster = _Picked(cluster.state, cluster.hashed, hooks.pickers, view)
        responders = hooks.responders
        on_response = ResponseHooks(responders, view, chosen.response_headers) if responders else None
        if not extra and cluster is chosen.cluster and on_response is None:
            return chosen
        return dataclasses.replace(chosen, request_headers=headers, cluster=cluster, on_response=on_response)

    def plan_for(self, d: RouteDecision, req: Request, raw: HttpRequest, source: str) -> plan.Plan:
        route = d.route.name if d.route is not None else ""
        absolute = not raw.target.startswith(b"/") and b"://" in raw.target
        if d.action == "forward":
            cluster: plan.Cluster
            inbound: plan.HeaderEdits | None = None
            if d.passthrough or d.cluster is None:
                host, _, port = req.authority.rpartition(":")
                if not host:
                    host, port = req.authority, "80"
                cluster = _Passthrough(host, int(port) if port.isdigit() else 80)
            else:
                state = self.states[d.cluster.name]
                inbound = state.inbound_edits
                if state.spec.lb.policy in ("RING_HASH", "MAGLEV"):
                    cluster = _Bound(state, hash_input(req, source))
                else:
                    cluster = state
            mirror: tuple[plan.Cluster, float] | None = None
            if d.mirrors:  # already sampled by mirrorPercentage: copy this one
                shadow = self.states.get(d.mirrors[0].cluster)
                if shadow is not None:
                    mirror = (shadow, 100.0)
            edits = _edits(d.request_headers)
            if inbound is not None:  # the destination's sidecar: which app port this was for
                edits = _with_set(edits, inbound.set)
            path = d.path if d.path is not None else (req.path if absolute else None)
            authority = d.authority if d.authority is not None else (req.authority if absolute else None)
            return plan.Forward(
                cluster=cluster, timeout=d.timeout, retries=self._retries(d.retry),
                request_headers=edits, response_headers=_edits(d.response_headers),
                rewrite_path=path.encode() if path is not None else None,
                rewrite_authority=authority.encode() if authority is not None else None, route=route,
                delay=d.delay or None, mirror=mirror,
            )  # fmt: skip
        headers = tuple((n.encode(), v.encode()) for n, v in d.response_extra)
        if d.location:
            headers += ((b"location", d.location.encode()),)
        cluster_name = ""
        if d.route is not None and d.route.destinations:  # e.g. a fault abort: metrics name the destination
            cluster_name = d.route.destinations[0].cluster
        return plan.DirectResponse(status=d.status, body=d.body, headers=headers, flag=",".join(d.flags),
                                   reason=d.reason, route=route, cluster=cluster_name)  # fmt: skip
