"""Argo Workflows end to end: the conformance examples on a real server and agent,
and a server killed with SIGKILL in the middle of a DAG."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.node import Node, running_node, wait_for
from support.server import ServerProcess

pytestmark = pytest.mark.integration

CONFORMANCE = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "argo-workflows" / "examples"
WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/default/workflows"
FINISHED = ("Succeeded", "Failed", "Error")


def submit(node: Node, body: dict[str, Any]) -> str:
    return str(node.apply(WORKFLOWS, body)["metadata"]["name"])


def finished(node: Node, name: str, timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        wf = node.get(f"{WORKFLOWS}/{name}")
        st = (wf or {}).get("status") or {}
        return wf if st.get("phase") in FINISHED and st.get("finishedAt") else None

    return wait_for(check, timeout, f"workflow {name} to finish")


def by_display(wf: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for n in wf["status"]["nodes"].values():
        out.setdefault(n["displayName"], []).append(n)
    return out


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((CONFORMANCE / name).read_text()))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("wf")) as n:
        yield n


def test_hello_world_prints_and_succeeds(node: Node) -> None:
    wf = finished(node, submit(node, example("hello-world.yaml")))
    assert wf["status"]["phase"] == "Succeeded"
    (pod,) = [n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]
    assert pod["outputs"]["result"] == "hello world"
    reply = node.http.get(f"/api/v1/namespaces/default/pods/{pod['id']}/log")
    assert reply.status == 200 and b"hello world" in reply.body


def test_steps_run_group_after_group(node: Node) -> None:
    wf = finished(node, submit(node, example("steps.yaml")))
    assert wf["status"]["phase"] == "Succeeded"
    nodes = by_display(wf)
    first = nodes["hello1"][0]
    for later in ("hello2a", "hello2b"):
        assert nodes[later][0]["outputs"]["result"] == later
        assert nodes[later][0]["startedAt"] >= first["finishedAt"]
    name = wf["metadata"]["name"]
    assert {n["name"] for n in wf["status"]["nodes"].values()} >= {name, f"{name}[0]", f"{name}[0].hello1",
                                                                   f"{name}[1].hello2a", f"{name}[1].hello2b"}


def test_dag_diamond_orders_tasks_by_their_dependencies(node: Node) -> None:
    wf = finished(node, submit(node, example("dag-diamond.yaml")))
    assert wf["status"]["phase"] == "Succeeded"
    n = {k: v[0] for k, v in by_display(wf).items()}
    assert n["B"]["startedAt"] >= n["A"]["finishedAt"] and n["C"]["startedAt"] >= n["A"]["finishedAt"]
    assert n["D"]["startedAt"] >= max(n["B"]["finishedAt"], n["C"]["finishedAt"])
    assert [n[t]["outputs"]["result"] for t in "ABCD"] == list("ABCD")


def test_coinflip_runs_exactly_the_side_that_came_up(node: Node) -> None:
    wf = finished(node, submit(node, example("coinflip.yaml")))
    assert wf["status"]["phase"] == "Succeeded"
    n = {k: v[0] for k, v in by_display(wf).items()}
    side = n["flip-coin"]["outputs"]["result"]
    other = "tails" if side == "heads" else "heads"
    assert side in ("heads", "tails")
    assert n[side]["phase"] == "Succeeded" and n[side]["outputs"]["result"] == f"it was {side}"
    assert n[other]["phase"] == "Skipped"


def test_retry_container_ends_succeeded_after_failed_attempts(node: Node) -> None:
    """The example fails each try with probability 2/3 and allows 10 retries: it ends Succeeded on
    the first good try, or (about 1 run in 90) Failed after exactly 11 failed tries."""
    wf = finished(node, submit(node, example("retry-container.yaml")))
    pods = [n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]
    attempts = sorted(pods, key=lambda n: int(n["name"].rsplit("(", 1)[1].rstrip(")")))  # (0), (1) ... (10)
    assert all(a["phase"] == "Failed" for a in attempts[:-1])
    if wf["status"]["phase"] == "Succeeded":
        assert attempts[-1]["phase"] == "Succeeded" and len(attempts) <= 11
    else:
        assert wf["status"]["phase"] == "Failed" and len(attempts) == 11 and attempts[-1]["phase"] == "Failed"


def test_retry_succeeds_on_the_second_try(node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "second-try-"},
            "spec": {"entrypoint": "flaky", "templates": [{
                "name": "flaky", "retryStrategy": {"limit": "3", "backoff": {"duration": "1", "factor": "2"}},
                "container": {"image": "busybox", "command": ["sh", "-c"],
                              "args": [f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 3; fi"]}}]}}  # fmt: skip
    wf = finished(node, submit(node, body))
    assert wf["status"]["phase"] == "Succeeded"
    attempts = {n["displayName"]: n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"}
    name = wf["metadata"]["name"]
    assert set(attempts) == {f"{name}(0)", f"{name}(1)"}
    assert attempts[f"{name}(0)"]["message"] == "Error (exit code 3)"
    assert attempts[f"{name}(1)"]["outputs"]["result"] == "ok"
    assert attempts[f"{name}(1)"]["startedAt"] > attempts[f"{name}(0)"]["finishedAt"]  # the 1s backoff


def test_exit_handler_runs_with_the_workflow_status(node: Node) -> None:
    wf = finished(node, submit(node, example("exit-handlers.yaml")))
    assert wf["status"]["phase"] == "Failed"
    n = {k: v[0] for k, v in by_display(wf).items()}
    assert n["cry"]["phase"] == "Succeeded" and n["cry"]["outputs"]["result"] == "boohoo!"
    assert n["celebrate"]["phase"] == "Skipped"
    assert " Failed " in n["notify"]["outputs"]["result"]


def test_output_parameter_passes_a_file_between_steps(node: Node) -> None:
    wf = finished(node, submit(node, example("output-parameter.yaml")))
    assert wf["status"]["phase"] == "Succeeded"
    n = {k: v[0] for k, v in by_display(wf).items()}
    assert n["generate-parameter"]["outputs"]["parameters"] == [{"name": "hello-param", "value": "hello world"}]
    assert n["consume-parameter"]["outputs"]["result"] == "hello world"


def test_artifact_passes_between_steps(node: Node) -> None:
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "artifact-"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [
                    [{"name": "generate", "template": "make"}],
                    [{"name": "consume", "template": "show", "arguments": {"artifacts": [
                        {"name": "message", "from": "{{steps.generate.outputs.artifacts.hello-art}}"}]}}]]},
                {"name": "make", "container": {"image": "busybox", "command": ["sh", "-c"],
                                               "args": ["echo -n passed along > art.txt"]},
                 "outputs": {"artifacts": [{"name": "hello-art", "path": "art.txt"}]}},
                {"name": "show", "inputs": {"artifacts": [{"name": "message", "path": "in/message"}]},
                 "container": {"image": "busybox", "command": ["cat", "in/message"]}}]}}  # fmt: skip
    wf = finished(node, submit(node, body))
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert by_display(wf)["consume"][0]["outputs"]["result"] == "passed along"


def test_parallelism_limit_never_runs_more_than_two(node: Node) -> None:
    body = example("parallelism-limit.yaml")
    body["spec"]["templates"][1]["container"]["command"] = ["sh", "-c", "sleep 0.5"]
    name = submit(node, body)
    most = 0

    def done() -> dict[str, Any] | None:
        nonlocal most
        pods = node.pods(selector=f"workflows.argoproj.io/workflow={name}")
        most = max(most, sum(1 for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running", None)))
        wf = node.get(f"{WORKFLOWS}/{name}")
        st = (wf or {}).get("status") or {}
        return wf if st.get("phase") in FINISHED and st.get("finishedAt") else None

    wf = wait_for(done, 120, f"workflow {name} to finish", interval=0.05)
    assert wf["status"]["phase"] == "Succeeded"
    assert len([n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]) == 10
    assert 1 <= most <= 2


def test_active_deadline_of_a_step_fails_it(node: Node) -> None:
    body = example("timeouts-step.yaml")
    body["spec"]["templates"][0]["activeDeadlineSeconds"] = 2
    wf = finished(node, submit(node, body))
    assert wf["status"]["phase"] == "Failed"
    (pod,) = [n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]
    assert "deadline" in pod["message"]


def _layered_dag(out: Path, layers: int = 4, width: int = 5) -> dict[str, Any]:
    """``layers`` x ``width`` tasks; each depends on every task of the layer before and
    appends its own name to ``out`` after a short sleep."""
    tasks = []
    for layer in range(layers):
        for i in range(width):
            task: dict[str, Any] = {"name": f"t{layer}-{i}", "template": "append",
                                    "arguments": {"parameters": [{"name": "id", "value": f"t{layer}-{i}"}]}}  # fmt: skip
            if layer:
                task["depends"] = " && ".join(f"t{layer - 1}-{j}" for j in range(width))
            tasks.append(task)
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "twenty"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "dag": {"tasks": tasks}},
                {"name": "append", "inputs": {"parameters": [{"name": "id"}]},
                 "container": {"image": "busybox", "command": ["sh", "-c"],
                               "args": [f"sleep 0.4; echo {{{{inputs.parameters.id}}}} >> {out}"]}}]}}  # fmt: skip


def test_kill_9_of_the_server_mid_dag_never_reruns_a_finished_node(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "ran.txt"
    server = ServerProcess(data)
    try:
        server.start("--agent", "--node-name", "node-1", "--no-ingress-gateway")
        node = Node(server)
        node.apply(WORKFLOWS, _layered_dag(out))
        wait_for(lambda: out.exists() and len(out.read_text().split()) >= 7, 60, "a third of the DAG to run")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # the server only: its pods live on
        server.proc.wait(10)
        lines_at_kill = len(out.read_text().split())
        server.start("--agent", "--node-name", "node-1", "--no-ingress-gateway")
        node = Node(server)
        wf = finished(node, "twenty", timeout=120)
        lines = out.read_text().split()
        assert wf["status"]["phase"] == "Succeeded", wf["status"].get("message")
        twice = sorted({x for x in lines if lines.count(x) > 1})
        assert len(lines) == 20 and not twice, f"ran twice: {twice} ({lines_at_kill} lines at the kill)"
        assert lines_at_kill < 20  # the kill did land mid-run
    finally:
        with contextlib.suppress(Exception):
            server.stop(timeout=60)
        server.kill()


def test_cli_submit_watch_prints_the_tree_and_exits_with_the_outcome(node: Node) -> None:
    env = {**os.environ, "MESHWORK_HOME": str(node.server.data_dir)}
    ok = subprocess.run([sys.executable, "-m", "meshwork", "submit", str(CONFORMANCE / "dag-diamond.yaml"), "--watch"],
                        capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "Succeeded" in ok.stdout and "├─B" in ok.stdout and "└─D" in ok.stdout
    failed = subprocess.run([sys.executable, "-m", "meshwork", "submit", str(CONFORMANCE / "exit-handlers.yaml"),
                             "-w"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert failed.returncode == 1
    assert "cry" in failed.stdout
    listing = subprocess.run([sys.executable, "-m", "meshwork", "wf", "list"], capture_output=True, text=True,
                             env=env, timeout=60)  # fmt: skip
    assert listing.returncode == 0 and "dag-diamond-" in listing.stdout


def _cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_HOME": str(node.server.data_dir)}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_cli_retry_reruns_only_the_failed_step(node: Node, tmp_path: Path) -> None:
    ran, marker = tmp_path / "ran", tmp_path / "fixed"
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "retry-me-"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [[{"name": "first", "template": "first"}], [{"name": "second", "template": "second"}]]},
                {"name": "first", "container": {"image": "busybox", "command": ["sh", "-c", f"echo first >> {ran}"]}},
                {"name": "second", "container": {"image": "busybox", "command": ["sh", "-c", f"test -e {marker}"]}}]}}  # fmt: skip
    name = submit(node, body)
    assert finished(node, name)["status"]["phase"] == "Failed"
    marker.touch()
    out = _cli(node, "wf", "retry", name)
    assert out.returncode == 0, out.stderr
    wf = wait_for(lambda: (w := node.get(f"{WORKFLOWS}/{name}")) and (w["status"].get("phase") == "Succeeded") and w,
                  60, "the retried workflow to succeed")  # fmt: skip
    assert ran.read_text().split() == ["first"]  # the step that had succeeded did not run again
    assert by_display(wf)["second"][0]["phase"] == "Succeeded"


def test_cli_resume_finishes_a_suspend_step(node: Node) -> None:
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "approve-"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [[{"name": "approve", "template": "wait"}], [{"name": "go", "template": "go"}]]},
                {"name": "wait", "suspend": {}},
                {"name": "go", "container": {"image": "busybox", "command": ["echo", "went"]}}]}}  # fmt: skip
    name = submit(node, body)
    wait_for(lambda: any(n["type"] == "Suspend" and n["phase"] == "Running"
                         for n in ((node.get(f"{WORKFLOWS}/{name}") or {}).get("status") or {}).get("nodes", {}).values()),
             30, "the suspend step to wait")  # fmt: skip
    out = _cli(node, "wf", "resume", name)
    assert out.returncode == 0, out.stderr
    wf = finished(node, name)
    assert wf["status"]["phase"] == "Succeeded"
    assert by_display(wf)["go"][0]["outputs"]["result"] == "went"
