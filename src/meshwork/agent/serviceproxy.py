"""The node's service proxy (kube-proxy's job): ClusterIP:port -> a ready endpoint.

What lives here: ``ServiceProxy``, which keeps one listener on
``<clusterIP>:<port>`` for every TCP port of every Service that has a
ClusterIP (not headless, not ExternalName), and splices each accepted
connection to one of the Service's ready endpoints, round robin, trying the
next endpoint when a connect fails (kube-proxy's userspace mode, IPVS ``rr``).
``backends`` is the pure part: which ``ip:port`` pairs a Service port leads to.

It reads the agent's Service and Endpoints informers and polls them every
``SYNC_S``: listeners come and go with the Services, and the endpoint list of
a listener is replaced in place, so open connections are never disturbed.
A connection that arrives while the Service has no ready endpoint is reset at
once, the nearest a user-space proxy gets to kube-proxy's REJECT.

Several agents on one machine (several nodes of one cluster) all try to bind
the same ClusterIPs: the first one gets each address and serves it for every
node, since all of them see the same Services and Endpoints; the others log
the ``EADDRINUSE`` once per Service port and retry now and then, so that one
takes over when the first agent goes. Two separate meshwork clusters on one
machine hand out the same ClusterIPs, so only the first one's Services are
reachable by ClusterIP; their pods still reach each other through the mesh.

Mesh ``tcp[]`` routes: given the VirtualService, DestinationRule and Pod
informers too, it compiles their mesh routing table (``core.mesh.mesh_tcp``)
whenever one of the informers changed and some VirtualService has ``tcp[]``
routes for the mesh. A new connection to a Service one of those routes
holds for goes to a destination chosen by weight for that connection, and
to that destination's endpoints (a DestinationRule subset's pods) in turn;
other Services keep plain round robin. A new table only changes where new
connections go: open ones stay with their upstream. Routes that depend on
the client (``sourceLabels``, ``sourceNamespace``) never hold here: the
proxy cannot know who connected.

UDP and SCTP ports are not served (no datagram proxy here); session affinity
is not honoured. What must not live here: anything that looks at the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from meshwork.core.mesh.gateway_tcp import TcpDecision
from meshwork.core.mesh.mesh_tcp import (
    clusterip_snapshot,
    compile_clusterip,
    has_mesh_tcp_routes,
    route_clusterip,
    service_host,
)
from meshwork.core.mesh.table import RoutingTable
from meshwork.model.core import Endpoints, Service, ServicePort

__all__ = ["Backend", "ListenKey", "ServiceProxy", "backends", "listeners_wanted"]

log = logging.getLogger("meshwork.agent.serviceproxy")

SYNC_S = 0.5  # how often the informers are compared with the listeners
REBIND_S = 5.0  # how often a taken or refused address is tried again
CONNECT_TIMEOUT_S = 5.0  # to a loopback endpoint a connect is refused or done at once
EARLY_LIMIT = (
    64 * 1024
)  # bytes held per side until the splice is joined (asyncio's write high-water mark)
BACKLOG = 511  # kube-proxy's userspace listener used Go's default (somaxconn)

Backend = tuple[str, int]  # (pod ip, port)
ListenKey = tuple[str, int]  # (cluster ip, port)


class _Cache(Protocol):
    """What the agent's ``Informer`` offers: the objects by ``namespace/name``.

    An informer that also counts its ``changes`` (an int that grows with every
    list and watch event) spares a recompile of the mesh table when nothing changed.
    """

    @property
    def items(self) -> Mapping[str, Any]: ...


def _changes(cache: _Cache) -> int | None:
    found = getattr(cache, "changes", None)
    return found if isinstance(found, int) else None


def cluster_ips(svc: Service) -> list[str]:
    """The Service's ClusterIPs; none for headless and ExternalName Services."""
    spec = svc.spec
    if spec.type == "ExternalName":
        return []
    ips = spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else [])
    return [ip for ip in ips if ip and ip != "None"]


def backends(port: ServicePort, eps: Endpoints | None) -> tuple[Backend, ...]:
    """The ready ``(ip, port)`` pairs behind one Service port.

    The Endpoints controller names each endpoint port after the Service port
    it came from, so the match is by name (an unnamed single port matches the
    unnamed endpoint port); not-ready addresses are never used.
    """
    if eps is None:
        return ()
    out: list[Backend] = []
    want = port.name or ""
    for subset in eps.subsets or ():
        for ep_port in subset.ports or ():
            if (ep_port.name or "") != want or ep_port.protocol != "TCP":
                continue
            out.extend((addr.ip, ep_port.port) for addr in subset.addresses or ())
    return tuple(out)


def listeners_wanted(
    services: Mapping[str, Service], endpoints: Mapping[str, Endpoints]
) -> dict[ListenKey, tuple[str, tuple[Backend, ...]]]:
    """``(clusterIP, port) -> (namespace/name, ready backends)`` for every TCP Service port."""
    out: dict[ListenKey, tuple[str, tuple[Backend, ...]]] = {}
    for key, svc in sorted(services.items()):
        ips = cluster_ips(svc)
        if not ips:
            continue
        eps = endpoints.get(key)
        for port in svc.spec.ports or ():
            if port.protocol != "TCP":
                continue
            found = backends(port, eps)
            for ip in ips:
                out.setdefault((ip, port.port), (key, found))
    return out


# ---------------------------------------------------------------------------
# the splice
# ---------------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One end of a spliced pair; ``peer`` is the other end once both are up."""

    def __init__(self, owner: ServiceProxy) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # an upstream's bytes that came before the splice was joined
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.owner.conns.add(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            self.early.append(data)
            if self.transport is not None and sum(map(len, self.early)) > EARLY_LIMIT:
                self.transport.pause_reading()  # resumed when the splice is joined
        elif peer.transport is not None:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None:
            return True  # passed on when the splice is joined
        if peer.transport is None or peer.transport.is_closing():
            return False
        if peer.eof:  # both directions are finished
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.owner.conns.discard(self)
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Downstream(_Side):
    """A client of the ClusterIP; reading waits until the upstream is connected."""

    def __init__(self, owner: ServiceProxy, listener: _Listener) -> None:
        super().__init__(owner)
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.owner.spawn(self.owner.connect(self))


def _reset(transport: asyncio.Transport) -> None:
    """Close with a RST (SO_LINGER 0), as a rejected connection ends."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _flush(src: _Side, dst: _Side) -> None:
    """Pass on to ``dst`` what ``src`` received before the splice was joined.

    A client's bytes can arrive between accept and the upstream connect (the
    loop may read before ``pause_reading`` takes effect), and an upstream's
    right after its connect, before the two ends know each other.
    """
    out = dst.transport
    assert out is not None
    if src.early:
        out.write(b"".join(src.early))
        src.early = []
    if src.lost:
        out.close()
    elif src.eof and not out.is_closing():
        if dst.eof:
            out.close()
            if src.transport is not None:
                src.transport.close()
        elif out.can_write_eof():
            out.write_eof()


@dataclass
class _Listener:
    key: ListenKey
    service: str  # namespace/name
    backends: tuple[Backend, ...]
    server: asyncio.Server | None = None
    next: int = 0  # round-robin position
    failed_at: float | None = None  # loop time of the last failed bind
    logged: bool = False  # the bind failure was logged

    def order(self) -> list[Backend]:
        """The backends to try for one connection: round robin, then the rest in turn."""
        found = self.backends
        if not found:
            return []
        start = self.next % len(found)
        self.next = start + 1
        return [found[(start + i) % len(found)] for i in range(len(found))]


class ServiceProxy:
    """ClusterIP listeners kept in step with the Service and Endpoints informers.

    With ``virtual_services``, ``destination_rules`` and ``pods`` informers it
    also follows the mesh's ``tcp[]`` routes (see the module docstring);
    ``rng`` draws the weighted choice of each connection.
    """

    def __init__(
        self,
        services: _Cache,
        endpoints: _Cache,
        *,
        virtual_services: _Cache | None = None,
        destination_rules: _Cache | None = None,
        pods: _Cache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.endpoints = endpoints
        self.virtual_services = virtual_services
        self.destination_rules = destination_rules
        self.pods = pods
        self.rng = rng or random.Random()
        self.table: RoutingTable | None = None  # the mesh tcp routes; None: round robin everywhere
        self._table_of: tuple[int | None, ...] | None = None  # the informers' changes it was built from
        self._next: dict[str, int] = {}  # round-robin position per cluster of a routed connection
        self.listeners: dict[ListenKey, _Listener] = {}
        self.conns: set[_Side] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # spliced so far

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Sync every ``SYNC_S`` until cancelled; then close every listener and connection."""
        try:
            while True:
                try:
                    await self.sync()
                except Exception:
                    log.exception("service proxy: sync failed; trying again")
                await asyncio.sleep(SYNC_S)
        finally:
            self.close()

    def refresh_table(self) -> None:
        """Recompile the mesh table when an informer changed (every time for caches without ``changes``)."""
        if self.virtual_services is None:
            return
        caches = [self.services, self.endpoints, self.virtual_services, self.destination_rules, self.pods]
        seen = tuple(_changes(c) if c is not None else 0 for c in caches)
        if self._table_of == seen and None not in seen:
            return
        self._table_of = seen
        vss = list(self.virtual_services.items.values())
        if not has_mesh_tcp_routes(vss):
            self.table = None
            return
        pod_labels = {
            (p.metadata.namespace or "default", p.metadata.name or ""): p.metadata.labels or {}
            for p in (self.pods.items.values() if self.pods is not None else ())
        }
        rules = self.destination_rules.items.values() if self.destination_rules is not None else ()
        try:
            self.table = compile_clusterip(clusterip_snapshot(
                self.services.items.values(), self.endpoints.items, pod_labels, vss, rules))  # fmt: skip
        except Exception:
            self.table = None  # round robin until the next change
            raise

    def decide(self, lst: _Listener) -> TcpDecision | None:
        """The mesh route of a new connection to ``lst``; None: the Service's endpoints, round robin."""
        table = self.table
        if table is None:
            return None
        ns, _, name = lst.service.partition("/")
        return route_clusterip(table, service_host(name, ns, table.domain), lst.key[1], self.rng.random())

    def _routed(self, decision: TcpDecision) -> list[Backend]:
        """The endpoints of the decision's cluster, starting with the next in turn."""
        cluster = decision.cluster
        if cluster is None or not cluster.endpoints:
            return []
        found = [(e.address, e.port) for e in cluster.endpoints]
        start = self._next.get(cluster.name, 0) % len(found)
        self._next[cluster.name] = start + 1
        return found[start:] + found[:start]

    async def sync(self) -> None:
        """Open, update and close listeners to match the informers once."""
        self.refresh_table()
        wanted = listeners_wanted(self.services.items, self.endpoints.items)
        for key in [
            k for k, lst in self.listeners.items() if k not in wanted or lst.service != wanted[k][0]
        ]:
            self._drop(key)
        now = asyncio.get_running_loop().time()
        for key, (service, found) in wanted.items():
            lst = self.listeners.get(key)
            if lst is None:
                lst = self.listeners[key] = _Listener(key, service, found)
            lst.backends = found
            if lst.server is None and (lst.failed_at is None or now - lst.failed_at >= REBIND_S):
                await self._bind(lst, now)

    async def _bind(self, lst: _Listener, now: float) -> None:
        ip, port = lst.key
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
            lst.server = await loop.create_server(lambda: _Downstream(self, lst), sock=sock)
        except OSError as exc:
            sock.close()
            lst.failed_at = now
            if not lst.logged:
                lst.logged = True
                why = {
                    errno.EADDRINUSE: "the address is taken (another agent on this machine serves it?)",
                    errno.EACCES: "a port below 1024 needs root or net.ipv4.ip_unprivileged_port_start",
                    errno.EADDRNOTAVAIL: "the address is not on this machine",
                }.get(exc.errno or 0, str(exc))
                # Taken is the normal case for the second agent on a machine: not a warning.
                level = logging.INFO if exc.errno == errno.EADDRINUSE else logging.WARNING
                log.log(level, "service %s: not serving %s:%d: %s; retrying every %.0fs",
                        lst.service, ip, port, why, REBIND_S)  # fmt: skip
            return
        if lst.logged:
            log.info("service %s: now serving %s:%d", lst.service, ip, port)
        lst.failed_at, lst.logged = None, False

    def _drop(self, key: ListenKey) -> None:
        lst = self.listeners.pop(key)
        if lst.server is not None:
            lst.server.close()  # open connections carry on until either end closes

    async def connect(self, down: _Downstream) -> None:
        loop = asyncio.get_running_loop()
        client = down.transport
        assert client is not None
        decision = self.decide(down.listener)
        if decision is None:
            order = down.listener.order()
        else:
            order = self._routed(decision)
            if not order:
                log.debug("service %s: %s; closing the connection", down.listener.service,
                          decision.reason if decision.cluster is None else f"{decision.reason}: no ready endpoint")  # fmt: skip
        for host, port in order:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    _, proto = await loop.create_connection(lambda: _Side(self), host, port)
            except (OSError, TimeoutError) as exc:
                log.debug(
                    "service %s: %s:%d: %s; trying the next endpoint",
                    down.listener.service,
                    host,
                    port,
                    exc,
                )
                continue
            up = proto
            assert up.transport is not None
            if client.is_closing():
                up.transport.close()
                return
            up.peer, down.peer = down, up
            self.connections += 1
            _flush(down, up)
            _flush(up, down)
            for side in (client, up.transport):
                if not side.is_closing():
                    side.resume_reading()
            return
        _reset(client)  # no ready endpoint took the connection

    def close(self) -> None:
        """Close every listener and every open connection (the agent is stopping)."""
        for key in list(self.listeners):
            self._drop(key)
        for side in list(self.conns):
            if side.transport is not None:
                side.transport.close()
        for task in list(self._tasks):
            task.cancel()
