"""Per-proxy mesh snapshots: proxy ids, Istio's exportTo and gateway selection, endpoints from ready pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core import meshsnapshot as ms

NAMESPACES = ("default", "shop", "billing", "istio-system")


def meta(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, **extra}


def service(name: str, ns: str = "default", export: str | None = None, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    m = meta(name, ns, labels={"app": name})
    if export is not None:
        m["annotations"] = {ms.SERVICE_EXPORT_TO: export}
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": m,
        "spec": {"clusterIP": "127.2.0.9", "selector": {"app": name},
                 "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }


def pod(name: str, ns: str, ip: str, labels: dict[str, str], ready: bool = True, sa: str = "web-sa") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, labels=labels),
        "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": []},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def address(ip: str, pod_name: str, ns: str) -> dict[str, Any]:
    return {"ip": ip, "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": pod_name, "namespace": ns}}


def endpoints(name: str, ns: str, ready: list[dict[str, Any]], not_ready: list[dict[str, Any]] | None = None,
              ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": ready, "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta(name, ns), "subsets": [subset]}


def istio(kind: str, name: str, ns: str, export_to: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    if export_to is not None:
        spec["exportTo"] = export_to
    return {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": meta(name, ns), "spec": spec}


def vs(name: str, ns: str, export_to: list[str] | None = None) -> dict[str, Any]:
    return istio("VirtualService", name, ns, export_to, hosts=[name], http=[{"route": [{"destination": {"host": name}}]}])


def sidecar(pod_name: str, ns: str, labels: dict[str, str] | None = None) -> ms.Proxy:
    return ms.Proxy(ms.proxy_id("sidecar", "127.1.0.2", pod_name, ns), "sidecar", ns, pod_name, "127.1.0.2",
                    tuple(sorted((labels or {}).items())))


def gateway(pod_name: str, ns: str, labels: dict[str, str]) -> ms.Proxy:
    return ms.Proxy(ms.proxy_id("gateway", "127.1.0.3", pod_name, ns), "gateway", ns, pod_name, "127.1.0.3",
                    tuple(sorted(labels.items())))


def names(items: list[Any]) -> list[str]:
    return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" if "metadata" in i else f"{i['namespace']}/{i['name']}"
            for i in items]


# -- proxy ids --------------------------------------------------------------------------


def test_proxy_ids_have_istios_shape_and_parse_back() -> None:
    ident = ms.proxy_id("sidecar", "127.1.0.7", "reviews-v1-abc.x", "shop")
    assert ident == "sidecar~127.1.0.7~reviews-v1-abc.x.shop~shop.svc.cluster.local"
    assert ms.parse_proxy_id(ident) == ms.ProxyId("sidecar", "127.1.0.7", "reviews-v1-abc.x", "shop")
    router = ms.proxy_id("gateway", "127.0.0.1", "istio-ingressgateway-0", "istio-system")
    assert router.startswith("router~")
    assert ms.parse_proxy_id(router).role == "gateway"


@pytest.mark.parametrize("bad", ["", "sidecar", "sidecar~ip~pod~ns", "proxy~1.2.3.4~p.ns~ns.svc.cluster.local",
                                 "sidecar~1.2.3.4~p.other~ns.svc.cluster.local", "sidecar~~p.ns~ns.svc.cluster.local"])
def test_malformed_proxy_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ms.parse_proxy_id(bad)


def test_a_proxy_takes_its_pods_metadata() -> None:
    ident = ms.proxy_id("sidecar", "127.1.0.9", "web-1", "shop")
    proxy = ms.proxy_from_pod(ident, pod("web-1", "shop", "127.1.0.5", {"app": "web", "version": "v1"}))
    assert proxy.wire() == {
        "id": ident, "name": "web-1", "namespace": "shop", "pod": "web-1", "labels": {"app": "web", "version": "v1"},
        "serviceAccount": "web-sa", "ip": "127.1.0.5", "role": "sidecar", "node": "node-1",
    }
    podless = ms.proxy_from_pod(ms.proxy_id("gateway", "127.0.0.1", "gw", "istio-system"), None, {"istio": "ingressgateway"})
    assert podless.label_map == {"istio": "ingressgateway"} and podless.role == "gateway"


# -- exportTo ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_to", "owner", "viewer", "visible"),
    [
        (None, "shop", "billing", True),  # default: "*"
        ([], "shop", "billing", True),
        (["*"], "shop", "billing", True),
        (["."], "shop", "shop", True),
        (["."], "shop", "billing", False),
        (["billing"], "shop", "billing", True),
        (["billing"], "shop", "shop", False),  # naming others does not include one's own namespace
        ([".", "billing"], "shop", "shop", True),
        (["~"], "shop", "shop", False),
    ],
)
def test_exported_to_follows_istio(export_to: list[str] | None, owner: str, viewer: str, visible: bool) -> None:
    assert ms.exported_to(export_to, owner, viewer) is visible


def test_each_namespace_sees_only_what_is_exported_to_it() -> None:
    index = ms.build_index(
        services=[service("web", "shop"), service("ledger", "billing", export="."), service("audit", "billing", export="shop")],
        endpoints=[], pods=[],
        virtual_services=[vs("web", "shop", ["."]), vs("ledger", "billing"), vs("audit", "billing", ["shop", "."])],
        destination_rules=[istio("DestinationRule", "web", "shop", ["billing"], host="web")],
        service_entries=[istio("ServiceEntry", "ext", "default", ["."], hosts=["example.com"])],
    )
    shop = index.snapshot(sidecar("a", "shop"), "5")
    billing = index.snapshot(sidecar("b", "billing"), "5")
    default = index.snapshot(sidecar("c", "default"), "5")
    assert names(shop["services"]) == ["billing/audit", "shop/web"]
    # "shop" alone does not include the Service's own namespace.
    assert names(billing["services"]) == ["billing/ledger", "shop/web"]
    assert names(default["services"]) == ["shop/web"]
    assert names(shop["virtualServices"]) == ["billing/audit", "billing/ledger", "shop/web"]
    assert names(billing["virtualServices"]) == ["billing/audit", "billing/ledger"]
    assert names(shop["destinationRules"]) == [] and names(billing["destinationRules"]) == ["shop/web"]
    assert names(default["serviceEntries"]) == ["default/ext"] and shop["serviceEntries"] == []
    assert shop["gateways"] == [] and shop["version"] == "5"


exports = st.lists(st.sampled_from([".", "*", *NAMESPACES]), unique=True, max_size=3)


@given(base=exports, extra=exports, owner=st.sampled_from(NAMESPACES), viewer=st.sampled_from(NAMESPACES))
def test_visibility_is_monotone_in_export_to(base: list[str], extra: list[str], owner: str, viewer: str) -> None:
    """Adding entries to a non-empty exportTo never hides an object from anyone who saw it."""
    if not base:
        return  # an empty list means "*": adding entries narrows it, as in Istio
    wider = base + [e for e in extra if e not in base]
    if ms.exported_to(base, owner, viewer):
        assert ms.exported_to(wider, owner, viewer)
    index_narrow = ms.build_index([], [], [], virtual_services=[vs("v", owner, base)])
    index_wide = ms.build_index([], [], [], virtual_services=[vs("v", owner, wider)])
    seen_narrow = index_narrow.snapshot(sidecar("p", viewer), "1")["virtualServices"]
    seen_wide = index_wide.snapshot(sidecar("p", viewer), "1")["virtualServices"]
    assert len(seen_narrow) <= len(seen_wide)


# -- gateways ----------------------------------------------------------------------------


def test_a_gateway_proxy_gets_the_gateways_that_select_it_from_any_namespace() -> None:
    server = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
    gws = [
        istio("Gateway", "public", "shop", selector={"istio": "ingressgateway"}, servers=server),
        istio("Gateway", "internal", "default", selector={"istio": "internalgateway"}, servers=server),
        istio("Gateway", "both", "billing", selector={"istio": "ingressgateway", "zone": "a"}, servers=server),
    ]
    index = ms.build_index([], [], [], gateways=gws)
    ingress = index.snapshot(gateway("ig-0", "istio-system", {"istio": "ingressgateway", "app": "x"}), "1")
    assert names(ingress["gateways"]) == ["shop/public"]
    zoned = index.snapshot(gateway("ig-1", "istio-system", {"istio": "ingressgateway", "zone": "a"}), "1")
    assert names(zoned["gateways"]) == ["billing/both", "shop/public"]
    # Sidecars never get Gateway objects, even with matching labels.
    assert index.snapshot(sidecar("s", "shop", {"istio": "ingressgateway"}), "1")["gateways"] == []


def test_proxies_with_the_same_view_share_one_body() -> None:
    index = ms.build_index([service("web", "shop")], [], [], virtual_services=[vs("web", "shop")])
    a, b = sidecar("a", "shop", {"app": "a"}), sidecar("b", "shop", {"app": "b"})
    assert index.key_for(a) == index.key_for(b)
    assert index.body(index.key_for(a)) is index.body(index.key_for(b))
    raw = ms.snapshot_bytes(a, "7", index.body(index.key_for(a)), revision=7)
    assert json.loads(raw) == {**index.snapshot(a, "7"), "revision": "7"}


# -- services and endpoints -----------------------------------------------------------------


def test_endpoints_come_from_ready_addresses_with_their_pods_labels() -> None:
    pods = [
        pod("web-1", "shop", "127.1.0.11", {"app": "web", "version": "v1"}),
        pod("web-2", "shop", "127.1.0.12", {"app": "web", "version": "v2"}, sa="other"),
        pod("web-3", "shop", "127.1.0.13", {"app": "web", "version": "v3"}, ready=False),
    ]
    eps = endpoints(
        "web", "shop",
        ready=[address("127.1.0.11", "web-1", "shop"), address("127.1.0.12", "web-2", "shop")],
        not_ready=[address("127.1.0.13", "web-3", "shop")],
    )
    index = ms.build_index([service("web", "shop")], [eps], pods)
    (svc,) = index.snapshot(sidecar("c", "shop"), "1")["services"]
    assert svc["hostname"] == "web.shop.svc.cluster.local"
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "appProtocol": None}]
    assert svc["endpoints"] == [
        {"ip": "127.1.0.11", "ports": {"http": 8080}, "labels": {"app": "web", "version": "v1"}, "pod": "web-1",
         "name": "web-1", "namespace": "shop", "ready": True, "node": "node-1", "serviceAccount": "web-sa"},
        {"ip": "127.1.0.12", "ports": {"http": 8080}, "labels": {"app": "web", "version": "v2"}, "pod": "web-2",
         "name": "web-2", "namespace": "shop", "ready": True, "node": "node-1", "serviceAccount": "other"},
    ]
    assert ms.pods_of(eps) == {("shop", "web-1"), ("shop", "web-2")}


def test_an_address_in_several_subsets_is_one_endpoint_with_every_port() -> None:
    eps = {"metadata": meta("web", "shop"), "subsets": [
        {"addresses": [address("127.1.0.11", "web-1", "shop")], "ports": [{"name": "http", "port": 8080}]},
        {"addresses": [address("127.1.0.11", "web-1", "shop")], "ports": [{"name": "grpc", "port": 9090}]},
    ]}
    view = ms.service_view(service("web", "shop"), eps, {})
    assert [(e["ip"], e["ports"]) for e in view["endpoints"]] == [("127.1.0.11", {"http": 8080, "grpc": 9090})]
    # The pod is unknown (hand-written Endpoints): no labels, counted ready.
    assert view["endpoints"][0]["labels"] == {} and view["endpoints"][0]["ready"] is True


def test_config_objects_are_sent_without_kubectls_copy_of_themselves() -> None:
    obj = vs("web", "shop")
    obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "team": "a"}
    obj["metadata"]["managedFields"] = [{"manager": "x"}]
    body = ms.config_body(obj)
    assert body["metadata"] == {"name": "web", "namespace": "shop", "annotations": {"team": "a"}}
    assert body["spec"] == obj["spec"]


def test_the_data_planes_reader_accepts_a_snapshot() -> None:
    """The proxy reads snapshots with core/mesh/snapshot.py: what we send must parse there."""
    reader = pytest.importorskip("meshwork.core.mesh.snapshot")
    pods = [pod("web-1", "shop", "127.1.0.11", {"app": "web", "version": "v1"})]
    eps = endpoints("web", "shop", ready=[address("127.1.0.11", "web-1", "shop")])
    dr = istio("DestinationRule", "web", "shop", host="web", subsets=[{"name": "v1", "labels": {"version": "v1"}}])
    gw = istio("Gateway", "public", "shop", selector={"istio": "ingressgateway"},
               servers=[{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}])
    index = ms.build_index([service("web", "shop")], [eps], pods, virtual_services=[vs("web", "shop")],
                           destination_rules=[dr], gateways=[gw])
    proxy = gateway("ig-0", "istio-system", {"istio": "ingressgateway"})
    parsed = reader.snapshot_from_wire(json.loads(ms.snapshot_bytes(proxy, "9", index.body(index.key_for(proxy)), 9)))
    assert parsed.version == "9" and parsed.proxy.name == "ig-0" and parsed.proxy.role == "gateway"
    (svc,) = parsed.services
    assert (svc.name, svc.endpoints[0].ip, dict(svc.endpoints[0].ports)) == ("web", "127.1.0.11", {"http": 8080})
    assert [v.metadata.name for v in parsed.virtual_services] == ["web"]
    assert [d.metadata.name for d in parsed.destination_rules] == ["web"]
    assert [g.metadata.name for g in parsed.gateways] == ["public"]
