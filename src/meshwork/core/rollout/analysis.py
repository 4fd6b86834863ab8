"""An AnalysisRun judged from its measurements (Argo Rollouts' analysis controller, pure).

What lives here: instantiating a run from AnalysisTemplates and arguments
(``{{args.NAME}}`` substitution), the phase of one measurement from its
value and the metric's conditions (Argo's ``EvaluateResult``), a metric's
phase from its counts and limits (``assessMetricStatus``), the run's phase
(the worst metric wins; a Failed, Error or Inconclusive metric ends the run),
and which metrics are due for a measurement now.

What must not: taking measurements (the shell does, and hands each one in
as a ``Taken``), or a clock (``now`` is a parameter).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.core.rollout.expr import ExprError, Value, truth
from meshwork.model.argo_analysis import AnalysisRun, AnalysisRunStatus, Argument, Metric
from meshwork.model.argo_common import parse_go_duration
from meshwork.model.base import IntOrString

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # Argo's DefaultConsecutiveErrorLimit
SUCCESSFUL, FAILED, ERROR, INCONCLUSIVE = "Successful", "Failed", "Error", "Inconclusive"
RUNNING, PENDING = "Running", "Pending"
TERMINAL = frozenset({SUCCESSFUL, FAILED, ERROR, INCONCLUSIVE})
_ENDS_RUN = (FAILED, ERROR, INCONCLUSIVE)  # in this order of precedence


@dataclass(frozen=True, slots=True)
class Taken:
    """One measurement the shell took: a value, or the error that stopped it.

    ``phase`` set: a provider that judges by itself (a Job's success or
    failure); the metric's conditions are not consulted and ``error`` is the
    measurement's message.
    """

    metric: str
    started_at: str
    finished_at: str
    value: Value = None
    error: str | None = None
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class RunDecision:
    """The run's new status, the metrics to measure now, and when to look again."""

    status: AnalysisRunStatus
    due: tuple[str, ...]
    requeue_after: float | None


# ---------------------------------------------------------------------------
# Instantiating
# ---------------------------------------------------------------------------


def substitute_args(metrics: Sequence[Metric], args: Mapping[str, str]) -> list[dict[str, Any]]:
    """The metrics' wire form with ``{{args.NAME}}`` replaced by the values given."""
    text = json.dumps([m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in metrics])
    for name, value in args.items():
        text = text.replace("{{args." + name + "}}", json.dumps(value)[1:-1])
        text = text.replace("{{ args." + name + " }}", json.dumps(value)[1:-1])
    return list(json.loads(text))


def resolve_args(declared: Iterable[Argument], given: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(values by name, names still missing): a given value wins over the template's default."""
    values: dict[str, str] = {}
    missing: list[str] = []
    for arg in declared:
        if arg.name in given:
            values[arg.name] = given[arg.name]
        elif arg.value is not None:
            values[arg.name] = arg.value
        else:
            missing.append(arg.name)
    return values, missing


# ---------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------


def measurement_phase(metric: Metric, value: Value) -> tuple[str, str | None]:
    """(phase, message) of one measured value (Argo's ``EvaluateResult``)."""
    success_text, failure_text = metric.success_condition, metric.failure_condition
    names = {"result": value}
    try:
        success = truth(success_text, names) if success_text else False
        failure = truth(failure_text, names) if failure_text else False
    except ExprError as exc:
        return ERROR, str(exc)
    if not success_text and not failure_text:
        return SUCCESSFUL, None
    if success_text and not failure_text:
        failure = not success
    elif failure_text and not success_text:
        success = not failure
    if failure:
        return FAILED, None
    if not success:
        return INCONCLUSIVE, None
    return SUCCESSFUL, None


def _limit(value: IntOrString | None, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return default


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_go_duration(text)
    except ValueError:
        return None


def effective_count(metric: Metric) -> int | None:
    """How many measurements the metric takes; None: until the run is terminated."""
    count = _limit(metric.count, -1) if metric.count is not None else None
    if count is None or count == 0:
        return 1 if not metric.interval else None
    return count


def metric_phase(metric: Metric, result: Mapping[str, Any], terminating: bool) -> tuple[str, str | None]:
    """(phase, message) of a metric from its counts (Argo's ``assessMetricStatus``)."""
    count = int(result.get("count") or 0)
    failed, inconclusive = int(result.get("failed") or 0), int(result.get("inconclusive") or 0)
    consecutive = int(result.get("consecutiveError") or 0)
    failure_limit = _limit(metric.failure_limit, 0)
    inconclusive_limit = _limit(metric.inconclusive_limit, 0)
    error_limit = _limit(metric.consecutive_error_limit, DEFAULT_CONSECUTIVE_ERROR_LIMIT)
    if count == 0:
        return (SUCCESSFUL, "Metric terminated") if terminating else (PENDING, None)
    if failure_limit >= 0 and failed > failure_limit:
        return FAILED, f"failed ({failed}) > failureLimit ({failure_limit})"
    if inconclusive_limit >= 0 and inconclusive > inconclusive_limit:
        return INCONCLUSIVE, f"inconclusive ({inconclusive}) > inconclusiveLimit ({inconclusive_limit})"
    if error_limit >= 0 and consecutive > error_limit:
        return ERROR, f"consecutiveErrors ({consecutive}) > consecutiveErrorLimit ({error_limit})"
    wanted = effective_count(metric)
    if wanted is not None and count >= wanted:
        if failed > int(result.get("successful") or 0):
            return FAILED, None
        if inconclusive > 0:
            return INCONCLUSIVE, None
        return SUCCESSFUL, None
    if terminating:
        return SUCCESSFUL, "Metric terminated"
    return RUNNING, None


def _record(metric: Metric, result: dict[str, Any], taken: Taken) -> None:
    """Add one measurement to a metric's result, with its counters."""
    message: str | None
    if taken.phase is not None:
        phase, message = taken.phase, taken.error
    elif taken.error is not None:
        phase, message = ERROR, taken.error
    else:
        phase, message = measurement_phase(metric, taken.value)
    entry: dict[str, Any] = {"phase": phase, "startedAt": taken.started_at, "finishedAt": taken.finished_at}
    if taken.error is None and taken.phase is None:
        entry["value"] = json.dumps(taken.value) if not isinstance(taken.value, str) else taken.value
    if message:
        entry["message"] = message
    result.setdefault("measurements", []).append(entry)
    result["count"] = int(result.get("count") or 0) + 1
    key = {SUCCESSFUL: "successful", FAILED: "failed", INCONCLUSIVE: "inconclusive", ERROR: "error"}[phase]
    result[key] = int(result.get(key) or 0) + 1
    result["consecutiveError"] = int(result.get("consecutiveError") or 0) + 1 if phase == ERROR else 0


def _dry(run: AnalysisRun, name: str) -> bool:
    return any(d.metric_name in (name, "*") for d in run.spec.dry_run or ())


def _run_message(results: Sequence[Mapping[str, Any]], phase: str) -> str | None:
    for r in results:
        if r.get("phase") == phase and r.get("message"):
            return f'Metric "{r["name"]}" assessed {phase} due to {r["message"]}'
    for r in results:
        if r.get("phase") == phase:
            return f'Metric "{r["name"]}" assessed {phase}'
    return None


def decide_run(run: AnalysisRun, taken: Iterable[Taken], now: float) -> RunDecision:
    """The run's status after recording ``taken``; the metrics due now; the next look.

    ``taken`` may repeat measurements already recorded (same metric and
    startedAt): they are skipped, so the decision is idempotent.
    """
    old = run.status or AnalysisRunStatus()
    status = old.model_dump(mode="json", by_alias=True, exclude_none=True)
    if status.get("phase") in TERMINAL:
        return RunDecision(old, (), None)
    started = str(status.get("startedAt") or rfc3339(now))
    status["startedAt"] = started
    by_name: dict[str, dict[str, Any]] = {r["name"]: r for r in status.get("metricResults") or []}
    metrics = {m.name: m for m in run.spec.metrics}
    for t in taken:
        metric = metrics.get(t.metric)
        if metric is None:
            continue
        result = by_name.setdefault(t.metric, {"name": t.metric, "phase": PENDING})
        if any(m.get("startedAt") == t.started_at for m in result.get("measurements") or ()):
            continue
        if result.get("phase") in TERMINAL:
            continue
        _record(metric, result, t)
    terminating = bool(run.spec.terminate)
    due: list[str] = []
    wake: list[float] = []
    for metric in run.spec.metrics:
        result = by_name.setdefault(metric.name, {"name": metric.name, "phase": PENDING})
        if result.get("phase") in TERMINAL:
            continue
        phase, message = metric_phase(metric, result, terminating)
        result["phase"] = phase
        if message:
            result["message"] = message
        if phase in TERMINAL:
            continue
        measurements = result.get("measurements") or []
        if measurements:
            last = parse_time(measurements[-1].get("finishedAt")) or now
            at = last + (_seconds(metric.interval) or 0.0)
        else:
            at = (parse_time(started) or now) + (_seconds(metric.initial_delay) or 0.0)
        if at <= now:
            due.append(metric.name)
        else:
            wake.append(at - now)
    results = [by_name[m.name] for m in run.spec.metrics]
    status["metricResults"] = results
    counted = [r for r in results if not _dry(run, r["name"])]
    phases = {r["phase"] for r in counted}
    run_phase = RUNNING
    for bad in _ENDS_RUN:
        if bad in phases:
            run_phase = bad
            break
    else:
        if phases <= {SUCCESSFUL}:
            run_phase = SUCCESSFUL
    status["phase"] = run_phase
    message = _run_message(counted, run_phase) if run_phase in _ENDS_RUN else None
    if message:
        status["message"] = message
    elif terminating and run_phase == SUCCESSFUL:
        status["message"] = "Run Terminated"
    summary = {"count": len(counted)}
    for key, phase in (("successful", SUCCESSFUL), ("failed", FAILED), ("inconclusive", INCONCLUSIVE),
                       ("error", ERROR), ("running", RUNNING)):  # fmt: skip
        n = sum(1 for r in counted if r["phase"] == phase)
        if n:
            summary[key] = n
    status["runSummary"] = summary
    if run_phase in TERMINAL:
        due, wake = [], []
    new = AnalysisRunStatus.model_validate(status)
    requeue = min(wake) if wake else None
    return RunDecision(new, tuple(due), requeue)
