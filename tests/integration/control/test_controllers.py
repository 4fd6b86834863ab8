"""The built-in controllers, end to end: a real server, real writes, the runner applying
pure reconciles. With no node agent yet, the test plays the agent's part where
needed, writing pod status through the API as the agent will."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.server import Http, ServerProcess, running_server

pytestmark = pytest.mark.integration

DEPLOYS = "/apis/apps/v1/namespaces/{ns}/deployments"
RSS = "/apis/apps/v1/namespaces/{ns}/replicasets"
PODS = "/api/v1/namespaces/{ns}/pods"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("controllers")) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


def eventually(
    check: Callable[[], Any], timeout: float = 15.0, on_timeout: Callable[[], Any] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s; last: {on_timeout() if on_timeout else last!r}")


def deployment(name: str, replicas: int, env: str = "a") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "app", "image": "busybox", "command": ["sleep", "3600"], "env": [{"name": "V", "value": env}]},
            ]}},
        },
    }


def items(api: Http, path: str) -> list[dict[str, Any]]:
    return list(api.get(path).json["items"])


def test_a_deployment_makes_a_replicaset_and_its_pods(api: Http) -> None:
    ns = "ctl-deploy"
    api.post(DEPLOYS.format(ns=ns), deployment("web", 3))
    pods = eventually(lambda: (p := items(api, PODS.format(ns=ns))) and len(p) == 3 and p)
    (rs,) = items(api, RSS.format(ns=ns))
    assert rs["metadata"]["name"].startswith("web-")
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    for pod in pods:
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("ReplicaSet", rs["metadata"]["name"], rs["metadata"]["uid"])
        assert pod["metadata"]["labels"]["pod-template-hash"] == rs["metadata"]["labels"]["pod-template-hash"]
    # Events name the pods the server actually created, as upstream's do.
    names = {p["metadata"]["name"] for p in pods}
    events = eventually(lambda: [e for e in items(api, f"/api/v1/namespaces/{ns}/events") if e["reason"] == "SuccessfulCreate"])
    assert {e["message"].removeprefix("Created pod: ") for e in events} <= names
    # The Deployment's own writes in one pass (status, then its revision annotation)
    # chain their resourceVersions, so the event after them is written too.
    scaled = eventually(lambda: [e for e in items(api, f"/api/v1/namespaces/{ns}/events") if e["reason"] == "ScalingReplicaSet"])
    assert scaled[0]["message"] == f"Scaled up replica set {rs['metadata']['name']} to 3"
    assert scaled[0]["involvedObject"]["kind"] == "Deployment"
    deploy = api.get(f"{DEPLOYS.format(ns=ns)}/web").json
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    # Scaling down deletes pods; the Deployment's status follows.
    api.patch(f"{DEPLOYS.format(ns=ns)}/web", {"spec": {"replicas": 1}})
    eventually(lambda: len(items(api, PODS.format(ns=ns))) == 1)
    eventually(lambda: api.get(f"{DEPLOYS.format(ns=ns)}/web").json.get("status", {}).get("replicas") == 1)

    # A new template makes a second ReplicaSet at revision 2.
    api.put(f"{DEPLOYS.format(ns=ns)}/web", {**deployment("web", 1, env="b"), "metadata": {"name": "web"}})
    rss = eventually(lambda: (r := items(api, RSS.format(ns=ns))) and len(r) == 2 and r)
    revisions = sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rss)
    assert revisions == ["1", "2"]

    # Deleting the Deployment collects its ReplicaSets and pods.
    api.delete(f"{DEPLOYS.format(ns=ns)}/web")

    def leftovers() -> list[str]:
        return [f"{o['kind']}/{o['metadata']['name']}" for o in items(api, RSS.format(ns=ns)) + items(api, PODS.format(ns=ns))]

    eventually(lambda: not leftovers() or None, timeout=30, on_timeout=leftovers)


def _report_running(api: Http, ns: str, pod: dict[str, Any], ip: str, ready: bool) -> None:
    """What the node agent will write: the pod runs, with an IP, ready or not."""
    status = {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    api.patch(f"{PODS.format(ns=ns)}/{pod['metadata']['name']}/status", {"status": status})


def test_a_service_gets_endpoints_for_its_ready_pods(api: Http) -> None:
    ns = "ctl-svc"
    api.post(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
    api.post(DEPLOYS.format(ns=ns), deployment("web", 2))
    pods = eventually(lambda: (p := items(api, PODS.format(ns=ns))) and len(p) == 2 and p)
    _report_running(api, ns, pods[0], "127.1.0.10", ready=True)
    _report_running(api, ns, pods[1], "127.1.0.11", ready=False)

    def subsets() -> Any:
        ep = api.get(f"/api/v1/namespaces/{ns}/endpoints/web").json
        subs = ep.get("subsets") or []
        return subs if subs and subs[0].get("addresses") and subs[0].get("notReadyAddresses") else None

    (subset,) = eventually(subsets)
    assert [a["ip"] for a in subset["addresses"]] == ["127.1.0.10"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["127.1.0.11"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert subset["addresses"][0]["targetRef"]["name"] == pods[0]["metadata"]["name"]
    # The Deployment counts the ready pod.
    eventually(lambda: api.get(f"{DEPLOYS.format(ns=ns)}/web").json.get("status", {}).get("readyReplicas") == 1)


def test_a_job_runs_its_completions_with_its_parallelism(api: Http) -> None:
    ns = "ctl-job"
    api.post(f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work"},
        "spec": {"completions": 3, "parallelism": 2, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "w", "image": "busybox", "command": ["true"]}],
        }}},
    })
    done: set[str] = set()
    for _ in range(3):
        active = eventually(lambda: [p for p in items(api, PODS.format(ns=ns)) if p["metadata"]["name"] not in done and p["status"].get("phase") == "Pending"])
        assert len(active) <= 2  # never more than parallelism at once
        pod = active[0]
        name = pod["metadata"]["name"]
        api.patch(f"{PODS.format(ns=ns)}/{name}/status", {"status": {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "w", "ready": False, "restartCount": 0, "image": "busybox", "imageID": "",
                                   "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        }})
        done.add(name)
    job = eventually(lambda: (j := api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/work").json) and any(
        c["type"] == "Complete" and c["status"] == "True" for c in (j.get("status") or {}).get("conditions") or []) and j)
    assert job["status"]["succeeded"] == 3


def _register_node(api: Http, name: str, cpu: str, memory: str, labels: dict[str, str] | None = None) -> None:
    """What a node agent does when it joins: create its Node, then report its status."""
    api.post("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}})
    node = api.get(f"/api/v1/nodes/{name}").json
    node["status"] = {
        "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
    }
    assert api.put(f"/api/v1/nodes/{name}/status", node).status == 200


def test_pods_wait_for_a_node_then_get_bound_where_they_fit(api: Http) -> None:
    ns = "ctl-sched"
    big = deployment("big", 1)
    big["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "3", "memory": "1Gi"}}
    small = deployment("small", 2)
    small["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    api.post(DEPLOYS.format(ns=ns), big)
    api.post(DEPLOYS.format(ns=ns), small)

    def scheduled_condition(prefix: str) -> Any:
        for pod in items(api, PODS.format(ns=ns)):
            if pod["metadata"]["name"].startswith(prefix):
                for cond in (pod.get("status") or {}).get("conditions") or []:
                    if cond["type"] == "PodScheduled" and cond["status"] == "False":
                        return cond
        return None

    # No nodes at all: upstream's words, on the pod and as an event.
    cond = eventually(lambda: scheduled_condition("big-"))
    assert cond["reason"] == "Unschedulable" and cond["message"] == "no nodes available to schedule pods"
    eventually(lambda: [e for e in items(api, f"/api/v1/namespaces/{ns}/events") if e["reason"] == "FailedScheduling"])

    # A node joins: pods that fit are bound to it; the one that does not fit says why.
    _register_node(api, "node-a", cpu="2", memory="8Gi", labels={"disk": "ssd"})
    bound = eventually(lambda: (p := [x for x in items(api, PODS.format(ns=ns)) if x["metadata"]["name"].startswith("small-") and x["spec"].get("nodeName")]) and len(p) == 2 and p)
    assert {p["spec"]["nodeName"] for p in bound} == {"node-a"}
    # The Scheduled event is written right after the binding: wait for it, not just the binding.
    expected = f"Successfully assigned {ns}/{bound[0]['metadata']['name']} to node-a"
    eventually(lambda: any(e["reason"] == "Scheduled" and e["message"] == expected for e in items(api, f"/api/v1/namespaces/{ns}/events")))
    cond = eventually(lambda: (c := scheduled_condition("big-")) and "Insufficient cpu" in c["message"] and c)
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
