"""Mesh config propagation: from a write returning to the new route in effect at 50 sidecars.

A server with its agent runs 50 ``sleep infinity`` pods in a namespace with
``istio-injection=enabled``, so each has its ``istio-proxy`` sidecar on
``$POD_IP:15001``. The route under test is a VirtualService for a host that
is no Service (``bench.example``) whose one http route aborts with a status
that changes every round (460, 461, ...). This bench keeps one keep-alive
connection to every sidecar and sends ``GET http://bench.example/`` through
each, back to back; "in effect" at a sidecar means a real request through it
got the new status.

1. **API write, sidecars polled** (the headline): a merge PATCH of the
   VirtualService; each sidecar's delay is (first answer with the new
   status) - (the PATCH response read). p50, p99 and max over rounds x
   sidecars, and each round's last sidecar. A config stream of the bench's
   own (one more proxy in the namespace, the last the server writes to)
   splits that into the server's push and the sidecars' part.
2. **API write, sidecars idle** (no polling): the write to the last snapshot
   out and to every proxy's ACK (``/convergence``), and what one change
   costs, from ``/proc/*/task/*/schedstat``: seconds on a CPU, seconds
   runnable but waiting for one, and preemptions, for the server and for the
   sidecars together.
3. **``meshwork apply``** as a subprocess (what a user sees, including its
   convergence wait): each sidecar's first new answer relative to the
   process exit (negative: in effect before ``apply`` returned), its wall
   time, and the ``converged in N ms`` figure it printed.

Reference measured in the same run, under the same load: the API server's
own watch delivery (a plain ``?watch=1`` on virtualservices, read in the same
event loop as the sidecars' answers), from the write's return to the event's
arrival: the floor any push can reach. Istio's documented floor is its push
debounce, ``PILOT_DEBOUNCE_AFTER`` = 100 ms of quiet before a push (not
measured here). Aim: p99 ≤ 50 ms.

Run: ``make bench`` (all benches) or ``.venv/bin/python -m bench.mesh_bench``
(about 40 s; ``--rounds``, ``--applies``, ``--pods``; ``--pause MS`` spaces
each sidecar's requests; ``--profile DIR`` records the server and two
sidecars with py-spy at 1 kHz during the polled rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.agent_bench import Api, Server, cmdline, is_ready, running_server, wait_for
from bench.loadgen import percentile

NAMESPACE = "bench"
NODE = "node-1"
HOST = "bench.example"
VS_NAME = "bench"
VS_PATH = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices"
PROXIES = "/apis/mesh.meshwork.io/v1/proxies"
FIRST_STATUS = 460  # fault.abort statuses: 460 first, then one more per round (unassigned codes)
OUTBOUND_PORT = 15001
STARTUP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 150.0
ROUND_TIMEOUT_S = 20.0  # a round whose change never reaches every sidecar fails the bench
ISTIO_DEBOUNCE_MS = 100  # PILOT_DEBOUNCE_AFTER's default (Istio docs, pilot-discovery env vars)
PROFILE_RATE_HZ = (
    1000  # a round's push is tens of ms: py-spy's default 100 Hz would see a few samples
)
REQUEST = f"GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


# -- the server with its agent ------------------------------------------------------------


def abort_http(status: int) -> list[dict[str, Any]]:
    """The VirtualService's http routes: abort every request with ``status``."""
    return [{"fault": {"abort": {"httpStatus": status, "percentage": {"value": 100}}},
             "route": [{"destination": {"host": HOST}}]}]  # fmt: skip


def virtual_service(status: int) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": VS_NAME, "namespace": NAMESPACE},
            "spec": {"hosts": [HOST], "http": abort_http(status)}}  # fmt: skip


def setup_mesh(api: Api, pods: int) -> list[str]:
    """The injected namespace, ``pods`` sleeping pods with sidecars, the route; their pod IPs."""
    status, body = api.call("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
    assert status == 201, body
    status, body = api.call("POST", f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices",
                            virtual_service(FIRST_STATUS))  # fmt: skip
    assert status == 201, body
    status, body = api.call("POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sleep"},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "sleep"}},
                 "template": {"metadata": {"labels": {"app": "sleep"}}, "spec": {"containers": [
                     {"name": "sleep", "image": "busybox", "command": ["sleep", "infinity"]}]}}}})  # fmt: skip
    assert status == 201, body

    def meshed() -> list[str] | None:
        code, listed = api.call(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app=sleep"
        )
        if code != 200:
            return None
        ready = [p for p in listed["items"] if is_ready(p) and p["status"].get("podIP")
                 and len(p["status"].get("initContainerStatuses") or []) == 1]  # fmt: skip
        return [p["status"]["podIP"] for p in ready] if len(ready) == pods else None

    ips: list[str] = wait_for(
        meshed, READY_TIMEOUT_S, f"{pods} Ready pods (2/2) with their sidecar"
    )
    wait_for(lambda: synced(api) >= pods, READY_TIMEOUT_S, f"{pods} SYNCED sidecars")
    return ips


def synced(api: Api) -> int:
    code, listed = api.call("GET", PROXIES)
    if code != 200:
        return 0
    return sum(
        1 for p in listed["items"] if p["namespace"] == NAMESPACE and p["status"] == "SYNCED"
    )


def sidecar_pids(data_dir: Path) -> list[int]:
    """This data dir's sidecar processes: ``meshwork sidecar`` under one of its pods' shims."""
    marker = f"meshwork-pod:{data_dir}"
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or cmdline(entry.name)[2:4] != ["meshwork", "sidecar"]:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if any(a.startswith(marker) for a in cmdline(ppid)):
                out.append(int(entry.name))
    return sorted(out)


@dataclass(frozen=True)
class Sched:
    """The scheduler's account of some processes (all their threads), from ``/proc/*/schedstat``."""

    run: float = 0.0  # seconds on a CPU
    wait: float = 0.0  # seconds runnable but waiting for a CPU
    preempted: int = 0  # involuntary context switches

    def __sub__(self, other: Sched) -> Sched:
        return Sched(self.run - other.run, self.wait - other.wait, self.preempted - other.preempted)

    def per(self, n: int) -> Sched:
        return Sched(self.run / n, self.wait / n, round(self.preempted / n))


def sched(pids: list[int]) -> Sched:
    run = wait = preempted = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = (task / "schedstat").read_text().split()
                    run, wait = run + int(fields[0]), wait + int(fields[1])
                    for line in (task / "status").read_text().splitlines():
                        if line.startswith("nonvoluntary_ctxt_switches:"):
                            preempted += int(line.split()[1])
    return Sched(run / 1e9, wait / 1e9, preempted)


# -- a tiny asyncio HTTP/1.1 client --------------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(b" ", 2)[1]), headers


async def read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = b""
        while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    length = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(length) if length else b""


class AsyncApi:
    """The API on one keep-alive connection in the bench's event loop."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        data = b"" if body is None else json.dumps(body).encode()
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                          f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)  # fmt: skip
        status, headers = await read_head(self.reader)
        payload = await read_body(self.reader, headers)
        return status, json.loads(payload) if payload else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class VsWatch:
    """``?watch=1`` on the namespace's virtualservices: when each resourceVersion arrived here."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {VS_PATH}?watch=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {self.token}\r\n\r\n".encode())  # fmt: skip
        status, headers = await read_head(reader)
        assert status == 200, status
        assert b"chunked" in headers.get(b"transfer-encoding", b"").lower(), headers
        self.writer = writer
        self.task = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
            chunk = (await reader.readexactly(size + 2))[:-2]
            stamp = time.monotonic()
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    event = json.loads(line)
                    self.arrived.setdefault(event["object"]["metadata"]["resourceVersion"], stamp)
                    self.changed.set()

    async def arrival(self, rv: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while rv not in self.arrived:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
        return self.arrived[rv]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.writer.close()


class ConfigProbe:
    """A config stream of our own, as one more sidecar in the namespace would open it.

    It is the last proxy the server knows of, so its snapshot leaves after
    every real sidecar's: its arrival is when the server finished pushing.
    It ACKs like a sidecar, and is closed before the ``meshwork apply``
    rounds so that it never counts in their convergence.
    """

    ident = f"sidecar~127.250.0.1~bench-probe.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.arrived: list[tuple[int, float, int]] = []  # (version, arrival, bytes)
        self.changed = asyncio.Event()
        self.acks = AsyncApi(port, token)
        self.task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return f"{PROXIES}/{quote(self.ident, safe='')}"

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {self.path}/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {self.token}\r\n\r\n".encode())  # fmt: skip
        status, _ = await read_head(reader)
        assert status == 200, status
        self.writer = writer
        self.task = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
            pending += (await reader.readexactly(size + 2))[:-2]
            stamp = time.monotonic()
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                version = str(json.loads(line)["version"])
                self.arrived.append((int(version), stamp, len(line)))
                self.changed.set()
                await self.acks.call("POST", f"{self.path}/ack", {"version": version, "error": None},
                                     "application/json")  # fmt: skip

    async def arrival(self, revision: int, timeout: float) -> tuple[float, int]:
        """When the first snapshot built at ``revision`` or later arrived, and its size."""
        deadline = time.monotonic() + timeout
        while True:
            for version, stamp, size in self.arrived:
                if version >= revision:
                    return stamp, size
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
            self.writer.close()
        self.acks.close()


# -- the sidecars' answers -----------------------------------------------------------------


@dataclass
class Pollers:
    """One keep-alive connection per sidecar, each sending the request back to back."""

    ips: list[str]
    pause: float = 0.0
    target: int = 0
    first: list[float | None] = field(default_factory=list)
    seen: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    running: asyncio.Event = field(
        default_factory=asyncio.Event
    )  # cleared: every poller holds still

    def expect(self, status: int) -> None:
        """From now on, note when each sidecar first answers ``status``."""
        self.target = status
        self.first = [None] * len(self.ips)
        self.seen = 0
        self.done = asyncio.Event()

    async def start(self) -> None:
        self.first = [None] * len(self.ips)
        self.running.set()
        for i, ip in enumerate(self.ips):
            reader, writer = await asyncio.open_connection(ip, OUTBOUND_PORT)
            self.tasks.append(asyncio.create_task(self._poll(i, reader, writer)))

    async def _poll(
        self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                await self.running.wait()
                writer.write(REQUEST)
                status, headers = await read_head(reader)
                await read_body(reader, headers)
                stamp = time.monotonic()
                self.requests += 1
                if status == self.target and self.first[i] is None:
                    self.first[i] = stamp
                    self.seen += 1
                    if self.seen == len(self.ips):
                        self.done.set()
                if headers.get(b"connection", b"").lower() == b"close":
                    writer.close()
                    reader, writer = await asyncio.open_connection(self.ips[i], OUTBOUND_PORT)
                if self.pause:
                    await asyncio.sleep(self.pause)
        finally:
            writer.close()

    async def wait(self, timeout: float) -> list[float]:
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            missing = [self.ips[i] for i, t in enumerate(self.first) if t is None]
            raise RuntimeError(
                f"status {self.target} never reached {len(missing)} sidecars: {missing[:5]}"
            ) from None
        return [t for t in self.first if t is not None]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.contextmanager
def profiled(directory: Path | None, pids: dict[str, int], rate: int) -> Iterator[None]:
    """With ``--profile DIR``: py-spy records each of ``pids`` to ``DIR/<who>.txt`` (collapsed stacks)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--idle",
                               "-r", str(rate), "-p", str(pid), "-f", "raw", "-o", str(directory / f"{who}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for who, pid in pids.items()]  # fmt: skip
    try:
        time.sleep(1.0)  # py-spy attaches
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


# -- the rounds ------------------------------------------------------------------------------


@dataclass
class Round:
    delays: list[float]  # per sidecar, seconds after the write returned (or apply exited)
    watch: float | None = None  # the watch event's arrival after the write returned
    pushed: float | None = None  # the probe's (last) snapshot's arrival after the write returned
    size: int = 0  # that snapshot's bytes
    apply_wall: float | None = None  # meshwork apply's wall time
    converged: str | None = None  # what apply printed
    before_exit: float | None = (
        None  # apply: last sidecar relative to the watch event (~ the write)
    )


async def api_round(
    api: AsyncApi, watch: VsWatch, probe: ConfigProbe, pollers: Pollers, status: int
) -> Round:
    pollers.expect(status)
    code, body = await api.call("PATCH", f"{VS_PATH}/{VS_NAME}", {"spec": {"http": abort_http(status)}},
                                "application/merge-patch+json")  # fmt: skip
    t0 = time.monotonic()
    assert code == 200, body
    firsts = await pollers.wait(ROUND_TIMEOUT_S)
    rv = body["metadata"]["resourceVersion"]
    arrived = await watch.arrival(rv, ROUND_TIMEOUT_S)
    pushed, size = await probe.arrival(int(rv), ROUND_TIMEOUT_S)
    return Round([t - t0 for t in firsts], watch=arrived - t0, pushed=pushed - t0, size=size)


async def apply_round(
    server: Server, watch: VsWatch, pollers: Pollers, status: int, manifest: Path
) -> Round:
    pollers.expect(status)
    manifest.write_text(json.dumps(virtual_service(status)))
    before = set(watch.arrived)
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshwork", "apply", "-f", str(manifest),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=server.env,
    )  # fmt: skip
    out, err = await proc.communicate()
    t_exit = time.monotonic()
    assert proc.returncode == 0, err.decode()
    firsts = await pollers.wait(ROUND_TIMEOUT_S)
    figure = re.search(r"converged in .*", out.decode())
    new = [watch.arrived[rv] for rv in set(watch.arrived) - before]
    return Round([t - t_exit for t in firsts], apply_wall=t_exit - start,
                 converged=figure.group(0) if figure else out.decode().strip() or err.decode().strip(),
                 before_exit=max(firsts) - min(new) if new else None)  # fmt: skip


@dataclass
class Results:
    api_rounds: list[Round] = field(default_factory=list)
    apply_rounds: list[Round] = field(default_factory=list)
    quiet_pushed: list[float] = field(
        default_factory=list
    )  # no polling: write -> last snapshot out
    quiet_converged: list[float] = field(
        default_factory=list
    )  # no polling: write -> every proxy ACKed
    idle: dict[str, Sched] = field(default_factory=dict)  # per second, nothing changing, no polling
    cost: dict[str, Sched] = field(default_factory=dict)  # per change, no polling, idle subtracted
    requests: int = 0
    rate: float = 0.0  # requests/s through the sidecars during the API rounds


async def quiet_round(api: AsyncApi, probe: ConfigProbe, status: int) -> tuple[float, float]:
    """With the sidecars idle: the write, its last snapshot out, and every proxy's ACK."""
    code, body = await api.call("PATCH", f"{VS_PATH}/{VS_NAME}", {"spec": {"http": abort_http(status)}},
                                "application/merge-patch+json")  # fmt: skip
    t0 = time.monotonic()
    assert code == 200, body
    rv = body["metadata"]["resourceVersion"]
    pushed, _ = await probe.arrival(int(rv), ROUND_TIMEOUT_S)
    code, report = await api.call(
        "GET", f"/apis/mesh.meshwork.io/v1/convergence?after={rv}&timeoutSeconds={ROUND_TIMEOUT_S:g}",
        None, "application/json")  # fmt: skip
    converged = time.monotonic()
    assert code == 200 and report["converged"] == report["total"], report
    return pushed - t0, converged - t0


async def measure(server: Server, ips: list[str], rounds: int, applies: int, pause: float,
                  profile: Path | None) -> Results:  # fmt: skip
    api = AsyncApi(server.port, server.token)
    watch = VsWatch(server.port, server.token)
    pollers = Pollers(ips, pause)
    probe = ConfigProbe(server.port, server.token)
    await watch.start()
    await pollers.start()
    await probe.start()
    manifest = server.data_dir / "bench-vs.json"
    out = Results()
    sidecars = sidecar_pids(server.data_dir)
    server_pid = server.proc.pid if server.proc else 0
    try:
        pollers.expect(FIRST_STATUS)
        await pollers.wait(ROUND_TIMEOUT_S)  # every sidecar answers the starting route
        status = FIRST_STATUS

        # No data-plane load: the push alone, and its CPU cost beside an idle window as long.
        pollers.running.clear()
        await asyncio.sleep(0.2)
        groups = {"server": [server_pid], "sidecars": sidecars}
        before = {k: sched(v) for k, v in groups.items()}
        await asyncio.sleep(1.0)
        base = {k: sched(v) for k, v in groups.items()}
        for _ in range(rounds):
            status += 1
            pushed, converged = await quiet_round(api, probe, status)
            out.quiet_pushed.append(pushed)
            out.quiet_converged.append(converged)
        end = {k: sched(v) for k, v in groups.items()}
        for k in groups:
            out.idle[k] = base[k] - before[k]
            out.cost[k] = (end[k] - base[k]).per(rounds)

        # Under the pollers' load: when each sidecar answers with the new route.
        pollers.expect(status)
        pollers.running.set()
        await pollers.wait(ROUND_TIMEOUT_S)
        await asyncio.sleep(0.2)
        pids = {"server": server_pid, **{f"sidecar-{i}": pid for i, pid in enumerate(sidecars[:2])}}
        count0, t_start = pollers.requests, time.monotonic()
        with profiled(profile, pids, PROFILE_RATE_HZ):
            for _ in range(rounds):
                status += 1
                out.api_rounds.append(await api_round(api, watch, probe, pollers, status))
                await asyncio.sleep(0.05)
        out.rate = (pollers.requests - count0) / (time.monotonic() - t_start)
        await probe.close()  # not a real proxy: it must not count in apply's convergence
        for _ in range(applies):
            status += 1
            out.apply_rounds.append(await apply_round(server, watch, pollers, status, manifest))
            await asyncio.sleep(0.05)
    finally:
        await probe.close()
        await pollers.stop()
        await watch.close()
        api.close()
    out.requests = pollers.requests
    return out


def sched_text(s: Sched) -> str:
    return f"{ms(s.run)} / {ms(s.wait)} / {s.preempted}"


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def dist(values: list[float]) -> str:
    return (
        f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}, max {ms(max(values))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=10, help="API-write rounds (quiet and loaded)"
    )
    parser.add_argument("--applies", type=int, default=3, help="`meshwork apply` rounds")
    parser.add_argument("--pause", type=float, default=0.0, metavar="MS",
                        help="pause between one sidecar's requests (default: back to back)")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the server and two sidecars with py-spy into DIR "
                             "during the loaded API rounds")  # fmt: skip
    args = parser.parse_args()
    n = args.pods
    print(f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}, {n} sidecars")  # fmt: skip
    started = time.monotonic()
    with running_server("bench-mesh-") as (server, api):
        ips = setup_mesh(api, n)
        setup_s = time.monotonic() - started
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        res: Results = runner(
            measure(server, ips, args.rounds, args.applies, args.pause / 1000, args.profile)
        )
    total_s = time.monotonic() - started
    print(f"setup (server, {n} pods Ready 2/2, {n} SYNCED) {setup_s:.1f} s; whole run {total_s:.1f} s; "
          f"{res.requests} requests through the sidecars ({res.rate:.0f}/s during the loaded rounds); "
          f"load average now {os.getloadavg()[0]:.1f}")  # fmt: skip

    api_rounds, apply_rounds = res.api_rounds, res.apply_rounds
    print("\nper loaded round, after the write returned: "
          "last sidecar in effect / server's last snapshot out / watch event")  # fmt: skip
    for r in api_rounds:
        print(f"  {ms(max(r.delays))} / {ms(r.pushed or 0)} / {ms(r.watch or 0)}")
    print(f"snapshot size: {api_rounds[0].size} bytes")
    if apply_rounds:
        print("per `meshwork apply`: wall time; last sidecar after exit; "
              "last sidecar after the watch event; printed")  # fmt: skip
        for r in apply_rounds:
            print(f"  {ms(r.apply_wall or 0)}; {ms(max(r.delays))}; "
                  f"{ms(r.before_exit) if r.before_exit is not None else '-'}; {r.converged}")  # fmt: skip

    samples = [d for r in api_rounds for d in r.delays]
    lasts = [max(r.delays) for r in api_rounds]
    watch = [r.watch for r in api_rounds if r.watch is not None]
    pushed = [r.pushed for r in api_rounds if r.pushed is not None]
    # Per sidecar: from the server's last snapshot out to in effect there.
    after_push = [d - (r.pushed or 0) for r in api_rounds for d in r.delays]
    cost, idle = res.cost, res.idle
    rows = [
        (f"API write → new route in effect, {n} sidecars x {len(api_rounds)} rounds "
         f"(each sidecar polled back to back)", dist(samples),
         f"watch delivery of the same write: {dist(watch)}", "p99 ≤ 50 ms"),
        ("  last sidecar of each round", dist(lasts),
         f"Istio: ≥ {ISTIO_DEBOUNCE_MS} ms debounce before any push (documented)", ""),
        ("  write → the server's last snapshot out (probe stream)", dist(pushed), "", ""),
        ("  that → in effect, per sidecar (negative: before the last was out)", dist(after_push), "", ""),
        (f"no data-plane load, {len(res.quiet_pushed)} rounds: write → last snapshot out",
         dist(res.quiet_pushed), "", ""),
        ("  write → every proxy ACKed (convergence)", dist(res.quiet_converged), "", ""),
        ("  per change: on CPU / waiting for a CPU / preemptions",
         f"server {sched_text(cost['server'])}; {n} sidecars together {sched_text(cost['sidecars'])}",
         f"{os.cpu_count()} cores; idle, per second: server {sched_text(idle['server'])}, "
         f"sidecars {sched_text(idle['sidecars'])}", ""),
    ]  # fmt: skip
    if apply_rounds:
        after_exit = [d for r in apply_rounds for d in r.delays]
        rows.append((f"`meshwork apply` exit → in effect, {n} x {len(apply_rounds)} "
                     "(negative: before exit)", dist(after_exit), "",
                     "≤ 0 (apply waits for convergence)"))  # fmt: skip
        rows.append(("  `meshwork apply` wall time", dist([r.apply_wall or 0 for r in apply_rounds]),
                     "", ""))  # fmt: skip
        rows.append(("  `meshwork apply` printed", "; ".join(r.converged or "-" for r in apply_rounds),
                     "", ""))  # fmt: skip
    print("\n| benchmark | meshwork | reference (same run) | aim |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
