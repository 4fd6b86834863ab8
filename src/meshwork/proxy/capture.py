"""Inbound capture: the sidecar's listeners on ``$POD_IP:<port>`` for each of its app's ports.

What lives here: ``InboundCapture``, which keeps one listener per app port on
the pod IP while the app listens on its own address (``core.inject.app_ip``),
so that no client reaches the app around its sidecar (why, and how a port
is decided: ``proxy.inbound``):

* an HTTP port gets an ``HttpProxy`` deciding with
  ``InboundDecider.at_port``, behind the workload's guard and rate limits,
  with the port's mTLS mode; a port that turns STRICT drains the plaintext
  connections it had;
* a port that is not HTTP (``opaque_ports``) is spliced as TCP to the app,
  and closed under STRICT (no mTLS for TCP here); the workload's
  AuthorizationPolicies decide each new connection to it (``proxy.tcp``:
  a denied one is closed before it reaches the app), and a change of
  policies applies to the next connection;
* a port no Service sends to any more loses its listener; a port the app
  still holds (started before capture, or on ``0.0.0.0``) is logged and
  left to the app until it is free.

What must not live here: which port a request is for (``proxy.inbound``),
the :15006 listener and the config it follows (``proxy.sidecar``), the
engines (``proxy.server``, ``proxy.tcp``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from meshwork.core.security.authz import Authorizer
from meshwork.proxy.guard import Guard, GuardedDecider
from meshwork.proxy.inbound import AppPort, InboundDecider, opaque_ports
from meshwork.proxy.meshtls import InboundMtls, MeshTls
from meshwork.proxy.observe import Observer
from meshwork.proxy.plan import Decider
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.tls import ListenerTls, TlsMode

__all__ = ["InboundCapture"]

log = logging.getLogger("meshwork.proxy")

CLOSE_GRACE_S = 1.0  # a listener given up: in-flight requests get this long to finish


class InboundCapture:
    """The listeners on ``$POD_IP:<port>`` for the app's ports, forwarding to the app's own address."""

    def __init__(self, proxy_id: str, listen_host: str, pod_ports: tuple[AppPort, ...]) -> None:
        self.proxy_id = proxy_id
        self.listen_host = listen_host
        self.pod_ports = pod_ports
        self.listeners: dict[int, Any] = {}  # app port -> HttpProxy or TcpProxy on $POD_IP:<port>
        self._tls: dict[int, ListenerTls] = {}  # app port -> its listener's mTLS policy

    async def update(self, raw: dict[str, Any], inbound: InboundDecider, pod_ip: str, mtls: InboundMtls | None, *,
                     mesh_tls: MeshTls | None, guard: Guard | None, limit: Callable[[Decider], Decider],
                     observer: Observer | None) -> None:  # fmt: skip
        """A listener for every app port, each with its port's mTLS mode, the workload's ``guard``
        and rate limits (``limit``), as :15006 has. A port that is not HTTP is spliced as TCP, and
        closed under STRICT (no mTLS for TCP here)."""
        wanted = [p.port for p in inbound.ports]
        opaque = opaque_ports(raw, pod_ip, self.pod_ports)
        for port in wanted:
            mode = mtls.mode_for(port) if mesh_tls is not None and mtls is not None else None
            if port in opaque:
                authorizer = guard.authorizer if guard is not None else None
                await self._tcp(port, inbound, pod_ip, observer, authorizer, refused=mode is TlsMode.STRICT)
                continue
            decider: Decider = inbound.at_port(port)
            if guard is not None:
                decider = GuardedDecider(decider, guard, destination_port=port, destination_ip=pod_ip)
            decider = limit(decider)
            tls: ListenerTls | None = None
            if mesh_tls is not None and mode is not None:
                tls = self._tls.setdefault(port, ListenerTls(mode=mode))
                tls.holder = mesh_tls.server
                was, tls.mode = tls.mode, mode
                proxy = self.listeners.get(port)
                if isinstance(proxy, HttpProxy) and mode is TlsMode.STRICT and was is not TlsMode.STRICT:
                    proxy.drain(lambda downstream: not downstream.tls)  # no plaintext goes on under STRICT
            await self._http(port, decider, pod_ip, tls, observer)
        for port in [p for p in self.listeners if p not in wanted]:  # a Service no longer sends there
            await self._release(port)

    async def close(self) -> None:
        for port in list(self.listeners):
            await self._release(port)

    async def _release(self, port: int) -> None:
        proxy = self.listeners.pop(port, None)
        self._tls.pop(port, None)
        if isinstance(proxy, HttpProxy):
            await proxy.close(CLOSE_GRACE_S)
        elif proxy is not None:
            await proxy.close()

    async def _http(self, port: int, decider: Decider, pod_ip: str, tls: ListenerTls | None,
                    observer: Observer | None) -> None:  # fmt: skip
        proxy = self.listeners.get(port)
        if isinstance(proxy, HttpProxy):
            proxy.decider = decider
            return
        await self._release(port)  # a TCP splice before the port's protocol was known
        if tls is not None:
            self._tls[port] = tls
        proxy = HttpProxy(decider, observer=observer)
        if await self._bind(port, pod_ip, proxy.start(self.listen_host, port, tls=tls)):
            self.listeners[port] = proxy
        else:
            await proxy.close(0.0)

    async def _tcp(self, port: int, inbound: InboundDecider, pod_ip: str, observer: Observer | None,
                   authorizer: Authorizer | None, *, refused: bool) -> None:  # fmt: skip
        from meshwork.proxy.tcp import TcpProxy

        proxy = self.listeners.get(port)
        if isinstance(proxy, TcpProxy):
            if not refused:
                proxy.cluster = inbound.cluster_at(port)
                proxy.authorizer = authorizer  # new connections follow the policies; open ones go on
                return
        if proxy is not None:
            await self._release(port)
        if refused:
            return  # STRICT: nothing listens on the pod IP's port, a plaintext client is refused
        tcp = TcpProxy(inbound.cluster_at(port), observer=observer, authorizer=authorizer, destination_port=port)
        if await self._bind(port, pod_ip, tcp.start(self.listen_host, port)):
            self.listeners[port] = tcp

    async def _bind(self, port: int, pod_ip: str, start: Awaitable[Any]) -> bool:
        try:
            await start
        except OSError as exc:  # an app still on the pod IP (started before capture) or on 0.0.0.0
            log.warning("proxy %s: cannot capture %s:%d (%s): clients reach the app there without the "
                        "sidecar until it is free", self.proxy_id, pod_ip, port, exc)  # fmt: skip
            return False
        return True
