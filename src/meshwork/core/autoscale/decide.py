"""One HorizontalPodAutoscaler sync: readings in, the scale to set and the status out.

What lives here: ``decide``, kube-controller-manager's ``reconcileAutoscaler``
over readings the shell took: each metric's replica count (the largest wins;
a metric that could not be read blocks a scale-down and, when all fail, any
scale), the bounds checks that come before the metrics (a target at zero
replicas is not autoscaled), the ``behavior`` normalisation, and the status:
``currentReplicas``, ``desiredReplicas``, ``currentMetrics``,
``lastScaleTime`` and the AbleToScale / ScalingActive / ScalingLimited
conditions with upstream's reasons and messages, and the events
(SuccessfulRescale "New size: N; reason: ...", FailedGetScale,
FailedComputeMetricsReplicas and the per-type FailedGet*Metric).

Units: readings are in base units as floats (CPU in cores, memory in bytes,
requests per second, milliseconds); targets are parsed from their quantities.

Difference from upstream, on purpose: a warning event is recorded when a
failure's message changes, not on every sync (each sync writes a new Event
object here; upstream's recorder folds repeats into a count).

What must not: reading metrics or the target, writing, a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshwork.core.autoscale.behavior import (
    DEFAULT_DOWNSCALE_STABILIZATION_S,
    History,
    Normalized,
    normalize_with_behavior,
    normalize_without_behavior,
    record_rescale,
)
from meshwork.core.autoscale.replicas import (
    CpuTiming,
    MetricError,
    PodState,
    Proposal,
    Sample,
    Tolerance,
    object_metric_replicas,
    pod_metric_replicas,
)
from meshwork.model.autoscaling import (
    ContainerResourceMetricStatus,
    ExternalMetricStatus,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus,
    HPAScalingRules,
    MetricSpec,
    MetricStatus,
    MetricTarget,
    MetricValueStatus,
    ObjectMetricStatus,
    PodsMetricStatus,
    ResourceMetricStatus,
)
from meshwork.model.corev1 import parse_quantity


@dataclass(frozen=True, slots=True)
class PodMetricInput:
    """A per-pod metric's readings: the target's pods, their samples and (for a
    Utilization target) each pod's summed request of the resource."""

    pods: tuple[PodState, ...]
    samples: Mapping[str, Sample]
    requests: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class ObjectMetricInput:
    """An object-wide metric's value and the target's ready pods."""

    value: float
    ready_pods: int


@dataclass(frozen=True, slots=True)
class MetricFailure:
    """A metric (or the target's scale) that could not be read."""

    message: str


MetricInput = PodMetricInput | ObjectMetricInput | MetricFailure


@dataclass(frozen=True, slots=True)
class Settings:
    """The controller's flags (upstream's ``--horizontal-pod-autoscaler-*``)."""

    downscale_window: float = DEFAULT_DOWNSCALE_STABILIZATION_S
    tolerance: float = 0.1
    cpu: CpuTiming = field(default_factory=CpuTiming)


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The replica count to write (None: leave the target alone), the status, events, history."""

    replicas: int | None
    status: HorizontalPodAutoscalerStatus
    events: tuple[Event, ...]
    history: History


_FAILED_GET = {"Resource": "FailedGetResourceMetric", "ContainerResource": "FailedGetContainerResourceMetric",
               "Pods": "FailedGetPodsMetric", "Object": "FailedGetObjectMetric",
               "External": "FailedGetExternalMetric"}  # fmt: skip


def quantity(value: float) -> str:
    """A float as a Kubernetes quantity in milli-units when it is not whole (``1500m``, ``2``)."""
    if not math.isfinite(value):
        return "0"
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _number(q: object) -> float:
    return float(parse_quantity(q if isinstance(q, int | float | str) else str(q)))


def metric_description(spec: MetricSpec) -> str:
    """How upstream names a metric in its messages (``metricNameProposal``)."""
    if spec.resource is not None:
        kind = "resource utilization (percentage of request)" if spec.resource.target.type == "Utilization" else "resource"
        return f"{spec.resource.name} {kind}"
    if spec.container_resource is not None:
        kind = ("container resource utilization (percentage of request)"
                if spec.container_resource.target.type == "Utilization" else "container resource")  # fmt: skip
        return f"{spec.container_resource.name} {kind}"
    if spec.pods is not None:
        return f"pods metric {spec.pods.metric.name}"
    if spec.object is not None:
        return f"{spec.object.described_object.kind} metric {spec.object.metric.name}"
    assert spec.external is not None
    return f"external metric {spec.external.metric.name}"


def _target_value(target: MetricTarget) -> float:
    if target.type == "Utilization":
        return float(target.average_utilization or 0)
    return _number(target.average_value if target.type == "AverageValue" else target.value)


def _current(target: MetricTarget, proposal: Proposal) -> MetricValueStatus:
    if target.type == "Utilization":
        return MetricValueStatus(average_utilization=int(proposal.usage), average_value=quantity(proposal.raw))
    if target.type == "AverageValue":
        return MetricValueStatus(average_value=quantity(proposal.usage))
    return MetricValueStatus(value=quantity(proposal.raw))


def _status_of(spec: MetricSpec, current: MetricValueStatus) -> MetricStatus:
    if spec.resource is not None:
        return MetricStatus(type="Resource", resource=ResourceMetricStatus(name=spec.resource.name, current=current))
    if spec.container_resource is not None:
        cr = spec.container_resource
        return MetricStatus(type="ContainerResource", container_resource=ContainerResourceMetricStatus(
            name=cr.name, container=cr.container, current=current))  # fmt: skip
    if spec.pods is not None:
        return MetricStatus(type="Pods", pods=PodsMetricStatus(metric=spec.pods.metric, current=current))
    if spec.object is not None:
        return MetricStatus(type="Object", object=ObjectMetricStatus(
            metric=spec.object.metric, described_object=spec.object.described_object, current=current))  # fmt: skip
    assert spec.external is not None
    return MetricStatus(type="External", external=ExternalMetricStatus(metric=spec.external.metric, current=current))


def _tolerance(hpa: HorizontalPodAutoscaler, default: float) -> Tolerance:
    behavior = hpa.spec.behavior

    def of(rules: HPAScalingRules | None) -> float:
        return _number(rules.tolerance) if rules is not None and rules.tolerance is not None else default

    return Tolerance(down=of(behavior.scale_down if behavior else None), up=of(behavior.scale_up if behavior else None))


def metric_replicas(spec: MetricSpec, reading: MetricInput, current: int, status_replicas: int, now: float,
                    settings: Settings, tolerance: Tolerance) -> Proposal:  # fmt: skip
    """One metric's proposal; ``MetricError`` when it cannot be computed."""
    if isinstance(reading, MetricFailure):
        raise MetricError(reading.message)
    source = spec.resource or spec.container_resource or spec.pods or spec.object or spec.external
    assert source is not None
    target = source.target
    goal = _target_value(target)
    if isinstance(reading, PodMetricInput):
        resource = spec.resource.name if spec.resource else (spec.container_resource.name if spec.container_resource else None)
        requests = reading.requests if target.type == "Utilization" else None
        if target.type == "Utilization" and requests is None:
            raise MetricError(f"missing request for {resource}")
        return pod_metric_replicas(current, reading.pods, reading.samples, goal, requests=requests,
                                   cpu=resource == "cpu", now=now, tolerance=tolerance, timing=settings.cpu)  # fmt: skip
    per_pod = target.type == "AverageValue"
    return object_metric_replicas(status_replicas if per_pod else current, reading.ready_pods, reading.value, goal,
                                  per_pod=per_pod, tolerance=tolerance)  # fmt: skip


def _condition(old: Sequence[HorizontalPodAutoscalerCondition], kind: str, status: str, reason: str, message: str,
               now: str) -> HorizontalPodAutoscalerCondition:  # fmt: skip
    prev = next((c for c in old if c.type == kind), None)
    since = prev.last_transition_time if prev is not None and prev.status == status else now
    return HorizontalPodAutoscalerCondition(type=kind, status=status,  # type: ignore[arg-type]
                                            last_transition_time=since, reason=reason, message=message)


def decide(
    hpa: HorizontalPodAutoscaler,
    scale: int | MetricFailure,
    readings: Sequence[MetricInput],
    history: History,
    now: float,
    stamp: str,
    settings: Settings = Settings(),
    status_replicas: int | None = None,
) -> Decision:
    """One sync of ``hpa``. ``scale`` is the target's ``spec.replicas`` (or why it could not be
    read); ``readings`` match ``spec.metrics`` one to one; ``stamp`` is ``now`` as RFC 3339."""
    spec = hpa.spec
    old = hpa.status or HorizontalPodAutoscalerStatus()
    old_conditions = list(old.conditions or ())
    conditions: dict[str, HorizontalPodAutoscalerCondition] = {c.type: c for c in old_conditions}
    events: list[Event] = []

    def set_condition(kind: str, status: str, reason: str, message: str) -> None:
        conditions[kind] = _condition(old_conditions, kind, status, reason, message, stamp)

    def warn(reason: str, message: str, kind: str) -> None:
        # Once per distinct failure: each sync would otherwise write a new Event object.
        prev = next((c for c in old_conditions if c.type == kind), None)
        if prev is None or prev.message != conditions[kind].message or prev.status != "False":
            events.append(Event("Warning", reason, message))

    def finish(replicas: int | None, current: int | None, desired: int, metrics: list[MetricStatus] | None,
               scaled: bool) -> Decision:  # fmt: skip
        order = ["AbleToScale", "ScalingActive", "ScalingLimited"]
        status = HorizontalPodAutoscalerStatus(
            observed_generation=hpa.metadata.generation,
            last_scale_time=stamp if scaled else old.last_scale_time,
            current_replicas=current,
            desired_replicas=desired,
            current_metrics=metrics if metrics else None,
            conditions=[conditions[k] for k in order if k in conditions] or None,
        )
        return Decision(replicas, status, tuple(events), history)

    if isinstance(scale, MetricFailure):
        message = f"the HPA controller was unable to get the target's current scale: {scale.message}"
        set_condition("AbleToScale", "False", "FailedGetScale", message)
        warn("FailedGetScale", scale.message, "AbleToScale")
        return finish(None, old.current_replicas, old.desired_replicas, list(old.current_metrics or ()), False)
    set_condition("AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale")
    current = scale
    seen = status_replicas if status_replicas is not None else current
    metrics: list[MetricStatus] = []
    reason = ""
    if current == 0 and spec.min_replicas != 0:
        set_condition("ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")
        return finish(None, current, 0, None, False)
    if current > spec.max_replicas:
        desired, reason = spec.max_replicas, "Current number of replicas above Spec.MaxReplicas"
    elif current < spec.min_replicas:
        desired, reason = spec.min_replicas, "Current number of replicas below Spec.MinReplicas"
    else:
        tolerance = _tolerance(hpa, settings.tolerance)
        best: tuple[int, str] | None = None
        errors: list[tuple[str, str]] = []
        for metric, reading in zip(spec.metrics or (), readings, strict=True):
            try:
                proposal = metric_replicas(metric, reading, current, seen, now, settings, tolerance)
            except MetricError as exc:
                errors.append((_FAILED_GET[metric.type], str(exc)))
                metrics.append(MetricStatus(type=metric.type))
                continue
            source = metric.resource or metric.container_resource or metric.pods or metric.object or metric.external
            assert source is not None
            metrics.append(_status_of(metric, _current(source.target, proposal)))
            if best is None or proposal.replicas > best[0]:
                best = (proposal.replicas, metric_description(metric))
        if errors and (best is None or best[0] < current):
            first_reason, first = errors[0]
            set_condition("ScalingActive", "False", first_reason, f"the HPA was unable to compute the replica count: {first}")
            warn("FailedComputeMetricsReplicas", f"invalid metrics ({len(errors)} invalid out of {len(readings)}), "
                 f"first error is: {first}", "ScalingActive")  # fmt: skip
            return finish(None, current, current, metrics, False)
        assert best is not None
        proposed, name = best
        set_condition("ScalingActive", "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {name}")
        reason = f"{name} above target" if proposed > current else "All metrics below target"
        normalized = _normalize(hpa, current, proposed, history, now, settings)
        history = normalized.history
        set_condition("AbleToScale", "True", normalized.able_reason, normalized.able_message)
        set_condition("ScalingLimited", "True" if normalized.limited else "False",
                      normalized.limit_reason, normalized.limit_message)  # fmt: skip
        desired = normalized.replicas
    if desired == current:
        return finish(None, current, current, metrics, False)
    set_condition("AbleToScale", "True", "SucceededRescale",
                  f"the HPA controller was able to update the target scale to {desired}")
    events.append(Event("Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}"))
    if spec.behavior is not None:
        history = record_rescale(history, current, desired, spec.behavior.scale_up, spec.behavior.scale_down, now)
    return finish(desired, current, desired, metrics, True)


def _normalize(hpa: HorizontalPodAutoscaler, current: int, proposed: int, history: History, now: float,
               settings: Settings) -> Normalized:  # fmt: skip
    spec = hpa.spec
    behavior = spec.behavior
    if behavior is None or behavior.scale_up is None or behavior.scale_down is None:
        return normalize_without_behavior(current, proposed, spec.min_replicas, spec.max_replicas, history, now,
                                          downscale_window=settings.downscale_window)  # fmt: skip
    return normalize_with_behavior(current, proposed, spec.min_replicas, spec.max_replicas, behavior.scale_up,
                                   behavior.scale_down, history, now, downscale_window=settings.downscale_window)  # fmt: skip


__all__ = ["Decision", "Event", "MetricFailure", "MetricInput", "ObjectMetricInput", "PodMetricInput",
           "Settings", "decide", "metric_description", "quantity"]  # fmt: skip
