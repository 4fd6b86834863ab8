"""Telemetry over real sockets: a proxy forwarding to a real backend process, scraped on its admin port.

The proxy and the admin server run in this process, on an event loop in a
background thread; the backend is a real process (``backend.py``), the
client and the scraper use real HTTP connections. When ``HttpProxy`` takes
an ``observer`` (the engine's telemetry hook) the observers are given to it;
until then a subclass reports each finished exchange from the engine's
access-log point, with the same ``RequestInfo`` fields.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from proxytools import HANG_GUARD, Procs, connect, read_reply

from meshwork.httpd import HttpServer, Request, Response
from meshwork.proxy.admin import AdminServer
from meshwork.proxy.observe import Observer, Observers
from meshwork.proxy.plan import Endpoint
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster, StaticDecider
from meshwork.proxy.telemetry import AccessLogWriter, Directory, MeshMetrics, Peer
from meshwork.proxy.tracing import OtlpExporter, Tracer

pytestmark = pytest.mark.integration
T = TypeVar("T")
CLUSTER = "outbound|9080||backend.default.svc.cluster.local"


class LoopThread:
    """An asyncio loop in a thread; ``run(coro)`` waits (bounded) for a result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(HANG_GUARD)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def _hooked_proxy(decider: StaticDecider, observer: Observer) -> HttpProxy:
    """An HttpProxy reporting every finished request to ``observer``."""
    return HttpProxy(decider, observer=observer)


def _get(port: int, target: str) -> int:
    sock = connect(port)
    try:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: backend:9080\r\nUser-Agent: t/1\r\n\r\n".encode())
        return read_reply(sock).status
    finally:
        sock.close()


def _fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=HANG_GUARD) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_scrape_after_real_requests(procs: Procs, loop: LoopThread, tmp_path: Path) -> None:
    backend = procs.backend("a")
    metrics = MeshMetrics(
        Peer.from_pod(workload="client-v1", namespace="default", labels={"app": "client"}),
        Directory({"127.0.0.1": Peer.from_pod(workload="backend-v1", namespace="default",
                                              labels={"app": "backend", "version": "v1"})}),
    )  # fmt: skip
    access = AccessLogWriter.open(str(tmp_path / "access.log"))
    cluster = StaticCluster([Endpoint("127.0.0.1", backend.port)], name=CLUSTER)
    admin = AdminServer(metrics)

    async def start() -> tuple[HttpProxy, int, int]:
        proxy = _hooked_proxy(StaticDecider(cluster, retries=None), Observers(metrics.observer("source"), access))
        port = await proxy.start("127.0.0.1", 0)
        admin_port = await admin.start("127.0.0.1", 0)
        return proxy, port, admin_port

    proxy, port, admin_port = loop.run(start())
    base = f"http://127.0.0.1:{admin_port}"
    try:
        assert _fetch(base + "/healthz/ready")[0] == 503  # no config applied yet
        admin.mark_ready()
        assert _fetch(base + "/healthz/ready")[0] == 200

        statuses = [_get(port, t) for t in ["/hello"] * 5 + ["/status/503"] * 2 + ["/status/404"]]
        assert statuses == [200] * 5 + [503, 503, 404]

        status, ctype, text = _fetch(base + "/stats/prometheus")
        assert status == 200
        assert ctype.startswith("text/plain; version=0.0.4")
        fams = {f.name: f.samples for f in text_string_to_metric_families(text)}
        by_code = {s.labels["response_code"]: s.value for s in fams["istio_requests"]}
        assert by_code == {"200": 5.0, "503": 2.0, "404": 1.0}
        sample = next(s for s in fams["istio_requests"] if s.labels["response_code"] == "200")
        assert sample.labels["reporter"] == "source"
        assert sample.labels["source_workload"] == "client-v1"
        assert sample.labels["destination_workload"] == "backend-v1"
        assert sample.labels["destination_version"] == "v1"
        assert sample.labels["destination_service"] == "backend.default.svc.cluster.local"
        counts = [s.value for s in fams["istio_request_duration_milliseconds"]
                  if s.name.endswith("_count")]  # fmt: skip
        assert sum(counts) == 8
        sizes = [s for s in fams["istio_response_bytes"] if s.name.endswith("_sum")]
        assert sum(s.value for s in sizes) > 0

        status, _, summary = _fetch(base + "/stats")
        assert status == 200 and "requests: 8" in summary
        assert _fetch(base + "/nope")[0] == 404
    finally:
        loop.run(proxy.close(grace=1.0))
        loop.run(admin.close())
        access.close()
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [r["response_code"] for r in lines] == statuses
    assert lines[0]["user_agent"] == "t/1" and lines[0]["upstream_cluster"] == CLUSTER
    assert lines[0]["upstream_host"] == f"127.0.0.1:{backend.port}"


def test_spans_reach_an_otlp_collector_over_http(loop: LoopThread) -> None:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    async def collector(request: Request) -> Response:
        received.append(json.loads(request.body))
        got.set()
        return Response(200, b"{}")

    server = HttpServer(collector)
    loop.run(server.start("127.0.0.1", 0))
    exporter = OtlpExporter(f"http://127.0.0.1:{server.port}/v1/traces", service_name="backend.default",
                            interval=0.05)  # fmt: skip
    tracer = Tracer(exporter=exporter)
    admin = AdminServer(MeshMetrics(), tracer=tracer)

    async def start() -> tuple[asyncio.Task[None], int]:
        task = asyncio.get_running_loop().create_task(exporter.run())
        return task, await admin.start("127.0.0.1", 0)

    task, admin_port = loop.run(start())
    try:
        spans = []
        for i in range(3):
            span = tracer.start(None, None)
            tracer.finish(span, name=f"backend:9080/r{i}", status=200)
            spans.append(span)
        assert got.wait(HANG_GUARD)
        sent = [s for body in received for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert {s["spanId"] for s in sent} == {s.span_id.decode() for s in spans}
        assert received[0]["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] == "backend.default"
        status, _, body = _fetch(f"http://127.0.0.1:{admin_port}/debug/spans")
        assert status == 200 and len(json.loads(body)["spans"]) == 3
        deadline = time.monotonic() + HANG_GUARD  # the collector's answer reaches the exporter after got
        while exporter.sent < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        cancel: Callable[[], bool] = task.cancel
        loop.loop.call_soon_threadsafe(cancel)
        loop.run(admin.close())
        loop.run(server.close(grace=0.5))
    assert exporter.dropped == 0 and exporter.sent == 3
