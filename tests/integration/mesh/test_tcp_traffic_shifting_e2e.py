"""Istio's "TCP Traffic Shifting" task end to end, through the ingress gateway's TCP listener.

The task (istio.io/latest/docs/tasks/traffic-management/tcp-traffic-shifting/):
a namespace labelled ``istio-injection=enabled``, the tcp-echo Service with a
v1 and a v2 Deployment, ``tcp-echo-all-v1.yaml`` (a Gateway with a
``protocol: TCP`` server on 31400, a DestinationRule with subsets v1/v2, a
VirtualService ``tcp`` route to v1), then ``echo "$(date)" | nc
$INGRESS_HOST $TCP_INGRESS_PORT`` repeatedly: every answer comes from v1. Then
``tcp-echo-20-v2.yaml`` (weights 80/20): about one connection in five is
answered by v2.

The manifests come unmodified from ../shared/conformance/istio/tcp-echo (the
test skips, saying why, without them). Its ``tcp-echo.yaml`` has the Service
and a v1 Deployment whose server prefixes ``hello``; the v2 Deployment is the
``tcp-echo-v2`` of Istio's ``tcp-echo-services.yaml`` (prefix ``two``), written
here. The ingress Service maps Gateway port 31400 to a free host port, as
``TCP_INGRESS_PORT`` names the Service's port for 31400 in the task.
"""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for
from support.tcpecho import V2, binomial_interval

pytestmark = pytest.mark.integration

SAMPLE = CONFORMANCE / "istio" / "tcp-echo"
NAMESPACE = "istio-io-tcp-traffic-shifting"  # the task's namespace
# 80/20 over N connections: the share of v2 must fall in the two-sided binomial interval a
# correct 80/20 split leaves with probability below FALSE_FAILURE. N = 3000 makes that
# interval narrower than the issue's +-3 % (checked below, from the exact binomial tails).
CONNECTIONS = 3000
FALSE_FAILURE = 1e-4
V2_SHARE = 0.2
CONCURRENCY = 16  # clients at a time (nc in a loop, several shells)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nc(port: int, line: bytes = b"Mon Jan  1 00:00:00 UTC 2024\n") -> str:
    """``echo "$(date)" | nc 127.0.0.1 PORT``: send a line, close our side, read to the end."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(line)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while data := s.recv(4096):
                chunks.append(data)
    except OSError as exc:
        return f"error: {exc}"
    return b"".join(chunks).decode()


def _prefixes(port: int, n: int) -> Counter[str]:
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda _: _nc(port), range(n)))
    return Counter(a.split(" ", 1)[0] if a.endswith("UTC 2024\n") else a for a in answers)


def _gateway_metrics(node: Node) -> str:
    pod = next(p for p in node.pods("istio-system") if is_ready(p))
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:15020/stats/prometheus", timeout=10) as r:
        return str(r.read().decode())


def test_the_interval_is_inside_the_issues_three_percent() -> None:
    lo, hi = binomial_interval(CONNECTIONS, V2_SHARE, FALSE_FAILURE)
    assert V2_SHARE - 0.03 <= lo / CONNECTIONS and hi / CONNECTIONS <= V2_SHARE + 0.03, (lo, hi)


def test_tcp_traffic_shifting_through_the_ingress_gateway(tmp_path: Path) -> None:
    files = [SAMPLE / name for name in ("tcp-echo.yaml", "tcp-echo-all-v1.yaml", "tcp-echo-20-v2.yaml")]
    for path in files:
        if not path.is_file():
            pytest.skip(absent_reason(path))
    port = _free_port()
    with running_node(tmp_path, "--ingress-gateway", "--ingress-ports", f"31400:{port}") as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        done = node.cli("apply", "-n", NAMESPACE, "-f", str(files[0]))
        assert done.returncode == 0, done.stderr
        done = node.cli("apply", "-n", NAMESPACE, "-f", "-", stdin=V2)
        assert done.returncode == 0, done.stderr

        def ready() -> list[str] | None:
            pods = [p for p in node.pods(NAMESPACE) if is_ready(p)]
            versions = sorted(p["metadata"]["labels"].get("version", "") for p in pods)
            meshed = all(any(c["name"] == "istio-proxy" for c in p["spec"].get("initContainers", [])
                             + p["spec"]["containers"]) for p in pods)  # fmt: skip
            return versions if versions == ["v1", "v2"] and meshed else None

        wait_for(ready, 120, "tcp-echo v1 and v2 ready, each with its sidecar")
        assert [p for p in node.pods("istio-system") if is_ready(p)], "the ingress gateway pod"

        # All to v1: every connection is answered by v1 (this sample's v1 prefixes "hello").
        done = node.cli("apply", "-n", NAMESPACE, "-f", str(files[1]))
        assert done.returncode == 0, done.stderr
        wait_for(lambda: _nc(port).startswith("hello ") or None, 60, "the gateway to route :31400 to v1")
        answers = _prefixes(port, 20)
        assert answers == Counter({"hello": 20}), answers
        # The whole line comes back, and the connection ends when the client's side did (half-close).
        assert _nc(port, b"a line\n") == "hello a line\n"

        # 80/20: about one connection in five goes to v2, chosen per connection; a connection
        # opened before the change goes on with its upstream.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"before\n")
            assert held.recv(100) == b"hello before\n"
            done = node.cli("apply", "-n", NAMESPACE, "-f", str(files[2]))
            assert done.returncode == 0, done.stderr
            wait_for(lambda: _nc(port).startswith("two ") or None, 60, "a first connection answered by v2")
            held.sendall(b"after\n")
            assert held.recv(100) == b"hello after\n"
        answers = _prefixes(port, CONNECTIONS)
        assert set(answers) == {"hello", "two"}, answers
        lo, hi = binomial_interval(CONNECTIONS, V2_SHARE, FALSE_FAILURE)
        assert lo <= answers["two"] <= hi, (answers, lo, hi)

        # Istio's TCP metrics for these connections, reported by the gateway (reporter="source").
        metrics = _gateway_metrics(node)
        opened = [line for line in metrics.splitlines() if line.startswith("istio_tcp_connections_opened_total{")]
        assert any('destination_version="v2"' in line for line in opened), opened
        assert any('destination_version="v1"' in line for line in opened), opened
        assert "istio_tcp_sent_bytes_total{" in metrics and "istio_tcp_received_bytes_total{" in metrics

        # No route for the port any more (the Gateway stays): connections are closed unanswered.
        done = node.cli("delete", "virtualservice", "tcp-echo", "-n", NAMESPACE)
        assert done.returncode == 0, done.stderr
        # (Closing with the client's line unread makes the kernel reset the connection.)
        unanswered = ("", "error: [Errno 104] Connection reset by peer")
        wait_for(lambda: _nc(port) in unanswered or None, 60, "connections to :31400 closed without a route")
