"""What a ProxyPlugin costs per request, beside the same decision without one.

The proxy's per-request routing decision (``MeshDecider.decide``: parse the
routing view, match the VirtualService route, build the plan) is timed over a
compiled table, first with no plugin, then with one ProxyPlugin whose
``on_request`` adds a header (the common case), then one that reads a header
and answers some requests itself. The engine's own cost per request (about
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

from meshwork.core.http1 import RequestParser
from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.proxy.mesh import MeshDecider
from meshwork.proxy.plan import Downstream
from meshwork.proxy.plugins import selected

N = 50_000
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
HEAD = b"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
ADD_HEADER = "def on_request(request):\n    request.headers_to_add['x-team'] = request.config['team']\n"
GATE = ("def on_request(request):\n    if request.headers.get('x-block'):\n"
        "        return 403, 'no'\n    request.headers_to_add['x-checked'] = '1'\n")  # fmt: skip


def _request() -> object:
    parser = RequestParser()
    got = parser.receive_data(HEAD) if hasattr(parser, "receive_data") else None
    events = got if isinstance(got, list) else [parser.next_event()]  # type: ignore[attr-defined]
    return events[0]


def _per_request(decider: MeshDecider, request: object) -> float:
    for _ in range(2000):
        decider.decide(request, DOWNSTREAM)  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(N):
        decider.decide(request, DOWNSTREAM)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / N * 1e6


def main() -> None:
    table = compile_snapshot(snapshot_from_wire(SNAPSHOT))
    request = _request()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        add, gate = Path(tmp, "add.py"), Path(tmp, "gate.py")
        add.write_text(ADD_HEADER)
        gate.write_text(GATE)

        def plugin(path: Path) -> dict[str, object]:
            return {"metadata": {"namespace": "default", "name": path.stem},
                    "spec": {"module": str(path), "config": {"team": "payments"}}}  # fmt: skip

        base = _per_request(MeshDecider(table, rng=random.Random(1)), request)
        rows.append(("no plugin (reference)", base))
        for label, paths in (("one plugin adding a header", [add]), ("two plugins (header + gate)", [add, gate])):
            plugins = selected([plugin(p) for p in paths], {"app": "client"})
            rows.append((label, _per_request(MeshDecider(table, rng=random.Random(1), plugins=plugins), request)))
    print(f"python {sys.version.split()[0]}, {N} decisions each\n")
    print("| routing decision per request | µs | added by plugins |")
    print("|---|---|---|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} | {us - base:+.1f} µs |")


if __name__ == "__main__":
    main()
