"""The warm spare proxy end to end (agent.standby): the next meshed pod's istio-proxy is the spare.

A real server and node agent. Once a first meshed pod ran, the agent keeps one
spare proxy; the next meshed pod's istio-proxy is that process (its shim is
the spare's), it serves that pod with that pod's identity (a request through
the first pod's sidecar reaches the second pod's app over mutual TLS), a new
spare follows, and nothing is left once the server stops.
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from support.node import SERVE_HOSTNAME, is_ready, running_node, wait_for
from support.server import pod_processes

pytestmark = pytest.mark.integration

NS = "sb"
SERVE = SERVE_HOSTNAME  # answers with its pod's name


def _spare_pid(home: Path) -> int | None:
    """The running spare's shim pid, from its state file (``standby.json``), if there is one."""
    root = home / "nodes" / "node-1" / "standby"
    for state in root.glob("*/standby.json") if root.is_dir() else ():
        try:
            pid = int(json.loads(state.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def _proxy_pid(pod: dict[str, Any]) -> int | None:
    """The istio-proxy's shim pid (its containerID ``meshwork://uid/name/pid``): a native sidecar."""
    for st in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if st["name"] == "istio-proxy" and (st.get("containerID") or "").startswith("meshwork://"):
            return int(st["containerID"].rsplit("/", 1)[-1])
    return None


def _pod(name: str, container: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [container]}}  # fmt: skip


def test_the_next_meshed_pod_takes_the_spare_proxy_and_is_served_with_its_own_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply(f"/api/v1/namespaces/{NS}/pods", _pod("first", {"name": "c", "image": "busybox",
                   "command": ["sleep", "infinity"]}, {"app": "first"}))  # fmt: skip
        first = wait_for(lambda: (p := node.pod("first", NS)) is not None and is_ready(p) and p, 60, "first Ready")
        spare = wait_for(lambda: _spare_pid(home), 60, "a spare proxy once a meshed pod ran")

        node.apply(f"/api/v1/namespaces/{NS}/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "second"},
                   "spec": {"selector": {"app": "second"}, "ports": [{"port": 8080}]}})  # fmt: skip
        node.apply(f"/api/v1/namespaces/{NS}/pods", _pod("second", {
            "name": "app", "image": "python:3.11", "command": [sys.executable, "-c", SERVE],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}, {"app": "second"}))  # fmt: skip
        second = wait_for(lambda: (p := node.pod("second", NS)) is not None and is_ready(p) and p, 60, "second Ready")
        assert _proxy_pid(second) == spare  # the spare became its proxy

        # Through the first pod's sidecar to the Service: mutual TLS to the second pod's proxy,
        # which holds a certificate for its own pod and forwards to its own app.
        def answered() -> tuple[int, str] | None:
            conn = http.client.HTTPConnection(first["status"]["podIP"], 15001, timeout=30)
            try:
                conn.request("GET", "http://second:8080/", headers={"Host": "second:8080"})
                r = conn.getresponse()
                got = (r.status, r.read().decode())
            finally:
                conn.close()
            return got if got[0] == 200 else None

        assert wait_for(answered, 60, "second answering through the mesh") == (200, "second")
        proxies = node.get("/apis/mesh.meshwork.io/v1/proxies") or {}
        ids = json.dumps(proxies)
        assert f"second.{NS}" in ids, ids  # it asked for its config as the second pod

        wait_for(lambda: (p := _spare_pid(home)) is not None and p != spare and p, 60, "a new spare behind it")
        assert node.server.stop(timeout=60) == 0
        assert pod_processes(home) == set()  # the pods, and the spare, stopped with the agent
