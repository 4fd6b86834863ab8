"""Istio's "Authorization on TCP traffic" task end to end, enforced by tcp-echo's sidecar.

The task (istio.io/latest/docs/tasks/security/authorization/authz-tcp/):
tcp-echo in a meshed namespace (its app listens on 9000, 9001 and 9002; the
Service exposes 9000 and 9001), then ``echo "port N" | nc tcp-echo N`` (and
the pod IP for 9002) under a sequence of AuthorizationPolicies named
``tcp-policy``:

* none: 9000 and 9001 answer;
* ALLOW ``methods: ["GET"]`` on 9000: HTTP-only fields never match a TCP
  connection, so nothing is allowed: every port is refused;
* ALLOW ``ports: ["9000", "9001"]``: those answer (the task also shows 9002
  refused; see below);
* DENY ``methods: ["GET"]`` on 9000: the DENY ignores the HTTP-only field
  and denies all of 9000; 9001 answers.

(The task applies the ports policy before the methods one; here the methods
one comes first so that each change of policy shows on a port, which is how
the test knows the sidecar has it.)

``tcp-echo.yaml`` comes unmodified from ../shared/conformance/istio/tcp-echo
(the test skips, saying why, without it); the policies are the task's,
inline. The client is this process, as ``nc`` in the task's sleep pod is: a
meshed pod's TCP goes out directly (its sidecar only proxies HTTP), to the
Service's ClusterIP (the node's forwarder) and on to the pod IP, where
tcp-echo's sidecar captures each port. A refused connection is closed by the
sidecar without an answer, and the app never sees it.

Port 9002 is neither declared by the pod nor sent to by the Service, so the
sidecar does not capture it (Istio's iptables capture every port and pass
undeclared ones through): it is unreachable here with or without a policy,
so the task's 9002 step is not checked (it could not fail).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support.conformance import CONFORMANCE, absent_reason
from support.node import is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SAMPLE = CONFORMANCE / "istio" / "tcp-echo" / "tcp-echo.yaml"
NAMESPACE = "foo"  # the task's

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: foo
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: {action}
  rules:
  - to:
    - operation:
{operation}
"""
ALLOW_PORTS = POLICY.format(action="ALLOW", operation='        ports: ["9000", "9001"]')
ALLOW_GET = POLICY.format(action="ALLOW", operation='        methods: ["GET"]\n        ports: ["9000"]')
DENY_GET = POLICY.format(action="DENY", operation='        methods: ["GET"]\n        ports: ["9000"]')


def _nc(ip: str, port: int) -> str:
    """``echo "port N" | nc IP N``: the answer, or "" when the connection was refused or closed."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(f"port {port}\n".encode())
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while data := s.recv(4096):
                chunks.append(data)
    except OSError:
        return ""
    return b"".join(chunks).decode()


def test_authorization_on_tcp_traffic(tmp_path: Path) -> None:
    if not SAMPLE.is_file():
        pytest.skip(absent_reason(SAMPLE))
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        done = node.cli("apply", "-n", NAMESPACE, "-f", str(SAMPLE))
        assert done.returncode == 0, done.stderr

        def ready() -> str | None:
            pods = [p for p in node.pods(NAMESPACE) if is_ready(p)]
            meshed = [p for p in pods if any(c["name"] == "istio-proxy" for c in p["spec"].get("initContainers", [])
                                             + p["spec"]["containers"])]  # fmt: skip
            return str(meshed[0]["status"]["podIP"]) if meshed else None

        pod_ip = wait_for(ready, 60, "tcp-echo ready with its sidecar")
        service = node.get(f"/api/v1/namespaces/{NAMESPACE}/services/tcp-echo")
        assert service is not None
        cluster_ip = str(service["spec"]["clusterIP"])

        def answers(port: int, ip: str = cluster_ip) -> bool:
            return _nc(ip, port) == f"hello port {port}\n"

        def apply(policy: str) -> None:
            done = node.cli("apply", "-n", NAMESPACE, "-f", "-", stdin=policy)
            assert done.returncode == 0, done.stderr

        # No policy: the Service's ports answer.
        wait_for(lambda: answers(9000) or None, 30, "tcp-echo to answer on 9000")
        assert answers(9001)
        assert answers(9000, pod_ip) and answers(9001, pod_ip)  # the captured pod IP's ports too

        # ALLOW with an HTTP-only field: it never matches a connection; nothing is allowed.
        apply(ALLOW_GET)
        wait_for(lambda: not answers(9000) or None, 30, "9000 refused under ALLOW methods GET")
        assert not answers(9001) and not answers(9001, pod_ip)

        # ALLOW ports 9000 and 9001: those answer.
        apply(ALLOW_PORTS)
        wait_for(lambda: answers(9000) or None, 30, "9000 allowed by ALLOW ports")
        assert answers(9001) and answers(9000, pod_ip)

        # DENY with an HTTP-only field: ignored, so all of 9000 is denied; 9001 is not named.
        apply(DENY_GET)
        wait_for(lambda: not answers(9000) or None, 30, "9000 refused under DENY methods GET")
        assert not answers(9000, pod_ip)
        assert answers(9001) and answers(9001, pod_ip)

        # No policy again: 9000 answers again (policies follow the config live).
        done = node.cli("delete", "authorizationpolicy", "tcp-policy", "-n", NAMESPACE)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: answers(9000) or None, 30, "9000 answering once the policy is gone")


GATEWAY_POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-tcp
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: {action}
  rules:
  - to:
    - operation:
{operation}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_authorization_on_the_ingress_gateways_tcp_listener(tmp_path: Path) -> None:
    """The gateway's TCP listener (Istio's TCP traffic shifting setup, ``tcp-echo-all-v1.yaml``)
    under policies selecting the ingress gateway: ``destination.port`` is the Gateway server's."""
    routes = SAMPLE.parent / "tcp-echo-all-v1.yaml"
    for path in (SAMPLE, routes):
        if not path.is_file():
            pytest.skip(absent_reason(path))
    port = _free_port()
    with running_node(tmp_path, "--ingress-gateway", "--ingress-ports", f"31400:{port}") as node:
        node.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}})  # fmt: skip
        for path in (SAMPLE, routes):
            done = node.cli("apply", "-n", NAMESPACE, "-f", str(path))
            assert done.returncode == 0, done.stderr

        def apply(policy: str) -> None:
            done = node.cli("apply", "-f", "-", stdin=policy)
            assert done.returncode == 0, done.stderr

        def answers() -> bool:
            return _nc("127.0.0.1", port).startswith("hello ")

        wait_for(lambda: answers() or None, 60, "the gateway to route :31400 to tcp-echo")
        # ALLOW with an HTTP-only field: no connection is allowed through the gateway.
        apply(GATEWAY_POLICY.format(action="ALLOW", operation='        methods: ["GET"]'))
        wait_for(lambda: not answers() or None, 30, "the gateway refusing under ALLOW methods GET")
        # ALLOW the Gateway server's port (not the host port it is bound on): allowed again.
        apply(GATEWAY_POLICY.format(action="ALLOW", operation='        ports: ["31400"]'))
        wait_for(lambda: answers() or None, 30, "the gateway allowing port 31400")
        # DENY that port: refused.
        apply(GATEWAY_POLICY.format(action="DENY", operation='        ports: ["31400"]'))
        wait_for(lambda: not answers() or None, 30, "the gateway refusing under DENY port 31400")
