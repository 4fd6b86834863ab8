"""``meshwork why FROM_POD tcp://HOST:PORT``'s explanation: the ClusterIP proxy's decision, in words."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from meshcases import istio

from meshwork.core.mesh.mesh_tcp import (
    clusterip_snapshot,
    compile_clusterip,
    route_clusterip,
    service_host,
)
from meshwork.core.mesh.why_tcp import TcpExplanation, explain_tcp, explain_tcp_authorization
from meshwork.core.security.authz import compile_policies
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule

IP = "127.96.0.9"
HOST = service_host("tcp-echo", "default", "cluster.local")
PODS = {("default", "v1-a"): {"app": "tcp-echo", "version": "v1"},
        ("default", "v2-a"): {"app": "tcp-echo", "version": "v2"},
        ("default", "v2-sick"): {"app": "tcp-echo", "version": "v2"}}  # fmt: skip
ADDRS = {"v1-a": "127.1.0.2", "v2-a": "127.1.0.4"}
V1 = f"outbound|9000|v1|{HOST}"
V2 = f"outbound|9000|v2|{HOST}"


def svc() -> Service:
    return Service.model_validate({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {"clusterIP": IP, "selector": {"app": "tcp-echo"},
                 "ports": [{"name": "tcp", "port": 9000}, {"name": "tcp-other", "port": 9001}]}})  # fmt: skip


def eps() -> dict[str, Endpoints]:
    def ref(pod: str) -> dict[str, Any]:
        return {"kind": "Pod", "name": pod, "namespace": "default"}

    return {"default/tcp-echo": Endpoints.model_validate({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": ip, "targetRef": ref(pod)} for pod, ip in ADDRS.items()],
                     "notReadyAddresses": [{"ip": "127.1.0.9", "targetRef": ref("v2-sick")}],
                     "ports": [{"name": "tcp", "port": 9000}, {"name": "tcp-other", "port": 9001}]}]})}  # fmt: skip


def subsets() -> DestinationRule:
    dr = istio("DestinationRule", "tcp-echo", {"host": "tcp-echo", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})  # fmt: skip
    assert isinstance(dr, DestinationRule)
    return dr


def tcp_vs(*routes: dict[str, Any], name: str = "tcp-echo", **spec: Any) -> VirtualService:
    vs = istio("VirtualService", name, {"hosts": ["tcp-echo"], "tcp": list(routes), **spec})
    assert isinstance(vs, VirtualService)
    return vs


def to(subset: str, weight: int | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": subset}}
    if weight is not None:
        dest["weight"] = weight
    return dest


def why(*vss: VirtualService, host: str = "tcp-echo", port: int = 9000, draw: float = 0.0,
        rules: tuple[DestinationRule, ...] | None = None) -> TcpExplanation:  # fmt: skip
    return explain_tcp([svc()], eps(), PODS, vss, (subsets(),) if rules is None else rules,
                       host=host, port=port, namespace="default", draw=draw)  # fmt: skip


SPLIT = tcp_vs({"match": [{"port": 9000}], "route": [to("v1", 80), to("v2", 20)]})


def test_an_80_20_split_names_both_shares_and_the_destination_the_draw_picks() -> None:
    low, high = why(SPLIT, draw=0.1), why(SPLIT, draw=0.9)
    assert low.verdict == high.verdict == "routed"
    assert "route default/tcp-echo.tcp.0 of VirtualService default/tcp-echo" in low.lines
    assert f"weights: {V1} 80 (80%), {V2} 20 (20%)" in low.lines
    assert f"picked for draw 0.1: {V1}" in low.lines and f"picked for draw 0.9: {V2}" in high.lines
    assert [e.name for e in low.endpoints] == ["v1-a"] and [e.name for e in high.endpoints] == ["v2-a"]
    # v2's pod that is not ready is named, and not used; v1's list has none.
    assert "  not ready, not used (1): 127.1.0.9:9000 (v2-sick)" in high.lines
    assert not any("not ready" in line for line in low.lines)
    assert any("leaves the pod directly to ClusterIP 127.96.0.9:9000" in line for line in low.lines)


def test_no_route_is_round_robin_over_the_services_ready_endpoints() -> None:
    e = why()
    assert e.verdict == "round-robin" and e.decision is None
    assert "no route: round robin over the Service's ready endpoints" in e.lines
    assert {ep.name for ep in e.endpoints} == {"v1-a", "v2-a"}
    assert any("not ready, not used (1): 127.1.0.9:9000 (v2-sick)" in line for line in e.lines)


def test_earlier_routes_are_skipped_with_the_condition_that_fails_at_the_cluster_ip() -> None:
    vs = tcp_vs(
        {"match": [{"port": 9001}], "route": [to("v2")]},
        {"match": [{"sourceLabels": {"app": "sleep"}}], "route": [to("v2")]},
        {"match": [{"sourceNamespace": "foo"}], "route": [to("v2")]},
        {"match": [{"destinationSubnets": ["10.0.0.0/8"]}], "route": [to("v2")]},
        {"match": [{"destinationSubnets": ["127.96.0.0/16"]}], "route": [to("v1")]},
    )
    e = why(vs)
    skipped = [line for line in e.lines if line.startswith("  skipped route")]
    assert len(skipped) == 4
    assert "port 9001 (the connection is for 9000)" in skipped[0]
    assert "sourceLabels app=sleep" in skipped[1] and "never holds there" in skipped[1]
    assert "sourceNamespace foo" in skipped[2]
    assert "destinationSubnets ['10.0.0.0/8'] do not hold ClusterIP 127.96.0.9" in skipped[3]
    assert "route default/tcp-echo.tcp.4 of VirtualService default/tcp-echo" in e.lines
    assert [ep.name for ep in e.endpoints] == ["v1-a"]


def test_virtual_services_that_cannot_apply_at_the_cluster_ip_say_why() -> None:
    private = tcp_vs({"route": [to("v2")]}, name="private", exportTo=["."])
    gateway = tcp_vs({"route": [to("v2")]}, name="edge", gateways=["my-gateway"])
    e = why(private, gateway)
    assert e.verdict == "round-robin"
    assert any("VirtualService default/private: exportTo ['.']" in line for line in e.lines)
    assert any("VirtualService default/edge: bound to gateways ['my-gateway'], not mesh" in line for line in e.lines)
    only_sources = tcp_vs({"match": [{"sourceLabels": {"app": "sleep"}}], "route": [to("v2")]})
    e = why(only_sources)
    assert e.verdict == "round-robin" and any("sourceLabels app=sleep" in line for line in e.lines)


def test_the_host_may_be_the_cluster_ip_or_the_fqdn_and_an_unknown_one_is_refused() -> None:
    by_name = why(SPLIT, draw=0.9)
    for host in (IP, HOST, "tcp-echo.default", "tcp-echo.default.svc"):
        assert why(SPLIT, host=host, draw=0.9).endpoints == by_name.endpoints
    assert why(host="nothing").verdict == "refused (no Service)"
    assert why(port=9999).verdict == "refused (no listener)"


def test_a_subset_no_destination_rule_defines_resets_the_connection() -> None:
    e = why(SPLIT, draw=0.1, rules=())
    assert e.verdict == "reset (no cluster)" and not e.endpoints
    assert any("the connection is closed" in line for line in e.lines)


MATCHES = st.fixed_dictionaries({}, optional={
    "port": st.sampled_from([9000, 9001]),
    "sourceLabels": st.just({"app": "sleep"}),
    "sourceNamespace": st.just("foo"),
    "destinationSubnets": st.sampled_from([["127.96.0.0/16"], ["10.0.0.0/8"]]),
    "gateways": st.sampled_from([["mesh"], ["my-gateway"]]),
})  # fmt: skip
ROUTES = st.fixed_dictionaries({
    "match": st.lists(MATCHES, max_size=2),
    "route": st.lists(st.builds(to, st.sampled_from(["v1", "v2"]), st.integers(1, 100)), min_size=1, max_size=3),
})  # fmt: skip


@given(st.lists(ROUTES, min_size=1, max_size=4), st.floats(min_value=0, max_value=0.999), st.sampled_from([9000, 9001]))
def test_the_route_and_destination_named_are_the_ones_the_cluster_ip_proxy_picks(
    routes: list[dict[str, Any]], draw: float, port: int
) -> None:
    for r in routes:  # Istio wants the weights of a route with several destinations to add up to 100
        if len(r["route"]) > 1:
            weights = [d["weight"] for d in r["route"]]
            weights[-1] = max(0, 100 - sum(weights[:-1]))
            if weights[-1] == 0:
                weights = [100 // len(weights)] * (len(weights) - 1) + [100 - 100 // len(weights) * (len(weights) - 1)]
            for d, w in zip(r["route"], weights, strict=True):
                d["weight"] = w
        else:
            r["route"][0].pop("weight", None)
    vs = tcp_vs(*routes)
    told = why(vs, port=port, draw=draw)
    table = compile_clusterip(clusterip_snapshot([svc()], eps(), PODS, [vs], [subsets()]))
    done = route_clusterip(table, HOST, port, draw)
    if done is None:
        assert told.decision is None and "no route: round robin over the Service's ready endpoints" in told.lines
        assert len([line for line in told.lines if line.startswith("  skipped route")]) == len(routes)
        return
    assert told.decision == done and done.route is not None and done.destination is not None
    assert f"route {done.route.name} of VirtualService default/tcp-echo" in told.lines
    assert f"picked for draw {draw:g}: {done.destination.cluster}" in told.lines
    index = int(done.route.name.rpartition(".")[2])
    skipped = [line for line in told.lines if line.startswith("  skipped route")]
    assert [line.split(":")[0] for line in skipped] == [f"  skipped route default/tcp-echo.tcp.{i}" for i in range(index)]
    assert done.cluster is not None and told.endpoints == done.cluster.endpoints


def policy(action: str, operation: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "tcp-policy", "namespace": "default"},
            "spec": {"action": action, "rules": [{"to": [{"operation": operation}]}]}}  # fmt: skip


AT = {"source_ip": "127.0.0.1", "destination_ip": "127.1.0.2"}


def test_tcp_authorization_follows_check_connection_and_names_http_only_fields() -> None:
    cases = {
        "deny-get": (policy("DENY", {"methods": ["GET"], "ports": ["9000"]}), 9000, False),
        "deny-get-other-port": (policy("DENY", {"methods": ["GET"], "ports": ["9000"]}), 9001, True),
        "allow-get": (policy("ALLOW", {"methods": ["GET"]}), 9000, False),
        "allow-ports": (policy("ALLOW", {"ports": ["9000"]}), 9000, True),
    }
    for name, (manifest, port, expected) in cases.items():
        authorizer = compile_policies([manifest])
        truth = authorizer.check_connection(destination_port=port, **AT).allowed
        allowed, lines = explain_tcp_authorization("v1-a.default", authorizer, destination_port=port, **AT)
        assert allowed == truth == expected, (name, lines)
        http = any("HTTP-only fields cannot match a connection" in line for line in lines)
        assert http == ("methods" in str(manifest)), (name, lines)
    _, lines = explain_tcp_authorization("v1-a.default", compile_policies([cases["allow-get"][0]]),
                                         destination_port=9000, **AT)  # fmt: skip
    assert any("not available on TCP" in line for line in lines) and "no ALLOW policy matched" in lines[0]
    _, lines = explain_tcp_authorization("v1-a.default", compile_policies([cases["deny-get"][0]]),
                                         destination_port=9000, **AT)  # fmt: skip
    assert "denied by DENY policy default/tcp-policy rule 0" in lines[0]
    allowed, lines = explain_tcp_authorization("v1-a.default", None, destination_port=9000, **AT)
    assert allowed and "no AuthorizationPolicy applies" in lines[0]
