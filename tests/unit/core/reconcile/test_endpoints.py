"""Service -> Endpoints reconcile (meshwork.core.reconcile.endpoints)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.reconcile import CreateObject, DeleteObject, Outcome, UpdateObject
from meshwork.core.reconcile.endpoints import HEADLESS_LABEL, reconcile_endpoints
from meshwork.model.core import Endpoints, Service
from meshwork.model.pod import Pod


def service(*, ports: list[dict[str, Any]] | None = None, selector: dict[str, str] | None = None,
            ip: str = "10.0.0.1", labels: dict[str, str] | None = None, publish: bool = False) -> Service:  # fmt: skip
    spec: dict[str, Any] = {
        "clusterIP": ip,
        "ports": ports if ports is not None else [{"port": 80}],
    }
    if selector is not None:
        spec["selector"] = selector
    if publish:
        spec["publishNotReadyAddresses"] = True
    return Service.model_validate({"metadata": {"name": "web", "namespace": "shop", "labels": labels},
                                   "spec": spec})  # fmt: skip


def pod(name: str, ip: str | None, *, ready: bool = True, labels: dict[str, str] | None = None,
        ns: str = "shop", port: int = 8080, phase: str = "Running", deleting: bool = False,
        hostname: str | None = None, subdomain: str | None = None) -> Pod:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "labels": labels if labels is not None else {"app": "web"}}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    spec: dict[str, Any] = {"nodeName": "node-1", "containers": [
        {"name": "app", "image": "i", "ports": [{"name": "http", "containerPort": port}]}]}  # fmt: skip
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    status: dict[str, Any] = {"phase": phase,
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}  # fmt: skip
    if ip:
        status["podIP"] = ip
    return Pod.model_validate({"metadata": meta, "spec": spec, "status": status})


SEL = {"app": "web"}


def apply(existing: Endpoints | None, outcome: Outcome) -> Endpoints | None:
    """The tiny store: apply the outcome's actions to the one object in view."""
    for action in outcome.actions:
        if isinstance(action, CreateObject):
            assert existing is None
            assert isinstance(action.obj, Endpoints)
            meta = action.obj.metadata.model_copy(update={"resource_version": "1", "uid": "ep-uid"})
            existing = action.obj.model_copy(update={"metadata": meta})
        elif isinstance(action, UpdateObject):
            assert existing is not None and isinstance(action.obj, Endpoints)
            assert action.obj.metadata.resource_version == existing.metadata.resource_version
            existing = action.obj
        elif isinstance(action, DeleteObject):
            assert existing is not None and action.uid == existing.metadata.uid
            existing = None
        else:  # pragma: no cover
            raise AssertionError(action)
    return existing


def converge(
    svc: Service | None, pods: list[Pod], existing: Endpoints | None = None
) -> Endpoints | None:
    ep = apply(existing, reconcile_endpoints(svc, pods, existing))
    assert reconcile_endpoints(svc, pods, ep).empty, "a second reconcile must do nothing"
    return ep


def wire(ep: Endpoints | None) -> Any:
    assert ep is not None
    return ep.model_dump(by_alias=True, exclude_none=True)


def test_ready_and_not_ready_split_with_target_refs() -> None:
    ep = converge(service(selector=SEL, ports=[{"name": "http", "port": 80, "targetPort": 8080}]),
                  [pod("b", "127.1.0.3"), pod("a", "127.1.0.2"), pod("c", "127.1.0.4", ready=False)])  # fmt: skip
    assert wire(ep)["subsets"] == [{
        "addresses": [
            {"ip": "127.1.0.2", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "a", "uid": "uid-a"}},
            {"ip": "127.1.0.3", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "b", "uid": "uid-b"}},
        ],
        "notReadyAddresses": [
            {"ip": "127.1.0.4", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "c", "uid": "uid-c"}},
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }]  # fmt: skip
    assert ep is not None and ep.metadata.name == "web" and ep.metadata.namespace == "shop"
    assert not ep.metadata.owner_references


def test_excluded_pods() -> None:
    pods = [
        pod("no-ip", None),
        pod("done", "127.1.0.5", phase="Succeeded"),
        pod("failed", "127.1.0.6", phase="Failed"),
        pod("leaving", "127.1.0.7", deleting=True),
        pod("other-ns", "127.1.0.8", ns="elsewhere"),
        pod("other-app", "127.1.0.9", labels={"app": "db"}),
        pod("ok", "127.1.0.10"),
    ]
    ep = converge(service(selector=SEL), pods)
    ips = [
        a["ip"]
        for s in wire(ep)["subsets"]
        for a in s.get("addresses", []) + s.get("notReadyAddresses", [])
    ]
    assert ips == ["127.1.0.10"]


def test_publish_not_ready_addresses_includes_unready_and_terminating() -> None:
    pods = [pod("a", "127.1.0.2", ready=False), pod("b", "127.1.0.3", deleting=True)]
    ep = converge(service(selector=SEL, publish=True), pods)
    [subset] = wire(ep)["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["127.1.0.2", "127.1.0.3"]
    assert "notReadyAddresses" not in subset


def test_named_target_port_splits_subsets_by_number() -> None:
    svc = service(selector=SEL, ports=[{"name": "web", "port": 80, "targetPort": "http"}])
    pods = [
        pod("a", "127.1.0.2", port=8080),
        pod("b", "127.1.0.3", port=9090),
        pod("c", "127.1.0.4", port=8080),
    ]
    subsets = wire(converge(svc, pods))["subsets"]
    got = sorted(([a["ip"] for a in s["addresses"]], s["ports"][0]["port"]) for s in subsets)
    assert got == [(["127.1.0.2", "127.1.0.4"], 8080), (["127.1.0.3"], 9090)]
    assert all(s["ports"][0]["name"] == "web" for s in subsets)


def test_pod_without_the_named_port_is_left_out() -> None:
    svc = service(selector=SEL, ports=[{"name": "m", "port": 9100, "targetPort": "metrics"}])
    ep = converge(svc, [pod("a", "127.1.0.2")])
    assert ep is not None and ep.subsets is None


def test_several_ports_share_one_subset() -> None:
    svc = service(selector=SEL, ports=[{"name": "b", "port": 81, "targetPort": 9000},
                                       {"name": "a", "port": 80, "targetPort": "http"}])  # fmt: skip
    [subset] = wire(converge(svc, [pod("a", "127.1.0.2")]))["subsets"]
    assert [(p["name"], p["port"]) for p in subset["ports"]] == [("a", 8080), ("b", 9000)]


def test_headless_service_labels_and_portless_addresses() -> None:
    svc = service(selector=SEL, ip="None", ports=[], labels={"team": "x"})
    ep = converge(svc, [pod("a", "127.1.0.2", hostname="a", subdomain="web"),
                        pod("b", "127.1.0.3", hostname="b", subdomain="other")])  # fmt: skip
    assert ep is not None and ep.metadata.labels == {"team": "x", HEADLESS_LABEL: ""}
    [subset] = wire(ep)["subsets"]
    assert "ports" not in subset
    assert [(a["ip"], a.get("hostname")) for a in subset["addresses"]] == [
        ("127.1.0.2", "a"),
        ("127.1.0.3", None),
    ]


def test_service_without_selector_is_left_alone() -> None:
    manual = Endpoints.model_validate({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4"},
                                       "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]})  # fmt: skip
    assert reconcile_endpoints(service(), [pod("a", "127.1.0.2")], manual).empty
    assert reconcile_endpoints(service(), [], None).empty


def test_deleted_service_deletes_endpoints() -> None:
    ep = converge(service(selector=SEL), [pod("a", "127.1.0.2")])
    assert ep is not None
    [action] = reconcile_endpoints(None, [], ep).actions
    assert action == DeleteObject(
        group="", kind="Endpoints", namespace="shop", name="web", uid="ep-uid"
    )
    assert converge(None, [], ep) is None


def test_readiness_change_and_label_change_update() -> None:
    svc = service(selector=SEL)
    ep = converge(svc, [pod("a", "127.1.0.2", ready=False)])
    ep = converge(svc, [pod("a", "127.1.0.2", ready=True)], ep)
    assert wire(ep)["subsets"][0]["addresses"][0]["ip"] == "127.1.0.2"
    relabelled = service(selector=SEL, labels={"v": "2"})
    [action] = reconcile_endpoints(relabelled, [pod("a", "127.1.0.2")], ep).actions
    assert isinstance(action, UpdateObject) and action.obj.metadata.labels == {"v": "2"}


def test_empty_service_still_gets_endpoints() -> None:
    ep = converge(service(selector=SEL), [])
    assert ep is not None and ep.subsets is None


def test_stored_order_does_not_cause_churn() -> None:
    svc = service(selector=SEL, ports=[{"name": "a", "port": 80, "targetPort": 8080},
                                       {"name": "b", "port": 81, "targetPort": 8081}])  # fmt: skip
    pods = [pod("a", "127.1.0.2"), pod("b", "127.1.0.3"), pod("c", "127.1.0.4", ready=False)]
    ep = converge(svc, pods)
    assert ep is not None and ep.subsets
    s = ep.subsets[0]
    shuffled = s.model_copy(update={"addresses": list(reversed(s.addresses or [])),
                                    "ports": list(reversed(s.ports or []))})  # fmt: skip
    assert reconcile_endpoints(svc, pods, ep.model_copy(update={"subsets": [shuffled]})).empty


POD_SPECS = st.lists(
    st.tuples(st.integers(2, 40), st.booleans(), st.sampled_from([8080, 9090]), st.booleans()),
    max_size=12,
    unique_by=lambda t: t[0],
)


@settings(max_examples=60, deadline=None)
@given(POD_SPECS, st.randoms(use_true_random=False), st.booleans())
def test_idempotent_and_order_independent(specs: list[tuple[int, bool, int, bool]], rng: Any,
                                          publish: bool) -> None:  # fmt: skip
    svc = service(
        selector=SEL, publish=publish, ports=[{"name": "h", "port": 80, "targetPort": "http"}]
    )
    pods = [pod(f"p{i}", f"127.1.0.{i}", ready=ready, port=port, deleting=deleting)
            for i, ready, port, deleting in specs]  # fmt: skip
    ep = converge(svc, pods)
    shuffled = list(pods)
    rng.shuffle(shuffled)
    assert reconcile_endpoints(svc, shuffled, ep).empty
    # Every counted pod appears exactly once, in the right list.
    seen: dict[str, bool] = {}
    for s in (ep.subsets or []) if ep else []:
        for ready, group in ((True, s.addresses), (False, s.not_ready_addresses)):
            for a in group or []:
                assert a.ip not in seen
                seen[a.ip] = ready
    expected = {
        f"127.1.0.{i}": publish or ready
        for i, ready, _, deleting in specs
        if publish or not deleting
    }
    assert seen == expected
