"""A meshed pod's inbound traffic goes through its own sidecar, which reports it as the destination.

A real server and node agent run two injected Deployments in one
``istio-injection=enabled`` namespace: ``web`` serves on ``$POD_IP:8080``
behind a Service on port 80, and ``client``'s app calls ``http://web/``
through its sidecar without end. The client's sidecar connects to web's
``:15006`` from the client's pod IP; web's sidecar forwards to the app and
counts the request with ``reporter="destination"`` and the client as its
source, which is what ``meshwork top services`` reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

NS = "shop"

SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (os.environ['HOSTNAME'] + ' ' + self.client_address[0] + ' '\n"
    "                + ','.join(sorted(k.lower() for k in self.headers.keys()))).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)

# The client app: calls web through its sidecar (HTTP_PROXY) until stopped; the
# last answer is kept in a file for the test to read.
CALL = (
    "import os, time, urllib.request\n"
    "while True:\n"
    "    try:\n"
    "        body = urllib.request.urlopen('http://web/', timeout=10).read()\n"
    "        with open(os.environ['LAST'] + '.tmp', 'wb') as f: f.write(body)\n"
    "        os.replace(os.environ['LAST'] + '.tmp', os.environ['LAST'])\n"
    "    except OSError:\n"
    "        pass\n"
    "    time.sleep(0.02)\n"
)


def _deployment(name: str, container: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name, "version": "v1"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}  # fmt: skip


def _service(name: str, port: int, target: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": target}]}}  # fmt: skip


def _meshwork(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _requests(ip: str) -> list[dict[str, str]]:
    """The labels of every istio_requests_total sample of the sidecar at ``ip``."""
    with urllib.request.urlopen(f"http://{ip}:15020/stats/prometheus", timeout=10) as r:
        text = r.read().decode()
    return [dict(s.labels, value=str(s.value)) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "istio_requests_total"]  # fmt: skip


def test_destination_sidecar_reports_inbound_requests_with_the_calling_workload(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    last = tmp_path / "last-answer"
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply(f"/apis/apps/v1/namespaces/{NS}/deployments", _deployment("web", {
            "name": "web", "image": "python", "command": [sys.executable, "-c", SERVE],
            "ports": [{"name": "http", "containerPort": 8080}]}))  # fmt: skip
        node.apply(f"/apis/apps/v1/namespaces/{NS}/deployments", _deployment("client", {
            "name": "client", "image": "python", "command": [sys.executable, "-c", CALL],
            "env": [{"name": "LAST", "value": str(last)}]}))  # fmt: skip
        node.apply(f"/api/v1/namespaces/{NS}/services", _service("web", 80, 8080))
        node.apply(f"/api/v1/namespaces/{NS}/services", _service("client", 8080, 8080))

        def meshed() -> dict[str, dict[str, Any]] | None:
            pods = [p for p in node.pods(NS) if is_ready(p) and p["spec"].get("initContainers")]
            by_app = {p["metadata"]["labels"]["app"]: p for p in pods}
            return by_app if set(by_app) == {"web", "client"} else None

        pods = wait_for(meshed, 90, "the web and client pods, ready with their sidecars")
        web_ip, client_ip = pods["web"]["status"]["podIP"], pods["client"]["status"]["podIP"]
        ports_env = {e["name"]: e.get("value") for e in pods["web"]["spec"]["initContainers"][0]["env"]}
        assert ports_env["ISTIO_META_POD_PORTS"] == '[{"name":"http","containerPort":8080,"protocol":"TCP"}]'

        # The app sees the request from its sidecar, without the inbound-port header.
        answer = wait_for(lambda: last.read_text() if last.exists() else None, 60, "an answer from web")
        assert answer.startswith(pods["web"]["metadata"]["name"] + " ")
        assert "x-meshwork-inbound-port" not in answer.split()[2].split(",")

        def destination_rows() -> list[dict[str, str]]:
            return [r for r in _requests(web_ip) if r["reporter"] == "destination"]

        rows = wait_for(destination_rows, 30, "destination-reported requests on web's sidecar")
        calls = [r for r in rows if r["response_code"] == "200"]
        assert calls, rows
        for r in calls:
            assert (r["source_workload"], r["source_workload_namespace"], r["source_app"]) == ("client", NS, "client")
            assert (r["destination_workload"], r["destination_app"]) == ("web", "web")
            assert r["destination_service"] == f"web.{NS}.svc.cluster.local"
            assert r["destination_service_name"] == "web" and r["source_principal"].endswith("/sa/default")
        # The client's sidecar still reports its side, as the source.
        assert any(r["reporter"] == "source" and r["destination_workload"] == "web" for r in _requests(client_ip))
        # Only the client called web, from its own pod IP: nothing came from an unknown source.
        assert {r["source_workload"] for r in rows} == {"client"}

        top = _meshwork(node, "top", "services", "-n", NS, "--interval", "1")
        assert top.returncode == 0, top.stderr
        lines = [line.split() for line in top.stdout.splitlines()]
        assert lines[0][:3] == ["SERVICE", "NAMESPACE", "RPS"], top.stdout
        web = [cols for cols in lines[1:] if cols[0] == "web"]
        assert web and web[0][1] == NS and float(web[0][2]) > 0, top.stdout
        assert web[0][3] == "100.0%", top.stdout
