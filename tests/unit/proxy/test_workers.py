"""proxy.workers: merging the workers' Prometheus expositions, and the default worker count."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshwork.proxy.telemetry import MeshMetrics
from meshwork.proxy.workers import MAX_WORKERS, default_workers, merge_prometheus

A = (
    "# HELP istio_requests_total Requests.\n# TYPE istio_requests_total counter\n"
    'istio_requests_total{response_code="200"} 3\n'
    "# HELP istio_request_bytes Sizes.\n# TYPE istio_request_bytes histogram\n"
    'istio_request_bytes_bucket{le="1"} 1\nistio_request_bytes_sum{} 0.5\nistio_request_bytes_count{} 1\n'
)
B = (
    "# HELP istio_requests_total Requests.\n# TYPE istio_requests_total counter\n"
    'istio_requests_total{response_code="200"} 4\nistio_requests_total{response_code="503"} 1\n'
)


def test_series_are_summed_and_families_kept_once() -> None:
    merged = merge_prometheus([A, B])
    assert merged.count("# TYPE istio_requests_total counter") == 1
    assert 'istio_requests_total{response_code="200"} 7\n' in merged
    assert 'istio_requests_total{response_code="503"} 1\n' in merged
    assert "istio_request_bytes_sum{} 0.5\n" in merged and 'istio_request_bytes_bucket{le="1"} 1\n' in merged
    # Every sample stays under its own family's HELP/TYPE.
    assert merged.index("istio_requests_total{") < merged.index("# HELP istio_request_bytes")


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 10**6)), max_size=4))
def test_merging_equals_summing(workers: list[dict[str, int]]) -> None:
    texts = ["# HELP m M.\n# TYPE m counter\n" + "".join(f'm{{k="{k}"}} {v}\n' for k, v in w.items())
             for w in workers]  # fmt: skip
    merged = merge_prometheus(texts)
    for key in ("a", "b", "c"):
        total = sum(w.get(key, 0) for w in workers)
        present = any(key in w for w in workers)
        assert (f'm{{k="{key}"}} {total}\n' in merged) == present


def test_one_exposition_merges_to_itself() -> None:
    for text in (MeshMetrics().render(), A, B):
        assert merge_prometheus([text]) == text


def test_default_worker_count() -> None:
    assert default_workers("sidecar") == 1
    assert 1 <= default_workers("gateway") <= MAX_WORKERS
