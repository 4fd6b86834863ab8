"""Request ids and W3C trace context for the proxy, and spans exported over OTLP/HTTP JSON.

What lives here: ``parse_traceparent`` (the W3C Trace Context header, level 1),
``Tracer`` (per request: creates ``x-request-id`` when absent and a child
``traceparent``; keeps finished spans in a bounded ring buffer), and
``OtlpExporter`` (a background task that posts batches of spans as OTLP/HTTP
JSON to a collector).

What must not live here: header editing or forwarding (the engine adds the
bytes ``Tracer.start`` returns), metrics.

Cost: one ``os.urandom`` call per request gives the request id, the trace id
and the span id together; nothing else random or slow runs on the request
path. Exporting never blocks a request: ``finish`` appends to two bounded
deques, and the exporter drains them on its own schedule, dropping (and
counting) what does not fit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_SERVER",
    "OtlpExporter",
    "Span",
    "TraceParent",
    "Tracer",
    "format_traceparent",
    "parse_traceparent",
]

log = logging.getLogger("meshwork.proxy.tracing")

# Finished spans kept for local inspection (Envoy's admin keeps none; Jaeger's
# in-memory default is unbounded, so we pick a size that stays under 1 MiB).
RING_SIZE = 2048
# Spans waiting for the exporter; beyond this they are dropped (OpenTelemetry's
# BatchSpanProcessor default max_queue_size is 2048).
EXPORT_QUEUE = 2048
# Spans per OTLP request (OpenTelemetry's default max_export_batch_size).
EXPORT_BATCH = 512
# Seconds between exports (OpenTelemetry's schedule_delay is 5 s; shorter
# suits a local development mesh).
EXPORT_INTERVAL = 1.0
# A collector that does not answer within this is skipped for this batch.
EXPORT_TIMEOUT = 5.0

# OTLP SpanKind values (opentelemetry/proto/trace/v1/trace.proto).
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``: ids as lowercase hex bytes, ``flags`` as an int."""

    trace_id: bytes
    parent_id: bytes
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


def _is_hex(value: bytes) -> bool:
    return all(c in _HEX for c in value)


def parse_traceparent(value: bytes) -> TraceParent | None:
    """Parse a ``traceparent`` header value; None when it is invalid.

    W3C Trace Context §3.2: ``version-traceid-parentid-flags``, all lowercase
    hex; version ``ff`` is invalid; an all-zero trace id or parent id is
    invalid; version ``00`` must be exactly 55 characters; a higher version may
    carry more fields after a ``-`` (§4.3, parse what version 00 defines).
    """
    value = value.strip(b" \t")
    if len(value) < 55:
        return None
    version = value[:2]
    if not _is_hex(version) or version == b"ff":
        return None
    if len(value) > 55 and (version == b"00" or value[55:56] != b"-"):
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def format_traceparent(trace_id: bytes, span_id: bytes, flags: int) -> bytes:
    """The version-00 header value; we always send version 00 (§3.2.4)."""
    return b"00-" + trace_id + b"-" + span_id + b"-" + b"%02x" % (flags & 0xFF)


def _uuid4(raw: bytes) -> bytes:
    """RFC 9562 §5.4: a version-4, variant-10 UUID from 16 random bytes, as text."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex().encode()
    return h[:8] + b"-" + h[8:12] + b"-" + h[12:16] + b"-" + h[16:20] + b"-" + h[20:]


class Span:
    """One request's span. ``start`` / ``end`` are Unix times in nanoseconds."""

    __slots__ = (
        "attributes",
        "end",
        "kind",
        "name",
        "parent_id",
        "request_id",
        "sampled",
        "span_id",
        "start",
        "status",
        "trace_id",
    )

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, request_id: bytes,
                 sampled: bool, start: int, kind: int) -> None:  # fmt: skip
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.request_id = request_id
        self.sampled = sampled
        self.start = start
        self.end = 0
        self.kind = kind
        self.name = ""
        self.status = 0
        self.attributes: dict[str, str | int] = {}

    def headers(self, *, add_request_id: bool) -> bytes:
        """Header lines (CRLF-terminated) the engine adds to the forwarded request.

        The engine removes any incoming ``traceparent`` first: ours replaces it
        with the same trace id and this span as the parent.
        """
        tp = format_traceparent(self.trace_id, self.span_id, 0x01 if self.sampled else 0x00)
        if add_request_id:
            return b"x-request-id: " + self.request_id + b"\r\ntraceparent: " + tp + b"\r\n"
        return b"traceparent: " + tp + b"\r\n"

    def to_otlp(self) -> dict[str, object]:
        """The span as OTLP/JSON (ids in hex, 64-bit integers as strings)."""
        attrs: list[dict[str, object]] = [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in self.attributes.items()
        ]
        if self.request_id:
            attrs.append({"key": "guid:x-request-id", "value": {"stringValue": self.request_id.decode()}})
        out: dict[str, object] = {
            "traceId": self.trace_id.decode(),
            "spanId": self.span_id.decode(),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start),
            "endTimeUnixNano": str(self.end),
            "attributes": attrs,
            # STATUS_CODE_ERROR = 2 for 5xx (OpenTelemetry's HTTP semantic conventions).
            "status": {"code": 2} if self.status >= 500 or self.status == 0 else {},
        }
        if self.parent_id:
            out["parentSpanId"] = self.parent_id.decode()
        return out


class Tracer:
    """Creates request ids and spans; keeps the finished ones in a ring buffer.

    ``sample_rate`` decides whether a *new* trace is sampled (a propagated one
    keeps its parent's decision). Unsampled spans still get ids and headers,
    so the trace continues downstream, but are not kept or exported.
    """

    def __init__(self, *, sample_rate: float = 1.0, ring: int = RING_SIZE, kind: int = SPAN_KIND_SERVER,
                 exporter: OtlpExporter | None = None) -> None:  # fmt: skip
        # Compare against one random byte: 0..255 < threshold.
        self._threshold = round(max(0.0, min(1.0, sample_rate)) * 256)
        self.kind = kind
        self.spans: collections.deque[Span] = collections.deque(maxlen=ring)
        self.exporter = exporter

    def start(self, request_id: bytes | None, traceparent: bytes | None) -> Span:
        """A span for a request carrying these headers (None when absent).

        The span's ``headers(add_request_id=request_id is None)`` are what the
        engine adds upstream.
        """
        raw = os.urandom(41)
        parent = parse_traceparent(traceparent) if traceparent else None
        span_id = raw[16:24].hex().encode()
        if parent is not None:
            trace_id, parent_id, sampled = parent.trace_id, parent.parent_id, parent.sampled
        else:
            trace_id, parent_id, sampled = raw[24:40].hex().encode(), b"", raw[40] < self._threshold
        rid = request_id if request_id else _uuid4(raw[:16])
        return Span(trace_id, span_id, parent_id, rid, sampled, time.time_ns(), self.kind)

    def finish(self, span: Span, *, name: str, status: int, attributes: dict[str, str | int] | None = None,
               end: int | None = None) -> None:  # fmt: skip
        """The request is over: keep the span (and queue it for export) when sampled."""
        span.end = end if end is not None else time.time_ns()
        span.name = name
        span.status = status
        if attributes:
            span.attributes = attributes
        if not span.sampled:
            return
        self.spans.append(span)
        if self.exporter is not None:
            self.exporter.offer(span)


class OtlpExporter:
    """Posts spans as OTLP/HTTP JSON (``POST {endpoint}``, usually ``.../v1/traces``).

    ``offer`` is O(1) and never blocks; ``run`` (a task the proxy starts)
    sends a batch every ``interval`` seconds or as soon as a batch is full.
    A collector that is down costs one failed connect per interval; the spans
    of that batch are dropped and counted in ``dropped``.
    """

    def __init__(self, endpoint: str, *, service_name: str, interval: float = EXPORT_INTERVAL,
                 queue: int = EXPORT_QUEUE, batch: int = EXPORT_BATCH) -> None:  # fmt: skip
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{endpoint!r}: the OTLP endpoint must be http://HOST:PORT/PATH")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/v1/traces"
        self.service_name = service_name
        self.interval = interval
        self.batch = batch
        self.queue: collections.deque[Span] = collections.deque()
        self.capacity = queue
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self._wake = asyncio.Event()

    def offer(self, span: Span) -> None:
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            return
        self.queue.append(span)
        if len(self.queue) >= self.batch:
            self._wake.set()

    def body(self, spans: list[Span]) -> bytes:
        """The OTLP ExportTraceServiceRequest for ``spans``, as JSON."""
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": self.service_name}}]}
        return json.dumps(
            {
                "resourceSpans": [
                    {
                        "resource": resource,
                        "scopeSpans": [{"scope": {"name": "meshwork.proxy"}, "spans": [s.to_otlp() for s in spans]}],
                    }
                ]
            },
            separators=(",", ":"),
        ).encode()

    async def run(self) -> None:
        """Export until cancelled; the last partial batch is sent on the way out."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                await self.flush()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), EXPORT_TIMEOUT)
            raise

    async def flush(self) -> None:
        """Send everything queued, one batch per request."""
        while self.queue:
            n = min(self.batch, len(self.queue))
            spans = [self.queue.popleft() for _ in range(n)]
            try:
                await asyncio.wait_for(self._post(self.body(spans)), EXPORT_TIMEOUT)
                self.sent += n
            except (OSError, TimeoutError, ValueError) as exc:
                self.failures += 1
                self.dropped += n
                log.warning("OTLP export to %s:%d failed: %s", self.host, self.port, exc)
                return

    async def _post(self, body: bytes) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                % (self.path.encode(), self.host.encode(), self.port, len(body))
                + body
            )
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
            status = int(parts[1])
            if not 200 <= status < 300:
                raise ValueError(f"the collector answered {status}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
