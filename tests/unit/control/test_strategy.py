"""The API server's per-kind rules, as pure functions over wire dicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers the kinds)
from meshwork.control.api import strategy
from meshwork.errors import ValidationError
from meshwork.model.base import REGISTRY

POD = REGISTRY.for_group_kind("", "Pod")
CM = REGISTRY.for_group_kind("", "ConfigMap")
SVC = REGISTRY.for_group_kind("", "Service")
JOB = REGISTRY.for_group_kind("batch", "Job")
assert POD and CM and SVC and JOB


def test_create_sets_server_fields_and_drops_client_ones() -> None:
    obj = {"metadata": {"name": "p", "resourceVersion": "9", "deletionTimestamp": "x"}, "spec": {}, "status": {"phase": "Running"}}
    out = strategy.prepare_create(POD, obj, uid="u1", now="2026-01-01T00:00:00Z")
    meta = out["metadata"]
    assert meta["uid"] == "u1" and meta["creationTimestamp"] == "2026-01-01T00:00:00Z" and meta["generation"] == 1
    assert "resourceVersion" not in meta and "deletionTimestamp" not in meta
    assert out["status"] == {"phase": "Pending"}
    assert out["spec"]["serviceAccountName"] == "default"


def test_objects_without_spec_have_no_generation() -> None:
    out = strategy.prepare_create(CM, {"metadata": {"name": "c", "generation": 4}, "data": {}}, uid="u", now="t")
    assert "generation" not in out["metadata"]


@pytest.mark.parametrize(
    ("old_spec", "new_spec", "generation"),
    [({"a": 1}, {"a": 1}, 3), ({"a": 1}, {"a": 2}, 4), ({"a": 1}, {}, 4)],
)
def test_generation_moves_with_spec_only(old_spec, new_spec, generation) -> None:
    old = {"metadata": {"name": "p", "uid": "u", "generation": 3, "labels": {"x": "1"}}, "spec": old_spec, "status": {"phase": "Running"}}
    new = {"metadata": {"name": "p", "labels": {"x": "2"}}, "spec": new_spec, "status": {"phase": "Failed"}}
    out = strategy.prepare_update(POD, new, old)
    assert out["metadata"]["generation"] == generation
    assert out["metadata"]["uid"] == "u"
    assert out["status"] == {"phase": "Running"}  # the main resource never writes status


def test_status_update_touches_only_status() -> None:
    old = {"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"phase": "Pending"}}
    new = {"metadata": {"name": "p", "labels": {"a": "2"}, "resourceVersion": "7"}, "spec": {"x": 2}, "status": {"phase": "Running"}}
    out = strategy.prepare_status_update(new, old)
    assert out["spec"] == {"x": 1} and out["metadata"]["labels"] == {"a": "1"}
    assert out["status"] == {"phase": "Running"} and out["metadata"]["resourceVersion"] == "7"


@given(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3)), st.text(max_size=3))
def test_same_object_ignores_only_the_resource_version(data, rv) -> None:
    a = {"metadata": {"name": "x", "resourceVersion": "1"}, "data": data}
    b = {"metadata": {"name": "x", "resourceVersion": rv}, "data": dict(data)}
    assert strategy.same_object(a, b)
    assert not strategy.same_object(a, {**b, "data": {**data, "c": 1}})


@pytest.mark.parametrize(
    ("meta", "complete"),
    [
        ({}, False),
        ({"deletionTimestamp": "t"}, True),
        ({"deletionTimestamp": "t", "finalizers": ["f"]}, False),
        ({"deletionTimestamp": "t", "deletionGracePeriodSeconds": 30}, False),
        ({"deletionTimestamp": "t", "deletionGracePeriodSeconds": 0}, True),
    ],
)
def test_deletion_completes_without_finalizers_or_grace(meta, complete) -> None:
    assert strategy.deletion_complete({"metadata": meta}) is complete


def test_job_selector_generation() -> None:
    job = {"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {}}}}
    out = strategy.prepare_create(JOB, job, uid="u9", now="t")
    assert out["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u9"}}
    assert out["spec"]["template"]["metadata"]["labels"] == {
        "app": "pi", "controller-uid": "u9", "batch.kubernetes.io/controller-uid": "u9",
        "job-name": "pi", "batch.kubernetes.io/job-name": "pi",
    }
    manual = {"metadata": {"name": "m"}, "spec": {"manualSelector": True, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}}
    assert strategy.prepare_create(JOB, manual, uid="u", now="t")["spec"]["selector"] == {"matchLabels": {"a": "b"}}
    with pytest.raises(ValidationError, match="not auto-generated"):
        strategy.prepare_create(JOB, {"metadata": {"name": "w"}, "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "other"}}, "template": {}}}, uid="u", now="t")


def test_service_updates_keep_allocations() -> None:
    old = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "127.96.0.4", "clusterIPs": ["127.96.0.4"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30010}]}}
    new = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}}
    out = strategy.prepare_update(SVC, new, old)
    assert out["spec"]["clusterIP"] == "127.96.0.4" and out["spec"]["ports"][0]["nodePort"] == 30010
    with pytest.raises(ValidationError, match="immutable"):
        strategy.prepare_update(SVC, {"metadata": {"name": "s"}, "spec": {"clusterIP": "127.96.0.5"}}, old)


def test_generated_names_use_the_upstream_alphabet() -> None:
    for _ in range(50):
        name = strategy.generated_name("web-")
        assert name.startswith("web-") and len(name) == 9
        assert set(name[4:]) <= set(strategy.GENERATE_NAME_ALPHABET)
