"""A gateway's listeners: one per port its Gateways' servers open, HTTP, TLS or TCP.

What lives here: ``GatewayListeners``, which brings the gateway proxy's
listeners in line with a compiled table: a listener for every port a
Gateway server names (on the port the gateway Service's targetPort maps it
to), its decider for that listener's port behind the workload's guard
(``destination.port`` is the listener's), TLS ports with their certificates
and passthrough (``proxy.gatewaytls``), TCP ports with their ``tcp[]``
routes (``proxy.gatewaytcp``); a port that switches between plaintext, TLS
and TCP gets a new listener, a port no Gateway names any more is closed.
Servers left out (a missing credential, a TCP port that cannot be bound)
are returned, for the NACK.

What must not live here: which servers and routes exist
(``core.mesh``), certificates by SNI (``proxy.gatewaytls``), routing and
splicing TCP connections (``proxy.gatewaytcp``), the config stream and the
sidecar role (``proxy.sidecar``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from meshwork.core.mesh.gateway_tcp import tcp_listener_ports
from meshwork.proxy.gatewaytcp import GatewayTcpListener
from meshwork.proxy.gatewaytls import GatewayTls
from meshwork.proxy.guard import Guard, GuardedDecider
from meshwork.proxy.mesh import ClusterState
from meshwork.proxy.observe import Observer
from meshwork.proxy.plan import Decider
from meshwork.proxy.tls import ListenerTls

__all__ = ["GatewayListeners", "guard_gateway"]

CLOSE_GRACE_S = 1.0  # a listener given up: in-flight requests get this long to finish


class Listen(Protocol):
    """Open (or re-decide) the listener for ``port``, bound on ``bind_port``."""

    def __call__(self, port: int, decider: Decider, bind_port: int, *, tls: ListenerTls | None) -> Awaitable[None]: ...


def guard_gateway(decider: Decider, guard: Guard | None, port: int) -> Decider:
    """A gateway listener's decider behind the guard; destination.port is the listener's port."""
    if guard is None:
        return decider
    return GuardedDecider(decider, guard, destination_port=port)


class GatewayListeners:
    """The gateway's listeners, kept in line with each table it applies.

    ``host``, ``reuse_port`` and ``observer`` are for the TCP listeners, which
    this class opens itself (the HTTP and TLS ones through ``listen``).
    """

    def __init__(self, rng: random.Random, *, host: str = "127.0.0.1", reuse_port: bool = False,
                 observer: Observer | None = None) -> None:  # fmt: skip
        self.tls = GatewayTls(rng)
        self.rng = rng
        self.host = host
        self.reuse_port = reuse_port
        self.observer = observer

    async def update(self, table: Any, proxies: dict[int, Any], *, decider_for: Callable[[int], Decider],
                     listen: Listen, states: Mapping[str, ClusterState],
                     bind_ports: Mapping[int, int], guard: Guard | None = None) -> str | None:  # fmt: skip
        """One listener per port the Gateways open (``proxies``: listen port -> listener, updated in
        place); ``bind_ports`` maps a Gateway server port to the port to listen on; ``guard`` holds
        the policies the TCP listeners and TLS passthrough authorize connections with. Returns
        the servers left out and why (a missing credential), or None."""
        gw_tls = self.tls
        wanted = set(table.ports) | set(table.gateway_tls)
        tcp_ports = tcp_listener_ports(table)
        left_out: list[str] = []
        for port in sorted(wanted):
            decider = decider_for(port)
            was_tls = gw_tls.serving.get(port, False)
            tls: ListenerTls | None = None
            if port in table.gateway_tls:  # passthrough connections pass the guard's policies, from the first
                authorizer = guard.authorizer if guard is not None else None
                tls, skipped = gw_tls.listener(table.gateway_tls[port], states, authorizer)
                left_out += skipped
            else:
                gw_tls.forget(port)
            if isinstance(proxies.get(port), GatewayTcpListener) or (port in proxies and was_tls != (tls is not None)):
                await proxies.pop(port).close(CLOSE_GRACE_S)  # TCP, plaintext <-> TLS: the port gets a new listener
            gw_tls.serving[port] = tls is not None
            await listen(port, decider, bind_ports.get(port, port), tls=tls)
        if tcp_ports and not wanted:
            decider_for(tcp_ports[0])  # builds the clusters' live state, as each HTTP port's decider does
        for port in tcp_ports:
            left_out += await self._tcp(port, table, proxies, states, bind_ports.get(port, port), guard)
        for port in [p for p in proxies if p not in wanted and p not in tcp_ports]:
            await proxies.pop(port).close(CLOSE_GRACE_S)
            gw_tls.forget(port)
        return "; ".join(left_out) or None

    async def _tcp(self, port: int, table: Any, proxies: dict[int, Any], states: Mapping[str, ClusterState],
                   bind_port: int, guard: Guard | None) -> list[str]:  # fmt: skip
        """The TCP listener of ``port``, routing new connections with ``table`` and authorizing them
        with ``guard``'s policies (opened when missing)."""
        authorizer = guard.authorizer if guard is not None else None
        listener = proxies.get(port)
        if listener is not None and not isinstance(listener, GatewayTcpListener):
            await proxies.pop(port).close(CLOSE_GRACE_S)  # it was HTTP or TLS until now
            self.tls.forget(port)
            listener = None
        if listener is not None:
            listener.authorizer = authorizer
            listener.route(table, states)
            return []
        listener = GatewayTcpListener(port, rng=self.rng, observer=self.observer)
        listener.authorizer = authorizer  # before it listens: no connection is ever let in unchecked
        listener.route(table, states)
        try:
            await listener.start(self.host, bind_port, reuse_port=self.reuse_port)
        except OSError as exc:
            return [f"TCP port {port} not served: cannot listen on {self.host}:{bind_port}: {exc}"]
        proxies[port] = listener
        return []
