"""Istio's "Mutual TLS Migration" task, end to end: the sidecar owns the pod IP (inbound capture).

A real server and node agent run Istio's samples: httpbin and sleep in the
meshed namespaces ``foo`` and ``bar``, sleep alone in ``legacy`` (no
injection). Clients call the way the task does, ``kubectl exec sleep --
curl http://httpbin.foo:8000/ip``: here ``meshwork exec`` runs the machine's
curl with the sleep container's environment (a meshed one sends through its
sidecar as its HTTP proxy; the legacy one has no proxy and calls the
ClusterIP, which the node's forwarder sends to httpbin's pod IP).

Before any PeerAuthentication every client gets 200. After ``STRICT`` in
``foo`` the legacy client gets nothing (the connection closes: no answer,
as Istio's task shows with ``000``/exit 56), the meshed ones still get 200,
a plaintext connection straight to httpbin's ``$POD_IP:8080`` gets nothing
either, and the app's probes (sent by the agent to the app's own address)
keep it Ready.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from meshwork.core.inject import app_ip
from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

HTTPBIN = {"name": "httpbin", "image": "docker.io/mccutchen/go-httpbin:v2.15.0", "ports": [{"containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/get", "port": 8080}, "periodSeconds": 1},
           "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 2}}  # fmt: skip
SLEEP = {"name": "sleep", "image": "docker.io/curlimages/curl:8.16.0", "command": ["/bin/sleep", "infinity"]}
# An app that (wrongly) listens on 0.0.0.0 in a meshed pod: the sidecar holds its port on the pod IP.
WILDCARD = (
    "import http.server\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8099), http.server.BaseHTTPRequestHandler).serve_forever()\n"
)
STRICT_FOO = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "foo"}, "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip


def _ns(name: str, meshed: bool) -> dict[str, Any]:
    labels = {"istio-injection": "enabled"} if meshed else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _app(name: str, ns: str, container: dict[str, Any], port: int | None, target: int = 8080) -> list[dict[str, Any]]:
    labels = {"app": name}
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": {**labels, "version": "v1"}},
                               "spec": {"serviceAccountName": name, "terminationGracePeriodSeconds": 0,
                                        "containers": [container]}}}},
    ]  # fmt: skip
    if port is not None:
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": target}]}})  # fmt: skip
    return out


class Cluster:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.pods: dict[str, dict[str, Any]] = {}  # "app.ns" -> pod

    def meshwork(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MESHWORK_SERVER": self.node.server.url, "MESHWORK_TOKEN": self.node.server.token}
        return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, input=stdin)  # fmt: skip

    def apply(self, obj: dict[str, Any]) -> None:
        done = self.meshwork("apply", "-f", "-", stdin=json.dumps(obj))
        assert done.returncode == 0, done.stderr

    def curl(self, source: str, url: str) -> str:
        """``kubectl exec sleep -n NS -- curl -s -o /dev/null -w %{http_code} URL``: the status, or
        ``000`` and curl's exit code when no answer came."""
        app, ns = source.split(".")
        pod = self.pods[source]["metadata"]["name"]
        done = self.meshwork("exec", pod, "-n", ns, "-c", app, "--", "curl", "-s", "-o", "/dev/null",
                             "-m", "10", "-w", "%{http_code}", url)  # fmt: skip
        return done.stdout.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})")

    def cluster_ip(self, name: str, ns: str) -> str:
        svc = self.node.get(f"/api/v1/namespaces/{ns}/services/{name}")
        assert svc is not None
        return str(svc["spec"]["clusterIP"])


def plaintext(ip: str, port: int) -> bytes:
    """One plaintext GET to ``ip:port``; what came back (b"": nothing, the connection closed or was refused)."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(b"GET /ip HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            return got
    except OSError:  # refused or reset: no answer all the same
        return b""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("mtls-migration") / "home"
    home.mkdir()
    with running_node(home) as node:
        c = Cluster(node)
        for ns, meshed in (("foo", True), ("bar", True), ("legacy", False)):
            c.apply(_ns(ns, meshed))
        for obj in (_app("httpbin", "foo", HTTPBIN, 8000) + _app("sleep", "foo", SLEEP, 80)
                    + _app("httpbin", "bar", HTTPBIN, 8000) + _app("sleep", "bar", SLEEP, 80)
                    + _app("sleep", "legacy", SLEEP, 80)):  # fmt: skip
            c.apply(obj)
        wanted = {"httpbin.foo", "sleep.foo", "httpbin.bar", "sleep.bar", "sleep.legacy"}

        def ready() -> dict[str, dict[str, Any]] | None:
            got = {f"{p['metadata']['labels']['app']}.{ns}": p for ns in ("foo", "bar", "legacy")
                   for p in node.pods(ns) if is_ready(p) and not p["metadata"].get("deletionTimestamp")}  # fmt: skip
            return got if wanted <= set(got) else None

        c.pods = wait_for(ready, 120, "httpbin and sleep ready in foo, bar and legacy")
        yield c


def _reach(c: Cluster, source: str, url: str, want: str) -> str:
    got: list[str] = []

    def check() -> bool:
        got.append(c.curl(source, url))
        if got[-1] != want:  # what the proxy said, for the failure message
            app, ns = source.split(".")
            done = c.meshwork("exec", c.pods[source]["metadata"]["name"], "-n", ns, "-c", app, "--", "curl", "-s",
                              "-i", "-m", "10", url)  # fmt: skip
            got[-1] += " " + done.stdout[:400]
        return got[-1] == want

    try:
        wait_for(check, 30, f"{source} -> {url} answering {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last {got[-1:]}") from None
    return got[-1]


def test_the_app_gets_its_own_address_and_the_sidecar_keeps_the_pod_ip(cluster: Cluster) -> None:
    c = cluster
    pod = c.pods["sleep.foo"]
    outer = pod["status"]["podIP"]
    inner = app_ip(outer)
    assert inner is not None and inner != outer
    done = c.meshwork("exec", pod["metadata"]["name"], "-n", "foo", "-c", "sleep", "--", "printenv", "POD_IP",
                      "NO_PROXY", "http_proxy")  # fmt: skip
    assert done.returncode == 0, done.stderr
    pod_ip, no_proxy, proxy = done.stdout.split()
    assert pod_ip == inner
    assert inner in no_proxy.split(",")
    assert proxy == f"http://{outer}:15001"  # the sidecar is on the pod IP
    # A pod without sidecar is unchanged: its app has the pod IP.
    legacy = c.pods["sleep.legacy"]
    done = c.meshwork("exec", legacy["metadata"]["name"], "-n", "legacy", "--", "printenv", "POD_IP")
    assert done.stdout.strip() == legacy["status"]["podIP"]
    # Endpoints list the pod IP (the sidecar's), not the app's own address.
    eps = c.node.get("/api/v1/namespaces/foo/endpoints/httpbin")
    assert eps is not None
    addresses = [a["ip"] for s in eps.get("subsets") or [] for a in s.get("addresses") or []]
    assert addresses == [c.pods["httpbin.foo"]["status"]["podIP"]]


def test_mutual_tls_migration(cluster: Cluster) -> None:
    c = cluster
    foo_ip = c.cluster_ip("httpbin", "foo")
    bar_ip = c.cluster_ip("httpbin", "bar")
    httpbin = c.pods["httpbin.foo"]
    pod_ip = httpbin["status"]["podIP"]

    # Before: every client reaches both httpbins (PERMISSIVE: the sidecars take plaintext too).
    for source in ("sleep.foo", "sleep.bar"):
        for target in ("foo", "bar"):
            _reach(c, source, f"http://httpbin.{target}:8000/ip", "200")
    _reach(c, "sleep.legacy", f"http://{foo_ip}:8000/ip", "200")
    _reach(c, "sleep.legacy", f"http://{bar_ip}:8000/ip", "200")
    # The legacy call really went through httpbin's sidecar (it owns the pod IP): it counted it.
    assert plaintext(pod_ip, 8080).startswith(b"HTTP/1.1 200")

    c.apply(STRICT_FOO)

    # The legacy client gets nothing from httpbin.foo: the connection closes without an answer.
    answers: list[str] = []

    def refused() -> bool:
        answers.append(c.curl("sleep.legacy", f"http://{foo_ip}:8000/ip"))
        return answers[-1].startswith("000")

    wait_for(refused, 30, "sleep.legacy -> httpbin.foo refused under STRICT")
    # Not a fluke of one connection: it stays refused, and the machine's own clients fare no better.
    assert c.curl("sleep.legacy", f"http://{foo_ip}:8000/ip").startswith("000")
    assert plaintext(foo_ip, 8000) == b""
    assert plaintext(pod_ip, 8080) == b""  # straight to the pod IP and app port: the sidecar refuses
    assert plaintext(pod_ip, 15006) == b""
    # The meshed clients still get 200 (their sidecars speak mTLS), and httpbin.bar still takes everyone.
    for source in ("sleep.foo", "sleep.bar"):
        assert _reach(c, source, "http://httpbin.foo:8000/ip", "200") == "200"
    assert _reach(c, "sleep.legacy", f"http://{bar_ip}:8000/ip", "200") == "200"

    # Probes go to the app's own address, so they need no mTLS: httpbin stays Ready and is never
    # restarted, and a new httpbin pod started under STRICT turns Ready through its readiness probe.
    now = c.node.pod(httpbin["metadata"]["name"], "foo")
    assert now is not None and is_ready(now)
    status = next(s for s in now["status"]["containerStatuses"] if s["name"] == "httpbin")
    assert status["restartCount"] == 0
    reply = c.node.http.delete(f"/api/v1/namespaces/foo/pods/{httpbin['metadata']['name']}")
    assert reply.status == 200, reply.body

    def replaced() -> dict[str, Any] | None:
        return next((p for p in c.node.pods("foo", "app=httpbin") if is_ready(p)
                     and p["metadata"]["name"] != httpbin["metadata"]["name"]), None)  # fmt: skip

    fresh = wait_for(replaced, 90, "a new httpbin pod Ready under STRICT")
    assert plaintext(fresh["status"]["podIP"], 8080) == b""
    assert _reach(c, "sleep.foo", "http://httpbin.foo:8000/ip", "200") == "200"


def test_a_meshed_app_on_0000_is_told_to_bind_its_pod_ip(cluster: Cluster) -> None:
    c = cluster
    objs = _app("wild", "foo", {"name": "wild", "image": "python", "command": [sys.executable, "-c", WILDCARD],
                                "ports": [{"containerPort": 8099}]}, None)  # fmt: skip
    # Without the agent's bind shim (opted out, as with no C compiler): the app really takes 0.0.0.0.
    objs[1]["spec"]["template"]["metadata"]["annotations"] = {"meshwork.io/bind-rewrite": "false"}
    for obj in objs:
        c.apply(obj)

    def conflict() -> str | None:
        events = c.node.get("/api/v1/namespaces/foo/events") or {}
        return next((e["message"] for e in events.get("items") or []
                     if e.get("reason") == "PortConflict" and "wild" in e["involvedObject"]["name"]), None)  # fmt: skip

    message = wait_for(conflict, 60, "a PortConflict event for the app on 0.0.0.0")
    pod = next(p for p in c.node.pods("foo", "app=wild"))
    inner = app_ip(pod["status"]["podIP"])
    assert f"$POD_IP ({inner})" in message and "sidecar" in message, message


def echo(ip: str, port: int) -> bytes:
    """One line to Istio's tcp-echo; its answer (b"": refused or closed)."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(b"world\n")
            got = b""
            while not got.endswith(b"\n") and (chunk := s.recv(65536)):
                got += chunk
            return got
    except OSError:
        return b""


def test_a_tcp_port_is_spliced_to_the_app_and_closed_under_strict(cluster: Cluster) -> None:
    c = cluster
    echo_server = {"name": "tcp-echo", "image": "docker.io/istio/tcp-echo-server:1.3",
                   "ports": [{"containerPort": 9000}]}  # fmt: skip
    objects = _app("tcp-echo", "bar", echo_server, 9000, 9000)
    objects[-1]["spec"]["ports"][0]["name"] = "tcp"  # Istio's protocol selection: not HTTP
    for obj in objects:
        c.apply(obj)
    pod = wait_for(lambda: next((p for p in c.node.pods("bar", "app=tcp-echo") if is_ready(p)), None), 90,
                   "tcp-echo ready")  # fmt: skip
    pod_ip, service_ip = pod["status"]["podIP"], c.cluster_ip("tcp-echo", "bar")
    # Through the sidecar (it owns the pod IP) and through the ClusterIP forwarder: bytes as they are.
    wait_for(lambda: echo(pod_ip, 9000) == b"hello world\n", 30, "tcp-echo answering on its pod IP")
    wait_for(lambda: echo(service_ip, 9000) == b"hello world\n", 30, "tcp-echo answering on its ClusterIP")
    c.apply({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "tcp-echo", "namespace": "bar"},
             "spec": {"selector": {"matchLabels": {"app": "tcp-echo"}}, "mtls": {"mode": "STRICT"}}})  # fmt: skip
    wait_for(lambda: echo(pod_ip, 9000) == b"", 30, "tcp-echo's pod IP refusing plaintext under STRICT")
    assert echo(service_ip, 9000) == b""
