"""RequestAuthentication + AuthorizationPolicy end to end: Istio's authz-jwt and ingress-jwt tasks.

The conformance RequestAuthentications name a jwksUri on GitHub, which a test
cannot reach; these tests keep their issuer and replace the jwksUri by one a
local HTTP server started here serves (keys made here), or by inline
``jwks``. The AuthorizationPolicies, Gateway and VirtualService are applied
verbatim. Requests go from sleep's sidecar to httpbin's (as ``kubectl exec
sleep -- curl`` does), and from outside through the ingress gateway.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshwork.core.security.jwt import jwk_from_public_key, sign
from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SECURITY = CONFORMANCE / "istio.io" / "security"
ISS = "testing@secure.istio.io"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [jwk_from_public_key(KEY.public_key(), kid="test", alg="RS256")]})
INGRESS_PORT = 18481


def token(key: Any = KEY, alg: str = "RS256", **claims: Any) -> str:
    payload = {"iss": ISS, "sub": ISS, "exp": int(time.time()) + 3600, **claims}
    return sign(payload, key, alg, kid="test")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def raw(ip: str, port: int, data: bytes) -> tuple[int, str, str]:
    """Send ``data`` as is, read until the server closes: (status, head, body); (0, error, "") when unreachable."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        return 0, str(exc), ""
    text = b"".join(chunks).decode("latin-1")
    head, _, body = text.partition("\r\n\r\n")
    parts = head.split(" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), head.lower(), body


class Mesh:
    def __init__(self, node: Node, tmp: Path, jwks_uri: str) -> None:
        self.node, self.tmp, self.jwks_uri = node, tmp, jwks_uri
        self.ips: dict[str, str] = {}

    def meshwork(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                              timeout=120, input=stdin)  # fmt: skip

    def apply(self, *docs: dict[str, Any]) -> None:
        done = self.meshwork("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert done.returncode == 0, done.stdout + done.stderr

    def delete(self, *docs: dict[str, Any]) -> None:
        self.meshwork("delete", "-f", "-", "--ignore-not-found", stdin=yaml.safe_dump_all(docs))

    def call(self, path: str, *headers: str, via: str = "sleep") -> tuple[int, str, str]:
        """``curl http://httpbin.foo:8000PATH`` from sleep, through its sidecar."""
        extra = "".join(f"{h}\r\n" for h in headers)
        data = f"GET http://httpbin.foo:8000{path} HTTP/1.1\r\nHost: httpbin.foo:8000\r\n{extra}Connection: close\r\n\r\n"
        return raw(self.ips[via], 15001, data.encode())

    def ingress(self, path: str, *headers: str) -> tuple[int, str, str]:
        extra = "".join(f"{h}\r\n" for h in headers)
        data = f"GET {path} HTTP/1.1\r\nHost: httpbin.example.com\r\n{extra}Connection: close\r\n\r\n"
        return raw("127.0.0.1", INGRESS_PORT, data.encode())

    def request_authn(self, path: Path, **rule: Any) -> dict[str, Any]:
        """The conformance RequestAuthentication with its jwksUri served locally (or ``rule`` fields)."""
        (doc,) = [d for d in _docs(path) if d["kind"] == "RequestAuthentication"]
        doc["spec"]["jwtRules"][0]["jwksUri"] = self.jwks_uri
        doc["spec"]["jwtRules"][0].update(rule)
        return dict(doc)


class _Jwks(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = JWKS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


def _app(name: str, container: dict[str, Any], port: int | None) -> list[dict[str, Any]]:
    labels = {"app": name}
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "foo"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "foo"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": {**labels, "version": "v1"}},
                               "spec": {"serviceAccountName": name, "containers": [container]}}}},
    ]  # fmt: skip
    if port is not None:
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "foo", "labels": labels},
                    "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": 8080}]}})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    if not SECURITY.is_dir():
        pytest.skip(absent_reason(SECURITY))
    tmp = tmp_path_factory.mktemp("jwt")
    home = tmp / "home"
    home.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with running_node(home, "--ingress-gateway", "--ingress-ports", f"80:{INGRESS_PORT}") as node:
            m = Mesh(node, tmp, f"http://127.0.0.1:{server.server_address[1]}/jwks.json")
            node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "foo", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
            httpbin = {"name": "httpbin", "image": "docker.io/mccutchen/go-httpbin:v2.15.0",
                       "ports": [{"containerPort": 8080}]}  # fmt: skip
            sleep = {"name": "sleep", "image": "curlimages/curl", "command": ["/bin/sleep", "infinity"]}
            m.apply(*_app("httpbin", httpbin, 8000), *_app("sleep", sleep, 80))

            def ready() -> dict[str, str] | None:
                got = {p["metadata"]["labels"]["app"]: p["status"]["podIP"] for p in node.pods("foo")
                       if is_ready(p) and p["spec"].get("initContainers")}  # fmt: skip
                gateway = [p for p in node.pods("istio-system") if is_ready(p)]
                return got if {"httpbin", "sleep"} <= set(got) and gateway else None

            m.ips = wait_for(ready, 120, "httpbin, sleep and the ingress gateway ready")
            wait_for(lambda: m.call("/ip")[0] == 200, 60, "sleep -> httpbin")
            yield m
    finally:
        server.shutdown()
        server.server_close()


def test_require_jwt_then_groups_claim(mesh: Mesh) -> None:
    """authz-jwt: a valid token is needed (403 without); then the groups claim must hold group1."""
    folder = SECURITY / "authz-jwt"
    ra = mesh.request_authn(folder / "request-authentication.yaml")
    require = _docs(folder / "require-jwt.yaml")
    groups = _docs(folder / "require-jwt-groups-claim.yaml")
    mesh.apply(ra, *require)
    try:
        valid = token()
        wait_for(lambda: mesh.call("/headers", f"Authorization: Bearer {valid}")[0] == 200, 30, "a valid token to pass")
        status, _, body = mesh.call("/headers")
        assert (status, body) == (403, "RBAC: access denied")  # no token: no request principal
        answer = mesh.call("/headers", f"Authorization: Bearer {valid}")[2]
        assert "Bearer" not in answer  # the token is not forwarded (forwardOriginalToken false)

        other_sub = token(sub="someone-else")
        assert mesh.call("/headers", f"Authorization: Bearer {other_sub}")[0] == 403  # another principal

        refused = {
            "expired": (token(exp=int(time.time()) - 3600), "Jwt is expired"),
            "wrongly signed": (token(OTHER_KEY), "Jwt verification fails"),
            "wrong issuer": (sign({"iss": "other@example.com", "sub": "x", "exp": int(time.time()) + 60}, KEY,
                                  "RS256", kid="test"), "Jwt issuer is not configured"),
            "alg none": (_unsigned(), None),
            "garbage": ("not.a.jwt", None),
        }
        for what, (tok, text) in refused.items():
            status, head, body = mesh.call("/headers", f"Authorization: Bearer {tok}")
            assert status == 401, (what, status, body)
            assert 'www-authenticate: bearer realm="http://httpbin.foo:8000/headers", error="invalid_token"' in head, head
            if text is not None:
                assert body == text, (what, body)

        mesh.apply(*groups)  # same name: replaces require-jwt with the groups-claim rule
        in_group = token(groups=["group1", "group2"])
        wait_for(lambda: mesh.call("/headers", f"Authorization: Bearer {valid}")[0] == 403, 30, "the groups rule")
        assert mesh.call("/headers", f"Authorization: Bearer {in_group}")[0] == 200
        assert mesh.call("/headers", f"Authorization: Bearer {token(groups=['group2'])}")[0] == 403
    finally:
        mesh.delete(ra, *require)
    wait_for(lambda: mesh.call("/headers")[0] == 200, 30, "the policies to go away")


def _unsigned() -> str:
    import base64

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'iss': ISS, 'sub': ISS, 'exp': int(time.time()) + 60})}."


def test_audiences_and_inline_jwks(mesh: Mesh) -> None:
    """With ``audiences`` set, another audience is refused; keys given inline work as jwksUri's do."""
    folder = SECURITY / "authz-jwt"
    ra = mesh.request_authn(folder / "request-authentication.yaml", audiences=["httpbin"])
    del ra["spec"]["jwtRules"][0]["jwksUri"]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ra["spec"]["jwtRules"][0]["jwks"] = json.dumps({"keys": [jwk_from_public_key(ec_key.public_key(), kid="test")]})
    require = _docs(folder / "require-jwt.yaml")
    mesh.apply(ra, *require)
    try:
        good = token(ec_key, "ES256", aud="httpbin")
        wait_for(lambda: mesh.call("/headers", f"Authorization: Bearer {good}")[0] == 200, 30, "inline keys")
        status, _, body = mesh.call("/headers", f"Authorization: Bearer {token(ec_key, 'ES256', aud='other')}")
        assert (status, body) == (401, "Audiences in Jwt are not allowed")
        assert mesh.call("/headers", f"Authorization: Bearer {token(aud='httpbin')}")[0] == 401  # the RSA key is not in it
    finally:
        mesh.delete(ra, *require)
    wait_for(lambda: mesh.call("/headers")[0] == 200, 30, "the policies to go away")


def test_ingress_gateway_denies_headers_without_a_request_principal(mesh: Mesh) -> None:
    """authn-policy end-user authentication: on the ingress gateway, /headers needs a valid JWT."""
    docs = _docs(SECURITY / "authn-policy" / "ingress-jwt.yaml")
    gateway_and_route = [d for d in docs if d["kind"] in ("Gateway", "VirtualService")]
    policy = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    mesh.apply(*gateway_and_route)
    wait_for(lambda: mesh.ingress("/headers")[0] == 200, 60, "the gateway to route to httpbin")
    ra = mesh.request_authn(SECURITY / "authn-policy" / "ingress-jwt.yaml")
    mesh.apply(ra, *policy)
    try:
        wait_for(lambda: mesh.ingress("/headers")[0] == 403, 30, "frontend-ingress to apply")
        assert mesh.ingress("/headers")[2] == "RBAC: access denied"
        assert mesh.ingress("/ip")[0] == 200  # the DENY names /headers only
        assert mesh.ingress("/headers", f"Authorization: Bearer {token()}")[0] == 200
        assert mesh.ingress("/headers", "Authorization: Bearer not.a.jwt")[0] == 401
        assert mesh.ingress("/x/../headers")[0] == 403  # normalised at the gateway too
        assert mesh.call("/headers")[0] == 200  # the sidecar is not selected (istio: ingressgateway)
    finally:
        mesh.delete(ra, *policy, *gateway_and_route)


def test_the_ingress_gateway_speaks_mtls_to_strict_pods(mesh: Mesh) -> None:
    """Under mesh-wide STRICT the gateway reaches httpbin with its own mesh certificate (Istio's
    gateways are mesh clients), while a plaintext caller gets nothing from httpbin's sidecar."""
    docs = [d for d in _docs(SECURITY / "authn-policy" / "ingress-jwt.yaml") if d["kind"] in ("Gateway", "VirtualService")]
    strict = {"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip
    mesh.apply(*docs)
    try:
        wait_for(lambda: mesh.ingress("/ip")[0] == 200, 60, "the gateway to route to httpbin")
        mesh.apply(strict)
        plain = (b"GET /ip HTTP/1.1\r\nHost: httpbin\r\nx-meshwork-inbound-port: 8080\r\n"
                 b"Connection: close\r\n\r\n")  # fmt: skip
        wait_for(lambda: raw(mesh.ips["httpbin"], 15006, plain)[0] == 0, 30, "STRICT to close plaintext")
        for _ in range(20):
            status, head, body = mesh.ingress("/ip")
            assert status == 200, (head, body)
        assert mesh.call("/ip")[0] == 200  # sidecar to sidecar too
    finally:
        mesh.delete(strict, *docs)
