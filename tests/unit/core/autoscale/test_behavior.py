"""Scaling policies and stabilisation (``core.autoscale.behavior``), with upstream's worked
examples from the HPA docs and ``horizontal_test.go``, and properties: the result always lies
between the current count and the recommendation (never overshoots), within min/max."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.autoscale.behavior import (
    History,
    normalize_with_behavior,
    normalize_without_behavior,
    record_rescale,
    scale_down_limit,
    scale_up_limit,
)
from meshwork.model.autoscaling import HorizontalPodAutoscalerBehavior, HPAScalingRules


def rules(**behavior: Any) -> tuple[HPAScalingRules, HPAScalingRules]:
    """Both directions' rules after upstream's defaulting (the model fills what is unset)."""
    from meshwork.model.autoscaling import HorizontalPodAutoscalerSpec

    spec = HorizontalPodAutoscalerSpec.model_validate({
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 100,
        "behavior": HorizontalPodAutoscalerBehavior.model_validate(behavior).model_dump(by_alias=True, exclude_none=True),
    })  # fmt: skip
    assert spec.behavior is not None and spec.behavior.scale_up is not None and spec.behavior.scale_down is not None
    return spec.behavior.scale_up, spec.behavior.scale_down


def test_default_scale_up_is_4_pods_or_double_per_15s() -> None:
    up, _ = rules()
    assert scale_up_limit(1, History(), up, 0) == 5  # +4 pods beats +100 %
    assert scale_up_limit(10, History(), up, 0) == 20  # +100 % beats +4


def test_policies_count_from_the_start_of_their_period() -> None:
    up, _ = rules(scaleUp={"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]})
    history = History(scale_ups=((100.0, 2),))
    assert scale_up_limit(4, history, up, 130.0) == 4  # 2 added 30 s ago: started from 2, may reach 4
    assert scale_up_limit(4, history, up, 161.0) == 6  # that rescale is out of the period


def test_select_policy_min_and_disabled() -> None:
    policies = [{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 10, "periodSeconds": 60}]
    up, down = rules(scaleUp={"selectPolicy": "Min", "policies": policies},
                     scaleDown={"selectPolicy": "Min", "policies": policies})  # fmt: skip
    assert scale_up_limit(20, History(), up, 0) == 22  # +10 % (ceil) is the smaller change
    assert scale_down_limit(20, History(), down, 0) == 18  # -10 % is the smaller change
    up, down = rules(scaleUp={"selectPolicy": "Disabled"}, scaleDown={"selectPolicy": "Disabled"})
    assert scale_up_limit(3, History(), up, 0) == 3
    got = normalize_with_behavior(3, 1, 1, 10, up, down, History(), 0.0)
    assert got.replicas == 3 and got.limit_reason == "ScaleDownLimit"


def test_docs_example_scale_down_by_4_pods_or_10_percent() -> None:
    # The HPA docs: 80 pods, policies Pods 4 / Percent 10 (per 60 s), Max: 8 may go first.
    down_policies = [{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 10, "periodSeconds": 60}]
    up, down = rules(scaleDown={"stabilizationWindowSeconds": 0, "policies": down_policies})
    got = normalize_with_behavior(80, 10, 1, 100, up, down, History(), 0.0)
    assert (got.replicas, got.limit_reason, got.limited) == (72, "ScaleDownLimit", True)
    history = record_rescale(got.history, 80, 72, up, down, 0.0)
    # Within the same minute no more may go (72 + 8 = 80 at the period's start: -10 % = 72).
    again = normalize_with_behavior(72, 10, 1, 100, up, down, history, 30.0)
    assert again.replicas == 72
    later = normalize_with_behavior(72, 10, 1, 100, up, down, history, 61.0)
    assert later.replicas == 64  # 72 - 10 % (rounded down 64.8)


def test_scale_down_stabilization_holds_the_highest_recent_recommendation() -> None:
    up, down = rules(scaleDown={"stabilizationWindowSeconds": 60})
    history = History()
    got = normalize_with_behavior(4, 4, 1, 10, up, down, history, 0.0)
    history = got.history
    got = normalize_with_behavior(4, 2, 1, 10, up, down, history, 30.0)
    assert (got.replicas, got.able_reason) == (4, "ScaleDownStabilized")
    got = normalize_with_behavior(4, 2, 1, 10, up, down, got.history, 61.0)
    assert (got.replicas, got.able_reason) == (2, "ReadyForNewScale")


def test_scale_up_stabilization_holds_the_lowest_recent_recommendation() -> None:
    up, down = rules(scaleUp={"stabilizationWindowSeconds": 20})
    got = normalize_with_behavior(2, 2, 1, 10, up, down, History(), 0.0)
    got = normalize_with_behavior(2, 6, 1, 10, up, down, got.history, 10.0)
    assert (got.replicas, got.able_reason) == (2, "ScaleUpStabilized")
    got = normalize_with_behavior(2, 6, 1, 10, up, down, got.history, 21.0)
    assert got.replicas == 6


def test_bounds_reasons() -> None:
    up, down = rules()
    assert normalize_with_behavior(4, 30, 1, 6, up, down, History(), 0.0).limit_reason == "TooManyReplicas"
    assert normalize_with_behavior(4, 30, 1, 6, up, down, History(), 0.0).replicas == 6
    got = normalize_with_behavior(4, 0, 2, 6, up, rules(scaleDown={"stabilizationWindowSeconds": 0})[1], History(), 0.0)
    assert (got.replicas, got.limit_reason) == (2, "TooFewReplicas")
    got = normalize_with_behavior(4, 4, 2, 6, up, down, History(), 0.0)
    assert (got.limited, got.limit_reason) == (False, "DesiredWithinRange")


def test_without_behavior_doubles_or_goes_to_4_and_waits_the_downscale_window() -> None:
    assert normalize_without_behavior(1, 50, 1, 100, History(), 0.0).replicas == 4
    assert normalize_without_behavior(10, 50, 1, 100, History(), 0.0).replicas == 20
    got = normalize_without_behavior(10, 50, 1, 100, History(), 0.0)
    assert got.limit_reason == "ScaleUpLimit"
    first = normalize_without_behavior(5, 5, 1, 10, History(), 0.0, downscale_window=300)
    held = normalize_without_behavior(5, 2, 1, 10, first.history, 100.0, downscale_window=300)
    assert (held.replicas, held.able_reason) == (5, "ScaleDownStabilized")
    done = normalize_without_behavior(5, 2, 1, 10, held.history, 301.0, downscale_window=300)
    assert done.replicas == 2


_POLICY = st.fixed_dictionaries({"type": st.sampled_from(["Pods", "Percent"]), "value": st.integers(1, 200),
                                 "periodSeconds": st.integers(1, 120)})  # fmt: skip
_RULES = st.fixed_dictionaries({"stabilizationWindowSeconds": st.integers(0, 120),
                                "selectPolicy": st.sampled_from(["Max", "Min", "Disabled"]),
                                "policies": st.lists(_POLICY, min_size=1, max_size=3)})  # fmt: skip


@given(up=_RULES, down=_RULES, min_r=st.integers(1, 10), extra=st.integers(0, 40),
       steps=st.lists(st.tuples(st.floats(0.1, 60), st.integers(0, 80)), min_size=1, max_size=12))  # fmt: skip
def test_never_overshoots_and_stays_in_bounds(up: dict[str, Any], down: dict[str, Any], min_r: int, extra: int,
                                              steps: list[tuple[float, int]]) -> None:  # fmt: skip
    max_r = min_r + extra
    up_rules, down_rules = rules(scaleUp=up, scaleDown=down)
    history, current, now = History(), min_r, 0.0
    for dt, desired in steps:
        now += dt
        got = normalize_with_behavior(current, desired, min_r, max_r, up_rules, down_rules, history, now)
        assert min_r <= got.replicas <= max_r
        # Never past the (stabilised) recommendation, clamped to the bounds.
        target = min(max(got.stabilized, min_r), max_r)
        assert min(current, target) <= got.replicas <= max(current, target)
        history = record_rescale(got.history, current, got.replicas, up_rules, down_rules, now)
        current = got.replicas


@pytest.mark.parametrize("window", [0, 5, 300])
def test_recommendations_are_forgotten_after_the_longest_window(window: int) -> None:
    up, down = rules(scaleDown={"stabilizationWindowSeconds": window})
    history = History()
    for t in range(0, 1000, 10):
        history = normalize_with_behavior(3, 3, 1, 10, up, down, history, float(t)).history
    assert len(history.recommendations) <= window // 10 + 2
