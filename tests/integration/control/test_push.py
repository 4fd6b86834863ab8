"""Mesh config push, end to end: a real server, real config streams, real ACKs and NACKs.

The proxies here are ``support.fakeproxy.FakeProxy``: HTTP clients of the
push API that read snapshots off the stream and acknowledge them, as the data
plane does. No timing is asserted; waits are generous bounds so a broken
build fails instead of hanging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.fakeproxy import API, FakeProxy, router_id, sidecar_id
from support.server import Http, ServerProcess, pod, running_server

pytestmark = pytest.mark.integration

VS = "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices"
DR = "/apis/networking.istio.io/v1/namespaces/{ns}/destinationrules"
GW = "/apis/networking.istio.io/v1/namespaces/{ns}/gateways"
SVC = "/api/v1/namespaces/{ns}/services"
PODS = "/api/v1/namespaces/{ns}/pods"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("push")) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def proxies(server: ServerProcess) -> Iterator[Callable[..., FakeProxy]]:
    started: list[FakeProxy] = []

    def connect(ident: str, **kw: Any) -> FakeProxy:
        version = kw.pop("version", "")
        proxy = FakeProxy(server.host, server.port, server.token, ident, **kw)
        started.append(proxy)
        return proxy.start(version)

    yield connect
    for proxy in started:
        proxy.close()


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


def virtual_service(name: str, export_to: list[str] | None = None, host: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": [host or name], "http": [{"route": [{"destination": {"host": host or name}}]}]}
    if export_to is not None:
        spec["exportTo"] = export_to
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name}, "spec": spec}


def service(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def created(api: Http, path: str, body: dict[str, Any]) -> int:
    reply = api.post(path, body)
    assert reply.status == 201, reply.body
    return int(reply.json["metadata"]["resourceVersion"])


def names(items: list[dict[str, Any]]) -> set[str]:
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}" if "metadata" in i else f"{i['namespace']}/{i['name']}"
            for i in items}


def status_of(api: Http, ident: str) -> dict[str, Any] | None:
    reply = api.get(f"{API}/proxies")
    assert reply.status == 200, reply.body
    return next((i for i in reply.json["items"] if i["id"] == ident), None)


# -- streaming and acknowledging -------------------------------------------------------------


def test_a_proxy_gets_its_snapshot_at_once_then_every_change_it_can_see(
    api: Http, proxies: Callable[..., FakeProxy]
) -> None:
    ns = "push-a"
    assert api.post(PODS.format(ns=ns), pod("web-1", {"app": "web", "version": "v1"})).status == 201
    ident = sidecar_id("web-1", ns)
    proxy = proxies(ident)
    first = proxy.next()
    assert first["proxy"]["id"] == ident
    assert first["proxy"]["labels"] == {"app": "web", "version": "v1"}
    assert first["proxy"]["role"] == "sidecar"
    eventually(lambda: (s := status_of(api, ident)) and s["status"] == "SYNCED" and s)

    rv = created(api, VS.format(ns=ns), virtual_service("reviews"))
    update = proxy.next()
    assert int(update["version"]) >= rv > int(first["version"])
    assert int(update["revision"]) >= rv
    assert f"{ns}/reviews" in names(update["virtualServices"])
    state = eventually(lambda: (s := status_of(api, ident)) and s["ackedVersion"] == update["version"] and s)
    assert state["sentVersion"] == update["version"] and state["nack"] is None


def test_a_nack_is_kept_with_its_message_until_a_later_ack(api: Http, proxies: Callable[..., FakeProxy]) -> None:
    ns = "push-nack"
    refuse = {"on": False}

    def decide(snap: dict[str, Any]) -> str | None:
        return "route 'bad' names unknown subset v9" if refuse["on"] else None

    ident = sidecar_id("client", ns)
    proxy = proxies(ident, decide=decide)
    good = proxy.next()
    refuse["on"] = True
    created(api, VS.format(ns=ns), virtual_service("bad"))
    bad = proxy.next()
    state = eventually(lambda: (s := status_of(api, ident)) and s["nack"] and s)
    assert state["nack"] == {"version": bad["version"], "message": "route 'bad' names unknown subset v9"}
    assert state["status"] == "STALE"
    assert state["ackedVersion"] == good["version"] and state["sentVersion"] == bad["version"]
    # The convergence report names the refusal instead of waiting for it.
    report = api.get(f"{API}/convergence?after={bad['version']}&timeoutSeconds=20").json
    (mine,) = [p for p in report["proxies"] if p["id"] == ident]
    assert mine["refused"] and not mine["converged"]

    refuse["on"] = False
    created(api, VS.format(ns=ns), virtual_service("fixed"))
    fixed = proxy.next()
    state = eventually(lambda: (s := status_of(api, ident)) and s["ackedVersion"] == fixed["version"] and s)
    assert state["nack"] is None and state["status"] == "SYNCED"


def test_proxies_in_different_namespaces_see_only_what_export_to_allows(
    api: Http, proxies: Callable[..., FakeProxy]
) -> None:
    b, c = "push-b", "push-c"
    created(api, VS.format(ns=b), virtual_service("b-private", ["."]))
    created(api, VS.format(ns=c), virtual_service("c-to-b", ["push-b"]))
    created(api, VS.format(ns=c), virtual_service("c-public"))
    created(api, SVC.format(ns=c), service("c-svc", {"networking.istio.io/exportTo": "."}))
    in_b, in_c = proxies(sidecar_id("pb", b)), proxies(sidecar_id("pc", c))
    snap_b, snap_c = in_b.next(), in_c.next()
    assert {f"{b}/b-private", f"{c}/c-to-b", f"{c}/c-public"} <= names(snap_b["virtualServices"])
    assert f"{c}/c-public" in names(snap_c["virtualServices"])
    assert not {f"{b}/b-private", f"{c}/c-to-b"} & names(snap_c["virtualServices"])
    assert f"{c}/c-svc" in names(snap_c["services"]) and f"{c}/c-svc" not in names(snap_b["services"])

    # A change only b can see sends b a snapshot and c nothing: c's next
    # snapshot is the one for a change both can see.
    only_b = created(api, VS.format(ns=b), virtual_service("b-second", ["."]))
    assert int(in_b.next()["version"]) >= only_b
    both = created(api, VS.format(ns=c), virtual_service("c-public-2"))
    next_c = in_c.next()
    assert int(next_c["version"]) >= both
    assert f"{b}/b-second" not in names(next_c["virtualServices"])


def test_a_reconnecting_proxy_holding_the_current_version_is_sent_nothing_until_a_change(
    api: Http, proxies: Callable[..., FakeProxy]
) -> None:
    ns = "push-re"
    ident = sidecar_id("again", ns)
    first = proxies(ident)
    held = first.next()["version"]
    second = proxies(ident, version=held)
    rv = created(api, VS.format(ns=ns), virtual_service("later"))
    # Had the second stream been sent the held version again, that would come first.
    assert int(second.next()["version"]) >= rv


def test_a_gateway_gets_the_gateways_that_select_its_labels(api: Http, proxies: Callable[..., FakeProxy]) -> None:
    ns = "push-gw"
    servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
    gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "public"},
          "spec": {"selector": {"istio": "pushtest-gateway"}, "servers": servers}}
    other = {**gw, "metadata": {"name": "other"}, "spec": {"selector": {"istio": "elsewhere"}, "servers": servers}}
    created(api, GW.format(ns=ns), gw)
    created(api, GW.format(ns=ns), other)
    proxy = proxies(router_id("ingress-0", "istio-system"), labels="istio=pushtest-gateway")
    snap = proxy.next()
    assert snap["proxy"]["role"] == "gateway"
    assert names(snap["gateways"]) == {f"{ns}/public"}


# -- convergence, one-off snapshots, refusals -----------------------------------------------------


def test_convergence_waits_for_every_proxy_to_ack_the_change(api: Http, proxies: Callable[..., FakeProxy]) -> None:
    ns = "push-conv"
    proxy = proxies(sidecar_id("conv", ns))
    proxy.next()
    rv = created(api, DR.format(ns=ns), {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    })
    report = api.get(f"{API}/convergence?after={rv}&timeoutSeconds=20").json
    assert report["total"] >= 1
    (mine,) = [p for p in report["proxies"] if p["pod"] == "conv"]
    assert mine["converged"] and int(mine["ackedVersion"]) >= rv


def test_once_answers_the_snapshot_of_a_pod_without_a_connected_proxy(api: Http) -> None:
    ns = "push-once"
    created(api, PODS.format(ns=ns), pod("lonely", {"app": "lonely"}))
    created(api, VS.format(ns=ns), virtual_service("mine", ["."]))
    reply = api.get(f"{API}/proxies/{sidecar_id('lonely', ns)}/config?once=1")
    assert reply.status == 200, reply.body
    assert reply.json["proxy"]["labels"] == {"app": "lonely"}
    assert f"{ns}/mine" in names(reply.json["virtualServices"])
    assert status_of(api, sidecar_id("lonely", ns)) is None  # a one-off read is not a connection


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"{API}/proxies/not-an-id/config", None, 400),
        ("POST", f"{API}/proxies/{sidecar_id('ghost', 'nowhere')}/ack", {"version": "1", "error": None}, 404),
        ("GET", f"{API}/proxies/{sidecar_id('x', 'y')}/ack", None, 405),
        ("GET", f"{API}/convergence?after=abc", None, 400),
        ("GET", f"{API}/nothing", None, 404),
    ],
)
def test_bad_requests_are_refused(api: Http, method: str, path: str, body: Any, status: int) -> None:
    reply = api.request(method, path, body)
    assert reply.status == status, reply.body
    assert reply.json["kind"] == "Status"


def test_the_push_api_needs_a_token(api: Http) -> None:
    assert api.get(f"{API}/proxies", token=False).status == 401
    assert api.get(f"{API}/proxies/{sidecar_id('a', 'b')}/config", token="wrong").status == 401


def test_every_snapshot_carries_the_mesh_config_and_follows_its_configmap(
    api: Http, proxies: Callable[..., FakeProxy]
) -> None:
    """Istio's mesh config (ConfigMap istio-system/istio, key ``mesh``): the parts proxies need go to every
    proxy; a change is a new snapshot; text that is not YAML goes out as ``meshConfig.error`` (proxies NACK)."""
    ns = "push-meshconfig"
    cms = "/api/v1/namespaces/istio-system/configmaps"
    assert api.post(PODS.format(ns=ns), pod("mc-1", {"app": "mc"})).status == 201
    proxy = proxies(sidecar_id("mc-1", ns))
    assert proxy.next()["meshConfig"] == {}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"},
          "data": {"mesh": "accessLogFile: /dev/stdout\npathNormalization:\n  normalization: NONE\n",
                   "meshwork": "pathNormalization: {escapedSlashes: reject}\n"}}  # fmt: skip
    try:
        assert api.post(cms, cm).status == 201
        snap = eventually(lambda: (s := proxy.next()) and "pathNormalization" in s["meshConfig"] and s)
        assert snap["meshConfig"] == {"pathNormalization": {"normalization": "NONE"},
                                      "meshworkPathNormalization": {"escapedSlashes": "reject"}}  # fmt: skip
        cm["data"] = {"mesh": "pathNormalization: [unclosed\n"}
        assert api.put(f"{cms}/istio", cm).status == 200
        bad = eventually(lambda: (s := proxy.next()) and "error" in s["meshConfig"] and s)
        assert "ConfigMap istio-system/istio key 'mesh' is not valid YAML" in bad["meshConfig"]["error"]
    finally:
        api.delete(f"{cms}/istio")
    assert eventually(lambda: proxy.next()["meshConfig"] == {})
