"""The replica calculator: how many pods one metric asks for.

What lives here: kube-controller-manager's ``ReplicaCalculator`` as pure
functions over readings the shell took. A per-pod metric (Resource,
ContainerResource, Pods) goes through ``pod_metric_replicas``: pods are
grouped into ready, unready, missing (no sample) and ignored (deleted or
failed); the usage ratio (current / target) of the ready pods decides, and
when pods are missing or unready the ratio is recomputed with them counted
conservatively (a missing pod at 100 % of target when scaling down, at 0 when
scaling up; an unready pod at 0 when scaling up), so the move never goes the
wrong way nor further than the ready pods justify. An object-wide metric
(Object, External) goes through ``object_metric_replicas``. Any ratio within
the tolerance (10 % by default, either way) keeps the current count.

What must not: reading metrics, the clock (``now`` is a parameter), the
``behavior`` rate limits and stabilisation (``behavior``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD_S = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY_S = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay


class MetricError(Exception):
    """A replica count could not be computed from a metric (the message says why)."""


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far the usage ratio may stray from 1 before the count moves, per direction."""

    down: float = DEFAULT_TOLERANCE
    up: float = DEFAULT_TOLERANCE

    def within(self, ratio: float) -> bool:
        return 1.0 - self.down <= ratio <= 1.0 + self.up


@dataclass(frozen=True, slots=True)
class PodState:
    """What the calculator needs of one pod of the target."""

    name: str
    phase: str = "Running"  # Pending, Running, Succeeded, Failed
    deleting: bool = False  # has a deletionTimestamp
    ready: bool | None = True  # the Ready condition (None: no condition yet)
    ready_since: float | None = None  # the Ready condition's lastTransitionTime
    started: float | None = None  # status.startTime


@dataclass(frozen=True, slots=True)
class Sample:
    """One pod's metric value, taken at ``timestamp`` over ``window`` seconds."""

    value: float
    timestamp: float = 0.0
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class Proposal:
    """A metric's replica count and the current value it is based on.

    ``usage`` is the ready pods' average (a utilization in percent for a
    Utilization target, the raw average for the others); ``raw`` the average
    in the metric's own unit (milli-CPU, bytes, requests per second ...).
    """

    replicas: int
    usage: float
    raw: float


@dataclass(frozen=True, slots=True)
class CpuTiming:
    """When a pod's CPU samples count (upstream's initialization period and readiness delay)."""

    initialization_period: float = CPU_INITIALIZATION_PERIOD_S
    initial_readiness_delay: float = INITIAL_READINESS_DELAY_S


def _unready_for_cpu(pod: PodState, sample: Sample, now: float, timing: CpuTiming) -> bool:
    """groupPods for CPU: a pod that is not Ready, or is still warming up, is not trusted."""
    if pod.ready is None or pod.started is None:
        return True
    since = pod.ready_since if pod.ready_since is not None else pod.started
    if pod.started + timing.initialization_period > now:
        # Still initialising: unready, or the sample's window began before it got Ready.
        return not pod.ready or sample.timestamp < since + sample.window
    # Past initialisation: only a pod that never became Ready.
    return not pod.ready and pod.started + timing.initial_readiness_delay > since


def group_pods(
    pods: Sequence[PodState], samples: Mapping[str, Sample], cpu: bool, now: float, timing: CpuTiming
) -> tuple[list[str], set[str], set[str], set[str]]:
    """(ready pods with samples, unready, missing, ignored), as upstream's ``groupPods``."""
    ready: list[str] = []
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if cpu and _unready_for_cpu(pod, sample, now, timing):
            unready.add(pod.name)
            continue
        ready.append(pod.name)
    return ready, unready, missing, ignored


def _ratio(values: Mapping[str, float], target: float, requests: Mapping[str, float] | None) -> tuple[float, float, float]:
    """(usage ratio, usage, raw average): utilization of requests in percent, or the plain average."""
    total = sum(values.values())
    raw = total / len(values)
    if requests is not None:
        asked = sum(requests[name] for name in values)
        if asked <= 0:
            raise MetricError("no metrics returned matched known pods")
        usage = total * 100.0 / asked
        return usage / target, usage, raw
    return raw / target, raw, raw


def pod_metric_replicas(
    current: int,
    pods: Sequence[PodState],
    samples: Mapping[str, Sample],
    target: float,
    *,
    requests: Mapping[str, float] | None = None,
    cpu: bool = False,
    now: float = 0.0,
    tolerance: Tolerance = Tolerance(),
    timing: CpuTiming = CpuTiming(),
) -> Proposal:
    """The replica count a per-pod metric asks for (``GetResourceReplicas`` / ``GetMetricReplicas``).

    ``target`` is a utilization percent when ``requests`` (pod -> its summed
    request, in the samples' unit) is given, otherwise an average value.
    ``cpu`` turns on the CPU-only readiness rules (warming-up pods ignored).
    """
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    if target <= 0:
        raise MetricError("the target must be greater than zero")
    ready, unready, missing, _ignored = group_pods(pods, samples, cpu, now, timing)
    # Samples of ignored and unready pods do not count at first.
    values = {name: samples[name].value for name in ready}
    if requests is not None:
        for name in [*ready, *missing, *unready]:
            if name not in requests:
                raise MetricError(f"missing request for the resource in pod {name}")
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    ratio, usage, raw = _ratio(values, target, requests)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if tolerance.within(ratio):
            return Proposal(current, usage, raw)
        return Proposal(math.ceil(ratio * len(values)), usage, raw)
    if missing:
        if ratio < 1.0:
            # Scaling down: a missing pod counts as using at least the target.
            for name in missing:
                values[name] = requests[name] * max(100.0, target) / 100.0 if requests is not None else target
        elif ratio > 1.0:
            for name in missing:  # scaling up: a missing pod counts as idle
                values[name] = 0.0
    if scale_up_with_unready:
        for name in unready:
            values[name] = 0.0
    new_ratio, _, _ = _ratio(values, target, requests)
    if tolerance.within(new_ratio) or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        # Within tolerance after all, or the conservative view would reverse the move.
        return Proposal(current, usage, raw)
    replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return Proposal(current, usage, raw)
    return Proposal(replicas, usage, raw)


def object_metric_replicas(
    current: int,
    ready_pods: int,
    value: float,
    target: float,
    *,
    per_pod: bool,
    tolerance: Tolerance = Tolerance(),
) -> Proposal:
    """The replica count an Object or External metric asks for.

    ``per_pod`` (an AverageValue target): the value is shared by the pods, so
    the count is ``ceil(value / target)``; otherwise (a Value target) the ratio
    scales the ready pods, as ``GetObjectMetricReplicas`` does.
    """
    if target <= 0:
        raise MetricError("the target must be greater than zero")
    if per_pod:
        ratio = value / (target * current) if current else math.inf
        replicas = current if tolerance.within(ratio) else math.ceil(value / target)
        return Proposal(replicas, value / current if current else value, value)
    ratio = value / target
    if tolerance.within(ratio):
        return Proposal(current, value, value)
    if ready_pods == 0:
        raise MetricError("unable to calculate ready pods")
    return Proposal(math.ceil(ratio * ready_pods), value, value)
