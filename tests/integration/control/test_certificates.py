"""The mesh CA end to end: a real server signs real CSRs, streams its trust bundle, rotates its root.

Certificates are checked with ``openssl verify`` run as a process against
the trust bundle the server handed out; proxies are ``FakeProxy`` clients of
the config stream. Waits are generous bounds, never timing assertions.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshwork.cli import cli
from support.fakeproxy import API, FakeProxy, sidecar_id
from support.node import wait_for
from support.server import Http, ServerProcess, pod, running_server

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/{ns}/pods"
BUNDLE = "/api/v1/namespaces/istio-system/configmaps/istio-ca-root-cert"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("certs"), "--workload-cert-ttl", "2m") as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


def csr(san: str = "spiffe://cluster.local/ns/kube-system/sa/admin") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), False)
        .sign(key, hashes.SHA256())
    )
    return req.public_bytes(serialization.Encoding.PEM).decode()


def create_pod(api: Http, ns: str, name: str, **spec: Any) -> str:
    reply = api.post(PODS.format(ns=ns), {**pod(name, **spec), "metadata": {"name": name, "namespace": ns}})
    assert reply.status == 201, reply.body
    return sidecar_id(name, ns)


def sign(api: Http, ident: str, **kw: Any) -> Any:
    return api.post(f"{API}/proxies/{ident}/certificate", {"csr": csr()}, **kw)


def openssl_verify(tmp: Path, chain: str, bundle: str) -> subprocess.CompletedProcess[str]:
    (tmp / "chain.pem").write_text(chain)
    (tmp / "bundle.pem").write_text(bundle)
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp / "bundle.pem"),
         "-untrusted", str(tmp / "chain.pem"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, timeout=30, check=False,
    )


def uri_sans(chain: str) -> list[str]:
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def roots(bundle: str) -> int:
    return bundle.count("BEGIN CERTIFICATE")


def run(server: ServerProcess, *args: str) -> Result:
    env = {"MESHWORK_HOME": str(server.data_dir), "MESHWORK_SERVER": server.url, "MESHWORK_TOKEN": server.token}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_a_pods_proxy_gets_its_service_accounts_identity(api: Http, tmp_path: Path) -> None:
    ident = create_pod(api, "shop", "reviews-1", serviceAccountName="reviews")
    reply = sign(api, ident)
    assert reply.status == 200, reply.body
    body = reply.json
    # The CSR asked for kube-system/admin; the server names the pod's ServiceAccount.
    assert body["identity"] == "spiffe://cluster.local/ns/shop/sa/reviews"
    assert uri_sans(body["certificateChain"]) == [body["identity"]]
    assert body["certificateChain"].count("BEGIN CERTIFICATE") == 2  # leaf, intermediate
    not_before = dt.datetime.fromisoformat(body["notBefore"].replace("Z", "+00:00"))
    not_after = dt.datetime.fromisoformat(body["notAfter"].replace("Z", "+00:00"))
    assert not_after - not_before == dt.timedelta(minutes=3)  # 2m lifetime + 1m backdate
    result = openssl_verify(tmp_path, body["certificateChain"], body["trustBundle"])
    assert result.returncode == 0, result.stdout + result.stderr
    # The bundle is the one every snapshot carries.
    assert body["trustBundle"] == api.get(BUNDLE).json["data"]["root-cert.pem"]


def test_a_pod_without_a_service_account_is_default(api: Http) -> None:
    ident = create_pod(api, "shop", "plain")
    assert sign(api, ident).json["identity"] == "spiffe://cluster.local/ns/shop/sa/default"


def test_refusals(api: Http, server: ServerProcess) -> None:
    ident = create_pod(api, "shop", "refusals")
    url = f"{API}/proxies/{ident}/certificate"
    bad = api.post(url, {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})
    assert bad.status == 400 and bad.json["reason"] == "BadRequest", bad.body
    assert api.post(url, {"nothing": 1}).status == 400
    assert api.post(url, None, raw=b"not json").status == 400
    unknown = sign(api, sidecar_id("ghost", "shop"))
    assert unknown.status == 404 and "ghost" in unknown.json["message"]
    assert sign(api, "not-a-proxy-id").status == 400
    assert sign(api, ident, token=False).status == 401
    assert sign(api, ident, token="wrong").status == 401
    assert api.get(url).status == 405


def test_a_nodes_proxies_get_certificates_only_for_that_nodes_pods(api: Http) -> None:
    """One node's proxy credential cannot borrow the identity of a pod elsewhere, or at another IP."""
    creds = api.post(f"{API}/nodes/node-a/credentials", {})
    assert creds.status == 201, creds.body
    proxy_token = creds.json["proxyToken"]
    mine = create_pod(api, "shop", "on-a", serviceAccountName="reviews", nodeName="node-a")
    theirs = create_pod(api, "shop", "on-b", serviceAccountName="payments", nodeName="node-b")
    assert sign(api, mine, token=proxy_token).json["identity"] == "spiffe://cluster.local/ns/shop/sa/reviews"
    refused = sign(api, theirs, token=proxy_token)
    assert refused.status == 403 and "not bound to node" in refused.json["message"], refused.body
    # The pod IP check: give on-a an address, then ask at another one.
    status = {"status": {"phase": "Running", "podIP": "127.1.0.9"}}
    patched = api.request("PATCH", PODS.format(ns="shop") + "/on-a/status", status,
                          content_type="application/merge-patch+json")
    assert patched.status == 200, patched.body
    at_other_ip = sign(api, sidecar_id("on-a", "shop", ip="127.1.0.10"), token=proxy_token)
    assert at_other_ip.status == 403 and "127.1.0.9" in at_other_ip.json["message"]
    assert sign(api, sidecar_id("on-a", "shop", ip="127.1.0.9"), token=proxy_token).status == 200
    assert sign(api, theirs).status == 200  # the admin is not a node: no restriction


def test_meshwork_certs_lists_roots_intermediates_and_workloads(api: Http, server: ServerProcess) -> None:
    ident = create_pod(api, "listing", "web-1", serviceAccountName="web")
    serial = sign(api, ident).json["serialNumber"]
    result = run(server, "certs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "NAME", "SERIAL", "STATE", "NOT", "AFTER", "EXPIRES", "IN"]
    kinds = [line.split()[0] for line in lines[1:]]
    assert "root" in kinds and "intermediate" in kinds
    row = next(line for line in lines if serial in line)
    assert row.split()[:2] == ["workload", "spiffe://cluster.local/ns/listing/sa/web"]
    as_json = json.loads(run(server, "certs", "-o", "json", "--type", "workload").stdout)
    assert {i["type"] for i in as_json["items"]} == {"workload"}
    assert any(i["proxy"] == ident and i["serial"] == serial for i in as_json["items"])


def test_rotate_root_is_trusted_everywhere_before_it_signs(api: Http, server: ServerProcess, tmp_path: Path) -> None:
    ident = create_pod(api, "rotation", "app-1", serviceAccountName="app")
    before = sign(api, ident).json
    proxy = FakeProxy(server.host, server.port, server.token, ident).start()
    try:
        first = proxy.next()
        generation = first["caGeneration"]
        assert first["trustBundle"] == before["trustBundle"] and generation == before["caGeneration"]
        result = run(server, "certs", "rotate-root")
        assert result.exit_code == 0, result.output
        assert "signs now" in result.stdout and f"caGeneration {generation + 1}" in result.stdout
        seen = [proxy.next()]
        while seen[-1]["caGeneration"] == generation:
            seen.append(proxy.next())
        # First the new root joins the bundle under the old generation (the proxy acknowledged it),
        # then the generation moves with both roots still trusted.
        pending, promoted = seen[-2], seen[-1]
        assert pending["caGeneration"] == generation and roots(pending["trustBundle"]) == roots(first["trustBundle"]) + 1
        assert promoted["caGeneration"] == generation + 1 and promoted["trustBundle"] == pending["trustBundle"]
        assert int(promoted["version"]) > int(pending["version"]) > int(first["version"])
    finally:
        proxy.close()
    after = sign(api, ident).json
    assert after["caGeneration"] == generation + 1 and after["trustBundle"] == promoted["trustBundle"]
    old_issuer = x509.load_pem_x509_certificates(before["certificateChain"].encode())[1].issuer
    new_issuer = x509.load_pem_x509_certificates(after["certificateChain"].encode())[1].issuer
    assert old_issuer != new_issuer  # the new chain signs
    for chain in (before["certificateChain"], after["certificateChain"]):  # and both verify during the overlap
        assert openssl_verify(tmp_path, chain, after["trustBundle"]).returncode == 0
    listing = api.get(f"{API}/certificates").json
    states = {(i["type"], i["state"]) for i in listing["items"]}
    assert {("root", "Active"), ("root", "Retiring")} <= states


def test_an_overlap_retires_the_old_root_and_the_ca_survives_restarts(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with running_server(tmp_path / "data") as srv:
        api = srv.client()
        initial = api.get(BUNDLE).json["data"]["root-cert.pem"]
        ident = create_pod(api, "default", "p1")
        proxy = FakeProxy(srv.host, srv.port, srv.token, ident).start()
        try:
            generation = proxy.next()["caGeneration"]
            reply = api.post(f"{API}/certificates/rotate-root", {"overlapSeconds": 1})
            assert reply.status == 200 and reply.json["promoted"], reply.body
            snap = proxy.next()
            while not (snap["caGeneration"] == generation + 1 and roots(snap["trustBundle"]) == 1):
                snap = proxy.next()
            assert initial not in snap["trustBundle"]
        finally:
            proxy.close()
        rotated = api.get(BUNDLE).json["data"]["root-cert.pem"]
        assert api.post(f"{API}/certificates/rotate-root", {"overlapSeconds": -1}).status == 400
        api.close()
    with running_server(tmp_path / "data") as again:
        api = again.client()
        assert api.get(BUNDLE).json["data"]["root-cert.pem"] == rotated
        assert sign(api, ident).json["caGeneration"] == generation + 1
        api.close()


def _short_lived_root(directory: Path, days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem", directory / "ca.key"


def test_a_user_root_close_to_expiry_is_warned_about(tmp_path: Path) -> None:
    cert, key = _short_lived_root(tmp_path / "user", days=10)
    (tmp_path / "data").mkdir()
    with running_server(tmp_path / "data", "--ca-cert", str(cert), "--ca-key", str(key)) as srv:
        api = srv.client()
        assert api.get(BUNDLE).json["data"]["root-cert.pem"] == cert.read_text()
        events = wait_for(lambda: [
            e for e in api.get("/api/v1/namespaces/istio-system/events").json["items"]
            if e["reason"] == "CACertificateExpiring"
        ], 30, "the CACertificateExpiring warning")
        assert {e["type"] for e in events} == {"Warning"}
        assert any("corp root" in e["message"] and "expires in 10.0 days" in e["message"] for e in events)
        assert events[0]["involvedObject"]["name"] == "istio-ca-root-cert"
        refused = api.post(f"{API}/certificates/rotate-root", {})
        assert refused.status == 400 and "--ca-cert" in refused.json["message"]
        api.close()
        log = (srv.data_dir / "test-server.log").read_text()
        assert "CA root certificate CN=corp root" in log


def test_a_mismatched_ca_key_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    cert, _ = _short_lived_root(tmp_path / "a", days=100)
    _, other = _short_lived_root(tmp_path / "b", days=100)
    result = CliRunner().invoke(cli, ["server", "--port", "0", "--data-dir", str(tmp_path / "d"),
                                      "--ca-cert", str(cert), "--ca-key", str(other)])
    assert result.exit_code == 2 and "is not the key of the first certificate" in result.output
    result = CliRunner().invoke(cli, ["server", "--port", "0", "--data-dir", str(tmp_path / "d"),
                                      "--workload-cert-ttl", "30s"])
    assert result.exit_code == 2 and "shorter than the minimum of 1m" in result.output
