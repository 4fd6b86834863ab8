"""From the metrics' replica count to the one to set: stabilisation and rate limits.

What lives here: what kube-controller-manager does between the replica
calculator and the scale write. With ``spec.behavior`` (``normalize_with_behavior``):

1. Stabilisation. Every sync's recommendation is remembered. Going up, the
   lowest recommendation of the scale-up window is used (default 0 s: the
   current one); going down, the highest of the scale-down window (default
   300 s, ``--horizontal-pod-autoscaler-downscale-stabilization``). So a dip
   shorter than the window never removes pods.
2. Rate. Each policy allows, from the count at the start of its period
   (the current count minus what was added, plus what was removed, in the
   last ``periodSeconds``), ``+value`` pods or ``+value %`` (rounded up) going
   up, ``-value`` pods or ``-value %`` (rounded down) going down;
   ``selectPolicy`` Max takes the policy allowing the biggest change, Min the
   smallest, Disabled none.
3. Bounds: never above maxReplicas nor below minReplicas.

Without ``behavior`` (``normalize_without_behavior``) the older rules hold:
the scale-down window only, scale-up by at most max(2 x current, 4), bounds.

Each step reports the reason and message upstream puts in the AbleToScale and
ScalingLimited conditions. The history (recommendations and scale events) is
data in and data out: the shell keeps it between syncs, as upstream keeps it
in the controller's memory.

What must not: the metrics' arithmetic (``replicas``), I/O, a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from meshwork.model.autoscaling import HPAScalingRules

DEFAULT_DOWNSCALE_STABILIZATION_S = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization
SCALE_UP_LIMIT_FACTOR = 2.0  # without behavior: at most double ...
SCALE_UP_LIMIT_MINIMUM = 4  # ... or go to 4, whichever is more


@dataclass(frozen=True, slots=True)
class History:
    """Recommendations (time, replicas) and rescales (time, pods added or removed) of one HPA."""

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_ups: tuple[tuple[float, int], ...] = ()
    scale_downs: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Normalized:
    """The count to set, and the AbleToScale / ScalingLimited reasons that explain it."""

    replicas: int
    stabilized: int
    able_reason: str
    able_message: str
    limited: bool
    limit_reason: str
    limit_message: str
    history: History = field(default_factory=History)


_READY = ("ReadyForNewScale", "recommended size matches current size")
_UP_STABILIZED = ("ScaleUpStabilized",
                  "recent recommendations were lower than current one, applying the lowest recent recommendation")  # fmt: skip
_DOWN_STABILIZED = ("ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation")  # fmt: skip
_WITHIN = ("DesiredWithinRange", "the desired count is within the acceptable range")
_UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
_DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
_TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
_TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")


def _window(rules: HPAScalingRules | None, default: float) -> float:
    if rules is None or rules.stabilization_window_seconds is None:
        return default
    return float(rules.stabilization_window_seconds)


def _changed_in(period: float, events: tuple[tuple[float, int], ...], now: float) -> int:
    """Pods added (or removed) by the events of the last ``period`` seconds."""
    return sum(change for when, change in events if when > now - period)


def _period_start(current: int, history: History, period: float, now: float) -> int:
    """The replica count a policy's period began with: the changes made within it undone."""
    return current - _changed_in(period, history.scale_ups, now) + _changed_in(period, history.scale_downs, now)


def scale_up_limit(current: int, history: History, rules: HPAScalingRules, now: float) -> int:
    """The most replicas the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, history: History, rules: HPAScalingRules, now: float) -> int:
    """The fewest replicas the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def _longest_period(rules: HPAScalingRules | None) -> float:
    if rules is None:
        return 0.0
    return float(max((p.period_seconds for p in rules.policies or ()), default=0))


def normalize_with_behavior(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up: HPAScalingRules,
    down: HPAScalingRules,
    history: History,
    now: float,
    *,
    downscale_window: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
) -> Normalized:
    """``normalizeDesiredReplicasWithBehaviors``: stabilise, then apply the policies and bounds."""
    up_window = _window(up, 0.0)
    down_window = _window(down, downscale_window)
    if desired >= current:
        window, pick, (able_reason, able_message) = up_window, min, _UP_STABILIZED
    else:
        window, pick, (able_reason, able_message) = down_window, max, _DOWN_STABILIZED
    stabilized = desired
    for when, replicas in history.recommendations:
        if when > now - window:
            stabilized = pick(stabilized, replicas)
    keep = max(up_window, down_window)
    recommendations = (*((w, r) for w, r in history.recommendations if w >= now - keep), (now, desired))
    if stabilized == desired:
        able_reason, able_message = _READY
    history = History(recommendations, history.scale_ups, history.scale_downs)
    replicas, (limit_reason, limit_message) = stabilized, _WITHIN
    if stabilized > current:
        limit = max(scale_up_limit(current, history, up, now), current)
        allowed, why = (limit, _UP_LIMIT) if max_replicas > limit else (max_replicas, _TOO_MANY)
        if stabilized > allowed:
            replicas, (limit_reason, limit_message) = allowed, why
    elif stabilized < current:
        limit = min(scale_down_limit(current, history, down, now), current)
        allowed, why = (limit, _DOWN_LIMIT) if min_replicas < limit else (min_replicas, _TOO_FEW)
        if stabilized < allowed:
            replicas, (limit_reason, limit_message) = allowed, why
    return Normalized(replicas, stabilized, able_reason, able_message, replicas != stabilized,
                      limit_reason, limit_message, history)  # fmt: skip


def normalize_without_behavior(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    history: History,
    now: float,
    *,
    downscale_window: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
) -> Normalized:
    """``normalizeDesiredReplicas``: the scale-down window, then ``convertDesiredReplicasWithRules``."""
    stabilized = desired
    for when, replicas in history.recommendations:
        if when > now - downscale_window:
            stabilized = max(stabilized, replicas)
    recommendations = (*((w, r) for w, r in history.recommendations if w >= now - downscale_window), (now, desired))
    able_reason, able_message = _READY if stabilized == desired else _DOWN_STABILIZED
    history = History(recommendations, history.scale_ups, history.scale_downs)
    up_limit = max(math.ceil(SCALE_UP_LIMIT_FACTOR * current), SCALE_UP_LIMIT_MINIMUM)
    allowed, why = (up_limit, _UP_LIMIT) if max_replicas > up_limit else (max_replicas, _TOO_MANY)
    lowest = max(min_replicas, 1)
    replicas, (limit_reason, limit_message) = stabilized, _WITHIN
    if stabilized < lowest:
        replicas, (limit_reason, limit_message) = lowest, _TOO_FEW
    elif stabilized > allowed:
        replicas, (limit_reason, limit_message) = allowed, why
    return Normalized(replicas, stabilized, able_reason, able_message, replicas != stabilized,
                      limit_reason, limit_message, history)  # fmt: skip


def record_rescale(
    history: History,
    before: int,
    after: int,
    up: HPAScalingRules | None,
    down: HPAScalingRules | None,
    now: float,
) -> History:
    """Remember a rescale for the rate limits (``storeScaleEvent``); events older than the
    direction's longest policy period are dropped, they no longer limit anything."""
    if after > before:
        keep = _longest_period(up)
        ups = (*((w, c) for w, c in history.scale_ups if w > now - keep), (now, after - before))
        return History(history.recommendations, ups, history.scale_downs)
    if after < before:
        keep = _longest_period(down)
        downs = (*((w, c) for w, c in history.scale_downs if w > now - keep), (now, before - after))
        return History(history.recommendations, history.scale_ups, downs)
    return history
