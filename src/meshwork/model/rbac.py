"""RBAC kinds (rbac.authorization.k8s.io/v1): Role, ClusterRole, RoleBinding, ClusterRoleBinding.

What lives here: the models, upstream defaulting of ``apiGroup`` on subjects
and role references, and the shape checks the API server makes (a rule has
verbs and either resources or nonResourceURLs; a RoleBinding refers to a Role
or ClusterRole; subject kinds and their apiGroups). These kinds have no
``spec``/``status``: rules, subjects and roleRef sit at the top level.

What must not: deciding whether a request is allowed (that is
``meshwork.core.rbac``), or resolving aggregated ClusterRoles.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from meshwork.model.base import REGISTRY, KindInfo, Model, Resource
from meshwork.model.pod import LabelSelector, Loc, fail_at

RBAC_GROUP = "rbac.authorization.k8s.io"


class PolicyRule(Model):
    """Verbs allowed on resources (optionally by name) or on non-resource URLs."""

    verbs: list[str]
    api_groups: list[str] | None = None
    resources: list[str] | None = None
    resource_names: list[str] | None = None
    non_resource_urls: list[str] | None = Field(default=None, alias="nonResourceURLs")

    @model_validator(mode="after")
    def _check(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        if not self.verbs:
            errors.append((("verbs",), "verbs must contain at least one value", self.verbs))
        if self.non_resource_urls:
            if self.resources or self.api_groups or self.resource_names:
                errors.append((("nonResourceURLs",), "rules cannot apply to both regular "
                               "resources and non-resource URLs", self.non_resource_urls))  # fmt: skip
        elif not self.resources:
            errors.append((("resources",), "resource rules must supply at least one resource",
                           self.resources))  # fmt: skip
        elif not self.api_groups:
            errors.append((("apiGroups",), "resource rules must supply at least one api group",
                           None))  # fmt: skip
        fail_at("PolicyRule", errors)
        return self


class AggregationRule(Model):
    """ClusterRoles whose rules are merged into this one."""

    cluster_role_selectors: list[LabelSelector] | None = None


class RoleRef(Model):
    """The Role or ClusterRole a binding grants."""

    api_group: str = RBAC_GROUP
    kind: Literal["Role", "ClusterRole"]
    name: str

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.api_group != RBAC_GROUP:
            fail_at("RoleRef", [(("apiGroup",), f'Unsupported value: supported values: "{RBAC_GROUP}"',
                                 self.api_group)])  # fmt: skip
        if not self.name:
            fail_at("RoleRef", [(("name",), "Required value", self.name)])
        return self


class Subject(Model):
    """Who a binding grants to: a User, Group or ServiceAccount."""

    kind: Literal["User", "Group", "ServiceAccount"]
    api_group: str | None = None
    name: str
    namespace: str | None = None

    @model_validator(mode="after")
    def _defaults_and_check(self) -> Self:
        # SetDefaults_Subject: "" for ServiceAccount, the RBAC group for User and Group.
        if self.api_group is None:
            self.api_group = "" if self.kind == "ServiceAccount" else RBAC_GROUP
        want = "" if self.kind == "ServiceAccount" else RBAC_GROUP
        if self.api_group != want:
            fail_at("Subject", [(("apiGroup",), f'Unsupported value: supported values: "{want}"',
                                 self.api_group)])  # fmt: skip
        if not self.name:
            fail_at("Subject", [(("name",), "Required value", self.name)])
        return self


class Role(Resource):
    """A namespaced set of permissions (rbac.authorization.k8s.io/v1 Role)."""

    api_version: Literal["rbac.authorization.k8s.io/v1"] = "rbac.authorization.k8s.io/v1"
    kind: Literal["Role"] = "Role"
    rules: list[PolicyRule] | None = None

    @model_validator(mode="after")
    def _no_urls(self) -> Self:
        fail_at("Role", [(("rules", i, "nonResourceURLs"), "namespaced rules cannot apply to "
                          "non-resource URLs", r.non_resource_urls)
                         for i, r in enumerate(self.rules or ()) if r.non_resource_urls])  # fmt: skip
        return self


class ClusterRole(Resource):
    """A cluster-wide set of permissions (rbac.authorization.k8s.io/v1 ClusterRole)."""

    api_version: Literal["rbac.authorization.k8s.io/v1"] = "rbac.authorization.k8s.io/v1"
    kind: Literal["ClusterRole"] = "ClusterRole"
    rules: list[PolicyRule] | None = None
    aggregation_rule: AggregationRule | None = None


def _check_subjects(subjects: list[Subject] | None, *, namespaced: bool) -> list[tuple[Loc, str, Any]]:
    return [
        (("subjects", i, "namespace"), "Required value", None)
        for i, s in enumerate(subjects or ())
        if s.kind == "ServiceAccount" and not s.namespace and not namespaced
    ]


class RoleBinding(Resource):
    """Grants a Role or ClusterRole within a namespace (rbac.authorization.k8s.io/v1 RoleBinding)."""

    api_version: Literal["rbac.authorization.k8s.io/v1"] = "rbac.authorization.k8s.io/v1"
    kind: Literal["RoleBinding"] = "RoleBinding"
    subjects: list[Subject] | None = None
    role_ref: RoleRef

    @model_validator(mode="after")
    def _check(self) -> Self:
        fail_at("RoleBinding", _check_subjects(self.subjects, namespaced=True))
        return self


class ClusterRoleBinding(Resource):
    """Grants a ClusterRole cluster-wide (rbac.authorization.k8s.io/v1 ClusterRoleBinding)."""

    api_version: Literal["rbac.authorization.k8s.io/v1"] = "rbac.authorization.k8s.io/v1"
    kind: Literal["ClusterRoleBinding"] = "ClusterRoleBinding"
    subjects: list[Subject] | None = None
    role_ref: RoleRef

    @model_validator(mode="after")
    def _check(self) -> Self:
        errors = _check_subjects(self.subjects, namespaced=False)
        if self.role_ref.kind != "ClusterRole":
            errors.append((("roleRef", "kind"), 'Unsupported value: supported values: "ClusterRole"',
                           self.role_ref.kind))  # fmt: skip
        fail_at("ClusterRoleBinding", errors)
        return self


for _kind, _plural, _model, _namespaced in (
    ("Role", "roles", Role, True),
    ("ClusterRole", "clusterroles", ClusterRole, False),
    ("RoleBinding", "rolebindings", RoleBinding, True),
    ("ClusterRoleBinding", "clusterrolebindings", ClusterRoleBinding, False),
):
    REGISTRY.register(KindInfo(
        group=RBAC_GROUP, versions=("v1",), kind=_kind, plural=_plural, singular=_kind.lower(),
        model=_model, namespaced=_namespaced, has_status=False, name_rule="path",
    ))  # fmt: skip
