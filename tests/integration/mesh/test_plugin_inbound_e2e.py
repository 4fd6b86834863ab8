"""ProxyPlugin on the SERVER side (``spec.match[].mode``), end to end: the destination's sidecar runs it.

A server, its agent, two meshed pods (``echo`` and a caller), and three
plugins selecting ``echo``: a SERVER one that tags responses, adds a header
for the app, answers 403 itself for ``x-deny`` and raises for ``x-break``;
a CLIENT one and one without ``match`` that would answer every request with
418 if they ran on echo's inbound side (they run on echo's outbound side only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.node import is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

ECHO = (
    "import http.server, json, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
GATE = '''
def on_request(request):
    if "x-break" in request.headers:
        raise RuntimeError("a bug in the inbound hook")
    if request.headers.get("x-deny"):
        return 403, "denied at the destination\\n", {"x-gate": "denied"}
    request.headers_to_add["x-gate-saw"] = request.path

def on_response(request, response):
    response.headers_to_set["x-gate"] = f"{response.status} {request.path}"
'''
TEAPOT = "def on_request(request):\n    return 418, 'outbound only\\n'\n"
CALL = (
    "import json, sys, urllib.error, urllib.request\n"
    "req = urllib.request.Request('http://echo:8080' + sys.argv[1], headers=json.loads(sys.argv[2]))\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=10)\n"
    "except urllib.error.HTTPError as e:\n"
    "    r = e\n"
    "print(json.dumps([r.status, r.headers.get('x-gate'), r.read().decode()]))\n"
)


def _pod(name: str, labels: dict[str, str], container: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [container]}}  # fmt: skip


def _plugin(name: str, module: Path, match: list[dict[str, Any]] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "echo"}}, "module": str(module)}
    if match is not None:
        spec["match"] = match
    return {"apiVersion": "meshwork.io/v1alpha1", "kind": "ProxyPlugin", "metadata": {"name": name}, "spec": spec}


def test_a_server_plugin_runs_in_the_destination_sidecar_and_client_plugins_do_not(tmp_path: Path) -> None:
    gate, teapot = tmp_path / "gate.py", tmp_path / "teapot.py"
    gate.write_text(GATE)
    teapot.write_text(TEAPOT)
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "plug", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply("/api/v1/namespaces/plug/pods", _pod("echo", {"app": "echo"}, {
            "name": "echo", "image": "python", "command": [sys.executable, "-c", ECHO],
            "ports": [{"containerPort": 8080}]}))  # fmt: skip
        node.apply("/api/v1/namespaces/plug/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080}]}})  # fmt: skip
        node.apply("/api/v1/namespaces/plug/pods", _pod("caller", {"app": "caller"},
                   {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}))  # fmt: skip
        plugins = "/apis/meshwork.io/v1alpha1/namespaces/plug/proxyplugins"
        node.apply(plugins, _plugin("gate", gate, [{"mode": "SERVER", "ports": [{"number": 8080}]}]))
        node.apply(plugins, _plugin("client-teapot", teapot, [{"mode": "CLIENT"}]))
        node.apply(plugins, _plugin("old-teapot", teapot, None))  # no match: CLIENT only, as before match existed
        wait_for(lambda: len([p for p in node.pods("plug") if is_ready(p)]) == 2, 60, "two ready pods")
        env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}

        def call(path: str, **headers: str) -> tuple[int, str | None, str]:
            ran = subprocess.run([sys.executable, "-m", "meshwork", "exec", "caller", "-n", "plug", "--",
                                  sys.executable, "-c", CALL, path, json.dumps(headers)],
                                 env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert ran.returncode == 0, ran.stderr
            status, gate_header, body = json.loads(ran.stdout)
            return status, gate_header, body

        # The echo sidecar has applied the plugins once a response carries the gate's header.
        status, tagged, body = wait_for(lambda: (got := call("/hello")) and got[1] and got, 30, "the gate's tag")
        assert (status, tagged) == (200, "200 /hello")
        assert json.loads(body)["x-gate-saw"] == "/hello"  # the app got the header the hook added
        assert call("/x", **{"x-deny": "1"}) == (403, "denied", "denied at the destination\n")
        # A failing on_request lets the request through without its headers (on_response still runs), counted.
        status, tagged, body = call("/broken", **{"x-break": "1"})
        assert status == 200 and tagged == "200 /broken" and "x-gate-saw" not in json.loads(body)
        echo = node.pod("echo", "plug")
        assert echo is not None
        with urllib.request.urlopen(f"http://{echo['status']['podIP']}:15020/stats/prometheus", timeout=10) as r:
            metrics = r.read().decode()
        assert 'meshwork_proxy_plugin_failures_total{plugin="plug/gate",hook="on_request"} 1' in metrics
