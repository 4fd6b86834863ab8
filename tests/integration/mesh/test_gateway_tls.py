"""TLS at the ingress gateway, end to end: Istio's secure-ingress manifests with real certificates and sockets.

One node (server, agent, the ingress gateway pod, httpbin and helloworld pods)
serves every test here; each test applies its Gateway as ``mygateway`` (the
name the conformance files share), replacing the one before. Certificates come
from ``support.pki``; the client is Python's ssl with SNI, checking the
certificate it gets against the test's root.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for
from support.pki import Leaf, Pki

pytestmark = pytest.mark.integration

SECURE_INGRESS = CONFORMANCE / "istio.io" / "traffic-management" / "secure-ingress"
HTTP_PORT, HTTPS_PORT = (
    18681,
    18643,
)  # where the gateway's Service ports 80 and 443 listen on this machine
GATEWAYS = "/apis/networking.istio.io/v1/namespaces/default/gateways"
VIRTUAL_SERVICES = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
SECRETS = "/api/v1/namespaces/istio-system/secrets"  # the gateway workload's namespace, as in Istio's task
HTTPBIN, HELLOWORLD = "httpbin.example.com", "helloworld.example.com"

# A backend that terminates TLS itself (the PASSTHROUGH target): HTTPS on $POD_IP:8443.
TLS_BACKEND = (
    "import http.server, os, ssl, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = b'tls backend saw ' + self.path.encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n"
    "srv = http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8443), H)\n"
    "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
    "srv.serve_forever()\n"
)


def _docs(name: str) -> list[dict[str, Any]]:
    path = SECURE_INGRESS / name
    if not path.is_file():
        pytest.skip(absent_reason(SECURE_INGRESS))
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(name: str, leaf: Leaf, ca: bytes | None = None) -> dict[str, Any]:
    data = {"tls.crt": _b64(leaf.cert_pem), "tls.key": _b64(leaf.key_pem)}
    if ca is not None:
        data["ca.crt"] = _b64(ca)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/tls", "data": data}  # fmt: skip


class Reply:
    def __init__(self, status: int, head: bytes, body: bytes, peer_der: bytes | None) -> None:
        self.status, self.head, self.body, self.peer_der = status, head, body, peer_der


def https_get(sni: str, path: str, *, ca: bytes, host: str | None = None, client: tuple[Path, Path] | None = None,
              port: int = HTTPS_PORT) -> Reply:  # fmt: skip
    """One HTTPS request with SNI ``sni`` to the gateway, verifying its certificate for ``sni`` against ``ca``."""
    ctx = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as conn:  # fmt: skip
        der = conn.getpeercert(binary_form=True)
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host or sni}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return Reply(int(head.split(b" ", 2)[1]), head, body, der)


def der(leaf: Leaf) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_pem.decode())


def attempt(fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(...)``, or None while the gateway is not serving that yet (refused, reset, handshake failed)."""
    try:
        return fn(*args, **kw)
    except (OSError, ValueError, IndexError):
        return None


def answering(status: int, sni: str, path: str, **kw: Any) -> Reply | None:
    """The reply once the gateway answers ``status`` (while config converges, other answers come first)."""
    got = attempt(https_get, sni, path, **kw)
    return got if got is not None and got.status == status else None


class Ingress:
    """The shared node, its test root and the helpers that apply config to it."""

    def __init__(self, node: Node, tmp: Path) -> None:
        self.node, self.tmp = node, tmp
        self.root = Pki("gateway tls test root")
        self.httpbin = self.root.leaf(dns=(HTTPBIN,))
        self.helloworld = self.root.leaf(dns=(HELLOWORLD,))

    def put_secret(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        current = self.node.get(f"{SECRETS}/{name}")
        if current is None:
            self.node.apply(SECRETS, body)
            return
        body = {
            **body,
            "metadata": {
                **body["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        reply = self.node.http.put(f"{SECRETS}/{name}", body)
        assert reply.status == 200, reply.body

    def replace(self, doc: dict[str, Any]) -> None:
        """Apply a Gateway or VirtualService (from a conformance file: no namespace, so ``default``)."""
        base = GATEWAYS if doc["kind"] == "Gateway" else VIRTUAL_SERVICES
        self.node.http.delete(f"{base}/{doc['metadata']['name']}")
        self.node.apply(base, doc)

    def gateway_status(self) -> dict[str, Any]:
        items = self.node.get("/apis/mesh.meshwork.io/v1/proxies")["items"]  # type: ignore[index]
        return next(i for i in items if i["role"] == "gateway")

    def client_files(self, name: str, leaf: Leaf) -> tuple[Path, Path]:
        cert, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        cert.write_bytes(leaf.cert_pem)
        key.write_bytes(leaf.key_pem)
        key.chmod(0o600)
        return cert, key


def _deploy(node: Node, name: str, image: str, port: int, target: int, **container: Any) -> None:
    node.apply("/apis/apps/v1/namespaces/default/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                     "name": name, "image": image, "ports": [{"containerPort": target}], **container}]}}}})  # fmt: skip
    node.apply("/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": f"tcp-{port}" if port == 443 else "http",
                                                         "port": port, "targetPort": target}]}})  # fmt: skip


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    if not SECURE_INGRESS.is_dir():
        pytest.skip(absent_reason(SECURE_INGRESS))
    tmp = tmp_path_factory.mktemp("gateway-tls")
    (tmp / "data").mkdir()
    ports = f"80:{HTTP_PORT},443:{HTTPS_PORT}"
    with running_node(tmp / "data", "--ingress-gateway", "--ingress-ports", ports) as node:
        ing = Ingress(node, tmp)
        _deploy(node, "httpbin", "mccutchen/go-httpbin", 8000, 8080)
        _deploy(node, "helloworld", "docker.io/istio/examples-helloworld-v1", 5000, 5000)
        assert wait_for(
            lambda: [p for p in node.pods("istio-system") if is_ready(p)], 90, "the gateway pod"
        )
        assert wait_for(
            lambda: len([p for p in node.pods() if is_ready(p)]) == 2, 90, "httpbin and helloworld"
        )
        ing.put_secret(tls_secret("httpbin-credential", ing.httpbin))
        ing.put_secret(tls_secret("helloworld-credential", ing.helloworld))
        yield ing


def test_simple_tls_and_sni_choose_each_host_certificate(ingress: Ingress) -> None:
    ing = ingress
    simple_vs = next(d for d in _docs("gateway-tls-simple.yaml") if d["kind"] == "VirtualService")
    for doc in _docs("gateway-tls-multi-host.yaml"):
        ing.replace(doc)
    ing.replace(simple_vs)
    root = ing.root.bundle

    got = wait_for(
        lambda: answering(418, HTTPBIN, "/status/418", ca=root), 60, "httpbin over TLS"
    )  # go-httpbin answered through the gateway
    assert got.peer_der == der(ing.httpbin)
    hello = wait_for(
        lambda: answering(200, HELLOWORLD, "/hello", ca=root), 30, "helloworld over TLS"
    )
    assert b"Hello version: v1" in hello.body
    assert hello.peer_der == der(ing.helloworld)
    # A name no server has: no certificate, the handshake fails (Envoy: no filter chain matches).
    with pytest.raises((ssl.SSLError, OSError)):
        https_get("other.example.com", "/", ca=root)
    # Plaintext HTTP to the TLS port gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=10) as raw:
        raw.sendall(b"GET /status/200 HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n")
        try:
            assert raw.recv(1024) == b""
        except ConnectionResetError:
            pass

    # What people may see of the config: the Secret's keys, never their values.
    ident = ing.gateway_status()["id"]
    shown = ing.node.get(
        f"/apis/mesh.meshwork.io/v1/proxies/{quote(ident, safe='~')}/config?once=1"
    )
    assert shown is not None and shown["credentials"]["httpbin-credential"] == {
        "tls.crt": "<redacted>", "tls.key": "<redacted>"}  # fmt: skip
    assert ing.httpbin.key_pem.decode().splitlines()[1] not in str(shown)


def test_a_rotated_secret_is_served_to_new_connections_without_a_restart(ingress: Ingress) -> None:
    ing = ingress
    for doc in _docs("gateway-tls-simple.yaml"):
        ing.replace(doc)
    root = ing.root.bundle
    wait_for(lambda: answering(200, HTTPBIN, "/status/200", ca=root), 60, "httpbin over TLS")
    gateway_pod = next(p for p in ing.node.pods("istio-system"))
    renewed = ing.root.leaf(dns=(HTTPBIN,))
    ing.put_secret(tls_secret("httpbin-credential", renewed))

    def rotated() -> Reply | None:
        got = attempt(https_get, HTTPBIN, "/status/200", ca=root)
        return got if got is not None and got.peer_der == der(renewed) else None

    assert wait_for(rotated, 30, "the renewed certificate").status == 200
    after = next(p for p in ing.node.pods("istio-system"))
    assert after["metadata"]["uid"] == gateway_pod["metadata"]["uid"]
    assert [c.get("restartCount", 0) for c in after["status"].get("containerStatuses") or []] == [
        c.get("restartCount", 0) for c in gateway_pod["status"].get("containerStatuses") or []]  # fmt: skip


def test_a_missing_credential_leaves_out_its_server_only_and_says_so(ingress: Ingress) -> None:
    ing = ingress
    gateway, vs = _docs("gateway-tls-multi-host.yaml")
    gateway["spec"]["servers"][1]["tls"]["credentialName"] = "no-such-credential"
    ing.replace(gateway)
    ing.replace(vs)
    root = ing.root.bundle

    def reported() -> str | None:
        nack = ing.gateway_status().get("nack") or {}
        return str(nack.get("message") or "") or None

    message = wait_for(reported, 30, "the gateway to report the server it left out")
    assert "secret istio-system/no-such-credential not found" in message
    assert "https-helloworld" in message
    assert (
        https_get(HTTPBIN, "/status/200", ca=root).status == 200
    )  # the other server keeps working
    with pytest.raises((ssl.SSLError, OSError)):
        https_get(HELLOWORLD, "/hello", ca=root)


def test_mutual_tls_refuses_a_client_without_a_certificate(ingress: Ingress) -> None:
    ing = ingress
    client_ca = Pki("gateway tls client ca")
    ing.put_secret(tls_secret("httpbin-credential", ing.httpbin, ca=client_ca.bundle))
    for doc in _docs("gateway-tls-mutual.yaml"):
        ing.replace(doc)
    ing.replace(next(d for d in _docs("gateway-tls-simple.yaml") if d["kind"] == "VirtualService"))
    good = ing.client_files("client", client_ca.leaf(dns=("client.example.com",)))
    foreign = ing.client_files("foreign", Pki("someone else").leaf(dns=("client.example.com",)))
    root = ing.root.bundle

    got = wait_for(
        lambda: answering(200, HTTPBIN, "/status/200", ca=root, client=good), 60, "mutual TLS"
    )
    assert got.peer_der == der(ing.httpbin)
    for client in (None, foreign):
        with pytest.raises(
            (ssl.SSLError, OSError, IndexError)
        ):  # refused in or right after the handshake
            https_get(HTTPBIN, "/status/200", ca=root, client=client)


def test_https_redirect_answers_301_to_https(ingress: Ingress) -> None:
    ing = ingress
    gateway = _docs("gateway-tls-simple.yaml")[0]
    gateway["spec"]["servers"].append({
        "port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "hosts": [HTTPBIN], "tls": {"httpsRedirect": True}})  # fmt: skip
    ing.replace(gateway)

    def redirected() -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=10) as conn:
                conn.sendall(
                    f"GET /status/200?x=1 HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n".encode()
                )
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
        except OSError:
            return None
        return data if data.startswith(b"HTTP/1.1 301") else None

    head = wait_for(redirected, 30, "the HTTP server to redirect").lower()
    assert f"location: https://{HTTPBIN}/status/200?x=1\r\n".encode() in head


def test_passthrough_routes_by_sni_to_a_backend_that_terminates_tls(ingress: Ingress) -> None:
    ing = ingress
    backend_root = Pki("the backend's own root")
    leaf = backend_root.leaf(dns=("nginx.example.com",))
    cert, key = ing.client_files("backend", leaf)
    _deploy(
        ing.node,
        "my-nginx",
        "python",
        443,
        8443,
        command=[sys.executable, "-c", TLS_BACKEND, str(cert), str(key)],
    )
    ing.replace({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "mygateway"},
                 "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                     "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                     "tls": {"mode": "PASSTHROUGH"}, "hosts": ["nginx.example.com"]}]}})  # fmt: skip
    ing.replace({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "nginx"},
                 "spec": {"hosts": ["nginx.example.com"], "gateways": ["mygateway"], "tls": [{
                     "match": [{"port": 443, "sniHosts": ["nginx.example.com"]}],
                     "route": [{"destination": {"host": "my-nginx", "port": {"number": 443}}}]}]}})  # fmt: skip

    got = wait_for(
        lambda: answering(200, "nginx.example.com", "/hi", ca=backend_root.bundle),
        90,
        "passthrough",
    )
    assert got.body == b"tls backend saw /hi"
    assert got.peer_der == der(leaf)  # the backend's own certificate, not one of the gateway's


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_resolve_as_istios_task_does(ingress: Ingress) -> None:
    ing = ingress
    simple_vs = next(d for d in _docs("gateway-tls-simple.yaml") if d["kind"] == "VirtualService")
    for doc in _docs("gateway-tls-multi-host.yaml"):
        ing.replace(doc)
    ing.replace(simple_vs)
    ca = ing.tmp / "root.pem"
    ca.write_bytes(ing.root.bundle)
    wait_for(
        lambda: answering(200, HELLOWORLD, "/hello", ca=ing.root.bundle), 60, "helloworld over TLS"
    )
    wait_for(
        lambda: answering(418, HTTPBIN, "/status/418", ca=ing.root.bundle), 60, "httpbin over TLS"
    )
    for host, path, want in ((HTTPBIN, "/status/418", "418"), (HELLOWORLD, "/hello", "200")):
        done = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", str(ca),
             "--resolve", f"{host}:{HTTPS_PORT}:127.0.0.1", f"https://{host}:{HTTPS_PORT}{path}"],
            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert done.stdout == want, done.stderr
