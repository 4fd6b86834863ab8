"""A gateway's plain TCP listeners: which ports they are on, and where each connection goes.

What lives here: two decisions over a compiled ``RoutingTable``:

* ``tcp_listener_ports``: the ports of the gateway's TCP servers (protocol
  TCP, MONGO, MYSQL or REDIS; ``compile`` puts each in ``table.tcp``, with or
  without a route) that no HTTP or TLS server opens as well. Istio keeps one
  protocol per gateway port; here the HTTP or TLS listener keeps the port.
* ``route_connection``: where one new connection goes: the port's ``tcp[]``
  route, one of its destinations chosen by weight *per connection* (Envoy's
  tcp_proxy ``weighted_clusters``: a ticket in ``[0, total weight)``), and
  the destination's cluster. No route (Envoy: no filter chain matches) or no
  such cluster: the connection is closed, and the decision says why.

What must not live here: sockets, cluster state, splicing (``proxy.gatewaytcp``).
Randomness comes in as ``draw``, a number in ``[0, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshwork.core.mesh.route import pick_weighted
from meshwork.core.mesh.table import Cluster, RoutingTable, TcpRoute, WeightedDestination

__all__ = ["GATEWAY_TCP_HOST", "TcpDecision", "decide_route", "route_connection", "tcp_listener_ports"]

GATEWAY_TCP_HOST = "*"  # a gateway's TCP routes are not by host: a plain TCP connection names none


@dataclass(frozen=True, slots=True)
class TcpDecision:
    """Where one TCP connection goes; ``cluster`` None: close it (``reason`` says why)."""

    reason: str
    route: TcpRoute | None = None
    destination: WeightedDestination | None = None
    cluster: Cluster | None = None


def tcp_listener_ports(table: RoutingTable) -> tuple[int, ...]:
    """The ports a gateway proxy listens on as plain TCP, in order (none for a sidecar)."""
    if table.role != "gateway":
        return ()
    return tuple(sorted(p for p in table.tcp if p not in table.ports and p not in table.gateway_tls))


def route_connection(table: RoutingTable, port: int, draw: float) -> TcpDecision:
    """The route, destination and cluster of a new connection to the gateway's ``port``."""
    route = table.tcp.get(port, {}).get(GATEWAY_TCP_HOST)
    if route is None:
        return TcpDecision(f"no TCP route for port {port}")
    return decide_route(table, route, draw)


def decide_route(table: RoutingTable, route: TcpRoute, draw: float) -> TcpDecision:
    """The destination of ``route`` that ``draw`` falls on (by weight) and its cluster."""
    live = [d for d in route.destinations if d.weight > 0] or list(route.destinations)
    if not live:
        return TcpDecision(f"{route.name} has no destination", route)
    dest = pick_weighted(live, draw) if len(live) > 1 else live[0]
    cluster = table.clusters.get(dest.cluster)
    if cluster is None:
        return TcpDecision(f"{route.name}: no cluster {dest.cluster}", route, dest)
    return TcpDecision(f"{route.name} -> {dest.cluster}", route, dest, cluster)
