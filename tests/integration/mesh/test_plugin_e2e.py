"""ProxyPlugin: a Python module run inside the selected sidecars, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
PLUGIN = '''
def on_request(request):
    if request.path.startswith("/blocked"):
        return 403, "blocked by the team's plugin\\n", {"x-plugin": "tagger"}
    request.headers_to_add["x-team"] = request.config.get("team", "?")
'''
CALL = (
    "import sys, urllib.error, urllib.request\n"
    "try:\n"
    "    r = urllib.request.urlopen('http://echo:8080' + sys.argv[1], timeout=10)\n"
    "    print(r.status, r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code, e.headers.get('x-plugin'), e.read().decode().strip())\n"
)


def _call(env: dict[str, str], pod: str, path: str) -> str:
    ran = subprocess.run([sys.executable, "-m", "meshwork", "exec", pod, "-n", "plug", "--", sys.executable, "-c",
                          CALL, path], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def _pod(name: str, labels: dict[str, str], container: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [container]}}  # fmt: skip


def test_a_proxy_plugin_adds_headers_and_answers_for_the_selected_workload_only(tmp_path: Path) -> None:
    plugin = tmp_path / "tagger.py"
    plugin.write_text(PLUGIN)
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
        sleeper = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
        node.apply("/api/v1/namespaces/plug/pods", _pod("payments", {"app": "payments"}, sleeper))
        node.apply("/api/v1/namespaces/plug/pods", _pod("other", {"app": "other"}, sleeper))
        node.apply("/apis/meshwork.io/v1alpha1/namespaces/plug/proxyplugins", {
            "apiVersion": "meshwork.io/v1alpha1", "kind": "ProxyPlugin", "metadata": {"name": "tagger"},
            "spec": {"selector": {"matchLabels": {"app": "payments"}}, "module": str(plugin),
                     "config": {"team": "payments"}}})  # fmt: skip
        wait_for(lambda: len([p for p in node.pods("plug") if is_ready(p)]) == 3, 60, "three ready pods")
        env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}

        def tagged() -> str | None:
            out = _call(env, "payments", "/")
            return out if out.startswith("200") and '"x-team"' in out else None

        status, body = wait_for(tagged, 30, "the plugin's header on payments' requests").split(" ", 1)
        assert json.loads(body)["x-team"] == "payments"
        assert _call(env, "payments", "/blocked/x") == "403 tagger blocked by the team's plugin"
        # The selector picks payments only: the other workload's proxy runs no plugin.
        status, body = _call(env, "other", "/blocked/x").split(" ", 1)
        assert status == "200" and "x-team" not in json.loads(body)
