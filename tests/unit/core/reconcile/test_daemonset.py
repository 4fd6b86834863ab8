"""DaemonSet reconcile: one pod per eligible node, pinned by node affinity; rolling update; status."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.core.reconcile import CreateObject, DeleteObject, Outcome, RecordEvent, UpdateStatus
from meshwork.core.reconcile.daemonset import (
    DAEMON_TOLERATIONS,
    GENERATION_LABEL,
    HASH_LABEL,
    reconcile_daemonset,
    target_node,
)
from meshwork.core.reconcile.podtemplate import compute_hash, rfc3339
from meshwork.core.scheduler import place
from meshwork.core.scheduler_filters import build_snapshot
from meshwork.model.core import Node
from meshwork.model.pod import Pod
from meshwork.model.workloads import DaemonSet

NOW = 1_700_000_000.0


def make_ds(
    *, env: str = "a", node_selector: dict[str, str] | None = None, strategy: dict[str, Any] | None = None,
    tolerations: list[dict[str, Any]] | None = None, generation: int = 1, min_ready: int | None = None,
) -> DaemonSet:  # fmt: skip
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "img", "env": [{"name": "V", "value": env}]}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return DaemonSet.model_validate({
        "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": generation},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec},
            "updateStrategy": strategy or {"type": "RollingUpdate"},
            **({"minReadySeconds": min_ready} if min_ready else {}),
        },
    })  # fmt: skip


def make_node(name: str, labels: dict[str, str] | None = None, taints: Sequence[dict[str, Any]] = ()) -> Node:
    return Node.model_validate({
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": list(taints) or None},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })  # fmt: skip


_names = itertools.count()


def pod_on(
    ds: DaemonSet, node: str, *, current: bool = True, ready: bool = True, phase: str = "Running",
    deleting: bool = False, bound: bool = True, created: float = NOW - 100,
) -> Pod:  # fmt: skip
    """A pod as the controller would have made it (for the current template or an older one)."""
    template_ds = ds if current else make_ds(env="old", generation=0)
    out = reconcile_daemonset(template_ds, [make_node(node, ds.spec.template.spec.node_selector)], [], NOW)
    pod = next(a.obj for a in out.actions if isinstance(a, CreateObject))
    assert isinstance(pod, Pod)
    meta = pod.metadata.model_copy(update={
        "name": f"agent-{next(_names)}", "uid": f"uid-{next(_names)}", "generate_name": None,
        "creation_timestamp": rfc3339(created), "deletion_timestamp": rfc3339(NOW) if deleting else None,
    })  # fmt: skip
    spec = pod.spec.model_copy(update={"node_name": node if bound else None})
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                              "lastTransitionTime": rfc3339(NOW - 50)}]}  # fmt: skip
    return Pod.model_validate({**pod.model_copy(update={"metadata": meta, "spec": spec}).model_dump(by_alias=True, exclude_none=True), "status": status})


def creates(out: Outcome) -> list[Pod]:
    return [a.obj for a in out.actions if isinstance(a, CreateObject)]  # type: ignore[misc]


def deletes(out: Outcome) -> list[str]:
    return [a.name for a in out.actions if isinstance(a, DeleteObject)]


def status_of(out: Outcome) -> dict[str, Any]:
    (update,) = [a for a in out.actions if isinstance(a, UpdateStatus)]
    return update.obj.status.model_dump(by_alias=True, exclude_none=True)  # type: ignore[union-attr]


def test_one_pod_per_node_pinned_by_node_affinity_with_daemon_tolerations_and_labels() -> None:
    ds = make_ds()
    nodes = [make_node(n) for n in ("n1", "n2", "n3")]
    out = reconcile_daemonset(ds, nodes, [], NOW)
    pods = creates(out)
    assert [target_node(p) for p in pods] == ["n1", "n2", "n3"]
    for pod in pods:
        assert pod.spec.node_name is None  # the scheduler binds it
        term = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms  # type: ignore[union-attr]
        assert [(r.key, r.operator, r.values) for r in term[0].match_fields] == [("metadata.name", "In", [target_node(pod)])]  # type: ignore[union-attr]
        assert pod.metadata.labels == {"app": "agent", HASH_LABEL: compute_hash(ds.spec.template), GENERATION_LABEL: "1"}
        assert {(t.key, t.operator, t.effect, t.toleration_seconds) for t in pod.spec.tolerations or ()} == {
            (k, "Exists", e, None) for k, e in DAEMON_TOLERATIONS
        }
        assert pod.metadata.owner_references[0].uid == "ds-uid"  # type: ignore[index]
        assert pod.metadata.generate_name == "agent-"
    assert [e.reason for e in out.actions if isinstance(e, RecordEvent)] == ["SuccessfulCreate"] * 3
    assert status_of(out) == {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 3,
                              "numberReady": 0, "observedGeneration": 1, "updatedNumberScheduled": 0,
                              "numberAvailable": 0, "numberUnavailable": 3}  # fmt: skip


def test_the_scheduler_binds_a_daemon_pod_only_to_its_node() -> None:
    nodes = [make_node(n) for n in ("n1", "n2", "n3")]
    for pod in creates(reconcile_daemonset(make_ds(), nodes, [], NOW)):
        result = place(pod.model_copy(update={"metadata": pod.metadata.model_copy(update={"name": "p"})}), build_snapshot(nodes, []))
        assert getattr(result, "node_name", None) == target_node(pod)


def test_node_selector_narrows_and_a_pod_on_a_node_that_no_longer_matches_is_deleted() -> None:
    ds = make_ds(node_selector={"disk": "ssd"})
    nodes = [make_node("n1", {"disk": "ssd"}), make_node("n2"), make_node("n3", {"disk": "ssd"})]
    stray = pod_on(ds, "n2")
    out = reconcile_daemonset(ds, nodes, [stray], NOW)
    assert [target_node(p) for p in creates(out)] == ["n1", "n3"]
    assert deletes(out) == [stray.metadata.name]
    assert status_of(out)["numberMisscheduled"] == 1 and status_of(out)["desiredNumberScheduled"] == 2


def test_taints_repel_new_pods_and_noexecute_ones_remove_running_pods() -> None:
    ds = make_ds()
    nodes = [
        make_node("no-schedule", taints=[{"key": "gpu", "effect": "NoSchedule"}]),
        make_node("no-execute", taints=[{"key": "gpu", "effect": "NoExecute"}]),
        make_node("unreachable", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
                                         {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        make_node("cordoned", taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
    ]  # fmt: skip
    pods = [pod_on(ds, "no-schedule"), pod_on(ds, "no-execute"), pod_on(ds, "unreachable")]
    out = reconcile_daemonset(ds, nodes, pods, NOW)
    assert [target_node(p) for p in creates(out)] == ["cordoned"]  # tolerated automatically
    assert deletes(out) == [pods[1].metadata.name]  # the other two may continue running
    tolerant = make_ds(tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert {target_node(p) for p in creates(reconcile_daemonset(tolerant, nodes, [], NOW))} == {"no-schedule", "no-execute", "cordoned"}


def test_failed_pods_are_replaced_and_a_terminating_one_is_waited_for() -> None:
    ds = make_ds()
    failed, leaving = pod_on(ds, "n1", phase="Failed"), pod_on(ds, "n2", deleting=True)
    out = reconcile_daemonset(ds, [make_node("n1"), make_node("n2")], [failed, leaving], NOW)
    assert deletes(out) == [failed.metadata.name] and creates(out) == []
    warning = [e for e in out.actions if isinstance(e, RecordEvent) and e.reason == "FailedDaemonPod"]
    assert warning and warning[0].type == "Warning"


def test_extra_pods_on_a_node_go_oldest_first_kept_and_unbound_pods_of_vanished_nodes_go() -> None:
    ds = make_ds()
    old, young = pod_on(ds, "n1", created=NOW - 500), pod_on(ds, "n1", created=NOW - 10)
    orphan = pod_on(ds, "gone", bound=False)
    out = reconcile_daemonset(ds, [make_node("n1")], [young, old, orphan], NOW)
    assert sorted(deletes(out)) == sorted([young.metadata.name, orphan.metadata.name])


def test_rolling_update_replaces_max_unavailable_at_a_time() -> None:
    ds = make_ds(env="b", generation=2)
    nodes = [make_node(n) for n in ("n1", "n2", "n3", "n4")]
    olds = [pod_on(ds, n.metadata.name or "", current=False) for n in nodes]
    out = reconcile_daemonset(ds, nodes, olds, NOW)
    assert deletes(out) == [olds[0].metadata.name] and not creates(out)
    assert status_of(out)["updatedNumberScheduled"] == 0
    # The first node got its new pod, not ready yet: nothing more goes.
    fresh = pod_on(ds, "n1", ready=False)
    assert deletes(reconcile_daemonset(ds, nodes, [fresh, *olds[1:]], NOW)) == []
    # Ready: the next one.
    ready = pod_on(ds, "n1")
    assert deletes(reconcile_daemonset(ds, nodes, [ready, *olds[1:]], NOW)) == [olds[1].metadata.name]
    # A percentage rounds up: 50% of 4 nodes is 2; an unavailable old pod is replaced outside the budget.
    half = make_ds(env="b", generation=2, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}})
    sick = pod_on(half, "n4", current=False, ready=False)
    assert deletes(reconcile_daemonset(half, nodes, [*olds[:3], sick], NOW)) == [sick.metadata.name, olds[0].metadata.name, olds[1].metadata.name]


def test_on_delete_leaves_old_pods_until_someone_deletes_them() -> None:
    ds = make_ds(env="b", generation=2, strategy={"type": "OnDelete"})
    olds = [pod_on(ds, "n1", current=False)]
    out = reconcile_daemonset(ds, [make_node("n1"), make_node("n2")], olds, NOW)
    assert deletes(out) == [] and [target_node(p) for p in creates(out)] == ["n2"]
    assert status_of(out)["updatedNumberScheduled"] == 0


def test_surge_starts_the_new_pod_before_the_old_one_goes() -> None:
    ds = make_ds(env="b", generation=2, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    nodes = [make_node("n1"), make_node("n2")]
    olds = [pod_on(ds, "n1", current=False), pod_on(ds, "n2", current=False)]
    out = reconcile_daemonset(ds, nodes, olds, NOW)
    assert [target_node(p) for p in creates(out)] == ["n1"] and deletes(out) == []
    new = pod_on(ds, "n1")
    assert deletes(reconcile_daemonset(ds, nodes, [*olds, new], NOW)) == [olds[0].metadata.name]


def test_status_counts_and_a_deleting_daemonset_is_left_alone() -> None:
    ds = make_ds(env="b", generation=3, min_ready=100)
    nodes = [make_node(n) for n in ("n1", "n2", "n3")]
    pods = [pod_on(ds, "n1"), pod_on(ds, "n2", current=False), pod_on(ds, "n3", ready=False)]
    out = reconcile_daemonset(ds, nodes, pods, NOW)
    assert status_of(out) == {"currentNumberScheduled": 3, "numberMisscheduled": 0, "desiredNumberScheduled": 3,
                              "numberReady": 2, "observedGeneration": 3, "updatedNumberScheduled": 2,
                              "numberAvailable": 0, "numberUnavailable": 3}  # fmt: skip
    assert out.requeue_after == pytest.approx(50, abs=0.1)  # ready 50 s ago, 100 s needed
    gone = ds.model_copy(update={"metadata": ds.metadata.model_copy(update={"deletion_timestamp": rfc3339(NOW)})})
    assert reconcile_daemonset(gone, nodes, [], NOW) == Outcome()


# ---------------------------------------------------------------------------
# Convergence: with a scheduler and agents that act at once, the rollout ends
# with one current pod per eligible node and never exceeds maxUnavailable.
# ---------------------------------------------------------------------------


def settle(ds: DaemonSet, pods: list[Pod], out: Outcome) -> list[Pod]:
    gone = set(deletes(out))
    kept = [p for p in pods if p.metadata.name not in gone]
    for new in creates(out):
        node = target_node(new)
        assert node is not None
        made = pod_on(ds, node)
        assert made.metadata.labels == new.metadata.labels
        kept.append(made)
    return kept


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.booleans(), min_size=1, max_size=6),
    unavailable=st.sampled_from([1, 2, "30%", "100%"]),
    selector=st.booleans(),
)
def test_a_rollout_converges_within_its_budget(labels: list[bool], unavailable: int | str, selector: bool) -> None:
    nodes = [make_node(f"n{i}", {"role": "edge"} if on else {}) for i, on in enumerate(labels)]
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": unavailable}}
    ds = make_ds(env="b", generation=2, strategy=strategy, node_selector={"role": "edge"} if selector else None)
    pods = [pod_on(ds, n.metadata.name or "", current=False) for n in nodes]
    eligible = {n.metadata.name for n, on in zip(nodes, labels, strict=True) if on or not selector}
    budget = max(1, -(-int(str(unavailable).rstrip("%")) * len(eligible) // 100) if isinstance(unavailable, str) else unavailable)
    for _ in range(4 * len(nodes) + 4):
        out = reconcile_daemonset(ds, nodes, pods, NOW)
        if not creates(out) and not deletes(out):
            break
        pods = settle(ds, pods, out)
        serving = {target_node(p) for p in pods}
        assert len(eligible - serving) <= budget
    else:
        raise AssertionError("did not converge")
    current = compute_hash(ds.spec.template)
    assert sorted(target_node(p) or "" for p in pods) == sorted(eligible)  # type: ignore[type-var]
    assert all((p.metadata.labels or {})[HASH_LABEL] == current for p in pods)
    again = reconcile_daemonset(ds, nodes, pods, NOW)
    assert not creates(again) and not deletes(again)
