"""AnalysisRun judgement: measurement phases, limits, run phase, due metrics."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.rollout.analysis import Taken, decide_run, measurement_phase, substitute_args
from meshwork.model.argo_analysis import AnalysisRun, Metric

T0 = 1_700_000_000.0


def metric(**extra: Any) -> Metric:
    body = {"name": "success-rate", "provider": {"web": {"url": "http://x/"}}, **extra}
    return Metric.model_validate(body)


def run(*metrics: dict[str, Any], status: dict[str, Any] | None = None) -> AnalysisRun:
    body: dict[str, Any] = {"metadata": {"name": "r", "namespace": "default", "uid": "u1"},
                            "spec": {"metrics": list(metrics)}}  # fmt: skip
    if status is not None:
        body["status"] = status
    return AnalysisRun.model_validate(body)


SR = {"name": "sr", "interval": "5s", "count": 3, "successCondition": "result[0] >= 0.95",
      "provider": {"web": {"url": "http://x/"}}}  # fmt: skip


def take(value: object, at: float, name: str = "sr", error: str | None = None) -> Taken:
    return Taken(name, rfc3339(at), rfc3339(at + 1), value, error)  # type: ignore[arg-type]


def test_measurement_phase_follows_argo() -> None:
    assert measurement_phase(metric(), 1)[0] == "Successful"
    assert measurement_phase(metric(successCondition="result > 1"), 0)[0] == "Failed"
    assert measurement_phase(metric(failureCondition="result > 1"), 0)[0] == "Successful"
    both = metric(successCondition="result > 5", failureCondition="result < 1")
    assert [measurement_phase(both, v)[0] for v in (0, 3, 9)] == ["Failed", "Inconclusive", "Successful"]
    assert measurement_phase(metric(successCondition="result >"), 1)[0] == "Error"


def test_a_run_measures_every_interval_until_count() -> None:
    r = run(SR)
    first = decide_run(r, [], T0)
    assert first.due == ("sr",) and first.status.phase == "Running"
    r = run(SR, status=first.status.model_dump(by_alias=True, exclude_none=True))
    second = decide_run(r, [take([0.99], T0)], T0 + 1)
    assert second.due == () and second.requeue_after is not None and 4 <= second.requeue_after <= 5
    r = run(SR, status=second.status.model_dump(by_alias=True, exclude_none=True))
    again = decide_run(r, [take([0.99], T0)], T0 + 1)  # the same measurement handed in twice
    assert again.status == second.status
    third = decide_run(r, [take([0.98], T0 + 6), take([0.97], T0 + 12)], T0 + 13)
    assert third.status.phase == "Successful" and third.due == ()


def test_one_failure_over_the_limit_fails_the_run_with_argos_message() -> None:
    r = run(SR, status={"phase": "Running", "startedAt": rfc3339(T0)})
    out = decide_run(r, [take([0.80], T0)], T0 + 1)
    assert out.status.phase == "Failed"
    assert out.status.message == 'Metric "sr" assessed Failed due to failed (1) > failureLimit (0)'


def test_errors_count_toward_the_consecutive_error_limit() -> None:
    m = {**SR, "count": 10}
    status: dict[str, Any] = {"phase": "Running", "startedAt": rfc3339(T0)}
    for i in range(5):
        out = decide_run(run(m, status=status), [take(None, T0 + 10 * i, error="no requests")], T0 + 10 * i + 2)
        status = out.status.model_dump(by_alias=True, exclude_none=True)
    assert out.status.phase == "Error"


def test_args_are_substituted() -> None:
    m = Metric.model_validate({"name": "x", "provider": {"web": {"url": "http://{{args.host}}/q?h={{args.hash}}"}}})
    assert substitute_args([m], {"host": "svc", "hash": "abc"})[0]["provider"]["web"]["url"] == "http://svc/q?h=abc"


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=6), st.integers(0, 3))
def test_failed_count_over_limit_is_failed(values: list[float], limit: int) -> None:
    m = {**SR, "count": 6, "failureLimit": limit}
    status: dict[str, Any] = {"phase": "Running", "startedAt": rfc3339(T0)}
    taken = [take([v], T0 + 10 * i) for i, v in enumerate(values)]
    out = decide_run(run(m, status=status), taken, T0 + 100)
    failures = sum(v < 0.95 for v in values)
    if failures > limit:
        assert out.status.phase == "Failed"
    else:
        assert out.status.phase in ("Running", "Successful")
