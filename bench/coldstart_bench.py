"""Cold start through the mesh: request arrival to response for a workload scaled to zero.

A real server and node agent run ``hello`` (a small Python HTTP app on the
standard library, meshed, annotated ``meshwork.io/scale-to-zero: "true"``
with a 1 s idle period) and a ``client`` pod. Each round waits until the
Deployment is at zero with no pod left, then times one GET sent through the
client's sidecar: the sidecar holds it (proxy.activator), the control plane
sets one replica, the Deployment and ReplicaSet controllers make the pod, the
scheduler binds it, the agent starts the app and its sidecar, the readiness
probe passes, the Endpoints and the client's snapshot follow, and the request
goes through. Printed beside it: the same GET to the warm pod. The client
pod is meshed too, so from the first round on the agent holds a warm spare
proxy (``agent.standby``; ``MESHWORK_SIDECAR_STANDBY=0`` measures without it).

``--timeline`` runs the server and agent at DEBUG and prints, for each round,
where the time went, in milliseconds from the request: the watch events of
the Deployment's pods and Endpoints (stamped on arrival here), the agent's
debug lines (pod arrived, container started, ready, status written) and the
pod's own log (the proxy's certificate, and its one "ready" line with its
own steps: since its process started, or since it was taken from the
agent's standby spare, ``agent.standby``).

Run: ``.venv/bin/python -m bench.coldstart_bench [--rounds N] [--timeline]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.agent_bench import (
    NODE,
    STARTUP_TIMEOUT_S,
    Api,
    Server,
    is_ready,
    node_ready,
    running_server,
    wait_for,
)
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


# -- the timeline (--timeline) ---------------------------------------------------------------


@contextlib.contextmanager
def _debug_server() -> Iterator[tuple[Server, Api]]:
    server = Server(Path(tempfile.mkdtemp(prefix="bench-cold-")), log_level="DEBUG")
    try:
        server.start()
        api = Api(server.port, server.token)
        wait_for(lambda: node_ready(api), STARTUP_TIMEOUT_S, "node Ready")
        yield server, api
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


class Timeline:
    """Watch events of the app's pods and Endpoints, stamped on arrival, plus log lines, per round."""

    _STAMP = re.compile(r"^(?:\S+ (?:stdout|stderr) [PF] )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        for path, what in ((f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dhello", self._pod),
                           (f"/api/v1/namespaces/{NS}/endpoints?fieldSelector=metadata.name%3Dhello", self._eps)):  # fmt: skip
            threading.Thread(target=self._watch, args=(path, what), daemon=True).start()

    def _watch(self, path: str, what: Any) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=3600)
        conn.request("GET", f"{path}&watch=1", headers={"Authorization": f"Bearer {self.server.token}"})
        reply = conn.getresponse()
        buf = b""
        while chunk := reply.read1(65536):
            now = time.time()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    with self.lock:
                        self.events.append((now, what(json.loads(line))))

    @staticmethod
    def _pod(event: dict[str, Any]) -> str:
        pod = event["object"]
        st = pod.get("status") or {}
        ready = {c["type"]: c["status"] for c in st.get("conditions") or []}.get("Ready")
        cs = [f"{c['name']}:{'running' if (c.get('state') or {}).get('running') else '-'}"
              f"{',ready' if c.get('ready') else ''}"
              for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])]  # fmt: skip
        return (f"watch: pod {event['type']} node={pod['spec'].get('nodeName')} phase={st.get('phase')} "
                f"Ready={ready} {' '.join(cs)}")  # fmt: skip

    @staticmethod
    def _eps(event: dict[str, Any]) -> str:
        subsets = event["object"].get("subsets") or []
        ready = sum(len(s.get("addresses") or []) for s in subsets)
        return f"watch: endpoints ready={ready} notReady={sum(len(s.get('notReadyAddresses') or []) for s in subsets)}"

    def _logs(self, t0: float, t1: float) -> list[tuple[float, str]]:
        files = [(self.server.data_dir / "agent.log", "agent"), (self.server.data_dir / "bench-server.log", "server")]
        logs = self.server.data_dir / "nodes" / NODE / "logs"
        for pod_dir in logs.glob(f"{NS}_hello-*") if logs.is_dir() else ():
            files += [(f, f.parent.name) for f in pod_dir.glob("*/*.log")]
        out = []
        for path, tag in files:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    m = self._STAMP.match(line)
                    if m is None:
                        continue
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    keep = tag != "server" or "meshwork.ca" in m.group(2) or "scaletozero" in m.group(2)
                    if keep and t0 <= at <= t1 + 0.002:
                        out.append((at, f"{tag}: {m.group(2)[:200]}"))
        return out

    def print_round(self, t0: float, t1: float) -> None:
        with self.lock:
            seen = [e for e in self.events if t0 <= e[0] <= t1 + 0.002]
        for at, what in sorted(seen + self._logs(t0, t1)):
            print(f"  {(at - t0) * 1000:7.1f} ms  {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--timeline", action="store_true", help="print where each round's time went (DEBUG logs)")
    args = parser.parse_args()
    with (_debug_server() if args.timeline else running_server("bench-cold-")) as (server, api):
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

        timeline = Timeline(server) if args.timeline else None
        cold: list[float] = []
        warm: list[float] = []
        for i in range(args.rounds):
            wait_for(at_zero, 60, "hello at zero")
            t0 = time.time()
            status, took = _get(ip)
            t1 = time.time()
            if status != 200:
                raise RuntimeError(f"round {i}: cold request answered {status}")
            cold.append(took)
            for _ in range(5):
                warm.append(_get(ip)[1])
            print(f"round {i + 1}: cold start {took * 1000:.0f} ms", flush=True)
            if timeline is not None:
                time.sleep(0.2)  # the pod's last log lines and watch events land
                timeline.print_round(t0, t1)
        cold.sort()
        warm.sort()
        print(f"\ncold start (request arrival to response), {len(cold)} rounds: "
              f"p50 {percentile(cold, 50) * 1000:.0f} ms, p99 {percentile(cold, 99) * 1000:.0f} ms, "
              f"max {cold[-1] * 1000:.0f} ms (aim: p99 <= 500 ms)")  # fmt: skip
        print(f"warm, same path: p50 {percentile(warm, 50) * 1000:.1f} ms, p99 {percentile(warm, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
