"""A ConfigMap or Secret change rolls the Deployments that read it, end to end: a real
``meshwork server --no-agent`` (pods never run; the ReplicaSets and the Deployments'
templates show what the controllers decided).

"Nothing happened" is shown without waiting an arbitrary time: the runner has one
FIFO queue, so once a later change (a sentinel ConfigMap's) has rolled its own
Deployment, every key queued before it has been reconciled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.server import Http, ServerProcess, configmap, running_server

pytestmark = pytest.mark.integration

NS = "cfg-roll"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"
RSS = f"/apis/apps/v1/namespaces/{NS}/replicasets"
CMS = f"/api/v1/namespaces/{NS}/configmaps"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
EVENTS = f"/api/v1/namespaces/{NS}/events"
HASH = "meshwork.io/config-hash"
RECORD = "meshwork.io/config-hashes"
OPT_OUT = "meshwork.io/rollout-on-config-change"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("configrollout")) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s: {what}; last: {last!r}")


def deployment(name: str, *, configmap_name: str | None = None, secret_name: str | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    labels = {"app": name}
    container: dict[str, Any] = {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}
    spec: dict[str, Any] = {"containers": [container]}
    if configmap_name:
        container["envFrom"] = [{"configMapRef": {"name": configmap_name}}]
    if secret_name:
        container["volumeMounts"] = [{"name": "creds", "mountPath": "/creds"}]
        spec["volumes"] = [{"name": "creds", "secret": {"secretName": secret_name}}]
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec}},
    }  # fmt: skip


def get(api: Http, name: str) -> dict[str, Any]:
    return dict(api.get(f"{DEPLOYS}/{name}").json)


def replicasets(api: Http, name: str) -> list[dict[str, Any]]:
    return [rs for rs in api.get(RSS).json["items"]
            if any(ref["name"] == name for ref in rs["metadata"].get("ownerReferences") or [])]  # fmt: skip


def template_hash(deploy: dict[str, Any]) -> str | None:
    return ((deploy["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(HASH)


def config_events(api: Http, name: str) -> list[str]:
    return [e["message"] for e in api.get(EVENTS).json["items"]
            if e["reason"] == "ConfigChanged" and e["involvedObject"]["name"] == name]  # fmt: skip


class Sentinel:
    """A Deployment reading its own ConfigMap: changing that ConfigMap and seeing the
    Deployment roll proves the controller has reconciled everything queued before."""

    def __init__(self, api: Http) -> None:
        self.api, self.count = api, 0
        api.post(CMS, configmap("sentinel", {"n": "0"}))
        api.post(DEPLOYS, deployment("sentinel", configmap_name="sentinel"))
        eventually(lambda: RECORD in (get(api, "sentinel")["metadata"].get("annotations") or {}), what="sentinel record")

    def settle(self) -> None:
        before = template_hash(get(self.api, "sentinel"))
        self.count += 1
        self.api.patch(f"{CMS}/sentinel", {"data": {"n": str(self.count)}})
        eventually(lambda: template_hash(get(self.api, "sentinel")) != before, what="sentinel rolled")


def test_a_config_change_rolls_once_and_labels_or_an_opt_out_do_not(api: Http) -> None:
    api.post(CMS, configmap("app-config", {"GREETING": "hello"}))
    api.post(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                       "stringData": {"password": "one"}})  # fmt: skip
    api.post(DEPLOYS, deployment("web", configmap_name="app-config"))
    api.post(DEPLOYS, deployment("vault", secret_name="creds"))
    api.post(DEPLOYS, deployment("manual", configmap_name="app-config", annotations={OPT_OUT: "false"}))
    sentinel = Sentinel(api)

    # Creation: each Deployment gets one ReplicaSet; the record is kept on the
    # Deployment's metadata and the template is left alone (generation stays 1).
    for name in ("web", "vault"):
        eventually(lambda n=name: RECORD in (get(api, n)["metadata"].get("annotations") or {}), what=f"{name} record")
    for name in ("web", "vault", "manual"):
        eventually(lambda n=name: replicasets(api, n), what=f"{name} replicaset")
    sentinel.settle()
    for name in ("web", "vault", "manual"):
        deploy = get(api, name)
        assert deploy["metadata"]["generation"] == 1, name
        assert template_hash(deploy) is None, name
        assert len(replicasets(api, name)) == 1, name
    assert RECORD not in (get(api, "manual")["metadata"].get("annotations") or {})

    # Editing the ConfigMap's data rolls "web" once: a new template, a second
    # ReplicaSet, one ConfigChanged event. The opted-out Deployment stays put.
    api.patch(f"{CMS}/app-config", {"data": {"GREETING": "bonjour"}})
    eventually(lambda: len(replicasets(api, "web")) == 2, what="web's second replicaset")
    web = get(api, "web")
    assert web["metadata"]["generation"] == 2 and template_hash(web) is not None
    assert config_events(api, "web") == ["ConfigMap cfg-roll/app-config changed: rolling the pods"]
    new_rs = [rs for rs in replicasets(api, "web") if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"]
    assert len(new_rs) == 1
    assert new_rs[0]["spec"]["template"]["metadata"]["annotations"][HASH] == template_hash(web)
    sentinel.settle()
    manual = get(api, "manual")
    assert manual["metadata"]["generation"] == 1 and template_hash(manual) is None
    assert len(replicasets(api, "manual")) == 1 and config_events(api, "manual") == []
    assert get(api, "vault")["metadata"]["generation"] == 1

    # A label (or any metadata) change is not a data change: nothing moves.
    api.patch(f"{CMS}/app-config", {"metadata": {"labels": {"tier": "frontend"}}})
    sentinel.settle()
    web_after = get(api, "web")
    assert web_after["metadata"]["generation"] == 2 and template_hash(web_after) == template_hash(web)
    assert len(replicasets(api, "web")) == 2
    assert len(config_events(api, "web")) == 1

    # A Secret mounted as a volume rolls its reader the same way.
    api.patch(f"{SECRETS}/creds", {"stringData": {"password": "two"}})
    eventually(lambda: len(replicasets(api, "vault")) == 2, what="vault's second replicaset")
    assert config_events(api, "vault") == ["Secret cfg-roll/creds changed: rolling the pods"]
    assert get(api, "web")["metadata"]["generation"] == 2
