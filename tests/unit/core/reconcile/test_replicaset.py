"""ReplicaSet reconcile: pod counts, deletion order, status, and idempotence."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.core.reconcile import (
    CreateObject,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.reconcile.replicaset import BURST_REPLICAS, pods_to_delete, reconcile_replicaset
from meshwork.model.base import ObjectMeta, OwnerReference
from meshwork.model.container import Container
from meshwork.model.pod import (
    ContainerStatus,
    LabelSelector,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    PodTemplateSpec,
)
from meshwork.model.workloads import ReplicaSet, ReplicaSetSpec, ReplicaSetStatus

NOW = 1_700_000_000.0
LABELS = {"app": "web", "pod-template-hash": "5d9f"}


def make_rs(
    replicas: int = 3, *, min_ready: int | None = None, generation: int = 1,
    status: ReplicaSetStatus | None = None, deleting: bool = False,
) -> ReplicaSet:  # fmt: skip
    return ReplicaSet(
        metadata=ObjectMeta(
            name="web-5d9f",
            namespace="ns",
            uid="rs-uid",
            generation=generation,
            deletion_timestamp=rfc3339(NOW) if deleting else None,
        ),
        spec=ReplicaSetSpec(
            replicas=replicas,
            min_ready_seconds=min_ready,
            selector=LabelSelector(match_labels=dict(LABELS)),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=dict(LABELS), annotations={"a": "b"}),
                spec=PodSpec(containers=[Container(name="c", image="img")]),
            ),
        ),
        status=status,
    )


def make_pod(
    name: str, *, owner_uid: str | None = "rs-uid", phase: str = "Running", ready: bool = True,
    ready_at: float = NOW - 100, node: str | None = "n1", created: float = NOW - 1000,
    restarts: int = 0, deleting: bool = False, labels: dict[str, str] | None = None,
    cost: int | None = None,
) -> Pod:  # fmt: skip
    refs = None
    if owner_uid is not None:
        refs = [OwnerReference(api_version="apps/v1", kind="ReplicaSet", name="web-5d9f",
                               uid=owner_uid, controller=True)]  # fmt: skip
    conditions = [PodCondition(type="Ready", status="True" if ready else "False",
                               last_transition_time=rfc3339(ready_at))]  # fmt: skip
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace="ns",
            uid=f"uid-{name}",
            owner_references=refs,
            labels=dict(LABELS) if labels is None else labels,
            creation_timestamp=rfc3339(created),
            deletion_timestamp=rfc3339(NOW) if deleting else None,
            annotations={"controller.kubernetes.io/pod-deletion-cost": str(cost)}
            if cost is not None
            else None,
        ),
        spec=PodSpec(containers=[Container(name="c", image="img")], node_name=node),
        status=PodStatus.model_validate(
            {
                "phase": phase,
                "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
                "containerStatuses": [
                    ContainerStatus(name="c", restart_count=restarts).model_dump(by_alias=True)
                ],
            }
        ),
    )


@dataclass
class View:
    """A tiny in-memory cluster: applies an Outcome the way the runner would."""

    rs: ReplicaSet
    pods: dict[str, Pod] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def apply(self, outcome: Outcome, *, ready: bool = True) -> None:
        for action in outcome.actions:
            if isinstance(action, CreateObject):
                assert isinstance(action.obj, Pod)
                n = next(self.counter)
                name = f"{action.obj.metadata.generate_name}{n:05d}"
                meta = action.obj.metadata.model_copy(update={
                    "name": name, "uid": f"uid-{name}", "creation_timestamp": rfc3339(NOW)})  # fmt: skip
                status = PodStatus.model_validate({"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True" if ready else "False",
                     "lastTransitionTime": rfc3339(NOW - 1000)}]})  # fmt: skip
                self.pods[name] = action.obj.model_copy(update={"metadata": meta, "status": status})
            elif isinstance(action, DeleteObject):
                assert action.kind == "Pod"
                assert self.pods[action.name].metadata.uid == action.uid
                del self.pods[action.name]
            elif isinstance(action, UpdateStatus):
                assert isinstance(action.obj, ReplicaSet)
                self.rs = action.obj

    def reconcile(self) -> Outcome:
        return reconcile_replicaset(self.rs, list(self.pods.values()), NOW)


def _creates(outcome: Outcome) -> list[Pod]:
    return [
        a.obj for a in outcome.actions if isinstance(a, CreateObject) and isinstance(a.obj, Pod)
    ]


def _deleted(outcome: Outcome) -> list[str]:
    return [a.name for a in outcome.actions if isinstance(a, DeleteObject)]


def _events(outcome: Outcome) -> list[tuple[str, str]]:
    return [(a.reason, a.message) for a in outcome.actions if isinstance(a, RecordEvent)]


def _status(outcome: Outcome) -> ReplicaSetStatus | None:
    for a in outcome.actions:
        if isinstance(a, UpdateStatus):
            assert isinstance(a.obj, ReplicaSet)
            return a.obj.status
    return None


def test_too_few_creates_pods_from_the_template() -> None:
    out = reconcile_replicaset(make_rs(3), [make_pod("a")], NOW)
    created = _creates(out)
    assert len(created) == 2
    for pod in created:
        assert pod.metadata.name is None
        assert pod.metadata.generate_name == "web-5d9f-"
        assert pod.metadata.namespace == "ns"
        assert pod.metadata.labels == LABELS
        assert pod.metadata.annotations == {"a": "b"}
        (ref,) = pod.metadata.owner_references or []
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
            "ReplicaSet", "web-5d9f", "rs-uid", True, True)  # fmt: skip
        assert pod.spec.containers[0].image == "img"
    assert _events(out) == [("SuccessfulCreate", "Created pod: web-5d9f-")] * 2


def test_too_many_deletes_with_events() -> None:
    pods = [make_pod(n, created=NOW - 1000 + i) for i, n in enumerate("abcd")]
    out = reconcile_replicaset(make_rs(2), pods, NOW)
    assert _deleted(out) == ["d", "c"]  # newest first, all else equal
    assert ("SuccessfulDelete", "Deleted pod: d") in _events(out)
    delete = next(a for a in out.actions if isinstance(a, DeleteObject))
    assert (delete.group, delete.kind, delete.namespace, delete.uid) == ("", "Pod", "ns", "uid-d")


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        (make_pod("x", node=None, phase="Pending"), make_pod("y"), "unassigned before assigned"),
        (make_pod("x", phase="Pending"), make_pod("y", phase="Unknown"), "Pending before Unknown"),
        (make_pod("x", phase="Unknown"), make_pod("y"), "Unknown before Running"),
        (make_pod("x", ready=False), make_pod("y"), "not ready before ready"),
        (make_pod("x", cost=-5), make_pod("y"), "lower deletion cost first"),
        (
            make_pod("x", ready_at=NOW - 10),
            make_pod("y", ready_at=NOW - 50),
            "ready more recently first",
        ),
        (make_pod("x", restarts=4), make_pod("y", restarts=1), "more restarts first"),
        (make_pod("x", created=NOW - 5), make_pod("y", created=NOW - 50), "newer first"),
    ],
)
def test_deletion_ranking_pairs(first: Pod, second: Pod, why: str) -> None:
    assert [p.metadata.name for p in pods_to_delete([second, first], 1)] == ["x"], why
    assert [p.metadata.name for p in pods_to_delete([first, second], 1)] == ["x"], why


def test_deletion_prefers_pods_doubled_up_on_a_node() -> None:
    pods = [make_pod("a", node="n1"), make_pod("b", node="n2"), make_pod("c", node="n2")]
    assert {p.metadata.name for p in pods_to_delete(pods, 2)} == {"b", "c"}


def test_terminating_failed_and_foreign_pods_do_not_count() -> None:
    pods = [
        make_pod("ok"),
        make_pod("gone", deleting=True),
        make_pod("dead", phase="Failed"),
        make_pod("other", owner_uid="someone-else"),
        make_pod("orphan", owner_uid=None),
    ]
    out = reconcile_replicaset(make_rs(2), pods, NOW)
    assert len(_creates(out)) == 1
    assert _deleted(out) == []
    status = _status(out)
    assert status is not None and status.replicas == 1


def test_status_counts_ready_available_and_fully_labeled() -> None:
    pods = [
        make_pod("a", ready_at=NOW - 100),
        make_pod("b", ready_at=NOW - 5),  # ready, not yet for 30 s
        make_pod("c", ready=False),
        make_pod("d", labels={"app": "web"}),  # matched by the owner ref, labels drifted
    ]
    out = reconcile_replicaset(make_rs(4, min_ready=30, generation=7), pods, NOW)
    status = _status(out)
    assert status is not None
    assert (status.replicas, status.fully_labeled_replicas, status.ready_replicas,
            status.available_replicas, status.observed_generation) == (4, 3, 3, 2, 7)  # fmt: skip
    assert out.requeue_after is not None and 25 < out.requeue_after <= 25.01


def test_available_exactly_at_min_ready_seconds_is_not_yet() -> None:
    out = reconcile_replicaset(make_rs(1, min_ready=30), [make_pod("a", ready_at=NOW - 30)], NOW)
    status = _status(out)
    assert status is not None and status.available_replicas == 0
    assert out.requeue_after is not None and 0 < out.requeue_after < 1


def test_status_written_only_when_it_changes() -> None:
    view = View(make_rs(2), {"a": make_pod("a"), "b": make_pod("b")})
    first = view.reconcile()
    assert [type(a) for a in first.actions] == [UpdateStatus]
    view.apply(first)
    assert view.reconcile().actions == ()


def test_a_replicaset_being_deleted_only_reports_status() -> None:
    out = reconcile_replicaset(make_rs(3, deleting=True), [], NOW)
    assert _creates(out) == [] and _deleted(out) == []


def test_creates_are_capped_per_sync() -> None:
    view = View(make_rs(BURST_REPLICAS + 3))
    out = view.reconcile()
    assert len(_creates(out)) == BURST_REPLICAS
    view.apply(out)
    assert len(_creates(view.reconcile())) == 3


pod_specs = st.lists(
    st.fixed_dictionaries({
        "phase": st.sampled_from(["Pending", "Running", "Unknown", "Failed", "Succeeded"]),
        "ready": st.booleans(),
        "node": st.sampled_from([None, "n1", "n2"]),
        "deleting": st.booleans(),
        "restarts": st.integers(0, 5),
        "age": st.integers(0, 500),
        "mine": st.booleans(),
    }),
    max_size=12,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(pod_specs, st.integers(0, 8), st.integers(0, 3))
def test_converges_to_replicas_then_idles(
    specs: list[dict[str, object]], replicas: int, rounds: int
) -> None:
    pods = {}
    for i, spec in enumerate(specs):
        name = f"p{i}"
        pods[name] = make_pod(
            name, owner_uid="rs-uid" if spec["mine"] else "x", phase=str(spec["phase"]),
            ready=bool(spec["ready"]), node=str(spec["node"]) if spec["node"] else None,
            deleting=bool(spec["deleting"]), restarts=int(str(spec["restarts"])),
            created=NOW - int(str(spec["age"])),
        )  # fmt: skip
    view = View(make_rs(replicas, min_ready=rounds * 10), pods)
    first = view.reconcile()
    assert first == view.reconcile(), "same view, same decision"
    view.apply(first)
    second = view.reconcile()
    assert [a for a in second.actions if not isinstance(a, UpdateStatus)] == []
    view.apply(second)
    assert view.reconcile().actions == ()
    active = [p for p in view.pods.values()
              if p.metadata.owner_references and p.metadata.owner_references[0].uid == "rs-uid"
              and p.metadata.deletion_timestamp is None
              and p.status and p.status.phase not in ("Failed", "Succeeded")]  # fmt: skip
    assert len(active) == replicas
    assert view.rs.status is not None and view.rs.status.replicas == replicas
