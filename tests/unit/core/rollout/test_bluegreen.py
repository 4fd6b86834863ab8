"""The blue-green strategy, pure: preview, promotion, and postPromotionAnalysis that can switch back."""

from __future__ import annotations

from typing import Any

from meshwork.core.reconcile import CreateObject, Outcome, RecordEvent, UpdateObject, UpdateStatus
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.rollout.reconcile import RolloutView, reconcile_rollout
from meshwork.model.argo_analysis import AnalysisRun, AnalysisTemplate
from meshwork.model.argo_rollouts import Rollout
from meshwork.model.core import Service
from meshwork.model.pod import Pod
from meshwork.model.workloads import ReplicaSet

T0 = 1_700_000_000.0
TEMPLATE = AnalysisTemplate.model_validate({
    "metadata": {"name": "post", "namespace": "default"},
    "spec": {"metrics": [{"name": "ok", "provider": {"web": {"url": "http://x/"}}}]},
})  # fmt: skip


def rollout(image: str, status: dict[str, Any] | None = None) -> Rollout:
    body: dict[str, Any] = {
        "metadata": {"name": "bg", "namespace": "default", "uid": "ro-1", "generation": 1},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "bg"}},
                 "template": {"metadata": {"labels": {"app": "bg"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}},
                 "strategy": {"blueGreen": {"activeService": "active", "previewService": "preview",
                                            "scaleDownDelaySeconds": 5, "abortScaleDownDelaySeconds": 0,
                                            "postPromotionAnalysis": {"templates": [{"templateName": "post"}]}}}},
    }  # fmt: skip
    if status:
        body["status"] = status
    return Rollout.model_validate(body)


class World:
    """Applies a reconcile's actions in memory; every pod is ready at once; runs get the phase asked."""

    def __init__(self, ro: Rollout) -> None:
        self.ro = ro
        self.rss: dict[str, ReplicaSet] = {}
        self.services = {n: Service.model_validate({"metadata": {"name": n, "namespace": "default"},
                                                    "spec": {"selector": {"app": "bg"}, "ports": [{"port": 80}]}})
                         for n in ("active", "preview")}  # fmt: skip
        self.runs: dict[str, AnalysisRun] = {}
        self.events: list[RecordEvent] = []

    def pods(self) -> list[Pod]:
        return [Pod.model_validate({
            "metadata": {"name": f"{rs.metadata.name}-{i}", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name,
                                              "uid": rs.metadata.uid, "controller": True}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(T0 - 100)}]},
        }) for rs in self.rss.values() for i in range(rs.spec.replicas)]  # fmt: skip

    def sync(self, now: float) -> Outcome:
        view = RolloutView(self.ro, self.ro.spec.template, list(self.rss.values()), self.pods(), self.services,
                           analysis_runs=list(self.runs.values()), templates={"post": TEMPLATE})  # fmt: skip
        out = reconcile_rollout(view, now)
        for a in out.actions:
            if isinstance(a, CreateObject) and isinstance(a.obj, ReplicaSet):
                meta = a.obj.metadata.model_copy(update={"uid": f"rs-{len(self.rss)}"})
                self.rss[a.obj.metadata.name or ""] = a.obj.model_copy(update={"metadata": meta})
            elif isinstance(a, CreateObject) and isinstance(a.obj, AnalysisRun):
                self.runs[a.obj.metadata.name or ""] = a.obj
            elif isinstance(a, UpdateObject | UpdateStatus):
                if isinstance(a.obj, ReplicaSet):
                    self.rss[a.obj.metadata.name or ""] = a.obj
                elif isinstance(a.obj, Service):
                    self.services[a.obj.metadata.name or ""] = a.obj
                elif isinstance(a.obj, Rollout):
                    self.ro = a.obj
            elif isinstance(a, RecordEvent):
                self.events.append(a)
        return out

    def settle(self, now: float) -> None:
        for _ in range(12):
            if self.sync(now).empty:
                return
        raise AssertionError("reconcile did not settle (not idempotent)")

    def finish_runs(self, phase: str) -> None:
        for name, run in self.runs.items():
            wire = run.model_dump(by_alias=True, exclude_none=True)
            self.runs[name] = AnalysisRun.model_validate({**wire, "status": {"phase": phase}})

    def selector(self, service: str) -> str:
        return (self.services[service].spec.selector or {})["rollouts-pod-template-hash"]

    @property
    def status(self) -> dict[str, Any]:
        assert self.ro.status is not None
        return self.ro.status.model_dump(by_alias=True, exclude_none=True)

    def replicas(self) -> dict[str, int]:
        return {n.removeprefix("bg-"): rs.spec.replicas for n, rs in self.rss.items()}


def updated(w: World) -> tuple[str, str]:
    """Blue running, then the template changed to green and synced to the post-promotion analysis."""
    w.settle(T0)
    blue = w.status["stableRS"]
    w.ro = rollout("app:green", w.status)
    w.settle(T0 + 1)
    return blue, w.status["currentPodHash"]


def test_post_promotion_analysis_keeps_the_old_pods_stable_until_it_passes() -> None:
    w = World(rollout("app:blue"))
    blue, green = updated(w)
    assert w.selector("active") == green  # promoted at once (autoPromotionEnabled defaults to true)
    assert w.status["stableRS"] == blue and w.status["phase"] == "Progressing"
    assert w.replicas() == {blue: 2, green: 2} and len(w.runs) == 1
    w.finish_runs("Successful")
    w.settle(T0 + 2)
    assert w.status["stableRS"] == green and w.status["phase"] == "Healthy"
    assert w.replicas() == {blue: 2, green: 2}  # the scale-down delay starts now
    w.settle(T0 + 8)
    assert w.replicas() == {blue: 0, green: 2}


def test_a_failed_post_promotion_analysis_switches_active_back() -> None:
    w = World(rollout("app:blue"))
    blue, green = updated(w)
    w.finish_runs("Failed")
    w.settle(T0 + 2)
    assert w.selector("active") == blue and w.selector("preview") == blue
    assert w.status["phase"] == "Degraded" and w.status["stableRS"] == blue
    assert "post-promotion analysis Failed" in w.status["message"]
    assert w.replicas() == {blue: 2, green: 0}
    assert "RolloutAborted" in {e.reason for e in w.events}
