"""A real ``meshwork server`` subprocess for tests, and a raw HTTP helper to talk to it.

Every process started here is killed at teardown, even when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT_S = 30.0


@dataclass
class ServerProcess:
    data_dir: Path
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def start(self, *extra: str) -> ServerProcess:
        env = {**os.environ, "MESHWORK_HOME": str(self.data_dir), "MESHWORK_LOG_LEVEL": "WARNING"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshwork", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *extra, *(() if "--agent" in extra else ("--no-agent",))],
            stdout=subprocess.PIPE,
            stderr=open(self.data_dir / "test-server.log", "a"),
            text=True,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if "listening on" in line:
                self.url = line.strip().rsplit(" ", 1)[-1]
                self.port = int(self.url.rsplit(":", 1)[-1])
                return self
        self.kill()
        raise RuntimeError(
            "meshwork server did not start:\n" + (self.data_dir / "test-server.log").read_text()[-3000:]
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        sweep_processes(self.data_dir)

    def client(self) -> Http:
        return Http(self.host, self.port, self.token)


def pod_processes(data_dir: Path) -> set[int]:
    """The pod shims started for ``data_dir``: they run as ``meshwork-pod:<data dir>/...``."""
    marker = f"meshwork-pod:{data_dir}/".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(a.startswith(marker) for a in (entry / "cmdline").read_bytes().split(b"\0")):
                    found.add(int(entry.name))
    return found


def sweep_processes(data_dir: Path) -> list[int]:
    """SIGKILL every agent and pod process started for ``data_dir``; the pids found.

    The safety net behind every test that runs pods: a failing test must not
    leave processes behind. Agents are found by their ``--data-dir`` argument,
    pod shims by the ``meshwork-pod:<data dir>/...`` name they run under.
    """
    marker = str(data_dir)
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        is_pod = any(a.startswith("meshwork-pod:" + marker) for a in text)
        is_agent = "agent" in text and marker in text
        if is_pod or is_agent:
            found.append(int(entry.name))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(entry.name), signal.SIGKILL) if is_pod else os.kill(int(entry.name), signal.SIGKILL)
    return found


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """Raw HTTP to the API server: exact statuses and bodies, no client-side logic."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port, self.token = host, port, token
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        raw: bytes | None = None,
        token: str | bool | None = True,
        timeout: float = 30.0,
    ) -> Reply:
        headers = {"Content-Type": content_type} if (body is not None or raw is not None) else {}
        auth = self.token if token is True else (token or None)
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                payload = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                return Reply(resp.status, payload, {k.lower(): v for k, v in resp.getheaders()})
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any, content_type: str = "application/merge-patch+json") -> Reply:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Any = None) -> Reply:
        return self.request("DELETE", path, body)

    def watch(self, path: str, timeout: float = 10.0) -> Iterator[dict[str, Any]]:
        """Yield watch events from a fresh connection until the stream ends or times out."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise AssertionError(f"watch answered {resp.status}: {resp.read()!r}")
            while True:
                line = resp.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir)
    try:
        yield server.start(*extra)
    finally:
        server.kill()


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}], **spec},
    }


def configmap(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {}}
