"""The three-way merge ``meshwork apply`` performs, and the desired object it sends."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshwork.cli.apply import LAST_APPLIED, desired_object, last_applied, three_way_merge
from meshwork.model.base import KindInfo, Model, ObjectMeta, Registry, Resource


class Port(Model):
    port: int
    protocol: str = "TCP"


class Widget(Resource):
    spec: dict[str, Any] | None = None
    replicas: int = 1  # a default the manifest may leave out
    ports: list[Port] | None = None
    status: dict[str, Any] | None = None


class Cluster(Resource):
    spec: dict[str, Any] | None = None


_registry = Registry()
_registry.register(
    KindInfo(
        group="example.com",
        versions=("v1",),
        kind="Widget",
        plural="widgets",
        singular="widget",
        model=Widget,
    )
)
_registry.register(
    KindInfo(
        group="example.com",
        versions=("v1",),
        kind="Cluster",
        plural="clusters",
        singular="cluster",
        model=Cluster,
        namespaced=False,
    )
)


def test_unchanged_when_the_server_only_added_fields() -> None:
    desired = {
        "metadata": {"name": "w", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "ports": [80]},
    }
    live = {
        "metadata": {
            "name": "w",
            "labels": {"app": "web"},
            "uid": "u1",
            "resourceVersion": "7",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {"replicas": 2, "ports": [80], "clusterIP": "127.2.0.1"},
        "status": {"ready": 2},
    }
    assert three_way_merge(live, desired, desired) == live


def test_a_field_removed_from_the_manifest_is_removed_from_the_object() -> None:
    previous = {
        "metadata": {"name": "w", "labels": {"app": "web", "tier": "fe"}},
        "spec": {"a": 1, "b": 2},
    }
    desired = {"metadata": {"name": "w", "labels": {"app": "web"}}, "spec": {"a": 1}}
    live = {
        "metadata": {"name": "w", "labels": {"app": "web", "tier": "fe", "added-by": "controller"}},
        "spec": {"a": 1, "b": 2, "c": 3},
    }
    merged = three_way_merge(live, desired, previous)
    assert merged == {
        "metadata": {"name": "w", "labels": {"app": "web", "added-by": "controller"}},
        "spec": {"a": 1, "c": 3},
    }


def test_changed_values_and_lists_replace_the_live_ones() -> None:
    live = {"spec": {"ports": [{"port": 80, "nodePort": 30080}], "image": "v1"}}
    desired = {"spec": {"ports": [{"port": 8080}], "image": "v2"}}
    assert three_way_merge(live, desired, {}) == {
        "spec": {"ports": [{"port": 8080}], "image": "v2"}
    }


def test_merge_does_not_alter_its_inputs() -> None:
    live = {"spec": {"a": {"b": 1}}}
    desired = {"spec": {"a": {"c": 2}}}
    before = copy.deepcopy((live, desired))
    three_way_merge(live, desired, {})
    assert (live, desired) == before


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
json_object = st.dictionaries(st.text(max_size=3), json_value, max_size=4)


@given(live=json_object, desired=json_object, previous=json_object)
def test_applying_twice_changes_nothing_the_second_time(
    live: dict[str, Any], desired: dict[str, Any], previous: dict[str, Any]
) -> None:
    once = three_way_merge(live, desired, previous)
    assert three_way_merge(once, desired, desired) == once


@given(live=json_object, desired=json_object, previous=json_object)
def test_every_desired_leaf_ends_up_in_the_result(
    live: dict[str, Any], desired: dict[str, Any], previous: dict[str, Any]
) -> None:
    merged = three_way_merge(live, desired, previous)

    def check(want: dict[str, Any], got: dict[str, Any]) -> None:
        for key, value in want.items():
            assert key in got
            if isinstance(value, dict) and isinstance(got[key], dict):
                check(value, got[key])
            else:
                assert got[key] == value

    check(desired, merged)


def test_desired_object_fills_the_namespace_and_records_the_configuration() -> None:
    obj = Widget(
        api_version="example.com/v1",
        kind="Widget",
        metadata=ObjectMeta(name="w", resource_version="9", uid="u", annotations={"note": "x"}),
        spec={"size": 3},
        status={"ready": True},
    )
    info, namespace, wire = desired_object(obj, "team-a")
    assert (info.kind, namespace) == ("Widget", "team-a")
    assert wire["metadata"]["namespace"] == "team-a"
    assert "status" not in wire
    assert "resourceVersion" not in wire["metadata"] and "uid" not in wire["metadata"]
    recorded = json.loads(wire["metadata"]["annotations"][LAST_APPLIED])
    assert recorded == {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "team-a", "annotations": {"note": "x"}},
        "spec": {"size": 3},
    }
    assert last_applied(wire) == recorded


def test_fields_the_manifest_leaves_out_are_not_sent_or_recorded() -> None:
    obj = Widget.model_validate(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    )
    _, _, wire = desired_object(obj, "default")
    assert "replicas" not in wire and "spec" not in wire
    assert "replicas" not in last_applied(wire)
    live = {**wire, "replicas": 5, "metadata": {**wire["metadata"], "resourceVersion": "3"}}
    assert (
        three_way_merge(live, wire, last_applied(live)) == live
    )  # an autoscaler's replicas survive
    with_ports = Widget.model_validate(
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "ports": [{"port": 80}],
        }
    )
    assert desired_object(with_ports, "default")[2]["ports"] == [
        {"port": 80, "protocol": "TCP"}
    ]  # lists replace whole: defaults in
    explicit = Widget.model_validate(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "replicas": 2}
    )
    assert desired_object(explicit, "default")[2]["replicas"] == 2


def test_desired_object_keeps_the_manifest_namespace_and_drops_it_for_cluster_kinds() -> None:
    own = Widget(
        api_version="example.com/v1", kind="Widget", metadata=ObjectMeta(name="w", namespace="prod")
    )
    assert desired_object(own, "default")[1] == "prod"
    cluster = Cluster(
        api_version="example.com/v1", kind="Cluster", metadata=ObjectMeta(name="c", namespace="x")
    )
    _, namespace, wire = desired_object(cluster, "default")
    assert namespace is None and "namespace" not in wire["metadata"]
    assert (
        "annotations" not in json.loads(wire["metadata"]["annotations"][LAST_APPLIED])["metadata"]
    )


def test_last_applied_tolerates_garbage() -> None:
    assert last_applied({}) == {}
    assert last_applied({"metadata": {"annotations": {LAST_APPLIED: "{not json"}}}) == {}
    assert last_applied({"metadata": {"annotations": {LAST_APPLIED: "[1]"}}}) == {}
