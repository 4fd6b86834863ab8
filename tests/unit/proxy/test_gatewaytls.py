"""proxy.gatewaytls: a gateway port's servers into contexts by SNI (real handshakes over memory BIOs)."""

from __future__ import annotations

import random
import ssl
from pathlib import Path

import pytest

from meshwork.core.mesh.gateway_tls import PortTls, ServerCert, TlsServer
from meshwork.proxy.gatewaytls import GatewayTls
from meshwork.proxy.tls import TlsMode
from support.pki import Leaf, Pki, handshake


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki("gateway root")


def secret_server(leaf: Leaf, sni: tuple[str, ...], mode: str = "SIMPLE", ca: bytes | None = None,
                  **versions: str) -> TlsServer:  # fmt: skip
    cert = ServerCert("secret istio-system/x", leaf.cert_pem.decode(), leaf.key_pem.decode(),
                      ca.decode() if ca else None)  # fmt: skip
    return TlsServer(f"gw servers[{sni[0]}]", sni, mode, cert, **versions)  # type: ignore[arg-type]


def client(pki: Pki, leaf: Leaf | None = None, tmp: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.bundle.decode())
    if leaf is not None and tmp is not None:
        (tmp / "c.crt").write_bytes(leaf.cert_pem)
        (tmp / "c.key").write_bytes(leaf.key_pem)
        ctx.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
    return ctx


def test_each_name_gets_its_servers_certificate_and_unknown_names_none(pki: Pki) -> None:
    a, b = pki.leaf(dns=("a.example.com",)), pki.leaf(dns=("b.example.com",))
    tls, problems = GatewayTls(random.Random(0)).listener(
        PortTls(443, (secret_server(a, ("a.example.com",)), secret_server(b, ("b.example.com",)))),
        {},
    )
    assert problems == [] and tls.mode is TlsMode.STRICT and tls.holder is None
    for name, leaf in (("a.example.com", a), ("b.example.com", b)):
        ctx = tls.context_for(name)
        assert ctx is not None
        offers = client(pki)
        offers.set_alpn_protocols(["h2", "http/1.1"])
        _, cli = handshake(ctx, offers, name)
        assert cli.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(leaf.cert_pem.decode())
        assert cli.selected_alpn_protocol() == "http/1.1"  # HTTP/1.1 only, never h2
    assert tls.context_for("c.example.com") is None and tls.context_for(None) is None


def test_files_are_read_and_a_bad_server_is_left_out_with_why(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf(dns=("files.example.com",))
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    files = TlsServer("gw servers[0] (files)", ("*",), "SIMPLE",
                      ServerCert("files", cert_file=str(tmp_path / "tls.crt"), key_file=str(tmp_path / "tls.key")))  # fmt: skip
    missing = TlsServer("gw servers[1] (gone)", ("gone.example.com",), "SIMPLE",
                        ServerCert("files /nope", cert_file="/nope.crt", key_file="/nope.key"))  # fmt: skip
    mismatched = secret_server(Leaf(leaf.cert_pem, pki.leaf().key_pem, 0), ("bad.example.com",))
    tls, problems = GatewayTls(random.Random(0)).listener(
        PortTls(443, (files, missing, mismatched)), {}
    )
    assert tls.holder is not None and set(tls.by_sni) == set()  # "*": the default for any name
    handshake(tls.holder.context, client(pki), "files.example.com")
    assert len(problems) == 2
    assert problems[0].startswith("gw servers[1] (gone) not served: files /nope:")
    assert "bad.example.com" in problems[1] and "not served" in problems[1]


def test_min_protocol_version_refuses_older_clients(pki: Pki) -> None:
    leaf = pki.leaf(dns=("new.example.com",))
    tls, _ = GatewayTls(random.Random(0)).listener(
        PortTls(443, (secret_server(leaf, ("new.example.com",), min_version="TLSV1_3"),)), {}
    )
    ctx = tls.context_for("new.example.com")
    assert ctx is not None and ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    old = client(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(ctx, old, "new.example.com")
    handshake(ctx, client(pki), "new.example.com")


def test_mutual_and_optional_mutual(pki: Pki, tmp_path: Path) -> None:
    clients = Pki("client ca")
    leaf = pki.leaf(dns=("m.example.com", "o.example.com"))
    gw = GatewayTls(random.Random(0))
    tls, _ = gw.listener(PortTls(443, (
        secret_server(leaf, ("m.example.com",), "MUTUAL", clients.bundle),
        secret_server(leaf, ("o.example.com",), "OPTIONAL_MUTUAL", clients.bundle))), {})  # fmt: skip
    mutual, optional = tls.context_for("m.example.com"), tls.context_for("o.example.com")
    assert mutual is not None and optional is not None
    with pytest.raises(ssl.SSLError):
        handshake(mutual, client(pki), "m.example.com")
    srv, _ = handshake(mutual, client(pki, clients.leaf(dns=("me",)), tmp_path), "m.example.com")
    assert srv.getpeercert()
    srv, _ = handshake(optional, client(pki), "o.example.com")
    assert not srv.getpeercert()


def test_contexts_are_reused_until_the_certificate_changes(pki: Pki) -> None:
    leaf = pki.leaf(dns=("r.example.com",))
    gw = GatewayTls(random.Random(0))
    first, _ = gw.listener(PortTls(443, (secret_server(leaf, ("r.example.com",)),)), {})
    ctx1 = first.context_for("r.example.com")
    again, _ = gw.listener(
        PortTls(443, (secret_server(leaf, ("r.example.com",)),), plaintext=True), {}
    )
    assert (
        again is first and again.context_for("r.example.com") is ctx1
    )  # same policy object, same context
    assert again.mode is TlsMode.PERMISSIVE
    renewed = pki.leaf(dns=("r.example.com",))
    rotated, _ = gw.listener(PortTls(443, (secret_server(renewed, ("r.example.com",)),)), {})
    ctx2 = rotated.context_for("r.example.com")
    assert ctx2 is not None and ctx2 is not ctx1
    _, cli = handshake(ctx2, client(pki), "r.example.com")
    assert cli.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(renewed.cert_pem.decode())
