"""The sidecar's inbound decisions: which app port a request goes to, and the outbound side's redirect."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.mesh import table as t
from meshwork.core.mesh.lb import Endpoint as CoreEndpoint
from meshwork.proxy import plan
from meshwork.proxy.inbound import (
    PROXY_PORTS,
    AppPort,
    InboundDecider,
    opaque_ports,
    parse_pod_ports,
    services_from_snapshot,
)
from meshwork.proxy.mesh import ClusterState
from meshwork.proxy.upstream import _can_leave_from

IP = "127.1.0.9"
NOBODY = plan.Downstream("")


def _request(*headers: str) -> Request:
    parser = RequestParser()
    parser.receive_data(("GET / HTTP/1.1\r\nHost: web:8080\r\n" + "".join(h + "\r\n" for h in headers)
                         + "\r\n").encode())  # fmt: skip
    event = parser.next_event()
    assert isinstance(event, Request)
    return event


def _ports(*numbers: int) -> tuple[AppPort, ...]:
    return tuple(AppPort(n) for n in numbers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ()),
        ("", ()),
        ("[]", ()),
        ('[{"name":"http","containerPort":9080,"protocol":"TCP"}]', (AppPort(9080, "http"),)),
        ('[{"containerPort":9090},{"containerPort":53,"protocol":"UDP"},{"containerPort":80}]',
         (AppPort(80), AppPort(9090))),
        ('[{"containerPort":80,"name":"a"},{"containerPort":80,"name":"b"}]', (AppPort(80, "a"),)),
    ],
)  # fmt: skip
def test_pod_ports_are_read_from_istio_meta_pod_ports(text: str | None, expected: tuple[AppPort, ...]) -> None:
    assert parse_pod_ports(text) == expected


@pytest.mark.parametrize("text", ["{", '{"containerPort": 80}', '[{"containerPort": "80"}]', '[{"containerPort": 0}]',
                                  "[80]", '[{"containerPort": true}]'])  # fmt: skip
def test_malformed_pod_ports_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISTIO_META_POD_PORTS"):
        parse_pod_ports(text)


def test_the_header_picks_a_declared_port_and_is_removed_before_forwarding() -> None:
    d = InboundDecider(IP, _ports(8080, 9090), {9090: "admin.shop.svc.cluster.local"})
    got = d.decide(_request("X-Meshwork-Inbound-Port: 9090"), plan.Downstream("127.1.0.3"))
    assert isinstance(got, plan.Forward)
    assert got.cluster.pick(frozenset()) == plan.Endpoint(IP, 9090)
    assert got.cluster.name == "inbound|9090||admin.shop.svc.cluster.local"
    assert got.retries is None and got.timeout is None  # Istio's inbound side: no retries, no timeout
    assert got.request_headers == plan.HeaderEdits(remove=(b"x-meshwork-inbound-port",))


def test_with_capture_requests_go_to_the_apps_own_address() -> None:
    inner = "127.129.0.9"
    d = InboundDecider(IP, _ports(8080, 9090), {9090: "admin.shop.svc.cluster.local"}, app_ip=inner)
    got = d.decide(_request("X-Meshwork-Inbound-Port: 9090"), NOBODY)  # :15006, the port named by the header
    assert isinstance(got, plan.Forward) and got.cluster.pick(frozenset()) == plan.Endpoint(inner, 9090)
    passthrough = d.decide(_request("X-Meshwork-Inbound-Port: 7000"), NOBODY)
    assert isinstance(passthrough, plan.Forward) and passthrough.cluster.pick(frozenset()) == plan.Endpoint(inner, 7000)
    # A capture listener ($POD_IP:<port>) knows its port: a header naming another one changes nothing.
    for port in (8080, 9090, 7000):
        at = d.at_port(port).decide(_request("X-Meshwork-Inbound-Port: 8080"), NOBODY)
        assert isinstance(at, plan.Forward)
        assert at.cluster.pick(frozenset()) == plan.Endpoint(inner, port)
        assert at.request_headers == plan.HeaderEdits(remove=(b"x-meshwork-inbound-port",))
    assert d.at_port(9090).decide(_request(), NOBODY).cluster.name == "inbound|9090||admin.shop.svc.cluster.local"  # type: ignore[union-attr]


def test_without_the_header_the_only_port_is_used() -> None:
    got = InboundDecider(IP, _ports(8080)).decide(_request(), NOBODY)
    assert isinstance(got, plan.Forward)
    assert got.cluster.pick(frozenset()) == plan.Endpoint(IP, 8080)
    assert got.cluster.name == "inbound|8080||"


def test_a_service_target_port_counts_as_an_app_port_even_undeclared() -> None:
    got = InboundDecider(IP, (), {8080: "web.shop.svc.cluster.local"}).decide(_request(), NOBODY)
    assert isinstance(got, plan.Forward) and got.cluster.pick(frozenset()) == plan.Endpoint(IP, 8080)


@pytest.mark.parametrize(
    ("ports", "headers", "status", "flag"),
    [
        ((8080, 9090), (), 404, "NR"),  # which one: not known
        ((), (), 503, "UH"),  # nothing declared
        ((8080,), ("x-meshwork-inbound-port: 15006",), 404, "NR"),  # never back into the proxy
        ((8080,), ("x-meshwork-inbound-port: 15001",), 404, "NR"),
        ((8080,), ("x-meshwork-inbound-port: eighty",), 404, "NR"),
        ((8080,), ("x-meshwork-inbound-port: 70000",), 404, "NR"),
        ((8080,), ("x-meshwork-inbound-port: 0",), 404, "NR"),
    ],
)
def test_when_the_port_cannot_be_told_the_proxy_answers_like_envoy(
    ports: tuple[int, ...], headers: tuple[str, ...], status: int, flag: str
) -> None:
    got = InboundDecider(IP, _ports(*ports)).decide(_request(*headers), NOBODY)
    assert isinstance(got, plan.DirectResponse)
    assert (got.status, got.flag) == (status, flag)
    assert got.reason  # sent as x-meshwork-reason
    assert got.body == (b"no healthy upstream" if flag == "UH" else b"")


def test_an_undeclared_port_passes_through_as_in_istio() -> None:
    got = InboundDecider(IP, _ports(8080)).decide(_request("x-meshwork-inbound-port: 7000"), NOBODY)
    assert isinstance(got, plan.Forward)
    assert got.cluster.name == "InboundPassthroughClusterIpv4"
    assert got.cluster.pick(frozenset()) == plan.Endpoint(IP, 7000)


@given(st.integers(min_value=0, max_value=99999), st.lists(st.integers(1, 65535), max_size=4))
def test_the_inbound_side_never_forwards_into_the_proxy(port: int, declared: list[int]) -> None:
    got = InboundDecider(IP, _ports(*declared)).decide(_request(f"x-meshwork-inbound-port: {port}"), NOBODY)
    if isinstance(got, plan.Forward):
        ep = got.cluster.pick(frozenset())
        assert ep is not None and ep.host == IP and ep.port == port and port not in PROXY_PORTS
    else:
        assert got.status == 404 and (port in PROXY_PORTS or not 0 < port < 65536)


def test_services_sending_to_this_pod_name_the_inbound_clusters() -> None:
    raw = {"domain": "cluster.local", "services": [
        {"name": "web", "namespace": "shop", "endpoints": [{"ip": IP, "ports": {"http": 8080}},
                                                           {"ip": "127.1.0.10", "ports": {"http": 8080}}]},
        {"name": "metrics", "namespace": "shop", "endpoints": [{"ip": IP, "ports": {"m": 9090}}]},
        {"name": "alias", "namespace": "shop", "endpoints": [{"ip": IP, "ports": {"http": 8080}}]},
        {"name": "other", "namespace": "shop", "endpoints": [{"ip": "127.1.0.10", "ports": {"x": 7000}}]},
    ]}  # fmt: skip
    assert services_from_snapshot(raw, IP) == {8080: "alias.shop.svc.cluster.local",
                                               9090: "metrics.shop.svc.cluster.local"}  # fmt: skip


# -- the outbound side: meshed endpoints are reached through their sidecar ----------------------

MESHED = {"security.istio.io/tlsMode": "istio"}


def _state(*endpoints: CoreEndpoint) -> ClusterState:
    spec = t.Cluster(name="outbound|80||web.shop.svc.cluster.local", host="web.shop.svc.cluster.local", port=80,
                     subset=None, endpoints=endpoints)  # fmt: skip
    return ClusterState(spec, random.Random(1), lambda: 0.0)


def test_meshed_endpoints_are_reached_on_15006_with_the_app_port_in_a_header() -> None:
    state = _state(CoreEndpoint("127.1.0.5", 8080, MESHED), CoreEndpoint("127.1.0.6", 8080, MESHED))
    picked = [state.pick(frozenset()) for _ in range(4)]
    assert set(picked) == {plan.Endpoint("127.1.0.5", 15006), plan.Endpoint("127.1.0.6", 15006)}
    assert state.inbound_edits == plan.HeaderEdits(set=((b"x-meshwork-inbound-port", b"8080"),))
    # Balancer and outlier state stay keyed by the app address: excluding the sidecar address works,
    # and releasing the sidecar address ends the app address's request.
    first = plan.Endpoint("127.1.0.5", 15006)
    assert all(state.pick(frozenset({first})) == plan.Endpoint("127.1.0.6", 15006) for _ in range(4))
    assert state.lb.active("127.1.0.5:8080") + state.lb.active("127.1.0.6:8080") == 8
    for ep in picked:
        assert ep is not None
        state.release(ep, 200)
    assert (state.lb.active("127.1.0.5:8080"), state.lb.active("127.1.0.6:8080")) == (0, 4)


def test_plain_endpoints_are_reached_directly() -> None:
    state = _state(CoreEndpoint("127.1.0.5", 8080, {"app": "web"}))
    assert state.pick(frozenset()) == plan.Endpoint("127.1.0.5", 8080)
    assert state.inbound_edits is None


def test_a_mixed_cluster_sends_only_meshed_endpoints_of_the_header_port_through_sidecars() -> None:
    state = _state(CoreEndpoint("127.1.0.5", 8080, MESHED), CoreEndpoint("127.1.0.6", 8080, {}),
                   CoreEndpoint("127.1.0.7", 8081, MESHED), CoreEndpoint("127.1.0.8", 8080, MESHED))  # fmt: skip
    assert state.endpoints == {
        "127.1.0.5:8080": plan.Endpoint("127.1.0.5", 15006),
        "127.1.0.6:8080": plan.Endpoint("127.1.0.6", 8080),
        "127.1.0.7:8081": plan.Endpoint("127.1.0.7", 8081),
        "127.1.0.8:8080": plan.Endpoint("127.1.0.8", 15006),
    }
    assert state.inbound_edits == plan.HeaderEdits(set=((b"x-meshwork-inbound-port", b"8080"),))


@pytest.mark.parametrize(
    ("source", "host", "expected"),
    [
        ("127.1.0.5", "127.1.0.6", True),
        ("127.1.0.5", "127.0.0.1", True),
        ("127.1.0.5", "10.0.0.1", False),  # a loopback source cannot reach another network
        ("127.1.0.5", "example.com", False),
        ("127.1.0.5", "::1", False),
        ("10.0.0.5", "192.168.1.1", True),
        ("not-an-ip", "127.0.0.1", False),
    ],
)
def test_a_source_address_is_used_only_where_it_can_reach(source: str, host: str, expected: bool) -> None:
    assert _can_leave_from(source, host) is expected


def test_opaque_ports_follow_istio_protocol_selection() -> None:
    raw = {"services": [
        {"ports": [{"name": "tcp-db", "port": 5432, "targetPort": "db"}, {"name": "http", "port": 80}],
         "endpoints": [{"ip": IP, "ports": {"tcp-db": 5433, "http": 8080}}, {"ip": "127.1.0.10", "ports": {"tcp-db": 7}}]},
        {"ports": [{"name": "web", "port": 81, "appProtocol": "mysql"}], "endpoints": [{"ip": IP, "ports": {"web": 3306}}]},
    ]}  # fmt: skip
    assert opaque_ports(raw, IP, (AppPort(6379, "redis"), AppPort(8080, "http"), AppPort(9000))) == {5433, 3306, 6379}
    assert opaque_ports({}, IP) == frozenset()
