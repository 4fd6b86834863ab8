"""Istio traffic management end to end, through injected sidecars, with the docs' manifests.

One real server with its node agent runs every workload of this file in one
``istio-injection=enabled`` namespace: a service per scenario, each backed by
bare Pods running ``BACKEND`` (whose behaviour the pod's env sets: a failure
rate, a "broken" marker file, a log of the Host headers it saw). Each test
applies the VirtualService / DestinationRule the Istio docs show for its
scenario (bookinfo's fault manifests, istio.io's retries, circuit-breaking
and mirroring tasks) with ``meshwork apply``, then drives requests from the
``client`` pod's app through its sidecar (``meshwork exec client -- python``,
HTTP_PROXY set by the agent) and checks what Istio's docs promise, and the
response flags (FI, DI, UO) in the client sidecar's istio_requests_total.

The SIGKILL scenario runs last: it restarts one of its own backends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.node import (
    Node,
    app_pids,
    container_status,
    is_ready,
    running_node,
    shim_pid,
    wait_for,
)

pytestmark = pytest.mark.integration

NS = "mesh"

# Every backend: answers "<VERSION> <HOSTNAME> <status>" on $(POD_IP):8080.
# FAIL_RATE: share of requests answered 503 at random. BROKEN_FILE: while
# that file exists, every request gets 500. HOST_LOG: a file each request's
# Host header and path are appended to. /slow?S sleeps S seconds first.
# /healthz (the readiness probe) always answers 200 and is never logged.
BACKEND = (
    "import http.server, os, random, time\n"
    "NAME, VERSION = os.environ['HOSTNAME'], os.environ.get('VERSION', '-')\n"
    "FAIL = float(os.environ.get('FAIL_RATE') or 0)\n"
    "BROKEN, LOG = os.environ.get('BROKEN_FILE', ''), os.environ.get('HOST_LOG', '')\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version, disable_nagle_algorithm = 'HTTP/1.1', True  # head and body are two writes\n"
    "    def do_GET(self):\n"
    "        status = 200\n"
    "        if self.path != '/healthz':\n"
    "            if LOG:\n"
    "                with open(LOG, 'a') as f: f.write(self.headers.get('Host', '') + ' ' + self.path + '\\n')\n"
    "            if BROKEN and os.path.exists(BROKEN): status = 500\n"
    "            elif FAIL and random.random() < FAIL: status = 503\n"
    "            if self.path.startswith('/slow?'): time.sleep(float(self.path.partition('?')[2]))\n"
    "        body = f'{VERSION} {NAME} {status}'.encode()\n"
    "        self.send_response(status); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)

# The client app: GETs a URL through its sidecar and prints one JSON row per
# request: [start (monotonic), seconds, status, body, x-meshwork-reason].
# spec: url ("{i}" in it becomes the request's index), n, headers (one dict,
# or a list cycled through), concurrency (that many at once, released
# together), until_status/until_count (stop counting n until that many
# answers had that status, then send n more),
# until_body + max_seconds (poll until a body contains it, then send n more),
# progress (a file the count of finished requests is written to every 100).
CLIENT = (
    "import concurrent.futures, json, sys, threading, time, urllib.error, urllib.request\n"
    "spec = json.loads(sys.argv[1])\n"
    "hs = spec.get('headers') or {}\n"
    "hs = hs if isinstance(hs, list) else [hs]\n"
    "def one(i, barrier=None):\n"
    "    req = urllib.request.Request(spec['url'].replace('{i}', str(i)), headers=hs[i % len(hs)])\n"
    "    if barrier is not None: barrier.wait()\n"
    "    t0 = time.monotonic()\n"
    "    try:\n"
    "        with urllib.request.urlopen(req, timeout=30) as r:\n"
    "            row = [r.status, r.read().decode(), r.headers.get('x-meshwork-reason', '')]\n"
    "    except urllib.error.HTTPError as e:\n"
    "        row = [e.code, e.read().decode(), e.headers.get('x-meshwork-reason', '')]\n"
    "    except Exception as e:\n"
    "        row = [0, repr(e), '']\n"
    "    return [t0, time.monotonic() - t0, *row]\n"
    "rows = []\n"
    "conc = spec.get('concurrency', 1)\n"
    "if conc > 1:\n"
    "    barrier = threading.Barrier(spec['n'])\n"
    "    with concurrent.futures.ThreadPoolExecutor(spec['n']) as pool:\n"
    "        rows = list(pool.map(lambda i: one(i, barrier), range(spec['n'])))\n"
    "else:\n"
    "    n, i, deadline = spec['n'], 0, time.monotonic() + spec.get('max_seconds', 60)\n"
    "    waiting = 'until_status' in spec or 'until_body' in spec\n"
    "    while (waiting and time.monotonic() < deadline) or n > 0:\n"
    "        row = one(i); rows.append(row); i += 1\n"
    "        if waiting:\n"
    "            if 'until_status' in spec:\n"
    "                waiting = sum(r[2] == spec['until_status'] for r in rows) < spec['until_count']\n"
    "            else:\n"
    "                waiting = spec['until_body'] not in row[3]\n"
    "        else:\n"
    "            n -= 1\n"
    "        if spec.get('progress') and i % 100 == 0:\n"
    "            open(spec['progress'], 'w').write(str(i))\n"
    "print(json.dumps(rows))\n"
)

Row = tuple[float, float, int, str, str]  # start, seconds, status, body, x-meshwork-reason

# Each service: its pods as (name, version, extra env).
SERVICES: dict[str, list[tuple[str, str, dict[str, str]]]] = {
    "ratings": [("ratings-v1", "v1", {})],
    "flaky": [("flaky-1", "v1", {"FAIL_RATE": "0.3"}), ("flaky-2", "v1", {"FAIL_RATE": "0.3"})],
    "web": [("web-0", "v1", {}), ("web-1", "v1", {}), ("web-2", "v1", {"BROKEN_FILE": "{tmp}/web-2.broken"})],
    "httpbin": [("httpbin-v1", "v1", {"HOST_LOG": "{tmp}/httpbin-v1.log"}),
                ("httpbin-v2", "v2", {"HOST_LOG": "{tmp}/httpbin-v2.log", "FAIL_RATE": "1"})],
    "slow": [("slow-1", "v1", {})],
    "sticky": [("sticky-0", "v1", {}), ("sticky-1", "v1", {}), ("sticky-2", "v1", {})],
    "steady": [("steady-0", "v1", {}), ("steady-1", "v1", {}), ("steady-2", "v1", {})],
}  # fmt: skip
PORTS = {"httpbin": 8000}  # the mirroring task's Service port (targetPort 8080); others serve 8080


class Mesh:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node, self.tmp = node, tmp

    def meshwork(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def apply(self, text: str) -> None:
        path = self.tmp / "apply.yaml"
        path.write_text(text)
        ran = self.meshwork("apply", "-n", NS, "-f", str(path))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "converged in" in ran.stdout, ran.stdout

    def client_args(self, **spec: Any) -> list[str]:
        return ["exec", "client", "-n", NS, "--", sys.executable, "-c", CLIENT, json.dumps(spec)]

    def run(self, **spec: Any) -> list[Row]:
        """Requests from the client pod's app, through its sidecar."""
        ran = self.meshwork(*self.client_args(**spec))
        assert ran.returncode == 0, ran.stderr
        return [tuple(r) for r in json.loads(ran.stdout)]


def _pod(name: str, service: str, version: str, env: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": service, "version": version}},
            "spec": {"containers": [{
                "name": service, "image": "python", "command": [sys.executable, "-c", BACKEND],
                "env": [{"name": "VERSION", "value": version}] + [{"name": k, "value": v} for k, v in env.items()],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}}  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("traffic")
    home = tmp / "home"
    home.mkdir()
    (tmp / "web-2.broken").write_text("web-2 answers 500 while this file exists\n")
    with running_node(home) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        for service, pods in SERVICES.items():
            port = PORTS.get(service, 8080)
            node.apply(f"/api/v1/namespaces/{NS}/services", {"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": service, "namespace": NS, "labels": {"app": service}},
                       "spec": {"selector": {"app": service},
                                "ports": [{"name": "http", "port": port, "targetPort": 8080}]}})  # fmt: skip
            for name, version, env in pods:
                filled = {k: v.replace("{tmp}", str(tmp)) for k, v in env.items()}
                node.apply(f"/api/v1/namespaces/{NS}/pods", _pod(name, service, version, filled))
        node.apply(f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "client", "namespace": NS},
                   "spec": {"containers": [{"name": "client", "image": "busybox", "command": ["sleep", "infinity"]}]}})  # fmt: skip
        want = 1 + sum(len(p) for p in SERVICES.values())

        def meshed() -> list[dict[str, Any]] | None:
            ok = [p for p in node.pods(NS) if is_ready(p) and len(p["status"].get("initContainerStatuses") or []) == 1]
            return ok if len(ok) == want else None

        wait_for(meshed, 150, f"{want} ready pods, each with its sidecar")
        yield Mesh(node, tmp)


def _statuses(rows: list[Row]) -> Counter[int]:
    return Counter(r[2] for r in rows)


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _flags(mesh: Mesh, service: str | None) -> Counter[tuple[str, str]]:
    """The client sidecar's istio_requests_total to ``service`` (None: any), by (response_code, response_flags)."""
    pod = mesh.node.pod("client", NS) or {}
    url = f"http://{pod['status']['podIP']}:15020/stats/prometheus"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(url, timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("istio_requests_total{"):
            labels = dict(LABEL.findall(line))
            if labels.get("reporter") == "source" and service in (None, labels.get("destination_service_name")):
                out[labels["response_code"], labels["response_flags"]] += int(float(line.rsplit(" ", 1)[1]))
    return out


# -- 1. fault injection -------------------------------------------------------------------

RATINGS_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
"""

# bookinfo's virtual-service-ratings-test-abort.yaml, for every user, at 50 %.
ABORT_HALF = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      abort:
        percentage:
          value: 50.0
        httpStatus: 555
    route:
    - destination:
        host: ratings
        subset: v1
"""

# bookinfo's virtual-service-ratings-test-delay.yaml, with a 1 s delay.
DELAY_JASON = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 1s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"""


def test_fault_abort_answers_its_percentage_of_requests(mesh: Mesh) -> None:
    mesh.apply(RATINGS_DR + "---" + ABORT_HALF)
    n = 1000
    rows = mesh.run(url="http://ratings:8080/ratings/0", n=n)
    seen = _statuses(rows)
    assert set(seen) == {200, 555}, seen
    assert abs(seen[555] / n - 0.50) <= 0.05, seen
    aborted = [r for r in rows if r[2] == 555]
    assert {r[3] for r in aborted} == {"fault filter abort"}  # Envoy's fault filter body, not the backend's
    assert all(r[4] for r in aborted), "every aborted request says why in x-meshwork-reason"
    assert {r[3] for r in rows if r[2] == 200} == {"v1 ratings-v1 200"}
    assert _flags(mesh, "ratings")["200", "-"] == seen[200]
    # Counted with flag FI, under the route's destination as Istio labels it.
    assert _flags(mesh, "ratings")["555", "FI"] == seen[555]


def test_fault_delay_holds_the_matched_user_only(mesh: Mesh) -> None:
    mesh.apply(RATINGS_DR + "---" + DELAY_JASON)
    jason = mesh.run(url="http://ratings:8080/ratings/0", n=3, headers={"end-user": "jason"})
    others = mesh.run(url="http://ratings:8080/ratings/0", n=10, headers={"end-user": "kim"})
    assert {r[3] for r in jason + others} == {"v1 ratings-v1 200"}
    assert min(r[1] for r in jason) >= 1.0, [r[1] for r in jason]
    # Not delayed: the typical request is far below the injected second.
    assert statistics.median(r[1] for r in others) < 0.5, [r[1] for r in others]
    assert _flags(mesh, "ratings")["200", "DI"] == len(jason)  # Envoy logs the delayed ones DI


# -- 2. retries ---------------------------------------------------------------------------

FLAKY_NO_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
spec:
  hosts:
  - flaky
  http:
  - route:
    - destination:
        host: flaky
    retries:
      attempts: 0
"""

# istio.io's "Set number and timeouts for retries", retrying any 5xx. Five
# retries, not three: with 30 % failing at random, 0.3^4 = 0.8 % of requests
# would still fail after three, and a 99 % bar would then be missed by
# chance in about one run in four; 0.3^6 is 0.07 %.
FLAKY_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
spec:
  hosts:
  - flaky
  http:
  - route:
    - destination:
        host: flaky
    retries:
      attempts: 5
      perTryTimeout: 2s
      retryOn: 5xx
"""


def test_retries_hide_a_backend_failing_30_percent(mesh: Mesh) -> None:
    n = 500
    mesh.apply(FLAKY_NO_RETRIES)  # first, the failures as they are
    bare = _statuses(mesh.run(url="http://flaky:8080/", n=n))
    assert set(bare) == {200, 503} and abs(bare[503] / n - 0.30) <= 0.08, bare

    mesh.apply(FLAKY_RETRIES)
    rows = mesh.run(url="http://flaky:8080/", n=n)
    seen = _statuses(rows)
    assert seen[200] >= 0.99 * n, seen
    assert {r[3].split()[1] for r in rows if r[2] == 200} == {"flaky-1", "flaky-2"}


# -- 3. outlier detection ---------------------------------------------------------------------

WEB_OUTLIER = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
spec:
  host: web
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 5s
      maxEjectionPercent: 100
"""


def test_outlier_detection_ejects_a_failing_endpoint_and_readmits_it(mesh: Mesh) -> None:
    mesh.apply(WEB_OUTLIER)
    # Until web-2 has failed 3 times in a row it gets its share; then 45 more requests.
    first = mesh.run(url="http://web:8080/", n=45, until_status=500, until_count=3, max_seconds=30)
    failed = [i for i, r in enumerate(first) if r[2] == 500][:3]
    assert len(failed) == 3 and {first[i][3] for i in failed} == {"v1 web-2 500"}, first
    ejected_at = first[failed[-1]][0] + first[failed[-1]][1]
    # Answered while web-2 is out (a very slow run may reach its readmission, still broken).
    during = [r for r in first[failed[-1] + 1 :] if r[0] + r[1] < ejected_at + 5.0]
    assert len(during) >= 10, first
    assert {r[3] for r in during} <= {"v1 web-0 200", "v1 web-1 200"}, Counter(r[3] for r in during)

    # "Fix" web-2 from inside its pod; it comes back once baseEjectionTime (5 s) has passed.
    fixed = mesh.meshwork("exec", "web-2", "-n", NS, "--", sys.executable, "-c",
                          "import os; os.remove(os.environ['BROKEN_FILE'])")  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    second = mesh.run(url="http://web:8080/", n=30, until_body="web-2", max_seconds=30)
    assert _statuses(second) == {200: len(second)}, Counter(r[3] for r in second)
    back = next(r for r in second if "web-2" in r[3])
    assert back[0] - ejected_at >= 5.0 - 0.05, (back[0] - ejected_at)
    assert {r[3].split()[1] for r in second} == {"web-0", "web-1", "web-2"}


# -- 4. connection pool overflow ------------------------------------------------------------

# istio.io's circuit-breaking task, "Configuring the circuit breaker", for host slow.
SLOW_CIRCUIT_BREAKER = """
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: slow
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""
OVERFLOW_BODY = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


def test_connection_pool_overflow_is_answered_503_uo(mesh: Mesh) -> None:
    mesh.apply(SLOW_CIRCUIT_BREAKER)
    rows = mesh.run(url="http://slow:8080/slow?0.5", n=20, concurrency=20)
    seen = _statuses(rows)
    assert set(seen) == {200, 503} and seen[200] >= 1 and seen[503] >= 1, seen
    overflowed = [r for r in rows if r[2] == 503]
    assert {r[3] for r in overflowed} == {OVERFLOW_BODY}, overflowed
    assert all("full" in r[4] for r in overflowed), {r[4] for r in overflowed}
    assert _flags(mesh, "slow") == {("503", "UO"): seen[503], ("200", "-"): seen[200]}
    assert {r[3] for r in rows if r[2] == 200} == {"v1 slow-1 200"}
    # The proxy's own overflow answers are not the endpoint's errors: it is not ejected.
    assert [r[2:4] for r in mesh.run(url="http://slow:8080/", n=3)] == [(200, "v1 slow-1 200")] * 3


# -- 5. mirroring ------------------------------------------------------------------------------

# istio.io's mirroring task: "Creating a default routing policy", then "Mirroring traffic to v2".
HTTPBIN_ALL_V1 = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
    - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""
HTTPBIN_MIRROR_V2 = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
    - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: 100.0
"""


def test_mirroring_sends_a_copy_and_ignores_its_answer(mesh: Mesh) -> None:
    v1_log, v2_log = mesh.tmp / "httpbin-v1.log", mesh.tmp / "httpbin-v2.log"
    mesh.apply(HTTPBIN_ALL_V1)
    assert mesh.run(url="http://httpbin:8000/before", n=5)[0][3] == "v1 httpbin-v1 200"
    assert not v2_log.exists()
    mesh.apply(HTTPBIN_MIRROR_V2)
    n = 20
    rows = mesh.run(url="http://httpbin:8000/headers?i={i}", n=n)
    # v2 answers 503 to everything; the client only ever sees v1.
    assert [r[2:4] for r in rows] == [(200, "v1 httpbin-v1 200")] * n

    def copies() -> list[str] | None:
        lines = v2_log.read_text().splitlines() if v2_log.exists() else []
        return lines if len(lines) >= n else None

    got = wait_for(copies, 15, f"{n} mirrored copies at httpbin-v2")
    assert sorted(got) == sorted(f"httpbin-shadow:8000 /headers?i={i}" for i in range(n))
    originals = [line for line in v1_log.read_text().splitlines() if line.startswith("httpbin:8000 /headers")]
    assert len(originals) == n


# -- 6. consistent hash -----------------------------------------------------------------------------

STICKY_HASH = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: sticky
spec:
  host: sticky
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
"""


def test_consistent_hash_keeps_a_header_value_on_one_endpoint(mesh: Mesh) -> None:
    mesh.apply(STICKY_HASH)
    users = [f"user-{i}" for i in range(10)]
    rows = mesh.run(url="http://sticky:8080/", n=50 * len(users), headers=[{"x-user": u} for u in users])
    assert _statuses(rows) == {200: len(rows)}
    landed: dict[str, set[str]] = {u: set() for u in users}
    for i, r in enumerate(rows):
        landed[users[i % len(users)]].add(r[3].split()[1])
    assert all(len(pods) == 1 for pods in landed.values()), landed
    assert len(set().union(*landed.values())) >= 2, landed


# -- 7. SIGKILL under load ------------------------------------------------------------------------

STEADY_RESILIENCE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: steady
spec:
  hosts:
  - steady
  http:
  - route:
    - destination:
        host: steady
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: connect-failure,refused-stream,reset,5xx
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: steady
spec:
  host: steady
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"""


def test_sigkill_of_a_backend_under_load_keeps_999_per_mille(mesh: Mesh) -> None:
    mesh.apply(STEADY_RESILIENCE)
    node = mesh.node
    victim = node.pod("steady-1", NS) or {}
    restarts = container_status(victim, "steady").get("restartCount", 0)
    shim = shim_pid(victim, "steady")
    assert shim is not None, victim.get("status")
    progress = mesh.tmp / "steady.progress"
    n = 2400
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    args = mesh.client_args(url="http://steady:8080/", n=n, progress=str(progress))
    client = subprocess.Popen([sys.executable, "-m", "meshwork", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 400, 60, "400 requests done")
        killed = app_pids(shim)
        assert killed, "the app process of steady-1"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        out, err = client.communicate(timeout=180)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err
    rows = [tuple(r) for r in json.loads(out)]
    assert len(rows) == n
    seen = _statuses(rows)
    assert seen[200] >= 0.999 * n, (seen, [r for r in rows if r[2] != 200][:5])
    # The kill really happened: the agent restarts steady-1's app.
    wait_for(lambda: container_status(node.pod("steady-1", NS) or {}, "steady").get("restartCount", 0) > restarts,
             60, "steady-1 to restart")  # fmt: skip
