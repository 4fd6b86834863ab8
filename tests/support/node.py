"""A real server with its node agent for end-to-end tests, and waiting helpers.

``running_node`` starts ``meshwork server --agent`` in a temporary data dir;
at teardown it stops the server gracefully (the agent stops every pod) and
then sweeps any process still tagged with the data dir, so a failing test
never leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from support.server import Http, ServerProcess, sweep_processes

T = TypeVar("T")

# A pod that serves HTTP on $(POD_IP):8080 and names itself in every answer.
SERVE_HOSTNAME = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)


def http_container(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "image": "python:3.11", "command": [sys.executable, "-c", SERVE_HOSTNAME],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        **extra,
    }  # fmt: skip


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Node:
    """The server process and a raw client to it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http: Http = server.client()

    def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post(path, body)
        assert reply.status == 201, reply.body
        return dict(reply.json)

    def pods(self, namespace: str = "default", selector: str | None = None) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods"
        if selector:
            path += f"?labelSelector={selector}"
        reply = self.http.get(path)
        assert reply.status == 200, reply.body
        return list(reply.json["items"])

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        reply = self.http.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return dict(reply.json) if reply.status == 200 else None

    def get(self, path: str) -> dict[str, Any] | None:
        reply = self.http.get(path)
        return dict(reply.json) if reply.status == 200 else None

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``meshwork ARGS...`` against this server, as a user runs it."""
        env = {**os.environ, "MESHWORK_SERVER": self.server.url, "MESHWORK_TOKEN": self.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, input=stdin)  # fmt: skip


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or [])  # fmt: skip


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for st in pod.get("status", {}).get("containerStatuses") or []:
        if st["name"] == name:
            return dict(st)
    return {}


def shim_pid(pod: dict[str, Any], name: str) -> int | None:
    """The pid of a running container's shim (the process group), from its containerID."""
    cid = container_status(pod, name).get("containerID") or ""
    return int(cid.rsplit("/", 1)[-1]) if cid.startswith("meshwork://") else None


def app_pids(shim: int) -> list[int]:
    """The shim's children: the app process."""
    try:
        return [int(p) for p in Path(f"/proc/{shim}/task/{shim}/children").read_text().split()]
    except OSError:
        return []


@contextlib.contextmanager
def running_node(data_dir: Path, *extra: str) -> Iterator[Node]:
    server = ServerProcess(data_dir)
    try:
        gateway = () if "--ingress-gateway" in extra else ("--no-ingress-gateway",)
        server.start("--agent", "--node-name", "node-1", *extra, *gateway)
        yield Node(server)
    finally:
        with contextlib.suppress(Exception):
            server.stop(timeout=60)
        server.kill()
        sweep_processes(data_dir)


@contextlib.contextmanager
def own_range_node(home: Path) -> Iterator[Node]:
    """A server and a node agent with pod IPs of their own: a random /16 of 127.0.0.0/8 outside the
    range every server's first node gets, so another meshwork running on this machine at the
    same time (another test session) never hands out the same pod addresses."""
    server = ServerProcess(home)
    agent: subprocess.Popen[bytes] | None = None
    try:
        server.start("--no-ingress-gateway")
        cidr = f"127.{random.randrange(128, 250)}.0.0/16"
        with open(home / "agent.log", "ab") as log:
            agent = subprocess.Popen([sys.executable, "-m", "meshwork", "agent", "--server", server.url,
                                      "--token", server.token, "--name", "node-1", "--pod-cidr", cidr,
                                      "--data-dir", str(home)],
                                     stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        node = Node(server)
        wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                             ((node.get("/api/v1/nodes/node-1") or {}).get("status") or {}).get("conditions") or []),
                 30, "the node agent to join")  # fmt: skip
        yield node
    finally:
        if agent is not None:
            agent.terminate()  # it stops every pod first
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        with contextlib.suppress(Exception):
            server.stop(timeout=30)
        server.kill()
        sweep_processes(home)
