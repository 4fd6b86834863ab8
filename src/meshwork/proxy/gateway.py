"""A gateway's listeners: one per port its Gateways' servers open, plaintext or TLS.

What lives here: ``GatewayListeners``, which brings the gateway proxy's
listeners in line with a compiled table: a listener for every port a
Gateway server names (on the port the gateway Service's targetPort maps it
to), its decider for that listener's port behind the workload's guard
(``destination.port`` is the listener's), TLS ports with their certificates
and passthrough (``proxy.gatewaytls``); a port that switches between
plaintext and TLS gets a new listener, a port no Gateway names any more is
closed. Servers left out (a missing credential) are returned, for the NACK.

What must not live here: which servers and routes exist
(``core.mesh``), certificates by SNI (``proxy.gatewaytls``), the config
stream and the sidecar role (``proxy.sidecar``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from meshwork.proxy.gatewaytls import GatewayTls
from meshwork.proxy.guard import Guard, GuardedDecider
from meshwork.proxy.mesh import ClusterState
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
    """The gateway's listeners, kept in line with each table it applies."""

    def __init__(self, rng: random.Random) -> None:
        self.tls = GatewayTls(rng)

    async def update(self, table: Any, proxies: dict[int, Any], *, decider_for: Callable[[int], Decider],
                     listen: Listen, states: Mapping[str, ClusterState],
                     bind_ports: Mapping[int, int]) -> str | None:  # fmt: skip
        """One listener per port the Gateways open (``proxies``: listen port -> listener, updated in
        place); ``bind_ports`` maps a Gateway server port to the port to listen on. Returns the
        servers left out and why (a missing credential), or None."""
        gw_tls = self.tls
        wanted = set(table.ports) | set(table.gateway_tls)
        left_out: list[str] = []
        for port in sorted(wanted):
            decider = decider_for(port)
            was_tls = gw_tls.serving.get(port, False)
            tls: ListenerTls | None = None
            if port in table.gateway_tls:
                tls, skipped = gw_tls.listener(table.gateway_tls[port], states)
                left_out += skipped
            else:
                gw_tls.forget(port)
            if port in proxies and was_tls != (tls is not None):
                await proxies.pop(port).close(CLOSE_GRACE_S)  # plaintext <-> TLS: the port gets a new listener
            gw_tls.serving[port] = tls is not None
            await listen(port, decider, bind_ports.get(port, port), tls=tls)
        for port in [p for p in proxies if p not in wanted]:
            await proxies.pop(port).close(CLOSE_GRACE_S)
            gw_tls.forget(port)
        return "; ".join(left_out) or None
