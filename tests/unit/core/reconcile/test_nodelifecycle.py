"""Node lifecycle reconcile: heartbeats going stale, readiness taints, taint-based eviction, pod GC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.core.reconcile import (
    Action,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.nodelifecycle import (
    MESSAGE_UNKNOWN,
    REASON_UNKNOWN,
    LifecycleConfig,
    eviction_time,
    reconcile_node,
)
from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.model.core import Node, Taint
from meshwork.model.pod import Pod

NOW = 1_700_000_000.0
CONFIG = LifecycleConfig(grace_period=40, startup_grace_period=60, pod_eviction_timeout=300, pod_gc_quarantine=40)
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


def make_node(
    ready: str | None = "True", heartbeat: float = NOW - 5, taints: Sequence[dict[str, Any]] = (),
    created: float = NOW - 3600, unschedulable: bool = False,
) -> Node:  # fmt: skip
    conditions = []
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": "KubeletReady",
                           "lastHeartbeatTime": rfc3339(heartbeat), "lastTransitionTime": rfc3339(created)})  # fmt: skip
    return Node.model_validate({
        "metadata": {"name": "n1", "uid": "node-uid", "creationTimestamp": rfc3339(created)},
        "spec": {"taints": list(taints) or None, "unschedulable": unschedulable or None},
        "status": {"conditions": conditions},
    })  # fmt: skip


def make_pod(
    name: str, *, node: str = "n1", ready: bool = True, tolerations: Sequence[dict[str, Any]] = (),
    created: float = NOW - 3600, deleting: bool = False, phase: str = "Running",
) -> Pod:  # fmt: skip
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": "ns", "uid": f"{name}-uid", "creationTimestamp": rfc3339(created),
                     **({"deletionTimestamp": rfc3339(NOW - 1)} if deleting else {})},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img"}], "tolerations": list(tolerations) or None},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    })  # fmt: skip


def run(node: Node | None, pods: Sequence[Pod] = (), now: float = NOW, config: LifecycleConfig = CONFIG) -> Outcome:
    return reconcile_node("n1", node, lambda: list(pods), now, config)


def no_pods() -> list[Pod]:
    raise AssertionError("a healthy node's reconcile must not list pods")


def of(outcome: Outcome, kind: type) -> list[Any]:
    return [a for a in outcome.actions if isinstance(a, kind)]


def taints_of(outcome: Outcome) -> list[Taint]:
    (update,) = of(outcome, UpdateObject)
    return list(update.obj.spec.taints or [])


def test_a_fresh_heartbeat_does_nothing_and_looks_again_when_it_would_go_stale() -> None:
    out = reconcile_node("n1", make_node(heartbeat=NOW - 5), no_pods, NOW, CONFIG)
    assert out.actions == ()
    assert out.requeue_after == pytest.approx(35, abs=0.1)


def test_a_stale_heartbeat_makes_the_node_unknown_tainted_and_its_pods_not_ready() -> None:
    pods = [make_pod("a"), make_pod("b", ready=False)]
    out = run(make_node(heartbeat=NOW - 41), pods)
    node_status = [a for a in of(out, UpdateStatus) if isinstance(a.obj, Node)]
    (status,) = node_status
    ready = next(c for c in status.obj.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("Unknown", REASON_UNKNOWN, MESSAGE_UNKNOWN)
    assert ready.last_heartbeat_time == rfc3339(NOW - 41)  # the last one the agent posted stays
    assert ready.last_transition_time == rfc3339(NOW)
    assert {c.type for c in status.obj.status.conditions} == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    taints = taints_of(out)
    assert {(t.key, t.effect) for t in taints} == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
    assert all(t.time_added == rfc3339(NOW) for t in taints)
    events = of(out, RecordEvent)
    assert ("NodeNotReady", "Node n1 status is now: NodeNotReady") in [(e.reason, e.message) for e in events if e.about.kind == "Node"]
    # Only the ready pod changes: its Ready condition goes False, with upstream's warning.
    pod_updates = [a for a in of(out, UpdateStatus) if isinstance(a.obj, Pod)]
    assert [p.obj.metadata.name for p in pod_updates] == ["a"]
    assert next(c for c in pod_updates[0].obj.status.conditions if c.type == "Ready").status == "False"
    assert [(e.about.name, e.reason, e.message) for e in events if e.about.kind == "Pod"] == [("a", "NodeNotReady", "Node is not ready")]
    assert not of(out, DeleteObject)
    assert out.requeue_after == pytest.approx(300, abs=0.1)  # the pods' eviction


def unreachable_node(since: float) -> Node:
    return make_node("Unknown", heartbeat=since - 41, taints=[
        {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": rfc3339(since)},
        {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(since)},
    ])  # fmt: skip


def test_pods_are_evicted_gracefully_once_the_eviction_timeout_has_passed() -> None:
    node = unreachable_node(NOW - 300)
    pods = [make_pod("a", ready=False), make_pod("gone", ready=False, deleting=True)]
    out = run(node, pods)
    (delete,) = of(out, DeleteObject)
    assert (delete.namespace, delete.name, delete.uid, delete.grace_period) == ("ns", "a", "a-uid", None)
    (status,) = [a for a in of(out, UpdateStatus) if isinstance(a.obj, Pod)]
    target = next(c for c in status.obj.status.conditions if c.type == "DisruptionTarget")
    assert (target.status, target.reason) == ("True", "DeletionByTaintManager")
    assert [(e.reason, e.message) for e in of(out, RecordEvent)] == [("TaintManagerEviction", "Marking for deletion Pod ns/a")]
    # A second earlier: nothing yet, and a wake-up for the deadline.
    early = run(node, pods[:1], now=NOW - 1)
    assert not of(early, DeleteObject) and early.requeue_after == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize(
    ("tolerations", "due"),
    [
        ([], NOW + 300),  # the default toleration the admission would add
        ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}], NOW + 10),
        ([{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 7},
          {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20}], NOW + 7),  # the smallest used
        ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}], None),  # forever (daemon pods)
        ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}], 0.0),
        ([{"key": "other", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}], NOW + 300),  # not used: the default
    ],
)
def test_eviction_time_follows_the_pods_tolerations(tolerations: list[dict[str, Any]], due: float | None) -> None:
    taints = [Taint.model_validate({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(NOW)})]
    assert eviction_time(make_pod("p", tolerations=tolerations), taints, CONFIG) == due


def test_an_untolerated_user_noexecute_taint_evicts_at_once_even_on_a_ready_node() -> None:
    node = make_node(taints=[{"key": "dedicated", "value": "db", "effect": "NoExecute", "timeAdded": rfc3339(NOW)}])
    tolerant = make_pod("ok", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}])
    out = run(node, [make_pod("a"), tolerant])
    assert [d.name for d in of(out, DeleteObject)] == ["a"]
    assert not of(out, UpdateObject)  # a user's taint is not this controller's to remove


def test_the_agent_coming_back_removes_the_taints_without_looking_at_pods() -> None:
    node = unreachable_node(NOW - 100)
    back = node.model_copy(update={"status": make_node("True", heartbeat=NOW).status})
    user = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    back = back.model_copy(update={"spec": back.spec.model_copy(update={
        "taints": [*back.spec.taints, Taint.model_validate(user)]})})  # fmt: skip
    out = reconcile_node("n1", back, no_pods, NOW, CONFIG)
    assert [(t.key, t.effect) for t in taints_of(out)] == [("dedicated", "NoSchedule")]
    assert not of(out, RecordEvent) and not of(out, UpdateStatus)


def test_ready_false_gets_not_ready_taints_but_pods_are_left_to_the_live_agent() -> None:
    out = run(make_node("False"), [make_pod("a")])
    assert {(t.key, t.effect) for t in taints_of(out)} == {(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")}
    assert not of(out, UpdateStatus)


def test_a_node_that_never_posted_status_goes_unknown_after_the_startup_grace() -> None:
    young = make_node(None, created=NOW - 59)
    assert run(young).actions == ()
    old = make_node(None, created=NOW - 61)
    (status,) = of(run(old), UpdateStatus)
    ready = next(c for c in status.obj.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("Unknown", "NodeStatusNeverUpdated")


def test_cordon_and_pressure_conditions_become_noschedule_taints() -> None:
    node = make_node(unschedulable=True)
    node.status.conditions.append(node.status.conditions[0].model_copy(update={"type": "MemoryPressure", "status": "True"}))
    keys = {(t.key, t.effect) for t in taints_of(run(node))}
    assert keys == {("node.kubernetes.io/unschedulable", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule")}


def test_pods_of_a_missing_node_are_deleted_with_grace_zero_after_the_quarantine() -> None:
    pods = [make_pod("old"), make_pod("young", created=NOW - 10), make_pod("term", deleting=True)]
    out = run(None, pods)
    assert [(d.name, d.grace_period) for d in of(out, DeleteObject)] == [("old", 0), ("term", 0)]
    assert out.requeue_after == pytest.approx(30, abs=0.1)


# ---------------------------------------------------------------------------
# Idempotence: applying the actions and reconciling again gives nothing more
# ---------------------------------------------------------------------------


def apply(node: Node | None, pods: list[Pod], actions: Sequence[Action], now: float) -> tuple[Node | None, list[Pod]]:
    by_name = {p.metadata.name: p for p in pods}
    for action in actions:
        if isinstance(action, UpdateStatus | UpdateObject):
            if isinstance(action.obj, Node):
                # The main resource never writes status, the status subresource nothing else.
                if isinstance(action, UpdateObject) and node is not None:
                    node = action.obj.model_copy(update={"status": node.status})
                elif node is not None:
                    node = node.model_copy(update={"status": action.obj.status})
            else:
                assert isinstance(action.obj, Pod)
                by_name[action.obj.metadata.name] = action.obj
        elif isinstance(action, DeleteObject):
            if action.grace_period == 0:
                by_name.pop(action.name)
            else:
                pod = by_name[action.name]
                by_name[action.name] = pod.model_copy(update={"metadata": pod.metadata.model_copy(update={"deletion_timestamp": rfc3339(now)})})
    return node, list(by_name.values())


toleration = st.sampled_from([
    {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
    {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"},
    {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
    {"operator": "Exists"},
    {"key": "dedicated", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
])  # fmt: skip
taint = st.sampled_from([
    {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(NOW - 100)},
    {"key": UNREACHABLE, "effect": "NoSchedule"},
    {"key": NOT_READY, "effect": "NoExecute", "timeAdded": rfc3339(NOW - 400)},
    {"key": "dedicated", "effect": "NoExecute", "timeAdded": rfc3339(NOW - 3)},
    {"key": "dedicated", "effect": "NoSchedule"},
])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    exists=st.booleans(),
    ready=st.sampled_from(["True", "False", "Unknown", None]),
    age=st.integers(0, 120),
    taints=st.lists(taint, unique_by=lambda t: (t["key"], t["effect"]), max_size=4),
    pods=st.lists(st.tuples(st.booleans(), st.lists(toleration, max_size=2), st.booleans()), max_size=4),
    later=st.integers(0, 400),
)
def test_reconcile_is_idempotent(
    exists: bool, ready: str | None, age: int, taints: list[dict[str, Any]],
    pods: list[tuple[bool, list[dict[str, Any]], bool]], later: int,
) -> None:  # fmt: skip
    node = make_node(ready, heartbeat=NOW - age, taints=taints, created=NOW - 200) if exists else None
    pod_list = [make_pod(f"p{i}", ready=r, tolerations=t, deleting=d) for i, (r, t, d) in enumerate(pods)]
    now = NOW + later
    first = run(node, pod_list, now=now)
    node2, pods2 = apply(node, pod_list, first.actions, now)
    second = run(node2, pods2, now=now)
    assert second.actions == (), second.actions
    if node2 is not None:
        for t in node2.spec.taints or ():
            assert t.effect != "NoExecute" or parse_time(t.time_added) is not None or t.key == "dedicated"
