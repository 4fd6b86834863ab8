"""The inbound side and the outbound source address over real sockets.

An outbound proxy leaving from a client "pod IP" and an inbound proxy on a
server "pod IP" (``InboundDecider``, as the sidecar runs it on :15006) run on
an event loop in a thread of this process; the apps are real sockets on the
server pod IP that answer with what they saw: the port they listen on, the
peer address and the headers. Pod IPs come from a loopback range no other
test uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from proxytools import HANG_GUARD, LoopThread, read_reply

from meshwork.proxy.inbound import AppPort, InboundDecider
from meshwork.proxy.plan import Endpoint
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster, StaticDecider
from meshwork.proxy.telemetry import Directory, MeshMetrics, Peer

pytestmark = pytest.mark.integration

CLIENT_IP, SERVER_IP = "127.77.0.1", "127.77.0.2"


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


async def _app(host: str) -> tuple[asyncio.Server, int]:
    """An HTTP/1.1 app answering "<its port> <peer ip> <lower-cased header names>" on keep-alive connections."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        peer = writer.get_extra_info("peername")[0]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                names = sorted(line.split(b":")[0].decode().lower() for line in head.split(b"\r\n")[1:] if line)
                body = f"{port} {peer} {','.join(names)}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, host, 0)
    return server, int(server.sockets[0].getsockname()[1])


def _get(host: str, port: int, *headers: str) -> tuple[int, dict[str, str], str]:
    sock = socket.create_connection((host, port), timeout=HANG_GUARD, source_address=(CLIENT_IP, 0))
    try:
        extra = "".join(h + "\r\n" for h in headers)
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: web:8080\r\n{extra}\r\n".encode())
        reply = read_reply(sock)
        return reply.status, reply.headers, reply.body.decode()
    finally:
        sock.close()


def test_upstream_connections_leave_from_the_source_address(loop: LoopThread) -> None:
    async def start() -> tuple[list[HttpProxy], list[asyncio.Server], int, int]:
        app, app_port = await _app("127.0.0.1")
        bound = HttpProxy(StaticDecider(StaticCluster([Endpoint("127.0.0.1", app_port)])), source_address=CLIENT_IP)
        plain = HttpProxy(StaticDecider(StaticCluster([Endpoint("127.0.0.1", app_port)])))
        return [bound, plain], [app], await bound.start("127.0.0.1", 0), await plain.start("127.0.0.1", 0)

    proxies, apps, bound_port, plain_port = loop.run(start())
    try:
        assert _get("127.0.0.1", bound_port)[2].split()[1] == CLIENT_IP
        assert _get("127.0.0.1", plain_port)[2].split()[1] == "127.0.0.1"  # the kernel's choice, as before
    finally:
        _close(loop, proxies, apps)


def _close(loop: LoopThread, proxies: list[HttpProxy], apps: list[asyncio.Server]) -> None:
    async def close() -> None:
        for p in proxies:
            await p.close(0.5)
        for a in apps:
            a.close()

    loop.run(close())


def test_the_inbound_listener_routes_by_port_reports_as_destination_and_never_retries(loop: LoopThread) -> None:
    metrics = MeshMetrics(
        Peer.from_pod(workload="web-v1", namespace="shop", labels={"app": "web"}),
        Directory({CLIENT_IP: Peer.from_pod(workload="client", namespace="shop", labels={"app": "client"})}),
    )
    # A port nobody listens on: bind one and close it.
    probe = socket.socket()
    probe.bind((SERVER_IP, 0))
    dead_port = probe.getsockname()[1]
    probe.close()

    async def start() -> tuple[HttpProxy, list[asyncio.Server], int, int, int]:
        a, a_port = await _app(SERVER_IP)
        b, b_port = await _app(SERVER_IP)
        decider = InboundDecider(SERVER_IP, [AppPort(a_port, "http"), AppPort(b_port), AppPort(dead_port)],
                                 {a_port: "web.shop.svc.cluster.local"})  # fmt: skip
        proxy = HttpProxy(decider, observer=metrics.observer("destination"))
        return proxy, [a, b], await proxy.start(SERVER_IP, 0), a_port, b_port

    proxy, apps, inbound, a_port, b_port = loop.run(start())
    try:
        for port in (a_port, b_port):
            status, _, body = _get(SERVER_IP, inbound, f"x-meshwork-inbound-port: {port}", "x-keep: 1")
            seen_port, _, names = body.split()
            assert (status, int(seen_port)) == (200, port)
            assert "x-keep" in names.split(",") and "x-meshwork-inbound-port" not in names.split(",")
        # Three ports and no header: which one is not known.
        status, headers, body = _get(SERVER_IP, inbound)
        assert (status, body) == (404, "") and "x-meshwork-inbound-port" in headers["x-meshwork-reason"]
        # The app's port is closed: one connect attempt, no retry, Envoy's 503.
        status, headers, body = _get(SERVER_IP, inbound, f"x-meshwork-inbound-port: {dead_port}")
        assert status == 503 and body.startswith("upstream connect error")
        assert loop.call(lambda: proxy.pools[f"{SERVER_IP}:{dead_port}"].connects) == 1

        rows = {}
        for family in text_string_to_metric_families(metrics.render()):
            for s in family.samples:
                if s.name == "istio_requests_total":
                    rows[s.labels["destination_service"], s.labels["response_code"], s.labels["response_flags"]] = s
        assert set(rows) == {("web.shop.svc.cluster.local", "200", "-"), ("unknown", "200", "-"),
                             ("unknown", "404", "NR"), ("unknown", "503", "UF")}  # fmt: skip
        for s in rows.values():
            assert s.labels["reporter"] == "destination"
            assert (s.labels["source_workload"], s.labels["destination_workload"]) == ("client", "web-v1")
    finally:
        _close(loop, [proxy], apps)
