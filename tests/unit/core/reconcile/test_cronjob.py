"""CronJob reconcile: schedules, concurrency policies, missed times, history, names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.reconcile import (
    CreateObject,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.reconcile.cronjob import SCHEDULED_TIMESTAMP_KEY, job_name, reconcile_cronjob
from meshwork.core.reconcile.job import rfc3339
from meshwork.model.workloads import CronJob, Job, JobStatus, WorkloadCondition

CREATED = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def make_cj(**spec: Any) -> CronJob:
    return CronJob.model_validate({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "ns", "uid": "cj1", "creationTimestamp": rfc3339(CREATED)},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {
            "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
            "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}}, **spec},
    })  # fmt: skip


class Cluster:
    def __init__(self, cj: CronJob) -> None:
        self.cj = cj
        self.jobs: dict[str, Job] = {}
        self.events: list[RecordEvent] = []

    def reconcile(self, now: float) -> Outcome:
        return reconcile_cronjob(self.cj, list(self.jobs.values()), now)

    def step(self, now: float, *, check: bool = True) -> Outcome:
        out = self.reconcile(now)
        for action in out.actions:
            if isinstance(action, CreateObject):
                job = action.obj.model_copy(deep=True)
                assert isinstance(job, Job) and job.metadata.name
                assert job.metadata.name not in self.jobs, "duplicate Job"
                job.metadata.uid = f"uid-{job.metadata.name}"
                self.jobs[job.metadata.name] = job
            elif isinstance(action, DeleteObject):
                del self.jobs[action.name]
            elif isinstance(action, UpdateStatus):
                assert isinstance(action.obj, CronJob)
                self.cj = action.obj
            elif isinstance(action, RecordEvent):
                self.events.append(action)
        if check:
            assert self.reconcile(now).empty, "not idempotent"
        return out

    def finish(self, name: str, kind: str, now: float) -> None:
        self.jobs[name].status = JobStatus(
            start_time=rfc3339(now - 10), completion_time=rfc3339(now) if kind == "Complete" else None,
            conditions=[WorkloadCondition(type=kind, status="True")])  # fmt: skip

    def active(self) -> list[str]:
        return [a.name or "" for a in (self.cj.status.active if self.cj.status else None) or []]

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def test_creates_job_named_by_minutes_since_epoch() -> None:
    c = Cluster(make_cj())
    out = c.step(at("2024-01-01T00:04:00"))
    assert not c.jobs and out.requeue_after == pytest.approx(60.1)
    out = c.step(at("2024-01-01T00:05:07"))
    name = f"hello-{int(at('2024-01-01T00:05:00')) // 60}"
    assert list(c.jobs) == [name] == c.active()
    job = c.jobs[name]
    assert (job.metadata.labels, (job.metadata.annotations or {})["note"]) == ({"team": "a"}, "x")
    assert (job.metadata.annotations or {})[SCHEDULED_TIMESTAMP_KEY] == "2024-01-01T00:05:00Z"
    ref = (job.metadata.owner_references or [])[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("CronJob", "hello", "cj1", True)
    assert c.cj.status is not None and c.cj.status.last_schedule_time == "2024-01-01T00:05:00Z"
    assert out.requeue_after == pytest.approx(293 + 0.1)
    assert c.events[-1].message == f"Created job {name}"


def test_time_zone_and_annotation() -> None:
    c = Cluster(make_cj(schedule="0 9 * * *", timeZone="America/New_York"))
    c.step(at("2024-01-01T14:00:00"))  # 09:00 EST
    (job,) = c.jobs.values()
    assert (job.metadata.annotations or {})[SCHEDULED_TIMESTAMP_KEY] == "2024-01-01T09:00:00-05:00"
    assert job.metadata.name == job_name("hello", datetime(2024, 1, 1, 14, tzinfo=UTC))


def test_restart_never_duplicates() -> None:
    c = Cluster(make_cj())
    now = at("2024-01-01T00:05:01")
    out = c.reconcile(now)
    create = next(a for a in out.actions if isinstance(a, CreateObject))
    job = create.obj.model_copy(deep=True)
    assert isinstance(job, Job) and job.metadata.name
    c.jobs[job.metadata.name] = job  # the Job was created, the status write was lost
    c.step(now)
    assert len(c.jobs) == 1 and c.active() == [job.metadata.name]
    assert c.cj.status is not None and c.cj.status.last_schedule_time == "2024-01-01T00:05:00Z"


def test_forbid() -> None:
    c = Cluster(make_cj(concurrencyPolicy="Forbid"))
    c.step(at("2024-01-01T00:05:00"))
    out = c.step(at("2024-01-01T00:10:00"), check=False)
    assert len(c.jobs) == 1 and c.reasons()[-1] == "JobAlreadyActive"
    assert c.events[-1].message == ("Not starting job because prior execution is running "
                                    "and concurrency policy is Forbid")  # fmt: skip
    assert not any(isinstance(a, CreateObject | UpdateStatus) for a in out.actions)
    first = next(iter(c.jobs))
    c.finish(first, "Complete", at("2024-01-01T00:11:00"))
    c.step(at("2024-01-01T00:11:00"))  # the missed 00:10 run starts now
    assert len(c.jobs) == 2 and "SawCompletedJob" in c.reasons()
    assert c.cj.status is not None and c.cj.status.last_successful_time == "2024-01-01T00:11:00Z"


def test_replace() -> None:
    c = Cluster(make_cj(concurrencyPolicy="Replace"))
    c.step(at("2024-01-01T00:05:00"))
    (old,) = c.jobs
    c.step(at("2024-01-01T00:10:00"))
    (new,) = c.jobs
    assert new != old and c.active() == [new]
    assert f"Deleted job {old}" in [e.message for e in c.events if e.reason == "SuccessfulDelete"]


def test_allow_runs_concurrently() -> None:
    c = Cluster(make_cj())
    c.step(at("2024-01-01T00:05:00"))
    c.step(at("2024-01-01T00:10:00"))
    assert len(c.jobs) == 2 and len(c.active()) == 2


def test_missed_schedules_run_only_the_latest() -> None:
    c = Cluster(make_cj())
    c.step(at("2024-01-01T01:02:00"))  # 00:05 ... 01:00 were missed: one Job, for 01:00
    (job,) = c.jobs.values()
    assert (job.metadata.annotations or {})[SCHEDULED_TIMESTAMP_KEY] == "2024-01-01T01:00:00Z"


def test_starting_deadline_skips_too_late() -> None:
    c = Cluster(make_cj(startingDeadlineSeconds=60))
    out = c.step(at("2024-01-01T00:07:00"))  # 00:05 is more than 60 s ago
    assert not c.jobs and out.requeue_after == pytest.approx(180.1)
    c.step(at("2024-01-01T00:10:59"))
    assert len(c.jobs) == 1


def test_too_many_missed() -> None:
    c = Cluster(make_cj(schedule="* * * * *"))
    c.step(at("2024-01-03T00:00:00"))
    assert "TooManyMissedTimes" in c.reasons() and len(c.jobs) == 1


def test_suspend() -> None:
    c = Cluster(make_cj(suspend=True))
    out = c.step(at("2024-01-01T00:05:00"))
    assert not c.jobs and out.requeue_after is None


def test_history_limits() -> None:
    c = Cluster(make_cj(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1))
    minute = 5
    names = []
    for kind in ("Complete", "Complete", "Failed", "Failed", "Complete"):
        now = at(f"2024-01-01T00:{minute:02d}:00")
        c.step(now)
        name = max(c.jobs, key=lambda n: int(n.rsplit("-", 1)[1]))
        names.append(name)
        c.finish(name, kind, now + 1)
        minute += 5
    c.step(at(f"2024-01-01T00:{minute - 4:02d}:00"))
    assert sorted(c.jobs) == sorted([names[3], names[4]])
    assert c.active() == []


def test_unknown_time_zone_is_reported() -> None:
    c = Cluster(make_cj(timeZone="Mars/Olympus"))
    out = c.reconcile(at("2024-01-01T00:05:00"))
    assert [(a.reason, a.type) for a in out.actions if isinstance(a, RecordEvent)] == [("UnknownTimeZone", "Warning")]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["Allow", "Forbid", "Replace"]),
       st.lists(st.tuples(st.integers(1, 900), st.sampled_from([None, "Complete", "Failed"])),
                min_size=1, max_size=10))  # fmt: skip
def test_idempotent_and_never_duplicates(policy: str, steps: list[tuple[int, str | None]]) -> None:
    c = Cluster(make_cj(concurrencyPolicy=policy, successfulJobsHistoryLimit=2))
    now = CREATED
    for delay, outcome in steps:
        now += delay
        c.step(now, check=False)
        again = c.reconcile(now)
        assert all(isinstance(a, RecordEvent) and a.reason == "JobAlreadyActive" for a in again.actions)
        if outcome and c.active():
            c.finish(c.active()[0], outcome, now)
        if policy != "Allow":
            assert len(c.active()) <= 1
