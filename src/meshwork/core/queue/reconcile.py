"""The queue controller's decision for one ClusterQueue: admissions and statuses. Pure.

Keyed by ClusterQueue name. The view is the ClusterQueue, the LocalQueues
that point at it, and the Jobs and Workflows labelled with one of those
LocalQueues in the LocalQueue's namespace. One pass:

1. builds a ``Workload`` per Job/Workflow (``workload.py``), blocking those
   whose namespace the ClusterQueue's ``namespaceSelector`` does not select
   (nil selects nothing, ``{}`` everything, as Kueue) or whose LocalQueue
   is held;
2. runs ``admission.admit``;
3. admits each chosen workload with one metadata write: the annotations
   ``meshwork.io/admitted-by`` and ``meshwork.io/admitted-flavors`` and, for
   a Job, ``spec.suspend: false`` (the Job controller then starts every pod
   of the gang at once);
4. suspends a queued Job that runs without admission (created with
   ``suspend: false`` on a server that did not default it);
5. writes the ClusterQueue's and LocalQueues' status: counts, usage per
   flavor, and the waiting workloads in admission order
   (``pendingWorkloadsStatus``, which ``meshwork queue list`` reads).

Idempotent: after the writes land, the same view admits nothing and the
statuses are unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from meshwork.core.queue.admission import Decision, Quota, admit, quota_of
from meshwork.core.queue.policy import policy_of
from meshwork.core.queue.workload import (
    ANNOTATION_ADMITTED_BY,
    ANNOTATION_FLAVORS,
    LABEL_QUEUE,
    Workload,
    format_flavors,
    job_workload,
    quantity_text,
    workflow_workload,
)
from meshwork.core.reconcile import (
    Action,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.selectors import selector_from_spec
from meshwork.model.argo_workflows import Workflow
from meshwork.model.core import Condition
from meshwork.model.kueue import (
    ClusterQueue,
    ClusterQueuePendingWorkload,
    ClusterQueuePendingWorkloadsStatus,
    ClusterQueueStatus,
    FlavorUsage,
    LocalQueue,
    LocalQueueFlavorUsage,
    LocalQueueStatus,
    ResourceUsage,
)
from meshwork.model.workloads import Job

GROUP = "kueue.x-k8s.io"


@dataclass(frozen=True, slots=True)
class QueueView:
    """Everything one ClusterQueue's reconcile reads."""

    cluster_queue: ClusterQueue
    local_queues: Sequence[LocalQueue]
    jobs: Sequence[tuple[Job, int]]  # with the store's creation revision
    workflows: Sequence[tuple[Workflow, int]]
    namespace_labels: Mapping[str, Mapping[str, str]]
    workload_classes: Mapping[str, int]
    priority_classes: Mapping[str, int]


def workload_name(w: Workload) -> str:
    """The name ``pendingWorkloadsStatus`` lists (Kueue's Workload objects are named ``job-<name>-...``)."""
    return f"{w.kind.lower()}-{w.name}"


def _wire(model: object) -> str:
    dump = getattr(model, "model_dump", None)
    return json.dumps(dump(mode="json", by_alias=True, exclude_none=True) if dump else None, sort_keys=True)


def _condition(old: Sequence[Condition] | None, status: bool, reason: str, message: str, now: float) -> list[Condition]:
    value: Literal["True", "False"] = "True" if status else "False"
    for c in old or ():
        if c.type == "Active" and c.status == value and c.reason == reason and c.message == message:
            return [c]
    return [Condition(type="Active", status=value, reason=reason, message=message, last_transition_time=rfc3339(now))]


def _usage(quota: Quota, usage: Mapping[tuple[str, str], Decimal]) -> list[FlavorUsage]:
    return [
        FlavorUsage(name=f.name, resources=[
            ResourceUsage(name=r, total=quantity_text(usage.get((f.name, r), Decimal(0))), borrowed=0) for r in g.covered
        ])
        for g in quota.groups for f in g.flavors
    ]  # fmt: skip


def _admit_action(obj: Job | Workflow, cq: str, flavors: Mapping[str, str]) -> UpdateObject:
    annotations = {**(obj.metadata.annotations or {}), ANNOTATION_ADMITTED_BY: cq,
                   ANNOTATION_FLAVORS: format_flavors(flavors)}  # fmt: skip
    meta = obj.metadata.model_copy(update={"annotations": annotations})
    if isinstance(obj, Job):
        return UpdateObject(obj.model_copy(update={"metadata": meta, "spec": obj.spec.model_copy(update={"suspend": False})}))
    return UpdateObject(obj.model_copy(update={"metadata": meta}))


def reconcile_cluster_queue(view: QueueView, now: float) -> Outcome:
    """Admit what fits, in policy order; keep the statuses current."""
    cq = view.cluster_queue
    name = cq.metadata.name or ""
    queues = {(lq.metadata.namespace or "default", lq.metadata.name or ""): lq for lq in view.local_queues}
    objects: dict[str, Job | Workflow] = {}
    workloads: list[Workload] = []
    for job, rev in view.jobs:
        w = job_workload(job, rev, view.workload_classes, view.priority_classes)
        objects[w.key] = job
        workloads.append(w)
    for wf, rev in view.workflows:
        w = workflow_workload(wf, rev, view.workload_classes, view.priority_classes)
        objects[w.key] = wf
        workloads.append(w)
    workloads = [w for w in workloads if (w.namespace, w.queue) in queues]
    # Admitted by another ClusterQueue (the LocalQueue was re-pointed): not ours to count.
    workloads = [w for w in workloads if w.admitted_by in (None, name)]

    selector = cq.spec.namespace_selector
    spec_selector = selector_from_spec(selector.model_dump(by_alias=True, exclude_none=True)) if selector else None
    blocked: dict[str, str] = {}
    for w in workloads:
        lq = queues[(w.namespace, w.queue)]
        if spec_selector is None or not spec_selector.matches(view.namespace_labels.get(w.namespace, {})):
            blocked[w.key] = f"namespace {w.namespace} is not selected by the ClusterQueue's namespaceSelector"
        elif lq.spec.stop_policy in ("Hold", "HoldAndDrain"):
            blocked[w.key] = f"LocalQueue {w.queue} is held (stopPolicy)"

    chosen = policy_of(cq.metadata.annotations)
    quota = quota_of(cq.spec)
    if isinstance(chosen, str):
        decision = Decision(pending=tuple(w for w in workloads if w.admitted_by is None and not w.finished),
                            reasons={}, usage={})  # fmt: skip
        active = (False, "InvalidPolicy", chosen)
    else:
        held = cq.spec.stop_policy in ("Hold", "HoldAndDrain")
        decision = admit(quota, workloads, chosen[0], ageing=chosen[1], strategy=cq.spec.queueing_strategy,
                         held=held, blocked=blocked)  # fmt: skip
        active = (False, "Stopped", "The ClusterQueue is held") if held else (True, "Ready", "Can admit new workloads")

    actions: list[Action] = []
    for a in decision.admitted:
        obj = objects[a.workload.key]
        actions.append(_admit_action(obj, name, a.flavors))
        about = ObjectRef("batch" if a.workload.kind == "Job" else "argoproj.io", a.workload.kind,
                          a.workload.namespace, a.workload.name, a.workload.uid or None)  # fmt: skip
        actions.append(RecordEvent(about, "Normal", "Admitted", f"Admitted by ClusterQueue {name}"))
    for w in decision.pending:
        obj = objects[w.key]
        if isinstance(obj, Job) and obj.spec.suspend is False:
            meta = obj.metadata
            actions.append(UpdateObject(obj.model_copy(update={"metadata": meta, "spec": obj.spec.model_copy(update={"suspend": True})})))

    admitted_now = {a.workload.key for a in decision.admitted}
    holding = [w for w in workloads if w.holds_quota or w.key in admitted_now]
    pending_list = [ClusterQueuePendingWorkload(name=workload_name(w), namespace=w.namespace) for w in decision.pending]
    old = cq.status or ClusterQueueStatus()
    old_list = old.pending_workloads_status.cluster_queue_pending_workload if old.pending_workloads_status else None
    same_list = _wire(pending_list) == _wire(old_list or [])
    last_change = old.pending_workloads_status.last_change_time if old.pending_workloads_status and same_list else rfc3339(now)
    usage = _usage(quota, decision.usage)
    status = ClusterQueueStatus(
        conditions=_condition(old.conditions, *active, now=now),
        pending_workloads=len(decision.pending), reserving_workloads=len(holding), admitted_workloads=len(holding),
        flavors_reservation=usage, flavors_usage=usage,
        pending_workloads_status=ClusterQueuePendingWorkloadsStatus(
            cluster_queue_pending_workload=pending_list, last_change_time=last_change),
    )  # fmt: skip
    if _wire(status) != _wire(cq.status):
        actions.append(UpdateStatus(cq.model_copy(update={"status": status})))

    for (ns, lq_name), lq in sorted(queues.items()):
        mine = [w for w in holding if (w.namespace, w.queue) == (ns, lq_name)]
        waiting = [w for w in decision.pending if (w.namespace, w.queue) == (ns, lq_name)]
        lq_usage: dict[tuple[str, str], Decimal] = {}
        for w in mine:
            flavors = w.flavors or next((dict(a.flavors) for a in decision.admitted if a.workload.key == w.key), {})
            for r, f in flavors.items():
                lq_usage[(f, r)] = lq_usage.get((f, r), Decimal(0)) + w.requests.get(r, Decimal(0))
        flavor_usage = [LocalQueueFlavorUsage(name=u.name, resources=[
            ResourceUsage(name=r.name, total=quantity_text(lq_usage.get((u.name, r.name), Decimal(0))))
            for r in u.resources]) for u in usage]  # fmt: skip
        lq_active = (False, "Stopped", "The LocalQueue is held") if lq.spec.stop_policy in ("Hold", "HoldAndDrain") \
            else (active[0], "Ready" if active[0] else "ClusterQueueIsInactive",
                  "Can submit new workloads to localQueue" if active[0] else f"ClusterQueue {name} is inactive")
        old_lq = lq.status or LocalQueueStatus()
        lq_status = LocalQueueStatus(
            conditions=_condition(old_lq.conditions, *lq_active, now=now),
            pending_workloads=len(waiting), reserving_workloads=len(mine), admitted_workloads=len(mine),
            flavors_reservation=flavor_usage, flavor_usage=flavor_usage,
        )  # fmt: skip
        if _wire(lq_status) != _wire(lq.status):
            actions.append(UpdateStatus(lq.model_copy(update={"status": lq_status})))
    return Outcome(tuple(actions))


def queue_of(obj: Job | Workflow) -> str | None:
    return (obj.metadata.labels or {}).get(LABEL_QUEUE)
