"""Mesh ``tcp[]`` routes at the ClusterIP proxy: matching, the weighted choice, subsets by pod labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from meshcases import istio

from meshwork.core.mesh.mesh_tcp import (
    clusterip_snapshot,
    compile_clusterip,
    has_mesh_tcp_routes,
    route_clusterip,
    service_host,
)
from meshwork.core.mesh.table import RoutingTable
from meshwork.model.base import Resource
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule

IP = "127.96.0.9"
HOST = service_host("tcp-echo", "default", "cluster.local")
PODS = {("default", "v1-a"): {"app": "tcp-echo", "version": "v1"},
        ("default", "v1-b"): {"app": "tcp-echo", "version": "v1"},
        ("default", "v2-a"): {"app": "tcp-echo", "version": "v2"}}  # fmt: skip
ADDRS = {"v1-a": "127.1.0.2", "v1-b": "127.1.0.3", "v2-a": "127.1.0.4"}
SUBSETS = istio("DestinationRule", "tcp-echo", {"host": "tcp-echo", "subsets": [
    {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})  # fmt: skip


def svc() -> Service:
    return Service.model_validate({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {"clusterIP": IP, "selector": {"app": "tcp-echo"},
                 "ports": [{"name": "tcp", "port": 9000}, {"name": "tcp-other", "port": 9001}]}})  # fmt: skip


def eps(not_ready: Sequence[str] = ("127.1.0.9",), stranger: bool = False) -> Endpoints:
    addresses: list[dict[str, Any]] = [
        {"ip": ip, "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}} for pod, ip in ADDRS.items()
    ]
    if stranger:  # an address whose pod is not known
        addresses.append({"ip": "127.1.0.8", "targetRef": {"kind": "Pod", "name": "gone"}})
    return Endpoints.model_validate({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "subsets": [{"addresses": addresses, "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                     "ports": [{"name": "tcp", "port": 9000}, {"name": "tcp-other", "port": 9001}]}]})  # fmt: skip


def tcp_vs(*routes: dict[str, Any], gateways: list[str] | None = None, **spec: Any) -> VirtualService:
    body: dict[str, Any] = {"hosts": ["tcp-echo"], "tcp": list(routes), **spec}
    if gateways is not None:
        body["gateways"] = gateways
    vs = istio("VirtualService", "tcp-echo", body)
    assert isinstance(vs, VirtualService)
    return vs


def to(weights: dict[str, int], match: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    route = [{"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": s}, "weight": w}
             for s, w in weights.items()]  # fmt: skip
    return {"route": route, **({"match": match} if match is not None else {})}


def table(*objs: Resource, endpoints: Endpoints | None = None) -> RoutingTable:
    vss = [o for o in objs if isinstance(o, VirtualService)]
    drs = [o for o in objs if isinstance(o, DestinationRule)]
    return compile_clusterip(clusterip_snapshot([svc()], {"default/tcp-echo": endpoints or eps()}, PODS, vss, drs))


def subset_at(t: RoutingTable, draw: float, port: int = 9000) -> str | None:
    """The subset a connection with ``draw`` goes to; "-" for the Service's default, None for closed."""
    d = route_clusterip(t, HOST, port, draw)
    if d is None:
        return "-"
    return d.cluster.subset if d.cluster is not None else None


def test_all_to_v1_then_80_20_by_the_draw() -> None:
    t = table(SUBSETS, tcp_vs(to({"v1": 100})))
    for draw in (0.0, 0.5, 0.9999):
        d = route_clusterip(t, HOST, 9000, draw)
        assert d is not None and d.cluster is not None
        assert d.cluster.name == f"outbound|9000|v1|{HOST}"
        assert sorted(e.address for e in d.cluster.endpoints) == ["127.1.0.2", "127.1.0.3"]
    t = table(SUBSETS, tcp_vs(to({"v1": 80, "v2": 20})))
    assert [subset_at(t, d) for d in (0.0, 0.7999, 0.8, 0.9999)] == ["v1", "v1", "v2", "v2"]
    d = route_clusterip(t, HOST, 9000, 0.9)
    assert d is not None and d.cluster is not None and [(e.address, e.port) for e in d.cluster.endpoints] == [
        ("127.1.0.4", 9000)]  # fmt: skip
    assert d.reason == f"default/tcp-echo.tcp.0 -> outbound|9000|v2|{HOST}"


def test_no_route_of_a_virtual_service_is_the_services_default() -> None:
    assert subset_at(table(SUBSETS), 0.5) == "-"
    assert not has_mesh_tcp_routes([])
    # Bound to a gateway only: not for the mesh.
    gw_only = tcp_vs(to({"v2": 100}), gateways=["tcp-echo-gateway"])
    assert not has_mesh_tcp_routes([gw_only]) and subset_at(table(SUBSETS, gw_only), 0.5) == "-"
    # ... unless a match names the mesh.
    both = tcp_vs(to({"v2": 100}, [{"gateways": ["mesh"]}]), gateways=["tcp-echo-gateway"])
    assert has_mesh_tcp_routes([both]) and subset_at(table(SUBSETS, both), 0.5) == "v2"
    # An http-only VirtualService has no say over TCP connections.
    http_only = istio("VirtualService", "tcp-echo", {"hosts": ["tcp-echo"], "http": [
        {"route": [{"destination": {"host": "tcp-echo", "subset": "v2"}}]}]})  # fmt: skip
    assert isinstance(http_only, VirtualService) and not has_mesh_tcp_routes([http_only])


def test_routes_that_depend_on_the_unknown_source_never_hold() -> None:
    by_labels = to({"v2": 100}, [{"sourceLabels": {"app": "sleep"}}])
    by_namespace = to({"v2": 100}, [{"sourceNamespace": "default"}])
    t = table(SUBSETS, tcp_vs(by_labels, by_namespace, to({"v1": 100})))
    assert subset_at(t, 0.5) == "v1"
    assert subset_at(table(SUBSETS, tcp_vs(by_labels)), 0.5) == "-"
    # Exported to its own namespace only: its clients are not known to be there.
    assert subset_at(table(SUBSETS, tcp_vs(to({"v2": 100}), exportTo=["."])), 0.5) == "-"
    assert subset_at(table(SUBSETS, tcp_vs(to({"v2": 100}), exportTo=["*"])), 0.5) == "v2"


def test_a_subset_no_rule_defines_closes_the_connection() -> None:
    d = route_clusterip(table(tcp_vs(to({"v2": 100}))), HOST, 9000, 0.5)
    assert d is not None and d.cluster is None and f"no cluster outbound|9000|v2|{HOST}" in d.reason


def test_subsets_take_ready_addresses_by_their_pods_labels() -> None:
    t = table(SUBSETS, tcp_vs(to({"v1": 100})), endpoints=eps(stranger=True))
    v1 = t.clusters[f"outbound|9000|v1|{HOST}"]
    assert sorted(e.name for e in v1.endpoints) == ["v1-a", "v1-b"]
    everyone = t.clusters[f"outbound|9000||{HOST}"]  # not-ready 127.1.0.9 is left out; the stranger is in
    assert sorted(e.address for e in everyone.endpoints) == ["127.1.0.2", "127.1.0.3", "127.1.0.4", "127.1.0.8"]
    other = t.clusters[f"outbound|9001|v1|{HOST}"]
    assert {e.port for e in other.endpoints} == {9001}


# -- properties --------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=5), st.floats(0, 1, exclude_max=True))
def test_the_draw_falls_on_the_destination_owning_that_share(weights: list[int], draw: float) -> None:
    names = [f"s{i}" for i in range(len(weights))]
    dr = istio("DestinationRule", "tcp-echo", {"host": "tcp-echo", "subsets": [
        {"name": n, "labels": {"version": "v1"}} for n in names]})  # fmt: skip
    t = table(dr, tcp_vs(to(dict(zip(names, weights, strict=True)))))
    ticket = min(int(draw * sum(weights)), sum(weights) - 1)
    owner = next(i for i in range(len(weights)) if ticket < sum(weights[: i + 1]))
    assert subset_at(t, draw) == names[owner]


MATCHES = st.fixed_dictionaries({}, optional={
    "port": st.sampled_from([9000, 9001]),
    "sourceLabels": st.just({"app": "sleep"}),
    "sourceNamespace": st.sampled_from(["default", "other"]),
    "destinationSubnets": st.sampled_from([[IP], ["127.96.0.0/16"], ["10.0.0.0/8"], [f"{IP}/32", "10.0.0.0/8"]]),
    "gateways": st.sampled_from([["mesh"], ["tcp-echo-gateway"], ["mesh", "tcp-echo-gateway"]]),
})  # fmt: skip


def _holds(m: dict[str, Any], port: int) -> bool:
    """The oracle: a match block at the ClusterIP proxy, written out by hand."""
    subnets = m.get("destinationSubnets", [IP])
    return (m.get("port", port) == port and "sourceLabels" not in m and "sourceNamespace" not in m
            and any(s in (IP, f"{IP}/32", "127.96.0.0/16") for s in subnets)
            and "mesh" in m.get("gateways", ["mesh"]))  # fmt: skip


@given(st.lists(st.lists(MATCHES, max_size=3), min_size=1, max_size=4), st.sampled_from([9000, 9001]))
def test_the_first_route_whose_match_holds_wins(routes: list[list[dict[str, Any]]], port: int) -> None:
    names = [f"r{i}" for i in range(len(routes))]
    dr = istio("DestinationRule", "tcp-echo", {"host": "tcp-echo", "subsets": [
        {"name": n, "labels": {"version": "v1"}} for n in names]})  # fmt: skip
    vs = tcp_vs(*(to({n: 100}, blocks) for n, blocks in zip(names, routes, strict=True)))
    expected = next((n for n, blocks in zip(names, routes, strict=True)
                     if not blocks or any(_holds(b, port) for b in blocks)), "-")  # fmt: skip
    assert subset_at(table(dr, vs), 0.5, port) == expected
