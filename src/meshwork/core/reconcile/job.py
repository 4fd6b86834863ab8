"""The Job controller's decisions (kube-controller-manager's job controller, pure).

What lives here: ``reconcile_job(job, pods, now) -> Outcome``: which pods to
create or delete, the Job's status (counts, indexes, conditions) and Events,
and the ttlSecondsAfterFinished clean-up, all derived from the Job and its
pods as they are now (level-triggered, idempotent).

What must not: running or restarting pods (the node agent restarts containers
for restartPolicy OnFailure), any clock or I/O.

Upstream behaviour followed (Kubernetes 1.31):

* Success: NonIndexed with ``completions`` unset completes once one pod
  succeeded and none is active; otherwise once ``succeeded >= completions``.
  Indexed: once every index in [0, completions) succeeded. A finished Job
  first gets the interim condition (``SuccessCriteriaMet`` / ``FailureTarget``),
  its remaining pods are deleted, and the terminal one (``Complete`` /
  ``Failed``) follows once no pod of it is running or terminating.
* Failure reasons and messages: ``BackoffLimitExceeded`` "Job has reached the
  specified backoff limit", ``DeadlineExceeded`` "Job was active longer than
  specified deadline", ``PodFailurePolicy`` (FailJob rule),
  ``MaxFailedIndexesExceeded``, ``FailedIndexes``.
* Recreating a failed pod waits 10 s doubling to 10 min (the job controller's
  pod failure back-off), counted from the latest failure since the last success.

Simplified (said plainly): upstream counts finished pods exactly once through
the ``batch.kubernetes.io/job-tracking`` finalizer and
``status.uncountedTerminatedPods``. Here ``succeeded`` and ``failed`` are the
finished pods present in the view (Indexed keeps ``completedIndexes`` and
``failedIndexes`` monotonic through the status), so a finished pod deleted by
hand before the Job finished is no longer counted. ``successPolicy`` is not
evaluated. The SuccessfulCreate event names the pod by its generateName,
since the API server picks the name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.model.base import ObjectMeta, OwnerReference
from meshwork.model.container import EnvVar, EnvVarSource, ObjectFieldSelector
from meshwork.model.pod import Pod, PodSpec
from meshwork.model.workloads import Job, JobStatus, UncountedTerminatedPods, WorkloadCondition

COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT_KEY = "batch.kubernetes.io/job-index-failure-count"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
MAX_POD_CREATE_DELETE_PER_SYNC = 500  # upstream job controller: MaxPodCreateDeletePerSync
POD_FAILURE_BACKOFF_INITIAL = 10.0  # upstream DefaultJobPodFailureBackOff
POD_FAILURE_BACKOFF_MAX = 600.0  # upstream MaxJobPodFailureBackOff (10 min)

MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETIONS = "Reached expected number of succeeded pods"
MSG_MAX_FAILED_INDEXES = "Job has exceeded the specified maximal number of failed indexes"
MSG_FAILED_INDEXES = "Job has failed indexes"

_INTERIM = {"Complete": "SuccessCriteriaMet", "Failed": "FailureTarget"}


def rfc3339(now: float) -> str:
    """Kubernetes' metav1.Time wire form (UTC, whole seconds)."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def format_indexes(indexes: set[int]) -> str | None:
    """Compressed ranges, as upstream writes completedIndexes: ``1,3-5``; None when empty."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or None


def parse_indexes(text: str | None, completions: int) -> set[int]:
    """The inverse of ``format_indexes``; out-of-range or malformed parts are dropped."""
    found: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            continue
        found.update(i for i in range(int(lo), int(hi or lo) + 1) if i < completions)
    return found


def completion_index(pod: Pod) -> int | None:
    """The pod's index from its annotation (label as fallback), as upstream reads it."""
    for source in (pod.metadata.annotations, pod.metadata.labels):
        value = (source or {}).get(COMPLETION_INDEX_KEY)
        if value is not None:
            return int(value) if value.isdigit() else None
    return None


def _condition(status: JobStatus, kind: str) -> WorkloadCondition | None:
    for cond in status.conditions or ():
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def _set_condition(status: JobStatus, kind: str, value: str, reason: str, message: str, now: float) -> bool:
    """Upsert a condition; True when it changed (transition time moves only on a status flip)."""
    conds = list(status.conditions or [])
    for i, cond in enumerate(conds):
        if cond.type == kind:
            if (cond.status, cond.reason, cond.message) == (value, reason, message):
                return False
            moved = cond.status != value
            conds[i] = cond.model_copy(update={
                "status": value, "reason": reason, "message": message, "last_probe_time": rfc3339(now),
                "last_transition_time": rfc3339(now) if moved else cond.last_transition_time})  # fmt: skip
            status.conditions = conds
            return True
    conds.append(WorkloadCondition.model_validate({
        "type": kind, "status": value, "reason": reason, "message": message,
        "lastProbeTime": rfc3339(now), "lastTransitionTime": rfc3339(now)}))  # fmt: skip
    status.conditions = conds
    return True


def _finish_time(pod: Pod) -> float | None:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    times = [parse_rfc3339(cs.state.terminated.finished_at) for cs in statuses
             if cs.state and cs.state.terminated and cs.state.terminated.finished_at]  # fmt: skip
    return max(times) if times else None


def _ready(pod: Pod) -> bool:
    conds = pod.status.conditions if pod.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conds or ())


@dataclass
class _Pods:
    active: list[Pod] = field(default_factory=list)
    terminating: list[Pod] = field(default_factory=list)
    succeeded: list[Pod] = field(default_factory=list)
    failed: list[Pod] = field(default_factory=list)  # counted toward backoff (not Ignored)
    fail_job: str | None = None  # message of the first FailJob match
    fail_index: set[int] = field(default_factory=set)


def _phase(pod: Pod) -> str:
    return (pod.status.phase if pod.status else None) or "Pending"


def _classify(job: Job, pods: list[Pod]) -> _Pods:
    out = _Pods()
    for pod in sorted(pods, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name or "")):
        phase = _phase(pod)
        if phase == "Succeeded":
            out.succeeded.append(pod)
        elif phase == "Failed":
            action, message = _failure_policy(job, pod)
            if action == "Ignore":
                continue
            out.failed.append(pod)
            if action == "FailJob" and out.fail_job is None:
                out.fail_job = message
            idx = completion_index(pod)
            if action == "FailIndex" and idx is not None:
                out.fail_index.add(idx)
        elif pod.metadata.deletion_timestamp is not None:
            out.terminating.append(pod)
        else:
            out.active.append(pod)
    return out


def _failure_policy(job: Job, pod: Pod) -> tuple[str | None, str]:
    """The first podFailurePolicy rule matching a failed pod: (action, upstream message)."""
    policy = job.spec.pod_failure_policy
    if policy is None or pod.status is None:
        return None, ""
    ns, name = pod.metadata.namespace, pod.metadata.name
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    for index, rule in enumerate(policy.rules):
        req = rule.on_exit_codes
        if req is not None:
            for cs in statuses:
                term = cs.state.terminated if cs.state else None
                if term is None or term.exit_code == 0:
                    continue
                if req.container_name is not None and req.container_name != cs.name:
                    continue
                if (term.exit_code in req.values) == (req.operator == "In"):
                    return rule.action, (f"Container {cs.name} for pod {ns}/{name} failed with exit code "
                                         f"{term.exit_code} matching {rule.action} rule at index {index}")  # fmt: skip
        for pattern in rule.on_pod_conditions or ():
            for cond in pod.status.conditions or ():
                if cond.type == pattern.type and cond.status == pattern.status:
                    return rule.action, (f"Pod {ns}/{name} has condition {cond.type} matching "
                                         f"{rule.action} rule at index {index}")  # fmt: skip
    return None, ""


def _restarts_exceed(job: Job, active: list[Pod]) -> bool:
    """Upstream pastBackoffLimitOnFailure: container restarts count as failures for OnFailure."""
    if job.spec.template.spec.restart_policy != "OnFailure":
        return False
    limit = job.spec.backoff_limit or 0
    total = sum(cs.restart_count for p in active if p.status
                for cs in [*(p.status.init_container_statuses or []), *(p.status.container_statuses or [])])  # fmt: skip
    return total > 0 if limit == 0 else total >= limit


def _backoff_wait(succeeded: list[Pod], failed: list[Pod], now: float) -> float:
    """Seconds until a replacement may start: 10 s doubling per failure since the last success."""
    last_ok = max((t for p in succeeded if (t := _finish_time(p)) is not None), default=None)
    times = sorted(t for p in failed if (t := _finish_time(p)) is not None and (last_ok is None or t > last_ok))
    if not times:
        return 0.0
    delay = min(POD_FAILURE_BACKOFF_INITIAL * 2.0 ** (len(times) - 1), POD_FAILURE_BACKOFF_MAX)
    return max(0.0, times[-1] + float(delay) - now)


def _job_ref(job: Job) -> ObjectRef:
    return ObjectRef("batch", "Job", job.metadata.namespace, job.metadata.name or "", job.metadata.uid)


def _delete_pod(job: Job, pod: Pod) -> list[Action]:
    name = pod.metadata.name or ""
    return [DeleteObject("", "Pod", pod.metadata.namespace, name, pod.metadata.uid),
            RecordEvent(_job_ref(job), "Normal", "SuccessfulDelete", f"Deleted pod: {name}")]  # fmt: skip


def _to_delete(pods: list[Pod]) -> list[Pod]:
    """Upstream ActivePods order, cheapest to lose first: unscheduled, pending, not ready, newest."""
    newest = sorted(pods, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name or ""),
                    reverse=True)  # fmt: skip
    rank = {"Pending": 0, "Unknown": 1, "Running": 2}
    return sorted(newest, key=lambda p: (p.spec.node_name is not None, rank.get(_phase(p), 0), _ready(p)))


def new_pod(job: Job, index: int | None, failures: int = 0) -> Pod:
    """The pod a Job creates: its template, generateName, controller ownerReference, and for
    Indexed Jobs the completion index annotation, label, env var and hostname."""
    tmpl = job.spec.template
    name = job.metadata.name or ""
    labels = dict(tmpl.metadata.labels or {})
    annotations = dict(tmpl.metadata.annotations or {})
    spec: PodSpec = tmpl.spec.model_copy(deep=True)
    generate_name = f"{name}-"
    if index is not None:
        labels[COMPLETION_INDEX_KEY] = str(index)
        annotations[COMPLETION_INDEX_KEY] = str(index)
        if job.spec.backoff_limit_per_index is not None:
            annotations[INDEX_FAILURE_COUNT_KEY] = str(failures)
        generate_name = f"{name}-{index}-"
        if spec.hostname is None:
            spec.hostname = f"{name}-{index}"
        env_source = EnvVarSource(field_ref=ObjectFieldSelector(
            field_path=f"metadata.annotations['{COMPLETION_INDEX_KEY}']"))  # fmt: skip
        for container in [*(spec.init_containers or []), *spec.containers]:
            if not any(e.name == COMPLETION_INDEX_ENV for e in container.env or ()):
                container.env = [*(container.env or []), EnvVar(name=COMPLETION_INDEX_ENV, value_from=env_source)]
    owner = OwnerReference(api_version="batch/v1", kind="Job", name=name, uid=job.metadata.uid or "",
                           controller=True, block_owner_deletion=True)  # fmt: skip
    meta = ObjectMeta(generate_name=generate_name, namespace=job.metadata.namespace,
                      labels=labels or None, annotations=annotations or None,
                      owner_references=[owner])  # fmt: skip
    return Pod(metadata=meta, spec=spec)


def _ttl(job: Job, status: JobStatus, now: float) -> Outcome:
    """The ttl-after-finished controller: delete a finished Job once its TTL has passed."""
    ttl = job.spec.ttl_seconds_after_finished
    if ttl is None:
        return Outcome()
    finished = status.completion_time
    if finished is None:
        cond = _condition(status, "Failed") or _condition(status, "Complete")
        finished = cond.last_transition_time if cond else None
    if finished is None:
        return Outcome()
    remaining = parse_rfc3339(finished) + ttl - now
    if remaining > 0:
        return Outcome(requeue_after=remaining)
    delete = DeleteObject("batch", "Job", job.metadata.namespace, job.metadata.name or "",
                          job.metadata.uid, propagation="Foreground")  # fmt: skip
    return Outcome(actions=(delete,))


def _owned(job: Job, pods: list[Pod]) -> list[Pod]:
    uid = job.metadata.uid
    return [p for p in pods if any(ref.controller and ref.kind == "Job" and
                                   (ref.uid == uid if uid else ref.name == job.metadata.name)
                                   for ref in p.metadata.owner_references or ())]  # fmt: skip


def reconcile_job(job: Job, pods: list[Pod], now: float) -> Outcome:
    """Decide the pods, status and Events of ``job`` given its current ``pods`` at ``now``."""
    old = job.status or JobStatus()
    if job.metadata.deletion_timestamp is not None:
        return Outcome()
    if _condition(old, "Complete") or _condition(old, "Failed"):
        return _ttl(job, old, now)
    status = old.model_copy(deep=True)
    spec = job.spec
    actions: list[Action] = []
    requeue: list[float] = []
    classified = _classify(job, _owned(job, pods))
    indexed = spec.completion_mode == "Indexed"
    completions = spec.completions
    parallelism = spec.parallelism if spec.parallelism is not None else 1
    suspended = bool(spec.suspend)
    ref = _job_ref(job)

    if status.start_time is None and not suspended:
        status.start_time = rfc3339(now)

    # Indexes (Indexed mode): completed and failed sets stay monotonic through the status.
    done_idx: set[int] = set()
    failed_idx: set[int] = set()
    per_index_failures: dict[int, int] = {}
    if indexed and completions is not None:
        done_idx = parse_indexes(old.completed_indexes, completions)
        done_idx |= {i for p in classified.succeeded if (i := completion_index(p)) is not None and i < completions}
        if spec.backoff_limit_per_index is not None:
            failed_idx = parse_indexes(old.failed_indexes, completions) - done_idx
            for p in classified.failed:
                i = completion_index(p)
                if i is not None:
                    per_index_failures[i] = per_index_failures.get(i, 0) + 1
            failed_idx |= {i for i, n in per_index_failures.items()
                           if n > spec.backoff_limit_per_index and i not in done_idx}  # fmt: skip
            failed_idx |= classified.fail_index - done_idx
    succeeded = len(done_idx) if indexed else len(classified.succeeded)
    failed = len(classified.failed)

    # Has the Job reached a terminal state? (failure checks first, as upstream)
    target: tuple[str, str, str] | None = None
    for final, interim in _INTERIM.items():
        cond = _condition(old, interim)
        if cond is not None and target is None:
            target = (final, cond.reason or "", cond.message or "")
    if target is None and classified.fail_job is not None:
        target = ("Failed", "PodFailurePolicy", classified.fail_job)
    if target is None and (failed > (spec.backoff_limit or 0) or _restarts_exceed(job, classified.active)):
        target = ("Failed", "BackoffLimitExceeded", MSG_BACKOFF)
    if target is None and spec.active_deadline_seconds is not None and not suspended and status.start_time:
        left = parse_rfc3339(status.start_time) + spec.active_deadline_seconds - now
        if left <= 0:
            target = ("Failed", "DeadlineExceeded", MSG_DEADLINE)
        else:
            requeue.append(left)
    if target is None and spec.max_failed_indexes is not None and len(failed_idx) > spec.max_failed_indexes:
        target = ("Failed", "MaxFailedIndexesExceeded", MSG_MAX_FAILED_INDEXES)

    active = list(classified.active)
    if target is not None or suspended:
        for pod in _to_delete(active)[:MAX_POD_CREATE_DELETE_PER_SYNC]:
            actions += _delete_pod(job, pod)
            active.remove(pod)
    else:
        active = _manage(job, classified, active, done_idx, failed_idx, per_index_failures, succeeded,
                         parallelism, now, actions, requeue)  # fmt: skip
        if indexed and completions is not None:
            if len(done_idx) == completions:
                target = ("Complete", "CompletionsReached", MSG_COMPLETIONS)
            elif failed_idx and len(done_idx | failed_idx) == completions and not active:
                target = ("Failed", "FailedIndexes", MSG_FAILED_INDEXES)
        elif completions is None and succeeded > 0 and not active:
            target = ("Complete", "CompletionsReached", MSG_COMPLETIONS)
        elif completions is not None and succeeded >= completions and not active:
            target = ("Complete", "CompletionsReached", MSG_COMPLETIONS)

    # Suspension (only while not finishing).
    if target is None and suspended:
        if _set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now):
            actions.append(RecordEvent(ref, "Normal", "Suspended", "Job suspended"))
    elif target is None and _condition(old, "Suspended") is not None:
        _set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
        status.start_time = rfc3339(now)  # the activeDeadlineSeconds timer starts anew
        actions.append(RecordEvent(ref, "Normal", "Resumed", "Job resumed"))

    created = sum(1 for a in actions if isinstance(a, CreateObject))  # counted active, as upstream
    status.active = (len(active) + created) or None
    status.ready = sum(1 for p in active if _ready(p))
    status.terminating = len(classified.terminating) + (len(classified.active) - len(active))
    status.succeeded = succeeded or None
    status.failed = failed or None
    status.uncounted_terminated_pods = UncountedTerminatedPods()
    if indexed:
        status.completed_indexes = format_indexes(done_idx)
        if spec.backoff_limit_per_index is not None:
            status.failed_indexes = format_indexes(failed_idx) or ""

    if target is not None:
        final, reason, message = target
        _set_condition(status, _INTERIM[final], "True", reason, message, now)
        if not active and not status.terminating:
            _set_condition(status, final, "True", reason, message, now)
            if final == "Complete":
                status.completion_time = rfc3339(now)
                actions.append(RecordEvent(ref, "Normal", "Completed", "Job completed"))
            else:
                actions.append(RecordEvent(ref, "Warning", reason, message))
            if spec.ttl_seconds_after_finished is not None:
                requeue.append(max(float(spec.ttl_seconds_after_finished), 0.0))

    if status != old:
        actions.insert(0, UpdateStatus(job.model_copy(update={"status": status})))
    return Outcome(actions=tuple(actions), requeue_after=min(requeue) if requeue else None)


def _manage(job: Job, pods: _Pods, active: list[Pod], done_idx: set[int], failed_idx: set[int],
            per_index_failures: dict[int, int], succeeded: int, parallelism: int, now: float,
            actions: list[Action], requeue: list[float]) -> list[Pod]:  # fmt: skip
    """Create or delete pods toward the wanted number active; returns the pods left active."""
    spec = job.spec
    completions = spec.completions
    budget = MAX_POD_CREATE_DELETE_PER_SYNC
    if spec.completion_mode == "Indexed" and completions is not None:
        keep: list[Pod] = []
        seen: set[int] = set()
        for pod in active:
            i = completion_index(pod)
            if i is None or i >= completions or i in done_idx or i in failed_idx or i in seen:
                if budget > 0:
                    actions.extend(_delete_pod(job, pod))
                    budget -= 1
                    continue
            else:
                seen.add(i)
            keep.append(pod)
        want = min(parallelism, completions - len(done_idx) - len(failed_idx))
        todo = [i for i in range(completions) if i not in done_idx | failed_idx | seen]
        for i in todo[: max(0, min(want - len(keep), budget))]:
            group = [p for p in pods.failed if completion_index(p) == i]
            wait = _backoff_wait([p for p in pods.succeeded if completion_index(p) == i], group, now)
            if wait > 0:
                requeue.append(wait)
                continue
            _create(job, new_pod(job, i, per_index_failures.get(i, 0)), actions)
        return keep
    if completions is None:
        want = len(active) if succeeded > 0 else parallelism
    else:
        want = max(0, min(parallelism, completions - succeeded))
    if len(active) > want:
        for pod in _to_delete(active)[: min(len(active) - want, budget)]:
            actions.extend(_delete_pod(job, pod))
            active = [p for p in active if p is not pod]
    elif len(active) < want:
        wait = _backoff_wait(pods.succeeded, pods.failed, now)
        if wait > 0:
            requeue.append(wait)
        else:
            for _ in range(min(want - len(active), budget)):
                _create(job, new_pod(job, None), actions)
    return active


def _create(job: Job, pod: Pod, actions: list[Action]) -> None:
    actions.append(CreateObject(pod))
    actions.append(RecordEvent(_job_ref(job), "Normal", "SuccessfulCreate",
                               f"Created pod: {pod.metadata.generate_name}"))  # fmt: skip
