"""``meshwork top services`` against a real API server and a real admin port serving Istio metrics.

The pod is a record in the real server (its status carries the pod IP); its
"sidecar" is an ``AdminServer`` listening on that IP's port 15020 in this
process, whose metrics a feeder thread keeps incrementing while the command
scrapes twice.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from meshwork.cli import cli
from meshwork.proxy.admin import ADMIN_PORT, AdminServer
from meshwork.proxy.observe import RequestInfo
from meshwork.proxy.telemetry import MeshMetrics, Peer
from support.server import ServerProcess, pod, running_server

pytestmark = pytest.mark.integration
HANG_GUARD = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("top-services")) as srv:
        yield srv


def run(server: ServerProcess, *args: str) -> Result:
    env = {"MESHWORK_HOME": str(server.data_dir), "MESHWORK_SERVER": server.url, "MESHWORK_TOKEN": server.token}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_no_meshed_pods_says_how_to_enable_injection(server: ServerProcess) -> None:
    api = server.client()
    try:
        assert api.post("/api/v1/namespaces/default/pods", pod("plain-1")).status == 201
    finally:
        api.close()
    result = run(server, "top", "services", "-n", "default")
    assert result.exit_code == 1
    assert "No meshed pods in namespace default" in result.output
    assert "istio-injection=enabled" in result.output


def test_top_pods_still_reaches_the_pods_command(server: ServerProcess) -> None:
    result = run(server, "top", "pods")
    assert result.exit_code == 0, result.output
    assert "No resources found" in result.output  # no nodes, so no pod usage


def _info(status: int) -> RequestInfo:
    return RequestInfo(b"GET", b"web:80", b"/", status, "", "", "inbound|80||", "", 0.0, 0.002, 0, 10,
                       source="127.1.0.9")  # fmt: skip


def test_top_services_shows_rate_success_and_latency(server: ServerProcess) -> None:
    ip = f"127.77.{os.getpid() % 250 + 1}.5"
    api = server.client()
    try:
        p: dict[str, Any] = pod("web-1", {"app": "web"})
        p["spec"]["containers"].append({"name": "istio-proxy", "image": "busybox", "command": ["sleep", "3600"]})
        assert api.post("/api/v1/namespaces/meshed/pods", p).status == 201
        status = {"status": {"phase": "Running", "podIP": ip}}
        assert api.patch("/api/v1/namespaces/meshed/pods/web-1/status", status).status == 200
    finally:
        api.close()

    metrics = MeshMetrics(Peer(workload="web", namespace="meshed"), service="web.meshed.svc.cluster.local")
    inbound = metrics.observer("destination")
    inbound.request_done(_info(200))  # the series exists before the first scrape
    admin = AdminServer(metrics, ready=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.002):
            loop.call_soon_threadsafe(inbound.request_done, _info(200))

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        asyncio.run_coroutine_threadsafe(admin.start(ip, ADMIN_PORT), loop).result(HANG_GUARD)
        feeder.start()
        result = run(server, "top", "services", "-n", "meshed", "--interval", "0.5")
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(HANG_GUARD)
        asyncio.run_coroutine_threadsafe(admin.close(), loop).result(HANG_GUARD)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(HANG_GUARD)
        loop.close()
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split() == ["SERVICE", "NAMESPACE", "RPS", "SUCCESS", "P50", "P90", "P99"]
    cells = row.split()
    assert cells[:2] == ["web", "meshed"]
    assert float(cells[2]) > 0  # requests arrived between the two scrapes
    assert cells[3] == "100.0%"
    assert all(c.endswith("ms") for c in cells[4:])  # 2 ms requests: quantiles inside (1, 5] ms
    assert all(1.0 <= float(c.removesuffix("ms")) <= 5.0 for c in cells[4:])
