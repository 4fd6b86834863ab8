"""A ``/status`` write validates only the new status where the kind allows it.

The short path must store exactly what validating the whole merged object
stores, and refuse exactly what it refuses, with the same error.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers the kinds)
from meshwork.control.api import strategy
from meshwork.control.api.cache import WatchCache
from meshwork.control.api.objects import Objects
from meshwork.control.store.memory import MemoryStore
from meshwork.errors import ValidationError
from meshwork.model.base import REGISTRY, KindInfo
from meshwork.model.codec import validate_status

POD = REGISTRY.for_group_kind("", "Pod")
NODE = REGISTRY.for_group_kind("", "Node")
DEPLOY = REGISTRY.for_group_kind("apps", "Deployment")
NS = REGISTRY.for_group_kind("", "Namespace")
assert POD and NODE and DEPLOY and NS

STORED_POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                 "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1, "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}],
                             "resources": {"requests": {"cpu": "100m"}}}]},
    "status": {"phase": "Pending"},
}  # fmt: skip
STORED_NODE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "node-1", "uid": "u2", "resourceVersion": "3", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"podCIDR": "127.1.0.0/24"},
}  # fmt: skip
STORED_DEPLOY: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "uid": "u3", "resourceVersion": "4", "generation": 1},
    "spec": {"selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}},
}  # fmt: skip


def objects() -> Objects:
    store = MemoryStore()
    return Objects(store, WatchCache(store))


def stored(info: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the store holds it: validated, in wire form."""
    meta = obj["metadata"]
    return objects().validate(info, obj, meta.get("namespace"), meta["name"])


def by_both_paths(info: KindInfo, old: dict[str, Any], raw: dict[str, Any]) -> tuple[Any, Any]:
    """(short path, whole-object path): each the stored object or the error it raised."""
    meta = old["metadata"]
    outcomes: list[Any] = []
    for run in (
        lambda: objects()._status_write(info, raw, old, meta.get("namespace"), meta["name"]),
        lambda: objects().validate(info, strategy.prepare_status_update(raw, old), meta.get("namespace"), meta["name"]),
    ):
        try:
            outcomes.append(run())
        except ValidationError as exc:
            outcomes.append((type(exc), str(exc), [(c.field, c.message) for c in exc.causes]))
    return outcomes[0], outcomes[1]


def without_rv(obj: Any) -> Any:
    if isinstance(obj, dict) and "metadata" in obj:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
    return obj


CONDITION = st.fixed_dictionaries(
    {"type": st.sampled_from(["PodScheduled", "Ready"]), "status": st.sampled_from(["True", "False", "Maybe", 1])},
    optional={
        "reason": st.sampled_from(["Unschedulable", None, 3]),
        "message": st.text(max_size=5),
        "lastTransitionTime": st.just("2026-01-01T00:00:00Z"),
        "bogus": st.just(1),
    },
)
POD_STATUS = st.fixed_dictionaries(
    {},
    optional={
        "phase": st.sampled_from(["Pending", "Running", "Sleeping", None]),
        "conditions": st.lists(CONDITION, max_size=3) | st.none() | st.just("x"),
        "podIP": st.sampled_from(["127.1.0.5", None, 5]),
        "qosClass": st.sampled_from(["BestEffort", "Best"]),
        "containerStatuses": st.just([{"name": "app", "ready": True, "restartCount": 0, "image": "app:1", "imageID": ""}]),
    },
)


@settings(max_examples=300, deadline=None)
@given(POD_STATUS)
def test_pod_status_write_matches_whole_object_validation(status: dict[str, Any]) -> None:
    old = stored(POD, STORED_POD)
    short, whole = by_both_paths(POD, old, {"status": status, "metadata": {"resourceVersion": "7"}})
    assert without_rv(short) == without_rv(whole)


@pytest.mark.parametrize(
    ("info", "obj", "status"),
    [
        (NODE, STORED_NODE, {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"cpu": "2"}}),
        (NODE, STORED_NODE, {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "nope": 1}),
        (DEPLOY, STORED_DEPLOY, {"replicas": 2, "readyReplicas": 1}),
        (DEPLOY, STORED_DEPLOY, {"replicas": "2"}),
        (POD, STORED_POD, None),
        (POD, STORED_POD, "Running"),
    ],
)
def test_other_status_writes_match_whole_object_validation(info: KindInfo, obj: dict[str, Any], status: Any) -> None:
    old = stored(info, obj)
    short, whole = by_both_paths(info, old, {"status": status})
    assert without_rv(short) == without_rv(whole)


def test_the_short_path_is_taken_only_where_the_model_allows() -> None:
    assert validate_status(POD, {"phase": "Running"}) == {"phase": "Running"}
    assert validate_status(NODE, {}) == {}
    # Deployment's model validators read the whole object: validated whole.
    assert validate_status(DEPLOY, {"replicas": 1}) is None
    assert validate_status(NS, {"phase": "Active"}) is None
    assert validate_status(POD, {"phase": "Sleeping"}) is None  # invalid: the whole path words it


def test_the_cached_object_is_not_changed_by_a_status_write() -> None:
    old = stored(POD, STORED_POD)
    before = repr(old)
    new = objects()._status_write(POD, {"status": {"phase": "Running"}}, old, "default", "web")
    new["metadata"]["resourceVersion"] = "8"  # what the store does to the written object
    assert repr(old) == before
    assert new["status"] == {"phase": "Running"} and new["spec"] == old["spec"]


# -- a controller's status, already validated ---------------------------------

MESSAGES = st.text(min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(MESSAGES, st.sampled_from([None, "True", "False"]), st.floats(0, 2e9))
def test_a_controllers_validated_status_is_stored_as_validation_would_store_it(
    message: str, previous: str | None, now: float
) -> None:
    """The runner's /status write skips re-validation; what it stores must not change.

    The status comes from the scheduler's own reconcile (no node fits), dumped
    as the runner dumps it; the validated short path and the full one agree.
    """
    from meshwork.control.runner import _STATUS_BODY
    from meshwork.core.reconcile import UpdateStatus
    from meshwork.core.reconcile.scheduling import reconcile_scheduling
    from meshwork.core.scheduler_filters import build_snapshot
    from meshwork.model.pod import Pod

    old = stored(POD, STORED_POD)
    if previous is not None:
        old = {**old, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": previous, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}  # fmt: skip
    outcome = reconcile_scheduling(Pod.model_validate(old), build_snapshot([], []), now)
    writes = [a for a in outcome.actions if isinstance(a, UpdateStatus)]
    assert writes  # a message unlike the scheduler's own: the condition is rewritten
    wire = writes[0].obj.model_dump(mode="json", by_alias=True, exclude_none=True, include=_STATUS_BODY)
    trusted = objects()._status_write(POD, wire, old, "default", "web", validated=True)
    checked = objects()._status_write(POD, wire, old, "default", "web")
    assert trusted == checked
    assert trusted["status"]["conditions"][-1]["reason"] == "Unschedulable"


def test_a_validated_status_is_still_validated_whole_where_the_kind_needs_it() -> None:
    """Deployment's status is judged with the rest of the object: the flag changes nothing there."""
    old = stored(DEPLOY, STORED_DEPLOY)
    with pytest.raises(ValidationError):
        objects()._status_write(DEPLOY, {"status": {"replicas": "two"}}, old, "default", "web", validated=True)
