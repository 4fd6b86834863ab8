"""proxy.tls without sockets: real handshakes between in-memory SSLObjects, contexts, holders, pool keys."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from meshwork.proxy.plan import Downstream, Endpoint, UpstreamTls
from meshwork.proxy.tls import (
    MESH_ALPN,
    ContextHolder,
    ListenerTls,
    TlsMode,
    check_peer,
    client_context,
    load_chain,
    peer_identity,
    peer_principal,
    server_context,
)
from support.pki import Pki, handshake, spiffe

SLEEP, REVIEWS = spiffe("sleep"), spiffe("reviews")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def test_mutual_tls_gives_each_side_the_other_identity(pki: Pki) -> None:
    server_leaf, client_leaf = pki.leaf(REVIEWS), pki.leaf(SLEEP)
    srv, cli = handshake(
        server_context(server_leaf.cert_pem, server_leaf.key_pem, pki.bundle),
        client_context(pki.bundle, client_leaf.cert_pem, client_leaf.key_pem),
    )
    assert peer_identity(srv) == SLEEP
    assert peer_principal(srv) == "cluster.local/ns/default/sa/sleep"
    assert peer_identity(cli) == REVIEWS
    assert cli.selected_alpn_protocol() == MESH_ALPN[0]
    assert check_peer(cli, frozenset({REVIEWS})) is None
    assert check_peer(cli, frozenset()) is None
    problem = check_peer(cli, frozenset({spiffe("ratings")}))
    assert problem is not None and "SAN mismatch" in problem and REVIEWS in problem


def test_a_client_without_a_certificate_fails_a_mesh_server(pki: Pki) -> None:
    leaf = pki.leaf(REVIEWS)
    with pytest.raises(ssl.SSLError):
        handshake(server_context(leaf.cert_pem, leaf.key_pem, pki.bundle), client_context(pki.bundle))


def test_a_server_from_another_root_fails_verification(pki: Pki) -> None:
    other = Pki().leaf(REVIEWS)
    client = pki.leaf(SLEEP)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(other.cert_pem, other.key_pem, pki.bundle),
                  client_context(pki.bundle, client.cert_pem, client.key_pem))  # fmt: skip


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(pki: Pki) -> None:
    leaf = pki.leaf(REVIEWS)
    old = client_context(pki.bundle)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server_context(leaf.cert_pem, leaf.key_pem, require_client_cert=False), old)


def test_tls_1_2_still_works(pki: Pki) -> None:
    server_leaf, client_leaf = pki.leaf(REVIEWS), pki.leaf(SLEEP)
    client = client_context(pki.bundle, client_leaf.cert_pem, client_leaf.key_pem)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    srv, cli = handshake(server_context(server_leaf.cert_pem, server_leaf.key_pem, pki.bundle), client)
    assert cli.version() == "TLSv1.2" and peer_identity(srv) == SLEEP


def test_loading_a_key_leaves_no_file_behind(pki: Pki, tmp_path: Path) -> None:
    # In a directory of its own: other processes' proxies load keys in /dev/shm meanwhile.
    leaf = pki.leaf(SLEEP)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_chain(ctx, leaf.cert_pem, leaf.key_pem, under=str(tmp_path))
    with pytest.raises(ssl.SSLError):
        load_chain(ctx, leaf.cert_pem, pki.leaf(SLEEP).key_pem, under=str(tmp_path))  # a key that does not match
    assert list(tmp_path.iterdir()) == []


def test_requiring_client_certificates_needs_a_trust_bundle(pki: Pki) -> None:
    leaf = pki.leaf(SLEEP)
    with pytest.raises(ValueError, match="trust bundle"):
        server_context(leaf.cert_pem, leaf.key_pem)


def test_the_holder_swaps_in_one_step(pki: Pki) -> None:
    a, b = client_context(pki.bundle), client_context(pki.bundle)
    holder = ContextHolder(a)
    holder.swap(b)
    assert holder.context is b and holder.generation == 1


def test_listener_picks_contexts_by_exact_name_then_wildcard_then_default(pki: Pki) -> None:
    ctxs = {n: client_context(pki.bundle) for n in ("a", "wild", "default")}
    tls = ListenerTls(
        TlsMode.STRICT,
        ContextHolder(ctxs["default"]),
        by_sni={"a.example.com": ContextHolder(ctxs["a"]), "*.example.com": ContextHolder(ctxs["wild"])},
    )
    assert tls.context_for("a.example.com") is ctxs["a"]
    assert tls.context_for("b.example.com") is ctxs["wild"]
    assert tls.context_for("x.b.example.com") is ctxs["default"]  # a wildcard covers one label
    assert tls.context_for(None) is ctxs["default"]
    assert tls.needs_hello and not ListenerTls().needs_hello
    assert ListenerTls(holder=None).context_for("a.example.com") is None


def test_pool_keys_keep_tls_and_plaintext_apart(pki: Pki) -> None:
    holder = ContextHolder(client_context(pki.bundle))
    plain = Endpoint("127.0.0.1", 15006)
    reviews = Endpoint("127.0.0.1", 15006, tls=UpstreamTls(holder, identities=frozenset({REVIEWS})))
    again = Endpoint("127.0.0.1", 15006, tls=UpstreamTls(holder, identities=frozenset({REVIEWS})))
    ratings = Endpoint("127.0.0.1", 15006, tls=UpstreamTls(holder, identities=frozenset({spiffe("ratings")})))
    assert plain.pool_key == plain.key == "127.0.0.1:15006"
    assert len({plain.pool_key, reviews.pool_key, ratings.pool_key}) == 3
    assert reviews.pool_key == again.pool_key  # the same setting rebuilt by a config push shares the pool
    assert plain == reviews and reviews.key == plain.key  # the same address for balancing and outliers


def test_downstream_defaults_are_a_plaintext_connection() -> None:
    d = Downstream("127.0.0.1", 15006)
    assert (d.principal, d.tls, d.sni) == (None, False, None)
