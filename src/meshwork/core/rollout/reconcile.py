"""One Rollout sync: the view it reads, the writes it collects, and the entry point.

What lives here: ``RolloutView`` (everything a Rollout's reconcile reads),
``Sync`` (the actions one pass collects: ReplicaSets created and scaled,
Services, DestinationRule and VirtualService patched, AnalysisRuns created,
the status, and one Event per step change) and ``reconcile_rollout``,
which finds or creates the ReplicaSet of the current template and hands
over to the strategy (``canary`` or ``bluegreen``).

What must not: the strategies' rules, or I/O; ``now`` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import controller_ref, is_controlled_by, rfc3339
from meshwork.core.rollout.analysis import resolve_args, substitute_args
from meshwork.core.rollout.replicas import (
    REVISION_ANNOTATION,
    Counts,
    counts,
    deadline_of,
    new_replicaset,
    pod_hash,
    revision_of,
    scaled,
    template_hash,
)
from meshwork.core.rollout.traffic import HASH_LABEL, select_hash
from meshwork.model.argo_analysis import (
    AnalysisRun,
    AnalysisRunSpec,
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Experiment,
    Metric,
)
from meshwork.model.argo_rollouts import Rollout, RolloutAnalysis, RolloutStatus
from meshwork.model.base import ObjectMeta
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule
from meshwork.model.pod import Pod, PodTemplateSpec
from meshwork.model.workloads import ReplicaSet

HEALTHY, PROGRESSING, PAUSED, DEGRADED = "Healthy", "Progressing", "Paused", "Degraded"


@dataclass(frozen=True)
class RolloutView:
    """What one Rollout's reconcile reads (the shell fills it from its cache)."""

    rollout: Rollout
    template: PodTemplateSpec | None  # spec.template, or the workloadRef's template
    replicasets: Sequence[ReplicaSet] = ()
    pods: Sequence[Pod] = ()
    services: Mapping[str, Service] = field(default_factory=dict)
    endpoints: Mapping[str, Endpoints] = field(default_factory=dict)  # by Service name
    virtual_services: Mapping[str, VirtualService] = field(default_factory=dict)
    destination_rules: Mapping[str, DestinationRule] = field(default_factory=dict)
    analysis_runs: Sequence[AnalysisRun] = ()
    templates: Mapping[str, AnalysisTemplate] = field(default_factory=dict)
    cluster_templates: Mapping[str, ClusterAnalysisTemplate] = field(default_factory=dict)
    experiments: Sequence[Experiment] = ()


def rollout_ref(ro: Rollout) -> ObjectRef:
    return ObjectRef("argoproj.io", "Rollout", ro.metadata.namespace, ro.metadata.name or "", ro.metadata.uid)


class Sync:
    """The writes one pass collects, in the order they are applied."""

    def __init__(self, view: RolloutView, now: float) -> None:
        self.view = view
        self.ro = view.rollout
        self.now = now
        self.replicas = self.ro.spec.replicas if self.ro.spec.replicas is not None else 1
        old = self.ro.status or RolloutStatus()
        self.old_status = old.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.status: dict[str, Any] = dict(self.old_status)
        self.scales: list[Action] = []
        self.traffic: list[Action] = []
        self.creates: list[Action] = []
        self.events: list[RecordEvent] = []
        self.wake: list[float] = []
        self.rss = sorted((rs for rs in view.replicasets if is_controlled_by(rs, self.ro)),
                          key=lambda rs: (revision_of(rs), rs.metadata.name or ""))  # fmt: skip
        self.h = ""
        self.new: ReplicaSet | None = None

    # -- reads ---------------------------------------------------------------

    def by_hash(self, h: str | None) -> ReplicaSet | None:
        return next((rs for rs in self.rss if pod_hash(rs) == h), None) if h else None

    def counts(self, rs: ReplicaSet | None) -> Counts:
        if rs is None:
            return Counts()
        return counts(rs, self.view.pods, self.ro.spec.min_ready_seconds or 0, self.now)

    def step_index(self) -> int:
        return int(self.status.get("currentStepIndex") or 0)

    # -- writes --------------------------------------------------------------

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append(RecordEvent(rollout_ref(self.ro), "Warning" if type_ == "Warning" else "Normal",
                                       reason, message))  # fmt: skip

    def scale(self, rs: ReplicaSet | None, replicas: int, deadline: float | None = None) -> None:
        """Scale ``rs`` (a later scale-down deadline keeps the first one written)."""
        if rs is None:
            return
        new = scaled(rs, replicas, deadline, keep_deadline=True)
        if new is None:
            return
        if new.spec.replicas != rs.spec.replicas:
            verb = "up" if replicas > rs.spec.replicas else "down"
            self.event("ScalingReplicaSet", f"Scaled {verb} ReplicaSet {rs.metadata.name} "
                       f"(revision {revision_of(rs)}) from {rs.spec.replicas} to {replicas}")  # fmt: skip
        self.scales.append(UpdateObject(new))

    def scale_down_after(self, rs: ReplicaSet, delay: float) -> bool:
        """``rs`` to 0 replicas ``delay`` seconds after it was first asked (the deadline is written on
        it, so it survives restarts); True once it is scaled down."""
        deadline = deadline_of(rs)
        if delay <= 0 or (deadline is not None and deadline <= self.now):
            self.scale(rs, 0)
            return True
        if deadline is None:
            self.scale(rs, rs.spec.replicas, self.now + delay)
            self.requeue(delay)
        else:
            self.requeue(deadline - self.now)
        return False

    def select(self, service_name: str | None, h: str) -> None:
        """Point a Service at the pods of hash ``h`` (a missing Service is reported, not fatal)."""
        if not service_name:
            return
        svc = self.view.services.get(service_name)
        if svc is None:
            self.message_override = f"Service \"{service_name}\" not found"
            return
        patched = select_hash(svc, h, self.ro.metadata.name or "")
        if patched is not None:
            old = (svc.spec.selector or {}).get(HASH_LABEL, "")
            self.event("SwitchService", f"Switched selector for service '{service_name}' from '{old}' to '{h}'")
            self.traffic.append(UpdateObject(patched))

    message_override: str | None = None

    def requeue(self, seconds: float) -> None:
        self.wake.append(max(0.0, seconds))

    # -- analysis ------------------------------------------------------------

    def analysis(self, spec: RolloutAnalysis, suffix: str, stable_hash: str, acted: str | None) -> AnalysisRun | None:
        """The AnalysisRun ``<rollout>-<hash>-<revision>-<suffix>`` (without ``-<suffix>`` when it is
        empty, as Argo names the background run) (created when missing: None).

        ``acted`` names the failed run this Rollout already aborted for: when it
        is the latest, the user retried, and a new run (``.1``, ``.2`` ...) starts.
        """
        assert self.new is not None
        prefix = f"{self.ro.metadata.name}-{self.h}-{revision_of(self.new)}" + (f"-{suffix}" if suffix else "")
        mine = [r for r in self.view.analysis_runs
                if (r.metadata.name or "") == prefix or (r.metadata.name or "").startswith(f"{prefix}.")]  # fmt: skip
        mine.sort(key=lambda r: r.metadata.name or "")
        live = [r for r in mine if (r.status.phase if r.status else None) not in ("Failed", "Error", "Inconclusive")]
        if live:
            return live[0]
        if mine and acted != (mine[-1].metadata.name or ""):
            return mine[-1]  # a finished failure not yet acted on
        name = prefix if not mine else f"{prefix}.{len(mine)}"
        run = self.build_run(spec, name, stable_hash)
        if run is not None:
            self.creates.append(CreateObject(run))
        return None

    def build_run(self, spec: RolloutAnalysis, name: str, stable_hash: str) -> AnalysisRun | None:
        metrics: list[Metric] = []
        declared = []
        for ref in spec.templates or ():
            found = (self.view.cluster_templates if ref.cluster_scope else self.view.templates).get(ref.template_name)
            if found is None:
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                self.message_override = f"{kind} '{ref.template_name}' not found"
                self.requeue(2.0)
                return None
            metrics += found.spec.metrics
            declared += found.spec.args or []
        given: dict[str, str] = {}
        for arg in spec.args or ():
            if arg.value is not None:
                given[arg.name] = arg.value
            elif arg.value_from is not None and arg.value_from.pod_template_hash_value:
                given[arg.name] = self.h if arg.value_from.pod_template_hash_value == "Latest" else stable_hash
        values, missing = resolve_args(declared, given)
        if missing:
            self.message_override = f"args.{missing[0]} was not resolved"
            return None
        wire_metrics = substitute_args(metrics, values)
        labels = {HASH_LABEL: self.h, "rollouts-pod-template-hash": self.h}
        return AnalysisRun(
            metadata=ObjectMeta(name=name, namespace=self.ro.metadata.namespace, labels=labels,
                                owner_references=[controller_ref(self.ro)]),
            spec=AnalysisRunSpec.model_validate({"metrics": wire_metrics,
                                                 "args": [{"name": k, "value": v} for k, v in values.items()] or None}),
        )

    # -- the end -------------------------------------------------------------

    def finish(self, phase: str, message: str = "") -> Outcome:
        status = self.status
        status.pop("_abortReason", None)
        if self.message_override and phase != DEGRADED:
            message = self.message_override
        status["phase"] = phase
        if message:
            status["message"] = message
        else:
            status.pop("message", None)
        new_counts = self.counts(self.new)
        total = [self.counts(rs) for rs in self.rss]
        status["replicas"] = sum(c.active for c in total)
        status["readyReplicas"] = sum(c.ready for c in total)
        status["availableReplicas"] = sum(c.available for c in total)
        status["updatedReplicas"] = new_counts.active
        status["currentPodHash"] = self.h
        status["observedGeneration"] = str(self.ro.metadata.generation or 0)
        selector = self.ro.spec.selector
        if selector is not None and selector.match_labels:
            status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
        actions: list[Action] = [*self.creates, *self.scales, *self.traffic]
        if status != self.old_status:
            wire = self.ro.model_dump(mode="json", by_alias=True, exclude_none=True)
            wire["status"] = status
            actions.append(UpdateStatus(Rollout.model_validate(wire)))
            actions.extend(self.events)
        elif self.events:
            actions.extend(e for e in self.events if e.reason in ("ScalingReplicaSet", "SwitchService"))
        return Outcome(tuple(actions), min(self.wake) if self.wake else None)


def reconcile_rollout(view: RolloutView, now: float) -> Outcome:
    """One Rollout sync: find or create the current ReplicaSet, then the strategy's step."""
    from meshwork.core.rollout.bluegreen import sync_bluegreen
    from meshwork.core.rollout.canary import sync_canary

    ro = view.rollout
    if ro.metadata.deletion_timestamp is not None:
        return Outcome()
    s = Sync(view, now)
    if view.template is None:
        return s.finish(DEGRADED, "InvalidSpec: the workloadRef's template was not found")
    s.h = template_hash(view.template, (ro.status.collision_count if ro.status else None))
    s.new = s.by_hash(s.h)
    taken = next((rs for rs in view.replicasets if rs.metadata.name == f"{ro.metadata.name}-{s.h}"
                  and not is_controlled_by(rs, ro)), None)  # fmt: skip
    if s.new is None and taken is not None:
        # Another owner's ReplicaSet has the name: Argo's collisionCount changes the hash.
        collisions = int(s.status.get("collisionCount") or 0) + 1
        s.status["collisionCount"] = collisions
        s.event("HashCollision", f"ReplicaSet {taken.metadata.name} is not owned by this Rollout; "
                f"collisionCount is now {collisions}", "Warning")  # fmt: skip
        s.requeue(0.0)
        return s.finish(PROGRESSING, f"hash collision with ReplicaSet {taken.metadata.name}")
    if s.new is None:
        first = not s.status.get("stableRS")
        revision = max((revision_of(rs) for rs in s.rss), default=0) + 1
        start = s.replicas if first or ro.spec.strategy.blue_green is not None else 0
        rs = new_replicaset(ro, view.template, s.h, revision, start)
        s.event("RolloutUpdated", f"Rollout updated to revision {revision}")
        s.event("NewReplicaSetCreated", f"Created ReplicaSet {rs.metadata.name} (revision {revision})")
        s.creates.append(CreateObject(rs))
        s.status["currentPodHash"] = s.h
        return Outcome((CreateObject(rs), *s.events))
    if s.status.get("currentPodHash") not in (None, s.h):
        top = max(revision_of(rs) for rs in s.rss)
        if revision_of(s.new) < top:
            # An earlier template again (``rollout undo``): its ReplicaSet becomes the newest revision.
            annotations = {**(s.new.metadata.annotations or {}), REVISION_ANNOTATION: str(top + 1)}
            bumped = s.new.model_copy(update={"metadata": s.new.metadata.model_copy(update={"annotations": annotations})})
            s.event("RolloutUpdated", f"Rollout updated to revision {top + 1}")
            return Outcome((UpdateObject(bumped), *s.events))
        # A new template: the steps start again (Argo resets the step index and abort).
        for key in ("abort", "abortedAt", "pauseConditions", "controllerPause", "promoteFull", "currentStepIndex"):
            s.status.pop(key, None)
        s.status.setdefault("canary", {}).pop("currentStepAnalysisRunStatus", None)
    s.status["currentPodHash"] = s.h
    if ro.spec.paused:
        return s.finish(PAUSED, "manually paused")
    if ro.spec.strategy.canary is not None:
        return sync_canary(s)
    return sync_bluegreen(s)


def abort_message(s: Sync, reason: str | None) -> str:
    revision = revision_of(s.new) if s.new is not None else 0
    text = f"RolloutAborted: Rollout aborted update to revision {revision}"
    return f"{text}: {reason}" if reason else text


def stamp(now: float) -> str:
    return rfc3339(now)
