"""ClusterIP and NodePort choice: pure functions over what is taken."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.control.api.allocate import (
    NODE_PORT_RANGE,
    SERVICE_CIDR,
    assign_service,
    pick_ip,
    pick_port,
    taken,
)
from meshwork.errors import ValidationError


@given(st.sets(st.integers(1, 300)))
def test_pick_ip_never_returns_a_taken_address(offsets) -> None:
    used = {str(SERVICE_CIDR.network_address + o) for o in offsets}
    ip = pick_ip(used)
    assert ip is not None and ip not in used and ipaddress.ip_address(ip) in SERVICE_CIDR


def test_pick_ip_returns_none_when_full() -> None:
    net = ipaddress.IPv4Network("127.200.0.0/30")
    assert pick_ip({"127.200.0.1", "127.200.0.2"}, net) is None


@given(st.sets(st.sampled_from(list(NODE_PORT_RANGE)[:50])))
def test_pick_port_never_returns_a_taken_port(used) -> None:
    port = pick_port(used)
    assert port is not None and port not in used and port in NODE_PORT_RANGE


def test_taken_reads_cluster_ips_and_node_ports() -> None:
    svcs = [
        {"spec": {"clusterIP": "127.96.0.1", "clusterIPs": ["127.96.0.1"], "ports": [{"port": 80, "nodePort": 30001}]}},
        {"spec": {"clusterIP": "None", "clusterIPs": ["None"]}},
    ]
    assert taken(svcs) == ({"127.96.0.1"}, {30001})


def test_external_name_services_get_nothing() -> None:
    svc = {"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}
    assign_service(svc, set(), set())
    assert "clusterIP" not in svc["spec"]


@pytest.mark.parametrize(("ip", "message"), [("10.0.0.1", "valid range"), ("bogus", "not a valid IP"), ("127.96.0.1", "already allocated")])
def test_requested_cluster_ip_is_checked(ip: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        assign_service({"metadata": {"name": "x"}, "spec": {"clusterIP": ip}}, {"127.96.0.1"}, set())


def test_requested_node_port_is_checked() -> None:
    svc = {"metadata": {"name": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30005}]}}
    with pytest.raises(ValidationError, match="already allocated"):
        assign_service(svc, set(), {30005})
