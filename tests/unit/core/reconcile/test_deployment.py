"""Deployment reconcile: new ReplicaSets, rollouts, scaling, history, status, idempotence.

Most scenarios run a tiny in-memory cluster (``Cluster``): each step the
"kubelet" removes terminating pods and makes running pods ready, then the
Deployment reconcile and every ReplicaSet reconcile run and their actions are
applied, the way the runner would apply them.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers every kind)
from meshwork.core.reconcile import (
    CreateObject,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.deployment import reconcile_deployment
from meshwork.core.reconcile.deployment_rollout import fenceposts
from meshwork.core.reconcile.podtemplate import (
    compute_hash,
    fnv32a,
    is_available,
    parse_time,
    rfc3339,
    safe_encode,
)
from meshwork.core.reconcile.replicaset import reconcile_replicaset
from meshwork.model.pod import Pod, PodStatus
from meshwork.model.workloads import Deployment, ReplicaSet

NOW = 1_700_000_000.0


def make_deploy(
    replicas: int = 3, image: str = "v1", *, strategy: dict[str, Any] | None = None,
    min_ready: int | None = None, paused: bool | None = None, history: int | None = None,
    deadline: int | None = None,
) -> Deployment:  # fmt: skip
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
    }  # fmt: skip
    for key, value in (("strategy", strategy), ("minReadySeconds", min_ready), ("paused", paused),
                       ("revisionHistoryLimit", history), ("progressDeadlineSeconds", deadline)):  # fmt: skip
        if value is not None:
            spec[key] = value
    return Deployment.model_validate({
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1},
        "spec": spec,
    })  # fmt: skip


def rolling(surge: int | str, unavailable: int | str) -> dict[str, Any]:
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


def _spec_update(deploy: Deployment, **changes: Any) -> Deployment:
    """What a client's update does: a new spec, generation + 1 (the API server's bump)."""
    wire = deploy.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key, value in changes.items():
        if key == "image":
            wire["spec"]["template"]["spec"]["containers"][0]["image"] = value
        else:
            wire["spec"][key] = value
    wire["metadata"]["generation"] += 1
    return Deployment.model_validate(wire)


class Cluster:
    """An in-memory apiserver + kubelet + both controllers, one step at a time."""

    def __init__(
        self, deploy: Deployment, *, broken: frozenset[str] = frozenset(), startup: float = 0.0
    ) -> None:
        self.t = NOW
        self.deploy = deploy
        self.rss: dict[str, ReplicaSet] = {}
        self.pods: dict[str, Pod] = {}
        self.events: list[str] = []
        self.broken = broken  # images whose pods never become ready
        self.startup = startup  # seconds from creation until a pod turns ready
        self.counter = itertools.count()
        self.requeue: float | None = None

    # -- the API server -------------------------------------------------------
    def apply(self, outcome: Outcome) -> None:
        for a in outcome.actions:
            if isinstance(a, RecordEvent):
                self.events.append(a.message)
            elif isinstance(a, CreateObject) and isinstance(a.obj, ReplicaSet):
                name = a.obj.metadata.name or ""
                assert name not in self.rss
                meta = a.obj.metadata.model_copy(update={
                    "uid": f"uid-{name}", "generation": 1, "creation_timestamp": rfc3339(self.t)})  # fmt: skip
                self.rss[name] = a.obj.model_copy(update={"metadata": meta})
            elif isinstance(a, CreateObject) and isinstance(a.obj, Pod):
                name = f"{a.obj.metadata.generate_name}{next(self.counter):05d}"
                meta = a.obj.metadata.model_copy(update={
                    "name": name, "uid": f"uid-{name}", "creation_timestamp": rfc3339(self.t)})  # fmt: skip
                status = PodStatus(phase="Running")
                self.pods[name] = a.obj.model_copy(update={"metadata": meta, "status": status})
            elif isinstance(a, UpdateObject) and isinstance(a.obj, ReplicaSet):
                old = self.rss[a.obj.metadata.name or ""]
                gen = (old.metadata.generation or 0) + (a.obj.spec != old.spec)
                meta = a.obj.metadata.model_copy(update={"generation": gen})
                self.rss[old.metadata.name or ""] = a.obj.model_copy(
                    update={"metadata": meta, "status": old.status}
                )
            elif isinstance(a, UpdateObject) and isinstance(a.obj, Deployment):
                self.deploy = self.deploy.model_copy(update={"metadata": a.obj.metadata})
            elif isinstance(a, UpdateStatus) and isinstance(a.obj, Deployment):
                self.deploy = self.deploy.model_copy(update={"status": a.obj.status})
            elif isinstance(a, UpdateStatus) and isinstance(a.obj, ReplicaSet):
                name = a.obj.metadata.name or ""
                self.rss[name] = self.rss[name].model_copy(update={"status": a.obj.status})
            elif isinstance(a, DeleteObject) and a.kind == "ReplicaSet":
                assert self.rss[a.name].metadata.uid == a.uid
                del self.rss[a.name]
                for pod in list(self.pods.values()):  # garbage collection
                    if (pod.metadata.owner_references or [])[0].uid == a.uid:
                        self._terminate(pod)
            elif isinstance(a, DeleteObject) and a.kind == "Pod":
                assert self.pods[a.name].metadata.uid == a.uid
                self._terminate(self.pods[a.name])
            else:  # pragma: no cover - a new action kind the test does not know
                raise AssertionError(a)

    def _terminate(self, pod: Pod) -> None:
        meta = pod.metadata.model_copy(update={"deletion_timestamp": rfc3339(self.t)})
        self.pods[pod.metadata.name or ""] = pod.model_copy(update={"metadata": meta})

    # -- the kubelet ------------------------------------------------------------
    def kubelet(self) -> None:
        for name, pod in list(self.pods.items()):
            if pod.metadata.deletion_timestamp is not None:
                del self.pods[name]
            elif (
                self._starting(pod)
                and self.t - (parse_time(pod.metadata.creation_timestamp) or 0) >= self.startup
            ):
                status = PodStatus.model_validate({"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(self.t)}]})  # fmt: skip
                self.pods[name] = pod.model_copy(update={"status": status})

    def _starting(self, pod: Pod) -> bool:
        return pod.spec.containers[0].image not in self.broken and not self._ready(pod)

    @staticmethod
    def _ready(pod: Pod) -> bool:
        return any(
            c.type == "Ready" and c.status == "True"
            for c in (pod.status and pod.status.conditions) or ()
        )

    # -- the controllers --------------------------------------------------------
    def reconcile_deployment(self) -> Outcome:
        return reconcile_deployment(
            self.deploy, list(self.rss.values()), list(self.pods.values()), self.t
        )

    def reconcile_rs(self) -> list[Outcome]:
        pods = list(self.pods.values())
        return [reconcile_replicaset(rs, pods, self.t) for rs in list(self.rss.values())]

    def step(self, dt: float = 1.0) -> bool:
        """One round; True when anything was done."""
        self.t += dt
        self.kubelet()
        outs = [self.reconcile_deployment()]
        self.apply(outs[0])
        for rs_out in self.reconcile_rs():
            self.apply(rs_out)
            outs.append(rs_out)
        waits = [o.requeue_after for o in outs if o.requeue_after is not None]
        self.requeue = min(waits) if waits else None
        return any(o.actions for o in outs)

    def settle(self, limit: int = 60) -> int:
        """Step until nothing is done, nothing is pending and no requeue is asked for."""
        dt = 1.0
        for n in range(limit):
            if not self.step(dt) and not self._pending_kubelet_work():
                if self.requeue is None:
                    return n
                dt = self.requeue  # the runner's timer: wake when the controller asked
            else:
                dt = 1.0
        raise AssertionError(f"no convergence in {limit} steps; events: {self.events}")

    def _pending_kubelet_work(self) -> bool:
        return any(
            p.metadata.deletion_timestamp is not None or self._starting(p)
            for p in self.pods.values()
        )

    def quiet(self) -> bool:
        return not self.reconcile_deployment().actions and not any(
            o.actions for o in self.reconcile_rs()
        )

    # -- observations -----------------------------------------------------------
    def scaling(self) -> list[str]:
        """The ScalingReplicaSet messages, in order."""
        return [e for e in self.events if e.startswith("Scaled ")]

    def live_pods(self, image: str | None = None) -> list[Pod]:
        return [p for p in self.pods.values() if p.metadata.deletion_timestamp is None
                and (image is None or p.spec.containers[0].image == image)]  # fmt: skip

    def available(self) -> int:
        min_ready = self.deploy.spec.min_ready_seconds or 0
        return sum(is_available(p, min_ready, self.t) for p in self.live_pods())

    def rs_for(self, image: str) -> ReplicaSet:
        (rs,) = [
            r
            for r in self.rss.values()
            if r.spec.template and r.spec.template.spec.containers[0].image == image
        ]
        return rs

    def condition(self, kind: str) -> tuple[str, str | None]:
        for c in (self.deploy.status and self.deploy.status.conditions) or ():
            if c.type == kind:
                return c.status, c.reason
        raise AssertionError(f"no {kind} condition")


def running(deploy: Deployment) -> Cluster:
    cluster = Cluster(deploy)
    cluster.settle()
    assert cluster.quiet()
    return cluster


# ---------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"), [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)]
)
def test_fnv32a_reference_vectors(data: bytes, expected: int) -> None:
    assert fnv32a(data) == expected


def test_safe_encode_maps_digits_like_upstream() -> None:
    assert safe_encode("0123456789") == "456789bcdf"


def test_pod_template_hash_is_stable_and_sensitive() -> None:
    a, b = make_deploy(image="v1").spec.template, make_deploy(image="v2").spec.template
    assert compute_hash(a) == compute_hash(make_deploy(image="v1").spec.template)
    assert compute_hash(a) != compute_hash(b)
    assert compute_hash(a) != compute_hash(a, 1) != compute_hash(a, 2)
    assert set(compute_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (10, "25%", "25%", (3, 2)),  # surge rounds up, unavailable down
        (3, "25%", "25%", (1, 0)),
        (5, "10%", "10%", (1, 0)),
        (3, 0, "10%", (0, 1)),  # both resolve to 0: unavailable becomes 1
        (4, "50%", 1, (2, 1)),
        (7, 2, "100%", (2, 7)),
    ],
)
def test_fenceposts(
    replicas: int, surge: int | str, unavailable: int | str, expected: tuple[int, int]
) -> None:
    assert fenceposts(make_deploy(replicas, strategy=rolling(surge, unavailable))) == expected


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def test_fresh_deployment_creates_its_replicaset() -> None:
    deploy = make_deploy(3)
    out = reconcile_deployment(deploy, [], [], NOW)
    (create,) = [a for a in out.actions if isinstance(a, CreateObject)]
    rs = create.obj
    assert isinstance(rs, ReplicaSet)
    pod_hash = compute_hash(deploy.spec.template)
    assert rs.metadata.name == f"web-{pod_hash}"
    assert rs.metadata.labels == {"app": "web", "pod-template-hash": pod_hash}
    assert rs.spec.selector.match_labels == {"app": "web", "pod-template-hash": pod_hash}
    assert rs.spec.template is not None and rs.spec.template.metadata.labels == rs.metadata.labels
    assert rs.spec.replicas == 3
    assert rs.metadata.annotations == {
        "deployment.kubernetes.io/revision": "1",
        "deployment.kubernetes.io/desired-replicas": "3",
        "deployment.kubernetes.io/max-replicas": "4",  # 25% of 3 rounds up to 1
    }
    (ref,) = rs.metadata.owner_references or []
    assert (ref.kind, ref.uid, ref.controller, ref.block_owner_deletion) == (
        "Deployment",
        "d-uid",
        True,
        True,
    )
    events = [a.message for a in out.actions if isinstance(a, RecordEvent)]
    assert events == [f"Scaled up replica set web-{pod_hash} to 3"]
    status = next(
        a.obj.status
        for a in out.actions
        if isinstance(a, UpdateStatus) and isinstance(a.obj, Deployment)
    )
    assert status is not None and status.conditions is not None
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason, progressing.message) == (
        "True", "NewReplicaSetCreated", f'Created new replica set "web-{pod_hash}"')  # fmt: skip
    revision = [
        a.obj for a in out.actions if isinstance(a, UpdateObject) and isinstance(a.obj, Deployment)
    ]
    assert (
        revision
        and (revision[0].metadata.annotations or {})["deployment.kubernetes.io/revision"] == "1"
    )


def test_settled_deployment_reports_complete_status() -> None:
    cluster = running(make_deploy(3))
    status = cluster.deploy.status
    assert status is not None
    assert (status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas,
            status.unavailable_replicas, status.observed_generation) == (3, 3, 3, 3, 0, 1)  # fmt: skip
    assert cluster.condition("Available") == ("True", "MinimumReplicasAvailable")
    assert cluster.condition("Progressing") == ("True", "NewReplicaSetAvailable")
    assert len(cluster.live_pods("v1")) == 3


def test_scale_up_and_down_name_the_sizes() -> None:
    cluster = running(make_deploy(3))
    name = cluster.rs_for("v1").metadata.name
    cluster.deploy = _spec_update(cluster.deploy, replicas=5)
    cluster.settle()
    assert f"Scaled up replica set {name} to 5 from 3" in cluster.scaling()
    cluster.deploy = _spec_update(cluster.deploy, replicas=2)
    cluster.settle()
    assert f"Scaled down replica set {name} to 2 from 5" in cluster.scaling()
    assert len(cluster.live_pods()) == 2 and cluster.quiet()
    assert (cluster.rs_for("v1").metadata.annotations or {})[
        "deployment.kubernetes.io/desired-replicas"
    ] == "2"


def test_rolling_update_surge_one_never_drops_availability() -> None:
    cluster = running(make_deploy(3, strategy=rolling(1, 0)))
    old = cluster.rs_for("v1").metadata.name
    cluster.events.clear()
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    for _ in range(40):
        busy = cluster.step()
        assert cluster.available() >= 3
        assert len(cluster.live_pods()) <= 4
        assert sum(rs.spec.replicas for rs in cluster.rss.values()) <= 4
        if not busy and not cluster._pending_kubelet_work():
            break
    new = cluster.rs_for("v2").metadata.name
    assert cluster.scaling() == [
        f"Scaled up replica set {new} to 1",
        f"Scaled down replica set {old} to 2 from 3",
        f"Scaled up replica set {new} to 2 from 1",
        f"Scaled down replica set {old} to 1 from 2",
        f"Scaled up replica set {new} to 3 from 2",
        f"Scaled down replica set {old} to 0 from 1",
    ]
    assert len(cluster.live_pods("v2")) == 3 and not cluster.live_pods("v1")
    assert cluster.quiet()
    assert (cluster.deploy.metadata.annotations or {})["deployment.kubernetes.io/revision"] == "2"


def test_rolling_update_with_percentages_scales_in_rounded_steps() -> None:
    # 10 replicas, 25%/25%: surge ceil(2.5)=3, unavailable floor(2.5)=2.
    cluster = running(make_deploy(10, strategy=rolling("25%", "25%")))
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    out = cluster.reconcile_deployment()
    (create,) = [a.obj for a in out.actions if isinstance(a, CreateObject)]
    assert isinstance(create, ReplicaSet) and create.spec.replicas == 3
    assert (create.metadata.annotations or {})["deployment.kubernetes.io/max-replicas"] == "13"
    scaled = [
        a.obj for a in out.actions if isinstance(a, UpdateObject) and isinstance(a.obj, ReplicaSet)
    ]
    assert [rs.spec.replicas for rs in scaled] == [
        8
    ]  # 13 total - 8 min available - 3 new unavailable
    cluster.apply(out)
    for _ in range(40):
        cluster.step()
        assert cluster.available() >= 8
        assert len(cluster.live_pods()) <= 13
    assert len(cluster.live_pods("v2")) == 10 and cluster.quiet()


def test_recreate_stops_old_pods_before_starting_new_ones() -> None:
    cluster = running(make_deploy(3, strategy={"type": "Recreate"}))
    old = cluster.rs_for("v1").metadata.name
    cluster.events.clear()
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    saw_gap = False
    for _ in range(20):
        cluster.step()
        old_alive = [p for p in cluster.pods.values() if p.spec.containers[0].image == "v1"]
        new_alive = cluster.live_pods("v2")
        assert not (old_alive and new_alive), "Recreate never runs old and new pods together"
        saw_gap = saw_gap or (not old_alive and not new_alive)
    new = cluster.rs_for("v2").metadata.name
    assert cluster.scaling() == [
        f"Scaled down replica set {old} to 0 from 3",
        f"Scaled up replica set {new} to 3",
    ]
    assert saw_gap and len(cluster.live_pods("v2")) == 3 and cluster.quiet()


def test_paused_deployment_scales_but_does_not_roll() -> None:
    cluster = running(make_deploy(3))
    cluster.deploy = _spec_update(cluster.deploy, paused=True)
    cluster.settle()
    assert cluster.condition("Progressing") == ("Unknown", "DeploymentPaused")
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    cluster.settle()
    assert not cluster.live_pods("v2") and len(cluster.rss) == 1
    cluster.deploy = _spec_update(cluster.deploy, replicas=4)
    cluster.settle()
    assert len(cluster.live_pods("v1")) == 4
    cluster.deploy = _spec_update(cluster.deploy, paused=False)
    cluster.step()
    # DeploymentResumed, then in the same sync the new ReplicaSet is created.
    assert cluster.condition("Progressing") == ("True", "NewReplicaSetCreated")
    cluster.settle()
    assert len(cluster.live_pods("v2")) == 4 and not cluster.live_pods("v1")
    assert cluster.condition("Progressing") == ("True", "NewReplicaSetAvailable")


def test_history_beyond_the_limit_is_cleaned_up() -> None:
    cluster = running(make_deploy(2, history=1))
    for image in ("v2", "v3", "v4"):
        cluster.deploy = _spec_update(cluster.deploy, image=image)
        cluster.settle()
    revisions = sorted((rs.metadata.annotations or {})["deployment.kubernetes.io/revision"]
                       for rs in cluster.rss.values())  # fmt: skip
    assert revisions == ["3", "4"]
    assert cluster.rs_for("v3").spec.replicas == 0 and cluster.rs_for("v4").spec.replicas == 2


def test_rollback_to_an_old_template_reuses_its_replicaset() -> None:
    cluster = running(make_deploy(2))
    first = cluster.rs_for("v1").metadata.name
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    cluster.settle()
    cluster.deploy = _spec_update(
        cluster.deploy, image="v1"
    )  # `rollout undo` writes the old template
    cluster.settle()
    assert len(cluster.rss) == 2
    rs = cluster.rs_for("v1")
    assert rs.metadata.name == first and rs.spec.replicas == 2
    annotations = rs.metadata.annotations or {}
    assert annotations["deployment.kubernetes.io/revision"] == "3"
    assert annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert (cluster.deploy.metadata.annotations or {})["deployment.kubernetes.io/revision"] == "3"
    assert len(cluster.live_pods("v1")) == 2 and not cluster.live_pods("v2")


def test_progress_deadline_exceeded_when_new_pods_never_become_ready() -> None:
    cluster = running(make_deploy(2, strategy=rolling(1, 0), deadline=30))
    cluster.broken = frozenset({"v2"})
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    cluster.step()
    assert cluster.condition("Progressing")[1] == "NewReplicaSetCreated"
    out = cluster.reconcile_deployment()
    assert out.requeue_after is not None and 0 < out.requeue_after <= 31
    for _ in range(40):
        cluster.step()
    assert cluster.condition("Progressing") == ("False", "ProgressDeadlineExceeded")
    name = cluster.rs_for("v2").metadata.name
    assert cluster.deploy.status is not None
    conditions = cluster.deploy.status.conditions or []
    message = next(c.message for c in conditions if c.type == "Progressing")
    assert message == f'ReplicaSet "{name}" has timed out progressing.'
    assert cluster.condition("Available") == ("True", "MinimumReplicasAvailable")
    assert len(cluster.live_pods("v1")) == 2, "maxUnavailable 0 keeps every old pod"
    assert cluster.quiet()


def test_min_ready_seconds_holds_the_rollout_until_pods_have_been_ready_long_enough() -> None:
    cluster = running(make_deploy(1, strategy=rolling(1, 0), min_ready=10))
    cluster.deploy = _spec_update(cluster.deploy, image="v2")
    for _ in range(5):
        cluster.step()
    assert cluster.rs_for("v1").spec.replicas == 1, "new pod ready for < 10 s is not available yet"
    out = cluster.reconcile_deployment()
    assert out.requeue_after is not None and out.requeue_after <= 10
    cluster.settle()
    assert len(cluster.live_pods("v2")) == 1 and cluster.rs_for("v1").spec.replicas == 0


def test_hash_collision_bumps_collision_count() -> None:
    deploy = make_deploy(1)
    squatter = ReplicaSet.model_validate({
        "metadata": {"name": f"web-{compute_hash(deploy.spec.template)}", "namespace": "ns", "uid": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}},
    })  # fmt: skip
    out = reconcile_deployment(deploy, [squatter], [], NOW)
    (action,) = out.actions
    assert isinstance(action, UpdateStatus) and isinstance(action.obj, Deployment)
    status = action.obj.status
    assert status is not None and status.collision_count == 1
    deploy = deploy.model_copy(update={"status": status})
    out = reconcile_deployment(deploy, [squatter], [], NOW)
    (create,) = [a.obj for a in out.actions if isinstance(a, CreateObject)]
    assert create.metadata.name == f"web-{compute_hash(deploy.spec.template, 1)}"


def _owned_rs(
    name: str, image: str, replicas: int, created: float, desired: int, maximum: int
) -> ReplicaSet:
    return ReplicaSet.model_validate({
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": rfc3339(created),
                     "annotations": {"deployment.kubernetes.io/desired-replicas": str(desired),
                                     "deployment.kubernetes.io/max-replicas": str(maximum)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": "d-uid", "controller": True}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}},
    })  # fmt: skip


def test_resize_mid_rollout_is_proportional() -> None:
    # 10 replicas at 25% surge: 13 allowed; old 8 + new 5 mid-rollout. Resize to 20: 25 allowed.
    old = _owned_rs("web-old", "v1", 8, NOW - 100, 10, 13)
    new = _owned_rs("web-new", "v2", 5, NOW - 10, 10, 13)
    deploy = make_deploy(20, image="v2")
    out = reconcile_deployment(deploy, [old, new], [], NOW)
    updated = [a.obj for a in out.actions if isinstance(a, UpdateObject)]
    sizes = {rs.metadata.name: rs.spec.replicas for rs in updated if isinstance(rs, ReplicaSet)}
    assert sizes == {"web-old": 15, "web-new": 10}
    events = [a.message for a in out.actions if isinstance(a, RecordEvent)]
    assert events == [
        "Scaled up replica set web-old to 15 from 8",
        "Scaled up replica set web-new to 10 from 5",
    ]


# ---------------------------------------------------------------------------
# Property: a rolling update keeps its bounds and converges, then idles
# ---------------------------------------------------------------------------

bound = st.one_of(st.integers(0, 3), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), bound, bound, st.integers(1, 3), st.integers(0, 3))
def test_rolling_update_bounds_and_convergence(replicas: int, surge: int | str, unavailable: int | str,
                                               updates: int, startup: int) -> None:  # fmt: skip
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1  # both zero is refused by the model
    deploy = make_deploy(replicas, strategy=rolling(surge, unavailable))
    max_surge, max_unavailable = fenceposts(deploy)
    max_unavailable = min(max_unavailable, replicas)
    cluster = running(deploy)
    cluster.startup = startup
    for version in range(2, 2 + updates):
        image = f"v{version}"
        cluster.deploy = _spec_update(cluster.deploy, image=image)
        for _ in range(80):
            out = cluster.reconcile_deployment()
            assert out == cluster.reconcile_deployment(), "same view, same decision"
            cluster.apply(out)
            assert sum(rs.spec.replicas for rs in cluster.rss.values()) <= replicas + max_surge
            for rs_out in cluster.reconcile_rs():
                cluster.apply(rs_out)
            assert cluster.available() >= replicas - max_unavailable
            assert len(cluster.live_pods()) <= replicas + max_surge
            cluster.t += 1
            cluster.kubelet()
            if cluster.quiet() and not cluster._pending_kubelet_work():
                break
        else:
            raise AssertionError(f"no convergence: {cluster.events}")
        assert len(cluster.live_pods(image)) == replicas == len(cluster.live_pods())
        active = [rs for rs in cluster.rss.values() if rs.spec.replicas]
        assert [rs.spec.template.spec.containers[0].image for rs in active if rs.spec.template] == [
            image
        ]
        status = cluster.deploy.status
        assert (
            status is not None and status.updated_replicas == status.available_replicas == replicas
        )
        assert cluster.condition("Progressing") == ("True", "NewReplicaSetAvailable")
