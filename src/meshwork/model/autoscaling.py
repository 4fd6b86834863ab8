"""HorizontalPodAutoscaler (autoscaling/v2; autoscaling/v1 input converted to v2).

What lives here: the HPA model, upstream defaulting (``minReplicas`` 1, a CPU
80 % utilization metric when none is given, full scale-up/scale-down rules
once ``behavior`` is present), the API server's shape checks, and the
conversion of an ``autoscaling/v1`` object (``targetCPUUtilizationPercentage``)
into the v2 form it is stored as.

What must not: the scaling algorithm or metric collection.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import model_validator

from meshwork.model.base import REGISTRY, KindInfo, Model, Quantity, Resource
from meshwork.model.pod import LabelSelector, Loc, fail_at

DEFAULT_CPU_UTILIZATION = 80  # autoscaling.DefaultCPUUtilization (percent)
SCALE_UP_LIMIT_PERCENT = 100  # default scale-up policy: double per period...
SCALE_UP_LIMIT_MIN_PODS = 4  # ...or add 4 pods, whichever is more
SCALE_PERIOD_SECONDS = 15  # default policy period, up and down
SCALE_DOWN_LIMIT_PERCENT = 100  # default scale-down policy: may drop to minReplicas in a period
MAX_PERIOD_SECONDS = 1800  # upstream MaxPeriodSeconds for scaling policies (30 min)
MAX_STABILIZATION_WINDOW_SECONDS = 3600  # upstream MaxStabilizationWindowSeconds (1 h)

_V1 = "autoscaling/v1"
_V2 = "autoscaling/v2"
_V1_SPEC_KEYS = frozenset({"scaleTargetRef", "minReplicas", "maxReplicas",
                           "targetCPUUtilizationPercentage"})  # fmt: skip
_V1_STATUS_KEYS = frozenset({"observedGeneration", "lastScaleTime", "currentReplicas",
                             "desiredReplicas", "currentCPUUtilizationPercentage"})  # fmt: skip


class CrossVersionObjectReference(Model):
    """The scaled object (a Deployment, ReplicaSet, Rollout ...)."""

    kind: str
    name: str
    api_version: str | None = None


class MetricIdentifier(Model):
    """A metric name and an optional label selector narrowing it."""

    name: str
    selector: LabelSelector | None = None


class MetricTarget(Model):
    """The target: an absolute value, a per-pod average, or a utilization percent."""

    type: Literal["Utilization", "Value", "AverageValue"]
    value: Quantity | None = None
    average_value: Quantity | None = None
    average_utilization: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        wanted = {"Utilization": "average_utilization", "Value": "value",
                  "AverageValue": "average_value"}[self.type]  # fmt: skip
        if getattr(self, wanted) is None:
            field = {"average_utilization": "averageUtilization", "value": "value",
                     "average_value": "averageValue"}[wanted]  # fmt: skip
            fail_at("MetricTarget", [((field,), f"must be set when type is {self.type}", None)])
        return self


class ObjectMetricSource(Model):
    """A metric describing one object."""

    described_object: CrossVersionObjectReference
    target: MetricTarget
    metric: MetricIdentifier


class PodsMetricSource(Model):
    """A metric averaged over the target's pods."""

    metric: MetricIdentifier
    target: MetricTarget


class ResourceMetricSource(Model):
    """CPU or memory of the target's pods."""

    name: str
    target: MetricTarget


class ContainerResourceMetricSource(Model):
    """CPU or memory of one container of the target's pods."""

    name: str
    target: MetricTarget
    container: str


class ExternalMetricSource(Model):
    """A metric from outside the cluster."""

    metric: MetricIdentifier
    target: MetricTarget


_SOURCE_FIELD = {"Object": "object", "Pods": "pods", "Resource": "resource",
                 "ContainerResource": "container_resource", "External": "external"}  # fmt: skip
_SOURCE_WIRE = {"object": "object", "pods": "pods", "resource": "resource",
                "container_resource": "containerResource", "external": "external"}  # fmt: skip


class MetricSpec(Model):
    """One metric to scale on; ``type`` names the one source that is set."""

    type: Literal["Object", "Pods", "Resource", "ContainerResource", "External"]
    object: ObjectMetricSource | None = None
    pods: PodsMetricSource | None = None
    resource: ResourceMetricSource | None = None
    container_resource: ContainerResourceMetricSource | None = None
    external: ExternalMetricSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        wanted = _SOURCE_FIELD[self.type]
        errors: list[tuple[Loc, str, Any]] = []
        if getattr(self, wanted) is None:
            errors.append(((_SOURCE_WIRE[wanted],), f"must populate information for the given "
                           f"metric source (type {self.type})", None))  # fmt: skip
        for name in _SOURCE_FIELD.values():
            if name != wanted and getattr(self, name) is not None:
                errors.append(((_SOURCE_WIRE[name],), "must populate the given metric source "
                               "only", None))  # fmt: skip
        for name in ("object", "pods", "external"):
            source = getattr(self, name)
            if source is not None and source.target.type == "Utilization":
                errors.append(((name, "target", "type"),
                               "Utilization is only supported for resource metrics", "Utilization"))  # fmt: skip
        fail_at("MetricSpec", errors)
        return self


class HPAScalingPolicy(Model):
    """Change by at most ``value`` pods or percent per ``periodSeconds``."""

    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int

    @model_validator(mode="after")
    def _check(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        if self.value <= 0:
            errors.append((("value",), "must be greater than zero", self.value))
        if not 0 < self.period_seconds <= MAX_PERIOD_SECONDS:
            errors.append((("periodSeconds",), f"must be greater than zero and less than or "
                           f"equal to {MAX_PERIOD_SECONDS}", self.period_seconds))  # fmt: skip
        fail_at("HPAScalingPolicy", errors)
        return self


class HPAScalingRules(Model):
    """Scaling policies for one direction and how to combine them."""

    stabilization_window_seconds: int | None = None
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: Quantity | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= MAX_STABILIZATION_WINDOW_SECONDS:
            fail_at("HPAScalingRules", [(("stabilizationWindowSeconds",),
                    f"must be between 0 and {MAX_STABILIZATION_WINDOW_SECONDS}", window)])  # fmt: skip
        return self


class HorizontalPodAutoscalerBehavior(Model):
    """Separate scaling rules for going up and going down."""

    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


def _default_rules(given: HPAScalingRules | None, *, up: bool) -> HPAScalingRules:
    """GenerateHPAScaleUpRules / GenerateHPAScaleDownRules: fill what ``given`` leaves unset."""
    given = given or HPAScalingRules()
    if up:
        policies = [HPAScalingPolicy(type="Pods", value=SCALE_UP_LIMIT_MIN_PODS, period_seconds=SCALE_PERIOD_SECONDS),
                    HPAScalingPolicy(type="Percent", value=SCALE_UP_LIMIT_PERCENT, period_seconds=SCALE_PERIOD_SECONDS)]  # fmt: skip
        window: int | None = 0
    else:
        policies = [HPAScalingPolicy(type="Percent", value=SCALE_DOWN_LIMIT_PERCENT, period_seconds=SCALE_PERIOD_SECONDS)]  # fmt: skip
        window = None  # the controller's --horizontal-pod-autoscaler-downscale-stabilization applies
    return HPAScalingRules(
        stabilization_window_seconds=given.stabilization_window_seconds
        if given.stabilization_window_seconds is not None else window,
        select_policy=given.select_policy or "Max",
        policies=given.policies if given.policies is not None else policies,
        tolerance=given.tolerance,
    )


class HorizontalPodAutoscalerSpec(Model):
    """What to scale, between which bounds, on which metrics."""

    scale_target_ref: CrossVersionObjectReference
    min_replicas: int = 1
    max_replicas: int
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        if not self.metrics:
            self.metrics = [MetricSpec(type="Resource", resource=ResourceMetricSource(
                name="cpu", target=MetricTarget(type="Utilization",
                                                average_utilization=DEFAULT_CPU_UTILIZATION)))]  # fmt: skip
        if self.behavior is not None:
            self.behavior.scale_up = _default_rules(self.behavior.scale_up, up=True)
            self.behavior.scale_down = _default_rules(self.behavior.scale_down, up=False)
        errors: list[tuple[Loc, str, Any]] = []
        if self.min_replicas < 1:
            errors.append((("minReplicas",), "must be greater than or equal to 1", self.min_replicas))
        if self.max_replicas < self.min_replicas:
            errors.append((("maxReplicas",), "must be greater than or equal to `minReplicas`",
                           self.max_replicas))  # fmt: skip
        if not self.scale_target_ref.kind or not self.scale_target_ref.name:
            errors.append((("scaleTargetRef",), "kind and name are required", None))
        fail_at("HorizontalPodAutoscalerSpec", errors)
        return self


class MetricValueStatus(Model):
    """A current metric value."""

    value: Quantity | None = None
    average_value: Quantity | None = None
    average_utilization: int | None = None


class ObjectMetricStatus(Model):
    """Current value of an Object metric."""

    metric: MetricIdentifier
    current: MetricValueStatus
    described_object: CrossVersionObjectReference


class PodsMetricStatus(Model):
    """Current value of a Pods metric."""

    metric: MetricIdentifier
    current: MetricValueStatus


class ResourceMetricStatus(Model):
    """Current value of a Resource metric."""

    name: str
    current: MetricValueStatus


class ContainerResourceMetricStatus(Model):
    """Current value of a ContainerResource metric."""

    name: str
    current: MetricValueStatus
    container: str


class ExternalMetricStatus(Model):
    """Current value of an External metric."""

    metric: MetricIdentifier
    current: MetricValueStatus


class MetricStatus(Model):
    """The current value of one metric the HPA scales on."""

    type: Literal["Object", "Pods", "Resource", "ContainerResource", "External"]
    object: ObjectMetricStatus | None = None
    pods: PodsMetricStatus | None = None
    resource: ResourceMetricStatus | None = None
    container_resource: ContainerResourceMetricStatus | None = None
    external: ExternalMetricStatus | None = None


class HorizontalPodAutoscalerCondition(Model):
    """AbleToScale, ScalingActive, ScalingLimited."""

    type: str
    status: Literal["True", "False", "Unknown"]
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class HorizontalPodAutoscalerStatus(Model):
    """What the autoscaler last saw and decided."""

    observed_generation: int | None = None
    last_scale_time: str | None = None
    current_replicas: int | None = None
    desired_replicas: int = 0
    current_metrics: list[MetricStatus] | None = None
    conditions: list[HorizontalPodAutoscalerCondition] | None = None


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Convert an autoscaling/v1 HPA (as a dict) to the autoscaling/v2 shape."""
    out = dict(data)
    out.pop("api_version", None)
    out["apiVersion"] = _V2
    spec = data.get("spec")
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - _V1_SPEC_KEYS)
        if unknown:
            raise ValueError(f"spec: unknown field(s) for {_V1}: {', '.join(unknown)}")
        new_spec = {k: v for k, v in spec.items() if k != "targetCPUUtilizationPercentage"}
        target = spec.get("targetCPUUtilizationPercentage")
        if target is not None:
            new_spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": target}}}]
        out["spec"] = new_spec
    status = data.get("status")
    if isinstance(status, dict):
        unknown = sorted(set(status) - _V1_STATUS_KEYS)
        if unknown:
            raise ValueError(f"status: unknown field(s) for {_V1}: {', '.join(unknown)}")
        new_status = {k: v for k, v in status.items() if k != "currentCPUUtilizationPercentage"}
        current = status.get("currentCPUUtilizationPercentage")
        if current is not None:
            new_status["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu",
                                             "current": {"averageUtilization": current}}}]  # fmt: skip
        out["status"] = new_status
    return out


class HorizontalPodAutoscaler(Resource):
    """Scales a workload's replicas to keep metrics near targets (autoscaling/v2 HorizontalPodAutoscaler).

    An ``autoscaling/v1`` object is accepted and converted to its v2 form
    (``targetCPUUtilizationPercentage`` becomes a CPU Utilization metric), so
    the model always holds, and ``to_wire`` always shows, ``autoscaling/v2``.
    """

    api_version: Literal["autoscaling/v2"] = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    spec: HorizontalPodAutoscalerSpec
    status: HorizontalPodAutoscalerStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_v1(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("apiVersion", data.get("api_version")) == _V1:
            return _v1_to_v2(data)
        return data


REGISTRY.register(KindInfo(
    group="autoscaling", versions=("v2", "v1"), kind="HorizontalPodAutoscaler",
    plural="horizontalpodautoscalers", singular="horizontalpodautoscaler",
    model=HorizontalPodAutoscaler, short_names=("hpa",), categories=("all",),
))  # fmt: skip
