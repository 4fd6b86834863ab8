"""RBAC kinds: top-level rules/subjects/roleRef, apiGroup defaulting, and the API server's checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshwork.model.base import REGISTRY, Resource, to_wire
from meshwork.model.rbac import RBAC_GROUP, ClusterRole, ClusterRoleBinding, Role, RoleBinding

API = "rbac.authorization.k8s.io/v1"
READ_PODS = {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}


def role(*rules: dict[str, Any], kind: str = "Role") -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": "reader"}, "rules": list(rules)}


def binding(kind: str = "RoleBinding", ref_kind: str = "Role", *subjects: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": "read"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": ref_kind, "name": "reader"},
            "subjects": list(subjects) or [{"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]}


MODELS: dict[str, type[Resource]] = {"Role": Role, "ClusterRole": ClusterRole, "RoleBinding": RoleBinding,
                                     "ClusterRoleBinding": ClusterRoleBinding}

# (case id, manifest, wire path, expected)
DEFAULTS = [
    ("user apiGroup", binding("RoleBinding", "Role", {"kind": "User", "name": "jane"}),
     ("subjects", 0, "apiGroup"), RBAC_GROUP),
    ("group apiGroup", binding("RoleBinding", "Role", {"kind": "Group", "name": "devs"}),
     ("subjects", 0, "apiGroup"), RBAC_GROUP),
    ("sa apiGroup", binding(), ("subjects", 0, "apiGroup"), ""),
    ("roleRef apiGroup", {**binding(), "roleRef": {"kind": "Role", "name": "reader"}}, ("roleRef", "apiGroup"),
     RBAC_GROUP),
    ("rules kept", role(READ_PODS), ("rules", 0), READ_PODS),
    ("non-resource urls", role({"nonResourceURLs": ["/healthz", "/metrics"], "verbs": ["get"]}, kind="ClusterRole"),
     ("rules", 0, "nonResourceURLs"), ["/healthz", "/metrics"]),
    ("aggregation", {**role(kind="ClusterRole"), "aggregationRule": {"clusterRoleSelectors": [
        {"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}]}},
     ("aggregationRule", "clusterRoleSelectors", 0, "matchLabels"), {"rbac.example.com/aggregate-to-view": "true"}),
    ("crb with sa", binding("ClusterRoleBinding", "ClusterRole"), ("roleRef", "kind"), "ClusterRole"),
    ("rb to cluster role", binding("RoleBinding", "ClusterRole"), ("roleRef", "kind"), "ClusterRole"),
    ("rb sa without namespace", binding("RoleBinding", "Role", {"kind": "ServiceAccount", "name": "sa"}),
     ("subjects", 0, "name"), "sa"),
]


@pytest.mark.parametrize(("manifest", "path", "expected"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_defaults(manifest: dict[str, Any], path: tuple[Any, ...], expected: Any) -> None:
    model = MODELS[manifest["kind"]]
    obj = model.model_validate(manifest)
    wire = to_wire(obj)
    value: Any = wire
    for part in path:
        value = value[part]
    assert value == expected
    assert model.model_validate(wire) == obj
    assert "spec" not in wire and "status" not in wire


# (case id, manifest, loc, fragment)
INVALID = [
    ("no verbs", role({"apiGroups": [""], "resources": ["pods"], "verbs": []}), ("rules", 0, "verbs"), "at least one"),
    ("verbs missing", role({"apiGroups": [""], "resources": ["pods"]}), ("rules", 0, "verbs"), "required"),
    ("no resources", role({"apiGroups": [""], "verbs": ["get"]}), ("rules", 0, "resources"), "at least one resource"),
    ("no api groups", role({"resources": ["pods"], "verbs": ["get"]}), ("rules", 0, "apiGroups"), "api group"),
    ("urls in a Role", role({"nonResourceURLs": ["/x"], "verbs": ["get"]}), ("rules", 0, "nonResourceURLs"),
     "namespaced"),
    ("urls mixed with resources", role({"nonResourceURLs": ["/x"], "resources": ["pods"], "apiGroups": [""],
                                        "verbs": ["get"]}, kind="ClusterRole"), ("rules", 0, "nonResourceURLs"),
     "both"),
    ("role with spec", {**role(READ_PODS), "spec": {}}, ("spec",), "Extra"),
    ("camel-case typo", role({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "nonResourceUrls": ["/"]},
                             kind="ClusterRole"), ("rules", 0, "nonResourceUrls"), "Extra"),
    ("crb to Role", binding("ClusterRoleBinding", "Role"), ("roleRef", "kind"), "ClusterRole"),
    ("roleRef kind", binding("RoleBinding", "Deployment"), ("roleRef", "kind"), "Role"),
    ("roleRef group", {**binding(), "roleRef": {"apiGroup": "apps", "kind": "Role", "name": "r"}},
     ("roleRef", "apiGroup"), RBAC_GROUP),
    ("roleRef missing", {k: v for k, v in binding().items() if k != "roleRef"}, ("roleRef",), "required"),
    ("crb sa without namespace", binding("ClusterRoleBinding", "ClusterRole", {"kind": "ServiceAccount", "name": "sa"}),
     ("subjects", 0, "namespace"), "Required"),
    ("subject kind", binding("RoleBinding", "Role", {"kind": "Robot", "name": "r"}), ("subjects", 0, "kind"), "User"),
    ("sa subject with rbac group", binding("RoleBinding", "Role", {"kind": "ServiceAccount", "name": "sa",
                                                                   "apiGroup": RBAC_GROUP}),
     ("subjects", 0, "apiGroup"), '""'),
    ("user subject with core group", binding("RoleBinding", "Role", {"kind": "User", "name": "u", "apiGroup": ""}),
     ("subjects", 0, "apiGroup"), RBAC_GROUP),
    ("wrong version", {**role(READ_PODS), "apiVersion": "rbac.authorization.k8s.io/v1beta1"}, ("apiVersion",), "v1"),
]


@pytest.mark.parametrize(("manifest", "loc", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(manifest: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        MODELS[manifest["kind"]].model_validate(manifest)
    errors = info.value.errors()
    locs = [e["loc"] for e in errors]
    assert loc in locs, errors
    err = errors[locs.index(loc)]
    assert fragment.lower() in (err["msg"] + str(err.get("ctx", ""))).lower(), err


@pytest.mark.parametrize(
    ("kind", "plural", "namespaced"),
    [("Role", "roles", True), ("ClusterRole", "clusterroles", False), ("RoleBinding", "rolebindings", True),
     ("ClusterRoleBinding", "clusterrolebindings", False)],
)
def test_registry(kind: str, plural: str, namespaced: bool) -> None:
    info = REGISTRY.for_api_version(API, kind)
    assert info is not None and info.model is MODELS[kind]
    assert (info.group, info.plural, info.namespaced) == (RBAC_GROUP, plural, namespaced)
    # RBAC names are path segments ("system:controller:foo"), not DNS names; no status subresource.
    assert info.name_rule == "path" and info.has_status is False
    assert REGISTRY.for_resource(RBAC_GROUP, plural) is info
