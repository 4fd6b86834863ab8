"""The sidecar's admin port (15020): metrics, readiness, a short summary, recent spans.

What lives here: ``AdminServer``, a small ``meshwork.httpd.HttpServer`` with
the paths Istio's agent serves on 15020 that tools rely on:

* ``GET /stats/prometheus``: Istio's metrics, Prometheus text format 0.0.4,
  and ``meshwork_proxy_plugin_failures_total`` (ProxyPlugin hooks that failed);
* ``GET /healthz/ready``: 200 once the proxy has applied a config, else 503;
* ``GET /stats``: a few lines for humans;
* ``GET /debug/spans``: the tracer's ring buffer of recent spans, OTLP JSON.

What must not live here: the metrics themselves (``proxy.telemetry``), the
tracer (``proxy.tracing``), the engine.
"""

from __future__ import annotations

import json
import sys

from meshwork.httpd import HttpServer, Request, Response
from meshwork.proxy.telemetry import CONTENT_TYPE, MeshMetrics
from meshwork.proxy.tracing import Tracer

__all__ = ["ADMIN_PORT", "AdminServer"]

ADMIN_PORT = 15020  # Istio's pilot-agent merged metrics and health port


class AdminServer:
    """Serves ``metrics`` (and ``tracer``'s spans) on the admin port.

    ``ready`` starts False; whoever applies proxy config calls
    ``mark_ready()`` after the first config is in effect (Istio's readiness
    probe passes only once Envoy has received its listeners and clusters).
    """

    def __init__(self, metrics: MeshMetrics, *, tracer: Tracer | None = None, ready: bool = False) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.ready = ready
        self.server = HttpServer(self.handle, max_body=0, headers_timeout=10.0, idle_timeout=60.0)

    def mark_ready(self, ready: bool = True) -> None:
        self.ready = ready

    async def start(self, host: str, port: int = ADMIN_PORT) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        await self.server.start(host, port)
        return self.server.port

    async def close(self) -> None:
        await self.server.close(grace=1.0)

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")],
                            content_type="text/plain; charset=utf-8")  # fmt: skip
        path = request.path
        if path == "/stats/prometheus":
            text = self.metrics.render() + _plugin_failures()
            return Response(200, text.encode(), content_type=CONTENT_TYPE)
        if path == "/healthz/ready":
            if self.ready:
                return Response(200, b"", content_type=None)
            return Response(503, b"the proxy has not received its configuration yet\n",
                            content_type="text/plain; charset=utf-8")  # fmt: skip
        if path == "/stats":
            return Response(200, self.metrics.summary().encode(), content_type="text/plain; charset=utf-8")
        if path == "/debug/spans":
            spans = list(self.tracer.spans) if self.tracer is not None else []
            return Response(200, json.dumps({"spans": [s.to_otlp() for s in spans]}).encode())
        return Response(404, b"not found\n", content_type="text/plain; charset=utf-8")


def _plugin_failures() -> str:
    """``meshwork_proxy_plugin_failures_total`` once any ProxyPlugin was loaded (``proxy.plugins``).

    Looked up, not imported: that module brings the resource model, which a
    standalone proxy (no plugins possible) must not load.
    """
    plugins = sys.modules.get("meshwork.proxy.plugins")
    return plugins.render_failures() if plugins is not None else ""  # type: ignore[no-any-return]
