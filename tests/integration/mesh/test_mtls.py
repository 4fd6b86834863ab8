"""Mutual TLS between sidecars, end to end: real server, agent, pods, sockets and TLS.

Two injected Deployments in one namespace, each with its own ServiceAccount:
``web`` serves on ``$POD_IP:8080`` behind a Service on port 80, and
``client``'s app calls ``http://web/`` through its sidecar without end,
counting answers in a file. The tests speak to the sidecars' inbound port
(:15006) themselves: plaintext with a raw socket, TLS with Python's ``ssl``
and a certificate obtained from the CA endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

NS = "shop"
CONFORMANCE = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "istio.io" / "security" / "authn-policy"
MESH_STRICT = {"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
               "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip

SERVE = (
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        body = (os.environ['HOSTNAME'] + ' ' + str(self.server.server_address[1])).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "import threading\n"
    "ports = [int(p) for p in os.environ.get('PORTS', '8080').split(',')]\n"
    "for p in ports[1:]:\n"
    "    threading.Thread(target=http.server.ThreadingHTTPServer((os.environ['POD_IP'], p), H).serve_forever,\n"
    "                     daemon=True).start()\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], ports[0]), H).serve_forever()\n"
)

# Calls $TARGET through the sidecar (HTTP_PROXY) without end; counts in $COUNTS (JSON, replaced atomically).
CALL = (
    "import json, os, time, urllib.error, urllib.request\n"
    "ok = fail = 0; errors = []\n"
    "while True:\n"
    "    try:\n"
    "        with urllib.request.urlopen(os.environ['TARGET'], timeout=10) as r:\n"
    "            r.read(); last = r.status\n"
    "    except urllib.error.HTTPError as e:\n"
    "        last = e.code; e.read()\n"
    "    except OSError as e:\n"
    "        last = repr(e)\n"
    "    if last == 200:\n"
    "        ok += 1\n"
    "    else:\n"
    "        fail += 1; errors = (errors + [str(last)])[-5:]\n"
    "    with open(os.environ['COUNTS'] + '.tmp', 'w') as f:\n"
    "        json.dump({'ok': ok, 'fail': fail, 'last': last, 'errors': errors}, f)\n"
    "    os.replace(os.environ['COUNTS'] + '.tmp', os.environ['COUNTS'])\n"
    "    time.sleep(0.02)\n"
)


# -- cluster set-up --------------------------------------------------------------------------------


def _namespace(node: Node, name: str) -> None:
    reply = node.http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
    assert reply.status in (201, 409), reply.body


def _account(node: Node, ns: str, name: str) -> None:
    reply = node.http.post(f"/api/v1/namespaces/{ns}/serviceaccounts",
                           {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})  # fmt: skip
    assert reply.status in (201, 409), reply.body


def _deployment(node: Node, ns: str, name: str, container: dict[str, Any], account: str,
                labels: dict[str, str] | None = None) -> None:  # fmt: skip
    labels = labels or {"app": name}
    _account(node, ns, account)
    node.apply(f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"serviceAccountName": account, "containers": [container]}}}})  # fmt: skip


def _service(node: Node, ns: str, name: str, ports: list[tuple[int, int]], app: str | None = None) -> None:
    node.apply(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app or name},
                 "ports": [{"name": f"http-{p}", "port": p, "targetPort": t} for p, t in ports]}})  # fmt: skip


def _server(ports: tuple[int, ...] = (8080,)) -> dict[str, Any]:
    return {"name": "web", "image": "python", "command": [sys.executable, "-c", SERVE],
            "env": [{"name": "PORTS", "value": ",".join(map(str, ports))}],
            "ports": [{"name": f"http-{p}", "containerPort": p} for p in ports]}  # fmt: skip


def _caller(target: str, counts: Path) -> dict[str, Any]:
    return {"name": "client", "image": "python", "command": [sys.executable, "-c", CALL],
            "env": [{"name": "TARGET", "value": target}, {"name": "COUNTS", "value": str(counts)}]}  # fmt: skip


_PLURALS = {"PeerAuthentication": "peerauthentications", "DestinationRule": "destinationrules"}


def apply_manifest(node: Node, obj: dict[str, Any]) -> None:
    api = obj["apiVersion"]
    ns = obj["metadata"].get("namespace", "default")
    _namespace(node, ns)
    reply = node.http.post(f"/apis/{api}/namespaces/{ns}/{_PLURALS[obj['kind']]}", obj)
    assert reply.status == 201, reply.body


def ready_pods(node: Node, ns: str, apps: set[str]) -> dict[str, dict[str, Any]]:
    def meshed() -> dict[str, dict[str, Any]] | None:
        pods = [p for p in node.pods(ns) if is_ready(p) and p["spec"].get("initContainers")
                and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        by_app = {p["metadata"]["labels"]["app"]: p for p in pods}
        return by_app if apps <= set(by_app) else None

    return wait_for(meshed, 120, f"pods {sorted(apps)} in {ns}, ready with their sidecars")


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Node, dict[str, dict[str, Any]], Path]]:
    """web + client in namespace ``shop``; the client calls web through both sidecars."""
    home = tmp_path / "home"
    home.mkdir()
    counts = tmp_path / "counts.json"
    with running_node(home) as node:
        _namespace(node, NS)
        _deployment(node, NS, "web", _server(), "web-sa")
        _deployment(node, NS, "client", _caller("http://web/", counts), "client-sa")
        _service(node, NS, "web", [(80, 8080)])
        pods = ready_pods(node, NS, {"web", "client"})
        wait_for(lambda: _counts(counts)["ok"] > 0, 60, "a first answer from web to the client")
        yield node, pods, counts


# -- talking to a sidecar ourselves ----------------------------------------------------------------


def _counts(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"ok": 0, "fail": 0, "errors": []}


def plaintext(ip: str, port: int = 15006, app_port: int | None = None) -> bytes:
    """Send one plaintext request to ``ip:port``; what came back (b"": nothing, the connection closed)."""
    extra = f"x-meshwork-inbound-port: {app_port}\r\n" if app_port else ""
    with socket.create_connection((ip, port), timeout=10) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: web\r\n{extra}Connection: close\r\n\r\n".encode())
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


class Credentials:
    """A certificate from the CA endpoint, for a meshed pod's identity, written to files for ``ssl``."""

    def __init__(self, node: Node, pod: dict[str, Any], directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")])).sign(key, hashes.SHA256())
        meta = pod["metadata"]
        proxy = f"sidecar~{pod['status']['podIP']}~{meta['name']}.{meta['namespace']}~{meta['namespace']}.svc.cluster.local"
        reply = node.http.post(f"/apis/mesh.meshwork.io/v1/proxies/{proxy}/certificate",
                               {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})  # fmt: skip
        assert reply.status == 200, reply.body
        self.answer = reply.json
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "chain.pem"
        self.key = directory / "key.pem"
        self.bundle = directory / "bundle.pem"
        self.cert.write_text(self.answer["certificateChain"])
        self.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
        self.bundle.write_text(self.answer["trustBundle"])

    def context(self, *, present: bool = True, bundle: str | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # mesh certificates carry a URI SAN only
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=bundle) if bundle else ctx.load_verify_locations(str(self.bundle))
        if present:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def tls_request(ctx: ssl.SSLContext, ip: str, app_port: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """One request over TLS to ``ip:15006``: (the answer, the server's certificate as ``getpeercert``)."""
    extra = f"x-meshwork-inbound-port: {app_port}\r\n" if app_port else ""
    with socket.create_connection((ip, 15006), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        peer = s.getpeercert()
        s.sendall(f"GET / HTTP/1.1\r\nHost: web\r\n{extra}Connection: close\r\n\r\n".encode())
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got, dict(peer or {})


def uri_sans(peer: dict[str, Any]) -> list[str]:
    return [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]


def serial_of(ctx: ssl.SSLContext, ip: str) -> int:
    with socket.create_connection((ip, 15006), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        return int(str(s.getpeercert()["serialNumber"]), 16)


def refuses_plaintext(ip: str, app_port: int | None = None) -> bool:
    try:
        return plaintext(ip, app_port=app_port) == b""
    except OSError:
        return True


def _mesh_strict_manifests() -> list[dict[str, Any]]:
    path = CONFORMANCE / "peer-authentication-mesh-strict.yaml"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared conformance files are not next to this clone)")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -- STRICT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["inline", "conformance"])
def test_mesh_strict_refuses_plaintext_and_sidecars_present_their_spiffe_identities(
    shop: tuple[Node, dict[str, dict[str, Any]], Path], tmp_path: Path, source: str
) -> None:
    node, pods, counts = shop
    web_ip, client_ip = pods["web"]["status"]["podIP"], pods["client"]["status"]["podIP"]
    assert plaintext(web_ip).startswith(b"HTTP/1.1 200"), "PERMISSIVE by default: plaintext is answered"
    # A plaintext connection kept alive from before STRICT must not outlive the change.
    kept = socket.create_connection((web_ip, 15006), timeout=10)
    kept.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    first = b""
    while not first.endswith(b" 8080"):  # the whole answer (its body ends with the port), nothing left unread
        chunk = kept.recv(65536)
        assert chunk, first
        first += chunk
    assert first.startswith(b"HTTP/1.1 200")

    for obj in _mesh_strict_manifests() if source == "conformance" else [MESH_STRICT]:
        apply_manifest(node, obj)

    # A plaintext client gets no answer at all: the connection closes, not even an HTTP error.
    wait_for(lambda: refuses_plaintext(web_ip), 30, "web's sidecar to refuse plaintext")
    assert plaintext(web_ip) == b""
    with kept:  # drained when the listener turned STRICT: closed, no answer to a further request
        try:
            kept.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            assert kept.recv(65536) == b""
        except OSError:
            pass  # reset: closed all the same
    assert refuses_plaintext(client_ip)

    # The meshed client still gets answers: its sidecar speaks mTLS to web's.
    before = _counts(counts)["ok"]
    wait_for(lambda: _counts(counts)["ok"] > before + 5, 30, "answers to the meshed client under STRICT")
    assert _counts(counts)["last"] == 200

    creds = Credentials(node, pods["client"], tmp_path / "creds")
    assert creds.answer["identity"] == f"spiffe://cluster.local/ns/{NS}/sa/client-sa"

    # A TLS client that presents no certificate fails: the handshake (or the first read) is refused.
    # (TLS 1.3 reports the missing certificate after the client's side of the handshake: on the first read.)
    try:
        got, _ = tls_request(creds.context(present=False), web_ip)
    except (ssl.SSLError, OSError):
        got = b""
    assert got == b""

    # With a mesh certificate: an answer, and each sidecar presents its ServiceAccount's SPIFFE id.
    got, peer = tls_request(creds.context(), web_ip)
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    assert uri_sans(peer) == [f"spiffe://cluster.local/ns/{NS}/sa/web-sa"]
    _, peer = tls_request(creds.context(), client_ip)
    assert uri_sans(peer) == [f"spiffe://cluster.local/ns/{NS}/sa/client-sa"]


# -- PERMISSIVE, DestinationRule tls, precedence ----------------------------------------------------


def test_permissive_accepts_both_and_a_disable_rule_sends_plaintext_that_strict_refuses(
    shop: tuple[Node, dict[str, dict[str, Any]], Path], tmp_path: Path
) -> None:
    node, pods, counts = shop
    web_ip = pods["web"]["status"]["podIP"]
    creds = Credentials(node, pods["client"], tmp_path / "creds")
    assert plaintext(web_ip).startswith(b"HTTP/1.1 200")
    got, peer = tls_request(creds.context(), web_ip)
    assert got.startswith(b"HTTP/1.1 200") and uri_sans(peer) == [f"spiffe://cluster.local/ns/{NS}/sa/web-sa"]

    # Namespace STRICT: the client keeps working (auto mTLS).
    apply_manifest(node, {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                          "metadata": {"name": "default", "namespace": NS}, "spec": {"mtls": {"mode": "STRICT"}}})  # fmt: skip
    wait_for(lambda: refuses_plaintext(web_ip), 30, "web's sidecar to refuse plaintext")
    before = _counts(counts)
    wait_for(lambda: _counts(counts)["ok"] > before["ok"] + 5, 30, "answers under namespace STRICT")
    assert _counts(counts)["fail"] == before["fail"], _counts(counts)

    # A DestinationRule with tls DISABLE makes the client's sidecar send plaintext: refused, 503.
    apply_manifest(node, {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                          "metadata": {"name": "web", "namespace": NS},
                          "spec": {"host": "web", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}})  # fmt: skip
    wait_for(lambda: _counts(counts)["last"] == 503, 30, "the client to get 503 with tls DISABLE under STRICT")


def test_precedence_port_level_disable_and_workload_override(tmp_path: Path) -> None:
    """peer-authentication-precedence.yaml: bar/httpbin STRICT but port 80 DISABLE; foo STRICT but foo/httpbin DISABLE."""
    path = CONFORMANCE / "peer-authentication-precedence.yaml"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared conformance files are not next to this clone)")
    if os.geteuid() != 0 and int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) > 80:
        pytest.skip("the policy names container port 80, which this user cannot bind")
    home = tmp_path / "home"
    home.mkdir()
    counts = tmp_path / "counts.json"
    with running_node(home) as node:
        for ns in ("foo", "bar"):
            _namespace(node, ns)
            _deployment(node, ns, "httpbin", _server((80, 8080)), "httpbin")
            _service(node, ns, "httpbin", [(8000, 80), (8080, 8080)])
        _deployment(node, "foo", "other", _server(), "other")
        _deployment(node, "bar", "client", _caller("http://httpbin:8000/", counts), "client")
        bar = ready_pods(node, "bar", {"httpbin", "client"})
        foo = ready_pods(node, "foo", {"httpbin", "other"})
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                apply_manifest(node, obj)
        bar_ip, foo_ip, other_ip = (p["status"]["podIP"] for p in (bar["httpbin"], foo["httpbin"], foo["other"]))

        # bar/httpbin: STRICT for the workload, DISABLE for port 80 (Istio's table: plaintext to 80 only).
        wait_for(lambda: refuses_plaintext(bar_ip, 8080), 30, "bar/httpbin to refuse plaintext on 8080")
        wait_for(lambda: plaintext(bar_ip, app_port=80).startswith(b"HTTP/1.1 200"), 30,
                 "bar/httpbin to answer plaintext on port 80 (port-level DISABLE)")  # fmt: skip
        # foo: namespace STRICT, but the workload policy for httpbin says DISABLE (it wins).
        wait_for(lambda: refuses_plaintext(other_ip), 30, "foo/other (namespace STRICT) to refuse plaintext")
        # (policies arrive one by one: wait for the last one to reach the sidecar)
        wait_for(lambda: plaintext(foo_ip, app_port=8080).startswith(b"HTTP/1.1 200"), 30,
                 "foo/httpbin (workload DISABLE) to answer plaintext")  # fmt: skip
        # The meshed client in bar reaches port 80 (DISABLE there: its sidecar sends plaintext).
        before = _counts(counts)
        wait_for(lambda: _counts(counts)["ok"] > before["ok"] + 5, 30, "the client's calls to bar/httpbin:8000")
        assert _counts(counts)["last"] == 200


# -- rotation under load ---------------------------------------------------------------------------------


def _churn_connections(node: Node) -> None:
    """Few requests per upstream connection, so new handshakes keep happening across rotations."""
    apply_manifest(node, {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                          "metadata": {"name": "web", "namespace": NS},
                          "spec": {"host": "web", "trafficPolicy": {
                              "connectionPool": {"http": {"maxRequestsPerConnection": 3}}}}})  # fmt: skip


@pytest.mark.slow
def test_short_lived_certificates_rotate_under_load_without_failures(tmp_path: Path) -> None:
    """1-minute certificates (renewed at half-life): two rotations of both sidecars, zero failed requests."""
    home = tmp_path / "home"
    home.mkdir()
    counts = tmp_path / "counts.json"
    with running_node(home, "--workload-cert-ttl", "1m") as node:
        _namespace(node, NS)
        _deployment(node, NS, "web", _server(), "web-sa")
        _deployment(node, NS, "client", _caller("http://web/", counts), "client-sa")
        _service(node, NS, "web", [(80, 8080)])
        pods = ready_pods(node, NS, {"web", "client"})
        apply_manifest(node, MESH_STRICT)
        _churn_connections(node)
        web_ip, client_ip = pods["web"]["status"]["podIP"], pods["client"]["status"]["podIP"]
        wait_for(lambda: refuses_plaintext(web_ip), 30, "STRICT on web's sidecar")
        ctx = Credentials(node, pods["client"], tmp_path / "creds").context()
        start = _counts(counts)
        wait_for(lambda: _counts(counts)["ok"] > start["ok"] + 5, 30, "steady traffic")
        start = _counts(counts)
        seen: dict[str, set[int]] = {"web": set(), "client": set()}

        def rotated_twice() -> bool:
            seen["web"].add(serial_of(ctx, web_ip))
            seen["client"].add(serial_of(ctx, client_ip))
            return all(len(s) >= 3 for s in seen.values())  # the first certificate and two renewals

        wait_for(rotated_twice, 150, "two certificate rotations on both sidecars", interval=1.0)
        end = _counts(counts)
        assert end["ok"] > start["ok"] + 100, (start, end)
        assert end["fail"] == start["fail"], end["errors"]


def test_root_rotation_while_traffic_flows(shop: tuple[Node, dict[str, dict[str, Any]], Path], tmp_path: Path) -> None:
    node, pods, counts = shop
    apply_manifest(node, MESH_STRICT)
    _churn_connections(node)
    web_ip, client_ip = pods["web"]["status"]["podIP"], pods["client"]["status"]["podIP"]
    wait_for(lambda: refuses_plaintext(web_ip), 30, "STRICT on web's sidecar")
    start = _counts(counts)
    wait_for(lambda: _counts(counts)["ok"] > start["ok"] + 5, 30, "steady traffic")
    start = _counts(counts)

    reply = node.http.post("/apis/mesh.meshwork.io/v1/certificates/rotate-root", {"timeoutSeconds": 30}, timeout=90)
    assert reply.status == 200, reply.body
    rotation = reply.json
    assert rotation["promoted"] is True, rotation
    roots = [x509.load_pem_x509_certificate(block.encode()) for block in _pem_blocks(rotation["trustBundle"])]
    new_root = [r for r in roots if format(r.serial_number, "x") == rotation["root"]]
    assert len(new_root) == 1, (rotation["root"], [f"{r.serial_number:x}" for r in roots])
    only_new = new_root[0].public_bytes(serialization.Encoding.PEM).decode()

    # Afterwards both sidecars present certificates that chain to the new root alone.
    ctx = Credentials(node, pods["client"], tmp_path / "creds").context(bundle=only_new)

    def chains_to_new_root() -> bool:
        try:
            serial_of(ctx, web_ip)
            serial_of(ctx, client_ip)
        except (ssl.SSLError, OSError):
            return False
        return True

    wait_for(chains_to_new_root, 60, "both sidecars to present certificates from the new root", interval=0.5)
    before = _counts(counts)["ok"]
    wait_for(lambda: _counts(counts)["ok"] > before + 20, 30, "traffic after the rotation")
    end = _counts(counts)
    assert end["fail"] == start["fail"], end["errors"]


def _pem_blocks(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in text.split(marker) if part.strip()]

