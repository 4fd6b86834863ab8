"""Certificates for TLS tests, made with ``cryptography``: roots, and leaves with a SPIFFE URI SAN.

``Pki()`` is one root; ``leaf(identity)`` signs a workload certificate with
it (EC P-256, URI SAN only, serverAuth + clientAuth, like the mesh CA's);
``leaf(..., expired=True)`` one that is no longer valid; another ``Pki()`` is
a foreign root. DNS-named leaves serve gateway (SNI) tests.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Leaf", "Pki", "spiffe"]


def spiffe(sa: str, ns: str = "default", td: str = "cluster.local") -> str:
    return f"spiffe://{td}/ns/{ns}/sa/{sa}"


@dataclass(frozen=True)
class Leaf:
    cert_pem: bytes  # the leaf alone (signed by the root directly)
    key_pem: bytes
    serial: int


class Pki:
    """One self-signed root CA."""

    def __init__(self, name: str = "meshwork test root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip

    @property
    def bundle(self) -> bytes:
        """The trust bundle (PEM) holding this root."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, identity: str | None = None, *, dns: tuple[str, ...] = (), expired: bool = False) -> Leaf:
        """A leaf with URI SAN ``identity`` and/or DNS SANs ``dns``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            start, end = now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        if identity is not None:
            names.append(x509.UniformResourceIdentifier(identity))
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]) if not dns else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=not dns)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )  # fmt: skip
        cert = builder.sign(self.key, hashes.SHA256())
        return Leaf(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            serial,
        )


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, sni: str | None = None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a whole handshake between two memory BIO pairs; raises what either side raises."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=sni)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    # TLS 1.3: the server's verdict on the client's certificate reaches the client with the first read.
    srv.write(b"x")
    c_in.write(s_out.read())
    assert cli.read(1) == b"x"
    return srv, cli


def client_hello(sni: str) -> bytes:
    """The first bytes a TLS client sends for ``sni``: a real ClientHello, made by ``ssl``."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()
