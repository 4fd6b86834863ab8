"""Istio metrics and the access log (proxy.telemetry), driven with the records the engine reports."""

from __future__ import annotations

import bisect
import io
import json
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from meshwork.core.http1 import Request
from meshwork.proxy import plan
from meshwork.proxy.observe import ConnectionInfo, RequestInfo
from meshwork.proxy.telemetry import (
    BUCKETS,
    LABELS,
    AccessLogWriter,
    Directory,
    MeshMetrics,
    Peer,
    escape_label,
    ms_slot,
    parse_cluster,
    size_slot,
)

REVIEWS = "outbound|9080|v1|reviews.default.svc.cluster.local"


def info(status: int = 200, *, duration: float = 0.004, upstream: str = "127.1.0.5:9080", source: str = "127.1.0.9",
         flags: str = "", cluster: str = REVIEWS, req_bytes: int = 0, resp_bytes: int = 120,
         request: Request | None = None) -> RequestInfo:  # fmt: skip
    return RequestInfo(b"GET", b"reviews:9080", b"/reviews/1", status, flags, "default", cluster, upstream,
                       0.0, duration, req_bytes, resp_bytes, source=source, request=request)  # fmt: skip


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for f in text_string_to_metric_families(text):
        out[f.name] = [(s.name, s.labels, s.value) for s in f.samples]
    return out


REVIEWS_V1 = Peer.from_pod(workload="reviews-v1", namespace="default", labels={"app": "reviews", "version": "v1"},
                           service_account="bookinfo-reviews")  # fmt: skip
PRODUCTPAGE = Peer.from_pod(workload="productpage-v1", namespace="default", labels={"app": "productpage"})


def test_rendered_text_parses_with_istio_names_types_and_labels() -> None:
    m = MeshMetrics(PRODUCTPAGE, Directory({"127.1.0.5": REVIEWS_V1}))
    out = m.observer("source")
    for status in (200, 200, 503):
        out.request_done(info(status, flags="UF" if status == 503 else ""))
    fams = families(m.render())
    assert {"istio_requests", "istio_request_duration_milliseconds", "istio_request_bytes",
            "istio_response_bytes", "istio_tcp_sent_bytes", "istio_tcp_received_bytes",
            "istio_tcp_connections_opened", "istio_tcp_connections_closed"} <= set(fams)  # fmt: skip
    requests = {s[1]["response_code"]: s for s in fams["istio_requests"]}
    assert requests["200"][2] == 2 and requests["503"][2] == 1
    labels = requests["503"][1]
    assert tuple(labels) == LABELS  # every standard label, in Istio's order
    assert labels["response_flags"] == "UF" and requests["200"][1]["response_flags"] == "-"
    assert labels["reporter"] == "source"
    assert labels["source_workload"] == "productpage-v1" and labels["source_app"] == "productpage"
    assert labels["destination_workload"] == "reviews-v1" and labels["destination_version"] == "v1"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert labels["destination_service_name"] == "reviews"
    assert labels["destination_service_namespace"] == "default"
    assert labels["request_protocol"] == "http"


def test_histogram_buckets_are_cumulative_and_end_at_count() -> None:
    m = MeshMetrics()
    o = m.observer("destination")
    durations = [0.0001, 0.0005, 0.001, 0.0049, 0.2, 7200.0]  # seconds; one beyond the last bucket
    for d in durations:
        o.request_done(info(duration=d, resp_bytes=int(d * 1000)))
    fam = families(m.render())["istio_request_duration_milliseconds"]
    buckets = [(s[1]["le"], s[2]) for s in fam if s[0].endswith("_bucket")]
    assert [le for le, _ in buckets] == [*(str(b).removesuffix(".0") for b in BUCKETS), "+Inf"]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == len(durations)
    count = next(s[2] for s in fam if s[0].endswith("_count"))
    total = next(s[2] for s in fam if s[0].endswith("_sum"))
    assert count == len(durations)
    assert total == pytest.approx(sum(durations) * 1000)
    by_le = dict(buckets)
    assert by_le["0.5"] == 2  # 0.1 ms and exactly 0.5 ms (le is inclusive)
    assert by_le["1"] == 3 and by_le["5"] == 4 and by_le["250"] == 5 and by_le["3600000"] == 5


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "new\nline", 'all\\"\n', "plain"])
def test_label_values_are_escaped_and_round_trip(value: str) -> None:
    m = MeshMetrics(Peer(workload=value))
    m.observer("destination").request_done(info())
    (sample,) = families(m.render())["istio_requests"]
    assert sample[1]["destination_workload"] == value


def test_escape_label() -> None:
    assert escape_label('x"\\\n') == 'x\\"\\\\\\n'


def test_endpoints_of_one_workload_share_a_series() -> None:
    d = Directory({"127.1.0.5": REVIEWS_V1, "127.1.0.6:9080": REVIEWS_V1})
    m = MeshMetrics(PRODUCTPAGE, d)
    o = m.observer("source")
    o.request_done(info(upstream="127.1.0.5:9080"))
    o.request_done(info(upstream="127.1.0.6:9080"))
    (sample,) = families(m.render())["istio_requests"]
    assert sample[2] == 2


def test_inbound_reports_the_client_as_source_and_mtls_policy() -> None:
    m = MeshMetrics(REVIEWS_V1, Directory({"127.1.0.9": PRODUCTPAGE}), service="reviews.default.svc.cluster.local")
    m.observer("destination", mtls=True).request_done(info(cluster="inbound|9080||"))
    (sample,) = families(m.render())["istio_requests"]
    labels = sample[1]
    assert labels["reporter"] == "destination"
    assert labels["source_workload"] == "productpage-v1"
    assert labels["destination_workload"] == "reviews-v1"
    assert labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert labels["destination_service_name"] == "reviews"
    assert labels["connection_security_policy"] == "mutual_tls"


class _Context:
    context = ssl.create_default_context()


def _sample_labels(m: MeshMetrics) -> list[dict[str, str]]:
    return [s[1] for s in families(m.render())["istio_requests"]]


def test_inbound_identity_comes_from_the_client_certificate() -> None:
    """reporter=destination: source_principal and connection_security_policy from the connection's TLS,
    per connection (a PERMISSIVE port sees both kinds), whatever the listener was built with."""
    m = MeshMetrics(REVIEWS_V1, Directory({"127.1.0.9": PRODUCTPAGE}), service="reviews.default.svc.cluster.local")
    o = m.observer("destination")
    mtls = plan.Downstream("127.1.0.9", 15006, "cluster.local/ns/default/sa/default", True)
    plain = plan.Downstream("127.1.0.9", 15006)
    for downstream in (mtls, mtls, plain):
        r = info(cluster="inbound|9080||")
        r.downstream = downstream
        o.request_done(r)
    rows = {(lb["connection_security_policy"], lb["source_principal"]): lb for lb in _sample_labels(m)}
    assert set(rows) == {("mutual_tls", "spiffe://cluster.local/ns/default/sa/default"), ("none", "unknown")}
    assert rows["mutual_tls", "spiffe://cluster.local/ns/default/sa/default"]["source_workload"] == "productpage-v1"
    assert rows["none", "unknown"]["source_workload"] == "productpage-v1"  # known by address, vouched for by nobody


def test_the_certificate_wins_over_the_address() -> None:
    """A client whose certificate names another identity than the pod at its address: only the certificate counts."""
    m = MeshMetrics(REVIEWS_V1, Directory({"127.1.0.9": PRODUCTPAGE}))
    r = info(cluster="inbound|9080||")
    r.downstream = plan.Downstream("127.1.0.9", 15006, "cluster.local/ns/bar/sa/sleep", True)
    m.observer("destination").request_done(r)
    (labels,) = _sample_labels(m)
    assert labels["source_principal"] == "spiffe://cluster.local/ns/bar/sa/sleep"
    assert labels["source_workload_namespace"] == "bar"
    assert labels["source_workload"] == "unknown" and labels["source_app"] == "unknown"
    assert labels["connection_security_policy"] == "mutual_tls"


def test_outbound_destination_principal_is_the_verified_server_identity() -> None:
    m = MeshMetrics(PRODUCTPAGE, Directory({"127.1.0.5": REVIEWS_V1}))
    o = m.observer("source")
    verified = plan.UpstreamTls(_Context(), None, frozenset({"spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}))
    for tls in (verified, None):
        r = info()
        r.downstream, r.upstream_tls = plan.Downstream("127.1.0.20", 15001), tls
        o.request_done(r)
    by_principal = {lb["destination_principal"]: lb for lb in _sample_labels(m)}
    assert set(by_principal) == {"spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "unknown"}
    for labels in by_principal.values():
        assert labels["destination_workload"] == "reviews-v1"
        assert labels["connection_security_policy"] == "unknown"  # Istio: the source side cannot tell


def test_tcp_counters() -> None:
    m = MeshMetrics()
    o = m.observer("source")
    c = ConnectionInfo("127.1.0.9", "outbound|3306||mysql.db.svc.cluster.local", 0.0)
    c.upstream = "127.1.0.20:3306"
    o.connection_opened(c)
    c.bytes_received, c.bytes_sent = 100, 2500
    o.connection_closed(c)
    fams = families(m.render())
    assert fams["istio_tcp_connections_opened"][0][2] == 1
    assert fams["istio_tcp_connections_closed"][0][2] == 1
    assert fams["istio_tcp_sent_bytes"][0][2] == 2500
    assert fams["istio_tcp_received_bytes"][0][2] == 100
    assert fams["istio_tcp_sent_bytes"][0][1]["request_protocol"] == "tcp"
    assert "1 opened, 1 closed" in m.summary()


def test_parse_cluster() -> None:
    assert parse_cluster(REVIEWS) == ("reviews.default.svc.cluster.local", "reviews", "default")
    assert parse_cluster("inbound|9080||") == ("unknown", "unknown", "unknown")
    assert parse_cluster("PassthroughCluster") == ("PassthroughCluster", "unknown", "unknown")
    assert parse_cluster("") == ("unknown", "unknown", "unknown")


def test_peer_from_pod_follows_istio_label_precedence() -> None:
    p = Peer.from_pod(workload="w", namespace="ns", labels={"app.kubernetes.io/name": "n", "version": "v2"})
    assert (p.app, p.version, p.canonical_service) == ("n", "v2", "n")
    p = Peer.from_pod(workload="w", namespace="ns", labels={"service.istio.io/canonical-name": "c", "app": "a"})
    assert (p.app, p.canonical_service) == ("a", "c")
    assert Peer.from_pod(workload="w", namespace="ns", labels={}).canonical_service == "w"


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _request(*headers: tuple[bytes, bytes]) -> Request:
    from meshwork.core import http1

    parser = http1.RequestParser(max_body=None)
    head = b"GET /reviews/1 HTTP/1.1\r\nHost: reviews:9080\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    parser.receive_data(head + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, Request)
    return event


def test_access_log_writes_envoy_fields_in_batches() -> None:
    stream = CountingStream()
    log = AccessLogWriter(stream, batch=3)
    req = _request((b"User-Agent", b"curl/8"), (b"X-Request-Id", b"abc"), (b"X-Forwarded-For", b"10.0.0.1"))
    for status in (200, 503):
        log.request_done(info(status, flags="UF" if status == 503 else "", request=req))
    assert stream.writes == 0  # held until the batch is full or flushed
    log.request_done(info(404, request=req))
    assert stream.writes == 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["response_code"] for r in lines] == [200, 503, 404]
    first = lines[0]
    for field in ("start_time", "method", "path", "protocol", "response_code", "response_flags",
                  "bytes_received", "bytes_sent", "duration", "upstream_host", "upstream_cluster",
                  "x_forwarded_for", "user_agent", "request_id", "authority", "route_name"):  # fmt: skip
        assert field in first
    assert first["method"] == "GET" and first["path"] == "/reviews/1" and first["protocol"] == "HTTP/1.1"
    assert first["response_flags"] == "-" and lines[1]["response_flags"] == "UF"
    assert first["user_agent"] == "curl/8" and first["request_id"] == "abc" and first["x_forwarded_for"] == "10.0.0.1"
    assert first["upstream_host"] == "127.1.0.5:9080" and first["upstream_cluster"] == REVIEWS
    assert first["authority"] == "reviews:9080" and first["route_name"] == "default"
    assert first["duration"] == 4 and first["bytes_sent"] == 120
    assert first["start_time"].endswith("Z") and first["start_time"][10] == "T"
    log.request_done(info())
    log.close()
    assert stream.writes == 2 and len(stream.getvalue().splitlines()) == 4


@given(st.floats(min_value=0, max_value=1e8, allow_nan=False) | st.sampled_from([float(b) for b in BUCKETS])
       | st.sampled_from([float(b) + d for b in BUCKETS for d in (-1e-9, 1e-9)]))  # fmt: skip
def test_a_duration_lands_in_the_bucket_bisect_gives(value: float) -> None:
    assert ms_slot(value) == bisect.bisect_left(BUCKETS, value)


@given(st.integers(min_value=0, max_value=10**8) | st.sampled_from([int(b) + d for b in BUCKETS for d in (-1, 0, 1)]))
def test_a_size_lands_in_the_bucket_bisect_gives(value: int) -> None:
    assert size_slot(value) == bisect.bisect_left(BUCKETS, value)
