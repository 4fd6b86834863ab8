"""The proxy's own certificate: a key made here, signed by the control plane's CA, renewed at half-life.

What lives here: ``WorkloadCert`` (the key, the signed chain and the trust
bundle the proxy holds now), ``make_csr`` (a fresh EC P-256 key and a CSR for
it), ``renew_in`` (when to ask again: at half the lifetime, a little jittered
so a thousand sidecars started together do not renew together) and
``CertificateKeeper`` (the loop that asks, retries with back-off while the
current certificate is still good, and tells the listeners when it changes).

The private key never leaves this process: only the CSR goes to the server
(``POST /apis/mesh.meshwork.io/v1/proxies/{id}/certificate``). The server
decides the identity from its own view of the pod (its ServiceAccount), never
from the CSR, so a proxy cannot ask for someone else's name.

What must not live here: TLS contexts and sockets (``proxy.tls``, the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertificateKeeper", "WorkloadCert", "make_csr", "renew_in"]

log = logging.getLogger("meshwork.proxy")

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
JITTER = 0.05  # of the lifetime, either way


@dataclass(frozen=True, slots=True)
class WorkloadCert:
    key_pem: bytes
    chain_pem: bytes  # the leaf, then the intermediates
    bundle_pem: bytes  # the roots this proxy trusts
    identity: str  # spiffe://...
    not_before: float  # unix seconds
    not_after: float

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.chain_pem).serial_number


def make_csr() -> tuple[bytes, bytes]:
    """A new EC P-256 private key (PEM, PKCS#8) and a CSR for it (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshwork workload")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def renew_in(not_before: float, not_after: float, now: float, rng: random.Random) -> float:
    """Seconds from ``now`` until the certificate should be renewed: at half-life, jittered by ±5 % of the lifetime.

    Never negative; a certificate already past its half-life is renewed at once.
    """
    life = max(not_after - not_before, 0.0)
    at = not_before + life / 2 + rng.uniform(-JITTER, JITTER) * life
    return max(at - now, 0.0)


def cert_from_answer(key_pem: bytes, answer: dict[str, Any]) -> WorkloadCert:
    """The server's answer to a CSR, checked: the chain's leaf must carry our public key."""
    chain = str(answer.get("certificateChain") or "").encode()
    bundle = str(answer.get("trustBundle") or "").encode()
    if not chain or not bundle:
        raise ValueError("the certificate answer lacks certificateChain or trustBundle")
    leaf = x509.load_pem_x509_certificate(chain)
    key = serialization.load_pem_private_key(key_pem, password=None)
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise ValueError("the signed certificate is not for the key this proxy made")
    return WorkloadCert(
        key_pem=key_pem,
        chain_pem=chain,
        bundle_pem=bundle,
        identity=str(answer.get("identity") or ""),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


Sign = Callable[[bytes], Awaitable[dict[str, Any]]]  # CSR PEM -> the server's JSON answer


class CertificateKeeper:
    """Holds the proxy's certificate and keeps it fresh.

    ``sign`` sends a CSR to the control plane. ``on_change`` is called with
    each new certificate (the listeners rebuild their TLS contexts: new
    connections use the new certificate, open ones keep theirs). ``renew_now``
    asks again at once: the CA's signing chain changed (``caGeneration``).
    """

    def __init__(
        self,
        sign: Sign,
        on_change: Callable[[WorkloadCert], Awaitable[None] | None],
        *,
        clock: Callable[[], float],  # wall-clock seconds (time.time): certificates carry calendar times
        rng: random.Random | None = None,
    ) -> None:
        self._sign = sign
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self.current: WorkloadCert | None = None
        self.ready = asyncio.Event()
        self.renewals = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()

    def renew_now(self) -> None:
        self._wake.set()

    async def renew(self) -> WorkloadCert:
        key_pem, csr_pem = make_csr()
        answer = await self._sign(csr_pem)
        cert = cert_from_answer(key_pem, answer)
        self.current = cert
        self.renewals += 1
        self.last_error = None
        result = self._on_change(cert)
        if result is not None:
            await result
        self.ready.set()
        return cert

    async def run(self, stop: asyncio.Event) -> None:
        retry = RETRY_MIN_S
        while not stop.is_set():
            try:
                await self.renew()
                retry = RETRY_MIN_S
                assert self.current is not None
                # The CA backdates notBefore for clock skew (a minute): half-life counts from when the
                # certificate arrived, or a 1-minute certificate would be due the moment it arrives.
                now = self._clock()
                wait = renew_in(max(self.current.not_before, now), self.current.not_after, now, self._rng)
            except Exception as exc:  # keep serving with what we hold; ask again soon
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("certificate request failed: %s; retrying in %.1fs", self.last_error, retry)
                wait, retry = retry, min(retry * 2, RETRY_MAX_S)
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED), wait)
            for w in waiters:
                w.cancel()
