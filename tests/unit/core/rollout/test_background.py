"""Background analysis of a canary, pure: the run ``<rollout>-<hash>-<revision>`` starts with the
update and runs beside the steps; its failure aborts; the update's end terminates it."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.reconcile import CreateObject, UpdateObject, UpdateStatus
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.rollout.reconcile import RolloutView, reconcile_rollout
from meshwork.model.argo_analysis import AnalysisRun, AnalysisTemplate
from meshwork.model.argo_rollouts import Rollout
from meshwork.model.pod import Pod
from meshwork.model.workloads import ReplicaSet

T0 = 1_700_000_000.0
TEMPLATE = AnalysisTemplate.model_validate({
    "metadata": {"name": "check", "namespace": "default"},
    "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x/", "jsonPath": "{$.ok}"}}}]}})  # fmt: skip


class World:
    def __init__(self) -> None:
        self.ro = Rollout.model_validate({
            "metadata": {"name": "web", "namespace": "default", "uid": "ro-1", "generation": 1},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "v1"}]}},
                     "strategy": {"canary": {"analysis": {"templates": [{"templateName": "check"}]},
                                             "steps": [{"setWeight": 25}, {"pause": {}}]}}}})  # fmt: skip
        self.rss: dict[str, ReplicaSet] = {}
        self.runs: dict[str, AnalysisRun] = {}

    def pods(self) -> list[Pod]:
        return [Pod.model_validate({
            "metadata": {"name": f"{rs.metadata.name}-{i}", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name,
                                              "uid": rs.metadata.uid, "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(T0 - 100)}]}})
            for rs in self.rss.values() for i in range(rs.spec.replicas)]  # fmt: skip

    def settle(self, now: float) -> None:
        for _ in range(12):
            view = RolloutView(self.ro, self.ro.spec.template, list(self.rss.values()), self.pods(),
                               analysis_runs=list(self.runs.values()), templates={"check": TEMPLATE})  # fmt: skip
            out = reconcile_rollout(view, now)
            if out.empty:
                return
            for a in out.actions:
                obj = a.obj if isinstance(a, CreateObject | UpdateObject | UpdateStatus) else None
                if isinstance(obj, ReplicaSet):
                    if obj.metadata.uid is None:
                        obj = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"uid": f"rs-{len(self.rss)}"})})
                    self.rss[obj.metadata.name or ""] = obj
                elif isinstance(obj, AnalysisRun):
                    self.runs[obj.metadata.name or ""] = obj
                elif isinstance(obj, Rollout):
                    self.ro = obj
        raise AssertionError("reconcile did not settle")

    def update(self, image: str) -> None:
        wire = self.ro.model_dump(mode="json", by_alias=True, exclude_none=True)
        wire["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.ro = Rollout.model_validate(wire)

    def finish_run(self, phase: str) -> AnalysisRun:
        [run] = self.runs.values()
        wire = run.model_dump(mode="json", by_alias=True, exclude_none=True)
        wire["status"] = {"phase": phase, "message": f"metric m {phase}"}
        self.runs[run.metadata.name or ""] = AnalysisRun.model_validate(wire)
        return run

    @property
    def status(self) -> dict[str, Any]:
        assert self.ro.status is not None
        return self.ro.status.model_dump(by_alias=True, exclude_none=True)


def started() -> tuple[World, str, str]:
    w = World()
    w.settle(T0)
    blue = w.status["stableRS"]
    assert w.runs == {}  # no update, no background run
    w.update("v2")
    w.settle(T0 + 1)
    yellow = w.status["currentPodHash"]
    assert list(w.runs) == [f"web-{yellow}-2"]
    assert w.status["phase"] == "Paused" and w.status["currentStepIndex"] == 1
    assert w.status["canary"]["currentBackgroundAnalysisRunStatus"] == {"name": f"web-{yellow}-2", "status": "Pending"}
    return w, blue, yellow


@pytest.mark.parametrize("phase", ["Failed", "Error"])
def test_a_failed_background_run_aborts_the_update(phase: str) -> None:
    w, blue, yellow = started()
    w.finish_run(phase)
    w.settle(T0 + 2)
    assert w.status["phase"] == "Degraded" and w.status["abort"] is True
    assert w.status["message"] == f"RolloutAborted: Rollout aborted update to revision 2: metric m {phase}"
    assert {n: rs.spec.replicas for n, rs in w.rss.items()} == {f"web-{blue}": 4, f"web-{yellow}": 0}
    assert w.status["canary"]["weights"]["canary"]["weight"] == 0


def test_a_successful_background_run_leaves_the_pause_and_a_running_one_is_terminated_at_the_end() -> None:
    w, _, _ = started()
    w.finish_run("Successful")
    w.settle(T0 + 2)
    assert w.status["phase"] == "Paused"
    assert w.status["canary"]["currentBackgroundAnalysisRunStatus"]["status"] == "Successful"
    # Another update: a new run; promoted while it still runs, it is told to terminate.
    w.update("v3")
    w.settle(T0 + 3)
    green = w.status["currentPodHash"]
    running = w.runs[f"web-{green}-3"]
    assert not running.spec.terminate
    status = w.ro.model_dump(mode="json", by_alias=True, exclude_none=True)
    status["status"]["pauseConditions"] = None
    w.ro = Rollout.model_validate(status)
    w.settle(T0 + 4)
    assert w.status["phase"] == "Healthy" and w.status["stableRS"] == green
    assert w.runs[f"web-{green}-3"].spec.terminate is True
