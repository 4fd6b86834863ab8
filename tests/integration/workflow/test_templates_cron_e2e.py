"""WorkflowTemplate references, CronWorkflow and `wf resubmit` / `queue list` on a real server and agent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from support.node import Node, running_node, wait_for

pytestmark = pytest.mark.integration

API = "/apis/argoproj.io/v1alpha1"
WORKFLOWS = f"{API}/namespaces/default/workflows"
FINISHED = ("Succeeded", "Failed", "Error")


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_HOME": str(node.server.data_dir)}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


def echo(text: str) -> dict[str, Any]:
    return {"image": "python", "command": [sys.executable, "-c", f"print({text!r})"]}


def finished(node: Node, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        wf = node.get(f"{WORKFLOWS}/{name}")
        return wf if ((wf or {}).get("status") or {}).get("phase") in FINISHED else None

    return wait_for(check, 90, f"workflow {name} to finish")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("wftmpl")) as n:
        yield n


def test_workflow_template_ref_and_template_ref_run(node: Node) -> None:
    node.apply(f"{API}/namespaces/default/workflowtemplates", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "greet"},
        "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "who", "value": "world"}]},
                 "templates": [{"name": "main", "steps": [[{"name": "say", "template": "say"}]]},
                               {"name": "say", "container": echo("hello {{workflow.parameters.who}}")}]}})  # fmt: skip
    node.apply(f"{API}/clusterworkflowtemplates", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ClusterWorkflowTemplate", "metadata": {"name": "common"},
        "spec": {"templates": [{"name": "ok", "container": echo("common ok")}]}})  # fmt: skip
    by_ref = node.apply(WORKFLOWS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "by-ref-"},
        "spec": {"workflowTemplateRef": {"name": "greet"},
                 "arguments": {"parameters": [{"name": "who", "value": "meshwork"}]}}})  # fmt: skip
    tasks = node.apply(WORKFLOWS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "tasks-"},
        "spec": {"entrypoint": "top", "templates": [{"name": "top", "dag": {"tasks": [
            {"name": "a", "templateRef": {"name": "greet", "template": "main"}},
            {"name": "b", "dependencies": ["a"], "templateRef": {"name": "common", "template": "ok", "clusterScope": True}},
        ]}}]}})  # fmt: skip
    missing = node.apply(WORKFLOWS, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "missing-"}, "spec": {"workflowTemplateRef": {"name": "nope"}}})  # fmt: skip
    wf = finished(node, by_ref["metadata"]["name"])
    assert wf["status"]["phase"] == "Succeeded"
    assert wf["status"]["storedWorkflowTemplateSpec"]["entrypoint"] == "main"
    pod = next(n for n in wf["status"]["nodes"].values() if n["type"] == "Pod")
    logs = node.http.get(f"/api/v1/namespaces/default/pods/{pod['id']}/log?container=main")
    assert "hello meshwork" in logs.body.decode()
    wf2 = finished(node, tasks["metadata"]["name"])
    assert wf2["status"]["phase"] == "Succeeded"
    assert sum(1 for n in wf2["status"]["nodes"].values() if n["type"] == "Pod") == 2
    bad = finished(node, missing["metadata"]["name"])
    assert bad["status"]["phase"] == "Error"
    assert 'workflowtemplates.argoproj.io "nope" not found' in bad["status"]["message"]

    # `submit --from` and `wf resubmit` make new workflows from the same spec
    out = cli(node, "submit", "--from", "workflowtemplate/greet")
    assert out.returncode == 0, out.stderr
    from_name = out.stdout.split()[0].split("/")[1]
    assert finished(node, from_name)["status"]["phase"] == "Succeeded"
    out = cli(node, "wf", "resubmit", by_ref["metadata"]["name"])
    assert out.returncode == 0, out.stderr
    again = out.stdout.split()[0].split("/")[1]
    wf3 = finished(node, again)
    assert wf3["status"]["phase"] == "Succeeded" and again != by_ref["metadata"]["name"]
    assert wf3["metadata"]["labels"]["workflows.argoproj.io/resubmitted-from-workflow"] == by_ref["metadata"]["name"]


def test_cron_workflow_submits_on_schedule_and_keeps_history(node: Node) -> None:
    node.apply(f"{API}/namespaces/default/cronworkflows", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "tick"},
        "spec": {"schedule": "@every 2s", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
                 "workflowSpec": {"entrypoint": "m", "templates": [{"name": "m", "container": echo("tick")}]}}})  # fmt: skip

    def counted() -> dict[str, Any] | None:
        cwf = node.get(f"{API}/namespaces/default/cronworkflows/tick") or {}
        return cwf if ((cwf.get("status") or {}).get("succeeded") or 0) >= 2 else None

    cwf = wait_for(counted, 60, "two scheduled workflows to succeed")
    node.http.patch(f"{API}/namespaces/default/cronworkflows/tick", {"spec": {"suspend": True}})
    assert cwf["status"]["lastScheduledTime"]

    def settled() -> list[dict[str, Any]] | None:
        items = [w for w in node.get(WORKFLOWS)["items"]  # type: ignore[index]
                 if (w["metadata"].get("labels") or {}).get("workflows.argoproj.io/cron-workflow") == "tick"]
        done = [w for w in items if (w.get("status") or {}).get("phase") == "Succeeded"]
        running = [w for w in items if (w.get("status") or {}).get("phase") not in FINISHED]
        return items if len(done) <= 1 and not running else None

    items = wait_for(settled, 30, "the history limit to leave one succeeded workflow")
    assert all(w["metadata"]["annotations"]["workflows.argoproj.io/scheduled-time"] for w in items)
    assert all(w["metadata"]["name"].startswith("tick-") for w in items)


def test_queue_list_shows_waiting_and_admitted_work(node: Node) -> None:
    kueue = "/apis/kueue.x-k8s.io/v1beta1"
    node.apply(f"{kueue}/clusterqueues", {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue",
        "metadata": {"name": "one", "annotations": {"meshwork.io/queueing-policy": "ShortestJobFirst"}},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["pods"], "flavors": [
            {"name": "default-flavor", "resources": [{"name": "pods", "nominalQuota": 1}]}]}]}})  # fmt: skip
    node.apply(f"{kueue}/namespaces/default/localqueues", {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
        "metadata": {"name": "main"}, "spec": {"clusterQueue": "one"}})  # fmt: skip
    for name, seconds in (("long", "1h"), ("short", "10s")):
        node.apply("/apis/batch/v1/namespaces/default/jobs", {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": "main"},
                         "annotations": {"meshwork.io/expected-duration": seconds}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "command": [sys.executable, "-c", "import time; time.sleep(30)"]}]}}}})  # fmt: skip

    def listed() -> str | None:
        out = cli(node, "queue", "list")
        return out.stdout if out.returncode == 0 and "Pending" in out.stdout and "Admitted" in out.stdout else None

    text = wait_for(listed, 30, "queue list to show one admitted and one pending job")
    lines = [line.split() for line in text.splitlines() if line.startswith("default")]
    assert [(r[2], r[5]) for r in lines] == [("short", "Pending"), ("long", "Admitted")] or \
        [(r[2], r[5]) for r in lines] == [("long", "Pending"), ("short", "Admitted")]
    assert any(line.startswith("one") and "ShortestJobFirst" in line and "pods 1/1" in line for line in text.splitlines())
    for name in ("long", "short"):
        node.http.delete(f"/apis/batch/v1/namespaces/default/jobs/{name}")
