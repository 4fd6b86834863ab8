"""W3C traceparent handling and request ids (proxy.tracing), without sockets."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.proxy.tracing import OtlpExporter, Tracer, format_traceparent, parse_traceparent

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"
VALID = b"00-" + TRACE + b"-" + PARENT + b"-01"
TP = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (VALID, 1),
        (b"00-" + TRACE + b"-" + PARENT + b"-00", 0),
        (b"00-" + TRACE + b"-" + PARENT + b"-09", 9),  # unknown flag bits are kept, sampled is bit 0
        (b"  " + VALID + b"\t", 1),  # optional whitespace around a header value
        (b"01-" + TRACE + b"-" + PARENT + b"-01-what-comes-next", 1),  # a future version may add fields
        (b"cc-" + TRACE + b"-" + PARENT + b"-01", 1),
    ],
)
def test_valid_traceparent(value: bytes, flags: int) -> None:
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (TRACE, PARENT, flags)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        b"ff-" + TRACE + b"-" + PARENT + b"-01",  # version ff is forbidden
        b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",  # all-zero trace id
        b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",  # all-zero parent id
        b"00-" + TRACE.upper() + b"-" + PARENT + b"-01",  # uppercase hex
        b"00-" + TRACE + b"-" + PARENT + b"-01-extra",  # version 00 has exactly four fields
        b"00-" + TRACE[:-1] + b"-" + PARENT + b"-01",  # short trace id
        b"00-" + TRACE + b"-" + PARENT + b"-1",  # short flags
        b"00_" + TRACE + b"-" + PARENT + b"-01",  # wrong separator
        b"0g-" + TRACE + b"-" + PARENT + b"-01",  # version not hex
        b"00-" + TRACE[:-1] + b"z-" + PARENT + b"-01",
        b"01-" + TRACE + b"-" + PARENT + b"-01x",  # a longer future version still needs "-" after flags
    ],
)
def test_invalid_traceparent(value: bytes) -> None:
    assert parse_traceparent(value) is None


@given(st.binary(max_size=80))
def test_parse_never_raises(value: bytes) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert TP.match(format_traceparent(parsed.trace_id, parsed.parent_id, parsed.flags & 1))


def _header(block: bytes, name: bytes) -> bytes | None:
    for line in block.split(b"\r\n"):
        n, _, v = line.partition(b": ")
        if n == name:
            return v
    return None


def test_new_request_gets_a_uuid4_request_id_and_a_new_trace() -> None:
    span = Tracer().start(None, None)
    block = span.headers(add_request_id=True)
    assert block.endswith(b"\r\n")
    rid = _header(block, b"x-request-id")
    assert rid is not None and uuid.UUID(rid.decode()).version == 4
    tp = _header(block, b"traceparent")
    assert tp is not None
    m = TP.match(tp)
    assert m is not None and m.group(1) == span.trace_id and m.group(2) == span.span_id
    assert span.parent_id == b""
    other = Tracer().start(None, None)
    assert other.trace_id != span.trace_id and other.span_id != span.span_id and other.request_id != rid


def test_existing_request_id_is_kept_and_trace_continued_as_a_child() -> None:
    span = Tracer().start(b"my-id", VALID)
    assert span.request_id == b"my-id"
    block = span.headers(add_request_id=False)
    assert _header(block, b"x-request-id") is None
    tp = _header(block, b"traceparent")
    assert tp is not None and tp.startswith(b"00-" + TRACE + b"-") and tp.endswith(b"-01")
    assert span.parent_id == PARENT and span.span_id != PARENT


def test_unsampled_parent_decision_is_kept_and_not_recorded() -> None:
    tracer = Tracer(sample_rate=1.0)
    span = tracer.start(None, b"00-" + TRACE + b"-" + PARENT + b"-00")
    assert span.headers(add_request_id=False).endswith(b"-00\r\n")
    tracer.finish(span, name="x", status=200)
    assert not tracer.spans


def test_invalid_traceparent_starts_a_new_trace() -> None:
    span = Tracer().start(None, b"00-" + b"0" * 32 + b"-" + PARENT + b"-01")
    assert span.trace_id != b"0" * 32 and span.parent_id == b""


def test_sample_rate_zero_and_one() -> None:
    assert not any(Tracer(sample_rate=0.0).start(None, None).sampled for _ in range(50))
    assert all(Tracer(sample_rate=1.0).start(None, None).sampled for _ in range(50))


def test_ring_buffer_is_bounded_and_keeps_the_newest() -> None:
    tracer = Tracer(ring=4)
    for i in range(10):
        tracer.finish(tracer.start(None, None), name=f"r{i}", status=200)
    assert [s.name for s in tracer.spans] == ["r6", "r7", "r8", "r9"]


def test_export_queue_is_bounded_and_counts_drops() -> None:
    exporter = OtlpExporter("http://127.0.0.1:1/v1/traces", service_name="reviews", queue=3)
    tracer = Tracer(exporter=exporter)
    for _ in range(5):
        tracer.finish(tracer.start(None, None), name="r", status=200)
    assert len(exporter.queue) == 3 and exporter.dropped == 2


def test_otlp_json_shape() -> None:
    exporter = OtlpExporter("http://127.0.0.1:4318/v1/traces", service_name="reviews.default")
    tracer = Tracer()
    span = tracer.start(b"rid", VALID)
    tracer.finish(span, name="reviews:9080/x", status=503, attributes={"http.method": "GET", "http.status_code": 503})
    import json

    body = json.loads(exporter.body([span]))
    (rs,) = body["resourceSpans"]
    assert rs["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "reviews.default"}}]
    (out,) = rs["scopeSpans"][0]["spans"]
    assert out["traceId"] == TRACE.decode() and out["parentSpanId"] == PARENT.decode()
    assert out["spanId"] == span.span_id.decode() and out["name"] == "reviews:9080/x"
    assert int(out["endTimeUnixNano"]) >= int(out["startTimeUnixNano"]) > 0
    assert out["status"] == {"code": 2}
    assert {"key": "http.status_code", "value": {"intValue": "503"}} in out["attributes"]
    assert {"key": "guid:x-request-id", "value": {"stringValue": "rid"}} in out["attributes"]


def test_exporter_refuses_non_http_endpoints() -> None:
    with pytest.raises(ValueError, match="OTLP endpoint"):
        OtlpExporter("grpc://collector:4317", service_name="x")
