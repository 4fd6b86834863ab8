"""Istio's "Mutual TLS Migration" task with Istio's own sample manifests, applied unmodified.

The task: ``kubectl apply -n foo -f samples/httpbin/httpbin.yaml`` (and sleep),
the same in ``bar``, sleep alone in ``legacy`` without injection; every client
reaches httpbin; after a ``STRICT`` PeerAuthentication in ``foo`` (the task's
inline manifest) the legacy client's request to httpbin.foo fails, the meshed
ones still get 200, and httpbin.bar still answers everyone. The files come from
../shared/conformance/istio; the test skips, saying why, without them.
(``test_mtls_migration.py`` covers the same with inline apps, probes and the
details of inbound capture.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SAMPLES = CONFORMANCE / "istio"
HTTPBIN = SAMPLES / "httpbin" / "httpbin.yaml"
SLEEP = SAMPLES / "sleep" / "sleep.yaml"
STRICT_FOO = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
"""


def _meshwork(node: Node, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                          timeout=60, input=stdin)  # fmt: skip


def _curl(node: Node, pod: str, ns: str, url: str) -> str:
    """``kubectl exec -n NS SLEEP -c sleep -- curl -s -o /dev/null -w "%{http_code}" URL``."""
    done = _meshwork(node, "exec", pod, "-n", ns, "-c", "sleep", "--", "curl", "-s", "-o", "/dev/null", "-m", "10",
                     "-w", "%{http_code}", url)  # fmt: skip
    return done.stdout.strip()


def test_mutual_tls_migration_with_istio_samples(tmp_path: Path) -> None:
    for path in (HTTPBIN, SLEEP):
        if not path.is_file():
            pytest.skip(absent_reason(path))
    home = tmp_path / "home"
    home.mkdir()
    with running_node(home) as node:
        for ns, labels in (("foo", {"istio-injection": "enabled"}), ("bar", {"istio-injection": "enabled"}),
                           ("legacy", {})):  # fmt: skip
            node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": ns, "labels": labels}})  # fmt: skip
        for ns, files in (("foo", (HTTPBIN, SLEEP)), ("bar", (HTTPBIN, SLEEP)), ("legacy", (SLEEP,))):
            for path in files:
                done = _meshwork(node, "apply", "-n", ns, "-f", str(path))
                assert done.returncode == 0, done.stderr

        def sleeps() -> dict[str, str] | None:
            found = {ns: p["metadata"]["name"] for ns in ("foo", "bar", "legacy") for p in node.pods(ns)
                     if p["metadata"]["labels"].get("app") == "sleep" and is_ready(p)}  # fmt: skip
            httpbins = [p for ns in ("foo", "bar") for p in node.pods(ns)
                        if p["metadata"]["labels"].get("app") == "httpbin" and is_ready(p)]  # fmt: skip
            return found if len(found) == 3 and len(httpbins) == 2 else None

        pods = wait_for(sleeps, 120, "sleep in foo, bar and legacy and httpbin in foo and bar, ready")
        # A pod outside the mesh has no proxy and no DNS: it calls the Service's ClusterIP, as
        # ``curl http://httpbin.foo:8000`` resolves to on a cluster.
        ips = {}
        for ns in ("foo", "bar"):
            svc = node.get(f"/api/v1/namespaces/{ns}/services/httpbin")
            assert svc is not None
            ips[ns] = svc["spec"]["clusterIP"]

        def url(source: str, target: str) -> str:
            host = f"httpbin.{target}" if source != "legacy" else ips[target]
            return f"http://{host}:8000/ip"

        # Before: every client reaches both (PERMISSIVE).
        for source in ("foo", "bar", "legacy"):
            for target in ("foo", "bar"):
                wait_for(lambda s=source, t=target: _curl(node, pods[s], s, url(s, t)) == "200", 30,
                         f"sleep.{source} -> httpbin.{target}: 200")  # fmt: skip

        done = _meshwork(node, "apply", "-f", "-", stdin=STRICT_FOO)
        assert done.returncode == 0, done.stderr

        # After STRICT in foo: the legacy client gets no answer from httpbin.foo (curl's 000) ...
        wait_for(lambda: _curl(node, pods["legacy"], "legacy", url("legacy", "foo")) == "000", 30,
                 "sleep.legacy -> httpbin.foo refused")  # fmt: skip
        # ... while the meshed clients still get 200, and httpbin.bar still answers everyone.
        for source in ("foo", "bar"):
            assert _curl(node, pods[source], source, url(source, "foo")) == "200", source
        for source in ("foo", "bar", "legacy"):
            assert _curl(node, pods[source], source, url(source, "bar")) == "200", source
