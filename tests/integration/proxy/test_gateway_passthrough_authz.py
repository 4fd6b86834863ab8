"""AuthorizationPolicy on a gateway's TLS passthrough (``proxy.gatewaytls`` -> ``proxy.tlslisten`` ->
``proxy.tcp``), on real sockets: decided once the ClientHello's SNI is read, with ``connection.sni``.

The listener and an echo upstream that counts what it accepts run on one loop in
a thread; the client sends a real ClientHello. Waits are bounded only to turn a
hang into a failure.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest
from proxytools import HANG_GUARD, LoopThread

from meshwork.core.mesh.gateway_tls import PortTls
from meshwork.core.security.authz import AuthzPolicy, compile_policies
from meshwork.proxy.gatewaytls import GatewayTls
from meshwork.proxy.plan import DirectResponse, Downstream, Endpoint
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster
from support.pki import client_hello

pytestmark = pytest.mark.integration

DENY_SECRET = AuthzPolicy("no-secret", "istio-system", {"action": "DENY", "rules": [
    {"when": [{"key": "connection.sni", "values": ["secret.example.com"]}]}]})  # fmt: skip
ALLOW_443 = AuthzPolicy("443-only", "istio-system", {"rules": [{"to": [{"operation": {"ports": ["443"]}}]}]})


class Refuse:
    def decide(self, request: object, downstream: Downstream) -> DirectResponse:
        return DirectResponse(status=404)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def exchange(port: int, sni: str) -> bytes:
    """A ClientHello for ``sni`` and our side closed; what comes back (b"": closed unanswered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as sock:
        try:
            sock.sendall(client_hello(sni))
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while data := sock.recv(65536):
                got += data
            return got
        except OSError:  # reset: closed without an answer
            return b""


def test_passthrough_connections_pass_the_gateway_policies_with_their_sni(loop: LoopThread) -> None:
    accepted: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    upstream = loop.run(asyncio.start_server(echo, "127.0.0.1", 0))
    cluster = StaticCluster([Endpoint("127.0.0.1", upstream.sockets[0].getsockname()[1])], name="backend")
    # The gateway's policy object for its Gateway server port 443, authorizer set before any listening.
    authz = compile_policies([DENY_SECRET])
    tls, problems = GatewayTls(random.Random(0)).listener(PortTls(443), {}, authz)
    assert problems == [] and (tls.passthrough_authorizer, tls.passthrough_port) == (authz, 443)
    tls.passthrough = lambda sni: cluster  # every name passes through (the routes are not what is tested)

    async def start() -> tuple[HttpProxy, int]:
        proxy = HttpProxy(Refuse())  # type: ignore[arg-type]
        return proxy, await proxy.start("127.0.0.1", 0, tls=tls)

    proxy, port = loop.run(start())
    try:
        assert exchange(port, "open.example.com").startswith(b"\x16\x03")  # the ClientHello, echoed back
        assert loop.call(lambda: (proxy.passthrough_proxy(cluster).denied, len(accepted))) == (0, 1)
        assert exchange(port, "secret.example.com") == b""  # denied by its SNI: closed, never spliced
        assert loop.call(lambda: (proxy.passthrough_proxy(cluster).denied, len(accepted))) == (1, 1)
        # destination.port is the Gateway server's (443), not the port bound here.
        loop.call(lambda: setattr(tls, "passthrough_authorizer", compile_policies([ALLOW_443])))
        assert exchange(port, "secret.example.com").startswith(b"\x16\x03")
        loop.call(lambda: setattr(tls, "passthrough_port", 8443))
        assert exchange(port, "open.example.com") == b""
        assert loop.call(lambda: (proxy.passthrough_proxy(cluster).denied, len(accepted))) == (2, 2)
        assert loop.call(lambda: proxy.tls_stats["passthrough"]) == 4
    finally:
        loop.run(proxy.close(0.5))
        upstream.close()
        loop.run(upstream.wait_closed())

