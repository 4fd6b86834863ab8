"""The job provider, pure: the Job of a measurement, and the measurement of a finished Job."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.rollout.analysis import decide_run
from meshwork.core.rollout.jobs import (
    METRIC_LABEL,
    RUN_UID_LABEL,
    job_measurement,
    job_name,
    measurement_job,
)
from meshwork.model.argo_analysis import AnalysisRun
from meshwork.model.workloads import Job

T0 = 1_700_000_000.0
JOB_METRIC = {"name": "check", "failureLimit": 0, "provider": {"job": {
    "metadata": {"labels": {"team": "a"}},
    "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "c", "image": "alpine", "command": ["sh", "-c", "exit 0"]}]}}}}}}  # fmt: skip


def run() -> AnalysisRun:
    return AnalysisRun.model_validate({"metadata": {"name": "ro-abc-2-1", "namespace": "prod", "uid": "u-1"},
                                       "spec": {"metrics": [JOB_METRIC]}})  # fmt: skip


def finished(kind: str | None, **status: Any) -> Job:
    job = measurement_job(run(), run().spec.metrics[0], 1)
    conditions = [{"type": kind, "status": "True", "lastTransitionTime": "2023-11-14T22:13:30Z",
                   "reason": "BackoffLimitExceeded"}] if kind else []  # fmt: skip
    meta = job.metadata.model_copy(update={"creation_timestamp": "2023-11-14T22:13:20Z"})
    return Job.model_validate({**job.model_dump(by_alias=True, exclude_none=True),
                               "metadata": meta.model_dump(by_alias=True, exclude_none=True),
                               "status": {"conditions": conditions, **status}})  # fmt: skip


def test_the_job_is_named_labelled_and_owned_as_argo_does() -> None:
    job = measurement_job(run(), run().spec.metrics[0], 3)
    assert job.metadata.name == job_name(run(), "check", 3) == "u-1.check.3"
    assert job.metadata.namespace == "prod"
    labels = job.metadata.labels or {}
    assert labels[RUN_UID_LABEL] == "u-1" and labels[METRIC_LABEL] == "check" and labels["team"] == "a"
    [owner] = job.metadata.owner_references or []
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("AnalysisRun", "ro-abc-2-1", "u-1", True)
    assert job.spec.backoff_limit == 0


@pytest.mark.parametrize(("kind", "phase"), [("Complete", "Successful"), ("Failed", "Failed"), (None, None)])
def test_a_finished_job_is_a_measurement(kind: str | None, phase: str | None) -> None:
    taken = job_measurement(finished(kind), "check")
    if phase is None:
        assert taken is None
        return
    assert taken is not None and taken.phase == phase
    assert taken.started_at == "2023-11-14T22:13:20Z" and taken.finished_at == "2023-11-14T22:13:30Z"
    decision = decide_run(run(), [taken], T0)
    [result] = [r.model_dump(by_alias=True) for r in decision.status.metric_results or ()]
    assert result["phase"] == phase and result["measurements"][0]["phase"] == phase
    assert "value" not in result["measurements"][0]
    assert decision.status.phase == phase
    if phase == "Failed":
        assert "BackoffLimitExceeded" in result["measurements"][0]["message"]
    # The same Job handed in again changes nothing (idempotent).
    again = run().model_copy(update={"status": decision.status})
    assert decide_run(again, [taken], T0 + 1).status == decision.status
