"""The CronWorkflow controller's decisions, Argo's cron semantics over ``core.cron``. Pure.

``reconcile_cronworkflow(cwf, workflows, now) -> Outcome``: which Workflow to
submit for the most recent unmet scheduled time, what to do with running
ones (``concurrencyPolicy``), which finished ones to delete (history
limits), and the CronWorkflow's status.

Argo's behaviour followed:

* The Workflow is named ``<cronworkflow>-<scheduled time, Unix seconds>``
  (deterministic: one scheduled time never submits twice, even when a crash
  loses the status write), labelled ``workflows.argoproj.io/cron-workflow``,
  annotated ``workflows.argoproj.io/scheduled-time``, owned by the
  CronWorkflow, and gets ``spec.workflowMetadata``'s labels and annotations.
* ``schedule`` or ``schedules`` (several cron lines), in ``timezone``;
  times missed while the controller was down run once (the latest), and not
  when older than ``startingDeadlineSeconds``.
* ``concurrencyPolicy``: ``Allow`` (default), ``Forbid`` (skip while one
  runs), ``Replace`` (terminate the running ones: ``spec.shutdown:
  Terminate``, then submit).
* ``successfulJobsHistoryLimit`` (default 3) and ``failedJobsHistoryLimit``
  (default 1): older finished Workflows are deleted, oldest first.
* ``suspend: true`` submits nothing. ``status``: ``active`` (references to
  running Workflows), ``lastScheduledTime``, ``succeeded``/``failed``
  counts, ``phase`` (``Active``).

Not done: ``stopStrategy`` and ``when`` (the CronWorkflow keeps running).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meshwork.core import cron
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
from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.model.argo_workflows import CronWorkflow, CronWorkflowStatus, Workflow
from meshwork.model.base import ObjectMeta, OpenModel, OwnerReference

LABEL_CRON = "workflows.argoproj.io/cron-workflow"
ANNOTATION_SCHEDULED = "workflows.argoproj.io/scheduled-time"
DEFAULT_SUCCESS_HISTORY = 3  # Argo's default successfulJobsHistoryLimit
DEFAULT_FAILED_HISTORY = 1  # Argo's default failedJobsHistoryLimit
MISSED_LIMIT = 100  # as the CronJob controller: more missed times than this is a warning
WAKE_DELTA = 0.1  # wake just after the scheduled time
FINAL = ("Succeeded", "Failed", "Error")


def workflow_name(cwf: CronWorkflow, scheduled: datetime) -> str:
    return f"{cwf.metadata.name}-{int(scheduled.timestamp())}"


def _owned(cwf: CronWorkflow, workflows: list[Workflow]) -> list[Workflow]:
    uid = cwf.metadata.uid
    return [w for w in workflows if any(r.controller and r.kind == "CronWorkflow" and
                                        (r.uid == uid if uid else r.name == cwf.metadata.name)
                                        for r in w.metadata.owner_references or ())]  # fmt: skip


def _phase(wf: Workflow) -> str:
    return (wf.status.phase if wf.status else None) or ""


def new_workflow(cwf: CronWorkflow, scheduled: datetime) -> Workflow:
    meta = cwf.spec.workflow_metadata
    labels = {**((meta.labels if meta else None) or {}), LABEL_CRON: cwf.metadata.name or ""}
    annotations = {**((meta.annotations if meta else None) or {}), ANNOTATION_SCHEDULED: rfc3339(scheduled.timestamp())}
    owner = OwnerReference(api_version="argoproj.io/v1alpha1", kind="CronWorkflow", name=cwf.metadata.name or "",
                           uid=cwf.metadata.uid or "", controller=True, block_owner_deletion=True)  # fmt: skip
    return Workflow(
        metadata=ObjectMeta(name=workflow_name(cwf, scheduled), namespace=cwf.metadata.namespace, labels=labels,
                            annotations=annotations, owner_references=[owner]),
        spec=cwf.spec.workflow_spec.model_copy(deep=True),
    )  # fmt: skip


def _ref(wf_name: str, namespace: str | None) -> OpenModel:
    return OpenModel.model_validate({"kind": "Workflow", "apiVersion": "argoproj.io/v1alpha1",
                                     "namespace": namespace, "name": wf_name})  # fmt: skip


def _history(cwf: CronWorkflow, owned: list[Workflow]) -> list[Action]:
    spec = cwf.spec
    actions: list[Action] = []
    limits = (("Succeeded",), spec.successful_jobs_history_limit, DEFAULT_SUCCESS_HISTORY), \
        (("Failed", "Error"), spec.failed_jobs_history_limit, DEFAULT_FAILED_HISTORY)
    for phases, limit, default in limits:
        keep = default if limit is None else limit
        done = sorted((w for w in owned if _phase(w) in phases),
                      key=lambda w: (parse_time(w.status.finished_at if w.status else None) or 0.0, w.metadata.name or ""))  # fmt: skip
        for wf in done[: max(0, len(done) - keep)]:
            actions.append(DeleteObject("argoproj.io", "Workflow", wf.metadata.namespace, wf.metadata.name or "",
                                        wf.metadata.uid))  # fmt: skip
    return actions


def reconcile_cronworkflow(cwf: CronWorkflow, workflows: list[Workflow], now: float) -> Outcome:
    """Decide the Workflows, status and Events of ``cwf`` at ``now``."""
    if cwf.metadata.deletion_timestamp is not None:
        return Outcome()
    ns = cwf.metadata.namespace
    about = ObjectRef("argoproj.io", "CronWorkflow", ns, cwf.metadata.name or "", cwf.metadata.uid)
    owned = _owned(cwf, workflows)
    by_name = {w.metadata.name or "": w for w in owned}
    running = sorted((w for w in owned if _phase(w) not in FINAL), key=lambda w: w.metadata.name or "")
    old = cwf.status or CronWorkflowStatus()
    status: dict[str, Any] = old.model_dump(mode="json", by_alias=True, exclude_none=True)
    actions: list[Action] = []
    requeue: float | None = None
    active = [w.metadata.name or "" for w in running]

    if not cwf.spec.suspend:
        try:
            tz = cron.zone(cwf.spec.timezone or None)
            schedules = [cron.parse_schedule(s) for s in cwf.spec.all_schedules()]
        except ValueError as exc:
            actions.append(RecordEvent(about, "Warning", "Malformed", f"invalid schedule or timezone: {exc}"))
            schedules = []
            tz = UTC
        at = datetime.fromtimestamp(now, UTC)
        last = parse_time(status.get("lastScheduledTime")) or parse_time(cwf.metadata.creation_timestamp)
        earliest = datetime.fromtimestamp(last, UTC) if last is not None else at
        deadline = cwf.spec.starting_deadline_seconds
        if deadline is not None and at - timedelta(seconds=deadline) > earliest:
            earliest = at - timedelta(seconds=deadline)
        upcoming = [n for s in schedules if (n := cron.next_after(s, at, tz)) is not None]
        if upcoming:
            requeue = (min(upcoming) - at).total_seconds() + WAKE_DELTA
        missed = [m for s in schedules if (m := cron.missed_between(s, earliest, at, MISSED_LIMIT, tz).most_recent)]
        scheduled = max(missed) if missed else None
        if scheduled is not None:
            name = workflow_name(cwf, scheduled)
            stamp = rfc3339(scheduled.timestamp())
            if name in by_name or status.get("lastScheduledTime") == stamp:
                status["lastScheduledTime"] = stamp  # submitted before a restart lost the status: never twice
            elif cwf.spec.concurrency_policy == "Forbid" and running:
                actions.append(RecordEvent(about, "Normal", "WorkflowAlreadyActive",
                                           "concurrency policy is Forbid and a workflow is running"))  # fmt: skip
                status["lastScheduledTime"] = stamp
            else:
                if cwf.spec.concurrency_policy == "Replace":
                    for wf in running:
                        if wf.spec.shutdown != "Terminate":
                            actions.append(UpdateObject(wf.model_copy(
                                update={"spec": wf.spec.model_copy(update={"shutdown": "Terminate"})})))
                    active = []
                actions.append(CreateObject(new_workflow(cwf, scheduled)))
                actions.append(RecordEvent(about, "Normal", "WorkflowSubmitted", f"Submitted workflow {name}"))
                active.append(name)
                status["lastScheduledTime"] = stamp

    # A workflow is counted once, when it leaves the active list finished (as Argo counts).
    was_active = {(a.model_dump().get("name") or "") for a in old.active or ()}
    for name in sorted(was_active - set(active)):
        done = by_name.get(name)
        if done is not None and _phase(done) in FINAL:
            key = "succeeded" if _phase(done) == "Succeeded" else "failed"
            status[key] = int(status.get(key) or 0) + 1
    status["active"] = [_ref(n, ns).model_dump(mode="json", exclude_none=True) for n in active] or None
    status["phase"] = "Active"
    new = CronWorkflowStatus.model_validate({k: v for k, v in status.items() if v is not None})
    if new.model_dump(mode="json", by_alias=True, exclude_none=True) != old.model_dump(mode="json", by_alias=True,
                                                                                      exclude_none=True):
        actions.insert(0, UpdateStatus(cwf.model_copy(update={"status": new})))
    actions += _history(cwf, owned)
    return Outcome(tuple(actions), requeue)
