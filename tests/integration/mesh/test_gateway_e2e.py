"""The ingress gateway end to end: created by the server, selected by a Gateway, routed by a VirtualService."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.node import is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = ('web saw ' + self.path + ' for ' + self.headers['Host']).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
PORT = 18480


def _get(path: str, host: str = "shop.example.com") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, OSError) as err:  # not listening yet
        return 0, str(err)


def test_the_ingress_gateway_routes_what_a_gateway_and_virtualservice_say(tmp_path: Path) -> None:
    with running_node(tmp_path, "--ingress-gateway", "--ingress-ports", f"80:{PORT}") as node:
        svc = node.get("/api/v1/namespaces/istio-system/services/istio-ingressgateway") or {}
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"
        assert wait_for(lambda: [p for p in node.pods("istio-system") if is_ready(p)], 60, "the gateway pod")

        node.apply("/apis/apps/v1/namespaces/default/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                         "name": "web", "image": "python", "command": [sys.executable, "-c", SERVE],
                         "ports": [{"containerPort": 8080}]}]}}}})  # fmt: skip
        node.apply("/api/v1/namespaces/default/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}})  # fmt: skip
        node.apply("/apis/networking.istio.io/v1/namespaces/default/gateways", {
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "shop"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                  "hosts": ["shop.example.com"]}]}})  # fmt: skip
        node.apply("/apis/networking.istio.io/v1/namespaces/default/virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "shop"},
            "spec": {"hosts": ["shop.example.com"], "gateways": ["shop"], "http": [
                {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/v1/"},
                 "route": [{"destination": {"host": "web", "port": {"number": 8080}}}]},
            ]}})  # fmt: skip

        def routed() -> tuple[int, str] | None:
            got = _get("/api/items")
            return got if got[0] == 200 else None

        _, body = wait_for(routed, 60, "the gateway to route /api/")
        assert body == "web saw /v1/items for shop.example.com"  # prefix rewritten, host kept
        # A host no Gateway server admits, and a path no route matches: 404 (Envoy's NR).
        assert _get("/api/items", host="other.example.com")[0] == 404
        missing: dict[str, Any] = {}
        missing["status"], missing["body"] = _get("/nothing-here")
        assert missing["status"] == 404, missing
