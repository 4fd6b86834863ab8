"""Mutual TLS between real sidecars: requests/s with mTLS on vs off, and the mTLS handshake cost.

A server with its agent runs two injected pods: ``web`` (a small asyncio
HTTP/1.1 server that answers every request itself, keep-alive) behind a
Service on port 80, and ``client`` (idle). wrk sends ``GET / Host: web`` to
the client's sidecar (``$POD_IP:15001``), which forwards to web's sidecar
(``:15006``), which forwards to the app: the mesh path of two sidecars.

Rows, alternated in rounds so that both see the same machine:

* ``mtls``: auto mTLS (the default: web has a sidecar, PERMISSIVE);
* ``plain``: a DestinationRule ``tls.mode: DISABLE`` for web: plaintext between the sidecars;
* ``mtls new conn`` / ``plain new conn``: the same with ``maxRequestsPerConnection: 1``,
  so every request opens a new sidecar-to-sidecar connection (a handshake
  for mTLS), driven by one connection: the latency difference per request is
  the handshake's cost on the mesh path.

Run: ``python -m bench.mtls_bench [--duration S] [--rounds R] [--conns N]``.
Quote the ratios of one run (2 shared cores: wrk, the sidecars and the app compete).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.agent_bench import Api, is_ready, running_server, wait_for

NAMESPACE = "bench-mtls"
READY_TIMEOUT_S = 150.0
CONVERGE_TIMEOUT_S = 30.0

APP = (
    "import asyncio, os\n"
    "BODY = b'hello from web\\n'\n"
    "RESP = b'HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(BODY) + BODY\n"
    "class P(asyncio.Protocol):\n"
    "    def connection_made(self, t): self.t = t; self.buf = b''\n"
    "    def data_received(self, d):\n"
    "        self.buf += d\n"
    "        while (i := self.buf.find(b'\\r\\n\\r\\n')) >= 0:\n"
    "            self.buf = self.buf[i + 4:]; self.t.write(RESP)\n"
    "async def main():\n"
    "    loop = asyncio.get_running_loop()\n"
    "    srv = await loop.create_server(P, os.environ['POD_IP'], 8080, backlog=1024)\n"
    "    await srv.serve_forever()\n"
    "try:\n"
    "    import uvloop; uvloop.run(main())\n"
    "except ImportError:\n"
    "    asyncio.run(main())\n"
)


def _post(api: Api, path: str, body: dict[str, Any]) -> None:
    status, reply = api.call("POST", path, body)
    assert status == 201, reply


def setup(api: Api) -> str:
    """The namespace, web and client; the client's pod IP once both are Ready with their sidecars."""
    _post(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
    for name, container in (
        ("web", {"name": "web", "image": "python", "command": [sys.executable, "-c", APP],
                 "ports": [{"name": "http", "containerPort": 8080}]}),
        ("client", {"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}),
    ):  # fmt: skip
        labels = {"app": name}
        _post(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})  # fmt: skip
    _post(api, f"/api/v1/namespaces/{NAMESPACE}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})  # fmt: skip

    def ready() -> dict[str, str] | None:
        code, listed = api.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        if code != 200:
            return None
        ips = {p["metadata"]["labels"]["app"]: p["status"]["podIP"] for p in listed["items"]
               if is_ready(p) and p["status"].get("podIP") and p["spec"].get("initContainers")}  # fmt: skip
        return ips if {"web", "client"} <= set(ips) else None

    ips: dict[str, str] = wait_for(ready, READY_TIMEOUT_S, "web and client Ready with their sidecars")
    return ips["client"]


def set_rule(api: Api, tls: str | None, per_connection: int) -> None:
    """Replace web's DestinationRule and wait until every proxy applied it."""
    path = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/destinationrules"
    api.call("DELETE", f"{path}/web")
    policy: dict[str, Any] = {}
    if tls is not None:
        policy["tls"] = {"mode": tls}
    if per_connection:
        policy["connectionPool"] = {"http": {"maxRequestsPerConnection": per_connection}}
    if not policy:  # no rule at all: auto mTLS with Istio's defaults
        policy["loadBalancer"] = {"simple": "ROUND_ROBIN"}
    status, body = api.call("POST", path, {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                           "metadata": {"name": "web"},
                                           "spec": {"host": "web", "trafficPolicy": policy}})  # fmt: skip
    assert status == 201, body
    rv = body["metadata"]["resourceVersion"]
    api.call("GET", f"/apis/mesh.meshwork.io/v1/convergence?after={rv}&timeoutSeconds={CONVERGE_TIMEOUT_S:g}")


def wrk(url: str, conns: int, duration: float) -> tuple[float, float, int]:
    """(requests/s, mean latency ms, non-2xx + socket errors) from one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "-H", "Host: web", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 60).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    mean = float(lat.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[lat.group(2)] if lat else 0.0
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, mean, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conns", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    rows: dict[str, list[tuple[float, float, int]]] = {}
    with running_server("bench-mtls-") as (_server, api):
        client = setup(api)
        url = f"http://{client}:15001/"
        plan = [("mtls", None, 0, args.conns), ("plain", "DISABLE", 0, args.conns),
                ("mtls new conn", None, 1, 1), ("plain new conn", "DISABLE", 1, 1)]  # fmt: skip
        set_rule(api, None, 0)
        wrk(url, args.conns, 2.0)  # warm-up: pools, first handshakes
        for _ in range(args.rounds):
            for name, tls, per_conn, conns in plan:
                set_rule(api, tls, per_conn)
                time.sleep(0.5)
                rows.setdefault(name, []).append(wrk(url, conns, args.duration))
    print(f"\nmesh path: wrk -> client sidecar -> web sidecar -> app; {args.rounds} rounds x {args.duration:g}s")
    print(f"{'row':<16} {'conns':>5} {'req/s':>10} {'mean ms':>9} {'errors':>7}")
    best = {}
    for name, _tls, _per, conns in plan:
        runs = rows[name]
        rps = sum(r[0] for r in runs) / len(runs)
        mean = sum(r[1] for r in runs) / len(runs)
        best[name] = (rps, mean)
        print(f"{name:<16} {conns:>5} {rps:>10.0f} {mean:>9.3f} {sum(r[2] for r in runs):>7}")
    ratio = best["mtls"][0] / best["plain"][0] if best["plain"][0] else 0.0
    handshake = best["mtls new conn"][1] - best["plain new conn"][1]
    print(f"\nmTLS / plaintext throughput: {ratio:.2f}")
    print(f"mTLS handshake cost on the mesh path (new connection per request, latency difference): {handshake:.3f} ms")


if __name__ == "__main__":
    main()
