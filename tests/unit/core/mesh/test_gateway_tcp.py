"""A gateway's TCP listeners: which ports are TCP, and the per-connection weighted choice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from meshcases import istio, service, table

from meshwork.core.mesh.gateway_tcp import route_connection, tcp_listener_ports
from meshwork.core.mesh.snapshot import PortInfo, ProxyInfo
from meshwork.core.mesh.table import Cluster, RoutingTable, TcpRoute, WeightedDestination
from meshwork.model.base import Resource

GW = ProxyInfo("ingress-1", "istio-system", {"istio": "ingressgateway"}, "gateway")
TCP_ECHO = service("tcp-echo", port=9000, versions=("v1", "v2"),
                   ports=(PortInfo("tcp", 9000, 9000), PortInfo("tcp-other", 9001, 9001)))  # fmt: skip
SUBSETS = istio("DestinationRule", "tcp-echo", {"host": "tcp-echo", "subsets": [
    {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})  # fmt: skip


def gateway(*servers: tuple[int, str, list[str]], name: str = "tcp-echo-gateway", created: str = "") -> Resource:
    return istio("Gateway", name, {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": n, "name": f"p{n}", "protocol": proto}, "hosts": hosts}
        for n, proto, hosts in servers]}, created=created)  # fmt: skip


def tcp_vs(weights: dict[str, int], *, hosts: Sequence[str] = ("*",), port: int | None = 31400,
           name: str = "tcp-echo", created: str = "") -> Resource:  # fmt: skip
    match: list[dict[str, Any]] = [{"port": port}] if port is not None else []
    route = [{"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": s}, "weight": w}
             for s, w in weights.items()]  # fmt: skip
    return istio("VirtualService", name, {"hosts": list(hosts), "gateways": ["tcp-echo-gateway"],
                                          "tcp": [{"match": match, "route": route}]}, created=created)  # fmt: skip


def subset_at(t: RoutingTable, port: int, draw: float) -> str | None:
    d = route_connection(t, port, draw)
    return d.cluster.subset if d.cluster is not None else None


def test_the_task_split_80_20_falls_on_v2_for_the_top_fifth_of_draws() -> None:
    t = table([gateway((31400, "TCP", ["*"])), SUBSETS, tcp_vs({"v1": 80, "v2": 20})], [TCP_ECHO], GW)
    assert tcp_listener_ports(t) == (31400,)
    assert [subset_at(t, 31400, d) for d in (0.0, 0.5, 0.7999, 0.8, 0.9999)] == ["v1", "v1", "v1", "v2", "v2"]
    d = route_connection(t, 31400, 0.9)
    assert d.cluster is not None and d.cluster.name == "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
    assert d.reason == "default/tcp-echo.tcp.0 -> outbound|9000|v2|tcp-echo.default.svc.cluster.local"


def test_a_tcp_port_without_a_route_is_listened_on_and_its_connections_closed() -> None:
    t = table([gateway((31400, "TCP", ["*"])), SUBSETS], [TCP_ECHO], GW)
    assert tcp_listener_ports(t) == (31400,)
    d = route_connection(t, 31400, 0.3)
    assert d.cluster is None and d.reason == "no TCP route for port 31400"
    # A route for another port of the Gateway does not apply here.
    t = table([gateway((31400, "TCP", ["*"]), (31401, "MONGO", ["*"])), SUBSETS, tcp_vs({"v1": 100})],
              [TCP_ECHO], GW)  # fmt: skip
    assert tcp_listener_ports(t) == (31400, 31401)
    assert subset_at(t, 31400, 0.5) == "v1" and subset_at(t, 31401, 0.5) is None


def test_a_route_to_a_subset_no_rule_defines_closes_the_connection() -> None:
    t = table([gateway((31400, "TCP", ["*"])), tcp_vs({"v1": 100})], [TCP_ECHO], GW)
    d = route_connection(t, 31400, 0.5)
    assert d.cluster is None and d.destination is not None and "no cluster outbound|9000|v1|" in d.reason


def test_the_virtual_service_hosts_must_overlap_the_servers() -> None:
    gw = gateway((31400, "TCP", ["echo.example.com"]))
    assert subset_at(table([gw, SUBSETS, tcp_vs({"v1": 100}, hosts=["other.example.com"])], [TCP_ECHO], GW),
                     31400, 0.5) is None  # fmt: skip
    for hosts in (["echo.example.com"], ["*.example.com"], ["*"]):
        assert subset_at(table([gw, SUBSETS, tcp_vs({"v2": 100}, hosts=hosts)], [TCP_ECHO], GW), 31400, 0.5) == "v2"
    # A namespace prefix on the server host admits only VirtualServices of that namespace.
    foreign = gateway((31400, "TCP", ["prod/*"]))
    assert subset_at(table([foreign, SUBSETS, tcp_vs({"v1": 100})], [TCP_ECHO], GW), 31400, 0.5) is None


def test_the_oldest_matching_virtual_service_wins() -> None:
    old = tcp_vs({"v1": 100}, name="a-old", created="2024-01-01T00:00:00Z")
    new = tcp_vs({"v2": 100}, name="b-new", created="2024-02-01T00:00:00Z")
    t = table([gateway((31400, "TCP", ["*"])), SUBSETS, new, old], [TCP_ECHO], GW)
    assert subset_at(t, 31400, 0.99) == "v1"


def test_http_and_tls_ports_are_not_tcp_listeners_and_sidecars_have_none() -> None:
    gw = gateway((80, "HTTP", ["*"]), (31400, "TCP", ["*"]))
    shared = gateway((80, "TCP", ["*"]), name="shared", created="2030-01-01T00:00:00Z")
    t = table([gw, shared, SUBSETS, tcp_vs({"v1": 100}, port=None)], [TCP_ECHO], GW)
    assert tcp_listener_ports(t) == (31400,)  # 80 stays the HTTP listener's
    sidecar = table([gw, SUBSETS, tcp_vs({"v1": 100})], [TCP_ECHO])
    assert sidecar.tcp and tcp_listener_ports(sidecar) == ()
    other = ProxyInfo("egress-1", "istio-system", {"istio": "egressgateway"}, "gateway")
    assert tcp_listener_ports(table([gw, SUBSETS, tcp_vs({"v1": 100})], [TCP_ECHO], other)) == ()


@given(st.lists(st.integers(0, 100), min_size=1, max_size=6).filter(any), st.data())
def test_each_destination_owns_a_share_of_draws_equal_to_its_weight(weights: list[int], data: st.DataObject) -> None:
    """Envoy's weighted_clusters: ticket t in [0, total) goes to the destination whose run of
    ``weight`` tickets holds t, so a uniform draw picks each with probability weight/total."""
    dests = tuple(WeightedDestination(f"c{i}", "h", 9000, f"s{i}", w) for i, w in enumerate(weights))
    clusters = {d.cluster: Cluster(d.cluster, "h", 9000, d.subset, ()) for d in dests}
    t = RoutingTable(ports={}, clusters=clusters, role="gateway", tcp={7000: {"*": TcpRoute("r", "", dests)}})
    total = sum(weights)
    ticket = data.draw(st.integers(0, total - 1))
    owner = next(i for i in range(len(weights)) if ticket < sum(weights[: i + 1]))
    d = route_connection(t, 7000, (ticket + 0.5) / total)
    assert d.destination is not None and d.destination.cluster == f"c{owner}"
    assert d.destination.weight > 0  # a zero weight never gets a connection
