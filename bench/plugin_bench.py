"""What a ProxyPlugin costs per request, beside the same work without one.

The proxy's per-request decisions are timed over a compiled table: the
routing decision (``MeshDecider.decide``: parse the routing view, match the
VirtualService route, build the plan), the endpoint pick and release on the
plan's cluster, and the plan's ``on_response`` when a plugin set one (what
the engine calls with the upstream's head). First with no plugin, then with
one ProxyPlugin whose ``on_request`` adds a header (the common case), two
(that one and one that reads a header and could answer itself), one whose
``on_response`` sets a response header, and one whose ``pick`` pins the
endpoint named by a request header. The engine's own cost per request (about
11 µs of Python plus the kernel's share, see bench/proxy_bench.py) is the
scale to read these against.

Run: ``.venv/bin/python -m bench.plugin_bench`` (``make bench`` runs it too).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.proxy.mesh import MeshDecider
from meshwork.proxy.plan import Downstream, Endpoint, Forward
from meshwork.proxy.plugins import selected

N = 50_000
ROUNDS = 10
SNAPSHOT = {
    "version": "1", "proxy": {"name": "client", "namespace": "default", "role": "sidecar", "labels": {"app": "client"}},
    "services": [{"name": "reviews", "namespace": "default", "clusterIP": "127.96.0.9",
                  "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
                  "endpoints": [{"ip": f"127.1.0.{i}", "ports": {"http": 9080}, "labels": {"version": "v1"},
                                 "ready": True, "name": f"reviews-{i}"} for i in range(1, 4)]}],
    "virtualServices": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                         "metadata": {"name": "reviews", "namespace": "default"},
                         "spec": {"hosts": ["reviews"], "http": [
                             {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                              "route": [{"destination": {"host": "reviews"}}]},
                             {"route": [{"destination": {"host": "reviews"}}]}]}}],
}  # fmt: skip
DOWNSTREAM = Downstream("127.1.0.50", 15001)
HEAD = (b"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent: bench\r\n"
        b"Accept: */*\r\nX-Pin: reviews-2\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: bench\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Content-Type: application/json\r\nContent-Length: 120\r\n\r\n")
NOTHING_TRIED: frozenset[Endpoint] = frozenset()
ADD_HEADER = "def on_request(request):\n    request.headers_to_add['x-team'] = request.config['team']\n"
GATE = ("def on_request(request):\n    if request.headers.get('x-block'):\n"
        "        return 403, 'no'\n    request.headers_to_add['x-checked'] = '1'\n")  # fmt: skip
TAG = ("def on_response(request, response):\n"
       "    response.headers_to_set['x-served-for'] = request.config['team']\n")  # fmt: skip
PIN = ("def pick(request, endpoints):\n    wanted = request.headers.get('x-pin')\n"
       "    for e in endpoints:\n        if e.name == wanted:\n            return e\n")  # fmt: skip


def _request() -> Request:
    got = RequestParser().receive_request(HEAD)
    assert got is not None
    return got[0]


def _one(decider: MeshDecider, request: Request) -> None:
    """What the proxy decides for one forwarded request: the plan, its endpoint, its response edits."""
    chosen = decider.decide(request, DOWNSTREAM)
    assert isinstance(chosen, Forward)  # the route always forwards
    cluster = chosen.cluster
    endpoint = cluster.pick(NOTHING_TRIED)
    assert endpoint is not None
    cluster.release(endpoint, 200)
    hook = chosen.on_response
    if hook is not None:
        hook(200, RESPONSE)


def _round(decider: MeshDecider, request: Request, n: int) -> float:
    """µs per request over ``n`` requests."""
    start = time.perf_counter()
    for _ in range(n):
        _one(decider, request)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    table = compile_snapshot(snapshot_from_wire(SNAPSHOT))
    request = _request()
    with tempfile.TemporaryDirectory() as tmp:
        add, gate, tag, pin = (Path(tmp, f"{name}.py") for name in ("add", "gate", "tag", "pin"))
        for path, text in ((add, ADD_HEADER), (gate, GATE), (tag, TAG), (pin, PIN)):
            path.write_text(text)

        def plugin(path: Path) -> dict[str, object]:
            return {"metadata": {"namespace": "default", "name": path.stem},
                    "spec": {"module": str(path), "config": {"team": "payments"}}}  # fmt: skip

        cases: list[tuple[str, list[dict[str, object]]]] = [("no plugin (reference)", [])] + [
            (label, [plugin(p) for p in paths])
            for label, paths in (("one plugin adding a header", [add]), ("two plugins (header + gate)", [add, gate]),
                                 ("one response hook setting a header", [tag]),
                                 ("one picker pinning by request header", [pin]))
        ]  # fmt: skip
        deciders = [MeshDecider(table, rng=random.Random(1), plugins=selected(raw, {"app": "client"}))
                    for _, raw in cases]  # fmt: skip
        for decider in deciders:
            _round(decider, request, 2000)  # warm up
        # The cases take turns, round after round, so load from elsewhere falls on all of them
        # alike; each keeps its best round (the least disturbed).
        best = [float("inf")] * len(cases)
        for _ in range(ROUNDS):
            for i, decider in enumerate(deciders):
                best[i] = min(best[i], _round(decider, request, N // ROUNDS))
    base = best[0]
    print(f"python {sys.version.split()[0]}, {N} requests each, best of {ROUNDS} interleaved rounds\n")
    print("| decision + pick + response edits per request | µs | added by plugins |")
    print("|---|---|---|")
    for (label, _), us in zip(cases, best, strict=True):
        print(f"| {label} | {us:.1f} | {us - base:+.1f} µs |")


if __name__ == "__main__":
    main()
