"""A listener that looks before it leaps: peek at the first bytes, then TLS, plaintext or passthrough.

What lives here: ``TlsListener``, which accepts connections on a listening
socket itself (the loop tells it when the socket is readable) and, for each,
peeks at the first bytes with ``MSG_PEEK`` (they stay in the socket for
whoever reads next), then:

* passthrough (``ListenerTls.passthrough`` names a cluster for the
  ClientHello's SNI): the socket goes to a ``TcpProxy`` splice, the TLS bytes
  reach the upstream untouched;
* a TLS ClientHello (first byte 0x16) on a STRICT or PERMISSIVE listener: a
  TLS transport with the context for the SNI (``ListenerTls.context_for``),
  then the HTTP connection; a failed handshake just closes;
* anything else: on STRICT the socket is closed unread, with no answer
  at all (as Envoy's STRICT inbound filter chain does); on PERMISSIVE or
  DISABLE it becomes a plaintext HTTP connection.

The peek reads only the first byte unless the policy needs the SNI (contexts
by name, passthrough), then the whole ClientHello (``core.tlshello``).

What must not live here: HTTP (``proxy.http``), contexts (``proxy.tls``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshwork.core.tlshello import MAX_HELLO_BYTES, NEED_MORE, ClientHello, parse_client_hello
from meshwork.proxy.tls import ListenerTls, TlsMode

if TYPE_CHECKING:
    from meshwork.proxy.http import HttpProxyConnection
    from meshwork.proxy.server import HttpProxy

__all__ = ["TlsListener"]

log = logging.getLogger("meshwork.proxy")

# Connections taken per readiness callback (asyncio's own accept loop takes backlog-many; a bound
# keeps one busy listener from starving the loop).
ACCEPT_BATCH = 64
# After EMFILE/ENFILE, stop accepting this long (asyncio's ACCEPT_RETRY_DELAY) instead of spinning.
ACCEPT_RETRY_DELAY = 1.0
# A ClientHello that came in part: the peeked bytes stay readable, so wait this long between peeks
# instead of spinning on readiness (rare: a hello fits one loopback segment).
PEEK_RETRY_SECONDS = 0.005


class TlsListener:
    """One listening socket of an ``HttpProxy`` that applies a ``ListenerTls`` policy per connection."""

    def __init__(
        self,
        proxy: HttpProxy,
        sock: socket.socket,
        port: int,
        tls: ListenerTls,
        connection_class: type[HttpProxyConnection],
    ) -> None:
        self.proxy = proxy
        self.sock = sock
        self.port = port
        self.tls = tls
        self.connection_class = connection_class
        self.loop = proxy.loop
        self.pending: set[asyncio.Task[None]] = set()
        self.closed = False

    def start(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self.pending):
            task.cancel()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: back off rather than spin
                log.warning("listener on port %d cannot accept: %s", self.port, exc)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_RETRY_DELAY, self.start)
                return
            conn.setblocking(False)
            task = self.loop.create_task(self._serve(conn))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    def _factory(self, sni: str | None) -> Callable[[], HttpProxyConnection]:
        cls, proxy, port = self.connection_class, self.proxy, self.port

        def factory() -> HttpProxyConnection:
            conn = cls(proxy)
            conn.listen_port = port
            conn.sni = sni
            return conn

        return factory

    async def _serve(self, sock: socket.socket) -> None:
        stats = self.proxy.tls_stats
        try:
            if self.proxy.closing:
                sock.close()
                return
            await self._hand_over(sock, stats)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError, EOFError) as exc:  # ssl.SSLError is an OSError
            stats["handshake_failures"] += 1
            log.debug("TLS listener on port %d: %s: %s", self.port, type(exc).__name__, exc)
            sock.close()
        except Exception:
            log.exception("TLS listener on port %d failed on a connection", self.port)
            sock.close()

    async def _hand_over(self, sock: socket.socket, stats: dict[str, int]) -> None:
        tls = self.tls  # read once: a policy change applies from the next connection
        mode = tls.mode
        loop = self.loop
        if mode is TlsMode.DISABLE and tls.passthrough is None:
            stats["plaintext"] += 1
            await loop.connect_accepted_socket(self._factory(None), sock)
            return
        async with asyncio.timeout(tls.handshake_timeout):
            is_tls, hello = await self._peek(sock, tls.needs_hello)
        if is_tls is None:
            sock.close()  # closed before saying anything
            return
        sni = hello.sni if hello is not None else None
        if is_tls and tls.passthrough is not None:
            cluster = tls.passthrough(sni)
            if cluster is not None:
                stats["passthrough"] += 1
                tcp = self.proxy.passthrough_proxy(cluster)
                # The policies the listener's owner set (a gateway's): decided on accept, with the SNI.
                tcp.authorizer, tcp.destination_port = tls.passthrough_authorizer, tls.passthrough_port
                await tcp.accept(sock, sni=sni)
                return
        if not is_tls or mode is TlsMode.DISABLE:
            if mode is TlsMode.STRICT:
                stats["plaintext_refused"] += 1
                sock.close()  # no HTTP answer: a plaintext client learns nothing
                return
            stats["plaintext"] += 1
            await loop.connect_accepted_socket(self._factory(None), sock)
            return
        context = tls.context_for(sni)
        if context is None:
            stats["no_certificate"] += 1
            sock.close()
            return
        await loop.connect_accepted_socket(
            self._factory(sni), sock, ssl=context, ssl_handshake_timeout=tls.handshake_timeout
        )
        stats["tls"] += 1

    async def _peek(self, sock: socket.socket, want_hello: bool) -> tuple[bool | None, ClientHello | None]:
        """(is it TLS, its ClientHello when wanted and readable); (None, None) when the client closed first."""
        while True:
            try:
                data = sock.recv(MAX_HELLO_BYTES if want_hello else 1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                await self._readable(sock)
                continue
            if not data:
                return None, None
            if data[0] != 0x16:
                return False, None
            if not want_hello:
                return True, None
            got = parse_client_hello(data)
            if got is NEED_MORE and len(data) < MAX_HELLO_BYTES:
                await asyncio.sleep(PEEK_RETRY_SECONDS)
                continue
            return True, got if isinstance(got, ClientHello) else None

    async def _readable(self, sock: socket.socket) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fd = sock.fileno()
        self.loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            self.loop.remove_reader(fd)
