"""The Deployment controller's decision: which ReplicaSets exist, their sizes, and the status.

What lives here: ``reconcile_deployment`` (kube-controller-manager's
``syncDeployment``: the paused, scaling, Recreate and RollingUpdate paths),
finding or creating the new ReplicaSet (``pod-template-hash`` name, revision
annotations, rollback as "an old template is the new one again"), history
cleanup, and the status with its Available and Progressing conditions.

What must not: the replica arithmetic of a rollout (``deployment_rollout``),
template hashing and pod-state questions (``podtemplate``), I/O or a clock.

Differences from upstream, on purpose:

* Pod counts (replicas, ready, available) come from the pods in the view,
  grouped by their controlling ReplicaSet, rather than from the ReplicaSets'
  own status, so a rollout never acts on counts one ReplicaSet sync old.
* No adoption of orphan ReplicaSets; only those this Deployment controls.
* The Deployment's own ``deployment.kubernetes.io/revision`` annotation is
  written with an ``UpdateObject`` placed after the ``UpdateStatus`` (both
  carry the same resourceVersion, so the second may meet a 409 and be redone
  on the next sync, as the contract intends).
* No ReplicaFailure condition (it reports pod-creation errors, which the
  ReplicaSet controller's runner sees, not this pure function).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.deployment_rollout import (
    Plan,
    PlannedRS,
    is_scaling_event,
    max_unavailable,
    new_rs_replicas,
    old_pods_running,
    reconcile_new_rs,
    reconcile_old_rss,
    scale_and_record,
    scale_deployment,
    scale_down_old_for_recreate,
    set_replicas_annotations,
)
from meshwork.core.reconcile.podtemplate import (
    POD_TEMPLATE_HASH_LABEL,
    available_after,
    compute_hash,
    controller_of,
    controller_ref,
    is_active,
    is_controlled_by,
    is_ready,
    parse_time,
    phase_of,
    rfc3339,
    templates_equal_ignoring_hash,
    with_label,
)
from meshwork.model.base import ObjectMeta
from meshwork.model.pod import LabelSelector, Pod
from meshwork.model.workloads import (
    Deployment,
    DeploymentStatus,
    ReplicaSet,
    ReplicaSetSpec,
    WorkloadCondition,
)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
# Annotations of the Deployment that are its own and never copied to its ReplicaSets.
_NOT_COPIED = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})  # fmt: skip
MAX_REV_HISTORY_CHARS = 2000  # kube-controller-manager's default cap on revision-history
NO_LIMIT = 2**31 - 1  # math.MaxInt32: "no progress deadline" / "keep all history" upstream
_JUST_AFTER = 0.001  # the deadline passes strictly after lastUpdateTime + seconds (Before)

# Condition types and reasons (k8s.io/kubernetes/pkg/controller/deployment/util).
AVAILABLE, PROGRESSING = "Available", "Progressing"
MIN_AVAILABLE, MIN_UNAVAILABLE = "MinimumReplicasAvailable", "MinimumReplicasUnavailable"
NEW_RS_CREATED, FOUND_NEW_RS = "NewReplicaSetCreated", "FoundNewReplicaSet"
RS_UPDATED, NEW_RS_AVAILABLE = "ReplicaSetUpdated", "NewReplicaSetAvailable"
TIMED_OUT, PAUSED, RESUMED = "ProgressDeadlineExceeded", "DeploymentPaused", "DeploymentResumed"


def revision_of(rs: ReplicaSet) -> int:
    """The ReplicaSet's revision annotation (0 when absent or not a number)."""
    try:
        return int((rs.metadata.annotations or {}).get(REVISION_ANNOTATION, ""))
    except ValueError:
        return 0


def deployment_ref(deploy: Deployment) -> ObjectRef:
    meta = deploy.metadata
    return ObjectRef("apps", "Deployment", meta.namespace, meta.name or "", meta.uid)


def _has_deadline(deploy: Deployment) -> bool:
    seconds = deploy.spec.progress_deadline_seconds
    return seconds is not None and seconds != NO_LIMIT


# ---------------------------------------------------------------------------
# Conditions (SetDeploymentCondition and friends)
# ---------------------------------------------------------------------------


def _get(conds: list[WorkloadCondition], kind: str) -> WorkloadCondition | None:
    return next((c for c in conds if c.type == kind), None)


def _condition(kind: str, status: str, reason: str, message: str, now: float) -> WorkloadCondition:
    stamp = rfc3339(now)
    return WorkloadCondition.model_validate({"type": kind, "status": status, "reason": reason,
        "message": message, "lastUpdateTime": stamp, "lastTransitionTime": stamp})  # fmt: skip


def _set(conds: list[WorkloadCondition], cond: WorkloadCondition) -> None:
    """Same status and reason: keep the old one untouched. Same status: keep its transition time."""
    current = _get(conds, cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return
    if current is not None and current.status == cond.status:
        cond.last_transition_time = current.last_transition_time
    conds[:] = [c for c in conds if c.type != cond.type] + [cond]


def _remove(conds: list[WorkloadCondition], kind: str) -> None:
    conds[:] = [c for c in conds if c.type != kind]


# ---------------------------------------------------------------------------
# One sync
# ---------------------------------------------------------------------------


class _Sync:
    """The plan plus what one sync writes besides ReplicaSet sizes."""

    def __init__(
        self, deploy: Deployment, replicasets: list[ReplicaSet], pods: list[Pod], now: float
    ):
        self.deploy = deploy
        self.now = now
        self.namespace_rs_names = {rs.metadata.name for rs in replicasets
                                   if rs.metadata.namespace == deploy.metadata.namespace}  # fmt: skip
        status = deploy.status or DeploymentStatus()
        self.conds = [c.model_copy() for c in status.conditions or ()]
        self.collision_count = status.collision_count
        self.deploy_revision = (deploy.metadata.annotations or {}).get(REVISION_ANNOTATION)
        self.deletes: list[PlannedRS] = []
        self.waits: list[float] = []
        self.plan = Plan(deploy, now, deployment_ref(deploy))
        self._build(replicasets, pods)

    def _build(self, replicasets: list[ReplicaSet], pods: list[Pod]) -> None:
        by_uid: dict[str, list[Pod]] = defaultdict(list)
        for pod in pods:
            ref = controller_of(pod)
            if ref is not None and pod.metadata.namespace == self.deploy.metadata.namespace:
                by_uid[ref.uid].append(pod)
        min_ready = self.deploy.spec.min_ready_seconds or 0
        planned = []
        for rs in replicasets:
            if not is_controlled_by(rs, self.deploy):
                continue
            p = PlannedRS(
                rs, rs.spec.replicas, dict(rs.metadata.annotations or {}), rs.spec.min_ready_seconds
            )
            for pod in by_uid.get(rs.metadata.uid or "", ()):
                p.running += phase_of(pod) not in ("Succeeded", "Failed")
                if not is_active(pod):
                    continue
                p.actual += 1
                p.ready += is_ready(pod)
                wait = available_after(pod, min_ready, self.now)
                p.available += wait == 0.0
                if wait:
                    self.waits.append(wait)
            planned.append(p)
        planned.sort(key=PlannedRS.sort_key)
        template = self.deploy.spec.template
        # FindNewReplicaSet: the oldest whose template equals ours, ignoring the hash label.
        self.plan.new = next((p for p in planned if p.obj.spec.template is not None
                              and templates_equal_ignoring_hash(p.obj.spec.template, template)), None)  # fmt: skip
        self.plan.old = [p for p in planned if p is not self.plan.new]

    # -- the new ReplicaSet -------------------------------------------------

    def _next_revision(self) -> str:
        return str(max((revision_of(p.obj) for p in self.plan.old), default=0) + 1)

    def _copy_annotations(self, rs: PlannedRS) -> bool:
        changed = False
        for key, value in (self.deploy.metadata.annotations or {}).items():
            if key not in _NOT_COPIED and rs.annotations.get(key) != value:
                rs.annotations[key] = value
                changed = True
        return changed

    def _set_new_rs_annotations(self, rs: PlannedRS, revision: str, *, exists: bool) -> bool:
        """Upstream ``SetNewReplicaSetAnnotations``: copy, revision (+history on rollback), sizes."""
        changed = self._copy_annotations(rs)
        old_text = rs.annotations.get(REVISION_ANNOTATION)
        try:
            old = int(old_text) if old_text else 0
        except ValueError:
            return False
        if old < int(revision):
            rs.annotations[REVISION_ANNOTATION] = revision
            changed = True
            if old_text:
                history = [
                    h for h in rs.annotations.get(REVISION_HISTORY_ANNOTATION, "").split(",") if h
                ]
                history.append(old_text)
                while len(",".join(history)) > MAX_REV_HISTORY_CHARS and len(history) > 1:
                    history.pop(0)
                rs.annotations[REVISION_HISTORY_ANNOTATION] = ",".join(history)
        if not exists:
            changed = set_replicas_annotations(self.plan, rs) or changed
        return changed

    def sync_existing_new(self) -> None:
        """The new ReplicaSet exists: bring its revision and minReadySeconds up to date."""
        rs = self.plan.new
        if rs is None:
            return
        updated = self._set_new_rs_annotations(rs, self._next_revision(), exists=True)
        if (rs.min_ready_seconds or 0) != (self.deploy.spec.min_ready_seconds or 0):
            rs.min_ready_seconds = self.deploy.spec.min_ready_seconds
            updated = True
        if updated:  # upstream returns right after updating the ReplicaSet
            return
        self.deploy_revision = rs.annotations.get(REVISION_ANNOTATION)
        if _has_deadline(self.deploy) and _get(self.conds, PROGRESSING) is None:
            _set(self.conds, _condition(PROGRESSING, "True", FOUND_NEW_RS,
                                        f'Found new replica set "{rs.name}"', self.now))  # fmt: skip

    def create_new(self) -> bool:
        """Create the new ReplicaSet; False on a name collision (collisionCount is bumped)."""
        d = self.deploy
        template = d.spec.template
        pod_hash = compute_hash(template, self.collision_count)
        name = f"{d.metadata.name}-{pod_hash}"
        if name in self.namespace_rs_names:
            self.collision_count = (self.collision_count or 0) + 1
            return False
        labels = with_label(template.metadata.labels, POD_TEMPLATE_HASH_LABEL, pod_hash)
        new_template = template.model_copy(deep=True)
        new_template.metadata = new_template.metadata.model_copy(update={"labels": labels})
        selector = LabelSelector(  # CloneSelectorAndAddLabel
            match_labels=with_label(
                d.spec.selector.match_labels, POD_TEMPLATE_HASH_LABEL, pod_hash
            ),
            match_expressions=[e.model_copy() for e in d.spec.selector.match_expressions or ()]
            or None,
        )
        obj = ReplicaSet(
            metadata=ObjectMeta(
                name=name,
                namespace=d.metadata.namespace,
                labels=dict(labels),
                owner_references=[controller_ref(d)],
            ),
            spec=ReplicaSetSpec(
                replicas=0,
                min_ready_seconds=d.spec.min_ready_seconds,
                selector=selector,
                template=new_template,
            ),
        )
        rs = PlannedRS(obj, 0, {}, d.spec.min_ready_seconds, created=True)
        self.plan.new = rs
        rs.replicas = new_rs_replicas(self.plan, rs)
        revision = self._next_revision()
        self._set_new_rs_annotations(rs, revision, exists=False)
        if rs.replicas > 0:
            self.plan.events.append(RecordEvent(self.plan.about, "Normal", "ScalingReplicaSet",
                                                f"Scaled up replica set {name} to {rs.replicas}"))  # fmt: skip
        if _has_deadline(d):
            _set(self.conds, _condition(PROGRESSING, "True", NEW_RS_CREATED,
                                        f'Created new replica set "{name}"', self.now))  # fmt: skip
        self.deploy_revision = revision
        return True

    # -- paused conditions and cleanup --------------------------------------

    def check_paused_conditions(self) -> None:
        if not _has_deadline(self.deploy):
            return
        cond = _get(self.conds, PROGRESSING)
        if cond is not None and cond.reason == TIMED_OUT:
            return
        paused_cond = cond is not None and cond.reason == PAUSED
        if self.deploy.spec.paused and not paused_cond:
            _set(
                self.conds,
                _condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", self.now),
            )
        elif not self.deploy.spec.paused and paused_cond:
            _set(
                self.conds,
                _condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", self.now),
            )

    def cleanup(self) -> None:
        """Delete the oldest ReplicaSets beyond revisionHistoryLimit that have no pods left."""
        limit = self.deploy.spec.revision_history_limit
        if limit is None or limit == NO_LIMIT:
            return
        cleanable = [p for p in self.plan.old if p.obj.metadata.deletion_timestamp is None]
        excess = len(cleanable) - limit
        if excess <= 0:
            return
        cleanable.sort(key=lambda p: (revision_of(p.obj), p.sort_key()))
        for p in cleanable[:excess]:
            status = p.obj.status
            behind = (p.obj.metadata.generation or 0) > (
                (status.observed_generation if status else None) or 0
            )
            if (
                (status.replicas if status else 0)
                or p.actual
                or p.stored_replicas
                or p.replicas
                or behind
            ):
                continue
            self.deletes.append(p)

    # -- status ---------------------------------------------------------------

    def _complete(self, status: DeploymentStatus) -> bool:
        """Upstream ``DeploymentComplete``."""
        want = self.plan.replicas
        return ((status.updated_replicas or 0) == want and (status.replicas or 0) == want
                and (status.available_replicas or 0) == want
                and (status.observed_generation or 0) >= (self.deploy.metadata.generation or 0))  # fmt: skip

    def stored_complete(self) -> bool:
        return self._complete(self.deploy.status or DeploymentStatus())

    def _calculate_status(self) -> DeploymentStatus:
        plan = self.plan
        everything = plan.all()
        available = sum(p.available for p in everything)
        total = sum(p.replicas for p in everything)
        if available >= plan.replicas - max_unavailable(self.deploy):
            cond = _condition(
                AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", self.now
            )
        else:
            cond = _condition(AVAILABLE, "False", MIN_UNAVAILABLE,
                              "Deployment does not have minimum availability.", self.now)  # fmt: skip
        _set(self.conds, cond)
        old = self.deploy.status or DeploymentStatus()
        return DeploymentStatus(
            observed_generation=self.deploy.metadata.generation,
            replicas=sum(p.actual for p in everything),
            updated_replicas=plan.new.actual if plan.new else 0,
            ready_replicas=sum(p.ready for p in everything),
            available_replicas=available,
            unavailable_replicas=max(total - available, 0),
            terminating_replicas=old.terminating_replicas,
            collision_count=self.collision_count,
            conditions=self.conds,
        )

    def _progressing(self, new: DeploymentStatus) -> bool:
        """Upstream ``DeploymentProgressing``: more updated, fewer old, more ready or available."""
        old = self.deploy.status or DeploymentStatus()
        old_old = (old.replicas or 0) - (old.updated_replicas or 0)
        new_old = (new.replicas or 0) - (new.updated_replicas or 0)
        return ((new.updated_replicas or 0) > (old.updated_replicas or 0) or new_old < old_old
                or (new.ready_replicas or 0) > (old.ready_replicas or 0)
                or (new.available_replicas or 0) > (old.available_replicas or 0))  # fmt: skip

    def _deadline_left(self) -> float | None:
        """Seconds until the Progressing condition's deadline passes (None: no deadline runs)."""
        cond = _get(self.conds, PROGRESSING)
        if (
            cond is None
            or cond.reason in (NEW_RS_AVAILABLE, TIMED_OUT)
            or not _has_deadline(self.deploy)
        ):
            return None
        since = parse_time(cond.last_update_time) or 0.0
        return since + (self.deploy.spec.progress_deadline_seconds or 0) - self.now

    def _sync_progress(self, new: DeploymentStatus) -> float | None:
        """Upstream ``syncRolloutStatus``'s Progressing logic; returns the stuck-requeue delay."""
        has_deadline = _has_deadline(self.deploy)
        if not has_deadline:
            _remove(self.conds, PROGRESSING)
        current = _get(self.conds, PROGRESSING)
        done = (new.replicas or 0) == (new.updated_replicas or 0) and current is not None \
            and current.reason == NEW_RS_AVAILABLE  # fmt: skip
        subject = f'ReplicaSet "{self.plan.new.name}"' if self.plan.new else \
            f'Deployment "{self.deploy.metadata.name}"'  # fmt: skip
        if has_deadline and not done:
            if self._complete(new):
                _set(self.conds, _condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                            f"{subject} has successfully progressed.", self.now))  # fmt: skip
            elif self._progressing(new):
                cond = _condition(
                    PROGRESSING, "True", RS_UPDATED, f"{subject} is progressing.", self.now
                )
                if current is not None and current.status == "True":
                    cond.last_transition_time = current.last_transition_time
                _remove(self.conds, PROGRESSING)
                _set(self.conds, cond)
            elif (left := self._deadline_left()) is not None and left < 0:
                _set(self.conds, _condition(PROGRESSING, "False", TIMED_OUT,
                                            f"{subject} has timed out progressing.", self.now))  # fmt: skip
        left = self._deadline_left()
        if left is None or self._complete(new):
            return None
        return max(left, 0.0) + _JUST_AFTER

    def finish(self, *, progress: bool) -> Outcome:
        """Turn the plan into actions: ReplicaSet writes, deletions, status, events."""
        status = self._calculate_status()
        stuck = self._sync_progress(status) if progress else None
        status.conditions = self.conds or None
        actions: list[Action] = []
        for p in self.plan.all():
            if p.created:
                actions.append(CreateObject(_rs_object(p)))
            elif (p.replicas, p.annotations, p.min_ready_seconds) != (
                p.obj.spec.replicas,
                p.obj.metadata.annotations or {},
                p.obj.spec.min_ready_seconds,
            ):
                actions.append(UpdateObject(_rs_object(p)))
        for p in self.deletes:
            m = p.obj.metadata
            actions.append(DeleteObject("apps", "ReplicaSet", m.namespace, m.name or "", m.uid))
        if _status_key(status) != _status_key(self.deploy.status):
            actions.append(UpdateStatus(self.deploy.model_copy(update={"status": status})))
        actions += self._revision_update()
        actions += self.plan.events
        waits = [w for w in (*self.waits, stuck) if w is not None]
        return Outcome(tuple(actions), min(waits) if waits else None)

    def _revision_update(self) -> list[Action]:
        stored = (self.deploy.metadata.annotations or {}).get(REVISION_ANNOTATION)
        if self.deploy_revision is None or self.deploy_revision == stored:
            return []
        annotations = {
            **(self.deploy.metadata.annotations or {}),
            REVISION_ANNOTATION: self.deploy_revision,
        }
        meta = self.deploy.metadata.model_copy(update={"annotations": annotations})
        return [UpdateObject(self.deploy.model_copy(update={"metadata": meta}))]

    def collision(self) -> Outcome:
        """A ReplicaSet already has the new name: bump collisionCount and try again."""
        old = self.deploy.status or DeploymentStatus()
        status = old.model_copy(update={"collision_count": self.collision_count})
        return Outcome((UpdateStatus(self.deploy.model_copy(update={"status": status})),))


def _rs_object(p: PlannedRS) -> ReplicaSet:
    obj = p.obj
    meta = obj.metadata.model_copy(update={"annotations": dict(p.annotations) or None})
    spec = obj.spec.model_copy(
        update={"replicas": p.replicas, "min_ready_seconds": p.min_ready_seconds}
    )
    return obj.model_copy(update={"metadata": meta, "spec": spec})


def _status_key(status: DeploymentStatus | None) -> tuple[object, ...]:
    s = status or DeploymentStatus()
    counts = (
        s.replicas,
        s.updated_replicas,
        s.ready_replicas,
        s.available_replicas,
        s.unavailable_replicas,
    )
    conds = [c.model_dump() for c in s.conditions or ()]
    return (s.observed_generation, *(c or 0 for c in counts), s.collision_count, conds)


def reconcile_deployment(
    deploy: Deployment, replicasets: Iterable[ReplicaSet], pods: Iterable[Pod], now: float
) -> Outcome:
    """One Deployment sync (upstream ``syncDeployment``).

    ``replicasets`` and ``pods`` may hold everything in the namespace: only
    the ReplicaSets this Deployment controls and their pods count, and every
    ReplicaSet name is checked for hash collisions. The order is upstream's:
    a Deployment being deleted only gets its status; paused conditions;
    paused (scale and clean up only); a resize (proportional scaling);
    otherwise a Recreate or RollingUpdate step.
    """
    sync = _Sync(deploy, list(replicasets), list(pods), now)
    plan = sync.plan
    sync.sync_existing_new()
    if deploy.metadata.deletion_timestamp is not None:
        return sync.finish(progress=False)
    sync.check_paused_conditions()
    if deploy.spec.paused or is_scaling_event(plan):
        scale_deployment(plan)
        if deploy.spec.paused:
            sync.cleanup()
        return sync.finish(progress=False)
    if deploy.spec.strategy.type == "Recreate":
        if scale_down_old_for_recreate(plan) or old_pods_running(plan):
            return sync.finish(progress=True)
        if plan.new is None and not sync.create_new():
            return sync.collision()
        assert plan.new is not None
        scale_and_record(plan, plan.new, plan.replicas)
    else:
        if plan.new is None and not sync.create_new():
            return sync.collision()
        if reconcile_new_rs(plan) or reconcile_old_rss(plan):
            return sync.finish(progress=True)
    if sync.stored_complete():
        sync.cleanup()
    return sync.finish(progress=True)
