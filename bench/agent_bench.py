"""Node agent benchmarks, each beside a reference measured in the same run.

1. **apply → Ready, 100 pods**, twice: a Deployment of 100 tiny HTTP servers
   on ``$(POD_IP):8080`` with an httpGet readinessProbe every second, and a
   Deployment of 100 ``sleep infinity`` with no probe (Ready = started). For
   each pod: the time from the apply request's return to the watch event
   that shows its Ready condition True (stamped on arrival here), plus the
   pod's own ``lastTransitionTime - creationTimestamp`` (1 s resolution) as a
   cross-check. Reference: this bench spawning the same 100 commands itself
   and waiting until each answers (HTTP) or has started (sleep) — the floor
   with no orchestrator at all. Aim: p99 ≤ 1 s (Kubernetes' pod startup SLO,
   no image pulls: p99 ≤ 5 s).
2. **agent RSS and CPU with 100 idle pods**, with no probes and then with a
   readinessProbe every 10 s (the default period) on each pod: the agent's
   RSS (``VmRSS``) and CPU (% of one core, utime+stime) over a window, and
   the server's over the same window. References: a bare ``python3`` idling
   in ``asyncio.sleep`` (the interpreter's floor) and the per-container
   ``/bin/sh`` shims' total RSS (the cost of the shim design). Aim: agent
   ≤ 100 MiB and ≤ 2 % of a core.

Run: ``make bench`` (all benches) or ``.venv/bin/python -m bench.agent_bench``
(about 2 minutes; ``--window`` shortens the idle samples,
``--profile DIR`` records the agent and the server with py-spy).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.loadgen import percentile

NAMESPACE = "bench"
NODE = "node-1"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
DIRECT_NET = "127.3.0."  # the direct reference's addresses: outside the agent's 127.1.0.0/16
READY_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 30.0
TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# The pod: an HTTP server on $POD_IP:8080 that answers 200 to every GET.
SERVE = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '2')\n"
    "        self.end_headers(); self.wfile.write(b'ok')\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
HTTP_CMD = [sys.executable, "-c", SERVE]
SLEEP_CMD = ["sleep", "infinity"]
FLOOR_CMD = [sys.executable, "-c", "import asyncio; asyncio.run(asyncio.sleep(60))"]


# -- the server with its agent ------------------------------------------------------------


class Api:
    """Plain JSON over one keep-alive connection."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                return resp.status, json.loads(payload) if payload else None
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


@dataclass
class Server:
    """``meshwork server --agent`` in a temporary data dir, on a free port."""

    data_dir: Path
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    log_level: str = "WARNING"  # the server's and agent's (coldstart_bench --timeline reads DEBUG lines)

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """The environment for a ``meshwork`` command against this server."""
        return {**os.environ, "MESHWORK_HOME": str(self.data_dir), "MESHWORK_LOG_LEVEL": "WARNING",
                "MESHWORK_SERVER": f"http://127.0.0.1:{self.port}", "MESHWORK_TOKEN": self.token if self.port else ""}  # fmt: skip

    def agent_pid(self) -> int:
        return int((self.data_dir / "agent.pid").read_text().strip())

    def start(self) -> None:
        env = {**os.environ, "MESHWORK_HOME": str(self.data_dir), "MESHWORK_LOG_LEVEL": self.log_level}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshwork", "server", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", str(self.data_dir), "--agent", "--node-name", NODE, "--no-ingress-gateway"],
            stdout=subprocess.PIPE, stderr=open(self.data_dir / "bench-server.log", "a"),
            text=True, env=env, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                self.port = int(line.strip().rsplit(":", 1)[-1])
                # Keep draining stdout so the server never blocks on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise RuntimeError("meshwork server did not start:\n"
                           + (self.data_dir / "bench-server.log").read_text()[-3000:])  # fmt: skip

    def stop(self) -> None:
        """SIGTERM (the agent stops every pod), SIGKILL the group if it lingers, then sweep."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        sweep(self.data_dir)


def cmdline(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def shim_pids(data_dir: Path) -> list[int]:
    """The per-container shims of this data dir: ``$0`` is ``meshwork-pod:<data dir>/...``."""
    marker = f"meshwork-pod:{data_dir}"
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and any(a.startswith(marker) for a in cmdline(e.name))]  # fmt: skip


def sweep(data_dir: Path) -> None:
    """SIGKILL whatever this data dir's agent and pods left running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        args = cmdline(entry.name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if any(a.startswith(f"meshwork-pod:{data_dir}") for a in args):
                os.killpg(int(entry.name), signal.SIGKILL)
            elif "agent" in args and str(data_dir) in args:
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def running_server(prefix: str = "bench-agent-") -> Iterator[tuple[Server, Api]]:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = Server(tmp)
    api: Api | None = None
    try:
        server.start()
        api = Api(server.port, server.token)
        wait_for(lambda: node_ready(api) if api else False, STARTUP_TIMEOUT_S, "node Ready")
        yield server, api
    finally:
        if api is not None:
            api.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def node_ready(api: Api) -> bool:
    status, node = api.call("GET", f"/api/v1/nodes/{NODE}")
    return status == 200 and is_ready(node)


def is_ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions") or [])  # fmt: skip


def deployment(name: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }  # fmt: skip


# -- part 1: apply -> Ready --------------------------------------------------------------


@dataclass
class PodTimes:
    """When each stage of one pod was first seen on the watch (monotonic), and its last object."""

    seen: float
    bound: float | None = None
    started: float | None = None
    ready: float | None = None
    obj: dict[str, Any] = field(default_factory=dict)


class Watcher:
    """A pod watch on its own thread, stamping every event as it arrives."""

    def __init__(self, api: Api, selector: str) -> None:
        status, listed = api.call("GET", f"{PODS}?labelSelector={selector}")
        assert status == 200, listed
        rv = listed["metadata"]["resourceVersion"]
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=READY_TIMEOUT_S * 2)
        self.conn.request("GET", f"{PODS}?watch=1&labelSelector={selector}&resourceVersion={rv}",
                          headers={"Authorization": f"Bearer {api.token}"})  # fmt: skip
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.pods: dict[str, PodTimes] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # ``close`` ends it by shutting the socket down under the read: any error is the end.
        with contextlib.suppress(Exception):
            while line := self.resp.readline():
                stamp = time.monotonic()
                event = json.loads(line)
                if event.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                obj = event["object"]
                with self.lock:
                    t = self.pods.setdefault(obj["metadata"]["name"], PodTimes(stamp))
                    t.obj = obj
                    if t.bound is None and obj.get("spec", {}).get("nodeName"):
                        t.bound = stamp
                    statuses = obj.get("status", {}).get("containerStatuses") or []
                    if t.started is None and statuses and all("running" in (s.get("state") or {})
                                                              for s in statuses):  # fmt: skip
                        t.started = stamp
                    if t.ready is None and is_ready(obj):
                        t.ready = stamp

    def ready_count(self) -> int:
        with self.lock:
            return sum(1 for t in self.pods.values() if t.ready is not None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.thread.join(5)


@dataclass
class Startup:
    """Per-pod seconds from the start (apply returned / first spawn) to Ready."""

    delays: list[float]
    stages: dict[str, list[float]] = field(default_factory=dict)
    own: list[float] = field(default_factory=list)  # lastTransitionTime - creationTimestamp

    def text(self, values: list[float] | None = None, unit: str = "s", digits: int = 2) -> str:
        v = self.delays if values is None else values
        if not v:
            return "none"
        return (f"p50 {percentile(v, 50):.{digits}f} {unit}, p99 {percentile(v, 99):.{digits}f} {unit}, "
                f"max {max(v):.{digits}f} {unit}")  # fmt: skip


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def apply_to_ready(api: Api, name: str, replicas: int, container: dict[str, Any]) -> Startup:
    watcher = Watcher(api, f"app={name}")
    try:
        status, body = api.call("POST", DEPLOYMENTS, deployment(name, replicas, container))
        assert status == 201, body
        t0 = time.monotonic()
        wait_for(lambda: watcher.ready_count() >= replicas, READY_TIMEOUT_S,
                 f"{replicas} Ready pods of {name}")  # fmt: skip
    finally:
        watcher.close()
    pods = [t for t in watcher.pods.values() if t.ready is not None]
    result = Startup([t.ready - t0 for t in pods if t.ready is not None])
    for stage in ("seen", "bound", "started"):
        result.stages[stage] = [v - t0 for t in pods if (v := getattr(t, stage)) is not None]
    for t in pods:
        created = t.obj["metadata"].get("creationTimestamp")
        ready = [c for c in t.obj["status"]["conditions"] if c["type"] == "Ready"]
        if created and ready and ready[0].get("lastTransitionTime"):
            result.own.append(parse_time(ready[0]["lastTransitionTime"]) - parse_time(created))
    return result


def delete_and_wait(server: Server, api: Api, name: str) -> None:
    status, body = api.call("DELETE", f"{DEPLOYMENTS}/{name}")
    assert status in (200, 202), body

    def gone() -> bool:
        code, listed = api.call("GET", f"{PODS}?labelSelector=app={name}")
        return code == 200 and not listed["items"] and not shim_pids(server.data_dir)

    wait_for(gone, GONE_TIMEOUT_S, f"the pods of {name} to be gone")


def get_ok(ip: str) -> bool:
    conn = http.client.HTTPConnection(ip, 8080, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def spawned(
    argvs: list[tuple[list[str], dict[str, str]]],
) -> Iterator[list[tuple[subprocess.Popen[bytes], float]]]:
    """Start each argv in its own session; each process with the moment Popen returned."""
    procs: list[tuple[subprocess.Popen[bytes], float]] = []
    try:
        for argv, env in argvs:
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
            procs.append((proc, time.monotonic()))
        yield procs
    finally:
        for proc, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc, _ in procs:
            proc.wait()


def direct_http(count: int) -> Startup:
    """Spawn ``count`` HTTP servers and poll each until it answers 200; seconds from the first spawn."""
    ips = [f"{DIRECT_NET}{i + 1}" for i in range(count)]
    t0 = time.monotonic()
    with spawned([(HTTP_CMD, {"POD_IP": ip}) for ip in ips]):
        answered: dict[str, float] = {}
        deadline = t0 + READY_TIMEOUT_S
        while len(answered) < count and time.monotonic() < deadline:
            for ip in ips:
                if ip not in answered and get_ok(ip):
                    answered[ip] = time.monotonic() - t0
            time.sleep(0.01)
    assert len(answered) == count, f"only {len(answered)} of {count} direct servers answered"
    return Startup(list(answered.values()))


def direct_sleep(count: int) -> Startup:
    """Spawn ``count`` ``sleep infinity``; Popen returns once each has exec'd (started)."""
    t0 = time.monotonic()
    with spawned([(SLEEP_CMD, {}) for _ in range(count)]) as procs:
        return Startup([at - t0 for _, at in procs])


# -- part 2: idle cost ------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def status_kib(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Usage:
    rss_mean: float  # MiB
    rss_max: float
    cpu: float  # % of one core over the window

    def text(self) -> str:
        return (
            f"RSS {self.rss_mean:.1f} MiB (max {self.rss_max:.1f}), CPU {self.cpu:.2f} % of a core"
        )


def sample(pids: dict[str, int], window: float) -> dict[str, Usage]:
    """RSS once a second and CPU over ``window`` seconds, for each named process."""
    start = {k: cpu_ticks(p) for k, p in pids.items()}
    rss: dict[str, list[int]] = {k: [] for k in pids}
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        for k, p in pids.items():
            rss[k].append(status_kib(p))
        time.sleep(1.0)
    elapsed = time.monotonic() - t0
    out = {}
    for k, p in pids.items():
        end, begin = cpu_ticks(p), start[k]
        cpu = (
            100.0 * (end - begin) / TICKS / elapsed
            if end is not None and begin is not None
            else float("nan")
        )
        out[k] = Usage(sum(rss[k]) / len(rss[k]) / 1024, max(rss[k]) / 1024, cpu)
    return out


@dataclass
class Idle:
    label: str
    usage: dict[str, Usage]
    shims: int
    shim_rss: float  # MiB, summed VmRSS
    shim_pss: float  # MiB, summed Pss (shared pages split between the sharers)
    floor_rss: float  # MiB, the bare interpreter


def idle_cost(server: Server, label: str, window: float) -> Idle:
    with spawned([(FLOOR_CMD, {})]) as floor:
        time.sleep(1.0)  # let the interpreter settle into its sleep
        usage = sample({"agent": server.agent_pid(), "server": server.proc.pid if server.proc else 0},
                       window)  # fmt: skip
        floor_rss = status_kib(floor[0][0].pid) / 1024
    shims = shim_pids(server.data_dir)
    return Idle(label, usage, len(shims), sum(status_kib(p) for p in shims) / 1024,
                sum(pss_kib(p) for p in shims) / 1024, floor_rss)  # fmt: skip


@contextlib.contextmanager
def profiled(directory: Path | None, name: str, pids: dict[str, int]) -> Iterator[None]:
    """With ``--profile DIR``: py-spy records each of ``pids`` to ``DIR/<who>-<name>.txt`` (collapsed stacks)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
                               "-p", str(pid), "-f", "raw", "-o", str(directory / f"{who}-{name}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for who, pid in pids.items()]  # fmt: skip
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of idle sampling")
    parser.add_argument("--probe", choices=["exec", "http"], default="exec",
                        help="the readinessProbe of the idle-with-probes phase")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the agent and server with py-spy into DIR (inflates the figures a little)")  # fmt: skip
    args = parser.parse_args()
    n = args.pods
    print(f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} cpus, {n} pods")
    http_container: dict[str, Any] = {
        "name": "web", "image": "python:3.11", "command": HTTP_CMD, "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    }  # fmt: skip
    sleep_container: dict[str, Any] = {"name": "idle", "image": "busybox", "command": SLEEP_CMD}
    if args.probe == "exec":
        probed = {**sleep_container, "readinessProbe": {"exec": {"command": ["true"]}}}
    else:
        probed = {**http_container, "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}

    ref_http = direct_http(n)
    ref_sleep = direct_sleep(n)
    with running_server() as (server, api):
        pids = {"agent": server.agent_pid(), "server": server.proc.pid if server.proc else 0}
        with profiled(args.profile, "http-ready", pids):
            web = apply_to_ready(api, "web", n, http_container)
        delete_and_wait(server, api, "web")
        with profiled(args.profile, "sleep-ready", pids):
            idle = apply_to_ready(api, "idle", n, sleep_container)
        quiet = idle_cost(server, f"{n} idle pods, no probes", args.window)
        delete_and_wait(server, api, "idle")
        apply_to_ready(api, "probed", n, probed)
        with profiled(args.profile, f"{args.probe}-probes", pids):
            busy = idle_cost(
                server, f"{n} idle pods, {args.probe} readinessProbe every 10 s", args.window
            )

    print(
        "\napply → Ready, per pod, where the time goes (watch arrival - apply returned, p50 / max):"
    )
    for label, s in (("http", web), ("sleep", idle)):
        parts = [f"{st} {percentile(v, 50):.2f}/{max(v):.2f} s" for st, v in s.stages.items() if v]
        print(
            f"  {label:<5}: "
            + ", ".join(parts)
            + f", ready {percentile(s.delays, 50):.2f}/{max(s.delays):.2f} s"
        )

    rows = []
    for label, s, ref in ((f"apply → Ready, {n} HTTP pods (httpGet probe, period 1 s)", web, ref_http),
                          (f"apply → Ready, {n} `sleep infinity` pods (no probe)", idle, ref_sleep)):  # fmt: skip
        rows.append((label, f"{s.text()}; last {max(s.delays):.2f} s",
                     f"{ref.text()}; last {max(ref.delays):.2f} s, direct spawn",
                     "p99 ≤ 1 s (Kubernetes SLO p99 ≤ 5 s)"))  # fmt: skip
        rows.append(("  cross-check: Ready lastTransitionTime - creationTimestamp",
                     s.text(s.own, digits=0), "", "1 s resolution"))  # fmt: skip
    for run in (quiet, busy):
        agent, srv = run.usage["agent"], run.usage["server"]
        rows.append((f"agent, {run.label}, {args.window:.0f} s", agent.text(),
                     f"bare python3 asyncio.sleep: RSS {run.floor_rss:.1f} MiB",
                     "≤ 100 MiB, ≤ 2 % of a core"))  # fmt: skip
        rows.append(("  server, same window", srv.text(), "", ""))
        rows.append((f"  {run.shims} shims, total", f"RSS {run.shim_rss:.1f} MiB (PSS {run.shim_pss:.1f} MiB), "
                     f"{run.shim_rss / max(1, run.shims):.1f} MiB RSS each", "", ""))  # fmt: skip
    print("\n| benchmark | meshwork | reference (same run) | aim |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
