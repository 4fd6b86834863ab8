"""Helpers for the proxy's integration tests: real backend processes, a real proxy process, raw HTTP.

Every process is started in its own session and its whole process group is
killed at teardown, even when the test fails. Waits are bounded only to turn
a hang into a failure; no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HANG_GUARD = 20.0  # seconds


class LoopThread:
    """An event loop in a thread, for a proxy run in the test's own process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the loop and wait (bounded) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(HANG_GUARD)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the loop (to read state the loop owns)."""

        async def call() -> Any:
            return fn(*args)

        return self.run(call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD)
        self.loop.close()


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    port: int
    log: Path | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[str]] = []

    def _spawn(self, argv: list[str], ready: str, name: str) -> tuple[subprocess.Popen[str], str]:
        err = open(self.tmp / f"{name}.stderr", "w")
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        self.started.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if ready in line:
                return proc, line
        err.flush()
        raise RuntimeError(f"{name} did not start: {(self.tmp / f'{name}.stderr').read_text()}")

    def backend(self, name: str, *, tcp: bool = False, fixed: bool = False) -> Proc:
        """``backend.py`` (h11), or ``fixed_backend.py`` (one write per response) when ``fixed``."""
        script = "fixed_backend.py" if fixed else "backend.py"
        argv = [sys.executable, str(HERE / script), name, *(["--tcp"] if tcp else [])]
        proc, line = self._spawn(argv, "port ", f"backend-{name}")
        return Proc(proc, int(line.split()[1]))

    def proxy(
        self, upstreams: list[int] | str, *args: str, name: str = "proxy", access_log: bool = True
    ) -> Proc:
        ups = upstreams if isinstance(upstreams, str) else ",".join(f"127.0.0.1:{p}" for p in upstreams)
        log = self.tmp / f"{name}-access.log" if access_log else None
        argv = [sys.executable, "-m", "meshwork", "proxy", "--listen", "127.0.0.1:0",
                "--upstream", ups, *(["--access-log", str(log)] if log else []), *args]
        proc, line = self._spawn(argv, "listening on", name)
        return Proc(proc, int(line.split()[-3].rsplit(":", 1)[1]), log)

    def kill_all(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    return sock


def _recv_until(sock: socket.socket, buf: bytearray, marker: bytes) -> int:
    while (i := buf.find(marker)) < 0:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before {marker!r}; got {bytes(buf)[:200]!r}")
        buf += data
    return i


def read_reply(sock: socket.socket, buf: bytearray | None = None, *, head_request: bool = False) -> Reply:
    """Read one response (Content-Length, chunked or close-delimited); leftovers stay in ``buf``."""
    buf = bytearray() if buf is None else buf
    end = _recv_until(sock, buf, b"\r\n\r\n")
    head = bytes(buf[: end + 4])
    del buf[: end + 4]
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().lower()] = value.decode("latin-1").strip()
    body = bytearray()
    if head_request or status in (101, 204, 304) or 100 <= status < 200:
        pass
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            i = _recv_until(sock, buf, b"\r\n")
            size = int(bytes(buf[:i]).split(b";")[0], 16)
            del buf[: i + 2]
            while len(buf) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a chunk")
                buf += data
            body += buf[:size]
            del buf[: size + 2]
            if size == 0:
                break
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed inside a body")
            buf += data
        body += buf[:n]
        del buf[:n]
    else:
        while data := sock.recv(65536):
            buf += data
        body += buf
        buf.clear()
    return Reply(status, headers, bytes(body), head)


def is_closed(sock: socket.socket) -> bool:
    """True when the peer closed (EOF or reset) within the hang guard."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(port: int, path: str, sock: socket.socket | None = None, **headers: str) -> Reply:
    own = sock is None
    s = sock or connect(port)
    try:
        extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
        return read_reply(s)
    finally:
        if own:
            s.close()


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")
