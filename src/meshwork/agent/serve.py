"""The agent's own HTTP endpoint (the kubelet's port): logs, exec and usage of its pods.

The API server proxies ``pods/{name}/log`` and ``pods/{name}/exec`` here;
``meshwork top`` reads ``/stats/summary`` through it too. The endpoint
binds the node's address, requires the node's bearer token, and serves:

* ``GET /containerLogs/{ns}/{pod}/{container}`` with ``follow``,
  ``previous``, ``tailLines``, ``sinceSeconds``, ``timestamps``;
* ``POST /exec/{ns}/{pod}/{container}?command=...`` (repeated): runs the
  command in the container's environment and working dir and streams
  newline-delimited JSON frames ``{"stdout"|"stderr": text}``, then
  ``{"exitCode": n}``;
* ``GET /stats/summary``: CPU seconds and memory of each pod's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from meshwork.agent import logs
from meshwork.httpd import HttpServer, Request, Response, StreamingResponse

if TYPE_CHECKING:
    from meshwork.agent.node import Agent
    from meshwork.agent.worker import PodWorker, Run

EXEC_TIMEOUT_S = 3600.0


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode())


def _error(status: int, message: str) -> Response:
    return _json(status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                          "code": status})  # fmt: skip


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (_first(query, name) or "").lower() in ("1", "true", "yes")


class AgentEndpoint:
    def __init__(self, agent: Agent, token: str) -> None:
        self.agent = agent
        self.token = token
        self.http = HttpServer(self.handle, max_body=64 * 1024)
        self.port = 0

    async def start(self, host: str, port: int = 0) -> None:
        await self.http.start(host, port)
        self.port = self.http.port

    async def close(self) -> None:
        await self.http.close(1.0)

    def _find(self, ns: str, pod: str, container: str | None) -> tuple[PodWorker, Run] | Response:
        for worker in self.agent.workers.values():
            if worker.ns == ns and worker.name == pod:
                if container is None:
                    regular = [r for r in worker.runs.values() if r.kind == "regular"]
                    if len(regular) != 1:
                        names = " ".join(worker.runs)
                        return _error(400, f"a container name must be specified for pod {pod}, choose one of: [{names}]")
                    return worker, regular[0]
                run = worker.runs.get(container)
                if run is None:
                    return _error(400, f"container {container} is not valid for pod {pod}")
                return worker, run
        return _error(404, f'pod "{pod}" not found on node {self.agent.name}')

    async def handle(self, req: Request) -> Response | StreamingResponse:
        header = req.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            return _error(401, "Unauthorized: a valid bearer token is required")
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        if req.method == "GET" and parts[:1] == ["containerLogs"] and len(parts) in (3, 4):
            return self._logs(req, parts[1], parts[2], parts[3] if len(parts) == 4 else None)
        if req.method == "POST" and parts[:1] == ["exec"] and len(parts) in (3, 4):
            return await self._exec(req, parts[1], parts[2], parts[3] if len(parts) == 4 else None)
        if req.method == "GET" and parts == ["stats", "summary"]:
            return _json(200, await self._summary())
        return _error(404, f"{req.method} {req.path}: no such endpoint on the agent")

    # -- logs -----------------------------------------------------------------------

    def _logs(self, req: Request, ns: str, pod: str, container: str | None) -> Response | StreamingResponse:
        found = self._find(ns, pod, container)
        if isinstance(found, Response):
            return found
        worker, run = found
        q = req.query
        count = worker.tracker.restart_count(run.spec.name)
        if _flag(q, "previous"):
            if count == 0:
                return _error(400, f'previous terminated container "{run.spec.name}" in pod "{pod}" not found')
            count -= 1
        directory = worker.log_dir / run.spec.name
        try:
            tail = int(_first(q, "tailLines") or -1)
            since_s = _first(q, "sinceSeconds")
            since = time.time() - float(since_s) if since_s else None
        except ValueError:
            return _error(400, "tailLines and sinceSeconds must be numbers")
        stamps = _flag(q, "timestamps")
        tail_opt = tail if tail >= 0 else None
        if not _flag(q, "follow") or not run.running or _flag(q, "previous"):
            body = b"".join(logs.read_lines(directory, count, tail=tail_opt, since=since, timestamps=stamps))
            return Response(200, body, content_type="text/plain")

        stop = asyncio.Event()
        proc = run.proc

        async def chunks() -> AsyncIterator[bytes]:
            async def watch_exit() -> None:
                if proc is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(proc.exited)
                await asyncio.sleep(0.3)  # the pump's last bytes reach the file
                stop.set()

            watcher = asyncio.create_task(watch_exit())
            try:
                async for line in logs.follow(directory, count, stop, tail=tail_opt, since=since, timestamps=stamps):
                    yield line
            finally:
                watcher.cancel()

        return StreamingResponse(200, chunks(), content_type="text/plain")

    # -- exec -------------------------------------------------------------------------

    async def _exec(self, req: Request, ns: str, pod: str, container: str | None) -> Response | StreamingResponse:
        found = self._find(ns, pod, container)
        if isinstance(found, Response):
            return found
        _, run = found
        command = req.query.get("command") or []
        if not command:
            return _error(400, "give the command to run: ?command=ARG (repeated)")
        if not run.running:
            return _error(400, f"container {run.spec.name} is not running; exec needs a running container")
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=run.env, cwd=run.cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return _json(200, {"stderr": f"exec failed: {exc}\n", "exitCode": 126})

        async def frames() -> AsyncIterator[bytes]:
            queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()

            async def pump(name: str, stream: asyncio.StreamReader | None) -> None:
                if stream is not None:
                    while chunk := await stream.read(64 * 1024):
                        await queue.put((name, chunk))
                await queue.put(None)

            readers = [asyncio.create_task(pump("stdout", proc.stdout)),
                       asyncio.create_task(pump("stderr", proc.stderr))]  # fmt: skip
            open_streams = 2
            try:
                while open_streams:
                    item = await queue.get()
                    if item is None:
                        open_streams -= 1
                        continue
                    name, data = item
                    yield json.dumps({name: data.decode(errors="replace")}).encode() + b"\n"
                code = await asyncio.wait_for(proc.wait(), EXEC_TIMEOUT_S)
                yield json.dumps({"exitCode": code if code >= 0 else 128 - code}).encode() + b"\n"
            finally:
                for r in readers:
                    r.cancel()
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()

        return StreamingResponse(200, frames(), content_type="application/json")

    # -- usage ---------------------------------------------------------------------------

    async def _summary(self) -> dict[str, Any]:
        groups: dict[int, tuple[PodWorker, Run]] = {}
        for worker in self.agent.workers.values():
            for run in worker.runs.values():
                if run.running and run.proc is not None:
                    groups[run.proc.pid] = (worker, run)
        from meshwork.agent.limits import group_usage

        usage = await asyncio.to_thread(group_usage, set(groups))
        pods: dict[str, dict[str, Any]] = {}
        for pgid, (worker, run) in groups.items():
            u = usage.get(pgid)
            if u is None:
                continue
            entry = pods.setdefault(worker.uid, {"podRef": {"name": worker.name, "namespace": worker.ns,
                                                            "uid": worker.uid}, "containers": []})  # fmt: skip
            entry["containers"].append({"name": run.spec.name, "cpuSeconds": u.cpu_seconds,
                                        "memoryBytes": u.rss_bytes})  # fmt: skip
        node: dict[str, Any] = {"nodeName": self.agent.name, "time": time.time()}
        node.update(_node_usage())
        return {"node": node, "pods": list(pods.values())}


def _node_usage() -> dict[str, Any]:
    """CPU seconds busy since boot (all cores) and memory in use, for ``top nodes``."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = open("/proc/stat").readline().split()[1:]
        ticks = [int(f) for f in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        out["cpuSeconds"] = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError, ValueError):
        info = {}
        for line in open("/proc/meminfo"):
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
        out["memoryBytes"] = info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))
    return out
