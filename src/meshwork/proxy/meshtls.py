"""Mutual TLS between sidecars: the proxy's certificate, its inbound mode, its outbound TLS per endpoint.

What lives here:

* ``sign_over_http``: the CSR goes to ``POST .../proxies/{id}/certificate``
  with the proxy's token (a raw HTTP/1.1 exchange on the loop, as the
  config stream is).
* ``MeshTls``: one per sidecar. It runs a ``CertificateKeeper`` and, on
  each new certificate, builds the inbound server context and the outbound
  client context and swaps them into their ``ContextHolder``s (new
  handshakes use the new certificate, open connections keep theirs). The
  roots it trusts are the snapshot's ``trustBundle`` when one came (a root
  rotation pushes the bundle with old and new roots before the new root
  signs), else the certificate answer's. A snapshot whose ``caGeneration``
  is newer than the one the certificate was signed under asks for a new
  certificate at once.
* ``inbound_mtls``: the inbound listener's mode from the PeerAuthentications
  (``core.security.peerauth``) for this pod's namespace, labels and app
  ports: one mode for every port is the listener's mode; ports that differ
  make the listener PERMISSIVE, and the inbound decider refuses plaintext
  requests for the STRICT ports (``InboundDecider``: the connection is
  closed without an answer). A capture listener (one app port on the pod
  IP) takes that port's mode itself (``InboundMtls.mode_for``).
* ``OutboundMtls``: Istio's auto mTLS and DestinationRule ``tls`` for each
  endpoint of a cluster (``ClusterState`` asks it): to a meshed endpoint
  (``security.istio.io/tlsMode: istio``) through its sidecar, ISTIO_MUTUAL
  unless the DestinationRule's tls mode says otherwise or the endpoint's
  effective PeerAuthentication for that port is DISABLE; the peer must
  present ``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` of the endpoint's
  ServiceAccount. ``DISABLE``: plaintext; ``ISTIO_MUTUAL``: mesh mTLS even
  to an endpoint without a sidecar; ``SIMPLE``/``MUTUAL``: TLS originated to
  the endpoint's own port with the rule's files, ``sni``,
  ``subjectAltNames`` and ``insecureSkipVerify``.

What must not live here: the listener and connection machinery (``proxy.tlslisten``,
``proxy.upstream``), PeerAuthentication precedence (``core.security.peerauth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httptools

from meshwork.core.mesh import table as t
from meshwork.core.mesh.lb import Endpoint as LbEndpoint
from meshwork.core.security.identity import SpiffeId
from meshwork.core.security.peerauth import Mode, PeerAuthDecision, compose
from meshwork.core.security.select import PolicyObject, Workload
from meshwork.proxy import plan
from meshwork.proxy.inbound import INBOUND_PORT
from meshwork.proxy.tls import (
    HTTP_ALPN,
    ContextHolder,
    ListenerTls,
    TlsMode,
    client_context,
    server_context,
)
from meshwork.proxy.workloadcert import CertificateKeeper, WorkloadCert

__all__ = ["InboundMtls", "MeshTls", "OutboundMtls", "inbound_mtls", "sign_over_http"]

log = logging.getLogger("meshwork.proxy")

API = "/apis/mesh.meshwork.io/v1"
DEFAULT_TRUST_DOMAIN = "cluster.local"
MESHED_LABEL = "security.istio.io/tlsMode"
# A certificate answer is a few KB; anything far larger is not one.
MAX_ANSWER_BYTES = 1024 * 1024
# How long one signing exchange may take before the keeper retries (it backs off itself).
SIGN_TIMEOUT_S = 30.0


# -- signing ---------------------------------------------------------------------------------


class _Answer:
    """httptools callbacks collecting one response body."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_ANSWER_BYTES:
            raise ValueError("the certificate answer is too large")

    def on_message_complete(self) -> None:
        self.done = True


def sign_over_http(host: str, port: int, token: str | Callable[[], str], proxy_id: str) -> Callable[[bytes], Any]:
    """A ``CertificateKeeper`` signer: POST the CSR to the control plane, return its JSON answer.

    ``token`` may be a callable, read at each request (a rotated token file).
    """
    path = f"{API}/proxies/{quote(proxy_id, safe='')}/certificate"

    async def sign(csr_pem: bytes) -> dict[str, Any]:
        bearer = token() if callable(token) else token
        body = json.dumps({"csr": csr_pem.decode("ascii")}).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
        async with asyncio.timeout(SIGN_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(head.encode() + body)
                await writer.drain()
                answer = _Answer()
                parser = httptools.HttpResponseParser(answer)
                while not answer.done and (data := await reader.read(65536)):
                    parser.feed_data(data)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        status = parser.get_status_code()
        if not answer.done:
            raise ConnectionError(f"the certificate answer ended early (status {status})")
        if status != 200:
            raise ConnectionError(f"the certificate request answered {status}: {bytes(answer.body[:300])!r}")
        doc = json.loads(bytes(answer.body))
        if not isinstance(doc, dict):
            raise ValueError("the certificate answer is not a JSON object")
        return doc

    return sign


# -- the proxy's certificate and contexts ------------------------------------------------------


class MeshTls:
    """A sidecar's mesh certificate and the contexts built from it, kept fresh.

    ``server`` and ``client`` exist once the first certificate does
    (``ready``); ``listener`` is the inbound listener's policy, whose mode
    the sidecar sets from each snapshot.
    """

    def __init__(self, sign: Callable[[bytes], Any], *, clock: Callable[[], float] = time.time) -> None:
        self._sign = sign
        self.keeper = CertificateKeeper(self._signed, self._installed, clock=clock)
        self.listener = ListenerTls(mode=TlsMode.PERMISSIVE)
        self.server: ContextHolder | None = None
        self.client: ContextHolder | None = None
        self.trust_domain = DEFAULT_TRUST_DOMAIN
        self.identity: str | None = None
        self.cert_generation: int | None = None  # caGeneration the current certificate was signed under
        self._pending_generation: int | None = None
        self._asked_generation: int | None = None
        self._bundle: str | None = None  # the snapshot's trustBundle
        self._task: asyncio.Task[None] | None = None
        self._originations: dict[str, plan.UpstreamTls] = {}

    @property
    def ready(self) -> asyncio.Event:
        return self.keeper.ready

    @property
    def current(self) -> WorkloadCert | None:
        return self.keeper.current

    def start(self, stop: asyncio.Event) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.keeper.run(stop))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _signed(self, csr_pem: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = await self._sign(csr_pem)
        generation = answer.get("caGeneration")
        self._pending_generation = generation if isinstance(generation, int) else None
        return answer

    def _installed(self, cert: WorkloadCert) -> None:
        self.cert_generation = self._pending_generation
        self.identity = cert.identity
        with contextlib.suppress(ValueError):
            self.trust_domain = SpiffeId.parse(cert.identity).trust_domain
        self._rebuild()
        log.info("workload certificate %x for %s installed (generation %s)", cert.serial, cert.identity,
                 self.cert_generation)  # fmt: skip

    def _rebuild(self) -> None:
        cert = self.keeper.current
        if cert is None:
            return
        bundle: bytes | str = self._bundle or cert.bundle_pem
        server = server_context(cert.chain_pem, cert.key_pem, bundle)
        client = client_context(bundle, cert.chain_pem, cert.key_pem)
        if self.server is None or self.client is None:
            self.server, self.client = ContextHolder(server), ContextHolder(client)
        else:
            self.server.swap(server)
            self.client.swap(client)
        self.listener.holder = self.server

    def origination(self, settings: Mapping[str, Any], mode: str) -> plan.UpstreamTls:
        """TLS origination for SIMPLE / MUTUAL, contexts cached by their settings (pools stay keyed)."""
        cache = self._originations
        key = json.dumps([mode, settings], sort_keys=True, default=str)
        if key not in cache:
            try:
                ctx, sni, uris = _origination_context(settings, mode)
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("DestinationRule tls %s: %s; the endpoint gets a failing TLS setting", mode, exc)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies against nothing: every handshake fails
                sni, uris = settings.get("sni") or None, frozenset()
            digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
            cache[key] = plan.UpstreamTls(_FixedContext(ctx), sni, uris, key=f"origination:{digest}")
        return cache[key]

    def observe(self, raw: Mapping[str, Any]) -> None:
        """A snapshot arrived: trust its bundle; renew when the CA's generation moved past ours."""
        bundle = raw.get("trustBundle")
        if isinstance(bundle, str) and bundle.strip() and bundle != self._bundle:
            self._bundle = bundle
            try:
                self._rebuild()
            except (ssl.SSLError, ValueError) as exc:  # keep the contexts we have
                log.warning("the snapshot's trust bundle is unusable: %s", exc)
                self._bundle = None
        generation = raw.get("caGeneration")
        if (isinstance(generation, int) and self.cert_generation is not None
                and generation > self.cert_generation and generation != self._asked_generation):  # fmt: skip
            self._asked_generation = generation
            log.info("caGeneration %d is newer than the certificate's (%d): renewing", generation,
                     self.cert_generation)  # fmt: skip
            self.keeper.renew_now()


# -- inbound -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboundMtls:
    """The inbound listener's mode, and which app ports refuse plaintext when it runs PERMISSIVE."""

    mode: TlsMode
    strict_ports: frozenset[int] = frozenset()  # plaintext refused
    open_ports: frozenset[int] = frozenset()  # plaintext accepted
    strict_other: bool = False  # any other port: refused when the workload's own mode is STRICT

    def refuses_plaintext(self, port: int) -> bool:
        if port in self.strict_ports:
            return True
        return self.strict_other and port not in self.open_ports

    @property
    def mixed(self) -> bool:
        return bool(self.strict_ports or self.strict_other)

    def mode_for(self, port: int) -> TlsMode:
        """The mode of a capture listener that serves only app ``port`` (``proxy.inbound``)."""
        if self.mode is TlsMode.STRICT or (self.mixed and self.refuses_plaintext(port)):
            return TlsMode.STRICT
        return self.mode


def _workload(raw: Mapping[str, Any]) -> Workload:
    proxy = raw.get("proxy") or {}
    return Workload(str(proxy.get("namespace") or "default"), dict(proxy.get("labels") or {}))


def inbound_mtls(raw: Mapping[str, Any], ports: Iterable[int]) -> tuple[InboundMtls, PeerAuthDecision]:
    """The listener policy for this pod's app ``ports`` from the snapshot's PeerAuthentications.

    One mode for the workload and every port: the listener's mode. Otherwise
    the listener is PERMISSIVE and the decider refuses plaintext for the
    STRICT ports (and for ports not named, when the workload's mode is STRICT).
    """
    decision = compose(list(raw.get("peerAuthentications") or []), _workload(raw))
    wanted = set(ports) | set(decision.ports)
    modes = {decision.mode_for(p) for p in wanted} | {decision.mode}
    if len(modes) == 1:
        return InboundMtls(TlsMode(decision.mode)), decision
    strict = frozenset(p for p in wanted if decision.mode_for(p) == "STRICT")
    return InboundMtls(TlsMode.PERMISSIVE, strict, frozenset(wanted - strict), decision.mode == "STRICT"), decision


# -- outbound ------------------------------------------------------------------------------------


def _tls_of(spec: Mapping[str, Any] | None, port: int, current: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Istio's MergeTrafficPolicy for ``tls``: a set ``tls`` replaces, a portLevelSettings entry replaces all."""
    if not spec:
        return current
    found = spec.get("tls") or current
    for pls in spec.get("portLevelSettings") or []:
        if ((pls.get("port") or {}).get("number")) == port:
            return pls.get("tls") or None
    return found


def destination_tls(rule: Mapping[str, Any] | None, subset: str | None, port: int) -> Mapping[str, Any] | None:
    """The ``tls`` settings a DestinationRule gives one (subset, port) cluster, None: none."""
    if rule is None:
        return None
    spec = rule.get("spec") or {}
    found = _tls_of(spec.get("trafficPolicy"), port, None)
    if subset is not None:
        for s in spec.get("subsets") or []:
            if s.get("name") == subset:
                found = _tls_of(s.get("trafficPolicy"), port, found)
    return found


@dataclass(frozen=True, slots=True)
class _Peer:
    namespace: str
    service_account: str
    labels: tuple[tuple[str, str], ...]


class OutboundMtls:
    """How the outbound side reaches each endpoint (plaintext, mesh mTLS, or TLS origination), per snapshot.

    ``key`` changes when anything that could change an endpoint's TLS does:
    clusters are then rebuilt even if their endpoints stayed the same.
    """

    def __init__(self, mtls: MeshTls, raw: Mapping[str, Any]) -> None:
        self.mtls = mtls
        self.client = mtls.client
        self.trust_domain = mtls.trust_domain
        self._policies = [PolicyObject.from_manifest(p) for p in raw.get("peerAuthentications") or []]
        self._rules: dict[str, Mapping[str, Any]] = {}
        for dr in raw.get("destinationRules") or []:
            meta = dr.get("metadata") or {}
            self._rules[f"{meta.get('namespace') or 'default'}/{meta.get('name')}"] = dr
        self._peers: dict[str, _Peer] = {}
        for svc in raw.get("services") or []:
            for ep in svc.get("endpoints") or []:
                sa = ep.get("serviceAccount")
                if sa:
                    self._peers[str(ep.get("ip"))] = _Peer(
                        str(ep.get("namespace") or svc.get("namespace") or "default"), str(sa),
                        tuple(sorted((ep.get("labels") or {}).items())))  # fmt: skip
        self._decisions: dict[tuple[str, tuple[tuple[str, str], ...]], PeerAuthDecision] = {}
        digest = hashlib.blake2b(digest_size=16)
        for part in (raw.get("peerAuthentications"), raw.get("destinationRules"),
                     sorted((ip, p.namespace, p.service_account, p.labels) for ip, p in self._peers.items())):  # fmt: skip
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(f"{self.trust_domain}|{id(self.client)}".encode())
        self.key = digest.hexdigest()

    def _peer_mode(self, peer: _Peer, port: int) -> Mode:
        found = self._decisions.get((peer.namespace, peer.labels))
        if found is None:
            found = compose(self._policies, Workload(peer.namespace, dict(peer.labels)))
            self._decisions[(peer.namespace, peer.labels)] = found
        return found.mode_for(port)

    def _mesh(self, ep: LbEndpoint) -> plan.UpstreamTls | None:
        if self.client is None:
            return None
        peer = self._peers.get(ep.address)
        identities: frozenset[str] = frozenset()
        if peer is not None:
            with contextlib.suppress(ValueError):
                identities = frozenset({SpiffeId(self.trust_domain, peer.namespace, peer.service_account).uri})
        return plan.UpstreamTls(self.client, None, identities)

    def endpoint(self, cluster: t.Cluster, ep: LbEndpoint, via_sidecar: bool) -> plan.Endpoint:
        """The address to connect to for ``ep`` and the TLS to speak there."""
        settings = destination_tls(self._rules.get(cluster.destination_rule), cluster.subset, cluster.port)
        mode = (settings or {}).get("mode") or cluster.tls_mode
        meshed = ep.labels.get(MESHED_LABEL) == "istio"
        if mode in ("SIMPLE", "MUTUAL"):
            return plan.Endpoint(ep.address, ep.port, tls=self.mtls.origination(settings or {}, mode))
        port = INBOUND_PORT if via_sidecar else ep.port
        if mode == "DISABLE":
            return plan.Endpoint(ep.address, port)
        if mode == "ISTIO_MUTUAL":
            return plan.Endpoint(ep.address, port, tls=self._mesh(ep))
        peer = self._peers.get(ep.address)  # auto mTLS: a sidecar that does not refuse it
        if meshed and via_sidecar and (peer is None or self._peer_mode(peer, ep.port) != "DISABLE"):
            return plan.Endpoint(ep.address, port, tls=self._mesh(ep))
        return plan.Endpoint(ep.address, port)


class _FixedContext:
    __slots__ = ("context",)

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context


def _origination_context(settings: Mapping[str, Any], mode: str) -> tuple[ssl.SSLContext, str | None, frozenset[str]]:
    """A client context for DestinationRule SIMPLE / MUTUAL: files named by the rule, read now."""
    ctx = ssl.create_default_context(cafile=settings.get("caCertificates") or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(HTTP_ALPN))
    sans = [str(s) for s in settings.get("subjectAltNames") or []]
    uris = frozenset(s for s in sans if "://" in s)
    dns = [s for s in sans if "://" not in s]
    sni = settings.get("sni") or None
    if settings.get("insecureSkipVerify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        uris = frozenset()
    elif dns:
        # One DNS SAN to check: OpenSSL checks the name the client asks for (also sent as SNI when none is set).
        sni = sni or dns[0]
        ctx.check_hostname = sni in dns
    else:
        ctx.check_hostname = sni is not None
    if mode == "MUTUAL":
        cert, key = settings.get("clientCertificate"), settings.get("privateKey")
        if not cert or not key:
            raise ValueError("DestinationRule tls.mode MUTUAL needs clientCertificate and privateKey")
        ctx.load_cert_chain(cert, key)
    return ctx, sni, uris

