"""A gateway's TLS listeners: certificates by SNI, client certificates, passthrough, rotation.

What lives here: ``GatewayTls``, which turns the ``PortTls`` of each gateway
port (``core.mesh.gateway_tls``) into the ``ListenerTls`` policy the port's
listener reads for every new connection:

* each terminating server gets an SSLContext (its certificate and key; for
  MUTUAL a required client certificate verified against its CA, for
  OPTIONAL_MUTUAL an optional one; ``minProtocolVersion`` and
  ``maxProtocolVersion``; ALPN ``http/1.1``), reachable by the SNI names of
  its hosts; a ``*`` host serves clients whose name matches nothing else;
* contexts are cached by what they were built from, so a push that changes
  nothing reuses them, and a rotated Secret (new ``tls.crt``) gives a new
  context that new connections use while open ones keep theirs;
* a server whose certificate files cannot be read or whose certificate and
  key do not load is left out, with the reason, like one whose Secret is
  missing (``PortTls.skipped``): the caller reports them, the other servers
  keep serving;
* PASSTHROUGH: the listener's hook picks the ``tls[]`` route for the
  ClientHello's SNI and a destination by weight, and splices the connection
  to the destination's app address (the backend terminates TLS itself, so
  the bytes never go through its sidecar's HTTP inbound). The gateway
  workload's AuthorizationPolicies (``authorizer``, given with each config,
  before the port listens) decide each such connection once its SNI is
  read, as the plain TCP listeners do on accept (``proxy.gatewaytcp``):
  ``destination.port`` is the Gateway server's port, ``connection.sni`` the
  ClientHello's name; a denied connection is closed before any upstream is
  opened, counted in its splice's ``denied`` and logged (``proxy.tcp``).

What must not live here: which servers exist and which Secret they name
(``core.mesh.gateway_tls``), sockets (``proxy.tlslisten``).
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections.abc import Callable, Mapping

from meshwork.core.mesh.gateway_tls import PortTls, TlsServer, lookup_sni
from meshwork.core.security.authz import Authorizer
from meshwork.proxy import plan
from meshwork.proxy.mesh import ClusterState
from meshwork.proxy.tls import HTTP_ALPN, ContextHolder, ListenerTls, TlsMode, server_context

__all__ = ["AppCluster", "GatewayTls"]

_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSV1_0": ssl.TLSVersion.TLSv1,
    "TLSV1_1": ssl.TLSVersion.TLSv1_1,
    "TLSV1_2": ssl.TLSVersion.TLSv1_2,
    "TLSV1_3": ssl.TLSVersion.TLSv1_3,
}
MAX_CERT_FILE_BYTES = 1 << 20  # a PEM chain is a few KB; refuse to read a huge file into memory


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_CERT_FILE_BYTES + 1)
    if len(data) > MAX_CERT_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_CERT_FILE_BYTES} bytes")
    return data.decode("ascii")


def _material(server: TlsServer, read: Callable[[str], str]) -> tuple[str, str, str | None]:
    cert = server.cert
    if cert.cert_pem is not None and cert.key_pem is not None:
        return cert.cert_pem, cert.key_pem, cert.ca_pem
    assert cert.cert_file is not None and cert.key_file is not None
    ca = read(cert.ca_file) if cert.ca_file else None
    return read(cert.cert_file), read(cert.key_file), ca


def _context(server: TlsServer, cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    mutual = server.mode == "MUTUAL"
    ctx = server_context(cert, key, ca, require_client_cert=mutual, alpn=HTTP_ALPN)
    if server.mode == "OPTIONAL_MUTUAL" and ca:
        ctx.load_verify_locations(cadata=ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if server.min_version in _VERSIONS:
        ctx.minimum_version = _VERSIONS[server.min_version]
    if server.max_version in _VERSIONS:
        ctx.maximum_version = _VERSIONS[server.max_version]
    return ctx


class AppCluster:
    """A cluster's endpoints at their app addresses (never through their sidecar), balanced by its state."""

    __slots__ = ("_app", "_target", "limits", "name", "state")

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.name, self.limits = state.name, state.limits
        self._app: dict[
            plan.Endpoint, plan.Endpoint
        ] = {}  # what the state picks -> the app address
        self._target: dict[plan.Endpoint, plan.Endpoint] = {}
        for ep in state.spec.endpoints:
            picked = state.endpoints[ep.key]
            app = plan.Endpoint(ep.address, ep.port)
            self._app[picked], self._target[app] = app, picked

    def pick(self, exclude: frozenset[plan.Endpoint]) -> plan.Endpoint | None:
        chosen = self.state.pick(frozenset(self._target.get(e, e) for e in exclude))
        return self._app.get(chosen, chosen) if chosen is not None else None

    def release(self, endpoint: plan.Endpoint, outcome: plan.Outcome) -> None:
        self.state.release(self._target.get(endpoint, endpoint), outcome)


class GatewayTls:
    """The ``ListenerTls`` of each TLS port of one gateway, kept across config pushes."""

    def __init__(self, rng: random.Random, read: Callable[[str], str] = _read) -> None:
        self.rng = rng
        self.read = read
        self.listeners: dict[int, ListenerTls] = {}
        self.serving: dict[int, bool] = {}  # port -> its listener was started with TLS
        self._contexts: dict[str, ssl.SSLContext] = {}  # by digest of what built them

    def listener(
        self, spec: PortTls, states: Mapping[str, ClusterState], authorizer: Authorizer | None = None
    ) -> tuple[ListenerTls, list[str]]:
        """The port's policy, updated in place for the next connections; and the servers left out, with why.

        ``authorizer``: the gateway workload's policies, which passthrough connections must pass."""
        problems = list(spec.skipped)
        default: ContextHolder | None = None
        by_sni: dict[str, ContextHolder] = {}
        used: dict[str, ssl.SSLContext] = {}
        for server in spec.servers:
            try:
                cert, key, ca = _material(server, self.read)
                parts = (
                    server.mode,
                    cert,
                    key,
                    ca or "",
                    server.min_version or "",
                    server.max_version or "",
                )
                digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
                ctx = (
                    used.get(digest)
                    or self._contexts.get(digest)
                    or _context(server, cert, key, ca)
                )
            except (OSError, ValueError, ssl.SSLError) as exc:
                problems.append(f"{server.name} not served: {server.cert.source}: {exc}")
                continue
            used[digest] = ctx
            holder = ContextHolder(ctx)
            for name in server.sni:
                if name == "*":
                    default = default or holder
                else:
                    by_sni.setdefault(name, holder)
        self._contexts = {**{d: c for d, c in self._contexts.items() if d in used}, **used}
        tls = self.listeners.get(spec.port)
        if tls is None:
            tls = self.listeners[spec.port] = ListenerTls()
        # Fields are read once per new connection: assign the finished values, never mutate them.
        tls.mode = TlsMode.PERMISSIVE if spec.plaintext else TlsMode.STRICT
        tls.holder, tls.by_sni = default, by_sni
        tls.passthrough_authorizer, tls.passthrough_port = authorizer, spec.port  # before the hook that uses them
        tls.passthrough = self._passthrough(spec, states) if spec.passthrough else None
        return tls, problems

    def _passthrough(
        self, spec: PortTls, states: Mapping[str, ClusterState]
    ) -> Callable[[str | None], plan.Cluster | None]:
        routes, rng = spec.passthrough, self.rng

        def hook(sni: str | None) -> plan.Cluster | None:
            route = lookup_sni(routes, sni)
            if route is None or not route.destinations:
                return None
            weights = [max(d.weight, 0) for d in route.destinations]
            dest = rng.choices(route.destinations, weights=weights if any(weights) else None)[0]
            state = states.get(dest.cluster)
            return AppCluster(state) if state is not None else None

        return hook

    def forget(self, port: int) -> None:
        """The port serves no TLS any more (or nothing at all)."""
        self.listeners.pop(port, None)
        self.serving.pop(port, None)
