"""The RBAC objects the server creates at start, as kube-apiserver's bootstrap policy does.

ClusterRoles ``cluster-admin``, ``admin``, ``edit``, ``view``, ``system:discovery``,
``system:basic-user``, ``system:public-info-viewer``, ``system:node`` (what a
node agent needs) and ``system:meshwork:proxy`` (what a mesh proxy needs:
its config stream, ACKs, its certificate, activating a Service scaled to zero), with their
ClusterRoleBindings.
Objects that exist are left alone, so a user's edits survive a restart.
"""

from __future__ import annotations

from typing import Any

from meshwork.control.access import NODES_GROUP, PROXIES_GROUP
from meshwork.control.api.objects import Objects
from meshwork.control.api.paths import object_key
from meshwork.errors import AlreadyExists
from meshwork.model.kinds import REGISTRY

MESH_GROUP = "mesh.meshwork.io"
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
# What namespaced users edit ("edit"/"admin"); "view" reads them, and never Secrets (as upstream).
_APP_RESOURCES: list[tuple[str, list[str]]] = [
    ("", ["pods", "pods/log", "services", "endpoints", "configmaps", "persistentvolumeclaims",
          "replicationcontrollers", "serviceaccounts", "events"]),
    ("apps", ["deployments", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "daemonsets"]),
    ("batch", ["jobs", "cronjobs"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("networking.istio.io", ["*"]),
    ("security.istio.io", ["*"]),
    ("argoproj.io", ["*"]),
]


def _rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def _urls(urls: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"nonResourceURLs": urls, "verbs": verbs}


def cluster_roles() -> dict[str, list[dict[str, Any]]]:
    view = [_rule([g], rs, READ) for g, rs in _APP_RESOURCES]
    edit = [_rule([g], rs, READ + WRITE) for g, rs in _APP_RESOURCES] + [
        _rule([""], ["secrets"], READ + WRITE), _rule([""], ["pods/exec"], ["create", "get"]),
        _rule([""], ["serviceaccounts/token"], ["create"]),
    ]
    admin = [*edit, _rule(["rbac.authorization.k8s.io"], ["roles", "rolebindings"], READ + WRITE)]
    return {
        "cluster-admin": [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])],
        "admin": admin,
        "edit": edit,
        "view": view,
        "system:discovery": [_urls(["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz",
                                    "/version", "/version/"], ["get"])],
        "system:public-info-viewer": [_urls(["/healthz", "/livez", "/readyz", "/version", "/version/"], ["get"])],
        "system:basic-user": [_rule(["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                                    ["create"])],
        "system:node": [
            _rule([""], ["nodes"], [*READ, "create", "patch", "update"]),
            _rule([""], ["nodes/status"], ["patch", "update"]),
            _rule([""], ["pods"], [*READ, "delete"]),
            _rule([""], ["pods/status"], ["patch", "update"]),
            _rule([""], ["events"], ["create", "patch", "update"]),
            _rule([""], ["configmaps", "secrets", "services", "endpoints", "serviceaccounts"], READ),
            _rule([""], ["serviceaccounts/token"], ["create"]),
            _rule(["networking.istio.io"], ["virtualservices", "destinationrules"], READ),  # ClusterIP tcp routes
            _rule([MESH_GROUP], ["nodes/credentials"], ["create"]),
        ],
        "system:meshwork:proxy": [
            _rule([MESH_GROUP], ["proxies/config"], ["get"]),
            _rule([MESH_GROUP], ["proxies/ack", "proxies/certificate"], ["create"]),
            _rule([MESH_GROUP], ["services/activate"], ["create"]),  # scale from zero (control.scaletozero)
        ],
    }


def cluster_role_bindings() -> dict[str, tuple[str, str, str]]:
    """Binding name -> (ClusterRole, subject kind, subject name)."""
    return {
        "cluster-admin": ("cluster-admin", "Group", "system:masters"),
        "system:discovery": ("system:discovery", "Group", "system:authenticated"),
        "system:basic-user": ("system:basic-user", "Group", "system:authenticated"),
        "system:public-info-viewer": ("system:public-info-viewer", "Group", "system:authenticated"),
        "system:node": ("system:node", "Group", NODES_GROUP),
        "system:meshwork:proxy": ("system:meshwork:proxy", "Group", PROXIES_GROUP),
    }


AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"


async def ensure_bootstrap_policy(objects: Objects) -> None:
    """Create the bootstrap ClusterRoles and ClusterRoleBindings that are missing; add missing rules to roles
    still marked ``autoupdate``."""
    roles, bindings = REGISTRY.require("rbac.authorization.k8s.io", "ClusterRole"), REGISTRY.require(
        "rbac.authorization.k8s.io", "ClusterRoleBinding")
    labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    annotations = {AUTOUPDATE: "true"}
    for name, rules in cluster_roles().items():
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "labels": labels, "annotations": annotations}, "rules": rules}
        existing = objects.cache.get(object_key(roles, None, name))
        if existing is None:
            try:
                await objects.create(roles, None, body)
            except AlreadyExists:
                pass
            continue
        # As Kubernetes' API server reconciles its bootstrap roles at start: a role still marked
        # autoupdate gets the rules a newer meshwork added (a data dir from an older version keeps
        # working); a role the user took over (autoupdate "false") is left alone.
        meta = existing.obj.get("metadata") or {}
        if (meta.get("annotations") or {}).get(AUTOUPDATE) == "false":
            continue
        have = list(existing.obj.get("rules") or [])
        missing = [rule for rule in rules if rule not in have]
        if missing:
            await objects.patch(roles, None, name, {"rules": have + missing}, "merge")
    for name, (role, kind, subject) in cluster_role_bindings().items():
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]}
        if objects.cache.get(object_key(bindings, None, name)) is None:
            try:
                await objects.create(bindings, None, body)
            except AlreadyExists:
                pass
