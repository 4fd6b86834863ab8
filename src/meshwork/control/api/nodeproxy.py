"""``pods/{name}/log`` and ``pods/{name}/exec``: relayed to the agent of the pod's node.

As the kube-apiserver does for the kubelet: the server finds the pod's node,
reads the agent's address (InternalIP) and port (``daemonEndpoints``) from
the Node, calls the agent with the server's credentials, and streams the
answer back unchanged (status, content type, body as it arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, urlencode

import httptools

from meshwork.control.api.objects import Objects
from meshwork.errors import BadRequest, NotFound, Unavailable
from meshwork.httpd import Request, Response, StreamingResponse
from meshwork.model.kinds import REGISTRY

CONNECT_TIMEOUT_S = 5.0
HEADERS_TIMEOUT_S = 30.0

LOG_PARAMS = ("follow", "previous", "tailLines", "sinceSeconds", "timestamps")


class _Collector:
    """httptools callbacks: status, headers, body pieces into a queue."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.done_headers = asyncio.Event()
        self.body: asyncio.Queue[bytes | None] = asyncio.Queue()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.done_headers.set()

    def on_body(self, body: bytes) -> None:
        self.body.put_nowait(bytes(body))

    def on_message_complete(self) -> None:
        self.body.put_nowait(None)


class NodeProxy:
    def __init__(self, objects: Objects, token_for: Callable[[str], str]) -> None:
        """``token_for(node)``: the credential the server presents to that node's agent."""
        self.objects = objects
        self.token_for = token_for
        self._pods, self._nodes = REGISTRY.require("", "Pod"), REGISTRY.require("", "Node")

    def _agent_of(self, namespace: str, name: str) -> tuple[str, int, str]:
        pod = self.objects.get(self._pods, namespace, name).obj
        node_name = pod.get("spec", {}).get("nodeName")
        if not node_name:
            raise BadRequest(f'pod "{name}" is not scheduled to a node yet; wait until it is bound')
        host, port = self._endpoint(node_name, f'of pod "{name}" ')
        return host, port, str(node_name)

    async def node(self, req: Request, node_name: str, path: str) -> Response | StreamingResponse:
        """``/api/v1/nodes/{name}/proxy/{path}``: a GET to the node's agent (``top`` reads stats here)."""
        if req.method != "GET":
            raise BadRequest("nodes/proxy answers GET")
        host, port = self._endpoint(node_name, "")
        return await self._relay(host, port, "GET", quote(path), self.token_for(node_name))

    def _endpoint(self, node_name: str, what: str) -> tuple[str, int]:
        try:
            node = self.objects.get(self._nodes, None, node_name).obj
        except NotFound:
            raise Unavailable(f'node "{node_name}" {what}is not registered') from None
        status = node.get("status", {})
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
        host = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        if not port or not host:
            raise Unavailable(f'the agent of node "{node_name}" publishes no endpoint (is it running?)')
        return host, int(port)

    async def handle(self, req: Request, namespace: str, name: str, subresource: str) -> Response | StreamingResponse:
        host, port, node_name = self._agent_of(namespace, name)
        container = next(iter(req.query.get("container") or []), None)
        base = f"/{'containerLogs' if subresource == 'log' else 'exec'}/{quote(namespace)}/{quote(name)}"
        if container:
            base += f"/{quote(container)}"
        if subresource == "log":
            if req.method not in ("GET", "HEAD"):
                raise BadRequest("pods/log answers GET")
            params = [(k, v) for k in LOG_PARAMS for v in req.query.get(k, [])]
            method = "GET"
        else:
            if req.method not in ("POST", "GET"):
                raise BadRequest("pods/exec answers POST")
            params = [("command", c) for c in req.query.get("command", [])]
            method = "POST"
        target = base + ("?" + urlencode(params) if params else "")
        return await self._relay(host, port, method, target, self.token_for(node_name))

    async def _relay(self, host: str, port: int, method: str, target: str, token: str) -> Response | StreamingResponse:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot reach the node agent at {host}:{port}: {exc}") from exc
        writer.write((f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                      ).encode())  # fmt: skip
        collector = _Collector()
        parser = httptools.HttpResponseParser(collector)

        async def feed() -> None:
            try:
                while data := await reader.read(65536):
                    parser.feed_data(data)
            except (OSError, httptools.HttpParserError):
                pass
            finally:
                collector.done_headers.set()
                collector.body.put_nowait(None)

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.wait_for(collector.done_headers.wait(), HEADERS_TIMEOUT_S)
        except TimeoutError:
            feeder.cancel()
            writer.close()
            raise Unavailable(f"the node agent at {host}:{port} did not answer") from None
        try:
            status = parser.get_status_code()
        except httptools.HttpParserError:
            status = 0
        if not status:
            feeder.cancel()
            writer.close()
            raise Unavailable(f"the node agent at {host}:{port} closed the connection without answering")
        ctype = next((v for k, v in collector.headers if k == "content-type"), "text/plain")

        async def body() -> AsyncIterator[bytes]:
            try:
                while (piece := await collector.body.get()) is not None:
                    yield piece
            finally:
                feeder.cancel()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        return StreamingResponse(status, body(), content_type=ctype)
