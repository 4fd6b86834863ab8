"""`meshwork logs`, `exec` and `top` against real pods, through the API server and the agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.node import Node, container_status, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

TALKER = 'echo "ip=$(POD_IP)"; i=0; while true; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; sleep 0.1; done'


def meshwork(node: Node, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_logs_exec_and_top_reach_the_pod_through_its_agent(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
           "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", TALKER]}]}}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces/default/pods", pod)
        wait_for(lambda: (p := node.pod("talker")) and is_ready(p), 30, "talker running")
        wait_for(lambda: "out 5" in meshwork(node, "logs", "talker").stdout, 30, "five lines logged")

        ip = (node.pod("talker") or {})["status"]["podIP"]
        # $(POD_IP) in a command expands to the pod's own IP, a variable the node gives every container.
        assert meshwork(node, "logs", "talker").stdout.splitlines()[0] == f"ip={ip}"

        tail = meshwork(node, "logs", "talker", "--tail", "2")
        assert tail.returncode == 0, tail.stderr
        lines = tail.stdout.splitlines()
        assert len(lines) == 2 and {lines[0].split()[0], lines[1].split()[0]} == {"out", "err"}

        stamped = meshwork(node, "logs", "talker", "--tail", "1", "--timestamps").stdout.split(" ", 1)
        assert stamped[0].startswith("20") and stamped[0].endswith("Z")

        # -f keeps printing lines written after it started.
        follow = subprocess.Popen([sys.executable, "-m", "meshwork", "logs", "-f", "talker", "--tail", "0"],
                                  env={**os.environ, "MESHWORK_SERVER": node.server.url,
                                       "MESHWORK_TOKEN": node.server.token},
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert follow.stdout is not None
            first = follow.stdout.readline()
            assert first.startswith(("out ", "err "))
        finally:
            follow.kill()
            follow.wait(10)

        ran = meshwork(node, "exec", "talker", "--", "sh", "-c", 'echo "$HOSTNAME $POD_IP"; echo oops >&2; exit 7')
        assert ran.returncode == 7
        assert ran.stdout.strip() == f"talker {ip}"
        assert ran.stderr.strip() == "oops"

        top = meshwork(node, "top", "pods")
        assert top.returncode == 0, top.stderr
        header, row = top.stdout.splitlines()[:2]
        assert header.split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
        assert row.split()[0] == "talker" and row.split()[2].endswith("Mi")
        nodes = meshwork(node, "top", "nodes")
        assert nodes.stdout.splitlines()[1].split()[0] == "node-1"

        missing = meshwork(node, "logs", "nosuch")
        assert missing.returncode == 1 and 'pods "nosuch" not found' in missing.stderr


def test_logs_previous_shows_the_instance_before_a_restart(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "once"},
           "spec": {"containers": [{"name": "app", "image": "busybox",
                                    "command": ["sh", "-c", 'echo "run at $(date +%s%N)"; sleep 0.3; exit 1']}]}}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces/default/pods", pod)
        wait_for(lambda: (p := node.pod("once")) and container_status(p, "app").get("restartCount", 0) >= 1,
                 30, "a restart")  # fmt: skip
        previous = meshwork(node, "logs", "once", "--previous")
        assert previous.returncode == 0, previous.stderr
        assert previous.stdout.startswith("run at ")
