"""Nodes, server side, end to end: a real server; the test plays the node agents through the API.

Pod CIDRs are handed out at registration; a node whose heartbeat stops goes
Unknown and is tainted, its pods are evicted and replaced on a Ready node;
a DaemonSet puts one pod on each eligible node and rolls them on a template
change. The server runs with short --node-monitor-grace-period and
--pod-eviction-timeout so that this takes seconds, not minutes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from support.server import Http, ServerProcess, running_server

pytestmark = pytest.mark.integration

NODES = "/api/v1/nodes"
PODS = "/api/v1/namespaces/{ns}/pods"
DEPLOYS = "/apis/apps/v1/namespaces/{ns}/deployments"
DAEMONSETS = "/apis/apps/v1/namespaces/{ns}/daemonsets"
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    flags = ("--node-monitor-grace-period", "5s", "--pod-eviction-timeout", "1")
    with running_server(tmp_path_factory.mktemp("nodes"), *flags) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_status() -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": stamp(), "lastTransitionTime": stamp()}]}  # fmt: skip


class Agents:
    """Heartbeats for the nodes the test registers, from one thread, stopped at teardown.

    Each beat is what the agent sends every 10 s: a merge patch of
    ``/status`` carrying the whole conditions list.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.http = server.client()
        self.beating: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def register(self, name: str, labels: dict[str, str] | None = None, **spec: Any) -> Any:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
                "spec": spec, "status": {
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}, **ready_status()}}  # fmt: skip
        with self.lock:
            reply = self.http.post(NODES, body)
            if reply.status == 201:
                self.beating.add(name)
        return reply

    def silence(self, name: str) -> None:
        with self.lock:
            self.beating.discard(name)

    def resume(self, name: str) -> None:
        with self.lock:
            self.beating.add(name)
            self.http.patch(f"{NODES}/{name}/status", {"status": ready_status()})

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            with self.lock:
                for name in sorted(self.beating):
                    self.http.patch(f"{NODES}/{name}/status", {"status": ready_status()})

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.http.close()


@pytest.fixture
def agents(server: ServerProcess) -> Iterator[Agents]:
    beats = Agents(server)
    yield beats
    beats.close()


def items(api: Http, path: str) -> list[dict[str, Any]]:
    return list(api.get(path).json["items"])


def run_pods(api: Http, ns: str) -> None:
    """What the agents would do: bound pods start and turn Ready; terminating ones stop and are confirmed."""
    for pod in items(api, PODS.format(ns=ns)):
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        if not node:
            continue
        if pod["metadata"].get("deletionTimestamp"):
            api.delete(f"{PODS.format(ns=ns)}/{name}", {"gracePeriodSeconds": 0})
        elif (pod.get("status") or {}).get("phase") != "Running":
            pod["status"] = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp()}]}
            api.put(f"{PODS.format(ns=ns)}/{name}/status", pod)


def node(api: Http, name: str) -> dict[str, Any]:
    return dict(api.get(f"{NODES}/{name}").json)


def test_registered_nodes_get_distinct_pod_cidrs_and_a_freed_one_is_reused(api: Http, agents: Agents) -> None:
    first = agents.register("cidr-a").json
    second = agents.register("cidr-b").json
    assert first["spec"]["podCIDR"] != second["spec"]["podCIDR"]
    assert first["spec"]["podCIDRs"] == [first["spec"]["podCIDR"]]
    assert first["status"]["conditions"][0]["type"] == "Ready"  # registered with its status
    clash = agents.register("cidr-c", podCIDR=second["spec"]["podCIDR"])
    assert clash.status == 422 and "overlaps" in clash.json["message"]
    outside = agents.register("cidr-d", podCIDR="10.1.0.0/16")
    assert outside.status == 422 and "127.0.0.0/8" in outside.json["message"]
    agents.silence("cidr-a")
    assert api.delete(f"{NODES}/cidr-a").status == 200
    assert agents.register("cidr-e").json["spec"]["podCIDR"] == first["spec"]["podCIDR"]
    changed = node(api, "cidr-b")
    changed["spec"]["podCIDR"] = changed["spec"]["podCIDRs"][0] = "127.90.0.0/16"
    assert api.put(f"{NODES}/cidr-b", changed).status == 422
    for name in ("cidr-b", "cidr-e"):
        agents.silence(name)
        api.delete(f"{NODES}/{name}")


def deployment(name: str, node_selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"nodeSelector": node_selector,
                     "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}}},
    }  # fmt: skip


def test_a_silent_node_goes_unknown_its_pod_is_replaced_elsewhere_and_it_recovers(api: Http, agents: Agents) -> None:
    ns = "lifecycle"
    agents.register("life-a", {"pool": "life"})
    api.post(DEPLOYS.format(ns=ns), deployment("web", {"pool": "life"}))
    first = eventually(lambda: [p for p in items(api, PODS.format(ns=ns)) if p["spec"].get("nodeName")])
    assert [p["spec"]["nodeName"] for p in first] == ["life-a"]
    run_pods(api, ns)
    eventually(lambda: any(c["type"] == "Ready" and c["status"] == "True" for p in items(api, PODS.format(ns=ns))
                           for c in (p.get("status") or {}).get("conditions") or []))  # fmt: skip

    agents.register("life-b", {"pool": "life"})
    agents.silence("life-a")

    def unknown() -> Any:
        n = node(api, "life-a")
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        taints = {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
        return ready["status"] == "Unknown" and {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")} <= taints and n

    silent = eventually(unknown)
    ready = next(c for c in silent["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert all(t.get("timeAdded") for t in silent["spec"]["taints"])

    # The pod on the silent node is evicted (Terminating: no agent confirms it) and replaced on life-b.
    old = first[0]["metadata"]["name"]

    def replaced() -> Any:
        pods = {p["metadata"]["name"]: p for p in items(api, PODS.format(ns=ns))}
        evicted = pods.get(old, {}).get("metadata", {}).get("deletionTimestamp")
        fresh = [p for n, p in pods.items() if n != old and p["spec"].get("nodeName") == "life-b"]
        return evicted and fresh and (pods[old], fresh)

    evicted, fresh = eventually(replaced)
    assert any(c["type"] == "DisruptionTarget" for c in evicted["status"]["conditions"])
    assert next(c for c in evicted["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    events = items(api, f"/api/v1/namespaces/{ns}/events")
    assert any(e["reason"] == "TaintManagerEviction" and e["message"] == f"Marking for deletion Pod {ns}/{old}" for e in events)
    assert any(e["reason"] == "NodeNotReady" and e["involvedObject"]["kind"] == "Node"
               for e in items(api, "/api/v1/namespaces/default/events"))  # fmt: skip

    # The agent comes back: the taints go.
    agents.resume("life-a")
    eventually(lambda: not node(api, "life-a")["spec"].get("taints"))
    # The node is deleted for good: its terminating pod is collected at once (grace 0).
    agents.silence("life-a")
    api.delete(f"{NODES}/life-a")
    eventually(lambda: api.get(f"{PODS.format(ns=ns)}/{old}").status == 404)
    assert api.get(f"{PODS.format(ns=ns)}/{fresh[0]['metadata']['name']}").status == 200
    agents.silence("life-b")
    api.delete(f"{NODES}/life-b")


def daemonset(name: str, env: str, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {"containers": [{"name": "d", "image": "busybox", "command": ["sleep", "3600"],
                                            "env": [{"name": "V", "value": env}]}]}  # fmt: skip
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": spec}}}  # fmt: skip


def test_a_daemonset_runs_one_pod_per_node_narrows_by_selector_and_rolls(api: Http, agents: Agents) -> None:
    ns = "daemons"
    names = ["ds-1", "ds-2", "ds-3"]
    for i, name in enumerate(names):
        agents.register(name, {"tier": "edge" if i < 2 else "core", "fleet": "ds"})
    api.post(DAEMONSETS.format(ns=ns), daemonset("everywhere", "a", {"fleet": "ds"}))
    api.post(DAEMONSETS.format(ns=ns), daemonset("edge-only", "a", {"fleet": "ds", "tier": "edge"}))

    def bound(ds: str) -> list[str]:
        return sorted(p["spec"]["nodeName"] for p in items(api, PODS.format(ns=ns))
                      if p["metadata"]["name"].startswith(ds + "-") and p["spec"].get("nodeName")
                      and not p["metadata"].get("deletionTimestamp"))  # fmt: skip

    eventually(lambda: bound("everywhere") == names)
    eventually(lambda: bound("edge-only") == ["ds-1", "ds-2"])
    run_pods(api, ns)

    def status(ds: str) -> dict[str, Any]:
        return dict(api.get(f"{DAEMONSETS.format(ns=ns)}/{ds}").json.get("status") or {})

    eventually(lambda: status("everywhere").get("numberReady") == 3 and status("everywhere").get("numberAvailable") == 3)
    assert {k: status("everywhere")[k] for k in ("desiredNumberScheduled", "currentNumberScheduled",
                                                 "updatedNumberScheduled", "numberMisscheduled")} == {
        "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberMisscheduled": 0}  # fmt: skip
    events = items(api, f"/api/v1/namespaces/{ns}/events")
    assert sum(e["reason"] == "SuccessfulCreate" and e["involvedObject"]["name"] == "everywhere" for e in events) == 3

    # A template change rolls the pods, one node at a time, while the test plays the agents.
    hashes_before = {p["metadata"]["labels"]["controller-revision-hash"] for p in items(api, PODS.format(ns=ns))
                     if p["metadata"]["name"].startswith("everywhere-")}  # fmt: skip
    current = api.get(f"{DAEMONSETS.format(ns=ns)}/everywhere").json
    current["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "b"
    assert api.put(f"{DAEMONSETS.format(ns=ns)}/everywhere", current).status == 200

    def rolled() -> bool:
        run_pods(api, ns)
        s = status("everywhere")
        pods = [p for p in items(api, PODS.format(ns=ns)) if p["metadata"]["name"].startswith("everywhere-")]
        hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in pods}
        return (len(pods) == 3 and not (hashes & hashes_before) and s.get("updatedNumberScheduled") == 3
                and s.get("numberAvailable") == 3 and s.get("observedGeneration") == 2)  # fmt: skip

    eventually(rolled, timeout=60)
    assert bound("everywhere") == names
    assert any(e["reason"] == "SuccessfulDelete" and e["involvedObject"]["name"] == "everywhere"
               for e in items(api, f"/api/v1/namespaces/{ns}/events"))  # fmt: skip
    for name in names:
        agents.silence(name)


def test_two_servers_on_one_machine_give_their_first_nodes_different_ranges(
    agents: Agents, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two meshworks on one machine (two CI jobs): no pod listens yet when both pick a range, so only
    the claim (``control.hostnet.claim``) keeps the second off the first's."""
    mine = agents.register("claim-a").json["spec"]["podCIDR"]
    with running_server(tmp_path_factory.mktemp("other")) as other:
        http = other.client()
        try:
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "claim-b"}, "spec": {}}
            theirs = http.post(NODES, body).json["spec"]["podCIDR"]
        finally:
            http.close()
    assert theirs != mine
    agents.silence("claim-a")
