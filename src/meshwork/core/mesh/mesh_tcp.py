"""Mesh ``tcp[]`` routes at the node's ClusterIP proxy: where one connection to a ClusterIP goes.

What lives here: the decision the node's service proxy (``agent.serviceproxy``)
makes for a new connection to ``<clusterIP>:<port>``, when VirtualServices
bound to the mesh (``gateways`` omitted or naming ``mesh``) have ``tcp[]``
routes for the Service:

* ``clusterip_snapshot``: the Services (with their ready endpoints, each
  carrying its pod's labels, found through the address's ``targetRef``),
  VirtualServices and DestinationRules, as the snapshot of one proxy that
  stands for *every* client: ``CLUSTERIP_PROXY``.
* ``compile_clusterip``: that snapshot through the one mesh compiler
  (``compile.compile_snapshot``); the table's ``tcp`` holds, per service port
  and Service host, the first ``tcp[]`` route whose match holds, else the
  Service's default route.
* ``route_clusterip``: the route, one destination chosen by weight *per
  connection* (Envoy's tcp_proxy ``weighted_clusters``, as ``gateway_tcp``),
  and its cluster (``outbound|<port>|<subset>|<host>``, whose endpoints are
  those whose pod labels include the DestinationRule subset's labels).
  ``None``: no VirtualService route applies, the Service's own endpoints
  serve the connection (kube-proxy's round robin).

The source of a ClusterIP connection is not known (DESIGN.md: a client's
connection leaves from 127.0.0.1). So a match that depends on the source
never holds here: ``sourceLabels`` (the proxy has no labels),
``sourceNamespace`` and exports to named namespaces or to ``.`` (the proxy's
namespace is ``""``, which no namespace is called), and DestinationRules with
a ``workloadSelector``. Such routes apply only to traffic through a pod's
sidecar, which knows its workload. ``destinationSubnets`` is decided against
the Service's ClusterIP, ``port`` against the Service port, ``gateways``
against ``mesh``.

What must not live here: sockets, splicing, randomness (``draw`` is a
number in ``[0, 1)`` the caller drew).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.gateway_tcp import TcpDecision, decide_route
from meshwork.core.mesh.snapshot import EndpointInfo, PortInfo, ProxyInfo, ServiceInfo, Snapshot
from meshwork.core.mesh.table import RoutingTable
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule

__all__ = [
    "CLUSTERIP_PROXY",
    "clusterip_snapshot",
    "compile_clusterip",
    "has_mesh_tcp_routes",
    "route_clusterip",
    "service_host",
    "service_info",
]

# The proxy every ClusterIP client is taken for: no namespace (Kubernetes names are
# DNS labels, never empty), no labels, so nothing that depends on the source holds.
CLUSTERIP_PROXY = ProxyInfo(name="clusterip-proxy", namespace="", labels={}, role="sidecar")

PodKey = tuple[str, str]  # (namespace, name)


def service_host(name: str, namespace: str, domain: str) -> str:
    """The Service's host as the table keys it: ``name.namespace.svc.<domain>``."""
    return f"{name}.{namespace}.svc.{domain}"


def _binds_mesh(vs: VirtualService) -> bool:
    if "mesh" in (vs.spec.gateways or ["mesh"]):
        return True
    return any("mesh" in (m.gateways or ()) for t in vs.spec.tcp or () for m in t.match or ())


def has_mesh_tcp_routes(virtual_services: Iterable[VirtualService]) -> bool:
    """Whether any VirtualService has ``tcp[]`` routes for the mesh (else no table is needed)."""
    return any(vs.spec.tcp and _binds_mesh(vs) for vs in virtual_services)


def service_info(
    svc: Service, eps: Endpoints | None, pod_labels: Mapping[PodKey, Mapping[str, str]]
) -> ServiceInfo:
    """One Service with its ready endpoints (``addresses``, never ``notReadyAddresses``).

    An address in several subsets (pods resolving a named targetPort
    differently) is one endpoint with the ports of all of them; an address
    whose pod is unknown (hand-written Endpoints) has no labels.
    """
    meta = svc.metadata
    namespace = meta.namespace or "default"
    ports = tuple(
        PortInfo(
            p.name or "",
            p.port,
            p.target_port if isinstance(p.target_port, int | str) else None,
            p.protocol,
            p.app_protocol,
        )
        for p in svc.spec.ports or ()
    )
    found: dict[str, EndpointInfo] = {}
    for subset in (eps.subsets or ()) if eps is not None else ():
        subset_ports = {p.name or "": p.port for p in subset.ports or () if p.protocol == "TCP"}
        for addr in subset.addresses or ():
            known = found.get(addr.ip)
            if known is not None:
                found[addr.ip] = replace(known, ports={**known.ports, **subset_ports})
                continue
            ref = addr.target_ref
            pod = ref.name if ref is not None and (ref.kind or "Pod") == "Pod" and ref.name else ""
            labels = pod_labels.get(((ref.namespace if ref else None) or namespace, pod), {}) if pod else {}
            found[addr.ip] = EndpointInfo(addr.ip, dict(subset_ports), dict(labels), True, pod)
    cluster_ip = svc.spec.cluster_ip if svc.spec.cluster_ip not in (None, "", "None") else None
    return ServiceInfo(
        meta.name or "",
        namespace,
        ports,
        tuple(found[ip] for ip in sorted(found)),
        cluster_ip,
    )


def clusterip_snapshot(
    services: Iterable[Service],
    endpoints: Mapping[str, Endpoints],
    pod_labels: Mapping[PodKey, Mapping[str, str]],
    virtual_services: Iterable[VirtualService],
    destination_rules: Iterable[DestinationRule],
    version: str = "",
) -> Snapshot:
    """The snapshot of ``CLUSTERIP_PROXY``; ``endpoints`` by ``namespace/name`` of their Service."""
    infos = []
    for svc in services:
        ns = svc.metadata.namespace or "default"
        infos.append(service_info(svc, endpoints.get(f"{ns}/{svc.metadata.name}"), pod_labels))
    infos.sort(key=lambda s: (s.namespace, s.name))
    return Snapshot(
        proxy=CLUSTERIP_PROXY,
        services=tuple(infos),
        virtual_services=tuple(virtual_services),
        destination_rules=tuple(destination_rules),
        version=version,
    )


def compile_clusterip(snap: Snapshot) -> RoutingTable:
    """The routing table of the ClusterIP proxy (``snap.proxy`` is replaced by ``CLUSTERIP_PROXY``)."""
    return compile_snapshot(replace(snap, proxy=CLUSTERIP_PROXY))


def route_clusterip(table: RoutingTable, host: str, port: int, draw: float) -> TcpDecision | None:
    """Where a new connection to Service ``host`` (its FQDN) on service ``port`` goes.

    ``None``: no VirtualService's ``tcp[]`` route holds (or the table does
    not know the Service): the Service's own ready endpoints take it. Else
    the route and the destination ``draw`` falls on; ``cluster`` None (no
    such cluster: an unknown host or a subset no DestinationRule defines)
    means the connection is closed, as Envoy closes it, ``reason`` says why.
    """
    route = table.tcp.get(port, {}).get(host)
    if route is None or not route.virtual_service:
        return None
    return decide_route(table, route, draw)
