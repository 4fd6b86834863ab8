"""The API server end to end: a real ``meshwork server`` process, real HTTP, real SQLite."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.server import Http, ServerProcess, configmap, pod, running_server

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("api"), "--no-controllers") as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


def test_token_is_required_and_created_private(server: ServerProcess, api: Http) -> None:
    assert api.get(PODS, token=None).status == 401
    reply = api.get(PODS, token="wrong")
    assert reply.status == 401
    assert reply.json["kind"] == "Status" and reply.json["code"] == 401
    assert api.get("/readyz", token=None).status == 200
    mode = stat.S_IMODE(os.stat(server.data_dir / "token").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(server.data_dir / "config").st_mode) == 0o600


def test_create_fills_server_fields_and_upstream_defaults(api: Http) -> None:
    reply = api.post(PODS, pod("defaults"))
    assert reply.status == 201, reply.body
    obj = reply.json
    meta = obj["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1
    assert obj["spec"]["restartPolicy"] == "Always"
    assert obj["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert obj["status"] == {"phase": "Pending"}
    assert api.get(f"{PODS}/defaults").json == obj


def test_create_twice_is_already_exists(api: Http) -> None:
    assert api.post(PODS, pod("twice")).status == 201
    reply = api.post(PODS, pod("twice"))
    assert reply.status == 409
    assert reply.json["reason"] == "AlreadyExists"
    assert reply.json["message"] == 'pods "twice" already exists'


def test_get_missing_is_not_found_status(api: Http) -> None:
    reply = api.get(f"{PODS}/nope")
    assert reply.status == 404
    assert reply.json == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "nope" not found', "reason": "NotFound", "code": 404,
        "details": {"name": "nope", "kind": "pods"},
    }


def test_invalid_object_is_422_with_field_causes(api: Http) -> None:
    bad = pod("bad")
    bad["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    reply = api.post(PODS, bad)
    assert reply.status == 422, reply.body
    causes = reply.json["details"]["causes"]
    assert any(c["field"] == "spec.containers[0].ports[0].containerPort" for c in causes), causes
    assert api.get(f"{PODS}/bad").status == 404


def test_invalid_name_is_422(api: Http) -> None:
    reply = api.post(PODS, pod("Not_A_Name"))
    assert reply.status == 422
    assert any(c["field"] == "metadata.name" for c in reply.json["details"]["causes"])


def test_unknown_and_duplicate_fields_are_refused(api: Http) -> None:
    unknown = pod("unknown")
    unknown["spec"]["bogus"] = 1
    reply = api.post(PODS, unknown)
    assert reply.status in (400, 422)
    assert "bogus" in reply.body.decode()
    dup = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup2"}}'
    reply = api.request("POST", CMS, raw=dup)
    assert reply.status == 400
    assert "name" in reply.json["message"]
    assert api.get(f"{CMS}/dup").status == 404 and api.get(f"{CMS}/dup2").status == 404


def test_oversized_body_is_413(api: Http) -> None:
    big = configmap("big", {"blob": "x" * (4 * 1024 * 1024)})
    assert api.post(CMS, big).status == 413


def test_update_with_stale_resource_version_conflicts(api: Http) -> None:
    first = api.post(CMS, configmap("cas", {"a": "1"})).json
    second = api.put(f"{CMS}/cas", {**first, "data": {"a": "2"}})
    assert second.status == 200
    assert int(second.json["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale = api.put(f"{CMS}/cas", {**first, "data": {"a": "3"}})
    assert stale.status == 409
    assert stale.json["reason"] == "Conflict"
    assert api.get(f"{CMS}/cas").json["data"] == {"a": "2"}


def test_noop_update_keeps_resource_version(api: Http) -> None:
    created = api.post(CMS, configmap("noop", {"a": "1"})).json
    again = api.put(f"{CMS}/noop", created).json
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generation_moves_only_with_spec(api: Http) -> None:
    created = api.post(PODS, pod("gen", labels={"a": "1"})).json
    relabeled = api.patch(f"{PODS}/gen", {"metadata": {"labels": {"a": "2"}}}).json
    assert relabeled["metadata"]["generation"] == 1
    respec = api.patch(f"{PODS}/gen", {"spec": {"activeDeadlineSeconds": 30}}).json
    assert respec["metadata"]["generation"] == 2
    assert created["metadata"]["uid"] == respec["metadata"]["uid"]


def test_status_subresource_is_separate_from_spec(api: Http) -> None:
    created = api.post(PODS, pod("stat")).json
    # The main resource ignores status...
    attempt = api.put(f"{PODS}/stat", {**created, "status": {"phase": "Running"}}).json
    assert attempt["status"] == {"phase": "Pending"}
    # ...and /status ignores everything but status.
    changed = {**attempt, "status": {"phase": "Running"}, "spec": {**attempt["spec"], "activeDeadlineSeconds": 5}}
    reply = api.put(f"{PODS}/stat/status", changed)
    assert reply.status == 200, reply.body
    assert reply.json["status"]["phase"] == "Running"
    assert "activeDeadlineSeconds" not in reply.json["spec"]
    assert reply.json["metadata"]["generation"] == 1
    patched = api.patch(f"{PODS}/stat/status", {"status": {"phase": "Succeeded"}}).json
    assert patched["status"]["phase"] == "Succeeded"


def test_json_patch_and_merge_patch(api: Http) -> None:
    api.post(CMS, configmap("patchme", {"a": "1", "b": "2"}))
    merged = api.patch(f"{CMS}/patchme", {"data": {"a": None, "c": "3"}}).json
    assert merged["data"] == {"b": "2", "c": "3"}
    ops = [{"op": "add", "path": "/data/d", "value": "4"}, {"op": "remove", "path": "/data/b"}]
    patched = api.patch(f"{CMS}/patchme", ops, content_type="application/json-patch+json").json
    assert patched["data"] == {"c": "3", "d": "4"}
    failed = api.patch(f"{CMS}/patchme", [{"op": "test", "path": "/data/c", "value": "x"}], content_type="application/json-patch+json")
    assert failed.status == 422
    assert api.patch(f"{CMS}/patchme", {}, content_type="text/plain").status == 415


def test_patch_with_stale_resource_version_conflicts(api: Http) -> None:
    created = api.post(CMS, configmap("patchcas", {"a": "1"})).json
    api.patch(f"{CMS}/patchcas", {"data": {"a": "2"}})
    stale = api.patch(f"{CMS}/patchcas", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"a": "3"}})
    assert stale.status == 409


def test_label_and_field_selectors(api: Http) -> None:
    for i in range(4):
        api.post("/api/v1/namespaces/sel/pods", pod(f"p{i}", labels={"app": "web" if i % 2 else "db", "i": str(i)}))
    names = lambda r: [o["metadata"]["name"] for o in r.json["items"]]  # noqa: E731
    assert names(api.get("/api/v1/namespaces/sel/pods?labelSelector=app%3Dweb")) == ["p1", "p3"]
    assert names(api.get("/api/v1/namespaces/sel/pods?labelSelector=app%20notin%20(web),i!%3D0")) == ["p2"]
    assert names(api.get("/api/v1/namespaces/sel/pods?fieldSelector=metadata.name%3Dp2")) == ["p2"]
    assert names(api.get("/api/v1/pods?fieldSelector=metadata.namespace%3Dsel,status.phase%3DPending")) == ["p0", "p1", "p2", "p3"]
    assert api.get("/api/v1/pods?fieldSelector=spec.replicas%3D1").status == 400
    assert api.get("/api/v1/pods?labelSelector=a%20in%20(b").status == 400


def test_list_is_sorted_and_carries_a_resource_version(api: Http) -> None:
    reply = api.get("/api/v1/namespaces/sel/pods").json
    assert reply["kind"] == "PodList" and reply["apiVersion"] == "v1"
    assert int(reply["metadata"]["resourceVersion"]) > 0
    keys = [o["metadata"]["name"] for o in reply["items"]]
    assert keys == sorted(keys)


def test_namespaces_are_created_on_first_use_and_listed(api: Http) -> None:
    api.post("/api/v1/namespaces/auto-ns/configmaps", configmap("x"))
    ns = api.get("/api/v1/namespaces/auto-ns").json
    assert ns["status"]["phase"] == "Active"
    names = [o["metadata"]["name"] for o in api.get("/api/v1/namespaces").json["items"]]
    assert {"default", "kube-system", "auto-ns"} <= set(names)


def test_namespace_in_body_must_match_path(api: Http) -> None:
    body = configmap("mismatch")
    body["metadata"]["namespace"] = "other"
    assert api.post(CMS, body).status == 400


def test_generate_name(api: Http) -> None:
    body = configmap("")
    body["metadata"] = {"generateName": "gen-"}
    reply = api.post(CMS, body).json
    assert reply["metadata"]["name"].startswith("gen-") and len(reply["metadata"]["name"]) == 9


def test_dry_run_stores_nothing(api: Http) -> None:
    assert api.post(f"{CMS}?dryRun=All", configmap("dry")).status == 201
    assert api.get(f"{CMS}/dry").status == 404


def test_istio_kinds_are_served_at_every_version(api: Http) -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]},
    }
    base = "/apis/networking.istio.io/{v}/namespaces/default/virtualservices"
    reply = api.post(base.format(v="v1beta1"), vs)
    assert reply.status == 201, reply.body
    assert reply.json["apiVersion"] == "networking.istio.io/v1beta1"
    for version in ("v1", "v1beta1", "v1alpha3"):
        got = api.get(base.format(v=version) + "/reviews").json
        assert got["apiVersion"] == f"networking.istio.io/{version}"
        assert got["spec"]["hosts"] == ["reviews"]


def test_discovery(api: Http) -> None:
    groups = api.get("/apis").json
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "batch", "networking.istio.io", "security.istio.io", "argoproj.io"} <= names
    core = api.get("/api/v1").json
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and "po" in pods["shortNames"] and "watch" in pods["verbs"]
    assert api.get("/version", token=None).json["major"] == "1"


def test_finalizers_hold_deletion_until_removed(api: Http) -> None:
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    api.post(CMS, body)
    reply = api.delete(f"{CMS}/held")
    assert reply.status == 202
    assert reply.json["metadata"]["deletionTimestamp"]
    terminating = api.get(f"{CMS}/held").json
    assert terminating["metadata"]["deletionTimestamp"]
    # Deleting again changes nothing; removing the finalizer completes deletion.
    assert api.delete(f"{CMS}/held").status == 202
    assert api.patch(f"{CMS}/held", {"metadata": {"finalizers": None}}).status == 200
    assert api.get(f"{CMS}/held").status == 404


def _owned(name: str, owner: dict) -> dict:
    body = configmap(name)
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True}
    ]
    return body


def _wait_gone(api: Http, path: str, timeout: float = 15.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(path).status == 404:
            return True
        time.sleep(0.05)
    return False


def test_deleting_an_owner_deletes_its_dependents(api: Http) -> None:
    owner = api.post(CMS, configmap("owner-bg")).json
    api.post(CMS, _owned("dep-bg-1", owner))
    api.post(CMS, _owned("dep-bg-2", owner))
    assert api.delete(f"{CMS}/owner-bg").status == 200
    assert _wait_gone(api, f"{CMS}/dep-bg-1") and _wait_gone(api, f"{CMS}/dep-bg-2")


def test_orphan_propagation_keeps_dependents(api: Http) -> None:
    owner = api.post(CMS, configmap("owner-or")).json
    api.post(CMS, _owned("dep-or", owner))
    api.delete(f"{CMS}/owner-or", {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"})
    assert _wait_gone(api, f"{CMS}/owner-or")
    dep = api.get(f"{CMS}/dep-or")
    assert dep.status == 200 and "ownerReferences" not in dep.json["metadata"]


def test_foreground_propagation_deletes_dependents_first(api: Http) -> None:
    owner = api.post(CMS, configmap("owner-fg")).json
    dep = _owned("dep-fg", owner)
    dep["metadata"]["finalizers"] = ["example.com/slow"]
    api.post(CMS, dep)
    assert api.delete(f"{CMS}/owner-fg?propagationPolicy=Foreground").status == 202
    # The dependent is terminating (held by its own finalizer), so the owner waits.
    import time

    time.sleep(0.5)
    assert api.get(f"{CMS}/owner-fg").status == 200
    assert api.get(f"{CMS}/dep-fg").json["metadata"]["deletionTimestamp"]
    api.patch(f"{CMS}/dep-fg", {"metadata": {"finalizers": None}})
    assert _wait_gone(api, f"{CMS}/dep-fg") and _wait_gone(api, f"{CMS}/owner-fg")


def test_dependent_of_a_missing_owner_is_collected(api: Http) -> None:
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}}
    api.post(CMS, _owned("dep-ghost", ghost))
    assert _wait_gone(api, f"{CMS}/dep-ghost")


def test_deleting_a_namespace_deletes_its_content(api: Http) -> None:
    for i in range(3):
        api.post("/api/v1/namespaces/doomed/configmaps", configmap(f"c{i}"))
    api.post("/api/v1/namespaces/doomed/pods", pod("p"))
    assert api.delete("/api/v1/namespaces/doomed").status == 202
    assert api.post("/api/v1/namespaces/doomed/configmaps", configmap("late")).status in (403, 201)
    assert _wait_gone(api, "/api/v1/namespaces/doomed")
    assert api.get("/api/v1/namespaces/doomed/configmaps").json["items"] == []


def _collect(api: Http, path: str, n: int, timeout: float = 10.0) -> list[dict]:
    events: list[dict] = []
    for event in api.watch(path, timeout=timeout):
        events.append(event)
        if len(events) >= n:
            break
    return events


def test_watch_streams_changes_in_order(server: ServerProcess, api: Http) -> None:
    start_rv = api.get("/api/v1/namespaces/w1/configmaps").json["metadata"]["resourceVersion"]
    result: list[dict] = []
    watcher = threading.Thread(
        target=lambda: result.extend(_collect(server.client(), f"/api/v1/namespaces/w1/configmaps?watch=1&resourceVersion={start_rv}", 4))
    )
    watcher.start()
    api.post("/api/v1/namespaces/w1/configmaps", configmap("a", {"v": "1"}))
    api.patch("/api/v1/namespaces/w1/configmaps/a", {"data": {"v": "2"}})
    api.post("/api/v1/namespaces/w1/configmaps", configmap("b"))
    api.delete("/api/v1/namespaces/w1/configmaps/a")
    watcher.join(15)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in result] == [
        ("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a"),
    ]
    revs = [int(e["object"]["metadata"]["resourceVersion"]) for e in result]
    assert revs == sorted(revs) and len(set(revs)) == 4


def test_watch_resumes_from_a_resource_version_without_gaps(api: Http) -> None:
    first = api.post("/api/v1/namespaces/w2/configmaps", configmap("r1")).json
    api.post("/api/v1/namespaces/w2/configmaps", configmap("r2"))
    api.post("/api/v1/namespaces/w2/configmaps", configmap("r3"))
    rv = first["metadata"]["resourceVersion"]
    events = _collect(api, f"/api/v1/namespaces/w2/configmaps?watch=1&resourceVersion={rv}", 2)
    assert [e["object"]["metadata"]["name"] for e in events] == ["r2", "r3"]


def test_watch_without_resource_version_starts_with_current_state(api: Http) -> None:
    api.post("/api/v1/namespaces/w3/configmaps", configmap("s1"))
    events = _collect(api, "/api/v1/namespaces/w3/configmaps?watch=true", 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "s1"


def test_watch_filters_by_label(server: ServerProcess, api: Http) -> None:
    rv = api.get("/api/v1/namespaces/w4/configmaps").json["metadata"]["resourceVersion"]
    result: list[dict] = []
    watcher = threading.Thread(
        target=lambda: result.extend(_collect(server.client(), f"/api/v1/namespaces/w4/configmaps?watch=1&resourceVersion={rv}&labelSelector=keep%3Dyes", 1))
    )
    watcher.start()
    skip = configmap("skip")
    skip["metadata"]["labels"] = {"keep": "no"}
    keep = configmap("keep")
    keep["metadata"]["labels"] = {"keep": "yes"}
    api.post("/api/v1/namespaces/w4/configmaps", skip)
    api.post("/api/v1/namespaces/w4/configmaps", keep)
    watcher.join(15)
    assert [e["object"]["metadata"]["name"] for e in result] == ["keep"]


def test_watch_timeout_seconds_ends_the_stream(api: Http) -> None:
    events = list(api.watch("/api/v1/namespaces/empty-ns/configmaps?watch=1&resourceVersion=1&timeoutSeconds=1", timeout=10))
    assert events == []


def test_sigterm_stops_gracefully_and_keeps_writes(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    try:
        server.start()
        api = server.client()
        assert api.post(CMS, configmap("kept", {"k": "v"})).status == 201
        api.close()
        assert server.stop() == 0
        assert not (tmp_path / "server.pid").exists()
        server.start()
        assert server.client().get(f"{CMS}/kept").json["data"] == {"k": "v"}
    finally:
        server.kill()


def test_the_error_body_is_a_status_object(api: Http) -> None:
    reply = api.request("POST", CMS, raw=b"{not json")
    assert reply.status == 400
    body = json.loads(reply.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == 400


SVCS = "/api/v1/namespaces/alloc/services"


def _svc(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def test_services_get_unique_cluster_ips_from_the_loopback_range(api: Http) -> None:
    ips = set()
    for i in range(5):
        spec = api.post(SVCS, _svc(f"s{i}")).json["spec"]
        assert spec["clusterIP"].startswith("127.96.") and spec["clusterIPs"] == [spec["clusterIP"]]
        assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
        assert spec["ports"][0]["targetPort"] == 80
        ips.add(spec["clusterIP"])
    assert len(ips) == 5
    taken = next(iter(ips))
    clash = api.post(SVCS, _svc("clash", clusterIP=taken))
    assert clash.status == 422 and "already allocated" in clash.json["message"]
    headless = api.post(SVCS, _svc("headless", clusterIP="None")).json
    assert headless["spec"]["clusterIP"] == "None"


def test_service_updates_keep_the_cluster_ip_and_refuse_changing_it(api: Http) -> None:
    created = api.post(SVCS, _svc("keep", type="NodePort")).json
    ip, node_port = created["spec"]["clusterIP"], created["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    body = _svc("keep", type="NodePort")  # a manifest without the allocated fields
    updated = api.put(f"{SVCS}/keep", body).json
    assert updated["spec"]["clusterIP"] == ip and updated["spec"]["ports"][0]["nodePort"] == node_port
    changed = api.put(f"{SVCS}/keep", _svc("keep", type="NodePort", clusterIP="127.96.9.9"))
    assert changed.status == 422 and "immutable" in changed.json["message"]


def test_jobs_get_a_generated_selector_and_template_labels(api: Http) -> None:
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl", "command": ["true"]}]}}},
    }
    created = api.post("/apis/batch/v1/namespaces/jobs/jobs", job)
    assert created.status == 201, created.body
    obj = created.json
    uid = obj["metadata"]["uid"]
    assert obj["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == uid and labels["batch.kubernetes.io/job-name"] == "pi"
    assert labels["controller-uid"] == uid and labels["job-name"] == "pi"
    wrong = {**job, "metadata": {"name": "wrong"}}
    wrong["spec"] = {**job["spec"], "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "not-mine"}}}
    assert api.post("/apis/batch/v1/namespaces/jobs/jobs", wrong).status == 422


def test_pods_run_as_the_default_service_account_which_every_namespace_has(api: Http) -> None:
    created = api.post("/api/v1/namespaces/sa-ns/pods", pod("sa")).json
    assert created["spec"]["serviceAccountName"] == "default" and created["spec"]["serviceAccount"] == "default"
    assert api.get("/api/v1/namespaces/sa-ns/serviceaccounts/default").status == 200
    named = pod("named", serviceAccountName="reader")
    assert api.post("/api/v1/namespaces/sa-ns/pods", named).json["spec"]["serviceAccount"] == "reader"


def test_a_pod_on_a_node_stops_gracefully_until_its_node_confirms(api: Http) -> None:
    api.post(PODS, pod("graceful", nodeName="node-1", terminationGracePeriodSeconds=15))
    reply = api.delete(f"{PODS}/graceful")
    assert reply.status == 202
    meta = reply.json["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 15
    # The node agent reports the pod stopping: the pod stays while its grace period runs.
    status = api.patch(f"{PODS}/graceful/status", {"status": {"phase": "Running"}})
    assert status.status == 200
    assert api.get(f"{PODS}/graceful").status == 200
    # The agent confirms with a zero-grace delete: now it is gone.
    assert api.delete(f"{PODS}/graceful", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}).status == 200
    assert api.get(f"{PODS}/graceful").status == 404


def test_a_pod_on_no_node_is_deleted_at_once(api: Http) -> None:
    api.post(PODS, pod("unbound"))
    assert api.delete(f"{PODS}/unbound").status == 200
    assert api.get(f"{PODS}/unbound").status == 404
