"""Kubernetes RBAC: may this user do this verb on this resource? Pure.

What lives here: the rule matching of Kubernetes' RBAC authorizer (verbs,
apiGroups, resources with ``pods/log`` and ``*/scale`` subresource forms,
resourceNames, nonResourceURLs with a trailing ``*``), which subjects a
binding applies to (User, Group, ServiceAccount by its
``system:serviceaccount:<ns>:<name>`` user name), and the walk over
ClusterRoleBindings and then the request namespace's RoleBindings. The
``system:masters`` group is allowed everything, as the API server's
privileged-group authorizer does ahead of RBAC.

What must not: reading the store (a ``Policy`` hands over bindings and
roles), parsing request paths (``meshwork.core.apirequest``), aggregation of
ClusterRoles (their ``rules`` are used as written).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

SYSTEM_MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"

SubjectKind = Literal["User", "Group", "ServiceAccount"]
RoleKind = Literal["Role", "ClusterRole"]


@dataclass(frozen=True, slots=True)
class UserInfo:
    """An authenticated identity: a name and its groups."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The user a ServiceAccount token authenticates as, with Kubernetes' groups."""
    return UserInfo(
        f"{SA_PREFIX}{namespace}:{name}", (SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED), uid
    )


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ``system:serviceaccount:<ns>:<name>`` user, else None."""
    if not username.startswith(SA_PREFIX):
        return None
    namespace, sep, name = username[len(SA_PREFIX):].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request asks to do (the authorizer's ``Attributes``).

    ``resource_request`` False: a non-resource URL (``path``) with an HTTP-derived verb.
    """

    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule; empty tuples where the rule leaves a field out."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Subject:
    kind: SubjectKind
    name: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """A RoleBinding (``namespace`` set) or ClusterRoleBinding (``namespace`` empty)."""

    name: str
    role_kind: RoleKind
    role_name: str
    subjects: tuple[Subject, ...]
    namespace: str = ""

    @property
    def kind(self) -> str:
        return "RoleBinding" if self.namespace else "ClusterRoleBinding"


class Policy(Protocol):
    """The RBAC objects an authorizer reads."""

    def cluster_bindings(self) -> Iterable[Binding]: ...

    def bindings(self, namespace: str) -> Iterable[Binding]: ...

    def rules(self, kind: RoleKind, namespace: str, name: str) -> tuple[Rule, ...] | None:
        """A Role's (``namespace`` set) or ClusterRole's rules; None when it does not exist."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


# -- matching (pkg/apis/rbac/v1/evaluation_helpers.go) ----------------------------------------


def verb_matches(rule: Rule, verb: str) -> bool:
    return "*" in rule.verbs or verb in rule.verbs


def api_group_matches(rule: Rule, group: str) -> bool:
    return "*" in rule.api_groups or group in rule.api_groups


def resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    """``*``, the exact ``resource[/subresource]``, or ``*/subresource``."""
    combined = f"{resource}/{subresource}" if subresource else resource
    for wanted in rule.resources:
        if wanted == "*" or wanted == combined:
            return True
        if subresource and wanted == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    """No resourceNames: any name (and none); otherwise the name must be listed."""
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for wanted in rule.non_resource_urls:
        if wanted == "*" or wanted == path:
            return True
        if wanted.endswith("*") and path.startswith(wanted[:-1]):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    """Whether one rule covers the request."""
    if not verb_matches(rule, attrs.verb):
        return False
    if attrs.resource_request:
        return (
            api_group_matches(rule, attrs.api_group)
            and resource_matches(rule, attrs.resource, attrs.subresource)
            and resource_name_matches(rule, attrs.name)
        )
    return non_resource_url_matches(rule, attrs.path)


def applies_to(user: UserInfo, subject: Subject, binding_namespace: str) -> bool:
    """Whether a binding's subject names ``user`` (rule.go ``appliesToUser``).

    A ServiceAccount subject without a namespace means one in the binding's own namespace.
    """
    if subject.kind == "User":
        return user.name == subject.name
    if subject.kind == "Group":
        return subject.name in user.groups
    namespace = subject.namespace or binding_namespace
    return bool(namespace) and user.name == f"{SA_PREFIX}{namespace}:{subject.name}"


def _describe(binding: Binding, subject: Subject) -> str:
    """The allow reason in the RBAC authorizer's words."""
    if binding.namespace:
        return (f'RBAC: allowed by RoleBinding "{binding.name}/{binding.namespace}" of {binding.role_kind} '
                f'"{binding.role_name}" to {subject.kind} "{subject.name}"')
    return (f'RBAC: allowed by ClusterRoleBinding "{binding.name}" of ClusterRole "{binding.role_name}" '
            f'to {subject.kind} "{subject.name}"')


def _granting_subject(attrs: Attributes, user: UserInfo, binding: Binding, policy: Policy) -> Subject | None:
    """The subject through which ``binding`` grants the request to ``user``, if it does."""
    subject = next((s for s in binding.subjects if applies_to(user, s, binding.namespace)), None)
    if subject is None:
        return None
    role_ns = binding.namespace if binding.role_kind == "Role" else ""
    rules = policy.rules(binding.role_kind, role_ns, binding.role_name)
    return subject if rules is not None and any(rule_allows(attrs, r) for r in rules) else None


def authorize(user: UserInfo, attrs: Attributes, policy: Policy) -> Decision:
    """Allowed when ``system:masters`` or any binding that applies to ``user`` grants a matching rule.

    ClusterRoleBindings first, then RoleBindings of the request's namespace;
    a RoleBinding grants nothing outside its namespace, and never a
    non-resource URL or a cluster-scoped request.
    """
    if SYSTEM_MASTERS in user.groups:
        return Decision(True, f'allowed: member of "{SYSTEM_MASTERS}"')
    for binding in policy.cluster_bindings():
        if (subject := _granting_subject(attrs, user, binding, policy)) is not None:
            return Decision(True, _describe(binding, subject))
    if attrs.resource_request and attrs.namespace:
        for binding in policy.bindings(attrs.namespace):
            if (subject := _granting_subject(attrs, user, binding, policy)) is not None:
                return Decision(True, _describe(binding, subject))
    return Decision(False)


# -- wire form -> rules and bindings ----------------------------------------------------------


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def rules_from_wire(rules: object) -> tuple[Rule, ...]:
    """PolicyRules from a Role's or ClusterRole's ``rules`` (camelCase dicts)."""
    out: list[Rule] = []
    for raw in rules if isinstance(rules, list) else ():
        if isinstance(raw, Mapping):
            out.append(Rule(
                verbs=_strs(raw.get("verbs")), api_groups=_strs(raw.get("apiGroups")),
                resources=_strs(raw.get("resources")), resource_names=_strs(raw.get("resourceNames")),
                non_resource_urls=_strs(raw.get("nonResourceURLs")),
            ))  # fmt: skip
    return tuple(out)


def binding_from_wire(obj: Mapping[str, object]) -> Binding | None:
    """A Binding from a RoleBinding or ClusterRoleBinding object; None when it is malformed."""
    meta = obj.get("metadata")
    ref = obj.get("roleRef")
    if not isinstance(meta, Mapping) or not isinstance(ref, Mapping):
        return None
    kind = ref.get("kind")
    if kind not in ("Role", "ClusterRole"):
        return None
    namespace = str(meta.get("namespace") or "") if obj.get("kind") != "ClusterRoleBinding" else ""
    subjects: list[Subject] = []
    raw_subjects = obj.get("subjects")
    for s in raw_subjects if isinstance(raw_subjects, list) else ():
        if isinstance(s, Mapping) and s.get("kind") in ("User", "Group", "ServiceAccount"):
            subjects.append(Subject(s["kind"], str(s.get("name") or ""), str(s.get("namespace") or "")))
    return Binding(str(meta.get("name") or ""), kind, str(ref.get("name") or ""), tuple(subjects), namespace)
