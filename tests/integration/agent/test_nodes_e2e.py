"""Several agents: each node gets its own pod range, and a node that goes silent loses its pods to the others."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.node import http_container, is_ready, running_node, wait_for
from support.server import pod_processes, sweep_processes

pytestmark = [pytest.mark.integration, pytest.mark.fault]

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _start_agent(url: str, token_file: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "meshwork", "agent", "--server", url, "--token-file", str(token_file),
         "--name", "node-2", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=open(data_dir / "agent.log", "ab"), start_new_session=True,
    )  # fmt: skip


def _ready_condition(node: dict[str, Any]) -> str:
    return next((c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"), "")


def test_a_silent_node_goes_unknown_and_its_pods_are_replaced_on_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHWORK_NODE_STATUS_UPDATE_FREQUENCY", "1")
    other = tmp_path / "node-2"
    home = tmp_path / "home"
    home.mkdir()
    agent: subprocess.Popen[bytes] | None = None
    try:
        with running_node(home, "--node-monitor-grace-period", "4s", "--pod-eviction-timeout", "2s") as node:
            agent = _start_agent(node.server.url, home / "token", other)
            both = wait_for(lambda: len(items := (node.get("/api/v1/nodes") or {}).get("items", [])) == 2
                            and all(_ready_condition(n) == "True" for n in items) and items, 30, "two Ready nodes")  # fmt: skip
            cidrs = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"]) for n in both}
            assert not cidrs["node-1"].overlaps(cidrs["node-2"])

            dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [http_container()]}}}}  # fmt: skip
            node.apply(DEPLOYMENTS, dep)

            def spread() -> list[dict[str, Any]] | None:
                pods = [p for p in node.pods(selector="app=web") if is_ready(p)]
                return pods if len(pods) == 4 and {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"} else None

            pods = wait_for(spread, 60, "4 ready pods over both nodes")
            for p in pods:  # each pod's IP is in its own node's range
                assert ipaddress.ip_address(p["status"]["podIP"]) in cidrs[p["spec"]["nodeName"]]

            agent.send_signal(signal.SIGKILL)  # node-2 goes silent; its pods keep running, unseen
            agent.wait(10)
            wait_for(lambda: _ready_condition(node.get("/api/v1/nodes/node-2") or {"status": {"conditions": []}})
                     == "Unknown", 30, "node-2 Unknown")  # fmt: skip

            def replaced() -> list[dict[str, Any]] | None:
                live = [p for p in node.pods(selector="app=web") if not p["metadata"].get("deletionTimestamp")]
                ready = [p for p in live if is_ready(p) and p["spec"]["nodeName"] == "node-1"]
                return ready if len(ready) == 4 and len(live) == 4 else None

            wait_for(replaced, 60, "4 ready pods, all on node-1")

            # node-2 comes back: it finds its pods deleted, stops their processes and lets them go.
            agent = _start_agent(node.server.url, home / "token", other)
            wait_for(lambda: all(p["spec"]["nodeName"] == "node-1" for p in node.pods(selector="app=web")), 60,
                     "the evicted pods gone once node-2 confirmed")  # fmt: skip
            wait_for(lambda: not pod_processes(other), 30, "node-2's processes stopped")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(30)
        sweep_processes(other)


