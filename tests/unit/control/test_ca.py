"""The mesh CA: certificates that verify, SPIFFE identities chosen by the server, private keys, rotation.

Verification is done twice, by ``cryptography``'s X.509 path validation and
by ``openssl verify`` run as a real process, so a certificate that only one
implementation would accept fails here. Time is a parameter: rotation and
expiry are driven by moving ``now``, never by waiting.
"""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given
from hypothesis import strategies as st

from meshwork.control import pki
from meshwork.control.ca import CertificateAuthority, load_user_root
from meshwork.core.security.identity import SpiffeId

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
REVIEWS = SpiffeId("cluster.local", "default", "reviews")


def csr_pem(key: pki.PrivateKey | None = None, san: str | None = "spiffe://cluster.local/ns/kube-system/sa/admin") -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whoever")])
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def verify_client(chain_pem: str, bundle_pem: str, at: dt.datetime) -> list[str]:
    """Path-validate a leaf as a TLS client certificate with cryptography; its URI SANs."""
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem.encode())
    store = Store(x509.load_pem_x509_certificates(bundle_pem.encode()))
    verifier = PolicyBuilder().store(store).time(at).build_client_verifier()
    verified = verifier.verify(leaf, intermediates)
    assert verified.subjects is not None
    return [n.value for n in verified.subjects if isinstance(n, x509.UniformResourceIdentifier)]


def openssl_verify(tmp: Path, chain_pem: str, bundle_pem: str, at: dt.datetime) -> subprocess.CompletedProcess[str]:
    (tmp / "chain.pem").write_text(chain_pem)
    (tmp / "bundle.pem").write_text(bundle_pem)
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    (tmp / "leaf.pem").write_text(pki.cert_pem(leaf))
    return subprocess.run(
        ["openssl", "verify", "-attime", str(int(at.timestamp())), "-purpose", "sslclient",
         "-CAfile", str(tmp / "bundle.pem"), "-untrusted", str(tmp / "chain.pem"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.open(tmp_path, NOW, workload_ttl=dt.timedelta(hours=1))


def test_issued_leaf_verifies_against_the_bundle_with_both_implementations(ca: CertificateAuthority, tmp_path: Path) -> None:
    signed = ca.sign(csr_pem(), REVIEWS, "sidecar~1~p.default~default.svc.cluster.local", NOW)
    assert verify_client(signed.chain_pem, signed.trust_bundle, NOW) == [REVIEWS.uri]
    result = openssl_verify(tmp_path, signed.chain_pem, signed.trust_bundle, NOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def test_a_leaf_fails_verification_against_a_foreign_root(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.open(tmp_path / "other", NOW)
    signed = ca.sign(csr_pem(), REVIEWS, "p", NOW)
    with pytest.raises(x509.verification.VerificationError):
        verify_client(signed.chain_pem, other.trust_bundle(), NOW)
    assert openssl_verify(tmp_path, signed.chain_pem, other.trust_bundle(), NOW).returncode != 0


def test_the_identity_is_the_servers_choice_not_the_csrs(ca: CertificateAuthority) -> None:
    signed = ca.sign(csr_pem(san="spiffe://cluster.local/ns/kube-system/sa/admin"), REVIEWS, "p", NOW)
    leaf = signed.leaf
    assert pki.uri_sans(leaf) == [REVIEWS.uri]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and len(san.value) == 1
    assert leaf.subject == x509.Name([])  # the CSR's CN is dropped too
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_lifetime_backdate_and_minimum(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path, NOW, workload_ttl=dt.timedelta(seconds=5))
    leaf = ca.sign(csr_pem(), REVIEWS, "p", NOW).leaf
    assert leaf.not_valid_before_utc == NOW - pki.BACKDATE
    assert leaf.not_valid_after_utc == NOW + pki.MIN_WORKLOAD_TTL  # 5 s is raised to the 1 minute minimum
    ca2 = CertificateAuthority.open(tmp_path / "b", NOW, workload_ttl=dt.timedelta(minutes=2))
    assert ca2.sign(csr_pem(), REVIEWS, "p", NOW).leaf.not_valid_after_utc == NOW + dt.timedelta(minutes=2)


def test_an_rsa_csr_is_signed_with_its_own_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    signed = ca.sign(csr_pem(key), REVIEWS, "p", NOW)
    assert isinstance(signed.leaf.public_key(), rsa.RSAPublicKey)
    assert openssl_verify(tmp_path, signed.chain_pem, signed.trust_bundle, NOW).returncode == 0


def _tampered(pem: str) -> str:
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    body = __import__("base64").encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "", "body must be"),
        (lambda: "not a csr", "not a PEM"),
        (lambda: _tampered(csr_pem()), "signature does not verify"),
        (lambda: csr_pem(rsa.generate_private_key(65537, 1024)), "at least 2048"),
        (lambda: csr_pem(ec.generate_private_key(ec.SECP256K1())), "P-256 or P-384"),
        (lambda: "x" * (pki.MAX_CSR_BYTES + 1), "larger than"),
    ],
)
def test_bad_csrs_are_refused(ca: CertificateAuthority, make: object, message: str) -> None:
    with pytest.raises(pki.CsrError, match=message):
        ca.sign(make(), REVIEWS, "p", NOW)  # type: ignore[operator]
    assert ca.issued == []


def test_keys_are_private_and_the_ca_is_reused(tmp_path: Path) -> None:
    first = CertificateAuthority.open(tmp_path, NOW)
    ca_dir = tmp_path / "ca"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    keys = sorted(ca_dir.rglob("*key*.pem"))
    assert [k.name for k in keys] == ["root-key.pem", "signing-key.pem"]
    for path in [*keys, ca_dir / "state.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    first.sign(csr_pem(), REVIEWS, "p", NOW)
    again = CertificateAuthority.open(tmp_path, NOW + dt.timedelta(days=1))
    assert again.trust_bundle() == first.trust_bundle()
    assert again.generation == first.generation == 1
    assert [i.serial for i in again.issued] == [i.serial for i in first.issued]


def test_root_rotation_keeps_both_roots_until_the_old_certificates_expire(ca: CertificateAuthority, tmp_path: Path) -> None:
    old_leaf = ca.sign(csr_pem(), REVIEWS, "p", NOW)
    t1 = NOW + dt.timedelta(minutes=10)
    pending = ca.begin_root_rotation(t1)
    # Pending: trusted by everyone, signing nothing yet, generation unchanged.
    assert ca.trust_bundle().count("BEGIN CERTIFICATE") == 2
    assert ca.generation == 1
    assert ca.sign(csr_pem(), REVIEWS, "p", t1).leaf.issuer == old_leaf.leaf.issuer
    assert ca.promote(t1)
    assert ca.generation == 2 and ca.active is pending
    new_leaf = ca.sign(csr_pem(), REVIEWS, "p", t1)
    assert new_leaf.leaf.issuer != old_leaf.leaf.issuer
    bundle = ca.trust_bundle()
    for leaf in (old_leaf, new_leaf):  # during the overlap both chains verify
        assert verify_client(leaf.chain_pem, bundle, t1) == [REVIEWS.uri]
        assert openssl_verify(tmp_path, leaf.chain_pem, bundle, t1).returncode == 0
    # The old root stays until the last certificate it signed (issued at t1, 1 h) expires.
    retire = ca.next_retirement()
    assert retire == t1 + dt.timedelta(hours=1)
    assert ca.maintain(retire - dt.timedelta(seconds=1)) == []
    assert ca.trust_bundle().count("BEGIN CERTIFICATE") == 2
    assert ca.maintain(retire) == ["root of chain 1 left the trust bundle"]
    assert ca.trust_bundle().count("BEGIN CERTIFICATE") == 1
    with pytest.raises(x509.verification.VerificationError):
        verify_client(old_leaf.chain_pem, ca.trust_bundle(), t1)
    # The state survives a restart.
    reopened = CertificateAuthority.open(tmp_path, retire)
    assert reopened.trust_bundle() == ca.trust_bundle() and reopened.generation == 2


def test_a_chosen_overlap_decides_when_the_old_root_leaves(ca: CertificateAuthority) -> None:
    ca.sign(csr_pem(), REVIEWS, "p", NOW)
    ca.begin_root_rotation(NOW, overlap=dt.timedelta(minutes=5))
    ca.promote(NOW)
    assert ca.next_retirement() == NOW + dt.timedelta(minutes=5)


def test_an_intermediate_due_for_rotation_is_replaced_under_the_same_root(ca: CertificateAuthority, tmp_path: Path) -> None:
    old = ca.sign(csr_pem(), REVIEWS, "p", NOW)
    later = ca.active.intermediate.not_valid_after_utc - dt.timedelta(days=60)  # < 25% of a year left
    bundle = ca.trust_bundle()
    assert ca.maintain(later) == ["new intermediate for chain 1"]
    assert ca.generation == 2 and ca.trust_bundle() == bundle and ca.pending is None
    fresh = ca.sign(csr_pem(), REVIEWS, "p", later)
    assert fresh.leaf.issuer != old.leaf.issuer  # signed by the new intermediate
    assert openssl_verify(tmp_path, fresh.chain_pem, bundle, later).returncode == 0
    assert verify_client(old.chain_pem, bundle, NOW) == [REVIEWS.uri]  # the old chain still verifies


def test_a_root_near_its_end_starts_a_rotation(ca: CertificateAuthority) -> None:
    late = ca.active.roots[0].not_valid_after_utc - dt.timedelta(days=200)
    assert ca.maintain(late) == ["root due for rotation: a new root joined the trust bundle"]
    assert ca.pending is not None and ca.trust_bundle().count("BEGIN CERTIFICATE") == 2


def _user_root(tmp: Path, days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "root.pem").write_text(pki.cert_pem(cert))
    (tmp / "root.key").write_bytes(pki.key_pem(key))
    return tmp / "root.pem", tmp / "root.key"


def test_a_user_root_signs_the_intermediate_and_is_the_bundle(tmp_path: Path) -> None:
    cert, key = _user_root(tmp_path / "user", days=3650)
    ca = CertificateAuthority.open(tmp_path / "data", NOW, external=(cert, key))
    assert ca.trust_bundle() == cert.read_text()
    assert not list((tmp_path / "data" / "ca").rglob("root-key.pem"))  # the user's key is not copied
    signed = ca.sign(csr_pem(), REVIEWS, "p", NOW)
    assert verify_client(signed.chain_pem, cert.read_text(), NOW) == [REVIEWS.uri]
    assert openssl_verify(tmp_path, signed.chain_pem, cert.read_text(), NOW).returncode == 0
    # Restarting with the same files reuses the chain; with another root, it becomes pending.
    again = CertificateAuthority.open(tmp_path / "data", NOW, external=(cert, key))
    assert again.pending is None and len(again.chains) == 1
    cert2, key2 = _user_root(tmp_path / "user2", days=3650)
    moved = CertificateAuthority.open(tmp_path / "data", NOW, external=(cert2, key2))
    assert moved.pending is not None and moved.trust_bundle().count("BEGIN CERTIFICATE") == 2


def test_an_intermediate_is_not_renewed_when_the_user_root_ends_first(tmp_path: Path) -> None:
    cert, key = _user_root(tmp_path / "user", days=10)
    ca = CertificateAuthority.open(tmp_path / "data", NOW, external=(cert, key))
    assert ca.active.intermediate.not_valid_after_utc == ca.active.roots[0].not_valid_after_utc
    assert ca.maintain(NOW + dt.timedelta(days=9)) == []  # a new one could last no longer
    assert ca.generation == 1 and ca.pending is None


def test_user_roots_are_checked(tmp_path: Path) -> None:
    cert, key = _user_root(tmp_path / "a", days=10)
    _, other_key = _user_root(tmp_path / "b", days=10)
    with pytest.raises(ValueError, match="is not the key"):
        load_user_root(cert, other_key, NOW)
    with pytest.raises(ValueError, match="expired"):
        load_user_root(cert, key, NOW + dt.timedelta(days=11))
    with pytest.raises(ValueError, match="cannot load"):
        load_user_root(tmp_path / "missing.pem", key, NOW)


def test_expiry_warnings_within_30_days(tmp_path: Path) -> None:
    cert, key = _user_root(tmp_path / "user", days=20)
    ca = CertificateAuthority.open(tmp_path / "data", NOW, external=(cert, key))
    warnings = pki.expiry_warnings([(w, c) for w, c, _ in ca.ca_certificates()], NOW)
    # The root and the intermediate (which never outlives its root) both expire in 20 days.
    assert sorted(w.what for w in warnings) == ["intermediate", "root"]
    assert all("expires in 20.0 days" in w.message for w in warnings)
    fresh = CertificateAuthority.open(tmp_path / "fresh", NOW)
    assert pki.expiry_warnings([(w, c) for w, c, _ in fresh.ca_certificates()], NOW) == []


times = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2040, 1, 1), timezones=st.just(dt.UTC))


@given(times, st.lists(times, max_size=5), st.one_of(st.none(), st.integers(0, 10**6)))
def test_retirement_never_precedes_what_it_must_wait_for(
    promoted: dt.datetime, expiries: list[dt.datetime], overlap_s: int | None
) -> None:
    overlap = dt.timedelta(seconds=overlap_s) if overlap_s is not None else None
    at = pki.retire_at(promoted, expiries, overlap)
    if overlap is None:
        assert at >= promoted and all(at >= e for e in expiries)
        assert at in [promoted, *expiries]
    else:
        assert at == promoted + overlap
