"""The orchestrator end to end: a real server, its node agent, and pods as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.node import (
    Node,
    app_pids,
    container_status,
    http_container,
    is_ready,
    running_node,
    shim_pid,
    wait_for,
)
from support.server import ServerProcess, pod_processes, sweep_processes

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JOBS = "/apis/batch/v1/namespaces/default/jobs"


def deployment(
    name: str, replicas: int, container: dict[str, Any], **strategy: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
    }
    if strategy:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def ready_pods(node: Node, app: str, count: int) -> list[dict[str, Any]] | None:
    pods = [
        p for p in node.pods(selector=f"app={app}") if not p["metadata"].get("deletionTimestamp")
    ]
    ready = [p for p in pods if is_ready(p)]
    return ready if len(ready) == count and len(pods) == count else None


def fetch(ip: str, port: int = 8080, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=timeout) as resp:
        return resp.read().decode()


def test_a_deployment_of_three_runs_each_replica_on_its_own_pod_ip(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(DEPLOYMENTS, deployment("web", 3, http_container()))
        pods = wait_for(lambda: ready_pods(node, "web", 3), 60, "3 ready web pods")
        ips = {p["status"]["podIP"] for p in pods}
        assert len(ips) == 3, ips
        for p in pods:
            assert p["status"]["phase"] == "Running"
            assert p["spec"]["nodeName"] == "node-1"
            # The same containerPort on three IPs; each answers as itself.
            assert fetch(p["status"]["podIP"]) == p["metadata"]["name"]
        node_obj = node.get("/api/v1/nodes/node-1")
        assert node_obj is not None
        ready = [c for c in node_obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_kill_9_restarts_the_container_and_counts_it(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
                          "spec": {"containers": [{"name": "app", "image": "busybox",
                                                   "command": ["sleep", "3600"]}]}})  # fmt: skip
        pod = wait_for(
            lambda: (p := node.pod("sleeper")) and is_ready(p) and p, 30, "sleeper running"
        )
        shim = shim_pid(pod, "app")
        assert shim is not None
        apps = wait_for(lambda: app_pids(shim), 10, "the app process under its shim")
        os.kill(apps[0], signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            p = node.pod("sleeper")
            st = container_status(p, "app") if p else {}
            return p if st.get("restartCount") == 1 and st.get("state", {}).get("running") else None

        pod = wait_for(restarted, 30, "restartCount 1 and running again")
        last = container_status(pod, "app")["lastState"]["terminated"]
        assert last["exitCode"] == 137 and last["reason"] == "Error"
        assert shim_pid(pod, "app") != shim


@pytest.mark.slow
def test_a_container_that_always_fails_backs_off_with_growing_delays(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
                          "spec": {"containers": [{"name": "app", "image": "busybox",
                                                   "command": ["sh", "-c", "exit 1"]}]}})  # fmt: skip
        seen: list[tuple[int, str]] = []

        def backoff(message: str) -> dict[str, Any] | None:
            p = node.pod("crasher")
            st = container_status(p, "app") if p else {}
            waiting = st.get("state", {}).get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                seen.append((st["restartCount"], waiting.get("message", "")))
                if message in waiting.get("message", ""):
                    return st
            return None

        first = wait_for(lambda: backoff("back-off 10s"), 30, "CrashLoopBackOff with back-off 10s")
        second = wait_for(
            lambda: backoff("back-off 20s"), 40, "CrashLoopBackOff with back-off 20s", 0.25
        )
        assert second["restartCount"] > first["restartCount"]
        assert second["lastState"]["terminated"]["exitCode"] == 1
        events = node.get("/api/v1/namespaces/default/events") or {"items": []}
        assert any(
            e["reason"] == "BackOff" and e["involvedObject"]["name"] == "crasher"
            for e in events["items"]
        )


def test_a_job_of_five_completions_two_at_a_time_succeeds(tmp_path: Path) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "five"},
           "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "work", "image": "busybox", "command": ["sh", "-c", "sleep 0.2"]}]}}}}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply(JOBS, job)
        max_active = 0

        def complete() -> dict[str, Any] | None:
            nonlocal max_active
            j = node.get(f"{JOBS}/five") or {}
            max_active = max(max_active, j.get("status", {}).get("active", 0))
            conds = j.get("status", {}).get("conditions") or []
            return (
                j if any(c["type"] == "Complete" and c["status"] == "True" for c in conds) else None
            )

        j = wait_for(complete, 60, "the Job to complete")
        assert j["status"]["succeeded"] == 5
        assert 1 <= max_active <= 2
        pods = node.pods(selector="job-name=five")
        assert len(pods) == 5 and all(p["status"]["phase"] == "Succeeded" for p in pods)


@pytest.mark.slow
def test_a_job_that_always_fails_ends_with_backoff_limit_exceeded(tmp_path: Path) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
           "spec": {"backoffLimit": 1, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "work", "image": "busybox", "command": ["sh", "-c", "exit 3"]}]}}}}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply(JOBS, job)

        def failed() -> dict[str, Any] | None:
            j = node.get(f"{JOBS}/doomed") or {}
            conds = j.get("status", {}).get("conditions") or []
            return (
                j if any(c["type"] == "Failed" and c["status"] == "True" for c in conds) else None
            )

        j = wait_for(failed, 60, "the Job to fail")
        cond = next(c for c in j["status"]["conditions"] if c["type"] == "Failed")
        assert cond["reason"] == "BackoffLimitExceeded"
        assert j["status"]["failed"] == 2  # the first try and one retry
        pods = node.pods(selector="job-name=doomed")
        codes = {container_status(p, "work")["state"]["terminated"]["exitCode"] for p in pods}
        assert codes == {3}


@pytest.mark.parametrize("cgroups", ["on", "off"], ids=["cgroup", "watchdog"])
def test_a_pod_over_its_memory_limit_is_oom_killed(
    tmp_path: Path, cgroups: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "off": the agent keeps the limit with its RSS watchdog, as on a machine without cgroups.
    if cgroups == "on":
        from meshwork.agent.limits import Cgroups

        found = Cgroups.detect("meshwork-probe")
        if not found.enforces_memory:
            pytest.skip(f"this machine has no writable memory cgroup ({found.describe()}); the watchdog case covers it")
        for base in {found.memory_base, found.cpu_base} - {None}:
            with contextlib.suppress(OSError):
                base.rmdir()  # type: ignore[union-attr]
    monkeypatch.setenv("MESHWORK_CGROUPS", cgroups)
    hog = [sys.executable, "-c", "import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))\n    time.sleep(0.02)\n"]  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
                          "spec": {"restartPolicy": "Never", "containers": [{
                              "name": "hog", "image": "python", "command": hog,
                              "resources": {"limits": {"memory": "64Mi"}}}]}})  # fmt: skip

        def terminated() -> dict[str, Any] | None:
            p = node.pod("hog")
            st = container_status(p, "hog") if p else {}
            return st.get("state", {}).get("terminated")

        term = wait_for(terminated, 60, "the hog to be killed")
        assert term["reason"] == "OOMKilled", term
        assert term["exitCode"] == 137
        assert (node.pod("hog") or {})["status"]["phase"] == "Failed"
        def told() -> list[str]:
            events = (node.get("/api/v1/namespaces/default/events") or {}).get("items", [])
            return [e["message"] for e in events if e["reason"] == "LimitsNotEnforced"]

        if cgroups == "off":  # describe then says plainly who keeps the limit
            said = wait_for(told, 10, "the LimitsNotEnforced event")
            assert "RSS watchdog" in said[0], said
        else:
            assert not told(), told()


@pytest.mark.fault
def test_server_and_agent_killed_and_restarted_keep_every_pod_exactly_once(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(DEPLOYMENTS, deployment("web", 3, http_container()))
        pods = wait_for(lambda: ready_pods(node, "web", 3), 60, "3 ready web pods")
        before = pod_processes(tmp_path)
        assert len(before) == 3
        agent_pid = int((tmp_path / "agent.pid").read_text())
        assert node.server.proc is not None
        os.kill(agent_pid, signal.SIGKILL)
        os.killpg(node.server.proc.pid, signal.SIGKILL)
        node.server.proc.wait(10)
        assert pod_processes(tmp_path) == before  # the pods outlive both

        restarted = ServerProcess(tmp_path, port=node.server.port)
        try:
            restarted.start("--agent", "--node-name", "node-1", "--no-ingress-gateway")
            node2 = Node(restarted)
            # Re-adopted, not restarted: the same processes, and no duplicate.
            time.sleep(3)
            again = wait_for(
                lambda: ready_pods(node2, "web", 3), 60, "3 ready web pods after the restart"
            )
            assert pod_processes(tmp_path) == before
            assert {p["metadata"]["uid"] for p in again} == {p["metadata"]["uid"] for p in pods}
            assert all(container_status(p, "web")["restartCount"] == 0 for p in again)
            for p in again:
                assert fetch(p["status"]["podIP"]) == p["metadata"]["name"]
            assert restarted.stop(timeout=60) == 0
        finally:
            restarted.kill()
        assert pod_processes(tmp_path) == set()
        assert sweep_processes(tmp_path) == []


def test_a_rolling_update_drops_no_request_and_undo_returns_the_old_template(tmp_path: Path) -> None:
    import subprocess
    import threading
    import urllib.error

    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces/default/services", svc)
        container = http_container(env=[{"name": "VERSION", "value": "1"}])
        node.apply(DEPLOYMENTS, deployment("web", 3, container, maxUnavailable=0, maxSurge=1))
        wait_for(lambda: ready_pods(node, "web", 3), 60, "3 ready web pods")
        stop = threading.Event()
        results = {"ok": 0, "failed": 0}
        errors: list[str] = []

        def client() -> None:
            from support.server import Http

            api = Http(node.server.host, node.server.port, node.server.token)
            turn = 0
            while not stop.is_set():
                ep = api.get("/api/v1/namespaces/default/endpoints/web")
                ips = [a["ip"] for s in (ep.json.get("subsets") or []) for a in s.get("addresses") or []] if (
                    ep.status == 200) else []  # fmt: skip
                if not ips:
                    continue
                ip = ips[turn % len(ips)]
                turn += 1
                try:
                    fetch(ip, timeout=5)
                    results["ok"] += 1
                except (OSError, urllib.error.URLError) as exc:
                    results["failed"] += 1
                    errors.append(f"{ip}: {exc}")
            api.close()

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            patch = {"spec": {"template": {"spec": {"containers": [
                {**container, "env": [{"name": "VERSION", "value": "2"}]}]}}}}  # fmt: skip
            reply = node.http.patch(f"{DEPLOYMENTS}/web", patch)
            assert reply.status == 200, reply.body

            def rolled() -> bool:
                pods = ready_pods(node, "web", 3)
                return bool(pods) and all(
                    p["spec"]["containers"][0]["env"][0]["value"] == "2" for p in pods or [])  # fmt: skip

            wait_for(rolled, 120, "the rollout to version 2")
            time.sleep(1)
        finally:
            stop.set()
            thread.join(30)
        assert results["failed"] == 0, errors[:5]
        assert results["ok"] > 20, results

        env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
        undo = subprocess.run([sys.executable, "-m", "meshwork", "rollout", "undo", "deployment/web"],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert undo.returncode == 0, undo.stderr
        assert "rolled back" in undo.stdout
        dep = node.get(f"{DEPLOYMENTS}/web") or {}
        assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "1"}]

        def back() -> bool:
            pods = ready_pods(node, "web", 3)
            return bool(pods) and all(
                p["spec"]["containers"][0]["env"][0]["value"] == "1" for p in pods or [])  # fmt: skip

        wait_for(back, 120, "the rollout back to version 1")
