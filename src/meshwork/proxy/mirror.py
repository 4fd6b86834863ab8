"""Request mirroring (VirtualService ``mirror``): a fire-and-forget copy of a request.

What lives here: ``Shadow``, one copy of one request on its way to one
endpoint of the mirror cluster, and ``shadow_authority``. The engine
(``proxy.http``) makes a ``Shadow`` when the plan asks for a mirror, feeds it
the request body as it forwards it, and calls ``send`` once the request has
been read whole (Envoy sends the shadow once the whole request is parsed).
From then on the shadow owns its pooled upstream connection: it reads the
answer only to know where it ends (so the connection can be reused) and
drops it.

Rules: a shadow never writes to the client, never delays nor fails the main
exchange, and is never retried. A body larger than ``MAX_MIRROR_BODY`` is
not mirrored. The Host header gets ``-shadow`` appended to its host part,
before any port (Envoy's shadow writer: ``reviews:9080`` becomes
``reviews-shadow:9080``).

What must not live here: the decision to mirror (the plan's), HTTP framing
(``proxy.response``), head editing (``proxy.heads``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from meshwork.errors import RemoteProtocolError
from meshwork.proxy.heads import request_head
from meshwork.proxy.plan import Cluster, Endpoint, ErrorKind, Forward, Outcome
from meshwork.proxy.response import ResponseReader
from meshwork.proxy.upstream import OVERFLOW, Pool, UpstreamConnection

if TYPE_CHECKING:
    import asyncio

    from meshwork.core.http1 import Request
    from meshwork.proxy.server import HttpProxy

__all__ = ["MAX_MIRROR_BODY", "MIRROR_TIMEOUT", "Shadow", "shadow_authority"]

log = logging.getLogger(__name__)

# Mirrored bodies are held until the request ends; like the retry buffer
# (proxy.http MAX_RETRY_BODY), larger ones are not copied.
MAX_MIRROR_BODY = 64 * 1024
# A shadow that has not been answered in this long is dropped (Envoy's
# default route timeout, which also bounds its shadows).
MIRROR_TIMEOUT = 15.0

_EMPTY: frozenset[Endpoint] = frozenset()


def shadow_authority(host: bytes) -> bytes:
    """``host[:port]`` with ``-shadow`` on the host part (IPv6 literals in brackets kept whole)."""
    if host[:1] == b"[":
        end = host.find(b"]") + 1
        return host[:end] + b"-shadow" + host[end:]
    name, sep, port = host.partition(b":")
    return name + b"-shadow" + sep + port


class Shadow:
    """One mirrored copy of one request. Implements ``proxy.upstream.Owner``."""

    __slots__ = (
        "cluster",
        "conn",
        "done",
        "endpoint",
        "head_request",
        "parts",
        "pool",
        "reader",
        "server",
        "size",
        "timeout",
        "timer",
    )

    def __init__(self, server: HttpProxy, cluster: Cluster, req: Request, plan: Forward) -> None:
        self.server = server
        self.cluster = cluster
        authority = shadow_authority(plan.rewrite_authority or req.host or b"")
        head = request_head(req, replace(plan, rewrite_authority=authority))
        self.parts: list[bytes] | None = [head]  # None: given up (too large) or sent
        self.size = 0
        self.head_request = req.method == b"HEAD"
        self.timeout = plan.timeout or MIRROR_TIMEOUT
        self.reader = ResponseReader()
        self.endpoint: Endpoint | None = None
        self.pool: Pool | None = None
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def add(self, data: bytes) -> None:
        """More request body, framed as it goes upstream."""
        parts = self.parts
        if parts is None:
            return
        self.size += len(data)
        if self.size > MAX_MIRROR_BODY:
            self.parts = None
            self.done = True
            return
        parts.append(data)

    def send(self) -> None:
        """The request is complete: pick an endpoint and send the copy."""
        if self.parts is None or self.done:
            return
        endpoint = self.cluster.pick(_EMPTY)
        if endpoint is None:
            self.done = True
            return
        self.endpoint = endpoint
        pools = self.server.pools
        pool = pools.get(endpoint.pool_key)
        if pool is None:
            pool = pools[endpoint.pool_key] = Pool(endpoint, self.cluster.limits, self.server.source_address)
        self.pool = pool
        self.timer = self.server.loop.call_later(self.timeout, self._give_up)
        conn = pool.acquire(self, 0)
        if conn is OVERFLOW:
            self._end(ErrorKind.OVERFLOW)
        elif conn is not None:
            self._go(conn)  # type: ignore[arg-type]

    def _go(self, conn: UpstreamConnection) -> None:
        parts = self.parts
        assert parts is not None
        self.parts = None
        self.conn = conn
        self.reader.start(self.head_request, False)
        conn.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def _end(self, outcome: Outcome) -> None:
        self.done = True
        self.conn = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.endpoint is not None:
            try:
                self.cluster.release(self.endpoint, outcome)
            except Exception:
                log.exception("cluster release failed for a mirrored request")

    def _give_up(self) -> None:
        self.timer = None
        conn = self.conn
        if conn is not None:
            conn.owner = None
            conn.transport.abort()
        elif self.pool is not None:
            self.pool.cancel(self)
        if not self.done:
            self._end(ErrorKind.TIMEOUT)

    # --- proxy.upstream.Owner ---------------------------------------------------

    def upstream_ready(self, conn: UpstreamConnection, token: int) -> None:
        if self.done:
            conn.pool.release(conn, True)
            return
        self._go(conn)

    def upstream_failed(self, token: int, kind: ErrorKind, detail: str) -> None:
        if not self.done:
            self._end(kind)

    def upstream_data(self, conn: UpstreamConnection, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
        except RemoteProtocolError:
            conn.owner = None
            conn.transport.abort()
            self._end(ErrorKind.PROTOCOL)
            return
        if reader.done:
            status = reader.status
            conn.pool.release(conn, reader.keep_alive and not reader.excess and not reader.upgraded)
            self._end(status)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if not self.done:
            # A body that runs until the upstream closes ends here, as it should.
            self._end(self.reader.status if self.reader.close_delimited else ErrorKind.RESET)

    def upstream_paused(self, paused: bool) -> None:
        pass  # the shadow writes one request and nothing more
