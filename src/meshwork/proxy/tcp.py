"""Plain TCP proxying, for Service ports that do not speak HTTP: accept, connect, splice.

What lives here: ``TcpProxy`` (a listener) and the two protocols that splice
one client connection to one upstream connection, with backpressure both
ways (a side whose transport buffer fills pauses reading on the other) and
half-close passed through.

Each splice is reported to the proxy's observer (``proxy.observe``):
``connection_opened`` once the upstream connection is up,
``connection_closed`` once both sides are closed, with the byte counts.

Authorization. With an ``authorizer`` (the workload's AuthorizationPolicies,
``core.security.authz``), each new connection is decided when it is
accepted, from its peer and local address and ``destination_port`` (the
port policies see: the app port, a gateway server's port). A denied
connection is closed at once, before any upstream is opened, so no byte
reaches the app (Envoy's RBAC network filter closes it the same way); it is
reported as opened and closed with no upstream and no bytes, counted in
``denied`` and logged at debug with Envoy's termination details
(``rbac_access_denied_matched_policy[...]``). Whoever owns the proxy swaps
``authorizer`` in one assignment when the policies change: new connections
follow, open ones go on.

What must not live here: anything that looks at the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, cast

from meshwork.proxy.observe import ConnectionInfo, Observer
from meshwork.proxy.plan import Cluster, ErrorKind

if TYPE_CHECKING:  # the policy model pulls in pydantic: a standalone proxy never loads it
    from meshwork.core.security.authz import Authorizer, Verdict

__all__ = ["TcpProxy"]

log = logging.getLogger(__name__)


class _Side(asyncio.Protocol):
    """One end of a splice; ``peer`` is the other end (None until connected)."""

    upstream = True  # which end this is (for the byte counts)
    connecting = False

    def __init__(self, proxy: TcpProxy, info: ConnectionInfo | None = None) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # client bytes before the upstream is connected
        self.eof = False
        self.lost = False
        self.info = info  # None when nobody observes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        info = self.info
        if info is not None:
            if self.upstream:
                info.bytes_sent += len(data)
            else:
                info.bytes_received += len(data)
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
        self.lost = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()
        self.proxy.conns.discard(self)
        info = self.info
        if info is not None and (peer is None or peer.lost) and (self.upstream or not self.connecting):
            self.info = None
            if peer is not None:
                peer.info = None
            self.proxy.report_closed(info)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Client(_Side):
    upstream = False
    connecting = True  # until connect() has an upstream or gave up
    sni: str | None = None  # a TLS passthrough connection's ClientHello name (``connection.sni``)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        proxy = self.proxy
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else ""
        if proxy.authorizer is not None and not proxy.admit(transport, source, self.sni):
            self.connecting = False
            transport.close()  # before any upstream: no byte of this connection reaches the app
            return
        proxy.conns.add(self)
        if proxy.observer is not None:
            self.info = ConnectionInfo(source, proxy.cluster.name, proxy.loop.time())
        proxy.loop.create_task(proxy.connect(self))


class TcpProxy:
    """Listen, and splice each connection to an endpoint the cluster picks.

    A failed connect is retried on another endpoint up to
    ``max_connect_attempts`` times (Envoy's TCP proxy default is 1).
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        max_connect_attempts: int = 1,
        observer: Observer | None = None,
        authorizer: Authorizer | None = None,
        destination_port: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.max_connect_attempts = max_connect_attempts
        self.observer = observer
        self.authorizer = authorizer  # None: every connection is admitted (no policy applies)
        self.destination_port = destination_port  # the port policies see; None: the local port
        self.loop = asyncio.get_running_loop()
        self.conns: set[_Side] = set()
        self.opened = 0
        self.denied = 0  # connections closed by authorization
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> int:
        if sock is not None:
            self._server = await self.loop.create_server(lambda: _Client(self), sock=sock)
        else:
            self._server = await self.loop.create_server(
                lambda: _Client(self), host, port, reuse_address=True
            )
        return int(self._server.sockets[0].getsockname()[1])

    def protocol(self) -> asyncio.Protocol:
        """A new client connection's protocol: splices it to an endpoint of ``cluster`` (a listener
        that decides the cluster per connection, ``proxy.gatewaytcp``, hands these out)."""
        return _Client(self)

    async def accept(self, sock: socket.socket, *, sni: str | None = None) -> None:
        """Splice an already accepted client socket (a TLS passthrough listener hands these over,
        with the ClientHello's ``sni``, which policies see as ``connection.sni``).

        Bytes the client sent before (and a listener only peeked at) are still
        in the socket and go upstream untouched.
        """

        def client() -> _Client:
            made = _Client(self)
            made.sni = sni
            return made

        await self.loop.connect_accepted_socket(client, sock)

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
                        lambda: _Side(self, client.info), ep.host, ep.port
                    )
            except (OSError, TimeoutError):
                self.cluster.release(ep, ErrorKind.CONNECT_FAILURE)
                continue
            up = proto
            self.cluster.release(ep, 0)
            self.opened += 1
            client.connecting = False
            if client.transport is None or client.transport.is_closing():
                assert up.transport is not None
                up.info = None
                up.transport.close()
                if client.info is not None:
                    client.info.upstream = ep.key
                    client.info.flags = "DC"
                    if client.lost:
                        self.report_closed(client.info)
                        client.info = None
                return
            self.conns.add(up)
            up.peer = client
            client.peer = up
            info = client.info
            if info is not None and self.observer is not None:
                info.upstream = ep.key
                try:
                    self.observer.connection_opened(info)
                except Exception:
                    log.exception("the observer failed on an opened connection")
            assert up.transport is not None
            if client.early:
                up.transport.write(b"".join(client.early))
                client.early = []
            if client.eof and up.transport.can_write_eof():
                up.transport.write_eof()
            return
        client.connecting = False
        if client.info is not None:
            client.info.flags = "UF" if tried else "UH"
            if client.lost:
                self.report_closed(client.info)
                client.info = None
        if client.transport is not None:
            client.transport.close()  # like Envoy: no upstream, the connection just closes (flag UF)

    def admit(self, transport: asyncio.BaseTransport, source: str, sni: str | None = None) -> bool:
        """Authorize a connection just accepted (``sni``: its TLS ClientHello's name, when a
        passthrough listener read one); a denial is counted, reported and logged here (the
        caller closes it)."""
        authorizer = self.authorizer
        if authorizer is None:
            return True
        local = transport.get_extra_info("sockname")
        local_ip = str(local[0]) if isinstance(local, tuple) else None
        port = self.destination_port
        if port is None and isinstance(local, tuple):
            port = int(local[1])
        verdict = authorizer.check_connection(
            source_ip=source or None, destination_ip=local_ip, destination_port=port, sni=sni
        )
        if verdict.shadow is not None:
            log.debug("tcp %s -> %s:%s: %s", source, local_ip, port, verdict.shadow)
        if verdict.allowed:
            return True
        self.denied += 1
        log.debug("tcp %s -> %s:%s closed: %s: %s", source, local_ip, port,
                  _denial_details(verdict), verdict.reason)  # fmt: skip
        if self.observer is not None:
            info = ConnectionInfo(source, self.cluster.name, self.loop.time())
            try:
                self.observer.connection_opened(info)
            except Exception:
                log.exception("the observer failed on an opened connection")
            self.report_closed(info)
        return False

    def report_closed(self, info: ConnectionInfo) -> None:
        """Both sides of a splice are closed (or the upstream never came): tell the observer."""
        if self.observer is None:
            return
        info.duration = self.loop.time() - info.start
        try:
            self.observer.connection_closed(info)
        except Exception:
            log.exception("the observer failed on a closed connection")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for side in list(self.conns):
            if side.transport is not None:
                side.transport.close()
        if self._server is not None:
            await self._server.wait_closed()


def _denial_details(verdict: Verdict) -> str:
    from meshwork.proxy.guard import denial_details  # only when a policy denied: guard is heavy

    return denial_details(verdict)
