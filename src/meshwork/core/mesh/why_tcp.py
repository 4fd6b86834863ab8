"""``meshwork why FROM_POD tcp://HOST:PORT``: where one TCP connection goes, explained. Pure.

What lives here: ``explain_tcp``, which takes the objects the node's service
proxy routes with (Services, Endpoints, pod labels, VirtualServices,
DestinationRules), builds and compiles the ClusterIP proxy's table with the
very functions that proxy uses (``mesh_tcp.clusterip_snapshot``,
``compile_clusterip``, ``route_clusterip``) and tells in words what it
decides for one connection and one ``draw``: the Service and port, the
VirtualService whose ``tcp[]`` route holds (and, for the ones before it, the
conditions that do not hold at the ClusterIP), the weighted destinations
with their shares and the one the draw picks, and the endpoints of the
chosen cluster, ready or not. ``explain_tcp_authorization`` tells what the
destination sidecar's AuthorizationPolicies decide for the connection
(``Authorizer.check_connection``).

The decision is the table's: this module names why routes did not hold,
it never decides which one does. A meshed pod's TCP leaves the pod directly
(its sidecar proxies only HTTP), to the Service's ClusterIP, where the
node's service proxy serves it without knowing the client: so matches on
the source never hold there (``mesh_tcp``'s docstring).

What must not live here: API calls, sockets, randomness (``draw`` is given).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshwork.core.mesh.compile import _in_subnets, _vs_for
from meshwork.core.mesh.compile_http import resolve_gateway
from meshwork.core.mesh.gateway_tcp import TcpDecision
from meshwork.core.mesh.hosts import host_matches, resolve_host, visible
from meshwork.core.mesh.lb import Endpoint
from meshwork.core.mesh.mesh_tcp import (
    CLUSTERIP_PROXY,
    PodKey,
    clusterip_snapshot,
    compile_clusterip,
    route_clusterip,
    service_host,
)
from meshwork.core.mesh.table import Cluster, RoutingTable, cluster_name
from meshwork.core.security.authz import Authorizer, connection_attributes
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import L4MatchAttributes, VirtualService
from meshwork.model.istio_traffic import DestinationRule

__all__ = [
    "SERVICE_PROXY_SOURCE_IP",
    "TcpExplanation",
    "explain_tcp",
    "explain_tcp_authorization",
    "find_service",
    "http_only_fields",
]

# The node's service proxy connects to an endpoint without binding a source address, so the
# kernel picks lo's primary address: the destination sidecar sees every ClusterIP client as this.
SERVICE_PROXY_SOURCE_IP = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class TcpExplanation:
    """The explanation of one connection; ``endpoints``: where it may land, in the proxy's order."""

    verdict: str  # "routed", "round-robin", "reset (no endpoint)", "reset (no cluster)", "refused (...)"
    lines: list[str] = field(default_factory=list)
    decision: TcpDecision | None = None
    service: Service | None = None
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def connects(self) -> bool:
        """Whether the connection reaches an endpoint (so the destination's authorization matters)."""
        return bool(self.endpoints)


def find_service(services: Iterable[Service], host: str, namespace: str, domain: str) -> Service | None:
    """The Service ``host`` names from ``namespace``: a short name, ``name.ns[.svc[.domain]]``, or a ClusterIP."""
    host = host.lower().rstrip(".")
    found = list(services)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return next((s for s in found if s.spec.cluster_ip == host), None)
    parts = host.split(".")
    name, ns = parts[0], (parts[1] if len(parts) > 1 else namespace)
    if len(parts) > 2 and host != service_host(name, ns, domain) and host != f"{name}.{ns}.svc":
        return None
    return next((s for s in found if s.metadata.name == name and (s.metadata.namespace or "default") == ns), None)


def _binds_mesh(vs: VirtualService) -> bool:
    return "mesh" in (vs.spec.gateways or ["mesh"]) or any(
        "mesh" in (m.gateways or ()) for t in vs.spec.tcp or () for m in t.match or ()
    )


def _block_misses(vs: VirtualService, m: L4MatchAttributes, port: int, cluster_ip: str | None) -> list[str]:
    """The conditions of one ``match`` entry that do not hold for a connection at the ClusterIP."""
    ns = vs.metadata.namespace or "default"
    out = []
    gateways = m.gateways or vs.spec.gateways or ["mesh"]
    if "mesh" not in {resolve_gateway(g, ns) for g in gateways}:
        out.append(f"gateways {list(gateways)} do not include mesh")
    if m.port is not None and m.port != port:
        out.append(f"port {m.port} (the connection is for {port})")
    if m.source_labels:
        labels = ",".join(f"{k}={v}" for k, v in m.source_labels.items())
        out.append(f"sourceLabels {labels}: the ClusterIP proxy does not know the client, never holds there")
    if m.source_namespace:
        out.append(f"sourceNamespace {m.source_namespace}: the ClusterIP proxy does not know the client, "
                   "never holds there")  # fmt: skip
    if not _in_subnets(m.destination_subnets, [cluster_ip] if cluster_ip else []):
        out.append(f"destinationSubnets {list(m.destination_subnets or [])} do not hold ClusterIP {cluster_ip}")
    return out


def _route_misses(vs: VirtualService, upto: int | None, port: int, cluster_ip: str | None) -> list[str]:
    """Why each ``tcp[]`` route before ``upto`` (all when None) does not hold."""
    out = []
    ref = f"{vs.metadata.namespace or 'default'}/{vs.metadata.name}"
    for index, tcp in enumerate(vs.spec.tcp or []):
        if upto is not None and index >= upto:
            break
        blocks = tcp.match or []
        if not blocks:
            out.append(f"  skipped route {ref}.tcp.{index}: no match, and the VirtualService is not bound to mesh")
            continue
        reasons = [
            f"match {j}: " + ("; ".join(_block_misses(vs, m, port, cluster_ip)) or "does not hold")
            for j, m in enumerate(blocks)
        ]
        out.append(f"  skipped route {ref}.tcp.{index}: " + " / ".join(reasons))
    return out


def _vs_lines(
    virtual_services: Sequence[VirtualService], host: str, domain: str, chosen: VirtualService | None
) -> list[str]:
    """The VirtualServices with ``tcp[]`` routes for ``host`` that do not apply at the ClusterIP, and why."""
    out = []
    for vs in virtual_services:
        ns = vs.metadata.namespace or "default"
        if not vs.spec.tcp or vs is chosen:
            continue
        if not any(host_matches(resolve_host(h, ns, domain), host) for h in vs.spec.hosts or []):
            continue
        ref = f"VirtualService {ns}/{vs.metadata.name}"
        if not _binds_mesh(vs):
            out.append(f"  {ref}: bound to gateways {list(vs.spec.gateways or [])}, not mesh")
        elif not visible(vs.spec.export_to, ns, CLUSTERIP_PROXY.namespace):
            out.append(f"  {ref}: exportTo {list(vs.spec.export_to or [])} names namespaces; the ClusterIP "
                       "proxy is in none, so it never applies there")  # fmt: skip
        elif chosen is not None:
            out.append(f"  {ref}: not used, {chosen.metadata.namespace or 'default'}/{chosen.metadata.name} "
                       "is the more specific or older one for this host")  # fmt: skip
    return out


def _chosen_vs(virtual_services: Sequence[VirtualService], host: str, domain: str) -> VirtualService | None:
    """The VirtualService the compiler takes for ``host`` at the ClusterIP (``compile._vs_for``)."""
    from meshwork.core.mesh.compile import _created

    candidates = [
        ([resolve_host(h, vs.metadata.namespace or "default", domain) for h in vs.spec.hosts or []], vs)
        for vs in sorted(virtual_services, key=_created)
        if vs.spec.tcp and _binds_mesh(vs)
        and visible(vs.spec.export_to, vs.metadata.namespace or "default", CLUSTERIP_PROXY.namespace)
    ]
    return _vs_for(host, candidates)


def _not_ready(
    eps: Endpoints | None, port_name: str, subset_labels: Mapping[str, str] | None,
    pod_labels: Mapping[PodKey, Mapping[str, str]], namespace: str,
) -> list[str]:  # fmt: skip
    out = []
    for sub in (eps.subsets or ()) if eps is not None else ():
        number = next((p.port for p in sub.ports or () if (p.name or "") == port_name), None)
        for addr in sub.not_ready_addresses or ():
            ref = addr.target_ref
            pod = ref.name if ref is not None and ref.name else ""
            labels = pod_labels.get(((ref.namespace if ref else None) or namespace, pod), {}) if pod else {}
            if subset_labels and any(labels.get(k) != v for k, v in subset_labels.items()):
                continue
            out.append(f"{addr.ip}:{number}" + (f" ({pod})" if pod else ""))
    return out


def _subset_labels(rules: Sequence[DestinationRule], cluster: Cluster) -> Mapping[str, str] | None:
    if not cluster.subset or not cluster.destination_rule:
        return None
    for dr in rules:
        if f"{dr.metadata.namespace or 'default'}/{dr.metadata.name}" == cluster.destination_rule:
            for s in dr.spec.subsets or ():
                if s.name == cluster.subset:
                    return dict(s.labels or {})
    return None


def _endpoint_lines(cluster: Cluster, not_ready: Sequence[str], rules: bool) -> list[str]:
    out = [f"cluster {cluster.name}"]
    if cluster.destination_rule:
        out.append(f"  DestinationRule {cluster.destination_rule}" + (f", subset {cluster.subset}" if cluster.subset else ""))
        if rules:
            out.append("  its trafficPolicy (load balancer, pool, outlier detection, TLS) is not applied "
                       "by the node's service proxy")  # fmt: skip
    if cluster.endpoints:
        out.append(f"  ready endpoints ({len(cluster.endpoints)}), round robin: " + ", ".join(
            f"{e.key}{f' ({e.name})' if e.name else ''}" for e in cluster.endpoints))  # fmt: skip
    else:
        out.append("  ready endpoints: none -> the connection is reset")
    if not_ready:
        out.append(f"  not ready, not used ({len(not_ready)}): " + ", ".join(not_ready))
    return out


def explain_tcp(
    services: Iterable[Service],
    endpoints: Mapping[str, Endpoints],
    pod_labels: Mapping[PodKey, Mapping[str, str]],
    virtual_services: Iterable[VirtualService],
    destination_rules: Iterable[DestinationRule],
    *,
    host: str,
    port: int,
    namespace: str,
    draw: float = 0.0,
) -> TcpExplanation:
    """Explain a new connection from a pod of ``namespace`` to ``host:port`` (``draw`` in [0, 1))."""
    services = list(services)
    vss = list(virtual_services)
    rules = list(destination_rules)
    snap = clusterip_snapshot(services, endpoints, pod_labels, vss, rules)
    svc = find_service(services, host, namespace, snap.domain)
    lines = [f"tcp connection to {host}:{port}"]
    if svc is None:
        lines.append(f"no Service is called or has the ClusterIP {host!r} (from namespace {namespace})")
        return TcpExplanation("refused (no Service)", lines)
    ns, name = svc.metadata.namespace or "default", svc.metadata.name or ""
    cip = svc.spec.cluster_ip if svc.spec.cluster_ip not in (None, "", "None") else None
    sport = next((p for p in svc.spec.ports or () if p.port == port and p.protocol == "TCP"), None)
    if cip is None or sport is None:
        why = "is headless (no ClusterIP)" if cip is None else f"has no TCP port {port}"
        lines.append(f"Service {ns}/{name} {why}: nothing listens there, the connection is refused")
        return TcpExplanation("refused (no listener)", lines, service=svc)
    fqdn = service_host(name, ns, snap.domain)
    lines.append(f"leaves the pod directly to ClusterIP {cip}:{port} (a sidecar proxies only HTTP); "
                 f"the node's service proxy serves Service {ns}/{name} port {sport.name or port}")  # fmt: skip
    table: RoutingTable = compile_clusterip(snap)
    decision = route_clusterip(table, fqdn, port, draw)
    chosen = _chosen_vs(vss, fqdn, snap.domain)
    lines += _vs_lines(vss, fqdn, snap.domain, chosen)
    eps = endpoints.get(f"{ns}/{name}")
    if decision is None:
        if chosen is not None:
            lines.append(f"VirtualService {chosen.metadata.namespace or 'default'}/{chosen.metadata.name}:")
            lines += _route_misses(chosen, None, port, cip)
        lines.append("no route: round robin over the Service's ready endpoints")
        cluster = table.clusters.get(cluster_name(port, None, fqdn))
        if cluster is None:  # the compiler makes one per service port; say so if it did not
            lines.append("  ready endpoints: none -> the connection is reset")
            return TcpExplanation("reset (no endpoint)", lines, None, svc)
        lines += _endpoint_lines(cluster, _not_ready(eps, sport.name or "", None, pod_labels, ns), True)[1:]
        verdict = "round-robin" if cluster.endpoints else "reset (no endpoint)"
        return TcpExplanation(verdict, lines, None, svc, cluster.endpoints)
    route = decision.route
    assert route is not None  # route_clusterip returns a decision only for a VirtualService route
    index = int(route.name.rpartition(".")[2]) if route.name.rpartition(".")[2].isdigit() else None
    if chosen is not None:
        lines += _route_misses(chosen, index, port, cip)
    lines.append(f"route {route.name} of VirtualService {route.virtual_service}")
    total = sum(d.weight for d in route.destinations if d.weight > 0)
    if len(route.destinations) > 1:
        lines.append("weights: " + ", ".join(
            f"{d.cluster} {d.weight} ({100 * d.weight / total if total else 0:g}%)" for d in route.destinations))  # fmt: skip
    picked = decision.destination
    lines.append(f"picked for draw {draw:g}: {picked.cluster if picked else '-'}")
    if decision.cluster is None:
        lines.append(f"no such cluster ({decision.reason}): the connection is closed")
        return TcpExplanation("reset (no cluster)", lines, decision, svc)
    cluster = decision.cluster
    subset = _subset_labels(rules, cluster)
    not_ready = _not_ready(endpoints.get(_service_key(cluster.host)), _port_name(services, cluster), subset,
                           pod_labels, ns)  # fmt: skip
    lines += _endpoint_lines(cluster, not_ready, True)
    verdict = "routed" if cluster.endpoints else "reset (no endpoint)"
    return TcpExplanation(verdict, lines, decision, svc, cluster.endpoints)


def _service_key(fqdn: str) -> str:
    name, _, rest = fqdn.partition(".")
    return f"{rest.partition('.')[0]}/{name}"


def _port_name(services: Sequence[Service], cluster: Cluster) -> str:
    key = _service_key(cluster.host)
    for s in services:
        if f"{s.metadata.namespace or 'default'}/{s.metadata.name}" == key:
            return next((p.name or "" for p in s.spec.ports or () if p.port == cluster.port), "")
    return ""


def http_only_fields(authorizer: Authorizer) -> list[str]:
    """``ns/name rule i: <field>`` for every condition a TCP connection cannot show (HTTP-only)."""
    out = []
    for policy in authorizer.policies:
        for i, rule in enumerate(policy.rules):
            checks = [c for conj in (rule.sources or ()) + (rule.operations or ()) for c in conj]
            labels = [c.label for c in (*checks, *rule.when) if c.scope == "http"]
            if labels:
                out.append(f"{policy.action} {policy.key} rule {i}: {', '.join(labels)}")
    return out


def explain_tcp_authorization(
    where: str, authorizer: Authorizer | None, *, source_ip: str | None, destination_ip: str | None,
    destination_port: int,
) -> tuple[bool, list[str]]:  # fmt: skip
    """The destination sidecar's decision on the connection, as its TCP listener makes it."""
    head = f"authorization at {where} (TCP port {destination_port}, decided once, when the connection is accepted)"
    if authorizer is None:
        return True, [f"{head}: no AuthorizationPolicy applies: allowed"]
    verdict = authorizer.check_connection(source_ip=source_ip, destination_ip=destination_ip,
                                          destination_port=destination_port)  # fmt: skip
    attrs = connection_attributes(source_ip=source_ip, destination_ip=destination_ip,
                                  destination_port=destination_port)  # fmt: skip
    first, *rest = authorizer.explain(attrs)
    first = first.replace("DENY (403)", "DENY (connection closed)", 1)  # no HTTP answer on TCP
    lines = [f"{head}: {first}", *rest]
    http = http_only_fields(authorizer)
    if http:
        lines.append("  HTTP-only fields cannot match a connection: an ALLOW rule with one never matches, "
                     "a DENY rule ignores them (and so denies more):")  # fmt: skip
        lines += [f"    {h}" for h in http]
    if not verdict.allowed:
        lines.append("  a denied connection is closed before any byte reaches the app")
    return verdict.allowed, lines
