"""The ingress gateway in several worker processes (proxy.workers): shared ports, one config stream, no orphans."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.node import is_ready, running_node, shim_pid, wait_for

pytestmark = pytest.mark.integration

SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = ('web saw ' + self.path).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
PORT = 18490
GW = "/apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway"


def _get(path: str) -> tuple[int, str]:
    """One request on a new connection (so SO_REUSEPORT may hand it to either worker)."""
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers={"Host": "shop.example.com"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def _admin(ip: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:15020{path}", timeout=5) as resp:
        return str(resp.read().decode())


def _per_worker_requests(ip: str) -> list[int]:
    """Requests each worker handled, from the supervisor's /stats (one block per worker)."""
    return [int(n) for n in re.findall(r"worker \d+:\nrequests: (\d+)", _admin(ip, "/stats"))]


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _vs(rewrite: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "shop"},
            "spec": {"hosts": ["shop.example.com"], "gateways": ["shop"], "http": [
                {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": rewrite},
                 "route": [{"destination": {"host": "web", "port": {"number": 8080}}}]}]}}  # fmt: skip


def test_a_gateway_with_two_workers_serves_on_both_follows_config_and_leaves_no_process(tmp_path: Path) -> None:
    with running_node(tmp_path, "--ingress-gateway", "--ingress-ports", f"80:{PORT}") as node:
        # Two workers, whatever this machine's core count says.
        deployment = node.get(GW)
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["args"] = [*container["args"], "--workers", "2"]
        reply = node.http.patch(GW, {"spec": {"template": {"spec": {"containers": [container]}}}})
        assert reply.status == 200, reply.body

        def gateway_pod() -> dict[str, Any] | None:
            pods = node.pods("istio-system")
            if len(pods) != 1:
                return None  # the old gateway is still draining: it shares the host port, and would count
            pod = pods[0]
            ready = is_ready(pod) and "deletionTimestamp" not in pod["metadata"]
            return pod if ready and "--workers" in pod["spec"]["containers"][0].get("args", []) else None

        pod = wait_for(gateway_pod, 90, "the gateway pod with two workers")
        ip = pod["status"]["podIP"]
        pgid = shim_pid(pod, "istio-proxy")
        assert pgid is not None
        # The supervisor and its two workers, all in the pod's process group.
        wait_for(lambda: len([p for p in _group(pgid) if p != pgid]) >= 3 or None, 30, "the gateway's workers")

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
        node.apply("/apis/networking.istio.io/v1/namespaces/default/virtualservices", _vs("/v1/"))
        wait_for(lambda: _get("/api/x")[0] == 200 or None, 60, "the gateway to route /api/")

        # Both workers serve: 40 new connections, each answered as routed, spread over both.
        before = _per_worker_requests(ip)
        assert len(before) == 2
        assert all(_get("/api/x") == (200, "web saw /v1/x") for _ in range(40))
        after = _per_worker_requests(ip)
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
        merged = _admin(ip, "/stats/prometheus")
        total = sum(float(v) for v in re.findall(r'^istio_requests_total\{[^}]*response_code="200"[^}]*\} (\S+)$',
                                                  merged, re.M))  # fmt: skip
        assert total >= 40 and total == sum(_per_worker_200s(ip))

        # A config change reaches both workers: every new connection sees the new rewrite.
        assert node.http.patch("/apis/networking.istio.io/v1/namespaces/default/virtualservices/shop",
                               {"spec": _vs("/v2/")["spec"]}).status == 200  # fmt: skip
        wait_for(lambda: _get("/api/x") == (200, "web saw /v2/x") or None, 30, "the new rewrite")
        mid = _per_worker_requests(ip)
        assert all(_get("/api/x") == (200, "web saw /v2/x") for _ in range(40))
        assert all(a > b for a, b in zip(_per_worker_requests(ip), mid, strict=True))
        # One proxy for the pod in proxy-status, SYNCED once every worker applied the version.
        proxies = [p for p in node.get("/apis/mesh.meshwork.io/v1/proxies")["items"]  # type: ignore[index]
                   if p["pod"] == pod["metadata"]["name"]]  # fmt: skip
        assert len(proxies) == 1 and proxies[0]["status"] == "SYNCED", proxies
        assert proxies[0]["streams"] == 1

        # Stopping the pod stops every process of it.
        reply = node.http.delete(f"/api/v1/namespaces/istio-system/pods/{pod['metadata']['name']}")
        assert reply.status in (200, 202), reply.body
        wait_for(lambda: not _group(pgid) or None, 60, "the gateway's processes to exit")


def _per_worker_200s(ip: str) -> list[int]:
    """200 responses per worker, from the supervisor's /stats."""
    return [int(n) for n in re.findall(r"^  200: (\d+)$", _admin(ip, "/stats"), re.M)]
