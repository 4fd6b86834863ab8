"""A proxy's snapshot into its routing table: which routes and policies apply where.

What lives here: ``compile_snapshot`` and the decisions Istio's pilot makes
when it builds one proxy's Envoy configuration:

* **Service registry**: Kubernetes Services (host
  ``name.ns.svc.cluster.local``) and ServiceEntry hosts (as written, wildcards
  allowed), each with its ports and endpoints. ServiceEntry endpoints take
  their port by the service port's name, else ``targetPort``, else the
  number; a ``DNS`` entry without endpoints has the host itself as endpoint;
  ``NONE`` resolution passes traffic through to the address asked for.
* **Virtual hosts** per listener port. Sidecars (gateway ``mesh``): one per
  service port, reachable by the names a client may use (``reviews`` from
  the same namespace, ``reviews.ns``, ``reviews.ns.svc``, the FQDN, the
  cluster IP), with the routes of the VirtualService that covers the host
  (exact host before wildcard, then the oldest) or, when there is none, the
  default route to the service itself with Istio's default retry policy.
  VirtualService hosts that name no service get a virtual host on port 80
  and on the ports their match blocks name (simplified from Istio).
  Gateways: the Gateways whose ``selector`` matches the proxy's labels open
  their servers' ports; VirtualServices bound to them (``gateways``) add
  virtual hosts for each of their hosts that a server host admits (with
  ``ns/`` host prefixes honoured); a request for any other host is 404 NR.
  When two VirtualServices claim the same host, the first (oldest) wins;
  Istio merges them on gateways. An HTTP server with ``tls.httpsRedirect``
  answers every request for its hosts with a 301 to ``https://`` (Envoy's
  ``require_tls: ALL``). The TLS side of gateway ports (certificates, SNI,
  passthrough) is ``gateway_tls``'s.
* **DestinationRules**: for a host, rules in the proxy's namespace come
  first, then the service's namespace, then the root namespace
  ``istio-system``, then any other visible one; within a namespace the most
  specific host wins (exact before wildcards), then the oldest. A rule with
  a ``workloadSelector`` applies only to matching proxies of its namespace.
* **Clusters** ``outbound|<port>|<subset>|<fqdn>`` for every service port,
  plus one per subset of the rule that applies; subset endpoints are those
  whose labels include the subset's labels; endpoints not ready are left
  out. The traffic policy is merged as Istio's ``MergeTrafficPolicy`` does:
  top level, replaced by the top level's ``portLevelSettings`` for the port,
  then the subset's own fields, then the subset's ``portLevelSettings``.
  A ``portLevelSettings`` entry replaces all four policies (load balancer,
  pool, outlier detection, TLS), unset ones included, as Istio documents.
* **TCP routes** (``tcp[]``) per listener port: for sidecars by service host
  (the first route whose ``port``, ``gateways``, ``sourceLabels`` and
  ``sourceNamespace`` hold, else the service itself), for gateways on their
  TCP servers' ports (protocol TCP, MONGO, MYSQL or REDIS; host ``*``): the
  first route of the oldest bound VirtualService whose hosts overlap the
  server's; a TCP server port with no such route is in the table with no
  route (the gateway listens and closes its connections, as Envoy does
  with no filter chain match). ``destinationSubnets`` holds when one of the
  service's addresses (its ClusterIP, a ServiceEntry's ``addresses``) is in
  one of the subnets, and is not evaluated for gateways; ``sourceSubnet`` is
  not evaluated.
* ``exportTo`` is honoured for VirtualServices, DestinationRules and
  ServiceEntries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshwork.core.mesh.compile_http import (
    Context,
    compile_route,
    default_route,
    resolve_gateway,
)
from meshwork.core.mesh.gateway_tls import PortTls, compile_gateway_tls
from meshwork.core.mesh.hosts import (
    host_matches,
    hosts_intersect,
    narrower,
    request_aliases,
    resolve_host,
    specificity,
    visible,
)
from meshwork.core.mesh.lb import Endpoint, LbConfig
from meshwork.core.mesh.outlier import OutlierConfig
from meshwork.core.mesh.pool import PoolLimits
from meshwork.core.mesh.snapshot import EndpointInfo, PortInfo, Snapshot
from meshwork.core.mesh.table import (
    NO_RETRY,
    Cluster,
    PortRoutes,
    Redirect,
    Route,
    RoutingTable,
    TcpRoute,
    VirtualHost,
    WeightedDestination,
    cluster_name,
)
from meshwork.model.base import Resource
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    LoadBalancerSettings,
    OutlierDetection,
    TrafficPolicy,
)

ROOT_NAMESPACE = "istio-system"  # Istio's default meshConfig.rootNamespace
NON_SERVICE_PORT = 80  # where a sidecar serves VirtualService hosts that name no service
TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})  # Gateway server protocols Istio proxies as TCP


@dataclass(frozen=True, slots=True)
class Service:
    """One host of the registry (a Kubernetes Service or a ServiceEntry host)."""

    hostname: str
    namespace: str
    ports: tuple[PortInfo, ...]
    endpoints: tuple[EndpointInfo, ...]
    aliases: tuple[str, ...] = ()
    passthrough: bool = False
    kind: str = "Kubernetes"


@dataclass(slots=True)
class _Policy:
    lb: LoadBalancerSettings | None = None
    pool: ConnectionPoolSettings | None = None
    outlier: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


def port_protocol(port: PortInfo) -> str:
    """Istio's protocol selection: ``appProtocol``, else the port name's prefix, else sniffed."""
    candidate = port.app_protocol or port.name.split("-", 1)[0]
    candidate = candidate.lower()
    if candidate in ("http", "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c"):
        return "http2" if candidate in ("h2c", "kubernetes.io/h2c") else candidate
    if candidate in ("tcp", "tls", "https", "mongo", "mysql", "redis"):
        return candidate
    if port.protocol.upper() == "UDP":
        return "udp"
    return "auto"  # Istio sniffs; meshwork's proxy sees HTTP through its http_proxy listener


def _created(obj: Resource) -> tuple[str, str, str]:
    meta = obj.metadata
    return (meta.creation_timestamp or "", meta.name or "", meta.namespace or "")


def _ns(obj: Resource) -> str:
    return obj.metadata.namespace or "default"


def _registry(snap: Snapshot) -> list[Service]:
    proxy_ns, domain = snap.proxy.namespace, snap.domain
    out: list[Service] = []
    for svc in snap.services:
        aliases = request_aliases(svc.name, svc.namespace, domain, proxy_ns)
        if svc.cluster_ip:
            aliases.append(svc.cluster_ip)
        out.append(Service(aliases[0], svc.namespace, svc.ports, svc.endpoints, tuple(aliases)))
    for se in sorted(snap.service_entries, key=_created):
        ns = _ns(se)
        if not visible(se.spec.export_to, ns, proxy_ns):
            continue
        ports = tuple(
            PortInfo(p.name, p.number, p.target_port, (p.protocol or "TCP").upper())
            for p in se.spec.ports or []
        )
        resolution = se.spec.resolution or "NONE"
        for raw_host in se.spec.hosts:
            host = resolve_host(raw_host, ns, domain)
            endpoints = tuple(
                EndpointInfo(
                    ip=e.address or host,
                    ports=dict(e.ports or {}),
                    labels=dict(e.labels or {}),
                    name=e.address or host,
                )
                for e in se.spec.endpoints or []
            )
            if not endpoints and resolution == "DNS":
                endpoints = (EndpointInfo(ip=host, name=host),)
            out.append(
                Service(
                    host,
                    ns,
                    ports,
                    endpoints,
                    (host, *(se.spec.addresses or [])),
                    resolution == "NONE",
                    "ServiceEntry",
                )
            )
    return out


def _endpoint_port(ep: EndpointInfo, port: PortInfo) -> int:
    if port.name and port.name in ep.ports:
        return ep.ports[port.name]
    if not port.name and len(ep.ports) == 1:
        return next(iter(ep.ports.values()))
    if isinstance(port.target_port, int):
        return port.target_port
    if isinstance(port.target_port, str) and port.target_port in ep.ports:
        return ep.ports[port.target_port]
    return port.port


def _labels_match(want: Mapping[str, str] | None, have: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in (want or {}).items())


# -- DestinationRules --


def _rule_for(
    host: str, svc_ns: str, rules: Sequence[tuple[str, DestinationRule]], proxy_ns: str
) -> DestinationRule | None:
    best: tuple[tuple[int, tuple[int, int], tuple[str, str, str]], DestinationRule] | None = None
    for dr_host, dr in rules:
        if not host_matches(dr_host, host):
            continue
        ns = _ns(dr)
        rank = 0 if ns == proxy_ns else 1 if ns == svc_ns else 2 if ns == ROOT_NAMESPACE else 3
        key = (rank, specificity(dr_host), _created(dr))
        if best is None or key < best[0]:
            best = (key, dr)
    return best[1] if best else None


def _apply(policy: _Policy, tp: TrafficPolicy, port: int) -> None:
    """Set the fields ``tp`` sets, then let its entry for ``port`` replace all four."""
    policy.lb = tp.load_balancer or policy.lb
    policy.pool = tp.connection_pool or policy.pool
    policy.outlier = tp.outlier_detection or policy.outlier
    policy.tls = tp.tls or policy.tls
    for pls in tp.port_level_settings or []:
        if pls.port is not None and pls.port.number == port:
            policy.lb, policy.pool = pls.load_balancer, pls.connection_pool
            policy.outlier, policy.tls = pls.outlier_detection, pls.tls
            break


def merged_policy(
    top: TrafficPolicy | None, subset: TrafficPolicy | None, port: int
) -> tuple[LbConfig, PoolLimits, OutlierConfig | None, str | None]:
    """Istio ``MergeTrafficPolicy`` for one port, read into the balancer's and pool's terms."""
    policy = _Policy()
    if top is not None:
        _apply(policy, top, port)
    if subset is not None:
        _apply(policy, subset, port)
    return (
        LbConfig.from_model(policy.lb),
        PoolLimits.from_model(policy.pool),
        OutlierConfig.from_model(policy.outlier),
        policy.tls.mode if policy.tls else None,
    )


def _clusters(
    services: Iterable[Service], rules: Sequence[tuple[str, DestinationRule]], snap: Snapshot
) -> dict[str, Cluster]:
    out: dict[str, Cluster] = {}
    for svc in services:
        if svc.hostname.startswith("*"):
            continue
        dr = _rule_for(svc.hostname, svc.namespace, rules, snap.proxy.namespace)
        top = dr.spec.traffic_policy if dr else None
        subsets = [(None, None, None)] + [
            (s.name, s.labels or {}, s.traffic_policy)
            for s in (dr.spec.subsets or [] if dr else [])
        ]
        for port in svc.ports:
            for subset, labels, subset_tp in subsets:
                name = cluster_name(port.port, subset, svc.hostname)
                if name in out:
                    continue
                lb, pool, outlier, tls = merged_policy(top, subset_tp, port.port)
                if svc.passthrough:
                    lb = LbConfig("PASSTHROUGH")
                endpoints = tuple(
                    Endpoint(ep.ip, _endpoint_port(ep, port), dict(ep.labels), ep.name)
                    for ep in svc.endpoints
                    if ep.ready and _labels_match(labels, ep.labels)
                )
                out[name] = Cluster(
                    name=name,
                    host=svc.hostname,
                    port=port.port,
                    subset=subset,
                    endpoints=endpoints,
                    lb=lb,
                    pool=pool,
                    outlier=outlier,
                    tls_mode=tls,
                    protocol=port_protocol(port),
                    destination_rule=f"{_ns(dr)}/{dr.metadata.name}" if dr else "",
                )
    return out


# -- virtual hosts --


@dataclass(slots=True)
class _PortBuilder:
    exact: dict[str, VirtualHost] = field(default_factory=dict)
    wildcards: dict[str, VirtualHost] = field(default_factory=dict)
    catch_all: VirtualHost | None = None

    def add(self, vh: VirtualHost) -> None:
        for domain in vh.domains:
            if domain == "*":
                self.catch_all = self.catch_all or vh
            elif domain.startswith("*"):
                self.wildcards.setdefault(domain, vh)
            else:
                self.exact.setdefault(domain, vh)

    def build(self, port: int) -> PortRoutes:
        wild = sorted(self.wildcards.items(), key=lambda kv: specificity(kv[0]))
        return PortRoutes(port, dict(self.exact), tuple(wild), self.catch_all)


def _routes(vs: VirtualService, ctx: Context) -> tuple[Route, ...]:
    compiled = (compile_route(vs, i, h, ctx) for i, h in enumerate(vs.spec.http or []))
    return tuple(r for r in compiled if r is not None)


def _only_port(services: Sequence[Service]) -> dict[str, int]:
    return {s.hostname: s.ports[0].port for s in services if len(s.ports) == 1}


def _vs_for(
    host: str, candidates: Sequence[tuple[list[str], VirtualService]]
) -> VirtualService | None:
    best: tuple[tuple[int, int], VirtualService] | None = None
    for hosts, vs in candidates:  # candidates are oldest first: keep the first of equals
        for pattern in hosts:
            if host_matches(pattern, host):
                key = specificity(pattern)
                if best is None or key < best[0]:
                    best = (key, vs)
    return best[1] if best else None


def _sidecar_ports(
    snap: Snapshot, services: Sequence[Service], vss: Sequence[tuple[list[str], VirtualService]]
) -> dict[int, PortRoutes]:
    proxy = snap.proxy
    only = _only_port(services)
    builders: dict[int, _PortBuilder] = {}
    mesh_vss = [
        (hosts, vs)
        for hosts, vs in vss
        if "mesh" in (vs.spec.gateways or ["mesh"]) or _any_block_gateway(vs, "mesh")
    ]

    def context(port: int) -> Context:
        return Context("mesh", port, proxy.namespace, proxy.labels, snap.domain, only.get)

    for svc in services:
        vs = _vs_for(svc.hostname, mesh_vss)
        for port in svc.ports:
            routes = (
                _routes(vs, context(port.port)) if vs else (default_route(svc.hostname, port.port),)
            )
            vh = VirtualHost(f"{svc.hostname}:{port.port}", svc.aliases, routes)
            builders.setdefault(port.port, _PortBuilder()).add(vh)
    known = [s.hostname for s in services]
    for hosts, vs in mesh_vss:
        for host in hosts:
            if host == "*" or any(hosts_intersect(host, k) for k in known):
                continue
            numbers = {NON_SERVICE_PORT} | {
                m.port for h in vs.spec.http or [] for m in h.match or [] if m.port
            }
            for number in sorted(numbers):
                vh = VirtualHost(f"{host}:{number}", (host,), _routes(vs, context(number)))
                builders.setdefault(number, _PortBuilder()).add(vh)
    return {port: b.build(port) for port, b in builders.items()}


def _any_block_gateway(vs: VirtualService, gateway: str) -> bool:
    return any(gateway in (m.gateways or []) for h in vs.spec.http or [] for m in h.match or [])


def _gateway_ports(
    snap: Snapshot, services: Sequence[Service], vss: Sequence[tuple[list[str], VirtualService]]
) -> dict[int, PortRoutes]:
    proxy = snap.proxy
    only = _only_port(services)
    builders: dict[int, _PortBuilder] = {}
    for gw in sorted(snap.gateways, key=_created):
        if not _labels_match(gw.spec.selector, proxy.labels):
            continue
        gw_ns = _ns(gw)
        gw_id = f"{gw_ns}/{gw.metadata.name}"
        bound = [
            (hosts, vs)
            for hosts, vs in vss
            if gw_id in {resolve_gateway(g, _ns(vs)) for g in vs.spec.gateways or []}
            or _any_block_gateway_resolved(vs, gw_id)
        ]
        for server in gw.spec.servers or []:
            protocol = server.port.protocol.upper()
            tls_mode = server.tls.mode if server.tls else None
            if protocol not in ("HTTP", "HTTP2", "GRPC", "HTTPS") or (
                protocol == "HTTPS" and tls_mode in (None, "PASSTHROUGH", "AUTO_PASSTHROUGH")
            ):
                continue
            port = server.port.number
            builder = builders.setdefault(port, _PortBuilder())
            if server.tls is not None and server.tls.https_redirect and protocol != "HTTPS":
                _https_redirect(builder, server.hosts or [], gw_id, port)
                continue
            ctx = Context(gw_id, port, proxy.namespace, proxy.labels, snap.domain, only.get)
            for hosts, vs in bound:
                routes: tuple[Route, ...] | None = None
                for server_host in server.hosts or []:
                    ns_part, slash, host_part = server_host.lower().rpartition("/")
                    if (
                        slash
                        and ns_part not in ("*", _ns(vs))
                        and not (ns_part == "." and _ns(vs) == gw_ns)
                    ):
                        continue
                    for host in hosts:
                        if not hosts_intersect(host, host_part):
                            continue
                        if routes is None:
                            routes = _routes(vs, ctx)
                        domain = narrower(host, host_part)
                        builder.add(VirtualHost(f"{domain}:{port}", (domain,), routes))
    return {port: b.build(port) for port, b in builders.items()}


def _https_redirect(builder: _PortBuilder, hosts: Sequence[str], gw_id: str, port: int) -> None:
    """Every request for the server's hosts: 301 to the same URL with ``https`` (Envoy ``require_tls: ALL``)."""
    route = Route(
        f"{gw_id}.https-redirect",
        "",
        redirect=Redirect(scheme="https", derive_port="FROM_PROTOCOL_DEFAULT", code=301),
        retry=NO_RETRY,
    )
    for host in hosts:
        domain = host.lower().rpartition("/")[2]
        builder.add(VirtualHost(f"{domain}:{port}", (domain,), (route,)))


def _any_block_gateway_resolved(vs: VirtualService, gw_id: str) -> bool:
    ns = _ns(vs)
    return any(
        gw_id in {resolve_gateway(g, ns) for g in m.gateways or []}
        for h in vs.spec.http or []
        for m in h.match or []
    )


# -- TCP routes --


def _in_subnets(subnets: Sequence[str] | None, addresses: Sequence[str]) -> bool:
    """``destinationSubnets``: any of the destination's addresses in any subnet (no addresses: unknown, holds)."""
    if not subnets or not addresses:
        return True
    nets = [ipaddress.ip_network(s, strict=False) for s in subnets]
    ips = [ipaddress.ip_address(a) for a in addresses]
    return any(ip.version == net.version and ip in net for ip in ips for net in nets)


def _ip_addresses(names: Iterable[str]) -> tuple[str, ...]:
    out = []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        out.append(name)
    return tuple(out)


def _tcp_route(vs: VirtualService, ctx: Context, addresses: Sequence[str] = ()) -> TcpRoute | None:
    """The first ``tcp[]`` route of ``vs`` whose match can hold for this proxy, port and destination."""
    ns = _ns(vs)
    for index, tcp in enumerate(vs.spec.tcp or []):
        blocks = tcp.match or []
        ok = not blocks and ctx.gateway in {
            resolve_gateway(g, ns) for g in vs.spec.gateways or ["mesh"]
        }
        for m in blocks:
            gateways = m.gateways or vs.spec.gateways or ["mesh"]
            if (
                ctx.gateway in {resolve_gateway(g, ns) for g in gateways}
                and (m.port is None or m.port == ctx.port)
                and _labels_match(m.source_labels, ctx.labels)
                and (not m.source_namespace or m.source_namespace == ctx.namespace)
                and _in_subnets(m.destination_subnets, addresses)
            ):
                ok = True
                break
        if not ok:
            continue
        routes = tcp.route or []
        weights = [r.weight or 0 for r in routes]
        if not any(weights):
            weights = [100 // max(1, len(routes))] * len(routes)
        destinations = []
        for r, weight in zip(routes, weights, strict=True):
            host = resolve_host(r.destination.host, ns, ctx.domain)
            port = (r.destination.port.number if r.destination.port else None) or (
                ctx.only_port(host) or ctx.port
            )
            subset = r.destination.subset
            destinations.append(
                WeightedDestination(cluster_name(port, subset, host), host, port, subset, weight)
            )
        return TcpRoute(
            f"{ns}/{vs.metadata.name}.tcp.{index}", f"{ns}/{vs.metadata.name}", tuple(destinations)
        )
    return None


def _server_admits(server_hosts: Sequence[str], vs_hosts: Sequence[str], vs_ns: str, gw_ns: str) -> bool:
    """Whether a Gateway server's hosts (``ns/host``) admit a VirtualService with ``vs_hosts``.

    For TCP only whether they overlap matters (Istio's ``pickMatchingGatewayHosts``):
    the connection carries no host to route by.
    """
    for server_host in server_hosts:
        ns_part, slash, host_part = server_host.lower().rpartition("/")
        if slash and ns_part not in ("*", vs_ns) and not (ns_part == "." and vs_ns == gw_ns):
            continue
        if any(hosts_intersect(h, host_part) for h in vs_hosts):
            return True
    return False


def _tcp_routes(
    snap: Snapshot, services: Sequence[Service], vss: Sequence[tuple[list[str], VirtualService]]
) -> dict[int, dict[str, TcpRoute]]:
    """TCP routes by listener port and host: services' hosts for sidecars, ``*`` for gateways."""
    proxy = snap.proxy
    only = _only_port(services)
    out: dict[int, dict[str, TcpRoute]] = {}
    with_tcp = [(hosts, vs) for hosts, vs in vss if vs.spec.tcp]
    if proxy.role == "gateway":
        for gw in sorted(snap.gateways, key=_created):
            if not _labels_match(gw.spec.selector, proxy.labels):
                continue
            gw_ns = _ns(gw)
            gw_id = f"{gw_ns}/{gw.metadata.name}"
            for server in gw.spec.servers or []:
                if server.port.protocol.upper() not in TCP_PROTOCOLS:
                    continue
                port = server.port.number
                routes = out.setdefault(port, {})  # listened on even with no route (its connections close)
                ctx = Context(gw_id, port, proxy.namespace, proxy.labels, snap.domain, only.get)
                for hosts, vs in with_tcp:
                    if "*" in routes or not _server_admits(server.hosts or [], hosts, _ns(vs), gw_ns):
                        continue
                    route = _tcp_route(vs, ctx)
                    if route is not None:
                        routes["*"] = route
        return out
    mesh = [
        (h, v)
        for h, v in with_tcp
        if "mesh" in (v.spec.gateways or ["mesh"])
        or any("mesh" in (m.gateways or ()) for t in v.spec.tcp or () for m in t.match or ())
    ]
    for svc in services:
        chosen = _vs_for(svc.hostname, mesh)
        addresses = _ip_addresses(svc.aliases)
        for p in svc.ports:
            ctx = Context("mesh", p.port, proxy.namespace, proxy.labels, snap.domain, only.get)
            route = _tcp_route(chosen, ctx, addresses) if chosen else None
            if route is None:
                dest = WeightedDestination(
                    cluster_name(p.port, None, svc.hostname), svc.hostname, p.port, None, 100
                )
                route = TcpRoute("default", "", (dest,))
            for alias in svc.aliases:
                out.setdefault(p.port, {}).setdefault(alias, route)
    return out


def compile_snapshot(snap: Snapshot) -> RoutingTable:
    """The routing table of the proxy ``snap`` is for."""
    proxy = snap.proxy
    services = _registry(snap)
    vss = [
        ([resolve_host(h, _ns(vs), snap.domain) for h in vs.spec.hosts or []], vs)
        for vs in sorted(snap.virtual_services, key=_created)
        if visible(vs.spec.export_to, _ns(vs), proxy.namespace)
    ]
    rules = [
        (resolve_host(dr.spec.host, _ns(dr), snap.domain), dr)
        for dr in snap.destination_rules
        if visible(dr.spec.export_to, _ns(dr), proxy.namespace)
        and (
            dr.spec.workload_selector is None
            or (
                _ns(dr) == proxy.namespace
                and _labels_match(dr.spec.workload_selector.match_labels, proxy.labels)
            )
        )
    ]
    gateway_tls: dict[int, PortTls] = {}
    if proxy.role == "gateway":
        ports = _gateway_ports(snap, services, vss)
        selected = [g for g in sorted(snap.gateways, key=_created) if _labels_match(g.spec.selector, proxy.labels)]
        gateway_tls = compile_gateway_tls(selected, vss, namespace=proxy.namespace, credentials=snap.credentials,
                                          domain=snap.domain, only_port=_only_port(services).get)  # fmt: skip
    else:
        ports = _sidecar_ports(snap, services, vss)
    return RoutingTable(
        ports=ports,
        clusters=_clusters(services, rules, snap),
        role=proxy.role,
        namespace=proxy.namespace,
        domain=snap.domain,
        version=snap.version,
        tcp=_tcp_routes(snap, services, vss),
        gateway_tls=gateway_tls,
    )
