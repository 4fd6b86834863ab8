"""Scheduling one pod: bind, report, or preempt; and no event flood while it stays stuck."""

from __future__ import annotations

from meshwork.core.reconcile import DeleteObject, RecordEvent, UpdateObject, UpdateStatus
from meshwork.core.reconcile.scheduling import reconcile_scheduling
from meshwork.core.scheduler_filters import BoundPod, ClusterSnapshot, NodeInfo
from meshwork.model.pod import Pod

NOW = 1_800_000_000.0


def pod(name: str, cpu: str = "100m", priority: int | None = None, node: str | None = None) -> Pod:
    spec: dict = {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}
    if priority is not None:
        spec["priority"] = priority
    if node:
        spec["nodeName"] = node
    return Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"}, "spec": spec})


def snapshot(*nodes: NodeInfo) -> ClusterSnapshot:
    return ClusterSnapshot(tuple(nodes))


def test_a_pod_that_fits_is_bound_with_a_scheduled_event() -> None:
    out = reconcile_scheduling(pod("p"), snapshot(NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10)), NOW)
    update, event = out.actions
    assert isinstance(update, UpdateObject) and update.obj.spec.node_name == "n1"
    assert isinstance(event, RecordEvent) and event.reason == "Scheduled"
    assert event.message == "Successfully assigned ns/p to n1"
    assert out.requeue_after is None


def test_bound_and_finished_pods_are_left_alone() -> None:
    assert reconcile_scheduling(pod("p", node="n1"), snapshot(), NOW).empty


def test_an_unschedulable_pod_reports_once_until_the_reason_changes() -> None:
    first = reconcile_scheduling(pod("p", cpu="4"), snapshot(NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10)), NOW)
    status, event = first.actions
    assert isinstance(status, UpdateStatus) and isinstance(event, RecordEvent)
    cond = status.obj.status.conditions[-1]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert cond.message == event.message and event.type == "Warning" and event.reason == "FailedScheduling"
    assert "1 Insufficient cpu" in event.message and first.requeue_after
    # Applying that status and trying again with the same cluster: nothing new to say.
    again = reconcile_scheduling(status.obj, snapshot(NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10)), NOW + 5)
    assert again.empty and again.requeue_after


def test_preemption_deletes_only_its_victims() -> None:
    low = BoundPod(namespace="ns", name="low", uid="u-low", priority=0, cpu=900)
    node = NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10, bound=(low,))
    out = reconcile_scheduling(pod("high", cpu="500m", priority=1000), snapshot(node), NOW)
    deletes = [a for a in out.actions if isinstance(a, DeleteObject)]
    assert [(d.name, d.uid) for d in deletes] == [("low", "u-low")]
    status = next(a for a in out.actions if isinstance(a, UpdateStatus))
    assert status.obj.status.nominated_node_name == "n1"


def test_the_input_pod_is_never_mutated() -> None:
    """The writes are shallow copies of the pod: binding or reporting leaves the input as it was."""
    fits = NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10)
    low = BoundPod(namespace="ns", name="low", uid="u-low", priority=0, cpu=900)
    for candidate, nodes in (
        (pod("p"), (fits,)),  # bound
        (pod("p", cpu="4"), (fits,)),  # unschedulable
        (pod("high", cpu="500m", priority=1000), (NodeInfo.create("n1", cpu=1000, memory=1 << 30, pods=10, bound=(low,)),)),
    ):
        before = candidate.model_dump()
        out = reconcile_scheduling(candidate, snapshot(*nodes), NOW)
        assert out.actions and candidate.model_dump() == before
        # And applying the unschedulable status, then reporting again, still leaves it alone.
        written = next((a.obj for a in out.actions if isinstance(a, UpdateStatus)), None)
        if written is not None:
            again_before = written.model_dump()
            reconcile_scheduling(written, snapshot(*nodes), NOW + 1)
            assert written.model_dump() == again_before
