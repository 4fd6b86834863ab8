"""How the CLI resolves what a user types into kinds, as kubectl does."""

from __future__ import annotations

import pytest

from meshwork.cli.resolve import (
    Target,
    UnknownKind,
    expand_kinds,
    kind_label,
    load_kinds,
    parse_targets,
    resolve_kind,
)
from meshwork.model.base import KindInfo, Registry, Resource


def _kind(
    registry: Registry, group: str, kind: str, plural: str, *short: str, namespaced: bool = True
) -> KindInfo:
    model = type(f"{group.replace('.', '_')}_{kind}", (Resource,), {"__module__": __name__})
    return registry.register(
        KindInfo(
            group=group,
            versions=("v1",),
            kind=kind,
            plural=plural,
            singular=kind.lower(),
            model=model,
            namespaced=namespaced,
            short_names=short,
        )
    )


@pytest.fixture
def registry() -> Registry:
    r = Registry()
    _kind(r, "", "Pod", "pods", "po")
    _kind(r, "", "Service", "services", "svc")
    _kind(r, "", "Event", "events", "ev")
    _kind(r, "events.k8s.io", "Event", "events", "ev")
    _kind(r, "", "Node", "nodes", "no", namespaced=False)
    _kind(r, "apps", "Deployment", "deployments", "deploy")
    _kind(r, "apps", "ReplicaSet", "replicasets", "rs")
    _kind(r, "batch", "Job", "jobs")
    _kind(r, "batch", "CronJob", "cronjobs", "cj")
    _kind(r, "gateway.networking.k8s.io", "Gateway", "gateways", "gtw")
    _kind(r, "networking.istio.io", "Gateway", "gateways", "gw")
    _kind(r, "networking.istio.io", "VirtualService", "virtualservices", "vs")
    return r


@pytest.mark.parametrize(
    ("name", "group", "kind"),
    [
        ("pods", "", "Pod"),
        ("pod", "", "Pod"),
        ("po", "", "Pod"),
        ("PODS", "", "Pod"),
        ("Pod", "", "Pod"),
        ("deploy", "apps", "Deployment"),
        ("deployments.apps", "apps", "Deployment"),
        ("deployment.apps", "apps", "Deployment"),
        ("vs", "networking.istio.io", "VirtualService"),
        ("virtualservice.networking.istio.io", "networking.istio.io", "VirtualService"),
        # Ambiguous names: the core group first, then the preferred groups.
        ("events", "", "Event"),
        ("ev", "", "Event"),
        ("events.events.k8s.io", "events.k8s.io", "Event"),
        ("gateways", "networking.istio.io", "Gateway"),
        ("gateways.gateway.networking.k8s.io", "gateway.networking.k8s.io", "Gateway"),
    ],
)
def test_resolve_kind(registry: Registry, name: str, group: str, kind: str) -> None:
    info = resolve_kind(name, registry)
    assert (info.group, info.kind) == (group, kind)


def test_unknown_kind_is_reported_like_kubectl(registry: Registry) -> None:
    with pytest.raises(UnknownKind, match='the server doesn\'t have a resource type "widgets"'):
        resolve_kind("widgets", registry)


def test_all_expands_to_the_workload_kinds_that_exist_in_order(registry: Registry) -> None:
    assert [i.plural for i in expand_kinds("all", registry)] == [
        "pods",
        "services",
        "deployments",
        "replicasets",
        "jobs",
        "cronjobs",
    ]
    assert [i.plural for i in expand_kinds("po,svc,pods", registry)] == ["pods", "services"]


def test_targets_from_kind_and_names(registry: Registry) -> None:
    targets = parse_targets(("po,deploy", "web"), registry)
    assert [(t.info.plural, t.names) for t in targets] == [
        ("pods", ("web",)),
        ("deployments", ("web",)),
    ]
    assert parse_targets(("svc",), registry) == [Target(resolve_kind("svc", registry), ())]


def test_targets_from_kind_slash_name(registry: Registry) -> None:
    targets = parse_targets(("po/a", "deploy/web", "pods/b"), registry)
    assert [(t.info.plural, t.names) for t in targets] == [
        ("pods", ("a", "b")),
        ("deployments", ("web",)),
    ]


@pytest.mark.parametrize("args", [(), ("po/",), ("po/a", "b"), ("po", "x/y"), ("/a",), ("nope/a",)])
def test_bad_target_arguments(registry: Registry, args: tuple[str, ...]) -> None:
    with pytest.raises(UnknownKind):
        parse_targets(args, registry)


def test_kind_label(registry: Registry) -> None:
    assert kind_label(resolve_kind("po", registry)) == "pod"
    assert kind_label(resolve_kind("deploy", registry)) == "deployment.apps"
    assert kind_label(resolve_kind("vs", registry)) == "virtualservice.networking.istio.io"


def test_the_real_registry_knows_the_core_kinds() -> None:
    registry = load_kinds()
    assert resolve_kind("po", registry).kind == "Pod"
    assert resolve_kind("deploy", registry).group == "apps"
    assert kind_label(resolve_kind("cm", registry)) == "configmap"
