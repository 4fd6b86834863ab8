"""A gateway's TLS: which servers terminate TLS on which port, with which certificate, and what passes through.

What lives here: ``compile_gateway_tls``, the decisions Istio's pilot makes
for the TLS side of a gateway's listeners, read from the Gateways that select
the proxy:

* **Terminating servers** (``tls.mode`` SIMPLE, MUTUAL, OPTIONAL_MUTUAL on
  an HTTPS server): a ``TlsServer`` per server with the SNI names its hosts
  allow (``ns/`` prefixes dropped; ``*`` means any name: the default), the
  certificate source, and the protocol versions. The certificate comes from
  ``credentialName`` (a Secret in the gateway's own namespace, carried in
  the snapshot's ``credentials``; keys ``tls.crt``/``tls.key``/``ca.crt``
  or Istio's generic ``cert``/``key``/``cacert``; for MUTUAL the CA may
  instead be in a separate ``<name>-cacert`` Secret), else from the file
  paths ``serverCertificate``/``privateKey``/``caCertificates``, which the
  proxy reads. A server whose Secret is missing or lacks a key is *skipped*
  with the reason (Istio logs it and leaves the server out); the other
  servers of the port keep working.
* **Passthrough** (``tls.mode: PASSTHROUGH`` on a TLS or HTTPS server): the
  ``tls[]`` routes of the VirtualServices bound to the gateway, by SNI: the
  first route (oldest VirtualService first) whose ``match`` holds for the
  gateway and port, for each ``sniHosts`` entry a server host admits.
* **Plaintext beside TLS**: a port that also has a plain HTTP server accepts
  both (the first byte tells them apart).

``httpsRedirect`` is a routing matter (``compile._gateway_ports``).
What must not live here: reading files, building SSL contexts (``proxy.gatewaytls``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from meshwork.core.mesh.compile_http import resolve_gateway
from meshwork.core.mesh.hosts import hosts_intersect, narrower, resolve_host
from meshwork.core.mesh.table import TcpRoute, WeightedDestination, cluster_name
from meshwork.model.istio_networking import Gateway, Server
from meshwork.model.istio_routing import VirtualService

TerminateMode = Literal["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"]
TERMINATING: tuple[TerminateMode, ...] = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
PLAIN_HTTP = frozenset({"HTTP", "HTTP2", "GRPC"})
# Secret keys, as Istio's credentials controller reads them (generic names first).
GENERIC_KEYS = ("cert", "key", "cacert")
TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
CA_SECRET_SUFFIX = "-cacert"  # Istio: the client CA of MUTUAL may live in "<credentialName>-cacert"
KUBERNETES_PREFIX = "kubernetes://"


@dataclass(frozen=True, slots=True)
class ServerCert:
    """Where a terminating server's certificate comes from: PEM from a Secret, or files the proxy reads."""

    source: str  # for messages: "secret istio-system/httpbin-credential" or "files /a.crt, /a.key"
    cert_pem: str | None = None
    key_pem: str | None = None
    ca_pem: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class TlsServer:
    """One Gateway server that terminates TLS."""

    name: str  # "namespace/gateway servers[i] (port name)"
    sni: tuple[str, ...]  # the names it serves; "*" is any name (and clients sending none)
    mode: TerminateMode
    cert: ServerCert
    min_version: str | None = None  # TLSV1_0 .. TLSV1_3, TLS_AUTO; None: the proxy's floor (1.2)
    max_version: str | None = None


@dataclass(frozen=True, slots=True)
class SniRoute:
    """A passthrough route: connections whose SNI matches ``sni`` go to ``route`` untouched."""

    sni: str
    route: TcpRoute


@dataclass(frozen=True, slots=True)
class PortTls:
    """The TLS side of one gateway listener port."""

    port: int
    servers: tuple[TlsServer, ...] = ()
    passthrough: tuple[SniRoute, ...] = ()
    plaintext: bool = False  # a plain HTTP server shares the port
    skipped: tuple[str, ...] = ()  # servers left out, and why


def _decode(data: Mapping[str, str], key: str) -> str:
    try:
        return base64.b64decode(data[key], validate=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"key {key!r} is not base64 of PEM text ({exc})") from None


def _secret_cert(
    name: str, mode: TerminateMode, namespace: str, credentials: Mapping[str, Mapping[str, str]]
) -> ServerCert:
    """The certificate a Secret holds; ValueError saying what is wrong with it."""
    name = name.removeprefix(KUBERNETES_PREFIX)
    where = f"secret {namespace}/{name}"
    data = credentials.get(name)
    if data is None:
        raise ValueError(f"{where} not found")
    for cert_key, key_key, _ in (GENERIC_KEYS, TLS_KEYS):
        if cert_key in data and key_key in data:
            break
    else:
        found = ", ".join(sorted(data)) or "none"
        raise ValueError(
            f"{where} has neither (cert and key) nor (tls.crt and tls.key); found: {found}"
        )
    ca: str | None = None
    source = where
    if mode != "SIMPLE":
        ca_data, ca_where = data, where
        if "cacert" not in data and "ca.crt" not in data:
            ca_data = credentials.get(name + CA_SECRET_SUFFIX) or {}
            ca_where = f"secret {namespace}/{name}{CA_SECRET_SUFFIX}"
        ca_name = next((k for k in ("cacert", "ca.crt") if k in ca_data), None)
        if ca_name is None:
            if mode == "MUTUAL":
                raise ValueError(
                    f"{where}: MUTUAL needs the client CA as ca.crt (or cacert) in it "
                    f"or in secret {namespace}/{name}{CA_SECRET_SUFFIX}"
                )
        else:
            ca = _decode(ca_data, ca_name)
            if ca_where != where:
                source = f"{where} (CA from {ca_where})"
    return ServerCert(source, _decode(data, cert_key), _decode(data, key_key), ca)


def _file_cert(server: Server, mode: TerminateMode) -> ServerCert:
    tls = server.tls
    assert tls is not None
    if not tls.server_certificate or not tls.private_key:
        raise ValueError("neither credentialName nor serverCertificate and privateKey are set")
    if mode == "MUTUAL" and not tls.ca_certificates:
        raise ValueError("MUTUAL needs caCertificates (or a credentialName)")
    files = ", ".join(
        f for f in (tls.server_certificate, tls.private_key, tls.ca_certificates) if f
    )
    return ServerCert(
        f"files {files}",
        cert_file=tls.server_certificate,
        key_file=tls.private_key,
        ca_file=tls.ca_certificates if mode != "SIMPLE" else None,
    )


def server_sni(server: Server) -> tuple[str, ...]:
    """The SNI names a server's hosts allow (``ns/`` dropped, ``*`` kept as any name)."""
    names: list[str] = []
    for host in server.hosts or []:
        name = host.lower().rpartition("/")[2]
        if name not in names:
            names.append(name)
    return tuple(names) or ("*",)


def _bound(vs: VirtualService, gw_id: str) -> bool:
    ns = vs.metadata.namespace or "default"
    if gw_id in {resolve_gateway(g, ns) for g in vs.spec.gateways or []}:
        return True
    return any(
        gw_id in {resolve_gateway(g, ns) for g in m.gateways or []}
        for t in vs.spec.tls or []
        for m in t.match or []
    )


def _passthrough_routes(
    server: Server,
    port: int,
    gw_id: str,
    vss: Sequence[tuple[list[str], VirtualService]],
    domain: str,
    only_port: Callable[[str], int | None],
) -> list[SniRoute]:
    """The ``tls[]`` routes of bound VirtualServices for one PASSTHROUGH server, by SNI pattern."""
    out: list[SniRoute] = []
    server_hosts = server_sni(server)
    for _, vs in vss:
        if not vs.spec.tls or not _bound(vs, gw_id):
            continue
        ns = vs.metadata.namespace or "default"
        for index, tls_route in enumerate(vs.spec.tls):
            for m in tls_route.match or []:
                gateways = m.gateways or vs.spec.gateways or ["mesh"]
                if gw_id not in {resolve_gateway(g, ns) for g in gateways}:
                    continue
                if m.port is not None and m.port != port:
                    continue
                routes = tls_route.route or []
                weights = [r.weight or 0 for r in routes]
                if not any(weights):
                    weights = [100 // max(1, len(routes))] * len(routes)
                dests = []
                for r, weight in zip(routes, weights, strict=True):
                    host = resolve_host(r.destination.host, ns, domain)
                    number = (r.destination.port.number if r.destination.port else None) or (
                        only_port(host) or port
                    )
                    subset = r.destination.subset
                    dests.append(
                        WeightedDestination(
                            cluster_name(number, subset, host), host, number, subset, weight
                        )
                    )
                route = TcpRoute(
                    f"{ns}/{vs.metadata.name}.tls.{index}", f"{ns}/{vs.metadata.name}", tuple(dests)
                )
                for sni in m.sni_hosts:
                    for server_host in server_hosts:
                        if hosts_intersect(sni.lower(), server_host):
                            out.append(SniRoute(narrower(sni.lower(), server_host), route))
    return out


def compile_gateway_tls(
    gateways: Sequence[Gateway],
    vss: Sequence[tuple[list[str], VirtualService]],
    *,
    namespace: str,
    credentials: Mapping[str, Mapping[str, str]],
    domain: str,
    only_port: Callable[[str], int | None],
) -> dict[int, PortTls]:
    """The TLS side of every port of the gateway proxy in ``namespace`` that ``gateways`` (selected, oldest first) open.

    ``credentials``: the Secrets of the proxy's namespace the Gateways name, ``{name: data}`` (base64 values).
    """
    servers: dict[int, list[TlsServer]] = {}
    routes: dict[int, list[SniRoute]] = {}
    plain: set[int] = set()
    skipped: dict[int, list[str]] = {}
    for gw in gateways:
        gw_id = f"{gw.metadata.namespace or 'default'}/{gw.metadata.name}"
        for i, server in enumerate(gw.spec.servers or []):
            port = server.port.number
            protocol = server.port.protocol.upper()
            label = f"{gw_id} servers[{i}] ({server.port.name})"
            if protocol in PLAIN_HTTP:
                plain.add(port)
                continue
            if protocol not in ("HTTPS", "TLS") or server.tls is None:
                continue
            mode = server.tls.mode or "PASSTHROUGH"
            if mode == "PASSTHROUGH":
                routes.setdefault(port, []).extend(
                    _passthrough_routes(server, port, gw_id, vss, domain, only_port)
                )
                continue
            if mode not in TERMINATING:
                skipped.setdefault(port, []).append(
                    f"{label}: tls.mode {mode} is not supported on gateways here"
                )
                continue
            if protocol == "TLS":
                skipped.setdefault(port, []).append(
                    f"{label}: terminating TLS for TCP routes (protocol TLS, mode {mode}) is not supported"
                )
                continue
            tls = server.tls
            credential = tls.credential_name or next(iter(tls.credential_names or []), None)
            try:
                if credential:
                    cert = _secret_cert(credential, mode, namespace, credentials)
                else:
                    cert = _file_cert(server, mode)
            except ValueError as exc:
                skipped.setdefault(port, []).append(f"{label} not served: {exc}")
                continue
            servers.setdefault(port, []).append(
                TlsServer(
                    label,
                    server_sni(server),
                    mode,
                    cert,
                    tls.min_protocol_version,
                    tls.max_protocol_version,
                )
            )
    out: dict[int, PortTls] = {}
    for port in sorted(set(servers) | set(routes) | set(skipped)):
        out[port] = PortTls(
            port,
            tuple(servers.get(port, ())),
            tuple(routes.get(port, ())),
            port in plain,
            tuple(skipped.get(port, ())),
        )
    return out


def lookup_sni(routes: Sequence[SniRoute], sni: str | None) -> TcpRoute | None:
    """The passthrough route for ``sni``: an exact name, else the longest wildcard suffix, else ``*``."""
    name = (sni or "").lower()
    best: tuple[int, TcpRoute] | None = None
    for r in routes:
        if r.sni == name and name:
            return r.route
        if r.sni == "*":
            rank = 0
        elif r.sni.startswith("*.") and name.endswith(r.sni[1:]) and len(name) > len(r.sni) - 1:
            rank = len(r.sni)
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, r.route)
    return best[1] if best else None
