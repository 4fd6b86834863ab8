"""The replica calculator (``core.autoscale.replicas``): upstream's cases from
``replica_calculator_test.go`` in spirit (tolerance, unready and missing pods,
object metrics), and properties: the count never moves against the ratio,
and a ratio within tolerance never moves it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.autoscale.replicas import (
    MetricError,
    PodState,
    Sample,
    Tolerance,
    object_metric_replicas,
    pod_metric_replicas,
)

NOW = 10_000.0


def pods(n: int, **kw: object) -> tuple[PodState, ...]:
    return tuple(PodState(f"p{i}", started=NOW - 1000, ready_since=NOW - 900, **kw) for i in range(n))  # type: ignore[arg-type]


def samples(*values: float) -> dict[str, Sample]:
    return {f"p{i}": Sample(v, NOW, 15.0) for i, v in enumerate(values)}


CASES = [
    # (what, current, pod count, values, target, requests per pod, expected replicas, expected usage)
    ("cpu scale up", 3, 3, (0.3, 0.5, 0.7), 30, 1.0, 5, 50.0),
    ("cpu scale down", 5, 5, (0.1, 0.1, 0.1, 0.1, 0.1), 50, 1.0, 1, 10.0),
    ("within tolerance up", 3, 3, (0.52, 0.55, 0.56), 50, 1.0, 3, pytest.approx(54.33, abs=0.01)),
    ("within tolerance down", 3, 3, (0.46, 0.45, 0.46), 50, 1.0, 3, pytest.approx(45.67, abs=0.01)),
    ("just outside tolerance", 4, 4, (0.56, 0.56, 0.56, 0.56), 50, 1.0, 5, pytest.approx(56.0)),
    ("rps doubled", 2, 2, (20.0, 20.0), 10, None, 4, 20.0),
    ("rps halved", 4, 4, (5.0, 5.0, 5.0, 5.0), 10, None, 2, 5.0),
]


@pytest.mark.parametrize(("what", "current", "n", "values", "target", "asked", "want", "usage"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_cases(what: str, current: int, n: int, values: tuple[float, ...], target: float, asked: float | None,
               want: int, usage: float) -> None:  # fmt: skip
    requests = {f"p{i}": asked for i in range(n)} if asked is not None else None
    got = pod_metric_replicas(current, pods(n), samples(*values), target, requests=requests, cpu=asked is not None, now=NOW)
    assert (got.replicas, got.usage) == (want, usage)


def test_missing_pods_count_at_target_when_scaling_down() -> None:
    # 4 pods, 1 without metrics; the 3 read 20 % of 50 %: the missing one counts as 100 %.
    got = pod_metric_replicas(4, pods(4), samples(0.2, 0.2, 0.2), 50, requests={f"p{i}": 1.0 for i in range(4)}, now=NOW)
    # (0.2*3 + 1.0) / 4 = 40 % -> ratio 0.8 -> ceil(0.8 * 4) = 4: no move after all.
    assert got.replicas == 4


def test_missing_pods_count_as_idle_when_scaling_up() -> None:
    got = pod_metric_replicas(4, pods(4), samples(1.0, 1.0, 1.0), 50, requests={f"p{i}": 1.0 for i in range(4)}, now=NOW)
    # (1 + 1 + 1 + 0) / 4 = 75 % -> ratio 1.5 -> 6
    assert got.replicas == 6


def test_unready_cpu_pods_count_as_idle_when_scaling_up() -> None:
    ps = (*pods(2), PodState("p2", ready=False, started=NOW - 10, ready_since=NOW - 10))
    got = pod_metric_replicas(3, ps, samples(1.0, 1.0, 0.9), 50, requests={f"p{i}": 1.0 for i in range(3)}, cpu=True, now=NOW)
    # ready: 100 % each -> ratio 2; with the unready at 0: 200/3 % -> ratio 1.33 -> ceil(1.33*3) = 4
    assert got.replicas == 4
    assert got.usage == 100.0


def test_unready_pods_do_not_count_for_other_metrics() -> None:
    ps = (*pods(1), PodState("p1", ready=False, started=NOW - 10, ready_since=NOW - 10))
    got = pod_metric_replicas(2, ps, samples(20.0, 20.0), 10, now=NOW)
    assert got.replicas == 4  # both samples count: not CPU


def test_warming_up_cpu_pod_is_ignored_until_a_window_after_ready() -> None:
    warm = PodState("p1", ready=True, started=NOW - 20, ready_since=NOW - 5)
    got = pod_metric_replicas(2, (*pods(1), warm), samples(0.25, 0.9), 50, requests={"p0": 1.0, "p1": 1.0}, cpu=True, now=NOW)
    # p1's sample window (15 s) began before it was ready: only p0 counts (ratio 0.5), scaling down,
    # and p1 is not missing nor scaled up, so the count follows p0 alone: ceil(0.5 * 1) = 1.
    assert got.replicas == 1


def test_deleted_and_failed_pods_are_ignored() -> None:
    ps = (*pods(2), PodState("p2", deleting=True), PodState("p3", phase="Failed"))
    got = pod_metric_replicas(4, ps, samples(20.0, 20.0, 100.0, 100.0), 10, now=NOW)
    assert got.replicas == 4 and got.usage == 20.0


def test_errors() -> None:
    with pytest.raises(MetricError, match="no pods returned by selector"):
        pod_metric_replicas(1, (), {}, 50)
    with pytest.raises(MetricError, match="missing request"):
        pod_metric_replicas(1, pods(1), samples(0.5), 50, requests={}, now=NOW)
    with pytest.raises(MetricError, match="did not receive metrics"):
        pod_metric_replicas(1, pods(1), {}, 50, now=NOW)


def test_object_metrics() -> None:
    # Value: the ratio scales the ready pods.
    assert object_metric_replicas(3, 3, 200.0, 100.0, per_pod=False).replicas == 6
    assert object_metric_replicas(3, 3, 105.0, 100.0, per_pod=False).replicas == 3
    # AverageValue: ceil(value / target), the current count when within tolerance.
    assert object_metric_replicas(2, 2, 45.0, 10.0, per_pod=True).replicas == 5
    assert object_metric_replicas(4, 4, 41.0, 10.0, per_pod=True).replicas == 4
    assert object_metric_replicas(4, 4, 41.0, 10.0, per_pod=True).usage == pytest.approx(10.25)


def test_configurable_tolerance_per_direction() -> None:
    wide_down = Tolerance(down=0.6, up=0.1)
    assert pod_metric_replicas(4, pods(4), samples(5, 5, 5, 5), 10, tolerance=wide_down, now=NOW).replicas == 4
    assert pod_metric_replicas(2, pods(2), samples(12, 12), 10, tolerance=wide_down, now=NOW).replicas == 3


@given(current=st.integers(1, 50), values=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=20),
       target=st.floats(0.5, 500, allow_nan=False), missing=st.integers(0, 3))  # fmt: skip
def test_never_moves_against_the_ratio(current: int, values: list[float], target: float, missing: int) -> None:
    ps = pods(len(values) + missing)
    got = pod_metric_replicas(current, ps, samples(*values), target, now=NOW)
    ratio = (sum(values) / len(values)) / target
    if Tolerance().within(ratio):
        assert got.replicas == current
    elif not missing:
        assert got.replicas == math.ceil(ratio * len(values))
    elif ratio > 1:  # missing pods count as idle: up to what the samples alone ask, or no move
        assert got.replicas in (current, math.ceil(ratio * len(values)))
        assert got.replicas >= current
    else:  # missing pods count at the target: never below what the samples alone ask, never up
        assert got.replicas <= current
        assert got.replicas >= min(current, math.ceil(ratio * len(values)))
