"""Upstream connections and their keep-alive pools, one pool per endpoint (host:port, and TLS setting).

What lives here: ``UpstreamConnection`` (an ``asyncio.Protocol`` that hands
every event to the exchange that currently owns it) and ``Pool`` (idle
connections reused newest-first, a bound on open connections, a bounded queue
of requests waiting for one, connects with a timeout).

An endpoint with ``tls`` (``plan.UpstreamTls``) is connected with TLS: the
context its source holds at connect time, its SNI, and after the handshake
the peer's URI SAN must be one of its identities, else the attempt fails as
a connect failure (503 UF, "TLS error: SAN mismatch ..."), as Envoy's does.
Its pool is keyed apart (``Endpoint.pool_key``): TLS and plaintext
connections, or connections checked against different identities, never mix.

What must not live here: HTTP. The pool moves connections, the owner (the
downstream side, ``proxy.http``) reads and writes them.

The owner protocol (duck-typed, see ``Owner``): ``upstream_ready(conn, token)``
when a connection is ready for the attempt ``token``; ``upstream_failed(token,
kind, detail)`` when connecting failed; ``upstream_data(conn, data)``,
``upstream_lost(conn)`` and ``upstream_paused(paused)`` while it owns one.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import ssl
from typing import Final, Protocol, cast

from meshwork.proxy.plan import Endpoint, ErrorKind, PoolLimits
from meshwork.proxy.tls import check_peer

__all__ = ["OVERFLOW", "Owner", "Pool", "UpstreamConnection"]

log: Final = logging.getLogger(__name__)


class Owner(Protocol):
    def upstream_ready(self, conn: UpstreamConnection, token: int) -> None: ...
    def upstream_failed(self, token: int, kind: ErrorKind, detail: str) -> None: ...
    def upstream_data(self, conn: UpstreamConnection, data: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection) -> None: ...
    def upstream_paused(self, paused: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to an endpoint; idle in its pool or owned by one exchange."""

    __slots__ = ("closed", "idle_since", "owner", "pool", "requests", "transport")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.owner: Owner | None = None
        self.requests = 0  # requests started on this connection
        self.idle_since = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # An idle connection has nothing to say; bytes here mean it is out
            # of step with us (or closing): never reuse it.
            self.transport.abort()
            return
        owner.upstream_data(self, data)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_paused(False)


def _can_leave_from(source: str, host: str) -> bool:
    try:
        src = ipaddress.ip_address(source)
    except ValueError:
        return False
    if not src.is_loopback:
        return True
    try:
        dst = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: it may resolve anywhere
    return dst.is_loopback and dst.version == src.version


class _Overflow:
    """Sentinel: the pool is full and so is its queue (503, flag UO)."""


OVERFLOW: Final = _Overflow()


class Pool:
    """Keep-alive connections to one endpoint, bounded by ``limits``."""

    __slots__ = (
        "_loop",
        "connects",
        "endpoint",
        "idle",
        "limits",
        "now",
        "open",
        "source",
        "waiters",
    )

    def __init__(self, endpoint: Endpoint, limits: PoolLimits, source: str | None = None) -> None:
        """``source``: the local address connections leave from (None: whatever the kernel picks).

        A loopback source (a pod IP on one machine) is used only towards loopback
        addresses: a connection to anywhere else could not leave from it.
        """
        self._loop = asyncio.get_running_loop()
        self.endpoint = endpoint
        self.limits = limits
        self.source = source if source is not None and _can_leave_from(source, endpoint.host) else None
        self.idle: list[UpstreamConnection] = []
        self.now = self._loop.time()  # coarse: updated by the server's sweep
        self.open = 0  # connected or connecting
        self.connects = 0  # connection attempts ever made (for tests and stats)
        self.waiters: collections.deque[tuple[Owner, int]] = collections.deque()

    def acquire(
        self, owner: Owner, token: int, fresh: bool = False
    ) -> UpstreamConnection | _Overflow | None:
        """An idle connection now, or None (``owner.upstream_ready`` or ``_failed`` follows).

        ``fresh`` skips idle connections (after one turned out to be dead).
        """
        idle = self.idle
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed:
                conn.owner = owner
                conn.requests += 1
                return conn
        if self.open < self.limits.max_connections:
            self._connect(owner, token)
            return None
        if len(self.waiters) >= self.limits.max_pending:
            return OVERFLOW
        self.waiters.append((owner, token))
        return None

    def cancel(self, owner: Owner) -> None:
        """``owner`` no longer waits for a connection."""
        if self.waiters:
            self.waiters = collections.deque(w for w in self.waiters if w[0] is not owner)

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The owner is done with ``conn``; keep it for the next request when ``reusable``."""
        conn.owner = None
        if conn.closed:
            return
        max_rq = self.limits.max_requests_per_connection
        if not reusable or (max_rq and conn.requests >= max_rq):
            conn.transport.close()
            return
        while self.waiters:
            owner, token = self.waiters.popleft()
            conn.owner = owner
            conn.requests += 1
            owner.upstream_ready(conn, token)
            return
        if len(self.idle) >= self.limits.max_idle:
            conn.transport.close()
            return
        conn.idle_since = self.now
        self.idle.append(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        """``conn`` closed (either side); its slot frees up for a waiter."""
        self.open -= 1
        if conn.owner is None:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        if self.waiters and self.open < self.limits.max_connections:
            owner, token = self.waiters.popleft()
            self._connect(owner, token)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        self.now = now
        limit = now - self.limits.idle_timeout
        for conn in [c for c in self.idle if c.idle_since < limit]:
            conn.transport.close()

    def close(self) -> None:
        for conn in list(self.idle):
            conn.transport.close()
        self.idle.clear()

    def _connect(self, owner: Owner, token: int) -> None:
        self.open += 1
        self.connects += 1
        self._loop.create_task(self._open(owner, token))

    async def _open(self, owner: Owner, token: int) -> None:
        ep = self.endpoint
        tls = ep.tls
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                if tls is None:
                    _, proto = await self._loop.create_connection(
                        lambda: UpstreamConnection(self), ep.host, ep.port,
                        local_addr=(self.source, 0) if self.source is not None else None,
                    )
                else:
                    _, proto = await self._loop.create_connection(
                        lambda: UpstreamConnection(self), ep.host, ep.port,
                        local_addr=(self.source, 0) if self.source is not None else None,
                        ssl=tls.source.context, server_hostname=tls.sni or "",
                    )
        except (OSError, TimeoutError) as exc:
            self.open -= 1
            if isinstance(exc, TimeoutError):
                detail = "connection timeout"
            elif isinstance(exc, ssl.SSLError):
                detail = f"connection failure, transport failure reason: TLS error: {_tls_reason(exc)}"
            else:
                detail = "connection failure"
            owner.upstream_failed(token, ErrorKind.CONNECT_FAILURE, detail)
            if self.waiters and self.open < self.limits.max_connections:
                nxt, nxt_token = self.waiters.popleft()
                self._connect(nxt, nxt_token)
            return
        conn = proto
        if conn.closed:  # closed before we got here; connection_lost did the accounting
            owner.upstream_failed(token, ErrorKind.CONNECT_FAILURE, "connection failure")
            return
        if tls is not None and tls.identities:
            problem = check_peer(conn.transport.get_extra_info("ssl_object"), tls.identities)
            if problem is not None:
                log.info("upstream %s: %s", ep.key, problem)
                conn.transport.abort()  # connection_lost does the pool's accounting
                owner.upstream_failed(
                    token, ErrorKind.CONNECT_FAILURE,
                    f"connection failure, transport failure reason: TLS error: {problem}",
                )
                return
        conn.owner = owner
        conn.requests = 1
        owner.upstream_ready(conn, token)


def _tls_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words for a failed handshake (the verify message when verification failed)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"CERTIFICATE_VERIFY_FAILED: {exc.verify_message}"
    return str(exc.reason or exc)
