"""HorizontalPodAutoscaler: v2 defaulting (minReplicas, default CPU metric, behavior rules), the
API server's checks, and conversion of autoscaling/v1 input to the stored v2 form."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshwork.model.autoscaling import HorizontalPodAutoscaler
from meshwork.model.base import REGISTRY, to_wire

TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
CPU_80 = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": 80}}}]
SCALE_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
    {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}
SCALE_DOWN = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def hpa(api_version: str = "autoscaling/v2", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": dict(TARGET), "maxReplicas": 5, **spec}}


DEFAULTS = [
    ("minReplicas", hpa(), ("spec", "minReplicas"), 1),
    ("cpu metric", hpa(), ("spec", "metrics"), CPU_80),
    ("no behavior", hpa(), ("spec", "behavior"), None),
    ("empty behavior", hpa(behavior={}), ("spec", "behavior"), {"scaleUp": SCALE_UP, "scaleDown": SCALE_DOWN}),
    ("partial scaleDown", hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}}),
     ("spec", "behavior", "scaleDown"), {**SCALE_DOWN, "stabilizationWindowSeconds": 60}),
    ("own policies kept", hpa(behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                                                    "selectPolicy": "Min"}}),
     ("spec", "behavior", "scaleUp"), {"stabilizationWindowSeconds": 0, "selectPolicy": "Min",
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}),
    ("metrics kept", hpa(metrics=[{"type": "Pods", "pods": {"metric": {"name": "rps"},
                                                           "target": {"type": "AverageValue", "averageValue": "10"}}}]),
     ("spec", "metrics", 0, "pods", "target", "averageValue"), "10"),
    ("v1 converted", hpa("autoscaling/v1", targetCPUUtilizationPercentage=50), ("spec", "metrics"),
     [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]),
    ("v1 stored as v2", hpa("autoscaling/v1", minReplicas=2), ("apiVersion",), "autoscaling/v2"),
    ("v1 without target gets default", hpa("autoscaling/v1"), ("spec", "metrics"), CPU_80),
    ("v1 status", {**hpa("autoscaling/v1"), "status": {"currentReplicas": 2, "desiredReplicas": 3,
                                                       "currentCPUUtilizationPercentage": 64}},
     ("status",), {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
         {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 64}}}]}),
]


@pytest.mark.parametrize(("manifest", "path", "expected"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_defaults(manifest: dict[str, Any], path: tuple[Any, ...], expected: Any) -> None:
    obj = HorizontalPodAutoscaler.model_validate(manifest)
    wire = to_wire(obj)
    value: Any = wire
    for part in path:
        value = value.get(part) if isinstance(value, dict) else value[part]
    assert value == expected
    assert HorizontalPodAutoscaler.model_validate(wire) == obj


def test_all_metric_sources_round_trip() -> None:
    metrics = [
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                                                            "target": {"type": "Utilization", "averageUtilization": 60}}},
        {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
                                      "metric": {"name": "requests"}, "target": {"type": "Value", "value": 100}}},
        {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "jobs"}}},
                                          "target": {"type": "AverageValue", "averageValue": "30"}}},
    ]
    manifest = hpa(minReplicas=2, metrics=metrics)
    manifest["status"] = {"observedGeneration": 1, "currentReplicas": 2, "desiredReplicas": 2,
                          "lastScaleTime": "2024-01-01T00:00:00Z",
                          "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}],
                          "currentMetrics": [{"type": "Resource", "resource": {"name": "memory",
                                                                               "current": {"averageValue": "512Mi"}}}]}
    assert to_wire(HorizontalPodAutoscaler.model_validate(manifest)) == manifest


INVALID = [
    ("max below min", hpa(minReplicas=6), ("spec", "maxReplicas"), "minReplicas"),
    ("min zero", hpa(minReplicas=0), ("spec", "minReplicas"), "greater than or equal to 1"),
    ("max missing", {**hpa(), "spec": {"scaleTargetRef": TARGET}}, ("spec", "maxReplicas"), "required"),
    ("source mismatch", hpa(metrics=[{"type": "Pods", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 50}}}]), ("spec", "metrics", 0, "pods"), "metric source"),
    ("utilization on pods", hpa(metrics=[{"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {
        "type": "Utilization", "averageUtilization": 50}}}]), ("spec", "metrics", 0, "pods", "target", "type"),
     "resource metrics"),
    ("target value missing", hpa(metrics=[{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization"}}}]), ("spec", "metrics", 0, "resource", "target", "averageUtilization"), "must be set"),
    ("policy period", hpa(behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}}),
     ("spec", "behavior", "scaleUp", "policies", 0, "periodSeconds"), "1800"),
    ("policy value", hpa(behavior={"scaleUp": {"policies": [{"type": "Percent", "value": 0, "periodSeconds": 1}]}}),
     ("spec", "behavior", "scaleUp", "policies", 0, "value"), "greater than zero"),
    ("window", hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 4000}}),
     ("spec", "behavior", "scaleDown", "stabilizationWindowSeconds"), "3600"),
    ("select policy", hpa(behavior={"scaleDown": {"selectPolicy": "Avg"}}),
     ("spec", "behavior", "scaleDown", "selectPolicy"), "Max"),
    ("v1 with v2 field", hpa("autoscaling/v1", metrics=CPU_80), (), "metrics"),
    ("v2beta2", hpa("autoscaling/v2beta2"), ("apiVersion",), "autoscaling/v2"),
]


@pytest.mark.parametrize(("manifest", "loc", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(manifest: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        HorizontalPodAutoscaler.model_validate(manifest)
    errors = info.value.errors()
    locs = [e["loc"] for e in errors]
    assert loc in locs, errors
    err = errors[locs.index(loc)]
    assert fragment.lower() in (err["msg"] + str(err.get("ctx", ""))).lower(), err


def test_registry() -> None:
    [info] = REGISTRY.for_name("hpa")
    assert info.model is HorizontalPodAutoscaler
    assert info.group == "autoscaling" and info.versions == ("v2", "v1") and info.preferred_version == "v2"
    assert REGISTRY.for_api_version("autoscaling/v1", "HorizontalPodAutoscaler") is info
    assert info.namespaced and info.has_status and info.plural == "horizontalpodautoscalers"
