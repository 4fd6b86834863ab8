"""Scale to zero end to end: an idle Deployment goes to zero, the first request wakes it through the mesh.

A real server and node agent run ``hello`` (a small Python HTTP app, meshed,
annotated ``meshwork.io/scale-to-zero: "true"`` with a 2 s idle period)
behind a Service, and a ``client`` pod whose sidecar the requests go through.
After the idle period the Deployment is at zero and no process of the app
runs; the next request waits in the client's sidecar while one pod starts,
and succeeds; 20 concurrent first requests all succeed and start one pod; a
workload whose container cannot start answers 503 with the reason.
"""

from __future__ import annotations

import http.client
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support.node import SERVE_HOSTNAME, Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

NS = "stz"
MARK = f"stz-{uuid.uuid4().hex[:12]}"  # on the app's command line: how its processes are found
SERVE = SERVE_HOSTNAME  # answers with its pod's name


def _deployment(name: str, command: list[str], replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": name, "image": "python:3.11", "command": command, "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"meshwork.io/scale-to-zero": "true",
                                                       "meshwork.io/scale-to-zero-idle": "2s"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}  # fmt: skip


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 8080}]}}  # fmt: skip


def _get(client_ip: str, service: str) -> tuple[int, str, str]:
    """GET through the client pod's sidecar: (status, body, x-meshwork-reason)."""
    conn = http.client.HTTPConnection(client_ip, 15001, timeout=90)
    try:
        conn.request("GET", f"http://{service}:8080/", headers={"Host": f"{service}:8080"})
        r = conn.getresponse()
        return r.status, r.read().decode(), r.getheader("x-meshwork-reason") or ""
    finally:
        conn.close()


def _app_processes() -> list[int]:
    """Processes whose command line carries this test's mark."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if MARK.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _replicas(node: Node, name: str) -> int:
    dep = node.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    assert dep is not None
    return int(dep["spec"].get("replicas", 1))


def _hello_pods(node: Node) -> list[dict[str, Any]]:
    return [p for p in node.pods(NS, "app=hello") if not p["metadata"].get("deletionTimestamp")]


def _at_zero(node: Node) -> bool:
    return _replicas(node, "hello") == 0 and not node.pods(NS, "app=hello") and not _app_processes()


def test_idle_deployment_goes_to_zero_and_wakes_on_requests(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply(f"/apis/apps/v1/namespaces/{NS}/deployments",
                   _deployment("hello", [sys.executable, "-c", SERVE, MARK], 1))
        node.apply(f"/api/v1/namespaces/{NS}/services", _service("hello"))
        node.apply(f"/apis/apps/v1/namespaces/{NS}/deployments",
                   _deployment("broken", [sys.executable, "-c", "raise SystemExit(3)"], 0))
        node.apply(f"/api/v1/namespaces/{NS}/services", _service("broken"))
        node.apply(f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "client", "labels": {"app": "client"}},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip
        client = wait_for(lambda: (p := node.pod("client", NS)) is not None and is_ready(p) and p, 60, "client ready")
        client_ip = client["status"]["podIP"]
        assert _get(client_ip, "hello")[0] == 200  # warm, or woken if it already went idle

        # Idle for 2 s: zero replicas, no pod, no process of the app.
        wait_for(lambda: _at_zero(node), 60, "hello scaled to zero with no process left", interval=0.25)

        # The next request waits while one pod starts, then goes through.
        status, body, reason = _get(client_ip, "hello")
        assert (status, reason) == (200, ""), body
        assert body.startswith("hello-")
        assert _replicas(node, "hello") == 1

        wait_for(lambda: _at_zero(node), 60, "hello back at zero", interval=0.25)

        # 20 concurrent first requests: all succeed, one replica serves them all.
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: _get(client_ip, "hello"), range(20)))
        assert [a[0] for a in answers] == [200] * 20, answers
        assert len({a[1] for a in answers}) == 1  # one pod answered every one
        assert _replicas(node, "hello") == 1
        assert len(_hello_pods(node)) == 1

        # A workload that cannot start: 503 with the reason, not a hang.
        status, body, reason = _get(client_ip, "broken")
        assert status == 503, body
        assert "broken.stz could not be started" in reason and "exited with code 3" in reason, reason
