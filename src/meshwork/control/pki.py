"""X.509 for the mesh CA, without files or clocks: building certificates and deciding rotations.

What lives here: key generation, the root / intermediate / workload
certificate builders (``now`` is always a parameter), CSR checks, PEM
helpers, and the rotation decisions (when an intermediate or a root is due,
when a retiring root may leave the trust bundle, which CA certificates are
close enough to expiry to warn about).

What must not live here: reading or writing files, the time of day, HTTP.
The CA's state on disk is ``meshwork.control.ca``.

The certificates follow RFC 5280 and the SPIFFE X.509-SVID profile: a CA
certificate has basicConstraints cA=TRUE (critical) and keyUsage
keyCertSign+cRLSign; a workload certificate (SVID) has an empty subject, one
URI SAN (critical, since the subject is empty, RFC 5280 §4.2.1.6),
digitalSignature+keyEncipherment, and serverAuth+clientAuth, so the same
certificate serves both ends of a mutual TLS connection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshwork.core.security.identity import SpiffeId

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# Self-signed root: 10 years (Istio's self-signed root lives 10 y; cert-manager's default CA too).
ROOT_TTL = dt.timedelta(days=3650)
# The signing (intermediate) CA: 1 year, as the issue asks.
INTERMEDIATE_TTL = dt.timedelta(days=365)
# Workload certificates: 24 h by default (Istio's DEFAULT_WORKLOAD_CERT_TTL), 1 minute at least.
WORKLOAD_TTL = dt.timedelta(hours=24)
MIN_WORKLOAD_TTL = dt.timedelta(minutes=1)
# notBefore is set this far back so a peer whose clock runs a little slow accepts a fresh certificate.
BACKDATE = dt.timedelta(minutes=1)
# A CA certificate is replaced once this fraction of its lifetime is left (a 1 y intermediate: ~3 months).
ROTATE_AT_REMAINING = 0.25
# The server warns (event and log line) when a CA certificate is this close to expiry (the issue).
EXPIRY_WARNING = dt.timedelta(days=30)
# RSA keys below this size are refused in CSRs (NIST SP 800-131A).
MIN_RSA_BITS = 2048
# Curves a CSR's EC key may use (what TLS stacks verify everywhere).
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
# A CSR larger than this is refused before parsing (an EC or RSA-4096 CSR is < 2 KiB).
MAX_CSR_BYTES = 16 * 1024


class CsrError(ValueError):
    """The CSR cannot be signed (unparsable, bad signature, unsupported key): the API answers 400."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key (what Istio's proxies and CA use by default for speed)."""
    return ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(org: str, common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_id(public: PublicKey) -> str:
    """A short, unique tag for a CA's name: two CAs made in the same second never share a subject."""
    return x509.SubjectKeyIdentifier.from_public_key(public).digest.hex()[:8]


def _ca_extensions(builder: x509.CertificateBuilder, public: PublicKey, path_length: int) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def build_root(key: PrivateKey, trust_domain: str, now: dt.datetime, ttl: dt.timedelta = ROOT_TTL) -> x509.Certificate:
    """A self-signed root for ``trust_domain``, valid from ``now - BACKDATE`` for ``ttl``."""
    public = key.public_key()
    name = _name(trust_domain, f"meshwork root CA {now:%Y-%m-%d} {_key_id(public)}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ttl)
    )
    builder = _ca_extensions(builder, public, path_length=1)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    return builder.sign(key, _hash_for(key))


def build_intermediate(
    key: PrivateKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    trust_domain: str,
    now: dt.datetime,
    ttl: dt.timedelta = INTERMEDIATE_TTL,
) -> x509.Certificate:
    """The signing CA under ``issuer``; never outlives it."""
    public = key.public_key()
    not_after = min(now + ttl, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(trust_domain, f"meshwork signing CA {now:%Y-%m-%d} {_key_id(public)}"))
        .issuer_name(issuer.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, issuer.not_valid_before_utc))
        .not_valid_after(not_after)
    )
    builder = _ca_extensions(builder, public, path_length=0)
    builder = builder.add_extension(_aki(issuer), critical=False)
    return builder.sign(issuer_key, _hash_for(issuer_key))


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def parse_csr(pem: str) -> x509.CertificateSigningRequest:
    """A CSR whose signature verifies and whose key is one we sign; CsrError otherwise."""
    if not isinstance(pem, str) or not pem.strip():
        raise CsrError('the body must be {"csr": "<PEM certificate signing request>"}')
    if len(pem) > MAX_CSR_BYTES:
        raise CsrError(f"the CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise CsrError(f"the CSR is not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify against its public key")
    check_public_key(csr.public_key())
    return csr


def check_public_key(public: object) -> None:
    """Refuse keys TLS peers would not accept (small RSA, odd curves, DSA...)."""
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise CsrError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {public.key_size}")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ALLOWED_CURVES):
            raise CsrError(f"EC keys must use P-256 or P-384, not {public.curve.name}")
    elif not isinstance(public, ed25519.Ed25519PublicKey):
        raise CsrError(f"unsupported key type {type(public).__name__}: use EC P-256, RSA >= 2048 or Ed25519")


def build_workload(
    public: PublicKey,
    identity: SpiffeId,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    now: dt.datetime,
    ttl: dt.timedelta = WORKLOAD_TTL,
) -> x509.Certificate:
    """An X.509-SVID for ``identity``: only the URI SAN names it (whatever the CSR asked for)."""
    not_after = min(now + max(ttl, MIN_WORKLOAD_TTL), issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, issuer.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    return builder.sign(issuer_key, _hash_for(issuer_key))


# -- PEM ---------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certs_pem(certs: Iterable[x509.Certificate]) -> str:
    return "".join(cert_pem(c) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported CA key type {type(key).__name__}: use EC, RSA or Ed25519")
    return key


def load_certs(data: bytes) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(data)
    if not certs:
        raise ValueError("no PEM certificate found")
    return certs


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt))


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def common_name(cert: x509.Certificate) -> str:
    """The subject's CN, or the whole subject when it has none."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        ))
    except x509.ExtensionNotFound:
        return []


# -- decisions ---------------------------------------------------------------------------------


def due_for_rotation(cert: x509.Certificate, now: dt.datetime, fraction: float = ROTATE_AT_REMAINING) -> bool:
    """Whether less than ``fraction`` of ``cert``'s lifetime is left at ``now``."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (end - now) < (end - start) * fraction


def retire_at(
    promoted: dt.datetime, leaf_expiries: Sequence[dt.datetime], overlap: dt.timedelta | None
) -> dt.datetime:
    """When a replaced root may leave the trust bundle.

    With an overlap the user chose: that long after the new root took over.
    Otherwise: once every workload certificate its chain signed has expired
    (at once when it signed none).
    """
    if overlap is not None:
        return promoted + overlap
    return max([promoted, *leaf_expiries])


@dataclass(frozen=True, slots=True)
class ExpiryWarning:
    what: str  # "root" or "intermediate"
    serial: str
    subject: str
    not_after: dt.datetime
    left: dt.timedelta

    @property
    def message(self) -> str:
        days = self.left.total_seconds() / 86400
        when = "expired" if days < 0 else f"expires in {days:.1f} days"
        return (f"CA {self.what} certificate {self.subject} (serial {self.serial}) {when} "
                f"(notAfter {self.not_after:%Y-%m-%dT%H:%M:%SZ}); rotate it with `meshwork certs rotate-root`")


def expiry_warnings(
    certs: Iterable[tuple[str, x509.Certificate]], now: dt.datetime, window: dt.timedelta = EXPIRY_WARNING
) -> list[ExpiryWarning]:
    """The (kind, certificate) pairs that expire within ``window`` of ``now`` (or already did)."""
    out = []
    for what, cert in certs:
        left = cert.not_valid_after_utc - now
        if left < window:
            out.append(ExpiryWarning(what, serial_hex(cert), cert.subject.rfc4514_string(), cert.not_valid_after_utc, left))
    return out
