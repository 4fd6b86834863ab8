"""The proxy's listeners and its process: HTTP and TCP servers, the sweep, the access log, workers.

What lives here: ``HttpProxy`` (listens, owns the client connections and the
upstream pools, runs the periodic sweep that enforces timeouts, hands
finished requests to its observer), ``AccessLog`` (Envoy-like JSON lines), ``listen_socket`` and
``run`` / ``run_workers``, which run a proxy in this process or in N forked
workers sharing the port with SO_REUSEPORT.

A listener started with a ``ListenerTls`` policy (``proxy.tls``) accepts
sockets itself (``proxy.tlslisten``): it peeks at the first bytes, then hands
the socket to a TLS transport (the context chosen by SNI), a plaintext one,
or a TCP splice (passthrough). A listener without one is a plain asyncio
server: the plaintext hot path is unchanged.

What must not live here: HTTP handling (``proxy.http``), decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import IO, TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from meshwork.proxy.observe import ConnectionInfo, Observer, Observers, RequestInfo
from meshwork.proxy.plan import Cluster, Decider, Downstream
from meshwork.proxy.tcp import TcpProxy
from meshwork.proxy.telemetry import access_record
from meshwork.proxy.tlslisten import TlsListener
from meshwork.proxy.upstream import Pool

if TYPE_CHECKING:
    from meshwork.proxy.http import HttpProxyConnection
    from meshwork.proxy.tls import ListenerTls

__all__ = ["AccessLog", "HttpProxy", "listen_socket", "run", "run_workers"]

log: Final = logging.getLogger("meshwork.proxy")

# How often the sweep checks deadlines: timeouts fire at most this late.
SWEEP_SECONDS: Final = 0.05
# Envoy's default idle_timeout for downstream connections is 1 h.
IDLE_TIMEOUT: Final = 3600.0
# A request head must arrive within this long (slowloris); Envoy leaves it
# unset by default, the control plane's httpd uses 30 s.
HEADERS_TIMEOUT: Final = 60.0
# Listen backlog: like haproxy's and nginx's defaults on Linux (somaxconn).
BACKLOG: Final = 4096


class AccessLog:
    """An observer writing JSON lines, one per request, with Envoy's field names; flushed every sweep."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    @classmethod
    def open(cls, path: str) -> AccessLog:
        if path == "-":
            return cls(sys.stdout)
        return cls(open(path, "a", buffering=1 << 16, encoding="utf-8"))

    def write(self, record: dict[str, object]) -> None:
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def request_done(self, info: RequestInfo) -> None:
        # The sidecar's access log fields (``proxy.telemetry``), and how many attempts it took.
        self.write({**access_record(info, time.time()), "attempts": info.attempts})

    def connection_opened(self, info: ConnectionInfo) -> None:
        pass

    def connection_closed(self, info: ConnectionInfo) -> None:
        pass


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (meshwork._accel); tests subclass it
class HttpProxy:
    """An HTTP/1.1 proxy listener set, driven by ``decider``."""

    def __init__(
        self,
        decider: Decider,
        *,
        access_log: AccessLog | None = None,
        observer: Observer | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        headers_timeout: float = HEADERS_TIMEOUT,
        source_address: str | None = None,
    ) -> None:
        """``observer`` hears of every finished request (``proxy.observe``); ``access_log`` is one more.

        ``source_address``: the local IP upstream connections leave from (a sidecar's pod IP,
        so the destination sees who calls); None lets the kernel choose.
        """
        self.decider = decider
        self.source_address = source_address
        self.access_log = access_log
        if access_log is not None:
            observer = access_log if observer is None else Observers(observer, access_log)
        # None: the engine neither reads the clock nor builds reports.
        self.observer: Observer | None = observer
        # The protocol for client connections (tests substitute a subclass).
        self.connection_class: type[HttpProxyConnection] | None = None
        self.idle_timeout = idle_timeout
        self.headers_timeout = headers_timeout
        self.loop = asyncio.get_running_loop()
        self.conns: set[HttpProxyConnection] = set()
        self.pools: dict[str, Pool] = {}
        self.closing = False
        self._servers: list[asyncio.Server] = []
        self._tls_listeners: list[TlsListener] = []
        self._passthrough: dict[str, TcpProxy] = {}
        # What TLS listeners did with the connections they accepted (tests and stats).
        self.tls_stats: dict[str, int] = dict.fromkeys(
            ("tls", "plaintext", "plaintext_refused", "handshake_failures", "passthrough", "no_certificate"), 0
        )
        self._tick: asyncio.TimerHandle | None = None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        tls: ListenerTls | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Listen (on ``sock`` if given); returns the port.

        ``reuse_port``: open the socket with SO_REUSEPORT, so that the other
        workers of a gateway (``proxy.workers``) listen on the same port.

        ``tls``: the listener's TLS policy (STRICT, PERMISSIVE or DISABLE, contexts
        by SNI, passthrough), read for every new connection, so its fields may
        be changed while it runs. None: plaintext HTTP only, on the fast path.
        """
        from meshwork.proxy.http import HttpProxyConnection

        cls = self.connection_class or HttpProxyConnection
        if sock is None:
            sock = listen_socket(host, port, reuse_port=reuse_port)
        bound = int(sock.getsockname()[1])

        def factory() -> HttpProxyConnection:
            conn = cls(self)
            conn.listen_port = bound
            return conn

        if tls is None:
            server = await self.loop.create_server(factory, sock=sock, backlog=BACKLOG)
            self._servers.append(server)
        else:
            listener = TlsListener(self, sock, bound, tls, cls)
            listener.start()
            self._tls_listeners.append(listener)
        if self._tick is None:
            self._tick = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        return bound

    def passthrough_proxy(self, cluster: Cluster) -> TcpProxy:
        """The TCP splicer for a passthrough cluster (one per cluster name, kept across config pushes)."""
        tcp = self._passthrough.get(cluster.name)
        if tcp is None:
            tcp = self._passthrough[cluster.name] = TcpProxy(cluster, observer=self.observer)
        else:
            tcp.cluster = cluster
        return tcp

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.conns):
            try:
                conn.sweep(now)
            except Exception:
                log.exception("sweep failed for a connection")
        for pool in self.pools.values():
            pool.sweep(now)
        if self.access_log is not None:
            self.access_log.flush()
        self._tick = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def drain(self, which: Callable[[Downstream], bool]) -> int:
        """Close the client connections ``which`` picks: idle ones now, busy ones after their
        response (Envoy drains connections of a filter chain a listener update removed). Returns
        how many were picked."""
        picked = [conn for conn in self.conns if which(conn.downstream)]
        for conn in picked:
            conn.drain()
        return len(picked)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, give in-flight exchanges ``grace`` seconds."""
        self.closing = True
        for server in self._servers:
            server.close()
        for listener in self._tls_listeners:
            listener.close()
        for conn in list(self.conns):
            conn.shutdown()
        deadline = self.loop.time() + grace
        while self.conns and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.conns):
            conn.transport.abort()
        for pool in self.pools.values():
            pool.close()
        for tcp in self._passthrough.values():
            await tcp.close()
        if self._tick is not None:
            self._tick.cancel()
        if self.access_log is not None:
            self.access_log.flush()
        for server in self._servers:
            await server.wait_closed()


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets several workers share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


Serve = Callable[[socket.socket, asyncio.Event], Coroutine[Any, Any, None]]


def run(serve: Serve, sock: socket.socket, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run ``serve(sock, stop)`` on uvloop until SIGTERM or SIGINT sets ``stop``."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = loop.create_task(serve(sock, stop))
        await asyncio.sleep(0)
        # Everything loaded so far lives for the whole process: keep the
        # cyclic collector from walking it again and again.
        gc.collect()
        gc.freeze()
        if on_ready is not None:
            on_ready()
        await task

    uvloop.run(main())


def run_workers(serve: Serve, host: str, port: int, workers: int, *, announce: Callable[[int], None]) -> int:
    """Fork ``workers`` processes, each with its own SO_REUSEPORT socket on one port.

    The workers stay in this process group (so whoever stops the group stops
    them all); SIGTERM or SIGINT here is passed on to them, and each worker
    also gets SIGTERM if this process dies. Returns an exit status.
    """
    probe = listen_socket(host, port, reuse_port=True)  # fixes the port when port is 0
    port = int(probe.getsockname()[1])
    ready_r, ready_w = os.pipe()
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                os.close(ready_r)
                probe.close()
                _die_with_parent()
                sock = listen_socket(host, port, reuse_port=True)

                def ready() -> None:
                    os.write(ready_w, b"r")
                    os.close(ready_w)

                run(serve, sock, on_ready=ready)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    os.close(ready_w)
    got = 0
    while got < workers:
        chunk = os.read(ready_r, workers)
        if not chunk:
            break
        got += len(chunk)
    os.close(ready_r)
    probe.close()

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if got == workers:
        announce(port)
    else:
        forward(signal.SIGTERM, None)
    status = 0
    for pid in children:
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                st = 0
                break
        if os.waitstatus_to_exitcode(st) not in (0, -signal.SIGTERM):
            status = 1
    return status if got == workers else 1


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies (PR_SET_PDEATHSIG), so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
