"""CronWorkflow: submission per scheduled time, concurrency policies, history limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meshwork.core.reconcile import CreateObject, DeleteObject, UpdateObject, UpdateStatus
from meshwork.core.workflow.cronwf import reconcile_cronworkflow
from meshwork.model.argo_workflows import CronWorkflow, Workflow

CREATED = "2027-01-15T08:00:00Z"
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()


def cron_wf(**spec: Any) -> CronWorkflow:
    return CronWorkflow.model_validate({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
        "metadata": {"name": "tick", "namespace": "default", "uid": "u-1", "creationTimestamp": CREATED},
        "spec": {"schedules": ["* * * * *"], "workflowMetadata": {"labels": {"team": "a"}},
                 "workflowSpec": {"entrypoint": "m", "templates": [{"name": "m", "container": {"image": "busybox"}}]},
                 **spec},
    })  # fmt: skip


def child(cwf: CronWorkflow, at: float, phase: str | None = None, finished: str | None = None) -> Workflow:
    from meshwork.core.workflow.cronwf import new_workflow

    wf = new_workflow(cwf, datetime.fromtimestamp(at, UTC))
    raw = wf.model_dump(mode="json", by_alias=True, exclude_none=True)
    if phase:
        raw["status"] = {"phase": phase, **({"finishedAt": finished} if finished else {})}
    return Workflow.model_validate(raw)


def creates(out: Any) -> list[Workflow]:
    return [a.obj for a in out.actions if isinstance(a, CreateObject)]


def test_submits_one_workflow_per_scheduled_time_named_by_it() -> None:
    cwf = cron_wf()
    assert creates(reconcile_cronworkflow(cwf, [], T0 + 30)) == []  # nothing due yet
    out = reconcile_cronworkflow(cwf, [], T0 + 61)
    [wf] = creates(out)
    assert wf.metadata.name == f"tick-{int(T0 + 60)}"
    assert wf.metadata.labels == {"team": "a", "workflows.argoproj.io/cron-workflow": "tick"}
    assert wf.metadata.annotations["workflows.argoproj.io/scheduled-time"] == "2027-01-15T08:01:00Z"
    assert wf.metadata.owner_references[0].kind == "CronWorkflow"
    assert 58 < (out.requeue_after or 0) < 60
    status = next(a.obj for a in out.actions if isinstance(a, UpdateStatus)).status
    assert status.last_scheduled_time == "2027-01-15T08:01:00Z" and len(status.active) == 1
    # the status write was lost in a crash: the existing workflow is adopted, not submitted twice
    assert creates(reconcile_cronworkflow(cwf, [wf], T0 + 65)) == []


def test_forbid_skips_while_running_and_replace_terminates() -> None:
    running = child(cron_wf(), T0 + 60, "Running")
    forbid = cron_wf(concurrencyPolicy="Forbid")
    assert creates(reconcile_cronworkflow(forbid, [running], T0 + 121)) == []
    replace = cron_wf(concurrencyPolicy="Replace")
    out = reconcile_cronworkflow(replace, [running], T0 + 121)
    stopped = [a.obj for a in out.actions if isinstance(a, UpdateObject)]
    assert [w.spec.shutdown for w in stopped] == ["Terminate"]
    assert [w.metadata.name for w in creates(out)] == [f"tick-{int(T0 + 120)}"]
    allow = cron_wf()
    assert len(creates(reconcile_cronworkflow(allow, [running], T0 + 121))) == 1


def test_history_limits_delete_the_oldest_finished() -> None:
    cwf = cron_wf(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=0, suspend=True)
    done = [child(cwf, T0 + 60 * i, "Succeeded", f"2027-01-15T08:0{i}:30Z") for i in range(1, 4)]
    failed = child(cwf, T0 + 240, "Failed", "2027-01-15T08:04:30Z")
    out = reconcile_cronworkflow(cwf, [*done, failed], T0 + 300)
    deleted = sorted(a.name for a in out.actions if isinstance(a, DeleteObject))
    assert deleted == sorted([done[0].metadata.name, done[1].metadata.name, failed.metadata.name])
    assert creates(out) == []  # suspended


def test_finished_workflows_are_counted_once() -> None:
    cwf = cron_wf(suspend=True)
    running = child(cwf, T0 + 60, "Running")
    first = reconcile_cronworkflow(cwf, [running], T0 + 70)
    cwf = next(a.obj for a in first.actions if isinstance(a, UpdateStatus))
    done = child(cwf, T0 + 60, "Succeeded", "2027-01-15T08:01:20Z")  # type: ignore[arg-type]
    second = reconcile_cronworkflow(cwf, [done], T0 + 90)  # type: ignore[arg-type]
    cwf2 = next(a.obj for a in second.actions if isinstance(a, UpdateStatus))
    assert cwf2.status.succeeded == 1 and not cwf2.status.active
    assert not [a for a in reconcile_cronworkflow(cwf2, [done], T0 + 95).actions if isinstance(a, UpdateStatus)]  # type: ignore[arg-type]
