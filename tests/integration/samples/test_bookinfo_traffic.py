"""Istio's traffic-management tasks on bookinfo, with the sample's own files, unmodified.

One server with its node agent and ingress gateway runs bookinfo (from
``istio/bookinfo/platform/kube/bookinfo.yaml``, the images run by the
catalogue's example apps) and the ``sleep`` sample as a client, in a
namespace labelled for injection. Each test applies the task's
VirtualService files from ``../shared/conformance`` as the task page says and
checks what the page says a person then sees: request routing, fault
injection (delay and abort), traffic shifting, request timeouts, the
ingress gateway, and on the httpbin sample circuit breaking; helloworld
shows its two versions. The client requests run inside the sleep pod with
``meshwork exec``, so they leave through its sidecar as an app's would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ISTIO = CONFORMANCE / "istio"
NETWORKING = ISTIO / "bookinfo" / "networking"
TASKS = CONFORMANCE / "istio.io" / "traffic-management"
NS = "bookinfo"
GATEWAY_PORT = 18481  # where the ingress gateway listens for the bookinfo Gateway's port 8080
PODS = 7  # details, ratings, reviews v1-v3, productpage, sleep

# Runs in the sleep pod: GET one URL n times through the pod's sidecar (http_proxy) and say
# what each answer shows: which reviews version (by its stars) or which error.
FETCH = r"""
import collections, json, sys, time, urllib.error, urllib.request
url, n, headers = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
def kind(body):
    for marker, name in (("Sorry, product reviews are currently unavailable", "reviews-unavailable"),
                         ("Ratings service is currently unavailable", "ratings-unavailable"),
                         ('color="red"', "red"), ('"color": "red"', "red"),
                         ('color="black"', "black"), ('"color": "black"', "black"),
                         ("Book Reviews", "none"), ('"reviews":', "none")):
        if marker in body:
            return name
    return "other"
kinds, statuses, seconds, first = collections.Counter(), collections.Counter(), [], None
for _ in range(n):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode()
    seconds.append(time.monotonic() - start)
    statuses[status] += 1
    kinds[kind(body)] += 1
    first = body if first is None else first
print(json.dumps({"kinds": kinds, "statuses": statuses, "seconds": seconds, "body": first}))
"""


@dataclass
class Fetched:
    kinds: dict[str, int]
    statuses: dict[int, int]
    seconds: list[float]
    body: str


@dataclass
class Bookinfo:
    node: Node
    tmp: Path
    client_pod: str

    def meshwork(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    def apply(self, *files: Path) -> None:
        """``kubectl apply -f`` of unmodified sample files, waiting until every proxy took the config."""
        for f in files:
            if not f.is_file():
                pytest.skip(absent_reason(f))
        args = [a for f in files for a in ("-f", str(f))]
        ran = self.meshwork("apply", "-n", NS, *args)
        assert ran.returncode == 0, (ran.stdout, ran.stderr)

    def fetch(self, url: str, n: int = 1, headers: dict[str, str] | None = None) -> Fetched:
        ran = self.meshwork("exec", self.client_pod, "-n", NS, "--", sys.executable, "-c", FETCH,
                            url, str(n), json.dumps(headers or {}))  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        got: dict[str, Any] = json.loads(ran.stdout)
        return Fetched(dict(got["kinds"]), {int(k): v for k, v in got["statuses"].items()},
                       list(got["seconds"]), str(got["body"]))  # fmt: skip

    def page(self, n: int = 1, user: str | None = None) -> Fetched:
        """The product page as a browser signed in as ``user`` (the ``user`` cookie) sees it."""
        return self.fetch("http://productpage:9080/productpage", n, {"Cookie": f"user={user}"} if user else None)


@pytest.fixture(scope="module")
def bookinfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bookinfo]:
    if not (ISTIO / "bookinfo" / "platform" / "kube" / "bookinfo.yaml").is_file():
        pytest.skip(absent_reason(ISTIO))
    home = tmp_path_factory.mktemp("bookinfo")
    with running_node(home, "--ingress-gateway", "--ingress-ports", f"8080:{GATEWAY_PORT}") as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        app = Bookinfo(node, home, "")
        app.apply(ISTIO / "bookinfo" / "platform" / "kube" / "bookinfo.yaml",
                  NETWORKING / "destination-rule-all.yaml", ISTIO / "sleep" / "sleep.yaml")  # fmt: skip

        def meshed() -> list[dict[str, Any]] | None:
            pods = [p for p in node.pods(NS) if is_ready(p) and p["spec"].get("initContainers")]
            return pods if len(pods) == PODS else None

        pods = wait_for(meshed, 120, f"{PODS} ready bookinfo and sleep pods, each with its sidecar")
        app.client_pod = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"].get("app") == "sleep")

        def serving() -> Fetched | None:  # the apps listen a moment after their process starts
            got = app.page()
            return got if got.statuses == {200: 1} and "Book Details" in got.body and "Book Reviews" in got.body else None

        wait_for(serving, 60, "the product page with details and reviews", interval=0.5)
        yield app


def test_request_routing_by_version_then_by_user(bookinfo: Bookinfo) -> None:
    # "Route to version 1": every page shows reviews without stars.
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml")
    assert bookinfo.page(20).kinds == {"none": 20}
    # "Route based on user identity": jason (end-user: jason) sees v2's black stars, others none.
    bookinfo.apply(NETWORKING / "virtual-service-reviews-test-v2.yaml")
    jason = bookinfo.page(10, user="jason")
    assert jason.kinds == {"black": 10}, jason.body
    assert jason.body.count("glyphicon-star\"") == 9  # 5 + 4 full stars, as ratings says
    assert bookinfo.page(10).kinds == {"none": 10}
    assert bookinfo.page(10, user="alice").kinds == {"none": 10}


def test_fault_injection_delay_exceeds_productpage_timeouts(bookinfo: Bookinfo) -> None:
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml", NETWORKING / "virtual-service-reviews-test-v2.yaml")
    bookinfo.apply(NETWORKING / "virtual-service-ratings-test-delay.yaml")
    # A 7 s delay on ratings for jason: reviews v2 waits up to 10 s, but productpage gives up
    # on reviews after 3 s and one retry, so jason's page shows the reviews error after ~6 s.
    jason = bookinfo.page(user="jason")
    assert jason.kinds == {"reviews-unavailable": 1}, jason.body
    assert "Error fetching product reviews!" in jason.body
    assert jason.seconds[0] >= 5.0, jason.seconds
    assert "Book Details" in jason.body  # details are not delayed
    assert bookinfo.page(5).kinds == {"none": 5}  # everyone else still reaches v1


def test_fault_injection_abort_shows_ratings_unavailable(bookinfo: Bookinfo) -> None:
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml", NETWORKING / "virtual-service-reviews-test-v2.yaml")
    bookinfo.apply(NETWORKING / "virtual-service-ratings-test-abort.yaml")
    jason = bookinfo.page(5, user="jason")
    assert jason.kinds == {"ratings-unavailable": 5}, jason.body
    assert "Book Reviews" in jason.body
    assert bookinfo.page(5).kinds == {"none": 5}
    # The abort is the proxy's answer to the caller: a 500 from the ratings route for jason.
    direct = bookinfo.fetch("http://ratings:9080/ratings/0", 3, {"end-user": "jason"})
    assert direct.statuses == {500: 3}, direct.statuses


def test_traffic_shifting_80_20_within_3_percent(bookinfo: Bookinfo) -> None:
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml")
    assert bookinfo.fetch("http://reviews:9080/reviews/0", 20).kinds == {"none": 20}
    bookinfo.apply(NETWORKING / "virtual-service-reviews-80-20.yaml")
    n = 2000
    split = bookinfo.fetch("http://reviews:9080/reviews/0", n)
    assert split.statuses == {200: n}, split.statuses
    assert set(split.kinds) <= {"none", "black"}, split.kinds  # v1 and v2 only
    assert abs(split.kinds.get("none", 0) / n - 0.80) <= 0.03, split.kinds
    assert abs(split.kinds.get("black", 0) / n - 0.20) <= 0.03, split.kinds
    # 50/50 between v2 and v3: both colours, nothing from v1.
    bookinfo.apply(NETWORKING / "virtual-service-reviews-v2-v3.yaml")
    halves = bookinfo.fetch("http://reviews:9080/reviews/0", 100)
    assert set(halves.kinds) == {"black", "red"}, halves.kinds


def test_request_timeouts(bookinfo: Bookinfo) -> None:
    task = TASKS / "request-timeouts"
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml")
    # A 2 s delay on ratings, then reviews routed to v2 with a 0.5 s timeout: the sidecar
    # answers productpage's calls to reviews with 504, so the page shows the reviews error.
    bookinfo.apply(task / "ratings-delay-2s.yaml")
    bookinfo.apply(task / "reviews-v2-timeout.yaml")
    page = bookinfo.page()
    assert page.kinds == {"reviews-unavailable": 1}, page.body
    direct = bookinfo.fetch("http://reviews:9080/reviews/0")
    assert direct.statuses == {504: 1}, (direct.statuses, direct.body)
    assert direct.body == "upstream request timeout"


def _gateway(path: str, *, data: bytes | None = None, cookie: str | None = None) -> tuple[int, str, dict[str, str]]:
    headers = {"Cookie": cookie} if cookie else {}
    req = urllib.request.Request(f"http://127.0.0.1:{GATEWAY_PORT}{path}", data=data, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)
    except (urllib.error.URLError, OSError) as err:  # the gateway's listener not up yet
        return 0, str(err), {}


def test_ingress_gateway_renders_the_page_with_reviews_and_ratings(bookinfo: Bookinfo) -> None:
    bookinfo.apply(NETWORKING / "virtual-service-all-v1.yaml", NETWORKING / "virtual-service-reviews-jason-v2-v3.yaml")
    bookinfo.apply(NETWORKING / "bookinfo-gateway.yaml")

    def page() -> tuple[int, str, dict[str, str]] | None:
        got = _gateway("/productpage")
        return got if got[0] == 200 else None

    try:
        _, body, _ = wait_for(page, 60, "the product page through the ingress gateway", interval=0.5)
    except AssertionError as exc:  # say what the gateway and the mesh looked like
        pods = bookinfo.meshwork("get", "pods", "-A", "-o", "wide").stdout
        status = bookinfo.meshwork("proxy-status").stdout
        gateway = next((line.split()[1] for line in pods.splitlines() if "istio-ingressgateway" in line), "")
        logs = bookinfo.meshwork("logs", "-n", "istio-system", gateway, "--tail", "30").stdout if gateway else ""
        raise AssertionError(f"{exc}\nlast answer: {_gateway('/productpage')[:2]}\n{pods}\n{status}\n{logs}") from None
    assert "The Comedy of Errors" in body and "Book Details" in body and "Book Reviews" in body
    assert 'color="red"' in body and body.count("glyphicon-star\"") == 9  # v3's red stars: 5 + 4
    # Sign in through the gateway as a browser does: the cookie comes back, and jason gets v2.
    status, _, headers = _gateway("/login", data=urllib.parse.urlencode({"username": "jason"}).encode())
    assert status == 302 and headers.get("Set-Cookie", "").startswith("user=jason"), (status, headers)
    _, body, _ = _gateway("/productpage", cookie="user=jason")
    assert 'color="black"' in body and "jason" in body
    status, _, headers = _gateway("/logout", cookie="user=jason")
    assert status == 302 and headers.get("Set-Cookie", "").startswith("user=;"), (status, headers)
    # The API the Gateway's VirtualService exposes, and a path it does not route (404).
    status, products, _ = _gateway("/api/v1/products")
    assert status == 200 and json.loads(products)[0]["title"] == "The Comedy of Errors"
    status, ratings, _ = _gateway("/api/v1/products/0/ratings")
    assert status == 200 and json.loads(ratings)["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}
    assert _gateway("/health")[0] == 404


# Runs in the sleep pod: n requests started together (a barrier), one thread each, as
# fortio -c n does; prints each answer's status.
BURST = r"""
import json, sys, threading, urllib.error, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
barrier, statuses = threading.Barrier(n), []
def one():
    barrier.wait()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read(); statuses.append(resp.status)
    except urllib.error.HTTPError as err:
        err.read(); statuses.append(err.code)
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(sorted(statuses)))
"""


def test_httpbin_sample_then_circuit_breaking(bookinfo: Bookinfo) -> None:
    if importlib.util.find_spec("httpbin") is None:
        pytest.skip("the httpbin sample runs the httpbin package: pip install 'meshwork[samples]'")
    bookinfo.apply(ISTIO / "httpbin" / "httpbin.yaml")

    def served() -> Fetched | None:
        got = bookinfo.fetch("http://httpbin:8000/headers")
        return got if got.statuses == {200: 1} else None

    headers = json.loads(wait_for(served, 60, "httpbin through the sleep pod's sidecar", interval=0.5).body)["headers"]
    assert headers["Host"] == "httpbin:8000", headers
    assert bookinfo.fetch("http://httpbin:8000/status/418").statuses == {418: 1}

    # "Circuit breaking": one connection, one pending request. Three requests at once to a
    # slow path: one is served, one waits for the connection, the third overflows with 503.
    bookinfo.apply(TASKS / "circuit-breaking" / "destination-rule-httpbin.yaml")
    ran = bookinfo.meshwork("exec", bookinfo.client_pod, "-n", NS, "--", sys.executable, "-c", BURST,
                            "http://httpbin:8000/delay/1", "3")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [200, 200, 503], ran.stdout
    # The overflow is the client proxy's own answer, not the host's: httpbin is not ejected.
    assert bookinfo.fetch("http://httpbin:8000/get", 5).statuses == {200: 5}


HELLO = r"""
import collections, json, urllib.request
seen = collections.Counter()
for _ in range(40):
    seen[urllib.request.urlopen("http://helloworld:5000/hello", timeout=10).read().decode().split(",")[0]] += 1
print(json.dumps(seen))
"""


def test_helloworld_sample_serves_both_versions(bookinfo: Bookinfo) -> None:
    bookinfo.apply(ISTIO / "helloworld" / "helloworld.yaml")

    def both() -> dict[str, int] | None:
        ran = bookinfo.meshwork("exec", bookinfo.client_pod, "-n", NS, "--", sys.executable, "-c", HELLO)
        seen: dict[str, int] = json.loads(ran.stdout) if ran.returncode == 0 else {}
        return seen if len(seen) == 2 else None

    seen = wait_for(both, 60, "answers from helloworld v1 and v2", interval=0.5)
    assert set(seen) == {"Hello version: v1", "Hello version: v2"}, seen
