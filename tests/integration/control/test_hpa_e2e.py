"""Autoscaling end to end: a real server and node agent, real pods, real load through the mesh.

* An HPA on ``requests_per_second`` (a Pods metric, read from the pods'
  sidecars) takes a meshed Deployment from 2 to 4 when a client's load
  doubles, as its policy allows, and back to 2 once the load falls and the
  scale-down stabilisation window has passed; every request of the client
  (a meshed pod's loop through its sidecar) succeeds throughout.
* An HPA on CPU utilisation (from the agents' process accounting) scales a
  Deployment, and a Rollout, whose pods burn a known share of a core.
* ``meshwork recommend`` sizes a container that burns a known share of a
  core within 20 % of that share.

The server runs with short HPA timings (sync every second, rates over 3 s),
set through its environment as upstream sets them with flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.node import Node, app_pids, is_ready, own_range_node, shim_pid, wait_for

pytestmark = pytest.mark.integration

NS = "scaling"
HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
DEPLOY = f"/apis/apps/v1/namespaces/{NS}/deployments"
HELLO = "istio/examples-helloworld-v1"
STABILIZATION_S = 5  # the scale-down window the rps HPA sets

# The client app: GETs spec["url"] at the rate (requests per second) written in spec["rate"],
# from 4 threads on a fixed schedule, until spec["stop"] exists; one JSON row per request:
# [start (the machine's monotonic clock), status, body or error].
CLIENT = (
    "import json, os, sys, threading, time, urllib.error, urllib.request\n"
    "spec = json.loads(sys.argv[1])\n"
    "out = open(spec['out'], 'a', buffering=1)\n"
    "lock = threading.Lock()\n"
    "def rate():\n"
    "    try:\n"
    "        return float(open(spec['rate']).read())\n"
    "    except (OSError, ValueError):\n"
    "        return 1.0\n"
    "def worker():\n"
    "    due = time.monotonic()\n"
    "    while not os.path.exists(spec['stop']):\n"
    "        due = max(due + 4 / rate(), time.monotonic() - 1)\n"
    "        time.sleep(max(0.0, due - time.monotonic()))\n"
    "        t0 = time.monotonic()\n"
    "        try:\n"
    "            with urllib.request.urlopen(spec['url'], timeout=10) as r:\n"
    "                row = [t0, r.status, r.read().decode()[:80]]\n"
    "        except urllib.error.HTTPError as e:\n"
    "            row = [t0, e.code, e.read().decode()[:200]]\n"
    "        except Exception as e:\n"
    "            row = [t0, 0, repr(e)]\n"
    "        with lock:\n"
    "            out.write(json.dumps(row) + '\\n')\n"
    "threads = [threading.Thread(target=worker) for _ in range(4)]\n"
    "for t in threads: t.start()\n"
    "for t in threads: t.join()\n"
)

# Burns SHARE of one core, steadily even on a busy machine: it keeps its CPU time at SHARE x
# the time since it started, spinning while behind and sleeping (5 ms at most) while ahead.
BURN = (
    "import os, time\n"
    "share = float(os.environ['SHARE'])\n"
    "wall0, cpu0 = time.monotonic(), time.process_time()\n"
    "while True:\n"
    "    owed = share * (time.monotonic() - wall0) - (time.process_time() - cpu0)\n"
    "    if owed > 0:\n"
    "        until = time.process_time() + min(owed, 0.005)\n"
    "        while time.process_time() < until:\n"
    "            pass\n"
    "    else:\n"
    "        time.sleep(min(0.005, -owed / share))\n"
)


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

    def get(self, path: str) -> dict[str, Any]:
        return self.node.get(path) or {}

    def replicas(self, name: str) -> int | None:
        return (self.get(f"{DEPLOY}/{name}").get("spec") or {}).get("replicas")

    def ready_pods(self, app: str) -> list[dict[str, Any]]:
        return [p for p in self.node.pods(NS, f"app={app}") if is_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
        return sorted((e for e in items if e["involvedObject"]["name"] == name
                       and e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"),
                      key=lambda e: e["metadata"]["creationTimestamp"])  # fmt: skip

    @contextlib.contextmanager
    def load(self, url: str, rate: float) -> Iterator[Load]:
        """The client GETs ``url`` at ``rate`` per second (``Load.set`` changes it) until the block ends."""
        out, stop, rate_file = self.tmp / "rows", self.tmp / "stop", self.tmp / "rate"
        rate_file.write_text(str(rate))
        spec = json.dumps({"url": url, "out": str(out), "stop": str(stop), "rate": str(rate_file)})
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        proc = subprocess.Popen([sys.executable, "-m", "meshwork", "exec", "client", "-n", NS, "--",
                                 sys.executable, "-c", CLIENT, spec], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        load = Load(out, rate_file)
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


class Load:
    def __init__(self, out: Path, rate_file: Path) -> None:
        self.out, self.rate_file = out, rate_file

    def set(self, rate: float) -> None:
        tmp = self.rate_file.with_suffix(".tmp")
        tmp.write_text(str(rate))
        tmp.replace(self.rate_file)

    def rows(self) -> list[tuple[float, int, str]]:
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [tuple(json.loads(line)) for line in lines if line.endswith("]")]  # type: ignore[misc]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scaling")
    home = tmp / "home"
    home.mkdir()
    timings = {"MESHWORK_HPA_SYNC_PERIOD": "1", "MESHWORK_HPA_METRICS_WINDOW": "3",
               "MESHWORK_HPA_DOWNSCALE_STABILIZATION": "5"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in timings}
    os.environ.update(timings)  # the server process inherits them
    try:
        with own_range_node(home) as node:
            node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
            node.apply(f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "client", "namespace": NS},
                       "spec": {"containers": [{"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip
            wait_for(lambda: (p := node.pod("client", NS)) is not None and is_ready(p), 60, "the client pod")
            yield Cluster(node, tmp)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def deployment(name: str, replicas: int, container: dict[str, Any], *, meshed: bool = True) -> dict[str, Any]:
    annotations = {} if meshed else {"sidecar.istio.io/inject": "false"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                                  "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}}}}  # fmt: skip


def burner(share: float, cpu_request: str) -> dict[str, Any]:
    return {"name": "burn", "image": "python:3.11", "command": [sys.executable, "-c", BURN],
            "env": [{"name": "SHARE", "value": str(share)}],
            "resources": {"requests": {"cpu": cpu_request, "memory": "32Mi"}}}  # fmt: skip


def hpa(name: str, metrics: list[dict[str, Any]], min_r: int, max_r: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": min_r, "maxReplicas": max_r, "metrics": metrics, **spec}}  # fmt: skip


def test_rps_hpa_follows_a_doubling_load_and_back_with_no_failed_request(cluster: Cluster) -> None:
    name = "web"
    cluster.node.apply(f"/api/v1/namespaces/{NS}/services", {"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": name}, "spec": {"selector": {"app": name},
                       "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}})  # fmt: skip
    hello = {"name": "hello", "image": HELLO, "ports": [{"containerPort": 5000, "name": "http"}],
             "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1}}  # fmt: skip
    cluster.node.apply(DEPLOY, deployment(name, 2, hello))
    wait_for(lambda: len(cluster.ready_pods(name)) == 2, 60, "2 ready web pods")
    # 11 requests per second per pod: 20/s on 2 pods is within tolerance (ratio 0.91),
    # 40/s asks for ceil(2 x 20/11) = 4, and 20/s on 4 pods for ceil(4 x 5/11) = 2.
    metrics = [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                         "target": {"type": "AverageValue", "averageValue": "11"}}}]  # fmt: skip
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 10}]},
                "scaleDown": {"stabilizationWindowSeconds": STABILIZATION_S,
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}]}}  # fmt: skip
    seen: list[tuple[float, int | None]] = []

    def note() -> int | None:
        n = cluster.replicas(name)
        if not seen or seen[-1][1] != n:
            seen.append((time.monotonic(), n))
        return n

    with cluster.load(f"http://{name}:5000/hello", 20) as load:
        cluster.node.apply(HPA, hpa(name, metrics, 2, 6, behavior=behavior))
        # The HPA reads the steady load and keeps 2.
        wait_for(lambda: (st := cluster.get(f"{HPA}/{name}").get("status") or {}).get("currentMetrics")
                 and (st["currentMetrics"][0].get("pods") or {}).get("current") and st, 20, "the HPA's first reading")  # fmt: skip
        assert note() == 2
        load.set(40)
        wait_for(lambda: note() == 4, 30, "the scale-up to 4", interval=0.2)
        wait_for(lambda: len(cluster.ready_pods(name)) == 4, 30, "4 ready web pods")
        # Enough time at 4 to show it holds (the window is 3 s; syncs every second).
        held_from = time.monotonic()
        wait_for(lambda: time.monotonic() - held_from > 4 and note() == 4 and True, 10, "4 held", interval=0.2)
        load.set(20)
        dropped = time.monotonic()
        wait_for(lambda: note() == 2, 30, "the scale-down to 2", interval=0.2)
        wait_for(lambda: len(cluster.node.pods(NS, f"app={name}")) == 2, 30, "the extra pods to be gone")
        settled = time.monotonic()
        wait_for(lambda: sum(r[0] > settled for r in load.rows()) >= 40, 20, "requests after the scale-down")
    rows = load.rows()
    failed = [r for r in rows if r[1] != 200]
    assert not failed, f"{len(failed)} of {len(rows)} requests failed, e.g. {failed[:3]}"
    # The rate is taken over a 3 s window, so a step in the load reaches the HPA as a ramp
    # and it may pass through 3 on the way: up to 4 and never beyond, then down to 2.
    counts = [n or 0 for _, n in seen]
    top = counts.index(4)
    assert counts[0] == 2 and counts[-1] == 2 and max(counts) == 4, seen
    assert counts[: top + 1] == sorted(counts[: top + 1]) and counts[top:] == sorted(counts[top:], reverse=True), seen
    first_down = next(t for t, n in seen[top + 1 :])
    assert first_down - dropped >= STABILIZATION_S, seen  # the window held the higher recommendation
    events = [e["message"] for e in cluster.events(name) if e["reason"] == "SuccessfulRescale"]
    split = next((i for i, m in enumerate(events) if m.endswith("below target")), len(events))
    ups, downs = events[:split], events[split:]
    assert all(m.endswith("; reason: pods metric requests_per_second above target") for m in ups), events
    assert all(m.endswith("; reason: All metrics below target") for m in downs), events
    assert ups[-1].startswith("New size: 4;") and downs[-1].startswith("New size: 2;"), events
    out = cluster.ok("get", "hpa", name, "-n", NS)
    header, line = out.splitlines()[:2]
    assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert line.split()[1] == "Deployment/web" and line.split()[2].endswith("/11")
    print(f"\nrps HPA: {len(rows)} requests, 0 failed; replicas {counts}; first scale-down "
          f"{first_down - dropped:.1f}s after the load fell (window {STABILIZATION_S}s); {events}")


def rollout(name: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    d = deployment(name, replicas, container, meshed=False)
    return {**d, "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "spec": {**d["spec"], "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}}  # fmt: skip


@pytest.mark.parametrize("kind", ["Deployment", "Rollout"])
def test_cpu_hpa_scales_a_cpu_burning_workload(cluster: Cluster, kind: str) -> None:
    name = f"burner-{kind.lower()}"
    path = DEPLOY if kind == "Deployment" else f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts"
    # Each pod burns 0.125 core of a 100m request: 125 % against a 50 % target, ratio 2.5:
    # from 1 replica the HPA asks for ceil(2.5) = 3 (its maximum).
    burn = burner(0.125, "100m")
    cluster.node.apply(path, deployment(name, 1, burn, meshed=False) if kind == "Deployment" else rollout(name, 1, burn))
    wait_for(lambda: len(cluster.node.pods(NS, f"app={name}")) == 1 and
             all(p["status"].get("phase") == "Running" for p in cluster.node.pods(NS, f"app={name}")), 60, "the burner")  # fmt: skip
    metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    spec = hpa(name, metrics, 1, 3)
    spec["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1" if kind == "Deployment" else "argoproj.io/v1alpha1",
                                      "kind": kind, "name": name}  # fmt: skip
    cluster.node.apply(HPA, spec)
    wait_for(lambda: (cluster.get(f"{path}/{name}").get("spec") or {}).get("replicas") == 3, 30, "the scale-up to 3",
             interval=0.2)  # fmt: skip
    wait_for(lambda: len(cluster.node.pods(NS, f"app={name}")) == 3, 30, f"3 pods of the {kind}")
    status = cluster.get(f"{HPA}/{name}")["status"]
    utilization = status["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
    messages = [e["message"] for e in cluster.events(name) if e["reason"] == "SuccessfulRescale"]
    assert messages[0] == "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    conditions = {c["type"]: c["reason"] for c in status["conditions"]}
    assert conditions["ScalingActive"] == "ValidMetricFound"
    out = cluster.ok("get", "hpa", name, "-n", NS)
    assert f"{kind}/{name}" in out and "cpu: " in out and "%/50%" in out, out
    print(f"\ncpu HPA on a {kind}: utilization {utilization}% of request (burning 125%), 1 -> 3")
    cluster.node.http.delete(f"{HPA}/{name}")
    cluster.node.http.delete(f"{path}/{name}")


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time, read from /proc by the test itself."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_recommend_is_within_20_percent_of_a_steady_load(cluster: Cluster) -> None:
    name = "steady"
    cluster.node.apply(DEPLOY, deployment(name, 1, burner(0.2, "500m"), meshed=False))
    pod = wait_for(lambda: next((p for p in cluster.node.pods(NS, f"app={name}") if shim_pid(p, "burn")
                                 and app_pids(shim_pid(p, "burn") or 0)), None), 60, "the steady burner")  # fmt: skip
    pid = app_pids(shim_pid(pod, "burn") or 0)[0]
    # The load's own usage over the time the command observes it (from its "observing" line
    # to its exit), as the test measures it.
    env = {**os.environ, "MESHWORK_SERVER": cluster.node.server.url, "MESHWORK_TOKEN": cluster.node.server.token}
    proc = subprocess.Popen([sys.executable, "-m", "meshwork", "recommend", name, "-n", NS, "--window", "16s",
                             "--interval", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        started = proc.stderr.readline()
        t0, cpu0 = time.monotonic(), _cpu_seconds(pid)
        out, err = proc.communicate(timeout=60)
        usage = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and started.startswith("observing"), started + err
    line = out.splitlines()[1]
    cells = dict(zip(["DEPLOYMENT", "CONTAINER", "CPU_REQUEST", "CPU_LIMIT", "MEMORY_REQUEST", "MEMORY_LIMIT",
                      "RANGE", "SAMPLES"], line.split(), strict=True))  # fmt: skip
    cpu = int(cells["CPU_REQUEST"].rstrip("m")) / 1000
    assert abs(cpu - usage) <= 0.2 * usage, (usage, out)
    cluster.ok("recommend", name, "-n", NS, "--window", "2s", "--interval", "1", "--apply")
    deploy = cluster.get(f"{DEPLOY}/{name}")
    resources = deploy["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"].endswith("m") and resources["requests"]["memory"].endswith("Mi")
    assert deploy["metadata"]["generation"] >= 2  # the template changed: the Deployment rolls
    print(f"\nrecommend: {cells['CPU_REQUEST']} for a steady load measured at {usage * 1000:.0f}m "
          f"({100 * (cpu - usage) / usage:+.0f} %); applied {resources}")
    cluster.node.http.delete(f"{DEPLOY}/{name}")
