"""The HPA shell's readings (``control.hpa``): from sampled agent stats and sidecar series to
the calculator's inputs, for each metric type and each mesh metric name."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from meshwork.control.hpa import (
    MESH_METRICS,
    Snapshot,
    _pods_reading,
    _resource_reading,
    _service_reading,
)
from meshwork.core.autoscale.decide import MetricFailure, ObjectMetricInput, PodMetricInput
from meshwork.model.autoscaling import MetricSpec
from meshwork.telemetry.meshstats import Series

REQ = "istio_requests_total"
BUCKET = "istio_request_duration_milliseconds_bucket"


def pod(name: str, cpu: str = "100m") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}  # fmt: skip


def served(requests: float, errors: float = 0.0, svc: str = "web", by: str = "destination") -> dict[Series, float]:
    fqdn = f"{svc}.ns.svc.cluster.local"
    out: dict[Series, float] = {(REQ, fqdn, svc, "ns", "200", by): requests - errors}
    if errors:
        out[(REQ, fqdn, svc, "ns", "503", by)] = errors
    # Every request took between 5 and 10 ms.
    for le, count in (("5", 0.0), ("10", requests), ("+Inf", requests)):
        out[(BUCKET, fqdn, svc, "ns", le, by)] = count
    return out


def metric(data: dict[str, Any]) -> MetricSpec:
    return MetricSpec.model_validate(data)


def pods_metric(name: str) -> MetricSpec:
    return metric({"type": "Pods", "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": "1"}}})


HIST = deque([
    Snapshot(100.0, {"a": {"app": (10.0, 1e6)}, "b": {"app": (20.0, 3e6)}}, {"a": served(100), "b": served(50, 5)}),
    Snapshot(104.0, {"a": {"app": (10.4, 2e6)}, "b": {"app": (20.2, 4e6)}}, {"a": served(140), "b": served(70, 15)}),
])  # fmt: skip


def test_cpu_rate_and_requests() -> None:
    got = _resource_reading(metric({"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 50}}}), [pod("a"), pod("b", "200m")], HIST, 104.0, 30.0)  # fmt: skip
    assert isinstance(got, PodMetricInput)
    assert got.samples["a"].value == pytest.approx(0.1) and got.samples["b"].value == pytest.approx(0.05)
    assert got.requests is not None
    assert (got.requests["a"], got.requests["b"]) == pytest.approx((0.1, 0.2))


def test_memory_is_the_latest_reading() -> None:
    got = _resource_reading(metric({"type": "Resource", "resource": {"name": "memory", "target": {
        "type": "AverageValue", "averageValue": "1Mi"}}}), [pod("a"), pod("b")], HIST, 104.0, 30.0)  # fmt: skip
    assert isinstance(got, PodMetricInput) and got.samples["b"].value == 4e6


@pytest.mark.parametrize(("name", "a", "b"), [
    ("requests_per_second", 10.0, 5.0),
    ("error_rate", 0.0, 0.5),
    ("latency_p50_ms", 7.5, 7.5),
    ("latency_p90_ms", 9.5, 9.5),
    ("latency_p99_ms", 9.95, 9.95),
])  # fmt: skip
def test_pods_metrics_per_pod(name: str, a: float, b: float) -> None:
    got = _pods_reading(pods_metric(name), [pod("a"), pod("b")], HIST, 104.0, 30.0)
    assert isinstance(got, PodMetricInput)
    assert (got.samples["a"].value, got.samples["b"].value) == pytest.approx((a, b))


def test_unknown_pods_metric_names_the_known_ones() -> None:
    got = _pods_reading(pods_metric("qps"), [pod("a")], HIST, 104.0, 30.0)
    assert isinstance(got, MetricFailure) and all(n in got.message for n in MESH_METRICS)


def test_one_sample_is_not_a_rate() -> None:
    got = _pods_reading(pods_metric("requests_per_second"), [pod("a")], deque([HIST[0]]), 104.0, 30.0)
    assert isinstance(got, MetricFailure)


def test_object_and_external_metrics_of_a_service() -> None:
    obj = metric({"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "web", "apiVersion": "v1"},
                  "metric": {"name": "requests_per_second"}, "target": {"type": "Value", "value": "10"}}})  # fmt: skip
    got = _service_reading(obj, "ns", HIST, 104.0, 30.0, 2)
    assert got == ObjectMetricInput(pytest.approx(15.0), 2)  # type: ignore[arg-type]
    ext = metric({"type": "External", "external": {"metric": {"name": "error_rate", "selector": {
        "matchLabels": {"destination_service_name": "web"}}}, "target": {"type": "Value", "value": "1"}}})  # fmt: skip
    got = _service_reading(ext, "ns", HIST, 104.0, 30.0, 2)
    assert isinstance(got, ObjectMetricInput) and got.value == pytest.approx(10 / 60)
    missing = metric({"type": "External", "external": {"metric": {"name": "error_rate"},
                      "target": {"type": "Value", "value": "1"}}})  # fmt: skip
    assert isinstance(_service_reading(missing, "ns", HIST, 104.0, 30.0, 2), MetricFailure)
