"""The mesh end to end: injected sidecars, config pushed from the control plane, Istio routing.

A real server and node agent run real pods; `istio-injection=enabled` on the
namespace gives each pod the proxy; the client pod's app reaches
`http://web:8080/` through its sidecar (HTTP_PROXY), as an Istio user's app does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (os.environ['VERSION'] + ' ' + os.environ['HOSTNAME']).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)

COUNT = (
    "import collections, json, sys, urllib.request\n"
    "n, headers = int(sys.argv[1]), json.loads(sys.argv[2])\n"
    "seen = collections.Counter()\n"
    "for _ in range(n):\n"
    "    req = urllib.request.Request('http://web:8080/', headers=headers)\n"
    "    seen[urllib.request.urlopen(req, timeout=10).read().decode().split()[0]] += 1\n"
    "print(json.dumps(seen))\n"
)


def _deployment(version: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "web", "version": version}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"web-{version}", "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "web", "image": "python", "command": [sys.executable, "-c", SERVE],
                         "env": [{"name": "VERSION", "value": version}],
                         "ports": [{"containerPort": 8080, "name": "http"}]}]}}}}  # fmt: skip


def _meshwork(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _count(node: Node, n: int, headers: dict[str, str] | None = None) -> dict[str, int]:
    ran = _meshwork(node, "exec", "client", "-n", "shop", "--", sys.executable, "-c", COUNT, str(n),
                    json.dumps(headers or {}))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


def _apply(node: Node, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "apply.yaml"
    path.write_text(text)
    return _meshwork(node, "apply", "-f", str(path))


ROUTING = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v2}, weight: 20}
"""


def test_injected_sidecars_route_by_header_and_by_weight(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply("/apis/apps/v1/namespaces/shop/deployments", _deployment("v1", 2))
        node.apply("/apis/apps/v1/namespaces/shop/deployments", _deployment("v2", 1))
        node.apply("/api/v1/namespaces/shop/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}})  # fmt: skip
        node.apply("/api/v1/namespaces/shop/pods", {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "client", "namespace": "shop"},
                   "spec": {"containers": [{"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip

        def meshed() -> list[dict[str, Any]] | None:
            pods = node.pods("shop")
            ok = [p for p in pods if is_ready(p) and len(p["status"].get("initContainerStatuses") or []) == 1]
            return ok if len(ok) == 4 else None

        pods = wait_for(meshed, 90, "4 ready pods, each with its sidecar")
        for p in pods:  # injected as Istio's webhook does: a native sidecar named istio-proxy
            sidecar = p["spec"]["initContainers"][0]
            assert sidecar["name"] == "istio-proxy" and sidecar["restartPolicy"] == "Always"
        # No routing rules yet: the Service's default route reaches both versions.
        before = _count(node, 60)
        assert set(before) == {"v1", "v2"}, before

        applied = _apply(node, tmp_path, ROUTING)
        assert applied.returncode == 0, applied.stderr
        assert "converged in" in applied.stdout and "(4/4 proxies)" in applied.stdout, applied.stdout

        assert _count(node, 20, {"end-user": "jason"}) == {"v2": 20}
        n = 2000
        split = _count(node, n)
        assert abs(split.get("v1", 0) / n - 0.80) <= 0.03, split
        assert abs(split.get("v2", 0) / n - 0.20) <= 0.03, split

        status = _meshwork(node, "proxy-status")
        assert status.returncode == 0 and status.stdout.count("SYNCED") == 4, status.stdout

        # `why` explains without sending; its verdict matches what the proxy then does.
        why = _meshwork(node, "why", "client", "-n", "shop", "http://web:8080/", "-H", "end-user: jason")
        assert why.returncode == 0, why.stderr
        assert "outbound|8080|v2|web.shop.svc.cluster.local" in why.stdout
        assert "verdict: forward-with-retries" in why.stdout
        applied = _apply(node, tmp_path, FAULT)
        assert applied.returncode == 0, applied.stderr
        why = _meshwork(node, "why", "client", "-n", "shop", "http://web:8080/", "-H", "x-test: abort")
        assert "verdict: fault-abort" in why.stdout and "aborts with 418" in why.stdout, why.stdout
        seen = _meshwork(node, "exec", "client", "-n", "shop", "--", sys.executable, "-c", STATUS)
        assert seen.stdout.split() == ["418", "200"], (seen.stdout, seen.stderr)


FAULT = ROUTING.replace("""  http:
  - match: [{headers: {end-user: {exact: jason}}}]""", """  http:
  - match: [{headers: {x-test: {exact: abort}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {end-user: {exact: jason}}}]""")

STATUS = (
    "import urllib.error, urllib.request\n"
    "for headers in ({'x-test': 'abort'}, {}):\n"
    "    try:\n"
    "        print(urllib.request.urlopen(urllib.request.Request('http://web:8080/', headers=headers)).status)\n"
    "    except urllib.error.HTTPError as err:\n"
    "        print(err.code)\n"
)
