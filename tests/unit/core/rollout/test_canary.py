"""The canary strategy, pure: steps, weights in the user's VirtualService, promotion, abort."""

from __future__ import annotations

from typing import Any

from meshwork.core.reconcile import CreateObject, Outcome, RecordEvent, UpdateObject, UpdateStatus
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.rollout.canary import basic_counts, canary_replicas
from meshwork.core.rollout.reconcile import RolloutView, reconcile_rollout
from meshwork.model.argo_rollouts import CanaryStep, Rollout
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.pod import Pod
from meshwork.model.workloads import ReplicaSet

T0 = 1_700_000_000.0


def rollout(image: str = "app:v1", status: dict[str, Any] | None = None, steps: list[Any] | None = None) -> Rollout:
    body: dict[str, Any] = {
        "metadata": {"name": "web", "namespace": "default", "uid": "ro-1", "generation": 1},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}},
                 "strategy": {"canary": {
                     "canaryService": "web-canary", "stableService": "web-stable",
                     "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}},
                     "steps": steps if steps is not None else [{"setWeight": 20}, {"pause": {"duration": 10}},
                                                               {"setWeight": 50}, {"pause": {}}]}}},
    }  # fmt: skip
    if status:
        body["status"] = status
    return Rollout.model_validate(body)


def svc(name: str) -> Service:
    return Service.model_validate({"metadata": {"name": name, "namespace": "default"},
                                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})  # fmt: skip


VS = VirtualService.model_validate({
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
        {"destination": {"host": "web-stable"}, "weight": 100},
        {"destination": {"host": "web-canary"}, "weight": 0}]}]},
})  # fmt: skip


class World:
    """Applies a reconcile's actions to an in-memory view, with every pod ready at once."""

    def __init__(self, ro: Rollout) -> None:
        self.ro = ro
        self.rss: dict[str, ReplicaSet] = {}
        self.services = {n: svc(n) for n in ("web-canary", "web-stable")}
        self.vs = {"web": VS}
        self.events: list[RecordEvent] = []
        self.n = 0
        self.endpoints_lag = False  # True: Endpoints stay as they were (the endpoints controller is behind)
        self.endpoints: dict[str, Endpoints] = {}

    def pods(self) -> list[Pod]:
        out = []
        for rs in self.rss.values():
            for i in range(rs.spec.replicas):
                out.append(Pod.model_validate({
                    "metadata": {"name": f"{rs.metadata.name}-{i}", "namespace": "default",
                                 "labels": rs.spec.template.metadata.labels if rs.spec.template else {},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                      "name": rs.metadata.name, "uid": rs.metadata.uid,
                                                      "controller": True}]},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                    "status": {"phase": "Running", "podIP": f"127.1.{rs.metadata.uid and rs.metadata.uid[3:]}.{i + 1}",
                               "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(T0 - 100)}]},
                }))  # fmt: skip
        return out

    def list_endpoints(self) -> None:
        """What the endpoints controller writes: each Service's ready pods by selector."""
        pods = self.pods()
        for name, svc_ in self.services.items():
            sel = svc_.spec.selector or {}
            ips = [p.status.pod_ip for p in pods if p.status and all((p.metadata.labels or {}).get(k) == v
                                                                     for k, v in sel.items())]  # fmt: skip
            self.endpoints[name] = Endpoints.model_validate({"metadata": {"name": name, "namespace": "default"},
                                                             "subsets": [{"addresses": [{"ip": ip} for ip in ips]}]})  # fmt: skip

    def sync(self, now: float) -> Outcome:
        if not self.endpoints_lag:
            self.list_endpoints()
        view = RolloutView(self.ro, self.ro.spec.template, list(self.rss.values()), self.pods(),
                           self.services, self.endpoints, self.vs)  # fmt: skip
        out = reconcile_rollout(view, now)
        for a in out.actions:
            if isinstance(a, CreateObject) and isinstance(a.obj, ReplicaSet):
                self.n += 1
                meta = a.obj.metadata.model_copy(update={"uid": f"rs-{self.n}"})
                self.rss[a.obj.metadata.name or ""] = a.obj.model_copy(update={"metadata": meta})
            elif isinstance(a, UpdateObject | UpdateStatus):
                obj = a.obj
                if isinstance(obj, ReplicaSet):
                    self.rss[obj.metadata.name or ""] = obj
                elif isinstance(obj, Service):
                    self.services[obj.metadata.name or ""] = obj
                elif isinstance(obj, VirtualService):
                    self.vs[obj.metadata.name or ""] = obj
                elif isinstance(obj, Rollout):
                    self.ro = obj
            elif isinstance(a, RecordEvent):
                self.events.append(a)
        return out

    def settle(self, now: float, passes: int = 10) -> None:
        for _ in range(passes):
            if self.sync(now).empty:
                return
        raise AssertionError("reconcile did not settle (not idempotent)")

    def weights(self) -> dict[str, int]:
        route = self.vs["web"].spec.http[0].route  # type: ignore[index]
        return {d.destination.host: d.weight or 0 for d in route or ()}

    @property
    def status(self) -> dict[str, Any]:
        assert self.ro.status is not None
        return self.ro.status.model_dump(by_alias=True, exclude_none=True)


def test_first_rollout_is_stable_at_once() -> None:
    w = World(rollout())
    w.settle(T0)
    assert w.status["phase"] == "Healthy"
    assert w.status["stableRS"] == w.status["currentPodHash"]
    assert [rs.spec.replicas for rs in w.rss.values()] == [4]
    h = w.status["stableRS"]
    assert all(s.spec.selector["rollouts-pod-template-hash"] == h for s in w.services.values())  # type: ignore[index]


def test_steps_set_weights_pause_and_promote() -> None:
    w = World(rollout())
    w.settle(T0)
    stable = w.status["stableRS"]
    w.ro = rollout("app:v2", w.ro.status.model_dump(by_alias=True, exclude_none=True))  # type: ignore[union-attr]
    w.settle(T0 + 1)
    assert w.weights() == {"web-stable": 80, "web-canary": 20}
    assert w.status["phase"] == "Paused" and w.status["currentStepIndex"] == 1
    canary = w.status["currentPodHash"]
    assert w.rss[f"web-{canary}"].spec.replicas == 1 and w.rss[f"web-{stable}"].spec.replicas == 4
    assert w.services["web-canary"].spec.selector["rollouts-pod-template-hash"] == canary  # type: ignore[index]
    w.settle(T0 + 5)  # the 10 s pause is not over
    assert w.status["currentStepIndex"] == 1
    w.settle(T0 + 12)
    assert w.weights() == {"web-stable": 50, "web-canary": 50}
    assert w.status["phase"] == "Paused" and w.status["currentStepIndex"] == 3  # the indefinite pause
    # promote: the user removes the pause condition
    st = dict(w.status)
    st.pop("pauseConditions")
    w.ro = rollout("app:v2", st)
    w.settle(T0 + 13)
    assert w.status["stableRS"] == canary and w.status["phase"] == "Healthy"
    assert w.weights() == {"web-stable": 100, "web-canary": 0}
    assert w.services["web-stable"].spec.selector["rollouts-pod-template-hash"] == canary  # type: ignore[index]
    assert w.rss[f"web-{stable}"].spec.replicas == 4  # scale-down delay (30 s)
    w.settle(T0 + 50)
    assert w.rss[f"web-{stable}"].spec.replicas == 0
    reasons = [e.reason for e in w.events]
    assert reasons.count("RolloutStepCompleted") == 4 and "RolloutCompleted" in reasons


def test_abort_sends_traffic_back_and_scales_the_canary_down_later() -> None:
    w = World(rollout())
    w.settle(T0)
    w.ro = rollout("app:v2", w.ro.status.model_dump(by_alias=True, exclude_none=True))  # type: ignore[union-attr]
    w.settle(T0 + 1)
    w.ro = rollout("app:v2", {**w.status, "abort": True})
    w.settle(T0 + 2)
    assert w.weights() == {"web-stable": 100, "web-canary": 0}
    assert w.status["phase"] == "Degraded" and w.status["message"].startswith("RolloutAborted")
    canary = w.status["currentPodHash"]
    assert w.rss[f"web-{canary}"].spec.replicas == 1
    w.settle(T0 + 40)
    assert w.rss[f"web-{canary}"].spec.replicas == 0


def test_canary_replicas_and_basic_counts() -> None:
    steps = [CanaryStep.model_validate(s) for s in ({"setWeight": 20}, {"setCanaryScale": {"replicas": 3}},
                                                     {"setWeight": 40})]  # fmt: skip
    assert canary_replicas(steps, 0, 5, routed=True) == 1
    assert canary_replicas(steps, 1, 5, routed=True) == 3
    assert canary_replicas(steps, 2, 5, routed=True) == 3  # setCanaryScale holds until matchTrafficWeight
    assert canary_replicas(steps, 2, 5, routed=False) == 2
    # 5 replicas, 25 % surge (2) and unavailable (1): canary grows first, stable shrinks after
    assert basic_counts(5, 2, (0, 0), (5, 5), 2, 1) == (2, 4)  # one stable pod may go at once
    assert basic_counts(5, 2, (2, 0), (4, 4), 2, 1) == (2, 4)  # no more until the canary is available
    assert basic_counts(5, 2, (2, 2), (4, 4), 2, 1) == (2, 3)


def test_a_weight_waits_for_the_canary_pods_to_be_endpoints() -> None:
    """The weight is written only once the canary Service's Endpoints list the canary's ready pods:
    earlier, the canary destination would have no endpoint (503 no healthy upstream)."""
    w = World(rollout())
    w.settle(T0)
    w.ro = rollout("app:v2", w.ro.status.model_dump(by_alias=True, exclude_none=True))  # type: ignore[union-attr]
    w.endpoints_lag = True
    for _ in range(5):
        w.sync(T0 + 1)
    assert w.weights() == {"web-stable": 100, "web-canary": 0}
    assert "Endpoints of service 'web-canary'" in w.status["message"]
    assert w.status["phase"] == "Progressing"
    w.endpoints_lag = False
    w.settle(T0 + 1)
    assert w.weights() == {"web-stable": 80, "web-canary": 20}
    assert w.status["phase"] == "Paused"
