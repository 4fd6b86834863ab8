"""ProxyPlugin: a Python module run inside the selected sidecars, end to end.

First the engine on its own (a proxy in this process driven by a
``MeshDecider`` with plugins, real backend processes, raw sockets), then the
whole chain (server, agent, sidecars, ``meshwork exec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.proxy.mesh import MeshDecider
from meshwork.proxy.plugins import FAILURES, selected
from meshwork.proxy.server import HttpProxy
from support.node import is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

ECHO = (
    "import http.server, json, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        seen = {k.lower(): v for k, v in self.headers.items()}\n"
    "        body = json.dumps({**seen, 'pod': os.environ['HOSTNAME']}).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
PLUGIN = '''
def on_request(request):
    if request.path.startswith("/blocked"):
        return 403, "blocked by the team's plugin\\n", {"x-plugin": "tagger"}
    request.headers_to_add["x-team"] = request.config.get("team", "?")

def on_response(request, response):
    response.headers_to_set["x-plugin-saw"] = f"{response.status} for {request.path}"

def pick(request, endpoints):
    wanted = request.headers.get("x-pin")
    return next((e for e in endpoints if e.name == wanted), None)
'''
CALL = (
    "import json, sys, urllib.error, urllib.request\n"
    "req = urllib.request.Request('http://echo:8080' + sys.argv[1], headers=json.loads(sys.argv[2]))\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=10)\n"
    "    print(r.status, json.dumps(r.headers.get('x-plugin-saw')), r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code, e.headers.get('x-plugin'), e.read().decode().strip())\n"
)


def _call(env: dict[str, str], pod: str, path: str, **headers: str) -> str:
    ran = subprocess.run([sys.executable, "-m", "meshwork", "exec", pod, "-n", "plug", "--", sys.executable, "-c",
                          CALL, path, json.dumps(headers)], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def _answer(out: str) -> tuple[str, str | None, dict[str, str]]:
    """A 200's status, the x-plugin-saw header the client got, and the echoed body."""
    status, rest = out.split(" ", 1)
    saw, end = json.JSONDecoder().raw_decode(rest)
    return status, saw, json.loads(rest[end:])


def _pod(name: str, labels: dict[str, str], container: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [container]}}  # fmt: skip


def test_a_proxy_plugin_adds_headers_answers_tags_responses_and_pins_endpoints(tmp_path: Path) -> None:
    plugin = tmp_path / "tagger.py"
    plugin.write_text(PLUGIN)
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "plug", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        for name in ("echo-a", "echo-b"):
            node.apply("/api/v1/namespaces/plug/pods", _pod(name, {"app": "echo"}, {
                "name": "echo", "image": "python", "command": [sys.executable, "-c", ECHO],
                "ports": [{"containerPort": 8080}]}))  # fmt: skip
        node.apply("/api/v1/namespaces/plug/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080}]}})  # fmt: skip
        sleeper = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
        node.apply("/api/v1/namespaces/plug/pods", _pod("payments", {"app": "payments"}, sleeper))
        node.apply("/api/v1/namespaces/plug/pods", _pod("other", {"app": "other"}, sleeper))
        node.apply("/apis/meshwork.io/v1alpha1/namespaces/plug/proxyplugins", {
            "apiVersion": "meshwork.io/v1alpha1", "kind": "ProxyPlugin", "metadata": {"name": "tagger"},
            "spec": {"selector": {"matchLabels": {"app": "payments"}}, "module": str(plugin),
                     "config": {"team": "payments"}}})  # fmt: skip
        wait_for(lambda: len([p for p in node.pods("plug") if is_ready(p)]) == 4, 60, "four ready pods")
        env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}

        def pinned(pod: str) -> str | None:  # both endpoints known to the caller's sidecar, and pinned
            out = _call(env, "payments", "/x", **{"x-pin": pod})
            return out if out.startswith("200") and f'"pod": "{pod}"' in out else None

        wait_for(lambda: pinned("echo-a") and pinned("echo-b"), 30, "requests pinned to each echo pod")
        for pod in ("echo-b", "echo-a", "echo-b", "echo-b", "echo-a"):
            status, saw, body = _answer(_call(env, "payments", "/x", **{"x-pin": pod}))
            assert (status, saw, body["pod"], body["x-team"]) == ("200", "200 for /x", pod, "payments")
        assert _call(env, "payments", "/blocked/x") == "403 tagger blocked by the team's plugin"
        # The selector picks payments only: the other workload's proxy runs no plugin.
        status, saw, body = _answer(_call(env, "other", "/blocked/x"))
        assert status == "200" and saw is None and "x-team" not in body


# --- The engine alone -----------------------------------------------------------------------

ENGINE_PLUGIN = '''
def on_response(request, response):
    if request.path.startswith("/hello/broken"):
        raise RuntimeError("a bug in the hook")
    response.headers_to_set["x-served-by"] = response.headers.get("x-backend", "?")
    response.headers_to_remove.append("x-route-only")

def pick(request, endpoints):
    wanted = request.headers.get("x-pin")
    return next((e for e in endpoints if e.name == wanted), None)
'''
BACKEND = Path(__file__).resolve().parents[1] / "proxy" / "backend.py"


def _backend(name: str, started: list[subprocess.Popen[str]]) -> int:
    proc = subprocess.Popen([sys.executable, str(BACKEND), name], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "port N" once listening
    assert line.startswith("port "), line
    return int(line.split()[1])


@contextlib.contextmanager
def _engine(tmp_path: Path) -> Iterator[tuple[int, dict[str, int]]]:
    """A proxy on this process's own loop, routing ``reviews`` to two backends through the plugin."""
    started: list[subprocess.Popen[str]] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy: HttpProxy | None = None
    try:
        ports = {name: _backend(name, started) for name in ("one", "two")}
        snapshot = {
            "version": "1", "proxy": {"name": "client", "namespace": "default", "role": "sidecar", "labels": {}},
            "services": [{"name": "reviews", "namespace": "default", "clusterIP": "127.96.0.9",
                          "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
                          "endpoints": [{"ip": "127.0.0.1", "ports": {"http": port}, "ready": True, "name": name}
                                        for name, port in ports.items()]}],
            "virtualServices": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                 "metadata": {"name": "reviews", "namespace": "default"},
                                 "spec": {"hosts": ["reviews"], "http": [{
                                     "route": [{"destination": {"host": "reviews"}}],
                                     "headers": {"response": {"set": {"x-route": "kept", "x-route-only": "1"}}}}]}}],
        }  # fmt: skip
        module = tmp_path / "engine_plugin.py"
        module.write_text(ENGINE_PLUGIN)
        plugins = selected([{"metadata": {"namespace": "default", "name": "engine"}, "spec": {"module": str(module)}}], {})
        decider = MeshDecider(compile_snapshot(snapshot_from_wire(snapshot)), rng=random.Random(3), plugins=plugins)

        async def start() -> tuple[HttpProxy, int]:
            p = HttpProxy(decider)
            return p, await p.start("127.0.0.1", 0)

        proxy, port = asyncio.run_coroutine_threadsafe(start(), loop).result(20)
        yield port, ports
    finally:
        if proxy is not None:
            asyncio.run_coroutine_threadsafe(proxy.close(grace=0.5), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def _exchange(sock: socket.socket, path: str, pin: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET http://reviews:9080{path} HTTP/1.1\r\nHost: reviews:9080\r\nX-Pin: {pin}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"closed early: {buf!r}"
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} twice in {head!r}"
        headers[name.lower()] = value.strip()
    while len(body) < int(headers["content-length"]):
        data = sock.recv(65536)
        assert data, "closed inside the body"
        body += data
    return int(lines[0].split()[1]), headers, body


def _seen(port: int) -> list[str]:
    """The targets a backend was asked for (its own /_stats aside)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /_stats HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    stats = json.loads(data.partition(b"\r\n\r\n")[2])
    return [r["target"] for r in stats["requests"] if r["target"] != "/_stats"]


def test_the_engine_applies_response_hooks_and_pins_endpoints_on_one_kept_alive_connection(tmp_path: Path) -> None:
    with _engine(tmp_path) as (port, backends), socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for pin in ("two", "one", "two", "two", "one", "one"):
            status, headers, body = _exchange(sock, "/hello", pin)
            assert (status, body) == (200, f"hello from {pin}".encode())
            # The hook's header, the route's kept, the one the hook removed gone.
            assert (headers["x-served-by"], headers["x-route"]) == (pin, "kept") and "x-route-only" not in headers
        assert (_seen(backends["one"]), _seen(backends["two"])) == (["/hello"] * 3, ["/hello"] * 3)
        status, headers, body = _exchange(sock, "/status/500", "one")  # an error response goes through the hook too
        assert (status, headers["x-served-by"], body) == (500, "one", b"status 500 from one")
        # Istio's default retry policy retries a 503 elsewhere: the picker is not offered the endpoint tried.
        status, headers, body = _exchange(sock, "/status/503", "one")
        assert status == 503 and "/status/503" in _seen(backends["two"])
        # A hook that raises: the response goes through as the route makes it, and it is counted.
        before = FAILURES["default/engine on_response"]
        status, headers, body = _exchange(sock, "/hello/broken", "two")
        assert (status, headers["x-route"], headers["x-route-only"]) == (200, "kept", "1") and "x-served-by" not in headers
        assert FAILURES["default/engine on_response"] == before + 1
        # No pin: the balancer picks (the hook still tags the answer with who served it).
        status, headers, body = _exchange(sock, "/hello", "nobody")
        assert status == 200 and body == f"hello from {headers['x-served-by']}".encode()
