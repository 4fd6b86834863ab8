"""AuthorizationPolicy on a TCP splice (``proxy.tcp``), on real sockets.

The splice runs in this process (a loop in a thread) in front of an echo
server on the same loop that counts the connections it accepts, so "no byte
reaches the app" is checked where the app is. Waits are bounded only to turn
a hang into a failure.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from proxytools import HANG_GUARD, LoopThread, connect

from meshwork.core.security.authz import AuthzPolicy, compile_policies
from meshwork.proxy.observe import ConnectionInfo, RequestInfo
from meshwork.proxy.plan import Endpoint
from meshwork.proxy.static import StaticCluster
from meshwork.proxy.tcp import TcpProxy

pytestmark = pytest.mark.integration

ALLOW_9001 = AuthzPolicy("tcp-policy", "foo", {"rules": [{"to": [{"operation": {"ports": ["9001"]}}]}]})
ALLOW_ALL = AuthzPolicy("all", "foo", {"rules": [{}]})
DENY_GET = AuthzPolicy("tcp-deny", "foo", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})


class Recorder:
    def __init__(self) -> None:
        self.opened: list[ConnectionInfo] = []
        self.closed: list[ConnectionInfo] = []

    def request_done(self, info: RequestInfo) -> None:
        pass

    def connection_opened(self, info: ConnectionInfo) -> None:
        self.opened.append(info)

    def connection_closed(self, info: ConnectionInfo) -> None:
        self.closed.append(info)


class Echo:
    """An echo app that counts the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            while data := await reader.read(65536):
                writer.write(data)
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def exchange(port: int, line: bytes = b"hello\n") -> bytes:
    """Send a line, close our side, read to the end (b"" or a reset when the proxy closed at once)."""
    sock = connect(port)
    try:
        try:
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while data := sock.recv(65536):
                got += data
            return got
        except OSError:  # reset, or not connected any more: closed without an answer
            return b""
    finally:
        sock.close()


def wait_until(loop: LoopThread, fn: object) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not loop.call(fn) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_policies_decide_each_connection_and_follow_a_swap(loop: LoopThread) -> None:
    echo, observer = Echo(), Recorder()

    async def go() -> tuple[TcpProxy, int]:
        app_port = await echo.start()
        cluster = StaticCluster([Endpoint("127.0.0.1", app_port)], name="inbound|9000||tcp-echo")
        authz = compile_policies([ALLOW_9001])
        proxy = TcpProxy(cluster, observer=observer, authorizer=authz, destination_port=9000)
        return proxy, await proxy.start("127.0.0.1", 0)

    proxy, port = loop.run(go())
    try:
        # ALLOW only 9001: this port (9000) is denied, closed before the app hears of it.
        assert exchange(port) == b""
        wait_until(loop, lambda: observer.closed)
        assert loop.call(lambda: (proxy.denied, echo.accepted)) == (1, 0)
        [info] = loop.call(lambda: list(observer.closed))
        assert loop.call(lambda: list(observer.opened)) == [info]
        assert (info.upstream, info.bytes_received, info.bytes_sent) == ("", 0, 0)
        assert info.cluster == "inbound|9000||tcp-echo" and info.source == "127.0.0.1"

        # A DENY whose only field is HTTP-only denies every connection; with the allow-all,
        # the deny still wins.
        loop.call(lambda: setattr(proxy, "authorizer", compile_policies([ALLOW_ALL, DENY_GET])))
        assert exchange(port) == b""
        assert loop.call(lambda: (proxy.denied, echo.accepted)) == (2, 0)

        # Policies swapped to allow: the next connection is spliced to the app.
        loop.call(lambda: setattr(proxy, "authorizer", compile_policies([ALLOW_ALL])))
        assert exchange(port) == b"hello\n"
        # The local port is what policies see when the proxy is not told one.
        loop.call(lambda: setattr(proxy, "destination_port", None))
        loop.call(lambda: setattr(proxy, "authorizer", compile_policies([ALLOW_9001])))
        assert exchange(port) == b""
        loop.call(lambda: setattr(proxy, "authorizer", None))
        assert exchange(port) == b"hello\n"
        assert loop.call(lambda: (proxy.denied, echo.accepted)) == (3, 2)
    finally:
        loop.run(proxy.close())


def test_an_open_connection_goes_on_when_policies_change(loop: LoopThread) -> None:
    echo = Echo()

    async def go() -> tuple[TcpProxy, int]:
        app_port = await echo.start()
        cluster = StaticCluster([Endpoint("127.0.0.1", app_port)], name="inbound|9001||tcp-echo")
        proxy = TcpProxy(cluster, authorizer=compile_policies([ALLOW_9001]), destination_port=9001)
        return proxy, await proxy.start("127.0.0.1", 0)

    proxy, port = loop.run(go())
    try:
        held = connect(port)
        try:
            held.sendall(b"before\n")
            assert held.recv(100) == b"before\n"
            loop.call(lambda: setattr(proxy, "authorizer", compile_policies([DENY_GET])))
            assert exchange(port) == b""  # a new connection follows the new policies
            held.sendall(b"after\n")
            assert held.recv(100) == b"after\n"  # the open one goes on, as Envoy decides once
        finally:
            held.close()
    finally:
        loop.run(proxy.close())
