"""Cold start through the mesh: request arrival to response for a workload scaled to zero.

A real server and node agent run ``hello`` (a small Python HTTP app on the
standard library, meshed, annotated ``meshwork.io/scale-to-zero: "true"``
with a 1 s idle period) and a ``client`` pod. Each round waits until the
Deployment is at zero with no pod left, then times one GET sent through the
client's sidecar: the sidecar holds it (proxy.activator), the control plane
sets one replica, the Deployment and ReplicaSet controllers make the pod, the
scheduler binds it, the agent starts the app and its sidecar, the readiness
probe passes, the Endpoints and the client's snapshot follow, and the request
goes through. Printed beside it: the same GET to the warm pod.

Run: ``.venv/bin/python -m bench.coldstart_bench [--rounds N]``.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from typing import Any

from bench.agent_bench import Api, is_ready, running_server, wait_for
from bench.loadgen import percentile

NS = "cold"
SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)


def _get(ip: str) -> tuple[int, float]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(ip, 15001, timeout=120)
    try:
        conn.request("GET", "http://hello:8080/", headers={"Host": "hello:8080"})
        r = conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - start
    finally:
        conn.close()


def _apply(api: Api, path: str, body: dict[str, Any]) -> None:
    status, reply = api.call("POST", path, body)
    if status != 201:
        raise RuntimeError(f"POST {path}: {status} {reply}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with running_server("bench-cold-") as (_server, api):
        _apply(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        labels = {"app": "hello"}
        container = {"name": "hello", "image": "python:3.11", "command": [sys.executable, "-c", SERVE],
                     "ports": [{"containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}  # fmt: skip
        _apply(api, f"/apis/apps/v1/namespaces/{NS}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hello", "annotations": {"meshwork.io/scale-to-zero": "true",
                                                          "meshwork.io/scale-to-zero-idle": "1s"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})  # fmt: skip
        _apply(api, f"/api/v1/namespaces/{NS}/services", {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "hello"}, "spec": {"selector": labels, "ports": [{"port": 8080}]}})  # fmt: skip
        _apply(api, f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "client"},
               "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip

        def client_ip() -> str | None:
            status, pod = api.call("GET", f"/api/v1/namespaces/{NS}/pods/client")
            return pod["status"].get("podIP") if status == 200 and is_ready(pod) else None

        ip = wait_for(client_ip, 60, "the client pod Ready")

        def at_zero() -> bool:
            status, dep = api.call("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/hello")
            _s, pods = api.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dhello")
            return status == 200 and dep["spec"].get("replicas") == 0 and not pods["items"]

        cold: list[float] = []
        warm: list[float] = []
        for i in range(args.rounds):
            wait_for(at_zero, 60, "hello at zero")
            status, took = _get(ip)
            if status != 200:
                raise RuntimeError(f"round {i}: cold request answered {status}")
            cold.append(took)
            for _ in range(5):
                warm.append(_get(ip)[1])
            print(f"round {i + 1}: cold start {took * 1000:.0f} ms", flush=True)
        cold.sort()
        warm.sort()
        print(f"\ncold start (request arrival to response), {len(cold)} rounds: "
              f"p50 {percentile(cold, 50) * 1000:.0f} ms, p99 {percentile(cold, 99) * 1000:.0f} ms, "
              f"max {cold[-1] * 1000:.0f} ms (aim: p99 <= 500 ms)")  # fmt: skip
        print(f"warm, same path: p50 {percentile(warm, 50) * 1000:.1f} ms, p99 {percentile(warm, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
