"""Tracing through injected sidecars: x-request-id made, traceparent continued, spans kept."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

from support.node import is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

ECHO = (
    "import http.server, json, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)
CALL = (
    "import json, sys, urllib.request\n"
    "req = urllib.request.Request('http://echo:8080/', headers=json.loads(sys.argv[1]))\n"
    "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
)
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _call(env: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
    ran = subprocess.run([sys.executable, "-m", "meshwork", "exec", "client", "-n", "traced", "--", sys.executable,
                          "-c", CALL, json.dumps(headers)], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps every JSON body posted to /v1/traces."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/traces":
            self.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _exported_trace_ids() -> set[str]:
    return {span["traceId"] for body in _Collector.received for rs in body.get("resourceSpans", [])
            for ss in rs.get("scopeSpans", []) for span in ss.get("spans", [])}  # fmt: skip


def test_sidecars_add_request_ids_and_continue_traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    # Node-wide tracing with OpenTelemetry's standard variable: the agent hands it to every sidecar.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    try:
        _scenario(tmp_path)
    finally:
        collector.shutdown()
        collector.server_close()


def _scenario(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "traced", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply("/api/v1/namespaces/traced/pods", {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "echo", "labels": {"app": "echo"}},
                   "spec": {"containers": [{"name": "echo", "image": "python", "command": [sys.executable, "-c", ECHO],
                                            "ports": [{"containerPort": 8080}]}]}})  # fmt: skip
        node.apply("/api/v1/namespaces/traced/services", {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080}]}})  # fmt: skip
        # Istio's per-pod ProxyConfig asks this sidecar for an access log on its stdout.
        node.apply("/api/v1/namespaces/traced/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
                   "name": "client", "annotations": {"proxy.istio.io/config": '{"accessLogFile": "/dev/stdout"}'}},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip
        wait_for(lambda: len([p for p in node.pods("traced") if is_ready(p)]) == 2, 60, "both pods ready")
        env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}

        fresh = _call(env, {})
        assert len(fresh["x-request-id"]) == 36  # a uuid4, made by the client's sidecar
        version, trace, span, _flags = fresh["traceparent"].split("-")
        assert (version, len(trace), len(span)) == ("00", 32, 16)

        continued = _call(env, {"traceparent": PARENT, "x-request-id": "given-id"})
        assert continued["x-request-id"] == "given-id"  # kept as the app sent it
        assert continued["traceparent"].split("-")[1] == PARENT.split("-")[1]  # the same trace
        assert continued["traceparent"].split("-")[2] != PARENT.split("-")[2]  # a new span below it

        client_ip = (node.pod("client", "traced") or {})["status"]["podIP"]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def kept() -> list[dict[str, Any]] | None:
            with direct.open(f"http://{client_ip}:15020/debug/spans", timeout=5) as resp:
                spans = json.loads(resp.read())["spans"]
            return [s for s in spans if s["traceId"] == PARENT.split("-")[1]] or None

        spans = wait_for(kept, 10, "the client sidecar's span of the continued trace")
        assert spans[0]["parentSpanId"] == PARENT.split("-")[2]
        wait_for(lambda: PARENT.split("-")[1] in _exported_trace_ids(), 15, "the span exported over OTLP")

        def logged() -> list[dict[str, Any]] | None:
            ran = subprocess.run([sys.executable, "-m", "meshwork", "logs", "client", "-n", "traced", "-c",
                                  "istio-proxy"], env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
            records = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
            return [r for r in records if r.get("request_id") == "given-id"] or None

        record = wait_for(logged, 10, "the access log line of the continued request")[0]
        assert record["response_code"] == 200 and record["authority"] == "echo:8080"
