"""The mesh's golden signals from the sidecars' Istio metrics: parsing, windows, quantiles.

What lives here: the scrape of a meshed pod's ``<podIP>:15020/stats/prometheus``
(``scrape_all``), the series ``meshwork top services`` and the Rollout
controller's ``meshwork`` analysis provider read from it (``parse_metrics``),
and the arithmetic Prometheus would do: counter increases with resets
(``increase``), and quantiles from histogram bucket increases
(``histogram_quantile``, same algorithm as PromQL's).

Each request is counted once: a service that any sidecar reports as the
destination (the sidecar of the pod that served it, on its inbound side) is
read from ``reporter="destination"`` samples only; a service nobody reports
that way (a plain, unmeshed backend, an external host) from the callers'
``reporter="source"`` samples.

What must not live here: the metrics' format (``proxy.telemetry``), or how
they are shown (``cli.topsvc``).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADMIN_PORT",
    "Series",
    "ServiceStats",
    "Window",
    "histogram_quantile",
    "increase",
    "increases",
    "meshed_pods",
    "parse_metrics",
    "scrape",
    "scrape_all",
    "service_stats",
    "summed",
    "traffic_stats",
]

ADMIN_PORT = 15020
SIDECAR = "istio-proxy"
WINDOW_SECONDS = 60.0  # "over the last minute"
SCRAPE_TIMEOUT = 2.0  # a sidecar answers its admin port at once; a slow one is left out
SCRAPE_THREADS = 16  # scrapes at once (each waits on one socket)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs, never via $http_proxy

_REQUESTS = "istio_requests_total"
_BUCKET = "istio_request_duration_milliseconds_bucket"

# One series: (metric, service fqdn, service name, service namespace, code or le, reporter).
Series = tuple[str, str, str, str, str, str]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile from cumulative ``(upper bound, count)`` buckets, as PromQL computes it.

    Linear interpolation inside the bucket where the rank falls, the lowest
    bucket starting at 0; the +Inf bucket answers the highest finite bound.
    NaN without a +Inf bucket, with fewer than two buckets, or no observations
    (and, as in PromQL, for q = 0 when the lowest buckets are empty).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    bs = sorted(merged.items())
    if len(bs) < 2 or not math.isinf(bs[-1][0]):
        return math.nan
    # Counts must not decrease with the bound (a scrape racing an update may break this).
    fixed: list[tuple[float, float]] = []
    high = 0.0
    for le, count in bs:
        high = max(high, count)
        fixed.append((le, high))
    total = fixed[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next((i for i in range(len(fixed) - 1) if fixed[i][1] >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    if count == 0:
        return math.nan  # q == 0 below the first observation: PromQL's 0/0
    return start + (end - start) * (rank / count)


def increase(before: float, after: float) -> float:
    """How much a counter grew between two samples; a drop means it restarted from 0."""
    return after - before if after >= before else after


def increases(before: Mapping[Series, float], after: Mapping[Series, float]) -> dict[Series, float]:
    """How much each series of one pod grew between two scrapes.

    A series missing from ``before`` was 0 then: the proxy creates a series at its first request.
    Series that did not grow stay, at 0: a histogram bucket that did not grow still bounds
    the buckets above it when a quantile is interpolated.
    """
    return {key: increase(before.get(key, 0.0), value) for key, value in after.items()}


def summed(into: dict[Series, float], more: Mapping[Series, float]) -> dict[Series, float]:
    """``into`` with ``more`` added series by series (``into`` is updated and returned)."""
    for key, value in more.items():
        into[key] = into.get(key, 0.0) + value
    return into


def parse_metrics(text: str, reporter: str | None = None) -> dict[Series, float]:
    """The request counts and duration buckets in a scrape, as ``reporter`` reported them (None: both)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in (_REQUESTS, _BUCKET):
                continue
            lb = s.labels
            by = lb.get("reporter", "")
            if by not in ("source", "destination") or (reporter is not None and by != reporter):
                continue
            extra = lb.get("response_code", "") if s.name == _REQUESTS else lb.get("le", "")
            key = (s.name, lb.get("destination_service", "unknown"), lb.get("destination_service_name", "unknown"),
                   lb.get("destination_service_namespace", "unknown"), extra, by)  # fmt: skip
            out[key] = out.get(key, 0.0) + s.value
    return out


@dataclass(frozen=True, slots=True)
class ServiceStats:
    service: str
    name: str
    namespace: str
    rps: float
    success: float  # share of non-5xx responses (NaN without requests)
    p50: float
    p90: float
    p99: float


def service_stats(deltas: dict[Series, float], seconds: float) -> list[ServiceStats]:
    """Per-service rates and quantiles from series increases over ``seconds``.

    A service with destination-reported series is counted from those only (its
    callers' source-reported ones count the same requests again).
    """
    reported = {(svc, name, ns) for (_, svc, name, ns, _, by) in deltas if by == "destination"}
    services: dict[tuple[str, str, str], tuple[list[float], list[tuple[float, float]]]] = {}
    for (metric, svc, name, ns, extra, by), value in deltas.items():
        if by == "source" and (svc, name, ns) in reported:
            continue
        counts, buckets = services.setdefault((svc, name, ns), ([0.0, 0.0], []))
        if metric == _REQUESTS:
            counts[0] += value
            if extra.startswith("5"):
                counts[1] += value
        else:
            buckets.append((float(extra), value))
    return [_stats(svc, name, ns, total, errors, buckets, seconds)
            for (svc, name, ns), ((total, errors), buckets) in sorted(services.items())]  # fmt: skip


def traffic_stats(deltas: Mapping[Series, float], seconds: float) -> ServiceStats:
    """Rate, success and quantiles of all these series together (one pod's destination-reported ones,
    say), whatever service they name."""
    total = errors = 0.0
    buckets: list[tuple[float, float]] = []
    for (metric, _svc, _name, _ns, extra, _by), value in deltas.items():
        if metric == _REQUESTS:
            total += value
            if extra.startswith("5"):
                errors += value
        else:
            buckets.append((float(extra), value))
    return _stats("", "", "", total, errors, buckets, seconds)


def _stats(svc: str, name: str, ns: str, total: float, errors: float, buckets: list[tuple[float, float]],
           seconds: float) -> ServiceStats:  # fmt: skip
    q = [histogram_quantile(p, buckets) for p in (0.5, 0.9, 0.99)]
    return ServiceStats(svc, name, ns, total / seconds if seconds > 0 else 0.0,
                        (total - errors) / total if total else math.nan, *q)  # fmt: skip


class Window:
    """Scrapes over time, per pod; increases summed over the last ``seconds`` (like PromQL's increase)."""

    def __init__(self, seconds: float = WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self.last: dict[str, dict[Series, float]] = {}
        self.last_time: float | None = None
        self.steps: deque[tuple[float, float, dict[Series, float]]] = deque()  # (from, to, deltas)

    def add(self, now: float, scrapes: dict[str, dict[Series, float]]) -> None:
        """Take one scrape of every pod (pod name -> its series) made at ``now``."""
        if self.last_time is not None:
            step: dict[Series, float] = {}
            for pod, series in scrapes.items():
                before = self.last.get(pod)
                if before is not None:
                    summed(step, increases(before, series))
            self.steps.append((self.last_time, now, step))
        self.last = scrapes
        self.last_time = now
        while self.steps and self.steps[0][0] < now - self.seconds:
            self.steps.popleft()

    def stats(self) -> tuple[float, list[ServiceStats]]:
        """(seconds covered, per-service stats) over the steps in the window."""
        if not self.steps:
            return 0.0, []
        seconds = self.steps[-1][1] - self.steps[0][0]
        total: dict[Series, float] = {}
        for _, _, step in self.steps:
            summed(total, step)
        # Services seen in the latest scrape appear even with no traffic.
        for series in self.last.values():
            for key in series:
                total.setdefault(key, 0.0)
        return seconds, service_stats(total, seconds)


def meshed_pods(pods: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(pod name, pod IP) of the running pods with an ``istio-proxy`` container."""
    out = []
    for pod in pods:
        spec = pod.get("spec") or {}
        containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
        ip = (pod.get("status") or {}).get("podIP")
        if ip and any(c.get("name") == SIDECAR for c in containers):
            out.append((pod["metadata"]["name"], ip))
    return out


def scrape(ip: str, reporter: str | None = None) -> dict[Series, float] | None:
    """One pod's series (``reporter`` as in ``parse_metrics``); None when it does not answer."""
    host = f"[{ip}]" if ":" in ip else ip
    try:
        with _DIRECT.open(f"http://{host}:{ADMIN_PORT}/stats/prometheus", timeout=SCRAPE_TIMEOUT) as r:
            return parse_metrics(r.read().decode("utf-8", "replace"), reporter)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def scrape_all(pods: Sequence[tuple[str, str]], reporter: str | None = None) -> dict[str, dict[Series, float]]:
    """Every pod's series; pods that do not answer are left out."""
    with ThreadPoolExecutor(max_workers=min(SCRAPE_THREADS, max(1, len(pods)))) as pool:
        results = list(pool.map(lambda p: scrape(p[1], reporter), pods))
    return {name: r for (name, _), r in zip(pods, results, strict=True) if r is not None}
