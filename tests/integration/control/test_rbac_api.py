"""API access control against a real server: tokens, RBAC, 401/403, can-i, mounted ServiceAccount tokens."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.node import running_node, wait_for
from support.server import Http, ServerProcess

pytestmark = pytest.mark.integration

RBAC = "/apis/rbac.authorization.k8s.io/v1"
SA_USER = "system:serviceaccount:team:reader"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path)
    try:
        yield proc.start()
    finally:
        proc.kill()


def create(http: Http, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = http.post(path, body)
    assert reply.status == 201, reply.body
    return dict(reply.json)


def setup_reader(http: Http) -> None:
    """Namespaces team and other; ServiceAccount team/reader may get/list/watch pods in team only."""
    for ns in ("team", "other"):
        create(http, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    create(http, "/api/v1/namespaces/team/serviceaccounts",
           {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})  # fmt: skip
    create(http, f"{RBAC}/namespaces/team/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    })  # fmt: skip
    create(http, f"{RBAC}/namespaces/team/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "read-pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
    })  # fmt: skip


def token_for(http: Http, namespace: str, name: str) -> str:
    reply = http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})  # fmt: skip
    assert reply.status == 201, reply.body
    assert reply.json["status"]["expirationTimestamp"]
    return str(reply.json["status"]["token"])


def meshwork(server: ServerProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHWORK_SERVER", "MESHWORK_TOKEN")}
    env["MESHWORK_HOME"] = str(server.data_dir)
    cmd = [sys.executable, "-m", "meshwork", *(("--token", token) if token else ()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_service_account_token_limited_by_a_role(server: ServerProcess) -> None:
    admin = server.client()
    setup_reader(admin)
    sa = Http(server.host, server.port, token_for(admin, "team", "reader"))

    assert sa.get("/api/v1/namespaces/team/pods").status == 200
    assert sa.get("/api/v1/namespaces/team/pods?watch=1&timeoutSeconds=1").status == 200

    denied = sa.get("/api/v1/namespaces/other/pods")
    assert denied.status == 403
    assert denied.json["reason"] == "Forbidden" and denied.json["kind"] == "Status"
    assert denied.json["message"] == (
        f'pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" in the namespace "other"')
    assert denied.json["details"] == {"kind": "pods"}

    for method, path, verb in [
        ("GET", "/api/v1/namespaces/team/secrets", "list"),
        ("GET", "/api/v1/pods", "list"),
        ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch"),
        ("GET", "/api/v1/pods?watch=true", "watch"),
        ("POST", "/api/v1/namespaces/team/pods", "create"),
        ("DELETE", "/api/v1/namespaces/team/pods", "deletecollection"),
        ("GET", "/apis/apps/v1/namespaces/team/deployments", "list"),
        ("GET", "/api/v1/nodes/any/proxy/stats/summary", "get"),
        ("GET", "/apis/mesh.meshwork.io/v1/proxies", "list"),
    ]:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                "spec": {"containers": [{"name": "c", "command": ["true"]}]}} if method == "POST" else None  # fmt: skip
        reply = sa.request(method, path, body)
        assert reply.status == 403, (method, path, reply.body)
        assert f'User "{SA_USER}" cannot {verb} resource' in reply.json["message"], reply.json["message"]

    # The admin still does everything.
    assert admin.get("/api/v1/secrets").status == 200
    assert admin.get("/apis/mesh.meshwork.io/v1/proxies").status == 200

    # A deleted ServiceAccount's tokens stop working at once.
    assert admin.delete("/api/v1/namespaces/team/serviceaccounts/reader").status == 200
    gone = sa.get("/api/v1/namespaces/team/pods")
    assert gone.status == 401 and gone.json["reason"] == "Unauthorized"


def test_missing_wrong_and_forged_tokens_get_401(server: ServerProcess) -> None:
    admin = server.client()
    setup_reader(admin)
    good = token_for(admin, "team", "reader")
    head, body, sig = good.split(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b"team", b"kube")
    forged = ".".join([head, base64.urlsafe_b64encode(claims).rstrip(b"=").decode(), sig])
    unsigned = ".".join([base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode(), body, ""])
    for token in (None, "wrong", forged, unsigned, good + "x"):
        reply = admin.request("GET", "/api/v1/namespaces/team/pods", token=token or False)
        assert reply.status == 401, token
        assert reply.json["kind"] == "Status" and reply.json["code"] == 401
    assert admin.get("/healthz", token=False).status == 200  # public, as upstream


def test_can_i_and_create_token(server: ServerProcess) -> None:
    admin = server.client()
    setup_reader(admin)

    yes = meshwork(server, "auth", "can-i", "list", "pods", "-n", "team", "--as", SA_USER)
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes"), yes.stderr
    no = meshwork(server, "auth", "can-i", "list", "pods", "-n", "other", "--as", SA_USER)
    assert (no.returncode, no.stdout.strip()) == (1, "no"), no.stderr
    no_all = meshwork(server, "auth", "can-i", "watch", "pods", "--all-namespaces", "--as", SA_USER)
    assert (no_all.returncode, no_all.stdout.strip()) == (1, "no"), no_all.stderr
    assert meshwork(server, "auth", "can-i", "delete", "secrets", "-A").stdout.strip() == "yes"  # the admin

    created = meshwork(server, "create", "token", "reader", "-n", "team", "--duration", "20m")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert Http(server.host, server.port, token).get("/api/v1/namespaces/team/pods").status == 200
    as_sa = meshwork(server, "auth", "can-i", "get", "pods", "-n", "team", token=token)
    assert (as_sa.returncode, as_sa.stdout.strip()) == (0, "yes"), as_sa.stderr
    as_sa = meshwork(server, "auth", "can-i", "create", "pods", "-n", "team", token=token)
    assert (as_sa.returncode, as_sa.stdout.strip()) == (1, "no"), as_sa.stderr
    # A ServiceAccount may not impersonate the admin.
    escalate = meshwork(server, "auth", "can-i", "get", "secrets", "--as", "admin", token=token)
    assert escalate.returncode != 0 and "impersonate" in escalate.stderr, escalate.stderr


def test_get_secrets_never_prints_values(server: ServerProcess) -> None:
    admin = server.client()
    value = "s3cr3t-value-1234"
    create(admin, "/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"password": base64.b64encode(value.encode()).decode()},
    })  # fmt: skip
    for args in (("get", "secrets"), ("get", "secret", "creds"), ("describe", "secret", "creds")):
        out = meshwork(server, *args)
        assert out.returncode == 0, out.stderr
        assert "creds" in out.stdout
        assert value not in out.stdout and base64.b64encode(value.encode()).decode() not in out.stdout
    log = (server.data_dir / "test-server.log").read_text()
    assert value not in log and base64.b64encode(value.encode()).decode() not in log


SA_CHECK = """
import json, os, stat, urllib.request, urllib.error
d = os.environ["MESHWORK_SERVICEACCOUNT_DIR"]
out = {n: oct(stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode)) for n in ("token", "namespace", "ca.crt")}
out["namespace_text"] = open(os.path.join(d, "namespace")).read()
token = open(os.path.join(d, "token")).read()
for ns in ("team", "other"):
    req = urllib.request.Request(os.environ["MESHWORK_SERVER"] + f"/api/v1/namespaces/{ns}/pods",
                                 headers={"Authorization": "Bearer " + token})
    try:
        out[ns] = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as exc:
        out[ns] = exc.code
print(json.dumps(out), flush=True)
import time; time.sleep(3600)
"""


def test_mounted_service_account_token(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        setup_reader(node.http)
        pods = "/api/v1/namespaces/team/pods"
        node.apply(pods, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": {
            "serviceAccountName": "reader",
            "containers": [{"name": "c", "command": [sys.executable, "-c", SA_CHECK]}]}})  # fmt: skip
        node.apply(pods, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet"}, "spec": {
            "serviceAccountName": "reader", "automountServiceAccountToken": False,
            "containers": [{"name": "c", "command": [sys.executable, "-c", "import time; time.sleep(3600)"]}]}})  # fmt: skip

        def logged() -> str | None:
            reply = node.http.get(f"{pods}/app/log")
            return reply.body.decode() if reply.status == 200 and reply.body.strip() else None

        import json

        result = json.loads(wait_for(logged, 60, "the app's report").strip().splitlines()[-1])
        assert result == {"token": "0o600", "namespace": "0o644", "ca.crt": "0o644", "namespace_text": "team",
                          "team": 200, "other": 403}  # fmt: skip

        def root_of(name: str) -> Path | None:
            pod = node.pod(name, "team")
            if not pod or pod.get("status", {}).get("phase") != "Running":
                return None
            return tmp_path / "nodes" / "node-1" / "pods" / pod["metadata"]["uid"] / "root"

        mount = "var/run/secrets/kubernetes.io/serviceaccount"
        app_root = wait_for(lambda: root_of("app"), 30, "app running")
        token_file = app_root / mount / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        pod_token = token_file.read_text()
        assert Http(node.server.host, node.server.port, pod_token).get(pods).status == 200
        quiet_root = wait_for(lambda: root_of("quiet"), 30, "quiet running")
        assert not (quiet_root / mount).exists()

        # The agent and its proxies run with their own limited identities, not the admin token.
        admin_token = node.server.token
        proxy_token = (tmp_path / "nodes" / "node-1" / "proxy-token").read_text()
        node_token = (tmp_path / "nodes" / "node-1" / "node-token").read_text().strip()
        assert admin_token not in (proxy_token, node_token)
        as_proxy = Http(node.server.host, node.server.port, proxy_token).get("/api/v1/secrets")
        assert as_proxy.status == 403 and '"system:meshwork:proxy:node-1"' in as_proxy.json["message"]
        as_node = Http(node.server.host, node.server.port, node_token)
        assert as_node.get("/api/v1/pods").status == 200
        assert as_node.post("/apis/mesh.meshwork.io/v1/nodes/other-node/credentials", {}).status == 403
        assert as_node.delete("/api/v1/namespaces/team/serviceaccounts/reader").status == 403

        # A bound token dies with its pod.
        assert node.http.delete(f"{pods}/app", {"gracePeriodSeconds": 0}).status in (200, 202)
        wait_for(lambda: node.pod("app", "team") is None, 60, "app deleted")
        assert Http(node.server.host, node.server.port, pod_token).get(pods).status == 401


def test_bootstrap_roles_regain_rules_a_newer_server_adds_unless_taken_over(tmp_path: Path) -> None:
    """As Kubernetes reconciles its bootstrap roles at start: rules missing from a role still marked
    autoupdate come back; a role marked autoupdate "false" belongs to the user and stays as it is."""
    path = f"{RBAC}/clusterroles"
    proc = ServerProcess(tmp_path)
    try:
        http = proc.start().client()
        proxy = http.get(f"{path}/system:meshwork:proxy").json
        full = proxy["rules"]
        view = http.get(f"{path}/view").json
        # What an older server would have left behind: fewer rules (and a role the user owns now).
        assert http.put(f"{path}/system:meshwork:proxy", {**proxy, "rules": full[:1]}).status == 200
        view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = "false"
        assert http.put(f"{path}/view", {**view, "rules": view["rules"][:1]}).status == 200
        http.close()
        proc.stop()
        http = proc.start().client()
        assert http.get(f"{path}/system:meshwork:proxy").json["rules"] == full
        assert len(http.get(f"{path}/view").json["rules"]) == 1
        http.close()
    finally:
        proc.kill()
