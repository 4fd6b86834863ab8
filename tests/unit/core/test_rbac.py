"""RBAC decisions and request attributes (meshwork.core.rbac, meshwork.core.apirequest)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core import rbac
from meshwork.core.apirequest import forbidden_message, request_attributes
from meshwork.core.rbac import Attributes, Binding, Rule, Subject, UserInfo


class DictPolicy:
    def __init__(
        self,
        roles: dict[tuple[str, str, str], tuple[Rule, ...]] | None = None,
        bindings: Iterable[Binding] = (),
    ) -> None:
        self.roles = roles or {}
        self.all = list(bindings)

    def cluster_bindings(self) -> list[Binding]:
        return [b for b in self.all if not b.namespace]

    def bindings(self, namespace: str) -> list[Binding]:
        return [b for b in self.all if b.namespace == namespace]

    def rules(self, kind: rbac.RoleKind, namespace: str, name: str) -> tuple[Rule, ...] | None:
        return self.roles.get((kind, namespace, name))


SA = rbac.service_account_user("team", "reader")
POD_READER = (Rule(verbs=("get", "list", "watch"), api_groups=("",), resources=("pods",)),)


def reader_policy() -> DictPolicy:
    return DictPolicy(
        {("Role", "team", "pod-reader"): POD_READER},
        [Binding("read", "Role", "pod-reader", (Subject("ServiceAccount", "reader", "team"),), "team")],
    )


def attrs(verb: str, resource: str = "pods", namespace: str = "team", **kw: str) -> Attributes:
    return Attributes(verb=verb, resource=resource, namespace=namespace, **kw)


# -- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_resources", "resource", "sub", "want"),
    [
        (("pods",), "pods", "", True),
        (("pods",), "pods", "log", False),  # a subresource must be named
        (("pods/log",), "pods", "log", True),
        (("pods/log",), "pods", "", False),
        (("*",), "pods", "log", True),
        (("*/scale",), "deployments", "scale", True),
        (("*/scale",), "deployments", "", False),
        (("*/scale",), "deployments", "status", False),
        (("services",), "pods", "", False),
    ],
)
def test_resource_matching(rule_resources: tuple[str, ...], resource: str, sub: str, want: bool) -> None:
    rule = Rule(verbs=("get",), api_groups=("*",), resources=rule_resources)
    assert rbac.rule_allows(Attributes(verb="get", resource=resource, subresource=sub), rule) is want


@pytest.mark.parametrize(
    ("urls", "path", "want"),
    [(("/healthz",), "/healthz", True), (("/apis/*",), "/apis/apps", True), (("/apis/*",), "/api", False),
     (("*",), "/anything", True), (("/version",), "/version/x", False)],
)  # fmt: skip
def test_non_resource_urls(urls: tuple[str, ...], path: str, want: bool) -> None:
    rule = Rule(verbs=("get",), non_resource_urls=urls)
    assert rbac.rule_allows(Attributes(verb="get", resource_request=False, path=path), rule) is want
    assert not rbac.rule_allows(Attributes(verb="post", resource_request=False, path=path), rule)


def test_resource_names_limit_to_named_objects() -> None:
    rule = Rule(verbs=("get", "list"), api_groups=("",), resources=("configmaps",), resource_names=("app",))
    assert rbac.rule_allows(attrs("get", "configmaps", name="app"), rule)
    assert not rbac.rule_allows(attrs("get", "configmaps", name="other"), rule)
    assert not rbac.rule_allows(attrs("list", "configmaps"), rule)  # a list names nothing


def test_api_group_must_match() -> None:
    rule = Rule(verbs=("*",), api_groups=("apps",), resources=("deployments",))
    assert rbac.rule_allows(attrs("create", "deployments", api_group="apps"), rule)
    assert not rbac.rule_allows(attrs("create", "deployments", api_group=""), rule)


# -- subjects ---------------------------------------------------------------------------------


def test_service_account_user_and_groups() -> None:
    assert SA.name == "system:serviceaccount:team:reader"
    assert set(SA.groups) == {"system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"}
    assert rbac.split_service_account(SA.name) == ("team", "reader")
    assert rbac.split_service_account("system:serviceaccount:team") is None
    assert rbac.split_service_account("alice") is None


@pytest.mark.parametrize(
    ("subject", "binding_ns", "want"),
    [
        (Subject("ServiceAccount", "reader", "team"), "", True),
        (Subject("ServiceAccount", "reader"), "team", True),  # defaults to the binding's namespace
        (Subject("ServiceAccount", "reader"), "", False),
        (Subject("ServiceAccount", "reader", "other"), "team", False),
        (Subject("Group", "system:serviceaccounts:team"), "", True),
        (Subject("Group", "system:serviceaccounts"), "", True),
        (Subject("Group", "system:authenticated"), "", True),
        (Subject("User", "system:serviceaccount:team:reader"), "", True),
        (Subject("User", "reader"), "", False),
    ],
)
def test_applies_to(subject: Subject, binding_ns: str, want: bool) -> None:
    assert rbac.applies_to(SA, subject, binding_ns) is want


# -- the authorizer ---------------------------------------------------------------------------


def test_role_binding_grants_only_in_its_namespace() -> None:
    policy = reader_policy()
    assert rbac.authorize(SA, attrs("list"), policy).allowed
    assert rbac.authorize(SA, attrs("watch"), policy).allowed
    assert not rbac.authorize(SA, attrs("list", namespace="other"), policy).allowed
    assert not rbac.authorize(SA, attrs("list", namespace=""), policy).allowed  # all namespaces
    assert not rbac.authorize(SA, attrs("create"), policy).allowed
    assert not rbac.authorize(SA, attrs("list", "secrets"), policy).allowed
    assert not rbac.authorize(rbac.service_account_user("team", "writer"), attrs("list"), policy).allowed


def test_role_binding_to_a_cluster_role_is_namespaced() -> None:
    policy = DictPolicy(
        {("ClusterRole", "", "view"): POD_READER},
        [Binding("v", "ClusterRole", "view", (Subject("User", "alice"),), "team")],
    )
    alice = UserInfo("alice", ("system:authenticated",))
    assert rbac.authorize(alice, attrs("get", name="x"), policy).allowed
    assert not rbac.authorize(alice, attrs("get", name="x", namespace="other"), policy).allowed


def test_cluster_role_binding_grants_everywhere_and_reason_names_it() -> None:
    policy = DictPolicy(
        {("ClusterRole", "", "view"): POD_READER},
        [Binding("view-all", "ClusterRole", "view", (Subject("Group", "system:serviceaccounts"),))],
    )
    decision = rbac.authorize(SA, attrs("list", namespace="other"), policy)
    assert decision.allowed
    assert decision.reason == ('RBAC: allowed by ClusterRoleBinding "view-all" of ClusterRole "view" '
                               'to Group "system:serviceaccounts"')  # fmt: skip
    assert rbac.authorize(SA, attrs("list", namespace=""), policy).allowed


def test_missing_role_grants_nothing() -> None:
    policy = DictPolicy({}, [Binding("b", "Role", "gone", (Subject("ServiceAccount", "reader"),), "team")])
    assert not rbac.authorize(SA, attrs("list"), policy).allowed


def test_role_binding_never_grants_non_resource_urls() -> None:
    rules = (Rule(verbs=("get",), non_resource_urls=("*",)),)
    policy = DictPolicy({("ClusterRole", "", "urls"): rules},
                        [Binding("b", "ClusterRole", "urls", (Subject("ServiceAccount", "reader"),), "team")])  # fmt: skip
    assert not rbac.authorize(SA, Attributes(verb="get", resource_request=False, path="/healthz"), policy).allowed


NAMES = st.sampled_from(["", "team", "other", "x"])
VERBS = st.sampled_from(["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"])


@given(verb=VERBS, resource=st.sampled_from(["pods", "secrets", "nodes"]), ns=NAMES, name=NAMES)
def test_masters_may_do_anything_and_nobody_else_without_bindings(verb: str, resource: str, ns: str, name: str) -> None:
    request = attrs(verb, resource, namespace=ns, name=name)
    assert rbac.authorize(UserInfo("admin", ("system:masters",)), request, DictPolicy()).allowed
    assert not rbac.authorize(SA, request, DictPolicy()).allowed


@given(verb=VERBS, ns=NAMES, name=NAMES, sub=st.sampled_from(["", "log", "status"]))
def test_a_role_binding_never_reaches_past_its_namespace(verb: str, ns: str, name: str, sub: str) -> None:
    everything = (Rule(verbs=("*",), api_groups=("*",), resources=("*",)),)
    policy = DictPolicy({("ClusterRole", "", "all"): everything},
                        [Binding("b", "ClusterRole", "all", (Subject("ServiceAccount", "reader"),), "team")])  # fmt: skip
    request = attrs(verb, namespace=ns, name=name, subresource=sub)
    assert rbac.authorize(SA, request, policy).allowed is (ns == "team")


def test_wire_forms() -> None:
    rules = rbac.rules_from_wire([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"],
                                   "resourceNames": ["a"]}, {"verbs": ["get"], "nonResourceURLs": ["/x"]}])  # fmt: skip
    assert rules == (Rule(("get",), ("",), ("pods",), ("a",)), Rule(("get",), non_resource_urls=("/x",)))
    binding = rbac.binding_from_wire({
        "kind": "RoleBinding", "metadata": {"name": "b", "namespace": "team"},
        "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "reader"}],
    })  # fmt: skip
    assert binding == Binding("b", "Role", "r", (Subject("ServiceAccount", "reader"),), "team")
    assert rbac.binding_from_wire({"metadata": {}, "roleRef": {"kind": "Pod"}}) is None


# -- request attributes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "want"),
    [
        ("GET", "/api/v1/namespaces/a/pods", {}, ("list", "", "pods", "", "a", "")),
        ("GET", "/api/v1/namespaces/a/pods", {"watch": ["1"]}, ("watch", "", "pods", "", "a", "")),
        ("GET", "/api/v1/pods", {"watch": ["true"]}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/namespaces/a/pods", {"fieldSelector": ["metadata.name=p"]}, ("list", "", "pods", "", "a", "p")),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, ("get", "", "pods", "", "a", "p")),
        ("HEAD", "/api/v1/namespaces/a/pods/p", {}, ("get", "", "pods", "", "a", "p")),
        ("GET", "/api/v1/namespaces/a/pods/p/log", {}, ("get", "", "pods", "log", "a", "p")),
        ("POST", "/api/v1/namespaces/a/pods/p/exec", {}, ("create", "", "pods", "exec", "a", "p")),
        ("POST", "/api/v1/namespaces/a/pods", {}, ("create", "", "pods", "", "a", "")),
        ("PUT", "/apis/apps/v1/namespaces/a/deployments/d/status", {}, ("update", "apps", "deployments", "status", "a", "d")),
        ("PATCH", "/apis/apps/v1/namespaces/a/deployments/d", {}, ("patch", "apps", "deployments", "", "a", "d")),
        ("DELETE", "/api/v1/namespaces/a/pods/p", {}, ("delete", "", "pods", "", "a", "p")),
        ("DELETE", "/api/v1/namespaces/a/pods", {}, ("deletecollection", "", "pods", "", "a", "")),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/namespaces/a", {}, ("get", "", "namespaces", "", "a", "a")),
        ("PUT", "/api/v1/namespaces/a/finalize", {}, ("update", "", "namespaces", "finalize", "a", "a")),
        ("GET", "/api/v1/nodes/n1/proxy/stats/summary", {}, ("get", "", "nodes", "proxy", "", "n1")),
        ("POST", "/api/v1/namespaces/a/serviceaccounts/s/token", {}, ("create", "", "serviceaccounts", "token", "a", "s")),
        ("GET", "/apis/mesh.meshwork.io/v1/proxies/sidecar~1.2.3.4~p.a~a.svc.cluster.local/config", {},
         ("get", "mesh.meshwork.io", "proxies", "config", "", "sidecar~1.2.3.4~p.a~a.svc.cluster.local")),
        ("POST", "/apis/mesh.meshwork.io/v1/proxies/x/ack", {}, ("create", "mesh.meshwork.io", "proxies", "ack", "", "x")),
        ("GET", "/apis/mesh.meshwork.io/v1/proxies", {}, ("list", "mesh.meshwork.io", "proxies", "", "", "")),
        ("GET", "/apis/apps/v1/watch/namespaces/a/deployments", {}, ("watch", "apps", "deployments", "", "a", "")),
    ],
)  # fmt: skip
def test_request_attributes(method: str, path: str, query: dict[str, list[str]], want: tuple[str, ...]) -> None:
    a = request_attributes(method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz", "/metrics"])
def test_non_resource_requests(path: str) -> None:
    a = request_attributes("GET", path, {})
    assert not a.resource_request and a.path == path and a.verb == "get"


def test_forbidden_messages_are_kubectls() -> None:
    user = "system:serviceaccount:ns:sa"
    assert forbidden_message(user, request_attributes("GET", "/api/v1/namespaces/other/pods", {})) == (
        'pods is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "pods" in API group "" '
        'in the namespace "other"')  # fmt: skip
    assert forbidden_message(user, request_attributes("GET", "/apis/apps/v1/deployments", {})) == (
        'deployments.apps is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "deployments" '
        'in API group "apps" at the cluster scope')  # fmt: skip
    assert forbidden_message(user, request_attributes("GET", "/api/v1/namespaces/ns/pods/p/log", {})) == (
        'pods "p" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "pods/log" in API group "" '
        'in the namespace "ns"')  # fmt: skip
    assert forbidden_message("bob", request_attributes("GET", "/metrics", {})) == (
        'forbidden: User "bob" cannot get path "/metrics"')
