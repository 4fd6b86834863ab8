"""The arithmetic of ``meshwork top services``: histogram_quantile, counter increases, windows."""

from __future__ import annotations

import math
from bisect import bisect_left

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.cli.topsvc import (
    Window,
    histogram_quantile,
    increase,
    meshed_pods,
    parse_metrics,
    rows,
)
from meshwork.proxy.observe import RequestInfo
from meshwork.proxy.telemetry import BUCKETS, MeshMetrics

BOUNDS = [*(float(b) for b in BUCKETS), math.inf]


def cumulative(values: list[float], bounds: list[float] = BOUNDS) -> list[tuple[float, float]]:
    counts = [0.0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1
    out, run = [], 0.0
    for le, c in zip(bounds, counts, strict=True):
        run += c
        out.append((le, run))
    return out


def test_known_values() -> None:
    # Prometheus' own documentation example shape: interpolation inside the bucket.
    buckets = [(0.5, 10.0), (1.0, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.25)  # lowest bucket starts at 0
    # A rank in the +Inf bucket answers the highest finite bound.
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 3.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.0, [(1.0, 0.0), (2.0, 3.0), (math.inf, 3.0)]))  # PromQL's 0/0
    assert histogram_quantile(-0.1, buckets) == -math.inf
    assert histogram_quantile(1.1, buckets) == math.inf
    assert histogram_quantile(0.5, list(reversed(buckets))) == pytest.approx(0.5)  # order does not matter


values = st.lists(st.floats(min_value=0.001, max_value=4_000_000.0), min_size=1, max_size=200)
quantiles = st.floats(min_value=0.001, max_value=1.0)  # q = 0 is NaN below the first observation


@given(values, quantiles)
def test_estimate_falls_in_the_bucket_of_the_true_quantile(vs: list[float], q: float) -> None:
    est = histogram_quantile(q, cumulative(vs))
    ordered = sorted(vs)
    rank = max(1, math.ceil(q * len(vs)))
    true = ordered[rank - 1]
    i = bisect_left(BOUNDS, true)
    if math.isinf(BOUNDS[i]):
        assert est == BOUNDS[-2]
    else:
        lower = BOUNDS[i - 1] if i else 0.0
        assert lower - 1e-9 <= est <= BOUNDS[i] + 1e-9


@given(values, quantiles, quantiles)
def test_monotonic_in_q(vs: list[float], q1: float, q2: float) -> None:
    b = cumulative(vs)
    lo, hi = sorted((q1, q2))
    assert histogram_quantile(lo, b) <= histogram_quantile(hi, b) + 1e-9


@given(values, quantiles)
def test_split_series_sum_like_one(vs: list[float], q: float) -> None:
    # Buckets from two pods, given as separate entries, act like their sum (PromQL sums by le first).
    half = len(vs) // 2
    merged = cumulative(vs[:half]) + cumulative(vs[half:])
    assert histogram_quantile(q, merged) == pytest.approx(histogram_quantile(q, cumulative(vs)))


def test_increase_handles_first_sight_and_resets() -> None:
    assert increase(10.0, 15.0) == 5.0
    assert increase(100.0, 7.0) == 7.0  # the proxy restarted: counting began again at 0


def _scrape(m: MeshMetrics) -> dict[tuple[str, str, str, str, str], float]:
    return parse_metrics(m.render())


def _info(status: int, duration: float, cluster: str = "inbound|9080||") -> RequestInfo:
    return RequestInfo(b"GET", b"reviews:9080", b"/", status, "", "", cluster, "", 0.0, duration, 0, 10,
                       source="127.1.0.9")  # fmt: skip


REVIEWS_OUT = "outbound|9080||reviews.default.svc.cluster.local"


def test_window_rates_success_and_latency_from_real_renders() -> None:
    from meshwork.proxy.telemetry import Peer

    m = MeshMetrics(Peer(workload="reviews-v1", namespace="default"), service="reviews.default.svc.cluster.local")
    inbound = m.observer("destination")
    outbound = m.observer("source")  # reporter=source samples must be ignored
    w = Window(seconds=60)
    w.add(0.0, {"reviews-1": _scrape(m)})
    for i in range(100):
        inbound.request_done(_info(503 if i < 10 else 200, 0.003 if i < 50 else 0.04))
        outbound.request_done(_info(200, 1.0, REVIEWS_OUT))
    w.add(10.0, {"reviews-1": _scrape(m)})
    seconds, stats = w.stats()
    assert seconds == 10.0
    (s,) = stats
    assert s.name == "reviews" and s.namespace == "default"
    assert s.rps == pytest.approx(10.0)
    assert s.success == pytest.approx(0.9)
    assert 1.0 <= s.p50 <= 5.0  # the 50th of 100 observations is in (1, 5] ms
    assert 25.0 <= s.p90 <= 50.0 and 25.0 <= s.p99 <= 50.0
    table = rows(stats)
    assert table[0] == ("SERVICE", "NAMESPACE", "RPS", "SUCCESS", "P50", "P90", "P99")
    assert table[1][:4] == ("reviews", "default", "10.0", "90.0%")


def test_window_drops_steps_older_than_its_span_and_survives_a_restart() -> None:
    m = MeshMetrics(service="reviews.default.svc.cluster.local")
    o = m.observer("destination")
    w = Window(seconds=60)
    w.add(0.0, {"p": _scrape(m)})
    for _ in range(30):
        o.request_done(_info(200, 0.001))
    w.add(30.0, {"p": _scrape(m)})
    fresh = MeshMetrics(service="reviews.default.svc.cluster.local")  # the pod's proxy restarted
    for _ in range(5):
        fresh.observer("destination").request_done(_info(200, 0.001))
    w.add(70.0, {"p": _scrape(fresh)})
    seconds, (s,) = w.stats()
    assert seconds == 40.0  # the 0-30 s step fell out of the minute
    assert s.rps == pytest.approx(5 / 40)


def test_meshed_pods_need_a_sidecar_and_an_ip() -> None:
    pods = [
        {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]},
         "status": {"podIP": "127.1.0.5"}},
        {"metadata": {"name": "native"}, "spec": {"containers": [{"name": "app"}],
         "initContainers": [{"name": "istio-proxy", "restartPolicy": "Always"}]}, "status": {"podIP": "127.1.0.6"}},
        {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.1.0.7"}},
        {"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "istio-proxy"}]}, "status": {}},
    ]  # fmt: skip
    assert meshed_pods(pods) == [("a", "127.1.0.5"), ("native", "127.1.0.6")]


def test_a_service_is_counted_by_its_destinations_else_by_its_callers() -> None:
    from meshwork.proxy.telemetry import Peer

    # The caller's sidecar has no inbound traffic: it reports only as the source.
    caller = MeshMetrics(Peer(workload="productpage-v1", namespace="default"))
    served = MeshMetrics(Peer(workload="reviews-v1", namespace="default"), service="reviews.default.svc.cluster.local")
    out, inbound = caller.observer("source"), served.observer("destination")
    w = Window(seconds=60)
    w.add(0.0, {"caller": _scrape(caller), "reviews-1": _scrape(served)})
    for _ in range(20):  # the same 20 requests, seen from both ends
        out.request_done(_info(200, 0.001, REVIEWS_OUT))
        inbound.request_done(_info(200, 0.001))
    for _ in range(30):  # a service with no sidecar of its own: only its callers report it
        out.request_done(_info(200, 0.001, "outbound|80||legacy.default.svc.cluster.local"))
    w.add(10.0, {"caller": _scrape(caller), "reviews-1": _scrape(served)})
    _, stats = w.stats()
    assert {s.name: s.rps for s in stats} == {"legacy": pytest.approx(3.0), "reviews": pytest.approx(2.0)}
