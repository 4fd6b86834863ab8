"""A gateway's plain TCP listeners: route each new connection by the table, then splice it.

What lives here: ``GatewayTcpListener``, one per gateway port that only TCP
servers open (``core.mesh.gateway_tcp.tcp_listener_ports``). For each
accepted connection it asks ``route_connection`` with the table it holds
*now* (a config push swaps the table in one assignment: new connections
follow it, open ones keep their upstream), takes the chosen destination's
``ClusterState`` (the same balancer and outlier-detection state as the HTTP
routes use) and splices the connection to one of its endpoints at the
endpoint's app address (``proxy.gatewaytls.AppCluster``; a meshed pod's
sidecar captures that port and splices it on to the app). The splice is a
``TcpProxy`` per cluster, which reports the connection to the observer
(Istio's ``istio_tcp_*`` metrics). No route or no cluster for the port: the
connection is closed at once, as Envoy closes a connection no filter chain
matches. The gateway workload's AuthorizationPolicies (``authorizer``, set
with each config) decide each routed connection as it is accepted, with
``destination.port`` the Gateway server's port; a denied one is closed
before any upstream is opened (``proxy.tcp``).

What must not live here: which ports and routes exist and the weighted
choice (``core.mesh``), moving bytes (``proxy.tcp``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import cast

from meshwork.core.mesh.gateway_tcp import route_connection
from meshwork.core.mesh.table import Cluster, RoutingTable
from meshwork.core.security.authz import Authorizer
from meshwork.proxy.gatewaytls import AppCluster
from meshwork.proxy.mesh import ClusterState
from meshwork.proxy.observe import Observer
from meshwork.proxy.server import listen_socket
from meshwork.proxy.tcp import TcpProxy

__all__ = ["GatewayTcpListener"]

log = logging.getLogger("meshwork.proxy")

DRAIN_POLL_S = 0.05  # how often a closing listener looks whether its connections are done


class _Refused(asyncio.Protocol):
    """A connection with nowhere to go: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class GatewayTcpListener:
    """One gateway port's TCP listener; ``route`` gives it each new table."""

    def __init__(self, port: int, *, rng: random.Random, observer: Observer | None = None) -> None:
        self.port = port  # the Gateway server port (routes are by it, whatever port is bound)
        self.rng = rng
        self.observer = observer
        self.table: RoutingTable | None = None
        self.states: Mapping[str, ClusterState] = {}
        self.splicers: dict[str, TcpProxy] = {}  # cluster name -> its splice (and open connections)
        self._apps: dict[str, tuple[ClusterState, Cluster, AppCluster]] = {}
        self.refused = 0  # connections closed for want of a route or cluster
        # The gateway workload's AuthorizationPolicies; None: none apply. New connections follow a change.
        self.authorizer: Authorizer | None = None
        self._server: asyncio.AbstractServer | None = None

    def route(self, table: RoutingTable, states: Mapping[str, ClusterState]) -> None:
        """New connections route with ``table`` from now on; open ones go on as they are."""
        self.table, self.states = table, states
        for name in [n for n, tcp in self.splicers.items() if n not in table.clusters and not tcp.conns]:
            del self.splicers[name]
            self._apps.pop(name, None)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port``; returns the port bound. OSError when it cannot."""
        sock = listen_socket(host, port, reuse_port=reuse_port)
        try:
            self._server = await asyncio.get_running_loop().create_server(self._connection, sock=sock)
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    def _connection(self) -> asyncio.Protocol:
        table = self.table
        decision = route_connection(table, self.port, self.rng.random()) if table is not None else None
        state = None
        if decision is not None and decision.cluster is not None:
            state = self.states.get(decision.cluster.name)
        if state is None:
            self.refused += 1
            log.debug("gateway port %d: connection closed: %s", self.port,
                      decision.reason if decision is not None else "no config yet")  # fmt: skip
            return _Refused()
        return self._splicer(state).protocol()

    def _splicer(self, state: ClusterState) -> TcpProxy:
        name = state.name
        known = self._apps.get(name)
        if known is not None and known[0] is state and known[1] is state.spec:
            app = known[2]
        else:  # a new cluster, or its endpoints changed: map them to their app addresses again
            app = AppCluster(state)
            self._apps[name] = (state, state.spec, app)
        tcp = self.splicers.get(name)
        if tcp is None:
            tcp = self.splicers[name] = TcpProxy(app, observer=self.observer, destination_port=self.port)
        else:
            tcp.cluster = app
        tcp.authorizer = self.authorizer
        return tcp

    @property
    def denied(self) -> int:
        """Connections closed by authorization, over this listener's splices."""
        return sum(tcp.denied for tcp in self.splicers.values())

    @property
    def connections(self) -> int:
        """Open client and upstream sockets of this listener's splices."""
        return sum(len(tcp.conns) for tcp in self.splicers.values())

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening; open connections get ``grace`` seconds to finish, then are closed."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for tcp in list(self.splicers.values()):
            await tcp.close()
        if server is not None:
            await cast(asyncio.Server, server).wait_closed()
