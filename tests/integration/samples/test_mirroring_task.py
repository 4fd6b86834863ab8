"""Istio's "Mirroring" task, with the task page's files unmodified.

``workloads.yaml`` runs httpbin v1 and v2 as the page does, with an explicit
``gunicorn --access-logfile - -b 0.0.0.0:80 httpbin:app`` command, and the
page's ``sleep`` client, in a namespace labelled for injection. Both httpbin
pods bind 0.0.0.0:80 on one machine: the agent's bind shim puts each on its
own address, gunicorn comes from the ``samples`` extra beside meshwork (the
agent adds its Python's directory to PATH), and port 80 needs the root that
these tests run as. Then, as the page says: with ``route-all-v1.yaml`` every
request reaches v1 and v2's log stays quiet; with ``mirror-v2.yaml`` v2's
access log shows a copy of every request while the client's answers are v1's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASK = CONFORMANCE / "istio.io" / "traffic-management" / "mirroring"
NS = "mirroring"
PODS = 3  # httpbin-v1, httpbin-v2, sleep
N = 10  # requests per step: each carries its own id, so every log line is accounted for

# Runs in the sleep pod: GET http://httpbin:8000/headers?id=<id> for each id through the pod's
# sidecar (http_proxy), and print each answer's status and the Host header httpbin saw.
FETCH = r"""
import json, sys, urllib.error, urllib.request
out = {}
for rid in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"http://httpbin:8000/headers?id={rid}", timeout=30) as resp:
            out[rid] = [resp.status, json.loads(resp.read())["headers"].get("Host")]
    except urllib.error.HTTPError as err:
        out[rid] = [err.code, None]
    except OSError as err:
        out[rid] = [0, str(err)]
print(json.dumps(out))
"""


@dataclass
class Task:
    node: Node
    client: str
    v1: str
    v2: str

    def meshwork(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    def apply(self, name: str) -> None:
        ran = self.meshwork("apply", "-n", NS, "-f", str(TASK / name))
        assert ran.returncode == 0, (ran.stdout, ran.stderr)

    def fetch(self, ids: list[str]) -> dict[str, list[Any]]:
        ran = self.meshwork("exec", self.client, "-n", NS, "--", sys.executable, "-c", FETCH, *ids)
        assert ran.returncode == 0, ran.stderr
        got: dict[str, list[Any]] = json.loads(ran.stdout)
        return got

    def seen(self, pod: str, ids: list[str]) -> dict[str, int]:
        """How often each id appears in the pod's httpbin log (gunicorn's access log)."""
        ran = self.meshwork("logs", pod, "-n", NS, "-c", "httpbin")
        assert ran.returncode == 0, ran.stderr
        lines = [line for line in ran.stdout.splitlines() if '"GET /headers?id=' in line]
        return {rid: sum(f"id={rid} HTTP/1.1" in line for line in lines) for rid in ids}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Task]:
    for name in ("workloads.yaml", "route-all-v1.yaml", "mirror-v2.yaml"):
        if not (TASK / name).is_file():
            pytest.skip(absent_reason(TASK / name))
    if importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("httpbin") is None:
        pytest.skip("gunicorn and httpbin are not installed: pip install 'meshwork[samples]'")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: without the bind shim both httpbin pods bind 0.0.0.0:80 and collide")
    if os.geteuid() != 0:
        pytest.skip("the task's httpbin listens on port 80, which needs root (tests run as root here and in CI)")
    home = tmp_path_factory.mktemp("mirroring")
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        t = Task(node, "", "", "")
        t.apply("workloads.yaml")

        def meshed() -> list[dict[str, Any]] | None:
            pods = [p for p in node.pods(NS) if is_ready(p) and p["spec"].get("initContainers")]
            return pods if len(pods) == PODS else None

        pods = wait_for(meshed, 120, f"{PODS} ready pods (httpbin v1, v2, sleep), each with its sidecar")
        by = {(p["metadata"]["labels"].get("app"), p["metadata"]["labels"].get("version")): p["metadata"]["name"]
              for p in pods}  # fmt: skip
        t.client, t.v1, t.v2 = by[("sleep", None)], by[("httpbin", "v1")], by[("httpbin", "v2")]
        # gunicorn answers a moment after its process starts: wait for both versions' first lines.
        def answering() -> dict[str, int] | None:
            warm = [f"warm-{os.urandom(4).hex()}" for _ in range(4)]
            if not all(st == 200 for st, _ in t.fetch(warm).values()):
                return None
            counts = {pod: sum(t.seen(pod, warm).values()) for pod in (t.v1, t.v2)}
            return counts if all(counts.values()) else None

        wait_for(answering, 90, "httpbin v1 and v2 answering through the client's sidecar", interval=0.5)
        yield t


def test_both_httpbins_bind_0000_80_and_each_lands_on_its_own_address(task: Task) -> None:
    for pod in (task.v1, task.v2):
        got = task.node.pod(pod, NS)
        assert got is not None and is_ready(got)
        status = next(s for s in got["status"]["containerStatuses"] if s["name"] == "httpbin")
        assert status["restartCount"] == 0, status  # no collision, no crash loop
    events = (task.node.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])
    assert not [e for e in events if e["reason"] in ("WildcardBind", "PortConflict")], events


def test_all_traffic_to_v1_then_v2_gets_a_mirror_of_every_request(task: Task) -> None:
    # "Creating a default routing policy": every request goes to v1; v2 sees none of them.
    task.apply("route-all-v1.yaml")
    plain = [f"v1only-{i}" for i in range(N)]
    answers = task.fetch(plain)
    assert all(st == 200 and host == "httpbin:8000" for st, host in answers.values()), answers
    wait_for(lambda: task.seen(task.v1, plain) == dict.fromkeys(plain, 1), 30, "each request in v1's access log")
    assert task.seen(task.v2, plain) == dict.fromkeys(plain, 0)

    # "Mirroring traffic to v2": the client's answers are v1's (a mirror never answers it; its
    # copy's Host says httpbin-shadow), and v2's access log shows a copy of every request.
    task.apply("mirror-v2.yaml")
    mirrored = [f"mirror-{i}" for i in range(N)]
    answers = task.fetch(mirrored)
    assert all(st == 200 and host == "httpbin:8000" for st, host in answers.values()), answers
    wait_for(lambda: task.seen(task.v1, mirrored) == dict.fromkeys(mirrored, 1), 30, "each request in v1's log")
    # The copies are sent alongside, not before the answer: wait until each is in v2's log.
    wait_for(lambda: task.seen(task.v2, mirrored) == dict.fromkeys(mirrored, 1), 30,
             "a mirrored copy of each request in v2's access log")  # fmt: skip
    # Every request reached v1 exactly once and v2 exactly once: none of the client's went to v2.
    assert task.seen(task.v2, plain) == dict.fromkeys(plain, 0)
