"""TLS for the proxy: contexts for mesh and gateway use, a swappable holder, peer identities.

What lives here:

* ``server_context`` / ``client_context``: SSLContexts with TLS 1.2 as the
  floor (1.3 preferred: OpenSSL offers the highest it has), ALPN, and for
  the mesh (mutual TLS) a peer certificate verified against the trust bundle.
  Mesh certificates carry only a SPIFFE URI SAN, so hostname checking is
  off; the caller checks the peer's URI SAN instead (``check_peer``).
* ``ContextHolder``: the context a listener or a cluster uses *now*.
  ``swap`` replaces it in one assignment (certificate rotation): new
  handshakes take the new one, open connections keep theirs.
* ``ListenerTls``: a listener's policy: mode (STRICT, PERMISSIVE, DISABLE),
  the default context, contexts by SNI (gateways), and a passthrough hook
  (SNI -> a TCP cluster, bytes forwarded untouched).
* ``peer_identity`` / ``peer_principal``: the peer certificate's URI SAN.

The ssl module loads a certificate and key only from files: they are
written to a private (0700) temporary directory, loaded, and deleted at once.

What must not live here: sockets and listeners (``proxy.server``), upstream
connects (``proxy.upstream``), deciding modes from PeerAuthentication
(``meshwork.core.security``).
"""

from __future__ import annotations

import enum
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshwork.core.security.authz import Authorizer
    from meshwork.proxy.plan import Cluster

__all__ = [
    "HTTP_ALPN",
    "MESH_ALPN",
    "ContextHolder",
    "ListenerTls",
    "TlsMode",
    "check_peer",
    "client_context",
    "load_chain",
    "peer_identity",
    "peer_principal",
    "server_context",
]

# Istio's sidecars offer these on mesh connections (istio-peer-exchange and
# the HTTP/1.1 upgrade marker), then plain http/1.1; we speak HTTP/1.1 only.
MESH_ALPN: tuple[str, ...] = ("istio-http/1.1", "istio", "http/1.1")
HTTP_ALPN: tuple[str, ...] = ("http/1.1",)
SPIFFE = "spiffe://"
# tmpfs when there is one: the key never reaches a disk, even for the moment it exists.
_KEY_DIRS = ("/dev/shm",)


class TlsMode(enum.StrEnum):
    """PeerAuthentication mtls.mode as a listener applies it (UNSET is resolved before this)."""

    STRICT = "STRICT"  # mutual TLS only; plaintext is closed without an answer
    PERMISSIVE = "PERMISSIVE"  # mutual TLS or plaintext, told apart by the first byte
    DISABLE = "DISABLE"  # plaintext only


def _pem(data: bytes | str) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


def _key_dir() -> str | None:
    for d in _KEY_DIRS:
        if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return d
    return None


def load_chain(ctx: ssl.SSLContext, cert_chain: bytes | str, key: bytes | str, *, under: str | None = None) -> None:
    """Load a PEM certificate chain (leaf first) and its private key into ``ctx``.

    Written to files in a fresh 0700 directory (``mkdtemp`` under ``under``, by
    default /dev/shm or the temp dir), each 0600, and removed as soon as
    OpenSSL has read them, also when loading fails.
    """
    directory = tempfile.mkdtemp(prefix="meshwork-tls-", dir=under or _key_dir())
    cert_path = os.path.join(directory, "chain.pem")
    key_path = os.path.join(directory, "key.pem")
    try:
        for path, data in ((cert_path, _pem(cert_chain)), (key_path, _pem(key))):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)
    finally:
        for path in (cert_path, key_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.rmdir(directory)


def _base(purpose: int, alpn: Iterable[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    protocols = list(alpn)
    if protocols:
        ctx.set_alpn_protocols(protocols)
    return ctx


def server_context(
    cert_chain: bytes | str,
    key: bytes | str,
    trust_bundle: bytes | str | None = None,
    *,
    require_client_cert: bool = True,
    alpn: Iterable[str] = MESH_ALPN,
) -> ssl.SSLContext:
    """A listener's context: serves ``cert_chain``; with ``require_client_cert`` (mesh, and gateway
    MUTUAL) a client certificate verified against ``trust_bundle`` is required.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, alpn)
    load_chain(ctx, cert_chain, key)
    if require_client_cert:
        if trust_bundle is None:
            raise ValueError("requiring a client certificate needs a trust bundle to verify it with")
        ctx.load_verify_locations(cadata=_pem(trust_bundle).decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    trust_bundle: bytes | str,
    cert_chain: bytes | str | None = None,
    key: bytes | str | None = None,
    *,
    alpn: Iterable[str] = MESH_ALPN,
    check_hostname: bool = False,
) -> ssl.SSLContext:
    """An upstream context: verifies the server against ``trust_bundle``; presents ``cert_chain``
    when given (mesh). ``check_hostname`` stays off for mesh peers (URI SAN only: see ``check_peer``).
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, alpn)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=_pem(trust_bundle).decode("ascii"))
    if cert_chain is not None:
        if key is None:
            raise ValueError("a client certificate needs its key")
        load_chain(ctx, cert_chain, key)
    return ctx


class ContextHolder:
    """The SSLContext to use for the next handshake; ``swap`` installs a new one (rotation)."""

    __slots__ = ("context", "generation")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.generation = 0  # how many times it was swapped

    def swap(self, context: ssl.SSLContext) -> None:
        """New handshakes use ``context`` from now on; connections already open are untouched."""
        self.context = context
        self.generation += 1


@dataclass(eq=False)
class ListenerTls:
    """A listener's TLS policy. Its fields may be reassigned at any time; each new connection reads them.

    ``holder`` serves clients whose SNI matches nothing in ``by_sni`` (exact
    names first, then ``*.`` wildcards, as Istio matches Gateway hosts); with
    no match and no holder the connection is closed. ``passthrough``, when
    set, is asked first with the ClientHello's SNI: a cluster it returns gets
    the connection's bytes untouched (Gateway ``tls.mode: PASSTHROUGH``),
    once ``passthrough_authorizer`` (None: no policy applies) admits it from
    its addresses, ``passthrough_port`` and the SNI (``proxy.tcp``: a denied
    one is closed before any upstream is opened).
    """

    mode: TlsMode = TlsMode.STRICT
    holder: ContextHolder | None = None
    by_sni: Mapping[str, ContextHolder] = field(default_factory=dict)
    passthrough: Callable[[str | None], Cluster | None] | None = None
    passthrough_authorizer: Authorizer | None = None
    passthrough_port: int | None = None  # the port policies see (a Gateway server's); None: the local one
    # Envoy's transport_socket_connect_timeout / Istio's default handshake bound.
    handshake_timeout: float = 10.0

    @property
    def needs_hello(self) -> bool:
        """Whether the listener must read the ClientHello (SNI) before choosing what to do."""
        return bool(self.by_sni) or self.passthrough is not None

    def context_for(self, sni: str | None) -> ssl.SSLContext | None:
        """The context for a client asking for ``sni`` (None: no server for it)."""
        if sni is not None and self.by_sni:
            found = self.by_sni.get(sni)
            if found is None and "." in sni:
                found = self.by_sni.get("*." + sni.split(".", 1)[1])
            if found is not None:
                return found.context
        return self.holder.context if self.holder is not None else None


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate's SPIFFE URI SAN (the first URI SAN if none is SPIFFE); None: none."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None  # no certificate, or one that was not verified
    sans: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    uris = [str(value) for kind, value in sans if kind == "URI"]
    for uri in uris:
        if uri.startswith(SPIFFE):
            return uri
    return uris[0] if uris else None


def peer_principal(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """Istio's ``source.principal``: the peer's SPIFFE identity without the scheme."""
    identity = peer_identity(ssl_object)
    if identity is None:
        return None
    return identity[len(SPIFFE) :] if identity.startswith(SPIFFE) else identity


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, allowed: frozenset[str]) -> str | None:
    """None when the peer's identity is among ``allowed`` (or ``allowed`` is empty); else why not."""
    if not allowed:
        return None
    identity = peer_identity(ssl_object)
    if identity in allowed:
        return None
    want = ", ".join(sorted(allowed))
    return f"SAN mismatch: the peer is {identity or 'without a URI SAN'}, expected {want}"
