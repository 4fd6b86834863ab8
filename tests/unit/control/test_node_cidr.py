"""Node pod CIDRs: assigned at create from 127.1.0.0/16 .. 127.95.0.0/16, kept, never shared."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.control.api import strategy
from meshwork.control.api.allocate import (
    POD_CIDR_POOL,
    SERVICE_CIDR,
    assign_node_cidr,
    node_cidrs,
    pick_pod_cidr,
)
from meshwork.errors import ValidationError
from meshwork.model.kinds import REGISTRY

NODE = REGISTRY.for_group_kind("", "Node")
assert NODE is not None


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": dict(spec)}


def test_first_nodes_get_consecutive_slash16s() -> None:
    nodes: list[dict[str, Any]] = []
    for name in ("a", "b", "c"):
        new = node(name)
        assign_node_cidr(new, node_cidrs(nodes))
        nodes.append(new)
    assert [n["spec"]["podCIDR"] for n in nodes] == ["127.1.0.0/16", "127.2.0.0/16", "127.3.0.0/16"]
    assert all(n["spec"]["podCIDRs"] == [n["spec"]["podCIDR"]] for n in nodes)


def test_a_deleted_nodes_range_is_handed_out_again() -> None:
    held = [node("a", podCIDR="127.1.0.0/16"), node("c", podCIDR="127.3.0.0/16")]
    new = node("d")
    assign_node_cidr(new, node_cidrs(held))
    assert new["spec"]["podCIDR"] == "127.2.0.0/16"


def test_a_node_keeps_the_range_it_asks_for() -> None:
    new = node("a", podCIDRs=["127.50.0.0/16"])
    assign_node_cidr(new, node_cidrs([node("b", podCIDR="127.1.0.0/16")]))
    assert new["spec"] == {"podCIDR": "127.50.0.0/16", "podCIDRs": ["127.50.0.0/16"]}
    small = node("s", podCIDR="127.200.1.0/24")  # any loopback range outside the services' is fine
    assign_node_cidr(small, [])
    assert small["spec"]["podCIDRs"] == ["127.200.1.0/24"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"podCIDR": "127.1.128.0/17"}, "overlaps 127.1.0.0/16"),  # inside another node's range
        ({"podCIDR": "127.0.0.0/8"}, "overlaps"),  # around every range
        ({"podCIDR": "10.0.0.0/16"}, "must be inside 127.0.0.0/8"),
        ({"podCIDR": "127.96.0.0/16"}, f"overlaps the service range {SERVICE_CIDR}"),
        ({"podCIDR": "127.5.0.1/16"}, "must be a valid CIDR"),  # host bits set
        ({"podCIDR": "banana"}, "must be a valid CIDR"),
        ({"podCIDR": "127.5.0.0/16", "podCIDRs": ["127.6.0.0/16"]}, 'must match spec.podCIDR "127.5.0.0/16"'),
        ({"podCIDRs": ["127.5.0.0/16", "127.6.0.0/16"]}, "only one IPv4 pod CIDR"),
    ],
)
def test_bad_or_taken_ranges_are_refused_with_422(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        assign_node_cidr(node("x", **spec), node_cidrs([node("a", podCIDR="127.1.0.0/16")]))
    assert info.value.status == 422 and words in str(info.value)


def test_a_full_pool_is_refused() -> None:
    held = [ipaddress.IPv4Network(n) for n in POD_CIDR_POOL]
    assert pick_pod_cidr(held) is None
    with pytest.raises(ValidationError, match="no free pod CIDR"):
        assign_node_cidr(node("x"), held)


@settings(max_examples=150)
@given(st.lists(st.one_of(
    st.tuples(st.just("add"), st.none()),
    st.tuples(st.just("add"), st.integers(0, 255).map(lambda i: f"127.{i}.0.0/16")),
    st.tuples(st.just("add"), st.integers(0, 255).map(lambda i: f"127.40.{i}.0/24")),
    st.tuples(st.just("del"), st.integers(0, 30)),
), max_size=40))  # fmt: skip
def test_no_two_nodes_ever_hold_overlapping_ranges(ops: list[tuple[str, Any]]) -> None:
    nodes: list[dict[str, Any]] = []
    for i, (op, arg) in enumerate(ops):
        if op == "del":
            if nodes:
                nodes.pop(arg % len(nodes))
            continue
        new = node(f"n{i}", **({"podCIDR": arg} if arg else {}))
        try:
            assign_node_cidr(new, node_cidrs(nodes))
        except ValidationError:
            continue
        nodes.append(new)
        nets = [ipaddress.IPv4Network(n["spec"]["podCIDR"]) for n in nodes]
        assert all(not a.overlaps(b) for j, a in enumerate(nets) for b in nets[j + 1 :])
        assert all(net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) and not net.overlaps(SERVICE_CIDR) for net in nets)
        if not arg:
            assert nets[-1] in POD_CIDR_POOL


def test_an_update_keeps_the_range_and_may_not_change_it() -> None:
    old = node("a", podCIDR="127.1.0.0/16", podCIDRs=["127.1.0.0/16"])
    old["metadata"].update(uid="u", generation=1)
    kept = strategy.prepare_update(NODE, node("a", unschedulable=True), old)
    assert kept["spec"]["podCIDR"] == "127.1.0.0/16" and kept["spec"]["podCIDRs"] == ["127.1.0.0/16"]
    same = strategy.prepare_update(NODE, node("a", podCIDR="127.1.0.0/16"), old)
    assert same["spec"]["podCIDRs"] == ["127.1.0.0/16"]
    with pytest.raises(ValidationError, match="may not change podCIDR"):
        strategy.prepare_update(NODE, node("a", podCIDR="127.2.0.0/16"), old)


def test_a_node_keeps_the_status_it_registers_with() -> None:
    obj = node("a")
    obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    out = strategy.prepare_create(NODE, obj, uid="u", now="2026-01-01T00:00:00Z")
    assert out["status"]["conditions"][0]["type"] == "Ready"
