"""One HPA sync (``core.autoscale.decide``): status, conditions and events as upstream writes them."""

from __future__ import annotations

from typing import Any

from meshwork.core.autoscale.behavior import History
from meshwork.core.autoscale.decide import (
    MetricFailure,
    ObjectMetricInput,
    PodMetricInput,
    decide,
    quantity,
)
from meshwork.core.autoscale.replicas import PodState, Sample
from meshwork.model.autoscaling import HorizontalPodAutoscaler

NOW = 50_000.0
STAMP = "2026-01-01T00:00:00Z"
RPS = {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                "target": {"type": "AverageValue", "averageValue": "10"}}}  # fmt: skip
CPU = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}


def hpa(*metrics: dict[str, Any], **spec: Any) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler.model_validate({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 2, "maxReplicas": 6, "metrics": list(metrics), **spec}})  # fmt: skip


def per_pod(*values: float) -> PodMetricInput:
    names = [f"p{i}" for i in range(len(values))]
    return PodMetricInput(tuple(PodState(n, started=NOW - 900, ready_since=NOW - 900) for n in names),
                          {n: Sample(v, NOW, 3.0) for n, v in zip(names, values, strict=True)},
                          {n: 0.2 for n in names})  # fmt: skip


def conditions(decision: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in decision.status.conditions}


def test_scale_up_on_requests_per_second() -> None:
    d = decide(hpa(RPS), 2, [per_pod(20.0, 20.0)], History(), NOW, STAMP)
    assert d.replicas == 4
    assert [(e.type, e.reason, e.message) for e in d.events] == [
        ("Normal", "SuccessfulRescale", "New size: 4; reason: pods metric requests_per_second above target")]
    assert conditions(d) == {"AbleToScale": ("True", "SucceededRescale"), "ScalingActive": ("True", "ValidMetricFound"),
                             "ScalingLimited": ("False", "DesiredWithinRange")}  # fmt: skip
    assert d.status.current_replicas == 2 and d.status.desired_replicas == 4 and d.status.last_scale_time == STAMP
    assert d.status.current_metrics is not None
    assert d.status.current_metrics[0].model_dump(by_alias=True, exclude_none=True) == {
        "type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "current": {"averageValue": "20"}}}


def test_no_change_within_tolerance_is_idempotent() -> None:
    first = decide(hpa(RPS), 2, [per_pod(10.4, 9.8)], History(), NOW, STAMP)
    assert first.replicas is None and not first.events
    again = decide(hpa(RPS).model_copy(update={"status": first.status}), 2, [per_pod(10.4, 9.8)], first.history,
                   NOW + 1, "2026-01-01T00:00:01Z")  # fmt: skip
    assert again.replicas is None and again.status == first.status  # transition times kept


def test_largest_metric_wins_and_utilization_status() -> None:
    d = decide(hpa(CPU, RPS), 2, [per_pod(0.15, 0.15), per_pod(5.0, 5.0)], History(), NOW, STAMP)
    # cpu 75 % of 50 % -> 3; rps 5 of 10 -> 1: cpu wins.
    assert d.replicas == 3
    assert d.events[0].message == "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    cpu = d.status.current_metrics[0].model_dump(by_alias=True, exclude_none=True)  # type: ignore[index]
    assert cpu == {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75,
                                                                              "averageValue": "150m"}}}  # fmt: skip


def test_a_failed_metric_blocks_scale_down_but_not_scale_up() -> None:
    down = decide(hpa(CPU, RPS), 4, [MetricFailure("no metrics"), per_pod(1.0, 1.0, 1.0, 1.0)], History(), NOW, STAMP)
    assert down.replicas is None
    assert conditions(down)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert [e.reason for e in down.events] == ["FailedComputeMetricsReplicas"]
    assert down.events[0].message == "invalid metrics (1 invalid out of 2), first error is: no metrics"
    up = decide(hpa(CPU, RPS), 2, [MetricFailure("no metrics"), per_pod(30.0, 30.0)], History(), NOW, STAMP)
    assert up.replicas == 4  # 6 asked; without behavior at most max(2 x 2, 4)
    assert conditions(up)["ScalingLimited"] == ("True", "ScaleUpLimit")
    # The same failure again records no second warning.
    again = decide(hpa(CPU, RPS).model_copy(update={"status": down.status}), 4,
                   [MetricFailure("no metrics"), per_pod(1.0, 1.0, 1.0, 1.0)], History(), NOW + 1, STAMP)  # fmt: skip
    assert not again.events


def test_bounds_before_metrics_and_scaling_disabled_at_zero() -> None:
    d = decide(hpa(RPS), 9, [per_pod(1.0)], History(), NOW, STAMP)
    assert d.replicas == 6 and d.events[0].message == "New size: 6; reason: Current number of replicas above Spec.MaxReplicas"
    d = decide(hpa(RPS), 1, [per_pod(1.0)], History(), NOW, STAMP)
    assert d.replicas == 2 and d.events[0].message.endswith("Current number of replicas below Spec.MinReplicas")
    d = decide(hpa(RPS), 0, [per_pod(1.0)], History(), NOW, STAMP)
    assert d.replicas is None and conditions(d)["ScalingActive"] == ("False", "ScalingDisabled")


def test_missing_target() -> None:
    d = decide(hpa(RPS), MetricFailure('deployments.apps "web" not found'), [per_pod(1.0)], History(), NOW, STAMP)
    assert d.replicas is None and conditions(d)["AbleToScale"] == ("False", "FailedGetScale")
    assert [e.reason for e in d.events] == ["FailedGetScale"]


def test_object_metric_on_a_service() -> None:
    svc = {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
                                        "metric": {"name": "requests_per_second"},
                                        "target": {"type": "AverageValue", "averageValue": "10"}}}  # fmt: skip
    d = decide(hpa(svc), 3, [ObjectMetricInput(41.0, 3)], History(), NOW, STAMP)
    assert d.replicas == 5
    assert d.events[0].message == "New size: 5; reason: Service metric requests_per_second above target"


def test_behavior_limits_and_stabilizes_over_syncs() -> None:
    h = hpa(RPS, behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 10}]},
                           "scaleDown": {"stabilizationWindowSeconds": 5}})  # fmt: skip
    d = decide(h, 2, [per_pod(30.0, 30.0)], History(), NOW, STAMP)
    assert d.replicas == 3 and conditions(d)["ScalingLimited"] == ("True", "ScaleUpLimit")
    d2 = decide(h.model_copy(update={"status": d.status}), 3, [per_pod(20.0, 20.0, 20.0)], d.history, NOW + 5, STAMP)
    assert d2.replicas is None  # the period's one pod is used
    d3 = decide(h, 3, [per_pod(20.0, 20.0, 20.0)], d2.history, NOW + 11, STAMP)
    assert d3.replicas == 4
    # Load gone: held for the 5 s window, then down to minReplicas.
    d4 = decide(h, 4, [per_pod(1.0, 1.0, 1.0, 1.0)], d3.history, NOW + 12, STAMP)
    assert d4.replicas is None and conditions(d4)["AbleToScale"] == ("True", "ScaleDownStabilized")
    d5 = decide(h, 4, [per_pod(1.0, 1.0, 1.0, 1.0)], d4.history, NOW + 18, STAMP)
    assert d5.replicas == 2


def test_quantity() -> None:
    assert [quantity(v) for v in (2.0, 0.15, 1.5, 20.0, 0.0004)] == ["2", "150m", "1500m", "20", "0"]
