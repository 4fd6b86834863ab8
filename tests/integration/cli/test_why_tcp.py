"""``meshwork why FROM_POD tcp://HOST:PORT`` against a real server, checked against the decisions.

No agent and no pods run: the explanation needs only API objects. The pods
are written with their sidecar container and given a pod IP through the
status subresource (as the agent would); the Service has no selector, so its
Endpoints are the ones written here. For each case the verdict ``why``
prints is compared with what ``mesh_tcp.route_clusterip`` and
``Authorizer.check_connection`` decide over the same objects read back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from meshwork.cli import cli
from meshwork.core.mesh.mesh_tcp import (
    clusterip_snapshot,
    compile_clusterip,
    route_clusterip,
    service_host,
)
from meshwork.core.security.authz import compile_policies
from meshwork.model.codec import validate_object
from support.server import Http, ServerProcess, running_server

pytestmark = pytest.mark.integration

NS = "default"
HOST = service_host("tcp-echo", NS, "cluster.local")
PODS = {"sleep": ("127.1.0.20", {"app": "sleep"}),
        "tcp-echo-v1": ("127.1.0.21", {"app": "tcp-echo", "version": "v1"}),
        "tcp-echo-v2": ("127.1.0.22", {"app": "tcp-echo", "version": "v2"})}  # fmt: skip
ISTIO = "/apis/networking.istio.io/v1/namespaces/default"
SECURITY = "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies"


def _ok(reply: Any) -> Any:
    assert reply.status < 300, (reply.status, reply.body)
    return reply.json


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [
                {"name": "app", "image": "tcp-echo", "command": ["tcp-echo"],
                 "ports": [{"name": "tcp", "containerPort": 9000}]},
                {"name": "istio-proxy", "image": "proxyv2", "command": ["meshwork", "sidecar"]}]}}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("why-tcp")) as srv:
        api = srv.client()
        try:
            for name, (ip, labels) in PODS.items():
                _ok(api.post(f"/api/v1/namespaces/{NS}/pods", _pod(name, labels)))
                _ok(api.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status",
                              {"status": {"podIP": ip, "phase": "Running"}}))  # fmt: skip
            _ok(api.post(f"/api/v1/namespaces/{NS}/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "tcp-echo"},
                "spec": {"ports": [{"name": "tcp", "port": 9000, "targetPort": 9000}]}}))  # fmt: skip
            _ok(api.post(f"/api/v1/namespaces/{NS}/endpoints", {
                "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "tcp-echo"},
                "subsets": [{"addresses": [{"ip": PODS[p][0], "targetRef": {"kind": "Pod", "name": p, "namespace": NS}}
                                           for p in ("tcp-echo-v1", "tcp-echo-v2")],
                             "ports": [{"name": "tcp", "port": 9000}]}]}))  # fmt: skip
            _ok(api.post(f"{ISTIO}/destinationrules", {
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "tcp-echo"},
                "spec": {"host": "tcp-echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                         {"name": "v2", "labels": {"version": "v2"}}]}}))  # fmt: skip
        finally:
            api.close()
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    for path in (f"{ISTIO}/virtualservices/tcp-echo", f"{SECURITY}/tcp-policy"):
        client.delete(path)  # the next test starts with neither
    client.close()


def why(server: ServerProcess, url: str, *extra: str) -> Result:
    env = {"MESHWORK_HOME": str(server.data_dir), "MESHWORK_SERVER": server.url, "MESHWORK_TOKEN": server.token}
    result = CliRunner().invoke(cli, ["why", "-n", NS, "sleep", url, *extra], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def verdict(result: Result) -> str:
    last = result.output.rstrip().splitlines()[-1]
    assert last.startswith("verdict: "), result.output
    return last.removeprefix("verdict: ")


def _items(api: Http, path: str) -> list[Any]:
    return [validate_object(o) for o in _ok(api.get(path))["items"]]


def expected_route(api: Http, draw: float) -> tuple[str | None, str]:
    """The cluster and first endpoint's pod the ClusterIP proxy's decision gives, from the API's objects."""
    eps = {f"{e.metadata.namespace}/{e.metadata.name}": e for e in _items(api, "/api/v1/endpoints")}
    labels = {(p.metadata.namespace, p.metadata.name): p.metadata.labels or {} for p in _items(api, "/api/v1/pods")}
    table = compile_clusterip(clusterip_snapshot(
        _items(api, "/api/v1/services"), eps, labels, _items(api, "/apis/networking.istio.io/v1/virtualservices"),
        _items(api, "/apis/networking.istio.io/v1/destinationrules")))  # fmt: skip
    decision = route_clusterip(table, HOST, 9000, draw)
    cluster = decision.cluster if decision is not None else table.clusters[f"outbound|9000||{HOST}"]
    assert cluster is not None
    return (decision.destination.cluster if decision is not None and decision.destination else None,
            cluster.endpoints[0].name)  # fmt: skip


def cluster_ip(api: Http) -> str:
    ip: str = _ok(api.get(f"/api/v1/namespaces/{NS}/services/tcp-echo"))["spec"]["clusterIP"]
    return ip


def test_an_80_20_tcp_route_sends_each_draw_where_the_service_proxy_would(server: ServerProcess, api: Http) -> None:
    _ok(api.post(f"{ISTIO}/virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "tcp-echo"},
        "spec": {"hosts": ["tcp-echo"], "tcp": [
            {"match": [{"port": 9000, "sourceLabels": {"app": "sleep"}}],
             "route": [{"destination": {"host": "tcp-echo", "subset": "v2"}}]},
            {"match": [{"port": 9000}], "route": [
                {"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v1"}, "weight": 80},
                {"destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v2"}, "weight": 20}]}]}}))  # fmt: skip
    for draw, pod in ((0.1, "tcp-echo-v1"), (0.9, "tcp-echo-v2")):
        cluster, first = expected_route(api, draw)
        assert first == pod and cluster is not None
        out = why(server, "tcp://tcp-echo:9000", "--draw", str(draw))
        assert f"picked for draw {draw:g}: {cluster}" in out.output, out.output
        assert "skipped route default/tcp-echo.tcp.0: match 0: sourceLabels app=sleep" in out.output, out.output
        assert f"to endpoint {PODS[pod][0]}:9000 ({pod}.default" in out.output, out.output
        assert verdict(out) == "allowed", out.output
    by_ip = why(server, f"tcp://{cluster_ip(api)}:9000", "--draw", "0.9")
    assert by_ip.output.splitlines()[2:] == why(server, f"tcp://{HOST}:9000", "--draw", "0.9").output.splitlines()[2:]


def test_no_route_is_round_robin_and_allowed(server: ServerProcess, api: Http) -> None:
    cluster, first = expected_route(api, 0.0)
    assert cluster is None
    out = why(server, "tcp://tcp-echo:9000")
    assert "no route: round robin over the Service's ready endpoints" in out.output, out.output
    assert f"({first}.default" in out.output and verdict(out) == "allowed", out.output


def _policy(action: str, operation: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "tcp-policy"},
            "spec": {"selector": {"matchLabels": {"app": "tcp-echo"}}, "action": action,
                     "rules": [{"to": [{"operation": operation}]}]}}  # fmt: skip


@pytest.mark.parametrize(("action", "operation", "reason"), [
    ("DENY", {"ports": ["9000"]}, "denied by DENY policy default/tcp-policy rule 0"),
    ("ALLOW", {"methods": ["GET"]}, "no ALLOW policy matched (default/tcp-policy)"),
    ("ALLOW", {"ports": ["9000"]}, "allowed by ALLOW policy default/tcp-policy rule 0"),
])  # fmt: skip
def test_the_destination_sidecars_tcp_verdict_is_check_connections(
    server: ServerProcess, api: Http, action: str, operation: dict[str, Any], reason: str
) -> None:
    manifest = _ok(api.post(SECURITY, _policy(action, operation)))
    _, first = expected_route(api, 0.0)
    truth = compile_policies([manifest]).check_connection(
        source_ip="127.0.0.1", destination_ip=PODS[first][0], destination_port=9000)  # fmt: skip
    assert truth.reason == reason
    out = why(server, "tcp://tcp-echo:9000")
    assert reason in out.output, out.output
    assert verdict(out) == ("allowed" if truth.allowed else "denied"), out.output
    assert ("HTTP-only fields cannot match a connection" in out.output) == ("methods" in operation), out.output
