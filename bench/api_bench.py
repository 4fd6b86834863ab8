"""API server benchmarks (issue: foundation), each beside a reference measured in the same run.

* creates/s through the API with 8 concurrent clients — reference: etcd 3.4's
  JSON gateway (``/v3/kv/put``) driven by the same client, an fsync'd KV
  server doing less per request than we do;
* list of 10,000 pods — reference: reading the same 10,000 rows straight
  from SQLite;
* delay from a write to its delivery to 100 watchers (p50/p99).

Run: ``make bench`` (all benches) or ``.venv/bin/python -m bench.api_bench``;
``--only creates`` (repeatable: creates, list, fanout) runs a part alone and
``--no-reference`` skips etcd.

The create figure also gives CPU per create, of the server process (all its
threads) and of the load generator: on a shared 2-core machine the rate moves
with whatever else runs, the server's CPU per create much less. The server
runs as users run it, controllers included. With no node, every pod also gets
a PodScheduled=False status write and a FailedScheduling Event from the
scheduler (3 revisions per pod in all), most of which happens after the
creates finish: the rate counts the creates, not that deferred work. The
bench then waits for the server to go idle and reports how long that took
and the server's CPU per create in all, deferred work included
(``--settle-timeout``); a server that keeps retrying its pending pods never
goes idle.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import percentile, request, run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.server import ServerProcess  # noqa: E402


def pod_body(name: str) -> bytes:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "app", "image": "registry.example/app:1.0", "command": ["python3", "-m", "http.server", "8080"],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [{"name": "MODE", "value": "bench"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }]},
    }).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CreateRun:
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # server process CPU per create
    client_cpu_ms: float  # load generator CPU per create
    settled_s: float | None = None  # from the last create until the server went idle; None: it did not
    settled_cpu_ms: float = 0.0  # server CPU per create until then, the controllers' deferred work included


def bench_creates(server: ServerProcess, total: int, clients: int, settle_timeout: float = 60.0) -> CreateRun:
    """``total`` creates over ``clients`` connections, with both sides' CPU per create.

    On a 2-core machine the load generator competes with the server, so the
    server's CPU seconds per create is the figure that does not depend on it.
    Then it waits (up to ``settle_timeout``) for the server to go idle: the
    controllers' work on the new pods, most of it after the creates, and
    whether any of it repeats without end.
    """
    assert server.proc is not None
    auth = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    bodies = [request("POST", "/api/v1/namespaces/bench/pods", pod_body(f"pod-{i:05d}"), auth) for i in range(total)]
    server_before, client_before = process_cpu(server.proc.pid), time.process_time()
    result = asyncio.run(run("127.0.0.1", server.port, bodies.__getitem__, total=total, connections=clients))
    server_cpu, client_cpu = process_cpu(server.proc.pid) - server_before, time.process_time() - client_before
    assert result.failed == 0, f"{result.failed} creates failed"
    settled_s, settled_cpu = wait_idle(server.proc.pid, settle_timeout)
    return CreateRun(
        result.rate, percentile(result.latencies, 50) * 1e3, percentile(result.latencies, 99) * 1e3,
        server_cpu / total * 1e3, client_cpu / total * 1e3,
        settled_s, (settled_cpu + server_cpu) / total * 1e3,
    )


# The server counts as idle once it has used less than IDLE_SHARE of a core in
# each of IDLE_WINDOWS consecutive windows of IDLE_WINDOW_S: longer than a
# periodic retry of pending pods (5 s here before event-driven requeues), so
# bursts of retries are not mistaken for the end of the work.
IDLE_SHARE = 0.05
IDLE_WINDOW_S = 1.0
IDLE_WINDOWS = 8


def wait_idle(pid: int, timeout: float) -> tuple[float | None, float]:
    """Seconds until the server went idle (None: not within ``timeout``) and the CPU seconds it used."""
    start = time.monotonic()
    first = last = process_cpu(pid)
    quiet: list[tuple[float, float]] = []  # (when, cpu) at the start of the idle streak
    while time.monotonic() - start < timeout:
        time.sleep(IDLE_WINDOW_S)
        now = process_cpu(pid)
        if now - last < IDLE_SHARE * IDLE_WINDOW_S:
            if not quiet:
                quiet.append((time.monotonic() - IDLE_WINDOW_S, last))
            if time.monotonic() - quiet[0][0] >= IDLE_WINDOWS * IDLE_WINDOW_S:
                return quiet[0][0] - start, quiet[0][1] - first
        else:
            quiet.clear()
        last = now
    return None, last - first


@contextlib.contextmanager
def etcd_server() -> Iterator[int | None]:
    """A throwaway single-member etcd on loopback (its client port), or None if not installed."""
    etcd = shutil.which("etcd")
    if etcd is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
    client_port, peer_port = free_port(), free_port()
    proc = subprocess.Popen(
        [etcd, "--data-dir", str(tmp / "data"), "--listen-client-urls", f"http://127.0.0.1:{client_port}",
         "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", client_port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.1)
        yield client_port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_etcd_puts(port: int, total: int, clients: int) -> tuple[float, float, float]:
    value = base64.b64encode(pod_body("x")).decode()

    def put(i: int) -> bytes:
        key = base64.b64encode(f"/registry/pods/bench/pod-{i:05d}".encode()).decode()
        body = json.dumps({"key": key, "value": value}).encode()
        return request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})

    bodies = [put(i) for i in range(total)]
    result = asyncio.run(run("127.0.0.1", port, bodies.__getitem__, total=total, connections=clients))
    return result.rate, percentile(result.latencies, 50) * 1e3, percentile(result.latencies, 99) * 1e3


def bench_list(server: ServerProcess, rounds: int) -> tuple[float, float, int]:
    api = server.client()
    times, count = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        reply = api.get("/api/v1/namespaces/bench/pods")
        times.append(time.perf_counter() - t0)
        count = len(json.loads(reply.body)["items"]) if not count else count
    api.close()
    # Reference: the same rows straight out of SQLite (no HTTP, no server).
    db = sqlite3.connect(server.data_dir / "store.db")
    ref = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        rows = db.execute("SELECT value FROM kv WHERE key >= 'pods/bench/' AND key < 'pods/bench0'").fetchall()
        b"[" + b",".join(r[0] for r in rows) + b"]"
        ref.append(time.perf_counter() - t0)
    db.close()
    return percentile(times, 50) * 1e3, percentile(ref, 50) * 1e3, count


_NAME = re.compile(rb'"name":"(cm-[0-9]+)"')
_ETCD_KEY = re.compile(rb'"key":"([A-Za-z0-9+/=]+)"')


@dataclass
class FanoutTarget:
    """How to watch and write on one server, for ``measure_fanout``."""

    port: int
    watch_request: bytes
    write_request: Callable[[str], bytes]
    names: Callable[[bytes], list[bytes]]


def measure_fanout(target: FanoutTarget, watchers: int, writes: int) -> tuple[float, float, float, float]:
    """Delay from a write to its delivery on each of ``watchers`` open watches.

    One ``selectors`` loop holds every watch and the writer's connection, and
    takes one timestamp per ``recv`` (an asyncio or threaded client measures its
    own scheduling more than the server). The clock starts when the write's
    request is sent, so the figure includes the write's own commit (its fsync);
    ``spread`` is the time between the first and the last watcher receiving the
    same event: the fan-out's own cost.
    """
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(watchers):
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(target.watch_request)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, "watch")
        socks.append(sock)
    writer = socket.create_connection(("127.0.0.1", target.port))
    writer.setblocking(False)
    sel.register(writer, selectors.EVENT_READ, "writer")
    sent: dict[bytes, float] = {}
    arrivals: dict[bytes, list[float]] = {}
    next_write, written, deadline = time.perf_counter() + 0.5, 0, time.perf_counter() + 60
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if written < writes and now >= next_write:
            name = f"cm-{written}"
            sent[name.encode()] = time.perf_counter()
            writer.sendall(target.write_request(name))
            written += 1
            next_write = now + 0.02
        if written == writes and sum(len(v) for v in arrivals.values()) >= watchers * writes:
            break
        for key, _ in sel.select(timeout=max(0.0, next_write - time.perf_counter()) if written < writes else 0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data = sock.recv(1 << 20)
            stamp = time.perf_counter()
            if key.data == "watch":
                for name in target.names(data):
                    arrivals.setdefault(name, []).append(stamp)
    for sock in [*socks, writer]:
        sel.unregister(sock)
        sock.close()
    delays = [t - sent[name] for name, ts in arrivals.items() for t in ts if name in sent]
    spreads = [max(ts) - min(ts) for ts in arrivals.values()]
    delivered = len(delays) / max(1, watchers * writes)
    return percentile(delays, 50) * 1e3, percentile(delays, 99) * 1e3, percentile(spreads, 99) * 1e3, delivered


def bench_watch_fanout(server: ServerProcess, watchers: int, writes: int) -> tuple[float, float, float, float]:
    api = server.client()
    rv = json.loads(api.get("/api/v1/namespaces/fanout/configmaps").body)["metadata"]["resourceVersion"]
    api.close()
    auth = {"Authorization": f"Bearer {server.token}"}

    def write(name: str) -> bytes:
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}).encode()
        return request("POST", "/api/v1/namespaces/fanout/configmaps", body, {**auth, "Content-Type": "application/json"})

    target = FanoutTarget(
        server.port,
        request("GET", f"/api/v1/namespaces/fanout/configmaps?watch=1&resourceVersion={rv}", headers=auth),
        write,
        _NAME.findall,
    )
    return measure_fanout(target, watchers, writes)


def bench_etcd_fanout(port: int, watchers: int, writes: int) -> tuple[float, float, float, float]:
    """The same measurement against etcd's own watch, through its JSON gateway."""
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    watch = json.dumps({"create_request": {"key": b64(b"/fanout/"), "range_end": b64(b"/fanout0")}}).encode()
    value = b64(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).encode())

    def write(name: str) -> bytes:
        body = json.dumps({"key": b64(f"/fanout/{name}".encode()), "value": value}).encode()
        return request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})

    def names(data: bytes) -> list[bytes]:
        out = []
        for key in _ETCD_KEY.findall(data):
            with contextlib.suppress(ValueError):
                out.append(base64.b64decode(key).rsplit(b"/", 1)[-1])
        return out

    target = FanoutTarget(port, request("POST", "/v3/watch", watch, {"Content-Type": "application/json"}), write, names)
    return measure_fanout(target, watchers, writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--only", choices=("creates", "list", "fanout"), action="append",
                        help="run only these parts (repeatable; list needs the creates before it)")
    parser.add_argument("--no-reference", action="store_true", help="skip etcd (the same-run reference)")
    parser.add_argument("--settle-timeout", type=float, default=60.0,
                        help="how long to wait after the creates for the server to go idle (seconds)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for `meshwork server` (diagnosis only, e.g. --no-controllers)")
    args = parser.parse_args()
    parts = set(args.only or ("creates", "list", "fanout"))
    if "list" in parts:
        parts.add("creates")
    print(f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} cpus")
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = ServerProcess(tmp)
    rows = []
    created: CreateRun | None = None
    lst = fan = None
    try:
        server.start(*args.server_arg)
        if "creates" in parts:
            created = bench_creates(server, args.pods, args.clients, args.settle_timeout)
        if "list" in parts:
            lst = bench_list(server, 7)
        if "fanout" in parts:
            fan = bench_watch_fanout(server, args.watchers, args.writes)
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    ref = ref_fan = None
    if not args.no_reference:
        with etcd_server() as port:
            ref = bench_etcd_puts(port, args.pods, args.clients) if port and created else None
            ref_fan = bench_etcd_fanout(port, args.watchers, args.writes) if port and fan else None
    no_ref = "not run" if args.no_reference else "etcd not installed"
    if created is not None:
        rows.append((
            f"creates, {args.clients} clients, {args.pods:,} pods",
            f"{created.rate:,.0f}/s (p50 {created.p50_ms:.1f} ms, p99 {created.p99_ms:.1f} ms); "
            f"CPU per create: server {created.server_cpu_ms:.3f} ms, load generator {created.client_cpu_ms:.3f} ms; "
            + (f"server idle {created.settled_s:.1f} s after the last create, "
               f"{created.settled_cpu_ms:.3f} ms CPU per create in all" if created.settled_s is not None else
               f"server not idle {args.settle_timeout:.0f} s after the last create "
               f"({created.settled_cpu_ms:.3f} ms CPU per create by then)"),
            f"{ref[0]:,.0f}/s (p50 {ref[1]:.1f} ms, p99 {ref[2]:.1f} ms) etcd 3.4 put" if ref else no_ref,
            "≥ 2,000/s",
        ))
    if lst is not None:
        rows.append((f"list {lst[2]:,} pods (median of 7)", f"{lst[0]:.0f} ms", f"{lst[1]:.0f} ms raw SQLite read", "≤ 300 ms"))

    def fan_text(f: tuple[float, float, float, float]) -> str:
        return f"p50 {f[0]:.1f} ms, p99 {f[1]:.1f} ms; first→last p99 {f[2]:.1f} ms ({f[3]:.0%} delivered)"

    if fan is not None:
        rows.append((
            f"write sent → delivered on {args.watchers} watches",
            fan_text(fan),
            f"{fan_text(ref_fan)} etcd 3.4 watch" if ref_fan else no_ref,
            "p99 ≤ 20 ms",
        ))
    print("\n| benchmark | meshwork | reference (same run) | aim |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
