"""The CronJob controller's decisions (kube-controller-manager's cronjob controller v2, pure).

What lives here: ``reconcile_cronjob(cj, jobs, now) -> Outcome``: which Job to
create for the most recent unmet schedule, which Jobs to delete (Replace,
history limits), the CronJob's status and Events, and when to look again.

What must not: cron parsing and time arithmetic (``meshwork.core.cron``),
anything about the Jobs' pods (the Job controller), any clock or I/O.

Upstream behaviour followed:

* Job names are ``<cronjob>-<scheduled time in minutes since the epoch>``,
  so the same scheduled time always names the same Job: a Job of that name
  already in the view is adopted, never created twice.
* The most recent unmet time is searched after ``lastScheduleTime`` (or the
  creation time), and not before ``now - startingDeadlineSeconds``; older
  times are skipped silently, as upstream v2 does. More than 100 missed
  times gives the ``TooManyMissedTimes`` warning and still runs the latest.
* Forbid: ``JobAlreadyActive`` and no new Job. Replace: active Jobs are
  deleted (``SuccessfulDelete``) before the new one is created.
* History: finished Jobs beyond successful/failedJobsHistoryLimit are
  deleted oldest first (by status.startTime, then name), even when suspended.
* requeue_after = time until the next scheduled time plus upstream's 100 ms.

Differences (said plainly): ``status.active`` references carry kind,
namespace, name and apiVersion but no uid (the uid is not known until the
API server creates the Job; the deterministic name is the identity here).
An unfinished Job owned by the CronJob but missing from ``status.active`` is
adopted into it (upstream only warns ``UnexpectedJob``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from meshwork.core import cron
from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.reconcile.job import parse_rfc3339, rfc3339
from meshwork.model.base import ObjectMeta, OwnerReference
from meshwork.model.corev1 import ObjectReference
from meshwork.model.workloads import CronJob, CronJobStatus, Job

SCHEDULED_TIMESTAMP_KEY = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MISSED_TIMES_WARN = 100  # upstream: "somewhat arbitrarily picked 100, as more than 80"
NEXT_SCHEDULE_DELTA = 0.1  # upstream nextScheduleDelta: wake just after the scheduled time
MSG_FORBID = "Not starting job because prior execution is running and concurrency policy is Forbid"


def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """Upstream getJobName: the CronJob name and the scheduled time in minutes since the epoch."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def go_rfc3339(t: datetime) -> str:
    """Go's time.RFC3339 layout: ``Z`` for UTC, ``-05:00`` otherwise."""
    text = t.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _finished(job: Job) -> str | None:
    for cond in (job.status.conditions if job.status else None) or ():
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def _owned(cj: CronJob, jobs: list[Job]) -> list[Job]:
    uid = cj.metadata.uid
    return [j for j in jobs if any(ref.controller and ref.kind == "CronJob" and
                                   (ref.uid == uid if uid else ref.name == cj.metadata.name)
                                   for ref in j.metadata.owner_references or ())]  # fmt: skip


def _ref(namespace: str | None, name: str) -> ObjectReference:
    return ObjectReference(kind="Job", namespace=namespace, name=name, api_version="batch/v1")


def new_job(cj: CronJob, scheduled: datetime, tz: tzinfo) -> Job:
    """The Job for one scheduled time: the jobTemplate, its labels and annotations copied, the
    deterministic name, the scheduled-timestamp annotation and a controller ownerReference."""
    tmpl = cj.spec.job_template
    annotations = dict(tmpl.metadata.annotations or {})
    annotations[SCHEDULED_TIMESTAMP_KEY] = go_rfc3339(scheduled.astimezone(tz))
    owner = OwnerReference(api_version="batch/v1", kind="CronJob", name=cj.metadata.name or "",
                           uid=cj.metadata.uid or "", controller=True, block_owner_deletion=True)  # fmt: skip
    meta = ObjectMeta(name=job_name(cj.metadata.name or "", scheduled), namespace=cj.metadata.namespace,
                      labels=dict(tmpl.metadata.labels) if tmpl.metadata.labels else None,
                      annotations=annotations, owner_references=[owner])  # fmt: skip
    return Job(metadata=meta, spec=tmpl.spec.model_copy(deep=True))


def _delete(cj_ref: ObjectRef, job: Job | ObjectReference, namespace: str | None) -> list[Action]:
    name = (job.metadata.name if isinstance(job, Job) else job.name) or ""
    uid = job.metadata.uid if isinstance(job, Job) else None
    return [DeleteObject("batch", "Job", namespace, name, uid, propagation="Background"),
            RecordEvent(cj_ref, "Normal", "SuccessfulDelete", f"Deleted job {name}")]  # fmt: skip


def _start_key(job: Job) -> tuple[int, float, str]:
    start = job.status.start_time if job.status else None
    return (0, parse_rfc3339(start), job.metadata.name or "") if start else (1, 0.0, job.metadata.name or "")


def _cleanup(cj: CronJob, jobs: list[Job], ref: ObjectRef) -> list[Action]:
    """Delete finished Jobs beyond the history limits, oldest first."""
    actions: list[Action] = []
    for kind, limit in (("Complete", cj.spec.successful_jobs_history_limit),
                        ("Failed", cj.spec.failed_jobs_history_limit)):  # fmt: skip
        done = sorted((j for j in jobs if _finished(j) == kind), key=_start_key)
        for job in done[: max(0, len(done) - limit)]:
            actions += _delete(ref, job, cj.metadata.namespace)
    return actions


def reconcile_cronjob(cj: CronJob, jobs: list[Job], now: float) -> Outcome:
    """Decide the Jobs, status and Events of ``cj`` given the Jobs that exist at ``now``."""
    if cj.metadata.deletion_timestamp is not None:
        return Outcome()
    ns = cj.metadata.namespace
    ref = ObjectRef("batch", "CronJob", ns, cj.metadata.name or "", cj.metadata.uid)
    old = cj.status or CronJobStatus()
    status = old.model_copy(deep=True)
    owned = _owned(cj, jobs)
    by_name = {j.metadata.name: j for j in owned}
    actions: list[Action] = []

    # 1. The active list follows the Jobs as they are.
    active = list(status.active or [])
    for entry in list(active):
        job = by_name.get(entry.name)
        if job is None:
            active.remove(entry)
            actions.append(RecordEvent(ref, "Normal", "MissingJob", f"Active job went missing: {entry.name}"))
        elif (kind := _finished(job)) is not None:
            active.remove(entry)
            actions.append(RecordEvent(ref, "Normal", "SawCompletedJob",
                                       f"Saw completed job: {entry.name}, condition: {kind}"))  # fmt: skip
    names = {a.name for a in active}
    for job in sorted(owned, key=lambda j: j.metadata.name or ""):
        if _finished(job) is None and job.metadata.name not in names:
            active.append(_ref(ns, job.metadata.name or ""))
            names.add(job.metadata.name)
    successes = [parse_rfc3339(j.status.completion_time) for j in owned
                 if _finished(j) == "Complete" and j.status and j.status.completion_time]  # fmt: skip
    if successes:
        latest = max(successes)
        if status.last_successful_time is None or latest > parse_rfc3339(status.last_successful_time):
            status.last_successful_time = rfc3339(latest)

    cleanup = _cleanup(cj, owned, ref)
    requeue: float | None = None
    if not cj.spec.suspend:
        requeue = _schedule(cj, now, status, active, by_name, ref, actions)
    actions += cleanup
    status.active = active or None
    if status != old:
        actions.insert(0, UpdateStatus(cj.model_copy(update={"status": status})))
    return Outcome(actions=tuple(actions), requeue_after=requeue)


def _schedule(cj: CronJob, now: float, status: CronJobStatus, active: list[ObjectReference],
              by_name: dict[str | None, Job], ref: ObjectRef, actions: list[Action]) -> float | None:  # fmt: skip
    """Start the Job for the most recent unmet scheduled time; returns the requeue delay."""
    try:
        tz = cron.zone(cj.spec.time_zone)
    except ValueError as exc:
        actions.append(RecordEvent(ref, "Warning", "UnknownTimeZone",
                                   f"invalid timeZone: {cj.spec.time_zone!r}: {exc}"))  # fmt: skip
        return None
    try:
        sched = cron.parse_schedule(cj.spec.schedule)
    except ValueError as exc:
        actions.append(RecordEvent(ref, "Warning", "UnparseableSchedule",
                                   f"unparseable schedule: {cj.spec.schedule!r} : {exc}"))  # fmt: skip
        return None
    at = datetime.fromtimestamp(now, UTC)
    earliest_text = status.last_schedule_time or cj.metadata.creation_timestamp
    earliest = datetime.fromtimestamp(parse_rfc3339(earliest_text), UTC) if earliest_text else at
    deadline = cj.spec.starting_deadline_seconds
    if deadline is not None and at - timedelta(seconds=deadline) > earliest:
        earliest = at - timedelta(seconds=deadline)
    nxt = cron.next_after(sched, at, tz)
    requeue = (nxt - at).total_seconds() + NEXT_SCHEDULE_DELTA if nxt is not None else None
    missed = cron.missed_between(sched, earliest, at, MISSED_TIMES_WARN, tz)
    if missed.count > MISSED_TIMES_WARN:
        actions.append(RecordEvent(ref, "Warning", "TooManyMissedTimes",
                                   f"too many missed start times: {missed.count}. Set or decrease "
                                   ".spec.startingDeadlineSeconds or check clock skew"))  # fmt: skip
    scheduled = missed.most_recent
    if scheduled is None:
        return requeue
    name = job_name(cj.metadata.name or "", scheduled)
    stamp = rfc3339(scheduled.timestamp())
    if name in by_name:  # created before a restart lost the status write: adopt, never duplicate
        status.last_schedule_time = stamp
        return requeue
    if any(a.name == name for a in active) or status.last_schedule_time == stamp:
        return requeue
    if cj.spec.concurrency_policy == "Forbid" and active:
        actions.append(RecordEvent(ref, "Normal", "JobAlreadyActive", MSG_FORBID))
        return requeue
    if cj.spec.concurrency_policy == "Replace":
        for entry in list(active):
            job = by_name.get(entry.name)
            actions.extend(_delete(ref, job if job is not None else entry, cj.metadata.namespace))
            active.remove(entry)
    actions.append(CreateObject(new_job(cj, scheduled, tz)))
    actions.append(RecordEvent(ref, "Normal", "SuccessfulCreate", f"Created job {name}"))
    active.append(_ref(cj.metadata.namespace, name))
    status.last_schedule_time = stamp
    return requeue
