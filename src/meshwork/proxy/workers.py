"""A gateway in several processes: N workers share its ports, one supervisor talks to the control plane.

What lives here: ``run_gateway`` (forks the workers, then runs the
supervisor), ``Supervisor`` (the pod's one config stream, its ACKs and its
admin port :15020) and the worker side of the link between them.

Why one stream fanned out rather than a stream per worker: the control plane
counts ACKs per proxy id, and ``meshwork proxy-status`` shows one line per
proxy. The supervisor holds the pod's single stream under the pod's proxy id,
passes every snapshot to every worker, and ACKs a version only once every
worker has applied it (a NACK carries the workers' errors). So SYNCED means
"every worker routes with it", and the pod is one proxy, as it is one pod.

The admin port is the supervisor's: ``/stats/prometheus`` merges the workers'
series (every series is a counter or a histogram, so merging is a sum per
series line), ``/stats`` lists each worker's summary, ``/debug/spans`` joins
their span buffers, and ``/healthz/ready`` passes once every worker applied a
first config.

Processes: the workers are forked before any event loop runs and stay in the
supervisor's process group (the node agent stops a pod by its group); each
gets SIGTERM if the supervisor dies (PR_SET_PDEATHSIG). When a worker exits on
its own, the supervisor stops the others and exits 1, so the pod restarts
whole instead of serving on fewer workers unnoticed.

Link framing (a socketpair per worker): 4-byte big-endian length, 1-byte
kind, payload. The supervisor asks, the worker answers, one exchange at a time.

What must not live here: the proxy itself (``proxy.sidecar``, ``proxy.server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
from dataclasses import replace
from typing import Any

from meshwork.httpd import Request, Response
from meshwork.proxy.admin import ADMIN_PORT, AdminServer
from meshwork.proxy.sidecar import Sidecar, SidecarOptions
from meshwork.proxy.telemetry import CONTENT_TYPE, MeshMetrics

__all__ = ["MAX_WORKERS", "Supervisor", "default_workers", "merge_prometheus", "run_gateway"]

log = logging.getLogger("meshwork.proxy")

# The default worker count is the cores this process may use, at most this many:
# beyond 4 a Python gateway's memory grows faster than its throughput.
MAX_WORKERS = 4
# How often the supervisor looks for a worker that died.
REAP_SECONDS = 0.5
# A worker still running this long after SIGTERM is killed (the proxies' grace is 2 s).
STOP_GRACE_S = 5.0

_FRAME = struct.Struct("!IB")
CONFIG, METRICS, SUMMARY, SPANS, REPLY = b"C"[0], b"M"[0], b"S"[0], b"T"[0], b"R"[0]


def default_workers(role: str) -> int:
    """A gateway's default: the usable cores, capped at ``MAX_WORKERS``; a sidecar's: 1."""
    if role != "gateway":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    length, kind = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return kind, await reader.readexactly(length)


def _write_frame(writer: asyncio.StreamWriter, kind: int, payload: bytes) -> None:
    writer.write(_FRAME.pack(len(payload), kind) + payload)


class _Link:
    """The supervisor's end of one worker's socketpair."""

    def __init__(self, index: int, pid: int, sock: socket.socket) -> None:
        self.index, self.pid, self.sock = index, pid, sock
        self.lock = asyncio.Lock()
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ask(self, kind: int, payload: bytes = b"") -> bytes:
        async with self.lock:
            if self._stream is None:
                self._stream = await asyncio.open_connection(sock=self.sock)
            reader, writer = self._stream
            _write_frame(writer, kind, payload)
            await writer.drain()
            got, answer = await _read_frame(reader)
            if got != REPLY:
                raise ConnectionError(f"gateway worker {self.index} answered frame kind {got}")
            return answer


def merge_prometheus(texts: list[str]) -> str:
    """Sum the same series over several expositions (counters and histograms only).

    Families keep the order in which they first appear, and series within a family too.
    """
    families: dict[str, tuple[list[str], dict[str, float]]] = {}
    current: tuple[list[str], dict[str, float]] | None = None
    for text in texts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP "):
                name = line.split(" ", 3)[2]
                current = families.get(name)
                if current is None:
                    current = families[name] = ([line], {})
                continue
            if line.startswith("#"):
                if current is not None and line not in current[0]:
                    current[0].append(line)
                continue
            key, _, value = line.rpartition(" ")
            if current is None:
                current = families.setdefault("", ([], {}))
            series = current[1]
            series[key] = series.get(key, 0.0) + float(value)
    out: list[str] = []
    for comments, series in families.values():
        out.extend(c + "\n" for c in comments)
        out.extend(f"{key} {_num(value)}\n" for key, value in series.items())
    return "".join(out)


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class _MergedAdmin(AdminServer):
    """The supervisor's :15020: the workers' metrics and spans, merged on each scrape."""

    def __init__(self, links: list[_Link]) -> None:
        super().__init__(MeshMetrics())
        self.links = links

    async def _gather(self, kind: int) -> list[bytes]:
        return list(await asyncio.gather(*(link.ask(kind) for link in self.links)))

    async def handle(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            try:
                if request.path == "/stats/prometheus":
                    texts = [t.decode() for t in await self._gather(METRICS)]
                    return Response(200, merge_prometheus(texts).encode(), content_type=CONTENT_TYPE)
                if request.path == "/stats":
                    parts = [f"worker {i}:\n".encode() + text for i, text in enumerate(await self._gather(SUMMARY))]
                    return Response(200, b"".join(parts), content_type="text/plain; charset=utf-8")
                if request.path == "/debug/spans":
                    spans = [s for text in await self._gather(SPANS) for s in json.loads(text)["spans"]]
                    return Response(200, json.dumps({"spans": spans}).encode())
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                return Response(503, f"a gateway worker did not answer: {exc}\n".encode(),
                                content_type="text/plain; charset=utf-8")  # fmt: skip
        return await super().handle(request)


class Supervisor(Sidecar):
    """The pod's config stream and ACKs for its workers; it serves no traffic itself."""

    def __init__(self, options: SidecarOptions, links: list[_Link]) -> None:
        super().__init__(replace(options, access_log=None))
        self.links = links
        self.admin = _MergedAdmin(links)

    async def apply(self, raw: dict[str, Any]) -> str | None:
        """Every worker applies ``raw``; the version counts as applied only when all did."""
        version = str(raw.get("version", ""))
        payload = json.dumps(raw, separators=(",", ":")).encode()
        replies = [json.loads(r) for r in await asyncio.gather(*(link.ask(CONFIG, payload) for link in self.links))]
        errors: list[str] = []
        for reply in replies:
            if reply.get("error") and reply["error"] not in errors:
                errors.append(str(reply["error"]))
        if all(str(reply.get("version")) == version for reply in replies):
            self.version = version
            self.applied.set()
            self.admin.mark_ready()
        return "; ".join(errors) or None

    async def run(self, stop: asyncio.Event, feed: Any = None) -> None:
        if self.options.admin_host is not None:
            await self.admin.start(self.options.admin_host, ADMIN_PORT)
        await self.follow_stream(stop)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.admin.close()


async def _serve_link(sidecar: Sidecar, sock: socket.socket, stop: asyncio.Event) -> None:
    """A worker: answer the supervisor until it goes away (then stop)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while True:
            try:
                kind, payload = await _read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind == CONFIG:
                raw = json.loads(payload)
                error = await sidecar.apply(raw)
                sidecar.last_error = error
                if error is not None:
                    log.warning("proxy %s (worker %d): rejected config %s: %s", sidecar.options.proxy_id,
                                os.getpid(), raw.get("version"), error)  # fmt: skip
                answer = json.dumps({"version": sidecar.version, "error": error}).encode()
            elif kind == METRICS:
                answer = sidecar.metrics.render().encode()
            elif kind == SUMMARY:
                answer = sidecar.metrics.summary().encode()
            elif kind == SPANS:
                answer = json.dumps({"spans": [s.to_otlp() for s in sidecar.tracing.tracer.spans]}).encode()
            else:
                return
            _write_frame(writer, REPLY, answer)
            await writer.drain()
    finally:
        stop.set()
        writer.close()


async def _until_stopped(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _worker_main(options: SidecarOptions, sock: socket.socket) -> None:
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        await _until_stopped(stop)
        sidecar = Sidecar(replace(options, admin_host=None, reuse_port=True))
        runner = asyncio.create_task(sidecar.run(stop, feed=lambda: _serve_link(sidecar, sock, stop)))
        await stop.wait()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
        await sidecar.close()

    uvloop.run(main())


def run_gateway(options: SidecarOptions, workers: int) -> int:
    """Fork ``workers`` gateway processes, then supervise them until SIGTERM; an exit status.

    Call it before any event loop runs in this process.
    """
    from meshwork.proxy.server import _die_with_parent

    links: list[tuple[int, int, socket.socket]] = []
    for index in range(workers):
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                mine.close()
                for _, _, other in links:
                    other.close()
                _die_with_parent()
                _worker_main(options, theirs)
            except BaseException:
                log.exception("gateway worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        links.append((index, pid, mine))
    status = 0

    async def main() -> None:
        nonlocal status
        stop = asyncio.Event()
        await _until_stopped(stop)
        supervisor = Supervisor(options, [_Link(i, pid, sock) for i, pid, sock in links])
        runner = asyncio.create_task(supervisor.run(stop))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REAP_SECONDS)
            for _, pid, _ in links:
                with contextlib.suppress(ChildProcessError):
                    done, _st = os.waitpid(pid, os.WNOHANG)
                    if done:
                        log.error("gateway worker %d exited; stopping the gateway", pid)
                        status = 1
                        stop.set()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
        await supervisor.close()

    import uvloop

    try:
        uvloop.run(main())
    finally:
        _stop_workers([pid for _, pid, _ in links])
    return status


def _stop_workers(pids: list[int]) -> None:
    """SIGTERM, wait up to ``STOP_GRACE_S``, then SIGKILL what is left, and reap every one."""
    import time

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
