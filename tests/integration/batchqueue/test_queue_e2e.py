"""Batch queues end to end on a real server and agent: the scheduling-policy mix
(FIFO, Priority, ShortestJobFirst), gang admission, and a queued Workflow."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshwork.cli.queue import rows
from support.node import Node, running_node, wait_for

pytestmark = pytest.mark.integration

KUEUE = "/apis/kueue.x-k8s.io/v1beta1"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/default/workflows"
# The fixed mix: (name, declared seconds, workload priority), arriving in this order.
MIX = [("a", 8, 1), ("b", 3, 5), ("c", 5, 2), ("d", 1, 1), ("e", 6, 9), ("f", 2, 3)]
EXPECTED = {"FIFO": "abcdef", "Priority": "ebfcad", "ShortestJobFirst": "dfbcea"}
SCALE = 0.1  # each job really runs for a tenth of its declared duration


def cluster_queue(name: str, quota: dict[str, int], policy: str = "FIFO", hold: bool = False,
                  strategy: str = "StrictFIFO") -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"namespaceSelector": {}, "queueingStrategy": strategy, "resourceGroups": [{
        "coveredResources": list(quota), "flavors": [{"name": "default-flavor", "resources": [
            {"name": r, "nominalQuota": q} for r, q in quota.items()]}]}]}  # fmt: skip
    if hold:
        spec["stopPolicy"] = "Hold"
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue",
            "metadata": {"name": name, "annotations": {"meshwork.io/queueing-policy": policy}}, "spec": spec}  # fmt: skip


def local_queue(name: str, cq: str) -> dict[str, Any]:
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"clusterQueue": cq}}  # fmt: skip


def job(name: str, queue: str, script: str, *, parallelism: int = 1, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": queue, **(labels or {})},
                         "annotations": annotations or {}},
            "spec": {"parallelism": parallelism, "completions": parallelism, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "command": [sys.executable, "-c", script]}]}}}}  # fmt: skip


def complete(node: Node, name: str) -> bool:
    st = (node.get(f"{JOBS}/{name}") or {}).get("status") or {}
    return any(c["type"] == "Complete" and c["status"] == "True" for c in st.get("conditions") or ())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("queue")) as n:
        yield n


def test_policies_admit_the_mix_in_their_order_and_sjf_waits_less(node: Node, tmp_path: Path) -> None:
    for value in sorted({p for _, _, p in MIX}):
        node.apply(f"{KUEUE}/workloadpriorityclasses", {"apiVersion": "kueue.x-k8s.io/v1beta1",
                   "kind": "WorkloadPriorityClass", "metadata": {"name": f"p{value}"}, "value": value})  # fmt: skip
    for policy in EXPECTED:
        cq = f"cq-{policy.lower()}"
        node.apply(f"{KUEUE}/clusterqueues", cluster_queue(cq, {"pods": 1}, policy, hold=True))
        node.apply(f"{KUEUE}/namespaces/default/localqueues", local_queue(f"lq-{policy.lower()}", cq))
        log = tmp_path / f"{policy}.log"
        for name, seconds, priority in MIX:
            script = (f"import time; open({str(log)!r}, 'a').write({name!r} + ' %.3f\\n' % time.time()); "
                      f"time.sleep({seconds * SCALE})")  # fmt: skip
            node.apply(JOBS, job(f"{policy.lower()}-{name}", f"lq-{policy.lower()}", script,
                                 labels={"kueue.x-k8s.io/priority-class": f"p{priority}"},
                                 annotations={"meshwork.io/expected-duration": f"{seconds}s"}))  # fmt: skip

    # Held: every job waits, suspended, listed in its queue's admission order.
    def listed() -> list[tuple[str, ...]] | None:
        cqs = node.get(f"{KUEUE}/clusterqueues")["items"]  # type: ignore[index]
        if sum((c.get("status") or {}).get("pendingWorkloads", 0) for c in cqs) != 3 * len(MIX):
            return None
        jobs = [("Job", j) for j in node.get(JOBS)["items"]]  # type: ignore[index]
        return rows(jobs, node.get(f"{KUEUE}/namespaces/default/localqueues")["items"], cqs, 0.0)  # type: ignore[index]

    table = wait_for(listed, 30, "every job to be listed as pending")
    for policy, order in EXPECTED.items():
        mine = [r for r in table if r[4] == f"cq-{policy.lower()}"]
        assert [r[5] for r in mine] == ["Pending"] * len(MIX)
        assert "".join(r[2][-1] for r in mine) == order, policy  # rows come in position order
        assert [r[6] for r in mine] == [str(i + 1) for i in range(len(MIX))]
    assert not node.pods()  # nothing runs while the queues hold

    for policy in EXPECTED:
        reply = node.server.client().patch(f"{KUEUE}/clusterqueues/cq-{policy.lower()}", {"spec": {"stopPolicy": "None"}})
        assert reply.status == 200, reply.body
    names = [f"{p.lower()}-{n}" for p in EXPECTED for n, _, _ in MIX]
    wait_for(lambda: all(complete(node, n) for n in names), 120, "every job to complete")

    declared = {name: seconds for name, seconds, _ in MIX}
    means: dict[str, tuple[float, float]] = {}
    for policy, order in EXPECTED.items():
        lines = [line.split() for line in (tmp_path / f"{policy}.log").read_text().splitlines()]
        assert "".join(n for n, _ in lines) == order, policy  # one slot: the run order is the admission order
        # waiting time in declared seconds (the model) and as measured from the first start (scaled)
        model = [sum(declared[m] for m in order[:i]) for i in range(len(order))]
        start = float(lines[0][1])
        measured = [float(t) - start for _, t in lines]
        means[policy] = (sum(model) / len(model), sum(measured) / len(measured))
    print(f"\nmean waiting time (declared s, measured s at x{SCALE}): "
          + ", ".join(f"{p}: {m:.2f} / {s:.2f}" for p, (m, s) in means.items()))  # fmt: skip
    assert means["ShortestJobFirst"][0] < means["FIFO"][0]
    assert means["ShortestJobFirst"][0] == pytest.approx(38 / 6) and means["FIFO"][0] == pytest.approx(75 / 6)


def test_gang_is_admitted_whole_or_not_at_all(node: Node, tmp_path: Path) -> None:
    node.apply(f"{KUEUE}/clusterqueues", cluster_queue("cq-gang", {"pods": 3}, strategy="BestEffortFIFO"))
    node.apply(f"{KUEUE}/namespaces/default/localqueues", local_queue("lq-gang", "cq-gang"))
    # BestEffortFIFO: the big gang, first in line, does not block the small one behind it
    node.apply(JOBS, job("gang-big", "lq-gang", "pass", parallelism=4))  # 4 pods never fit in 3
    node.apply(JOBS, job("gang-small", "lq-gang", "import time; time.sleep(0.5)", parallelism=3))
    wait_for(lambda: complete(node, "gang-small"), 60, "the 3-pod gang to complete")
    small = node.pods(selector="job-name=gang-small")
    assert len(small) == 3
    big = node.get(f"{JOBS}/gang-big")
    assert big is not None and big["spec"]["suspend"] is True
    assert "meshwork.io/admitted-by" not in (big["metadata"].get("annotations") or {})
    assert node.pods(selector="job-name=gang-big") == []


def test_queued_workflow_starts_only_when_admitted(node: Node) -> None:
    node.apply(f"{KUEUE}/clusterqueues", cluster_queue("cq-wf", {"pods": 1}, hold=True))
    node.apply(f"{KUEUE}/namespaces/default/localqueues", local_queue("lq-wf", "cq-wf"))
    node.apply(WORKFLOWS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "queued", "labels": {"kueue.x-k8s.io/queue-name": "lq-wf"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {
            "image": "python", "command": [sys.executable, "-c", "print('hi')"]}}]}})  # fmt: skip
    wait_for(lambda: (node.get(f"{KUEUE}/clusterqueues/cq-wf") or {}).get("status", {}).get("pendingWorkloads") == 1,
             30, "the workflow to wait in its queue")  # fmt: skip
    assert not (node.get(f"{WORKFLOWS}/queued") or {}).get("status", {}).get("nodes")
    assert node.pods(selector="workflows.argoproj.io/workflow=queued") == []
    reply = node.server.client().patch(f"{KUEUE}/clusterqueues/cq-wf", {"spec": {"stopPolicy": "None"}})
    assert reply.status == 200, reply.body
    wf = wait_for(lambda: (w := node.get(f"{WORKFLOWS}/queued")) and (w.get("status") or {}).get("phase")
                  in ("Succeeded", "Failed", "Error") and w, 60, "the workflow to finish")  # fmt: skip
    assert wf["status"]["phase"] == "Succeeded"
    assert wf["metadata"]["annotations"]["meshwork.io/admitted-by"] == "cq-wf"
