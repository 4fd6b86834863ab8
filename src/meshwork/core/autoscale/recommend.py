"""Container requests and limits from observed usage, the way the VPA recommender sets them.

What lives here: ``recommend``, from a container's CPU rates (cores, one per
sampling interval) and memory readings (bytes) over a window:

* CPU request = the 90th percentile of the rates (VPA's target percentile),
  memory request = the peak (VPA's memory target is the peak of each
  aggregation interval), each times 1 + ``SAFETY_MARGIN`` (VPA's 15 %);
* lower and upper bounds = the 50th and 95th CPU percentiles and the peak,
  with the same margin, printed for judgement;
* limits: a container that had a limit keeps its limit-to-request ratio (VPA's
  default ``RequestsAndLimits`` control); one without keeps none;
* floors of ``MIN_CPU_CORES`` and ``MIN_MEMORY_BYTES``, so an idle container
  is never asked for nothing.

Differences from the VPA, on purpose: plain percentiles of the window's
samples rather than decaying histograms over 8 days, and smaller floors
(VPA's 25m / 250Mi are sized for real containers, not local processes).

What must not: sampling, the clock, printing, writing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SAFETY_MARGIN = 0.15  # VPA recommender --recommendation-margin-fraction
CPU_PERCENTILE = 0.90  # VPA --target-cpu-percentile
LOWER_CPU_PERCENTILE = 0.50  # VPA lower bound
UPPER_CPU_PERCENTILE = 0.95  # VPA upper bound
MIN_CPU_CORES = 0.01  # 10m: a floor for an idle process
MIN_MEMORY_BYTES = 4 * 1024 * 1024  # 4Mi: a floor below any Python process


@dataclass(frozen=True, slots=True)
class Usage:
    """A container's observed CPU rates (cores) and memory readings (bytes)."""

    cpu: Sequence[float]
    memory: Sequence[float]


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests and limits in base units (cores, bytes); None where unset."""

    cpu_request: float | None = None
    memory_request: float | None = None
    cpu_limit: float | None = None
    memory_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    target: Resources
    lower_cpu: float
    upper_cpu: float
    samples: int


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _scaled_limit(limit: float | None, request: float | None, new_request: float) -> float | None:
    if limit is None:
        return None
    if not request:
        return max(limit, new_request)
    return new_request * (limit / request)


def recommend(usage: Usage, current: Resources = Resources()) -> Recommendation:
    """What to set for one container given its usage over the window."""
    margin = 1.0 + SAFETY_MARGIN
    cpu = max(MIN_CPU_CORES, percentile(usage.cpu, CPU_PERCENTILE) * margin)
    memory = max(MIN_MEMORY_BYTES, max(usage.memory, default=0.0) * margin)
    target = Resources(
        cpu_request=cpu,
        memory_request=memory,
        cpu_limit=_scaled_limit(current.cpu_limit, current.cpu_request, cpu),
        memory_limit=_scaled_limit(current.memory_limit, current.memory_request, memory),
    )
    return Recommendation(
        target=target,
        lower_cpu=max(MIN_CPU_CORES, percentile(usage.cpu, LOWER_CPU_PERCENTILE) * margin),
        upper_cpu=max(MIN_CPU_CORES, percentile(usage.cpu, UPPER_CPU_PERCENTILE) * margin),
        samples=len(usage.cpu),
    )


def cpu_quantity(cores: float) -> str:
    """Cores as a milli-CPU quantity, rounded up (``"250m"``)."""
    return f"{max(1, math.ceil(cores * 1000 - 1e-9))}m"


def memory_quantity(size: float) -> str:
    """Bytes as a whole number of mebibytes, rounded up (``"64Mi"``)."""
    return f"{max(1, math.ceil(size / (1024 * 1024) - 1e-9))}Mi"
