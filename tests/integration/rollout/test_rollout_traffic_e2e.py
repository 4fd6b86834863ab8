"""Rollouts under real traffic: a meshed client's requests follow the canary's weights and the
blue-green switch, and a bad canary is caught by the ``meshwork`` analysis provider and rolled back.

One real server with its node agent runs every workload of this file in one
``istio-injection=enabled`` namespace. Each Rollout runs the helloworld example
(``istio/examples-helloworld-v1`` -> ``-v2``: every answer names its version;
``ERROR_RATE`` makes a share of them 500). A ``client`` pod's app loops GETs
through its sidecar (``meshwork exec client -- python``, HTTP_PROXY set by the
agent) and appends one JSON row per request to a file: (start, status, body).
Meanwhile the test follows the Rollout's status and notes when each weight
took effect, so each step's requests can be counted by version.

A change of weight reaches the client's sidecar a moment after the status
says so (the mesh config is pushed): rows within ``SETTLE_S`` of a change are
not attributed to either side of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.node import Node, is_ready, own_range_node, wait_for

pytestmark = pytest.mark.integration

NS = "progressive"
RO = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts"
SETTLE_S = 1.0  # a weight change is in every sidecar well within this (the push is sub-second)
V1, V2 = "istio/examples-helloworld-v1", "istio/examples-helloworld-v2"

# The client app: GETs spec["url"] through its sidecar until spec["stop"] exists, appending
# [start (monotonic, the machine's clock), status, body] per request to spec["out"].
CLIENT = (
    "import json, os, sys, time, urllib.error, urllib.request\n"
    "spec = json.loads(sys.argv[1])\n"
    "out = open(spec['out'], 'a', buffering=1)\n"
    "while not os.path.exists(spec['stop']):\n"
    "    t0 = time.monotonic()\n"
    "    try:\n"
    "        with urllib.request.urlopen(spec['url'], timeout=10) as r:\n"
    "            row = [t0, r.status, r.read().decode()]\n"
    "    except urllib.error.HTTPError as e:\n"
    "        row = [t0, e.code, e.read().decode()]\n"
    "    except Exception as e:\n"
    "        row = [t0, 0, repr(e)]\n"
    "    out.write(json.dumps(row) + '\\n')\n"
    "    time.sleep(0.005)\n"
)

Row = tuple[float, int, str]


class Cluster:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node, self.tmp = node, tmp

    def meshwork(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def ok(self, *args: str) -> str:
        ran = self.meshwork(*args)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return ran.stdout

    def create(self, obj: dict[str, Any]) -> None:
        api = obj["apiVersion"]
        plural = {"Service": "services", "Rollout": "rollouts", "AnalysisTemplate": "analysistemplates",
                  "VirtualService": "virtualservices", "DestinationRule": "destinationrules"}[obj["kind"]]  # fmt: skip
        prefix = "/api/v1" if api == "v1" else f"/apis/{api}"
        self.node.apply(f"{prefix}/namespaces/{NS}/{plural}", obj)

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.node.get(f"{RO}/{name}") or {}).get("status") or {})

    def get(self, path: str) -> dict[str, Any]:
        return self.node.get(path) or {}

    @contextlib.contextmanager
    def traffic(self, url: str, name: str) -> Iterator[Load]:
        """The client loops GETs of ``url`` until the block ends."""
        out, stop = self.tmp / f"{name}.rows", self.tmp / f"{name}.stop"
        spec = json.dumps({"url": url, "out": str(out), "stop": str(stop)})
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        proc = subprocess.Popen([sys.executable, "-m", "meshwork", "exec", "client", "-n", NS, "--",
                                 sys.executable, "-c", CLIENT, spec], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        load = Load(out)
        try:
            wait_for(lambda: len(load.rows()) >= 20, 30, "the client's first requests")
            yield load
        finally:
            stop.write_text("stop\n")
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Load:
    out: Path

    def rows(self) -> list[Row]:
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [tuple(json.loads(line)) for line in lines if line.endswith("]")]  # type: ignore[misc]


@dataclass
class Follower:
    """Notes (monotonic time, canary weight, phase) each time the Rollout's status changes."""

    cluster: Cluster
    name: str
    seen: list[tuple[float, int | None, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        http = self.cluster.node.server.client()  # its own connection: the test's is not shared across threads
        try:
            self._follow(http)
        finally:
            http.close()

    def _follow(self, http: Any) -> None:
        while not self.stop.is_set():
            reply = http.get(f"{RO}/{self.name}")
            st = dict((reply.json.get("status") if reply.status == 200 else None) or {})
            weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
            now = (weight, str(st.get("phase")))
            if not self.seen or self.seen[-1][1:] != now:
                self.seen.append((time.monotonic(), *now))
            time.sleep(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[Follower]:
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self.stop.set()
            t.join(timeout=5)

    def spans(self) -> list[tuple[int | None, float, float]]:
        """(weight, from, to) for each period a weight held, ``to`` = inf for the last."""
        out: list[tuple[int | None, float, float]] = []
        for i, (t, weight, _) in enumerate(self.seen):
            end = self.seen[i + 1][0] if i + 1 < len(self.seen) else float("inf")
            if out and out[-1][0] == weight:
                out[-1] = (weight, out[-1][1], end)
            else:
                out.append((weight, t, end))
        return out


def hello(name: str, image: str, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "hello", "image": image, "ports": [{"containerPort": 5000, "name": "http"}],
        "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
    }  # fmt: skip
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}


def service(name: str, app: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}  # fmt: skip


def istio_routing(name: str) -> list[dict[str, Any]]:
    """The Service, VirtualService (route ``primary``: stable 100, canary 0) and DestinationRule subsets."""
    return [
        service(name, name),
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
         "spec": {"hosts": [name], "http": [{"name": "primary", "route": [
             {"destination": {"host": name, "subset": "stable"}, "weight": 100},
             {"destination": {"host": name, "subset": "canary"}, "weight": 0}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": name},
         "spec": {"host": name, "subsets": [{"name": "stable", "labels": {"app": name}},
                                            {"name": "canary", "labels": {"app": name}}]}},
    ]  # fmt: skip


def success_rate_template(name: str, window: str) -> dict[str, Any]:
    """The canary pods' success rate (their sidecars' destination-side metrics) must stay >= 95 %."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name},
            "spec": {"args": [{"name": "service"}, {"name": "canary-hash"}],
                     "metrics": [{"name": "success-rate", "successCondition": "result[0] >= 0.95", "failureLimit": 0,
                                  "provider": {"meshwork": {
                                      "service": "{{args.service}}", "metric": "success-rate", "window": window,
                                      "podSelector": {"rollouts-pod-template-hash": "{{args.canary-hash}}"}}}}]}}  # fmt: skip


def analysis_step(template: str, svc: str) -> dict[str, Any]:
    return {"analysis": {"templates": [{"templateName": template}], "args": [
        {"name": "service", "value": svc},
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]}}  # fmt: skip


def canary_rollout(name: str, steps: list[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": template,
                     "strategy": {"canary": {
                         "scaleDownDelaySeconds": 2, "abortScaleDownDelaySeconds": 2,
                         "trafficRouting": {"istio": {
                             "virtualService": {"name": name, "routes": ["primary"]},
                             "destinationRule": {"name": name, "canarySubsetName": "canary",
                                                 "stableSubsetName": "stable"}}},
                         "steps": steps}}}}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("progressive")
    home = tmp / "home"
    home.mkdir()
    with own_range_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        node.apply(f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "client", "namespace": NS},
                   "spec": {"containers": [{"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip
        wait_for(lambda: (p := node.pod("client", NS)) is not None and is_ready(p), 60, "the client pod")
        yield Cluster(node, tmp)


def versions(rows: list[Row], start: float, end: float) -> tuple[int, int]:
    """(v1 answers, v2 answers) among the rows that started in [start + SETTLE_S, end)."""
    picked = [r for r in rows if start + SETTLE_S <= r[0] < end]
    return sum("version: v1" in r[2] for r in picked), sum("version: v2" in r[2] for r in picked)


def wait_phase(c: Cluster, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (s := c.status(name)).get("phase") == phase and s, timeout, f"{name} to be {phase}")


def test_canary_weights_follow_the_steps_with_no_failed_request(cluster: Cluster) -> None:
    name = "hello"
    for obj in [*istio_routing(name), success_rate_template("hello-success", "8s")]:
        cluster.create(obj)
    steps = [{"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 50},
             analysis_step("hello-success", name)]  # fmt: skip
    cluster.create(canary_rollout(name, steps, hello(name, V1)))
    first = wait_phase(cluster, name, "Healthy")
    with cluster.traffic(f"http://{name}:5000/hello", name) as load, Follower(cluster, name).running() as follow:
        cluster.ok("rollout", "set", "image", name, f"hello={V2}", "-n", NS)
        done = wait_for(lambda: (s := cluster.status(name)).get("phase") == "Healthy"
                        and s.get("stableRS") != first["stableRS"] and s, 90, "the canary to be promoted")  # fmt: skip
        # Keep the load on past the promotion until the old pods are gone.
        wait_for(lambda: not [p for p in cluster.node.pods(NS, f"app={name}")
                              if p["metadata"]["labels"].get("rollouts-pod-template-hash") == first["stableRS"]],
                 30, "the stable pods to go")  # fmt: skip
        full_from = time.monotonic()
        wait_for(lambda: sum(r[0] > full_from + SETTLE_S for r in load.rows()) >= 100, 30, "requests at 100 %")
    rows = load.rows()
    failed = [r for r in rows if r[1] != 200]
    assert not failed, f"{len(failed)} of {len(rows)} requests failed, e.g. {failed[:3]}"
    spans = follow.spans()
    held = [w for w, _, _ in spans]
    assert held[:4] == [0, 20, 50, 0], spans  # back to 0 once the canary is the stable side
    assert done["canary"]["weights"]["stable"]["podTemplateHash"] == done["stableRS"]
    shares = {}
    for weight, start, end in spans[1:3]:
        v1, v2 = versions(rows, start, end)
        assert v1 + v2 >= 100, (weight, v1, v2)
        shares[weight] = 100 * v2 / (v1 + v2)
    v1, v2 = versions(rows, spans[3][1], float("inf"))
    shares[100] = 100 * v2 / (v1 + v2)
    for weight, share in shares.items():
        assert abs(share - weight) <= 5, shares
    events = cluster.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == name}
    assert {"TrafficWeightUpdated", "RolloutStepCompleted", "RolloutCompleted"} <= reasons
    print(f"canary shares by step: {shares}, {len(rows)} requests, 0 failed")


def test_a_canary_failing_its_success_rate_is_rolled_back(cluster: Cluster) -> None:
    name = "flaky"
    for obj in [*istio_routing(name), success_rate_template("flaky-success", "5s")]:
        cluster.create(obj)
    steps = [{"setWeight": 20}, analysis_step("flaky-success", name), {"setWeight": 100}]
    cluster.create(canary_rollout(name, steps, hello(name, V1)))
    first = wait_phase(cluster, name, "Healthy")
    with cluster.traffic(f"http://{name}:5000/hello", name) as load, Follower(cluster, name).running() as follow:
        bad = cluster.get(f"{RO}/{name}")
        bad["spec"]["template"] = hello(name, V2, env={"ERROR_RATE": "20"})
        assert cluster.node.http.put(f"{RO}/{name}", bad).status == 200
        degraded = wait_phase(cluster, name, "Degraded", 60)
        back = time.monotonic()
        wait_for(lambda: sum(r[0] > back + SETTLE_S for r in load.rows()) >= 100, 30, "requests after the abort")
    rows = load.rows()
    assert degraded["stableRS"] == first["stableRS"]
    assert degraded["canary"]["weights"]["canary"]["weight"] == 0
    assert "success-rate" in degraded["message"] and degraded["message"].startswith("RolloutAborted"), degraded
    run = degraded["canary"]["currentStepAnalysisRunStatus"]
    assert run["status"] == "Failed", run
    measured = cluster.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/analysisruns/{run['name']}")
    value = json.loads(measured["status"]["metricResults"][0]["measurements"][0]["value"])
    assert value[0] < 0.95, value
    # Back on stable: after the abort only v1 answers, all of them 200.
    after = [r for r in rows if r[0] >= back + SETTLE_S]
    assert after and all(r[1] == 200 and "version: v1" in r[2] for r in after), after[:5]
    errors = [r for r in rows if r[1] != 200]
    assert errors and all(r[1] == 500 and "version v2" in r[2] for r in errors), errors[:5]
    v2 = sum("version: v2" in r[2] or "version v2" in r[2] for r in rows)
    print(f"bad canary: {len(errors)} of {len(rows)} client requests failed ({v2} reached the canary), "
          f"success rate measured {value[0]:.3f}; weights held: {[w for w, _, _ in follow.spans()]}")
    events = cluster.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == name}
    assert {"AnalysisRunFailed", "RolloutAborted"} <= reasons
    # The canary is scaled down after abortScaleDownDelaySeconds.
    wait_for(lambda: not [p for p in cluster.node.pods(NS, f"app={name}")
                          if p["metadata"]["labels"].get("rollouts-pod-template-hash") == degraded["currentPodHash"]],
             30, "the canary pods to go")  # fmt: skip


def test_bluegreen_preview_then_a_lossless_switch(cluster: Cluster) -> None:
    name = "bg"
    cluster.create(service("bg-active", name))
    cluster.create(service("bg-preview", name))
    cluster.create({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": hello(name, V1),
                             "strategy": {"blueGreen": {"activeService": "bg-active", "previewService": "bg-preview",
                                                        "autoPromotionEnabled": False, "scaleDownDelaySeconds": 3}}}})  # fmt: skip
    first = wait_phase(cluster, name, "Healthy")
    with cluster.traffic("http://bg-active:5000/hello", "bg") as load:
        cluster.ok("rollout", "set", "image", name, f"hello={V2}", "-n", NS)
        paused = wait_phase(cluster, name, "Paused")
        green = paused["currentPodHash"]
        # Before promotion: preview answers v2, active still v1.
        preview_from = time.monotonic()
        with cluster.traffic("http://bg-preview:5000/hello", "bg-preview") as preview:
            wait_for(lambda: sum(r[0] > preview_from + SETTLE_S for r in preview.rows()) >= 20, 30, "preview answers")
        seen = [r for r in preview.rows() if r[0] > preview_from + SETTLE_S]
        assert seen and all(r[1] == 200 and "version: v2" in r[2] for r in seen), seen[:5]
        before = [r for r in load.rows() if r[0] > preview_from]
        assert before and all("version: v1" in r[2] for r in before)
        cluster.ok("rollout", "promote", name, "-n", NS)
        switched = wait_for(lambda: cluster.get(f"/api/v1/namespaces/{NS}/services/bg-active")["spec"]["selector"]
                            .get("rollouts-pod-template-hash") == green and time.monotonic(), 30, "the active switch")  # fmt: skip
        # The old pods linger for scaleDownDelaySeconds, then go, while the client keeps asking.
        wait_for(lambda: not [p for p in cluster.node.pods(NS, f"app={name}")
                              if p["metadata"]["labels"].get("rollouts-pod-template-hash") == first["stableRS"]],
                 30, "the blue pods to go")  # fmt: skip
        gone = time.monotonic()
        wait_for(lambda: sum(r[0] > gone for r in load.rows()) >= 50, 30, "requests after the blue pods went")
    rows = load.rows()
    failed = [r for r in rows if r[1] != 200]
    assert not failed, f"{len(failed)} of {len(rows)} requests failed, e.g. {failed[:3]}"
    after = [r for r in rows if r[0] >= switched + SETTLE_S]
    assert after and all("version: v2" in r[2] for r in after), [r for r in after if "v2" not in r[2]][:5]
    rss = cluster.get(f"/apis/apps/v1/namespaces/{NS}/replicasets").get("items") or []
    assert {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in rss if rs["metadata"]["name"].startswith("bg-")} \
        == {f"bg-{first['stableRS']}": 0, f"bg-{green}": 2}
    print(f"blue-green: {len(rows)} requests to the active service across the switch, 0 failed")


REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    """A real Prometheus (Debian's package) scraping every meshed pod's sidecar at ``:15020/stats/prometheus``,
    found through a file the test keeps up to date with the namespace's pods (``file_sd_configs``)."""

    url: str
    targets: Path

    def set_targets(self, ips: list[str]) -> None:
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [f"{ip}:15020" for ip in sorted(ips)], "labels": {"job": "sidecars"}}]))
        tmp.replace(self.targets)  # Prometheus must never read half a file

    def query(self, promql: str) -> list[dict[str, Any]]:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=10) as r:
            return list(json.loads(r.read())["data"]["result"])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        installed = subprocess.run(["sh", str(REPO / "scripts" / "need-deb"), "prometheus"], capture_output=True,
                                   text=True, timeout=300)  # fmt: skip
        if installed.returncode != 0 or shutil.which("prometheus") is None:
            pytest.skip(f"Debian's prometheus package could not be installed: {installed.stderr.strip()[-300:]}")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "- job_name: sidecars\n"
        "  metrics_path: /stats/prometheus\n"
        f"  file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]\n"
    )
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)  # fmt: skip
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}", targets)

        def up() -> bool:
            try:
                prom.query("up")
                return True
            except OSError:
                return proc.poll() is not None  # exited: stop waiting, the assert below says why

        wait_for(up, 30, "prometheus to answer")
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_provider_queries_a_real_prometheus_scraping_the_sidecars(cluster: Cluster,
                                                                               prometheus: Prometheus) -> None:  # fmt: skip
    name = "prom"
    success = (f'sum(rate(istio_requests_total{{reporter="destination",destination_service_name="{name}",'
               f'response_code!~"5.."}}[5s])) / sum(rate(istio_requests_total{{reporter="destination",'
               f'destination_service_name="{name}"}}[5s]))')  # fmt: skip
    template = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "prom-success"},
                "spec": {"args": [{"name": "address"}],
                         "metrics": [{"name": "success-rate", "interval": "3s", "count": 2, "failureLimit": 0,
                                      "successCondition": "result[0] >= 0.95",
                                      "provider": {"prometheus": {"address": "{{args.address}}", "query": success}}}]}}  # fmt: skip
    for obj in [*istio_routing(name), template]:
        cluster.create(obj)
    steps = [{"setWeight": 50}, {"pause": {}},
             {"analysis": {"templates": [{"templateName": "prom-success"}],
                           "args": [{"name": "address", "value": prometheus.url}]}}]  # fmt: skip
    cluster.create(canary_rollout(name, steps, hello(name, V1)))
    first = wait_phase(cluster, name, "Healthy")
    with cluster.traffic(f"http://{name}:5000/hello", name):
        cluster.ok("rollout", "set", "image", name, f"hello={V2}", "-n", NS)
        wait_phase(cluster, name, "Paused")
        # Scrape every sidecar of the service's pods (stable and canary) and the client's.
        ips = [p["status"]["podIP"] for p in cluster.node.pods(NS) if p["status"].get("podIP")]
        prometheus.set_targets(ips)
        wait_for(lambda: len([r for r in prometheus.query('up{job="sidecars"} == 1')]) == len(ips), 30,
                 "prometheus to scrape every sidecar")  # fmt: skip
        wait_for(lambda: prometheus.query(success), 30, "a success rate in prometheus")
        cluster.ok("rollout", "promote", name, "-n", NS)
        done = wait_for(lambda: (s := cluster.status(name)).get("phase") == "Healthy"
                        and s.get("stableRS") != first["stableRS"] and s, 60, "promotion after the analysis")  # fmt: skip
    run = done["canary"]["currentStepAnalysisRunStatus"]
    assert run["status"] == "Successful", run
    measured = cluster.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/analysisruns/{run['name']}")
    [result] = measured["status"]["metricResults"]
    values = [json.loads(m["value"]) for m in result["measurements"]]
    assert result["count"] == 2 and all(len(v) == 1 and v[0] == 1.0 for v in values), result
