"""Plain TCP proxying, for Service ports that do not speak HTTP: accept, connect, splice.

What lives here: ``TcpProxy`` (a listener) and the two protocols that splice
one client connection to one upstream connection, with backpressure both
ways (a side whose transport buffer fills pauses reading on the other) and
half-close passed through.

What must not live here: anything that looks at the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from meshwork.proxy.plan import Cluster, ErrorKind

__all__ = ["TcpProxy"]

log = logging.getLogger(__name__)


class _Side(asyncio.Protocol):
    """One end of a splice; ``peer`` is the other end (None until connected)."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # client bytes before the upstream is connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            if peer.eof:
                peer.transport.close()
                return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()
        self.proxy.conns.discard(self)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Client(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy.conns.add(self)
        self.proxy.loop.create_task(self.proxy.connect(self))


class TcpProxy:
    """Listen, and splice each connection to an endpoint the cluster picks.

    A failed connect is retried on another endpoint up to
    ``max_connect_attempts`` times (Envoy's TCP proxy default is 1).
    """

    def __init__(self, cluster: Cluster, *, max_connect_attempts: int = 1) -> None:
        self.cluster = cluster
        self.max_connect_attempts = max_connect_attempts
        self.loop = asyncio.get_running_loop()
        self.conns: set[_Side] = set()
        self.opened = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> int:
        if sock is not None:
            self._server = await self.loop.create_server(lambda: _Client(self), sock=sock)
        else:
            self._server = await self.loop.create_server(
                lambda: _Client(self), host, port, reuse_address=True
            )
        return int(self._server.sockets[0].getsockname()[1])

    async def connect(self, client: _Client) -> None:
        tried: set[object] = set()
        for _ in range(max(1, self.max_connect_attempts)):
            ep = self.cluster.pick(frozenset(tried))  # type: ignore[arg-type]
            if ep is None:
                break
            tried.add(ep)
            try:
                async with asyncio.timeout(self.cluster.limits.connect_timeout):
                    _, proto = await self.loop.create_connection(
                        lambda: _Side(self), ep.host, ep.port
                    )
            except (OSError, TimeoutError):
                self.cluster.release(ep, ErrorKind.CONNECT_FAILURE)
                continue
            up = proto
            self.cluster.release(ep, 0)
            self.opened += 1
            if client.transport is None or client.transport.is_closing():
                assert up.transport is not None
                up.transport.close()
                return
            self.conns.add(up)
            up.peer = client
            client.peer = up
            assert up.transport is not None
            if client.early:
                up.transport.write(b"".join(client.early))
                client.early = []
            if client.eof and up.transport.can_write_eof():
                up.transport.write_eof()
            return
        if client.transport is not None:
            client.transport.close()  # like Envoy: no upstream, the connection just closes (flag UF)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for side in list(self.conns):
            if side.transport is not None:
                side.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
