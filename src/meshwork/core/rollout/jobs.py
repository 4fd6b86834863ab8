"""The ``job`` analysis provider, pure: the Job a measurement runs, and the measurement a Job gives.

What lives here: the Job of a metric's n-th measurement (Argo Rollouts'
job provider: named ``<run uid>.<metric>.<n>``, the metric's ``job.spec`` and
``job.metadata``, labelled with the run and the metric, owned by the run),
and the measurement a finished Job stands for: Successful when the Job is
Complete, Failed when it Failed (the metric's conditions are not consulted,
as in Argo). The shell creates the Job and hands each finished one back in.

What must not: creating Jobs or watching them (``meshwork.control.rollouts``), or a clock.
"""

from __future__ import annotations

from meshwork.core.reconcile.podtemplate import controller_ref
from meshwork.core.rollout.analysis import FAILED, SUCCESSFUL, Taken
from meshwork.model.argo_analysis import AnalysisRun, Metric
from meshwork.model.base import ObjectMeta
from meshwork.model.workloads import Job

RUN_UID_LABEL = "analysisrun.argoproj.io/uid"  # Argo's AnalysisRunUIDLabelKey
RUN_NAME_LABEL = "analysisrun.argoproj.io/name"
METRIC_LABEL = "analysisrun.argoproj.io/metric-name"


def job_name(run: AnalysisRun, metric: str, n: int) -> str:
    """Argo's name for the Job of measurement ``n`` (1-based) of ``metric``."""
    return f"{run.metadata.uid}.{metric}.{n}"


def measurement_job(run: AnalysisRun, metric: Metric, n: int) -> Job:
    """The Job that takes measurement ``n`` of ``metric`` (which must have a job provider)."""
    spec = metric.provider.job
    assert spec is not None
    meta = spec.metadata or ObjectMeta()
    labels = {**(meta.labels or {}), RUN_UID_LABEL: run.metadata.uid or "", METRIC_LABEL: metric.name,
              RUN_NAME_LABEL: run.metadata.name or ""}  # fmt: skip
    return Job(
        metadata=ObjectMeta(name=job_name(run, metric.name, n), namespace=run.metadata.namespace,
                            labels=labels, annotations=meta.annotations, owner_references=[controller_ref(run)]),
        spec=spec.spec,
    )  # fmt: skip


def _condition(job: Job, kind: str) -> tuple[bool, str | None]:
    for c in (job.status.conditions if job.status else None) or ():
        if c.type == kind and c.status == "True":
            return True, c.last_transition_time
    return False, None


def job_measurement(job: Job, metric: str) -> Taken | None:
    """The measurement a finished Job gives (None while it runs).

    It starts when the Job was created and ends when it finished; a Job that
    failed says why in the measurement's message.
    """
    started = job.metadata.creation_timestamp or ""
    complete, at = _condition(job, "Complete")
    if complete:
        return Taken(metric, started, (job.status.completion_time if job.status else None) or at or started,
                     phase=SUCCESSFUL)  # fmt: skip
    failed, at = _condition(job, "Failed")
    if failed:
        reason = next((c.reason or c.message for c in (job.status.conditions if job.status else None) or ()
                       if c.type == "Failed"), None)  # fmt: skip
        return Taken(metric, started, at or started, phase=FAILED,
                     error=f"job {job.metadata.name} failed" + (f": {reason}" if reason else ""))  # fmt: skip
    return None
