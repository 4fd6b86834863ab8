"""Gateway workers: requests/s through the control-plane-fed gateway with 1 vs N worker processes.

A server (control plane) holds a Gateway (``istio: ingressgateway``, port 80,
hosts ``*``), a VirtualService routing every path to Service ``web``, and
that Service's hand-written Endpoints: 3 nginx backends on 127.0.8.1-3:8080
(one nginx, 1 worker, ``/small`` answers 15 bytes). The bench runs
``meshwork sidecar --role gateway --workers W`` itself (not as a pod), waits
until it routes, then loads it with ``wrk -t2 -c64 --latency`` for each worker
count in turn, interleaved over the rounds (1, 2, 1, 2, ...), and reads the
gateway's CPU seconds from ``/proc`` (the supervisor and its workers).

Run: ``.venv/bin/python -m bench.gateway_bench [--workers 1,2] [--rounds 3] [--duration 10]``
(about 1.5 minutes). Needs wrk and nginx. On a 2-core machine wrk and the
backends share the cores with the gateway, so more workers can only help
as far as a core is idle: read ``host busy``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.agent_bench import Api, running_server, wait_for

BACKENDS = ("127.0.8.1", "127.0.8.2", "127.0.8.3")
BACKEND_PORT = 8080
GATEWAY_IP = "127.0.9.1"  # the gateway's "pod IP": its admin port :15020 listens there
NGINX_CONF = """daemon off; worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000000;
  server {{ {listens} location /small {{ return 200 "hello from nginx\\n"; }} }} }}
"""


@contextlib.contextmanager
def nginx_backends(workdir: Path) -> Iterator[None]:
    listens = " ".join(f"listen {ip}:{BACKEND_PORT};" for ip in BACKENDS)
    (workdir / "nginx.conf").write_text(NGINX_CONF.format(dir=workdir, listens=listens))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: _get(f"http://{BACKENDS[0]}:{BACKEND_PORT}/small") == 200, 10, "nginx")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except OSError:
        return 0


def setup(api: Api) -> None:
    docs = [
        ("/api/v1/namespaces/default/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                                  "spec": {"ports": [{"name": "http", "port": 80,
                                                                      "targetPort": BACKEND_PORT}]}}),
        ("/api/v1/namespaces/default/endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
                                                   "subsets": [{"addresses": [{"ip": ip} for ip in BACKENDS],
                                                                "ports": [{"name": "http", "port": BACKEND_PORT}]}]}),
        ("/apis/networking.istio.io/v1/namespaces/default/gateways", {
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "bench"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}),
        ("/apis/networking.istio.io/v1/namespaces/default/virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "bench"},
            "spec": {"hosts": ["*"], "gateways": ["bench"],
                     "http": [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}]}}),
    ]  # fmt: skip
    for path, body in docs:
        status, reply = api.call("POST", path, body)
        if status != 201:
            raise RuntimeError(f"POST {path}: {status} {reply}")


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in process group ``pgid``."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) == pgid:
                    ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def host_busy() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def one_round(server_env: dict[str, str], workers: int, port: int, duration: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "meshwork", "sidecar", "--role", "gateway", "--workers", str(workers),
           "--pod", "gw-bench", "--namespace", "istio-system", "--ip", GATEWAY_IP,
           "--listen-host", "127.0.0.1", "--ports", f"80:{port}", "--labels", "istio=ingressgateway"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/small") == 200, 30, f"the gateway ({workers} workers)")
        subprocess.run(["wrk", "-t2", "-c64", "-d2s", f"http://127.0.0.1:{port}/small"], capture_output=True,
                       timeout=40, check=False)  # warm-up  # fmt: skip
        cpu0, (busy0, all0) = group_cpu(proc.pid), host_busy()
        out = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/small"],
                             capture_output=True, text=True, timeout=duration + 30, check=False).stdout  # fmt: skip
        cpu1, (busy1, all1) = group_cpu(proc.pid), host_busy()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {"rps": rps, "cpu_per_1k": (cpu1 - cpu0) / duration / (rps / 1000), "cpu": cpu1 - cpu0,
            "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
            "errors": float(non2xx.group(1)) if non2xx else 0.0, "busy": (busy1 - busy0) / max(1, all1 - all0)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts, run interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--port", type=int, default=38480)
    args = ap.parse_args()
    if shutil.which("wrk") is None or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        print("gateway bench skipped: needs wrk and nginx (make bench installs them as root)")
        return 0
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp, nginx_backends(Path(tmp)), \
            running_server("bench-gateway-") as (server, api):  # fmt: skip
        setup(api)
        for r in range(args.rounds):
            for w in counts:
                got = one_round(server.env, w, args.port, args.duration)
                results[w].append(got)
                print(f"round {r + 1} workers={w}: {got['rps']:.0f} req/s, {got['cpu_per_1k']:.4f} CPU s per 1k req, "
                      f"p99 {got['p99_ms']:.2f} ms, host busy {got['busy']:.0%}, non-2xx {got['errors']:.0f}",
                      flush=True)  # fmt: skip
    base = counts[0]
    print(f"\n| workers | req/s median | min-max | x {base} worker(s) | CPU s per 1k req | p99 ms | host busy |")
    print("|---|---|---|---|---|---|---|")
    for w in counts:
        rows = results[w]
        ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(rows, results[base], strict=True))
        rps = [x["rps"] for x in rows]
        print(f"| {w} | {statistics.median(rps):.0f} | {min(rps):.0f}-{max(rps):.0f} | {ratio:.2f} | "
              f"{statistics.median(x['cpu_per_1k'] for x in rows):.4f} | "
              f"{statistics.median(x['p99_ms'] for x in rows):.2f} | {statistics.median(x['busy'] for x in rows):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
