"""What every bookinfo app shares: a threaded HTTP server on ``$POD_IP`` and a client.

The server hands each request to a plain ``handle(Request) -> Reply``
function, one thread per connection (as the original apps' servers do). The
client goes through ``http_proxy`` when the environment sets it (the pod's
sidecar), forwards the tracing and user headers the original apps forward,
and never raises: a failure is a status of 0 with no body.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 9080  # every bookinfo Service and containerPort in bookinfo.yaml

# The headers the original apps copy from a request onto the calls it makes, so the
# mesh can tie the spans of one page together and route by user (``end-user``).
FORWARD_HEADERS = (
    "x-request-id", "x-ot-span-context",
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "traceparent", "tracestate", "x-cloud-trace-context", "grpc-trace-bin",
    "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "sw8", "end-user", "user-agent", "cookie", "authorization", "jwt",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[Request], Reply]


def json_reply(status: int, obj: Any) -> Reply:
    return Reply(status, json.dumps(obj).encode())


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``headers`` a call made on behalf of this request carries on."""
    return {name: headers[name] for name in FORWARD_HEADERS if name in headers}


def service_url(name: str, path: str) -> str:
    """``http://<name>[.$SERVICES_DOMAIN]:9080/<path>``; ``$<NAME>_HOSTNAME`` overrides the name."""
    host = os.environ.get(f"{name.upper()}_HOSTNAME") or name
    domain = os.environ.get("SERVICES_DOMAIN")
    if domain:
        host = f"{host}.{domain}"
    return f"http://{host}:{DEFAULT_PORT}/{path.lstrip('/')}"


def get(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
    """GET ``url`` through the environment's proxy: (status, body), or (0, b"") when it failed."""
    req = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read() or b"")
    except (OSError, ValueError):  # refused, reset, timed out (socket.timeout is an OSError)
        return 0, b""


def get_json(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Any]:
    """Like ``get``, with the body decoded; a 200 whose body is not JSON counts as a failure."""
    status, body = get(url, headers, timeout)
    if status != 200:
        return status, None
    try:
        return 200, json.loads(body)
    except ValueError:
        return 0, None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sidecar's pooled connections expect
    # Head and body go out in two writes: without TCP_NODELAY the body waits for the peer's
    # delayed ACK (~40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    app: Handler

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.app(Request(self.command, self.path, headers, body))
        except Exception as exc:  # an app bug answers 500 and the server keeps serving
            reply = json_reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(app: Handler, name: str, argv: list[str] | None = None) -> None:
    """Serve ``app`` on ``$POD_IP`` (else 127.0.0.1) at the port given as the first argument."""
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else DEFAULT_PORT
    host = os.environ.get("POD_IP") or "127.0.0.1"
    handler = type(f"{name}Handler", (_Handler,), {"app": staticmethod(app)})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    print(f"{name} listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
