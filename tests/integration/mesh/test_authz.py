"""AuthorizationPolicy end to end: Istio's authz tasks on httpbin and sleep, enforced by the sidecars.

A real server and node agent run Istio's samples in meshed namespaces:
httpbin (Service port 8000, app on 8080) and sleep in ``foo``, sleep in
``bar``, httpbin in ``default`` (for allow-nothing), and a ``recorder`` app in
``foo`` that writes down every path it receives. Requests go the way
``kubectl exec sleep -- curl`` sends them: to the sleep pod's sidecar as its
HTTP proxy, which sends them on to httpbin's sidecar, which enforces the
policies. The policies are Istio's task manifests, applied verbatim from
``../shared/conformance/istio.io/security/``.

The path test sends raw request bytes (no client normalises them) straight to
the recorder's sidecar, guarded by a DENY on ``/admin`` and ``/admin/*``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SECURITY = CONFORMANCE / "istio.io" / "security"
DENIED = "RBAC: access denied"

# Answers 200 with the path it received, and appends it to $PATHS.
RECORDER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def answer(self):\n"
    "        with open(os.environ['PATHS'], 'a') as f: f.write(self.path + '\\n')\n"
    "        body = ('got ' + self.path).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    do_GET = do_POST = do_HEAD = do_DELETE = answer\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)


def _ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"istio-injection": "enabled"}}}  # fmt: skip


def _app(name: str, ns: str, container: dict[str, Any], port: int | None, target: int = 8080,
         sa: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """ServiceAccount, Deployment and (with ``port``) Service, as Istio's samples write them."""
    labels = {"app": name}
    sa = sa or name
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": {**labels, "version": "v1"}},
                               "spec": {"serviceAccountName": sa, "containers": [container]}}}},
    ]  # fmt: skip
    if port is not None:
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": target}]}})  # fmt: skip
    return out


HTTPBIN = {"name": "httpbin", "image": "docker.io/mccutchen/go-httpbin:v2.15.0", "ports": [{"containerPort": 8080}]}
SLEEP = {"name": "sleep", "image": "curlimages/curl", "command": ["/bin/sleep", "infinity"]}


class Mesh:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self.ips: dict[str, str] = {}  # "app.ns" -> pod IP
        self.names: dict[str, str] = {}  # "app.ns" -> pod name

    def meshwork(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                              timeout=120, input=stdin)  # fmt: skip

    def apply(self, path: Path) -> None:
        done = self.meshwork("apply", "-f", str(path))
        assert done.returncode == 0, done.stderr

    def delete(self, path: Path) -> None:
        self.meshwork("delete", "-f", str(path), "--ignore-not-found")

    def call(self, url: str, *, method: str = "GET", headers: tuple[str, ...] = (), via: str = "sleep.foo") -> tuple[int, str]:  # fmt: skip
        """``curl -X METHOD URL`` from the ``via`` pod: through its sidecar's outbound listener."""
        host = url.split("/")[2]
        extra = "".join(f"{h}\r\n" for h in headers)
        body = "x=1" if method == "POST" else ""
        head = (f"{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n" + body)  # fmt: skip
        return raw(self.ips[via], 15001, head.encode())


def _requests(ip: str) -> list[dict[str, str]]:
    """The labels of every istio_requests_total sample of the sidecar at ``ip``."""
    with urllib.request.urlopen(f"http://{ip}:15020/stats/prometheus", timeout=10) as r:
        text = r.read().decode()
    return [dict(s.labels) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "istio_requests_total"]  # fmt: skip


def raw(ip: str, port: int, data: bytes) -> tuple[int, str]:
    """Send ``data`` as is, read until the server closes; (status, body). (0, error) when unreachable."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        return 0, str(exc)
    text = b"".join(chunks).decode("latin-1")
    head, _, body = text.partition("\r\n\r\n")
    parts = head.split(" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    if not SECURITY.is_dir():
        pytest.skip(absent_reason(SECURITY))
    tmp = tmp_path_factory.mktemp("authz")
    home = tmp / "home"
    home.mkdir()
    with running_node(home) as node:
        m = Mesh(node, tmp)
        for ns in ("foo", "bar", "default"):  # `kubectl label namespace default istio-injection=enabled` too
            done = m.meshwork("apply", "-f", "-", stdin=json.dumps(_ns(ns)))
            assert done.returncode == 0, done.stderr
        recorder = {"name": "recorder", "image": "python", "command": [sys.executable, "-c", RECORDER],
                    "ports": [{"containerPort": 8080}], "env": [{"name": "PATHS", "value": str(tmp / "paths")}]}  # fmt: skip
        objects = (_app("httpbin", "foo", HTTPBIN, 8000) + _app("sleep", "foo", SLEEP, 80)
                   + _app("sleep", "bar", SLEEP, 80) + _app("httpbin", "default", HTTPBIN, 8000)
                   + _app("recorder", "foo", recorder, 8080)
                   # bookinfo's ratings (the recorder app) and a caller with the reviews ServiceAccount
                   + _app("ratings", "default", {**recorder, "name": "ratings"}, 9080, sa="bookinfo-ratings")
                   + _app("reviews", "default", SLEEP, None, sa="bookinfo-reviews"))  # fmt: skip
        for obj in objects:
            done = m.meshwork("apply", "-f", "-", stdin=json.dumps(obj))
            assert done.returncode == 0, done.stderr
        wanted = {"httpbin.foo", "sleep.foo", "sleep.bar", "httpbin.default", "recorder.foo", "ratings.default",
                  "reviews.default"}  # fmt: skip

        def ready() -> dict[str, str] | None:
            got = {}
            for ns in ("foo", "bar", "default"):
                for p in node.pods(ns):
                    if is_ready(p) and p["spec"].get("initContainers"):
                        got[f"{p['metadata']['labels']['app']}.{ns}"] = p["status"]["podIP"]
                        m.names[f"{p['metadata']['labels']['app']}.{ns}"] = p["metadata"]["name"]
            return got if wanted <= set(got) else None

        def missing() -> str:
            return ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']} {p.get('status', {}).get('phase')}"
                             for ns in ("foo", "bar", "default") for p in node.pods(ns) if not is_ready(p))  # fmt: skip

        try:
            m.ips = wait_for(ready, 120, "httpbin, sleep and recorder ready with their sidecars")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not ready: {missing()}") from None
        last: list[tuple[int, str]] = []
        try:
            wait_for(lambda: last.append(m.call("http://httpbin.foo:8000/ip")) or last[-1][0] == 200, 60,
                     "sleep.foo -> httpbin.foo")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last[-1:]}") from None
        yield m


def _until(mesh: Mesh, want: int, url: str, what: str, **kw: Any) -> tuple[int, str]:
    """Call until the answer is ``want`` (a policy reaches the sidecar a moment after it is applied)."""
    got: list[tuple[int, str]] = []

    def check() -> bool:
        got.append(mesh.call(url, **kw))
        return got[-1][0] == want

    try:
        wait_for(check, 30, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last answer {got[-1:]}") from None
    return got[-1]


def test_deny_method_get(mesh: Mesh) -> None:
    """authz-deny steps 1-2: GET is denied with Envoy's RBAC reply, POST still goes through."""
    policy = SECURITY / "authz-deny" / "deny-method-get.yaml"
    mesh.apply(policy)
    try:
        _status, body = _until(mesh, 403, "http://httpbin.foo:8000/get", "deny-method-get to apply")
        assert body == DENIED
        assert mesh.call("http://httpbin.foo:8000/post", method="POST")[0] == 200
        # Envoy sets no response flag on an RBAC denial: httpbin's sidecar counts a 403 with flags "-".
        rows = _requests(mesh.ips["httpbin.foo"])
        assert [r for r in rows if r["reporter"] == "destination" and r["response_code"] == "403"
                and r["response_flags"] == "-"], rows  # fmt: skip
        # `meshwork why` names the policy and rule that denies, and what POST does instead.
        why = mesh.meshwork("why", mesh.names["sleep.foo"], "http://httpbin.foo:8000/get", "-n", "foo")
        assert why.returncode == 0, why.stderr
        assert "denied by DENY policy foo/deny-method-get rule 0" in why.stdout, why.stdout
        assert why.stdout.rstrip().endswith("verdict: denied"), why.stdout
        why = mesh.meshwork("why", mesh.names["sleep.foo"], "http://httpbin.foo:8000/post", "-n", "foo", "-X", "POST")
        assert "rule 0: no match: to: " in why.stdout and "verdict: forward" in why.stdout, why.stdout
        # The policy selects httpbin only: the recorder in the same namespace is untouched.
        answer = mesh.call("http://recorder.foo:8080/get")
        assert answer[0] == 200, answer
    finally:
        mesh.delete(policy)
    _until(mesh, 200, "http://httpbin.foo:8000/get", "deny-method-get to go away")


def test_deny_method_get_unless_admin_then_allow_path_ip(mesh: Mesh) -> None:
    """authz-deny steps 4-7: x-token admin lifts the DENY; allow-path-ip then allows only /ip."""
    deny = SECURITY / "authz-deny" / "deny-method-get-unless-admin.yaml"
    allow = SECURITY / "authz-deny" / "allow-path-ip.yaml"
    mesh.apply(deny)
    try:
        _until(mesh, 403, "http://httpbin.foo:8000/get", "deny-method-get (unless admin) to apply")
        assert mesh.call("http://httpbin.foo:8000/get", headers=("x-token: admin",))[0] == 200
        assert mesh.call("http://httpbin.foo:8000/get", headers=("x-token: guest",)) == (403, DENIED)
        mesh.apply(allow)
        _until(mesh, 403, "http://httpbin.foo:8000/headers", "allow-path-ip to apply", headers=("x-token: admin",))
        assert mesh.call("http://httpbin.foo:8000/ip", headers=("x-token: admin",))[0] == 200
        assert mesh.call("http://httpbin.foo:8000/ip", headers=("x-token: guest",))[0] == 403  # the DENY first
    finally:
        mesh.delete(allow)
        mesh.delete(deny)
    _until(mesh, 200, "http://httpbin.foo:8000/headers", "the policies to go away")


def test_allow_nothing_denies_everything_in_its_namespace(mesh: Mesh) -> None:
    policy = SECURITY / "authz-http" / "allow-nothing.yaml"
    mesh.apply(policy)
    try:
        _status, body = _until(mesh, 403, "http://httpbin.default:8000/ip", "allow-nothing to apply")
        assert body == DENIED
        assert mesh.call("http://httpbin.default:8000/post", method="POST")[0] == 403
        assert mesh.call("http://httpbin.foo:8000/ip")[0] == 200  # another namespace
    finally:
        mesh.delete(policy)
    _until(mesh, 200, "http://httpbin.default:8000/ip", "allow-nothing to go away")


def test_a_policy_the_proxy_cannot_enforce_is_nacked_and_the_last_good_one_kept(mesh: Mesh) -> None:
    deny = SECURITY / "authz-deny" / "deny-method-get.yaml"
    custom = mesh.tmp / "custom.yaml"
    custom.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext-authz, namespace: foo}\n"
        "spec:\n  selector: {matchLabels: {app: httpbin}}\n  action: CUSTOM\n  provider: {name: opa}\n"
        "  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"
    )
    mesh.apply(deny)
    try:
        _until(mesh, 403, "http://httpbin.foo:8000/get", "deny-method-get to apply")
        # Valid as a resource (Istio accepts it), but no ext-authz provider exists: the proxy refuses it,
        # and apply, waiting for convergence, reports that.
        applied = mesh.meshwork("apply", "-f", str(custom))
        assert applied.returncode != 0 and "CUSTOM" in applied.stdout + applied.stderr, applied

        def nacked() -> str | None:
            out = mesh.meshwork("proxy-status", "-n", "foo").stdout
            return next((line for line in out.splitlines() if "httpbin" in line and "CUSTOM" in line), None)

        wait_for(nacked, 30, "httpbin's proxy to NACK the CUSTOM policy")
        assert mesh.call("http://httpbin.foo:8000/get")[0] == 403  # the last good config still enforced
    finally:
        mesh.delete(custom)
        mesh.delete(deny)
    _until(mesh, 200, "http://httpbin.foo:8000/get", "the policies to go away")


# Spellings of /admin (and under it) that servers and proxies have disagreed about.
ADMIN_SPELLINGS = [
    "/admin", "/admin/", "/admin/x", "//admin", "///admin/x", "/./admin", "/admin/.", "/x/../admin",
    "/x/y/../../admin", "/../admin", "/%61dmin", "/adm%69n", "/%61%64%6d%69%6e", "/%2e/admin", "/%2E%2E/admin",
    "/x/%2e%2e/admin", "/x/%2E%2e/admin/", "/x%2F..%2Fadmin", "/admin%2Fx", "/%2Fadmin", "/x\\..\\admin",
    "/\\admin", "/admin\\x", "/x/..%5Cadmin", "/./././admin", "/x/./../admin", "/admin/./", "/admin//",
    "/admin/x/..", "/x/..//admin", "/%2fadmin%2f", "/x/%2E%2E%2Fadmin", "/admin?x=1", "/x/../admin?y=/ok",
    "/ok/../admin#frag", "/admin;x=1", "/admin%00", "/adm%in", "/admin/%2e%2e/admin",
]  # fmt: skip


def test_no_spelling_of_a_denied_path_reaches_the_app(mesh: Mesh) -> None:
    assert len(ADMIN_SPELLINGS) >= 30
    policy = mesh.tmp / "deny-admin.yaml"
    policy.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\n"
        "spec:\n  selector: {matchLabels: {app: recorder}}\n  action: DENY\n"
        "  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]\n"
    )
    mesh.apply(policy)
    paths_file = mesh.tmp / "paths"
    ip = mesh.ips["recorder.foo"]

    def send(target: str) -> tuple[int, str]:
        return raw(ip, 15006, f"GET {target} HTTP/1.1\r\nHost: recorder.foo:8080\r\nConnection: close\r\n\r\n".encode())

    try:
        last: list[tuple[int, str]] = []
        try:
            wait_for(lambda: last.append(send("/admin")) or last[-1][0] == 403, 30, "deny-admin to apply")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last[-1:]}") from None
        paths_file.write_text("")  # what the app receives from here on
        answers = {target: send(target) for target in ADMIN_SPELLINGS}
        for target, (status, body) in answers.items():
            assert status in (400, 403), (target, status, body)
        # Allowed neighbours do reach the app, normalised: the check saw what the app sees.
        assert send("/x/../ok") == (200, "got /ok")
        assert send("/%61dministrator") == (200, "got /administrator")
        assert send("/x/../ip")[0] == 200
        # Through sleep's sidecar too (the outbound side forwards the spelling; the server side decides).
        assert mesh.call("http://recorder.foo:8080/x/../admin")[0] == 403
        assert mesh.call("http://recorder.foo:8080/%61dmin/x")[0] == 403
        received = paths_file.read_text().split()
        assert not [p for p in received if p.partition("?")[0].rstrip("/") in ("/admin",) or p.startswith("/admin/")]
        assert received[:2] == ["/ok", "/administrator"], received
    finally:
        mesh.delete(policy)


def test_bookinfo_viewers_allow_only_the_named_service_account(mesh: Mesh) -> None:
    """authz-http steps 2-5: ratings admits GETs from the bookinfo-reviews identity only (mutual TLS)."""
    policy = SECURITY / "authz-http" / "bookinfo-viewers.yaml"
    mesh.apply(policy)
    try:
        status, body = _until(mesh, 403, "http://ratings.default:9080/ratings/0", "ratings-viewer to apply")
        assert body == DENIED  # sleep.foo's identity is cluster.local/ns/foo/sa/sleep
        assert mesh.call("http://ratings.default:9080/ratings/0", via="reviews.default") == (200, "got /ratings/0")
        assert mesh.call("http://ratings.default:9080/ratings/0", method="POST", via="reviews.default")[0] == 403
        assert mesh.call("http://ratings.default:9080/ratings/0", via="sleep.bar")[0] == 403
        # A caller that skips its sidecar has no certificate: no principal, denied (or refused outright).
        status, _ = raw(mesh.ips["ratings.default"], 15006,
                        b"GET /ratings/0 HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert status != 200
    finally:
        mesh.delete(policy)
    _until(mesh, 200, "http://ratings.default:9080/ratings/0", "bookinfo-viewers to go away")


def _mesh_config(mesh: Mesh, text: str | None) -> None:
    """Write Istio's mesh config (ConfigMap istio-system/istio, key ``mesh``), or delete it (None)."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"},
          "data": {"mesh": text or ""}}  # fmt: skip
    if text is None:
        mesh.meshwork("delete", "configmap", "istio", "-n", "istio-system", "--ignore-not-found")
    else:
        mesh.meshwork("apply", "-f", "-", stdin=json.dumps(cm))  # a NACKed config fails apply: checked below


def test_mesh_config_path_normalization_none_lets_double_slash_past_a_deny(mesh: Mesh) -> None:
    """meshConfig pathNormalization: NONE matches ``//admin`` as it is, so a DENY on /admin misses it and the
    app serves /admin; meshwork's default (DECODE_AND_MERGE_SLASHES) refuses it. A bad value is NACKed."""
    policy = mesh.tmp / "deny-admin-meshconfig.yaml"
    policy.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin-mc, namespace: foo}\n"
        "spec:\n  selector: {matchLabels: {app: recorder}}\n  action: DENY\n"
        "  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]\n"
    )
    ip = mesh.ips["recorder.foo"]

    def send(target: str) -> tuple[int, str]:
        return raw(ip, 15006, f"GET {target} HTTP/1.1\r\nHost: recorder.foo:8080\r\nConnection: close\r\n\r\n".encode())

    def until(target: str, want: int, what: str) -> tuple[int, str]:
        last: list[tuple[int, str]] = []
        try:
            wait_for(lambda: last.append(send(target)) or last[-1][0] == want, 30, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last[-1:]}") from None
        return last[-1]

    mesh.apply(policy)
    try:
        until("/admin", 403, "deny-admin to apply")
        assert send("//admin")[0] == 403  # the default merges slashes before matching
        _mesh_config(mesh, "pathNormalization:\n  normalization: NONE\n")
        # The DENY misses "//admin", and the app (Python's http.server merges leading slashes) serves /admin:
        # the walk-around meshwork's default closes.
        assert until("//admin", 200, "normalization NONE to reach the recorder's sidecar") == (200, "got /admin")
        assert send("/admin")[0] == 403  # the exact spelling is still denied
        assert send("/x/../admin")[0] == 200  # nor are dot segments resolved: the app gets them as sent

        _mesh_config(mesh, "pathNormalization:\n  normalization: SOMETIMES\n")

        def nacked() -> str | None:
            out = mesh.meshwork("proxy-status", "-n", "foo").stdout
            return next((line for line in out.splitlines() if "recorder" in line and "SOMETIMES" in line), None)

        line = wait_for(nacked, 30, "the recorder's proxy to NACK normalization SOMETIMES")
        assert "pathNormalization.normalization" in line, line
        assert send("//admin") == (200, "got /admin")  # the last good config (NONE) still in force

        _mesh_config(mesh, "pathNormalization:\n  normalization: DECODE_AND_MERGE_SLASHES\n")
        until("//admin", 403, "DECODE_AND_MERGE_SLASHES to apply")
        assert send("/%2Fadmin")[0] == 403
        _mesh_config(mesh, None)
        assert send("//admin")[0] == 403
    finally:
        _mesh_config(mesh, None)
        mesh.delete(policy)


def test_namespace_level_allow_admits_only_its_own_namespace(mesh: Mesh) -> None:
    """Istio's namespace-level ALLOW: no selector, ``from.source.namespaces: [foo]``; the source namespace
    is the one in the caller's mTLS certificate."""
    policy = mesh.tmp / "allow-same-namespace.yaml"
    policy.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: allow-same-namespace, namespace: foo}\n"
        "spec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        namespaces: [\"foo\"]\n"
    )
    mesh.apply(policy)
    try:
        assert _until(mesh, 403, "http://httpbin.foo:8000/ip", "the namespace ALLOW to apply", via="sleep.bar") == (
            403, DENIED)  # fmt: skip
        assert mesh.call("http://httpbin.foo:8000/ip")[0] == 200  # sleep.foo
        assert mesh.call("http://recorder.foo:8080/get")[0] == 200  # every workload of foo
        assert mesh.call("http://recorder.foo:8080/get", via="sleep.bar")[0] == 403
        assert mesh.call("http://httpbin.default:8000/ip", via="sleep.bar")[0] == 200  # another namespace's pods
        # No certificate, no source namespace: a plaintext caller is not from foo.
        status, _ = raw(mesh.ips["httpbin.foo"], 15006,
                        b"GET /ip HTTP/1.1\r\nHost: httpbin.foo:8000\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert status == 403
    finally:
        mesh.delete(policy)
    _until(mesh, 200, "http://httpbin.foo:8000/ip", "the namespace ALLOW to go away", via="sleep.bar")


def test_metrics_name_peers_by_their_certificates(mesh: Mesh) -> None:
    """Inbound (reporter=destination): source principal, namespace and connection_security_policy from the
    client certificate; outbound (reporter=source): destination_principal from the verified server certificate."""
    assert mesh.call("http://httpbin.foo:8000/status/201")[0] == 201  # sleep.foo, mutual TLS
    assert mesh.call("http://httpbin.foo:8000/status/202", via="sleep.bar")[0] == 202
    plain = raw(mesh.ips["httpbin.foo"], 15006,
                b"GET /status/203 HTTP/1.1\r\nHost: httpbin.foo:8000\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert plain[0] == 203, plain
    rows = {r["response_code"]: r for r in _requests(mesh.ips["httpbin.foo"]) if r["reporter"] == "destination"}
    foo, bar, none = rows["201"], rows["202"], rows["203"]
    assert (foo["source_principal"], foo["source_workload"], foo["source_workload_namespace"],
            foo["connection_security_policy"]) == ("spiffe://cluster.local/ns/foo/sa/sleep", "sleep", "foo",
                                                   "mutual_tls")  # fmt: skip
    assert (bar["source_principal"], bar["source_workload"], bar["source_workload_namespace"],
            bar["connection_security_policy"]) == ("spiffe://cluster.local/ns/bar/sa/sleep", "sleep", "bar",
                                                   "mutual_tls")  # fmt: skip
    assert (none["source_principal"], none["connection_security_policy"]) == ("unknown", "none")
    out = [r for r in _requests(mesh.ips["sleep.foo"]) if r["reporter"] == "source" and r["response_code"] == "201"]
    assert out, _requests(mesh.ips["sleep.foo"])
    assert out[0]["destination_principal"] == "spiffe://cluster.local/ns/foo/sa/httpbin"
    assert out[0]["destination_workload"] == "httpbin" and out[0]["connection_security_policy"] == "unknown"
