"""The agent's bind shim end to end: two pods that bind 0.0.0.0 on one port both run."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from support.node import container_status, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
PORT = 18090

# Prints its LD_PRELOAD, then serves on 0.0.0.0:PORT as many published images do.
WILDCARD = (
    "import http.server, os\n"
    "print('LD_PRELOAD=' + os.environ.get('LD_PRELOAD', ''), flush=True)\n"
    f"http.server.HTTPServer(('0.0.0.0', {PORT}), http.server.BaseHTTPRequestHandler).serve_forever()\n"
)


def _pod(name: str, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    container = {"name": "web", "image": "python", "command": [sys.executable, "-c", WILDCARD],
                 "ports": [{"containerPort": PORT}], "env": env or []}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def _accepts(ip: str) -> bool:
    try:
        with socket.create_connection((ip, PORT), timeout=5):
            return True
    except OSError:
        return False


def test_apps_on_0000_share_a_port_each_on_its_pod_ip_keeping_their_own_preload(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the agent runs pods without the bind shim (see test_lifecycle_e2e)")
    with running_node(tmp_path) as node:
        node.apply(PODS, _pod("one", env=[{"name": "LD_PRELOAD", "value": "libm.so.6"}]))
        node.apply(PODS, _pod("two"))
        pods = [wait_for(lambda n=n: (p := node.pod(n)) and is_ready(p) and p, 30, f"pod {n} ready")
                for n in ("one", "two")]  # fmt: skip
        for pod in pods:  # each listens on its own pod IP (a moment after its process starts)
            wait_for(lambda ip=pod["status"]["podIP"]: _accepts(ip), 30, f"a listener on {pod['status']['podIP']}")
            assert container_status(pod, "web")["restartCount"] == 0
        libs = sorted((tmp_path / "lib").glob("meshwork-bindshim-*.so"))
        assert len(libs) == 1  # built once into $MESHWORK_HOME/lib
        log = node.http.get("/api/v1/namespaces/default/pods/one/log").body.decode()
        assert f"LD_PRELOAD=libm.so.6 {libs[0]}" in log  # the app's own preload first, then the shim
        events = (node.get("/api/v1/namespaces/default/events") or {}).get("items", [])
        assert not [e for e in events if e["reason"] in ("WildcardBind", "PortConflict")], events
