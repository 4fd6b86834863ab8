"""AuthorizationPolicy semantics: one table of (policies, request, expected), plus properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.security.attributes import RequestAttributes, fold_headers, namespace_of
from meshwork.core.security.authz import AuthzPolicy, PolicyRejected, compile_policies

PP = "cluster.local/ns/default/sa/bookinfo-productpage"


def policy(
    spec: dict[str, Any], name: str = "p", ns: str = "foo", dry_run: bool = False
) -> AuthzPolicy:
    return AuthzPolicy(name, ns, spec, dry_run)


def allow(*rules: dict[str, Any], name: str = "allow") -> AuthzPolicy:
    return policy({"action": "ALLOW", "rules": list(rules)}, name)


def deny(*rules: dict[str, Any], name: str = "deny") -> AuthzPolicy:
    return policy({"action": "DENY", "rules": list(rules)}, name)


def to(**op: Any) -> dict[str, Any]:
    return {"to": [{"operation": op}]}


def frm(**src: Any) -> dict[str, Any]:
    return {"from": [{"source": src}]}


def when(
    key: str, values: list[str] | None = None, not_values: list[str] | None = None
) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key}
    if values is not None:
        cond["values"] = values
    if not_values is not None:
        cond["notValues"] = not_values
    return {"when": [cond]}


def req(**kw: Any) -> RequestAttributes:
    kw.setdefault("method", "GET")
    kw.setdefault("path", "/")
    kw.setdefault("host", "httpbin.foo:8000")
    headers = kw.pop("headers", {})
    return RequestAttributes.build(headers=headers, **kw)


JWT = {
    "request_principal": "iss.example/alice",
    "claims": {
        "iss": "iss.example",
        "sub": "alice",
        "aud": ["a1", "a2"],
        "azp": "web",
        "groups": ["group1", "group2"],
        "nested": {"role": "admin"},
    },
}

CASES: list[tuple[str, list[AuthzPolicy], RequestAttributes, bool]] = [
    ("no policy allows", [], req(), True),
    ("allow-nothing spec {} denies", [policy({})], req(), False),
    ("empty-rules ALLOW denies", [policy({"action": "ALLOW"})], req(), False),
    ("rule {} allows all", [allow({})], req(), True),
    ("DENY {} denies all", [deny({})], req(), False),
    ("DENY before ALLOW", [allow({}), deny(to(methods=["GET"]))], req(), False),
    ("DENY not matching, ALLOW matching", [allow({}), deny(to(methods=["POST"]))], req(), True),
    ("AUDIT alone allows", [policy({"action": "AUDIT", "rules": [{}]})], req(), True),
    # methods
    ("method exact", [allow(to(methods=["GET"]))], req(), True),
    ("method case-sensitive", [allow(to(methods=["get"]))], req(), False),
    ("method prefix", [allow(to(methods=["G*"]))], req(), True),
    ("notMethods", [allow(to(notMethods=["GET"]))], req(method="POST"), True),
    ("notMethods excludes", [allow(to(notMethods=["GET"]))], req(), False),
    # paths
    ("path exact", [allow(to(paths=["/ip"]))], req(path="/ip"), True),
    ("path exact ignores query", [allow(to(paths=["/ip"]))], req(path="/ip?x=1"), True),
    ("path exact no prefix", [allow(to(paths=["/ip"]))], req(path="/ip/x"), False),
    ("path prefix", [allow(to(paths=["/api/*"]))], req(path="/api/v1"), True),
    ("path prefix needs slash", [allow(to(paths=["/api/*"]))], req(path="/apiary"), False),
    ("path suffix", [allow(to(paths=["*/info"]))], req(path="/x/info"), True),
    ("path presence", [allow(to(paths=["*"]))], req(path="/anything"), True),
    ("path case-sensitive", [allow(to(paths=["/ip"]))], req(path="/IP"), False),
    (
        "path template one segment",
        [allow(to(paths=["/users/{*}/profile"]))],
        req(path="/users/7/profile"),
        True,
    ),
    (
        "path template not two",
        [allow(to(paths=["/users/{*}/profile"]))],
        req(path="/users/7/8/profile"),
        False,
    ),
    ("path template many", [allow(to(paths=["/{**}/profile"]))], req(path="/a/b/c/profile"), True),
    ("notPaths", [allow(to(notPaths=["/admin*"]))], req(path="/admin/x"), False),
    # hosts
    (
        "host exact with port",
        [allow(to(hosts=["httpbin.foo"]))],
        req(host="httpbin.foo:8000"),
        True,
    ),
    ("host case-insensitive", [allow(to(hosts=["HTTPBIN.foo"]))], req(host="httpbin.FOO"), True),
    (
        "host exact other",
        [allow(to(hosts=["httpbin.foo"]))],
        req(host="httpbin.foo.evil:80"),
        False,
    ),
    ("host suffix", [allow(to(hosts=["*.foo"]))], req(host="httpbin.foo:8000"), True),
    ("host prefix", [allow(to(hosts=["httpbin.*"]))], req(host="httpbin.bar"), True),
    (
        "host explicit port",
        [allow(to(hosts=["httpbin.foo:8000"]))],
        req(host="httpbin.foo:9000"),
        False,
    ),
    # ports
    ("port", [allow(to(ports=["8000"]))], req(destination_port=8000), True),
    ("port other", [allow(to(ports=["8000"]))], req(destination_port=80), False),
    ("notPorts", [allow(to(notPorts=["80"]))], req(destination_port=8000), True),
    # principals and namespaces
    ("principal exact", [allow(frm(principals=[PP]))], req(source_principal=PP), True),
    ("principal absent on plaintext", [allow(frm(principals=[PP]))], req(), False),
    ("principal * needs mTLS", [allow(frm(principals=["*"]))], req(), False),
    ("principal * with mTLS", [allow(frm(principals=["*"]))], req(source_principal=PP), True),
    (
        "principal suffix",
        [allow(frm(principals=["*/sa/bookinfo-productpage"]))],
        req(source_principal=PP),
        True,
    ),
    (
        "principal prefix",
        [allow(frm(principals=["cluster.local/ns/default/*"]))],
        req(source_principal=PP),
        True,
    ),
    ("notPrincipals * matches plaintext", [deny(frm(notPrincipals=["*"]))], req(), False),
    (
        "notPrincipals * lets mTLS through",
        [deny(frm(notPrincipals=["*"]))],
        req(source_principal=PP),
        True,
    ),
    (
        "namespace from principal",
        [allow(frm(namespaces=["default"]))],
        req(source_principal=PP),
        True,
    ),
    ("namespace other", [allow(frm(namespaces=["foo"]))], req(source_principal=PP), False),
    ("namespace prefix", [allow(frm(namespaces=["def*"]))], req(source_principal=PP), True),
    (
        "notNamespaces",
        [deny(frm(notNamespaces=["default"]))],
        req(source_principal="cluster.local/ns/x/sa/y"),
        False,
    ),
    (
        "serviceAccounts ns/sa",
        [allow(frm(serviceAccounts=["default/bookinfo-productpage"]))],
        req(source_principal=PP),
        True,
    ),
    (
        "serviceAccounts bare is policy ns",
        [allow(frm(serviceAccounts=["bookinfo-productpage"]))],
        req(source_principal=PP),
        False,
    ),
    # ips
    ("ipBlocks cidr", [allow(frm(ipBlocks=["127.1.0.0/16"]))], req(source_ip="127.1.2.3"), True),
    ("ipBlocks single", [allow(frm(ipBlocks=["127.1.2.3"]))], req(source_ip="127.1.2.4"), False),
    (
        "remoteIpBlocks uses remote",
        [allow(frm(remoteIpBlocks=["10.0.0.0/8"]))],
        req(source_ip="127.0.0.1", remote_ip="10.1.1.1"),
        True,
    ),
    (
        "remoteIpBlocks falls back to source",
        [allow(frm(remoteIpBlocks=["127.0.0.1"]))],
        req(source_ip="127.0.0.1"),
        True,
    ),
    ("notIpBlocks", [deny(frm(notIpBlocks=["127.0.0.0/8"]))], req(source_ip="10.0.0.1"), False),
    # request principals
    ("requestPrincipals needs JWT", [allow(frm(requestPrincipals=["*"]))], req(), False),
    ("requestPrincipals * with JWT", [allow(frm(requestPrincipals=["*"]))], req(**JWT), True),
    (
        "requestPrincipals exact",
        [allow(frm(requestPrincipals=["iss.example/alice"]))],
        req(**JWT),
        True,
    ),
    ("notRequestPrincipals * denies no JWT", [deny(frm(notRequestPrincipals=["*"]))], req(), False),
    # when
    (
        "header value",
        [allow(when("request.headers[X-Token]", ["admin"]))],
        req(headers={"x-token": "admin"}),
        True,
    ),
    (
        "header name case-insensitive",
        [allow(when("request.headers[x-token]", ["admin"]))],
        req(headers={"X-TOKEN": "admin"}),
        True,
    ),
    (
        "header repeated joined",
        [allow(when("request.headers[x-a]", ["1,2"]))],
        req(headers=[("x-a", "1"), ("X-A", "2")]),
        True,
    ),
    (
        "header presence",
        [allow(when("request.headers[x-a]", ["*"]))],
        req(headers={"x-a": ""}),
        True,
    ),
    ("header absent", [allow(when("request.headers[x-a]", ["*"]))], req(), False),
    (
        "header notValues absent header matches",
        [deny(when("request.headers[x-token]", not_values=["admin"]))],
        req(),
        False,
    ),
    (
        "header notValues admin passes",
        [deny(when("request.headers[x-token]", not_values=["admin"]))],
        req(headers={"x-token": "admin"}),
        True,
    ),
    ("source.ip", [allow(when("source.ip", ["127.0.0.0/8"]))], req(source_ip="127.9.9.9"), True),
    (
        "remote.ip",
        [allow(when("remote.ip", ["10.0.0.1"]))],
        req(source_ip="127.0.0.1", remote_ip="10.0.0.1"),
        True,
    ),
    (
        "source.namespace",
        [allow(when("source.namespace", ["default"]))],
        req(source_principal=PP),
        True,
    ),
    ("source.principal", [allow(when("source.principal", [PP]))], req(source_principal=PP), True),
    (
        "destination.ip",
        [allow(when("destination.ip", ["127.1.0.5"]))],
        req(destination_ip="127.1.0.5"),
        True,
    ),
    (
        "destination.port",
        [allow(when("destination.port", ["9080"]))],
        req(destination_port=9080),
        True,
    ),
    (
        "connection.sni",
        [allow(when("connection.sni", ["*.foo.svc.cluster.local"]))],
        req(sni="httpbin.foo.svc.cluster.local"),
        True,
    ),
    (
        "request.auth.principal",
        [allow(when("request.auth.principal", ["iss.example/*"]))],
        req(**JWT),
        True,
    ),
    (
        "request.auth.audiences list",
        [allow(when("request.auth.audiences", ["a2"]))],
        req(**JWT),
        True,
    ),
    ("request.auth.presenter", [allow(when("request.auth.presenter", ["web"]))], req(**JWT), True),
    (
        "claims list any element",
        [allow(when("request.auth.claims[groups]", ["group1"]))],
        req(**JWT),
        True,
    ),
    (
        "claims list none",
        [allow(when("request.auth.claims[groups]", ["group3"]))],
        req(**JWT),
        False,
    ),
    (
        "claims nested",
        [allow(when("request.auth.claims[nested][role]", ["admin"]))],
        req(**JWT),
        True,
    ),
    (
        "claims nested missing",
        [allow(when("request.auth.claims[nested][x]", ["admin"]))],
        req(**JWT),
        False,
    ),
    (
        "claims need a verified JWT",
        [allow(when("request.auth.claims[groups]", ["group1"]))],
        req(claims={"groups": ["group1"]}),
        False,
    ),
    (
        "experimental key never allows",
        [allow(when("experimental.envoy.filters.a.b[c]", ["x"]))],
        req(),
        False,
    ),
    (
        "experimental key: DENY ignores it",
        [deny(when("experimental.envoy.filters.a.b[c]", ["x"]))],
        req(),
        False,
    ),
    # combination: OR within from/to, AND across from/to/when
    (
        "two sources OR",
        [
            allow(
                {
                    "from": [
                        {"source": {"principals": ["x"]}},
                        {"source": {"namespaces": ["default"]}},
                    ]
                }
            )
        ],
        req(source_principal=PP),
        True,
    ),
    (
        "two operations OR",
        [allow({"to": [{"operation": {"methods": ["POST"]}}, {"operation": {"paths": ["/ip"]}}]})],
        req(path="/ip"),
        True,
    ),
    (
        "from AND to",
        [allow({**frm(principals=[PP]), **to(methods=["POST"])})],
        req(source_principal=PP),
        False,
    ),
    (
        "fields within one operation AND",
        [allow(to(methods=["GET"], paths=["/ip"]))],
        req(path="/headers"),
        False,
    ),
    (
        "to AND when",
        [allow({**to(methods=["GET"]), **when("request.headers[x]", ["1"])})],
        req(),
        False,
    ),
    # TCP: HTTP-only fields
    (
        "TCP: ALLOW with methods never matches",
        [allow(to(methods=["GET"], ports=["9000"]))],
        req(http=False, destination_port=9000),
        False,
    ),
    (
        "TCP: ALLOW with ports only matches",
        [allow(to(ports=["9000"]))],
        req(http=False, destination_port=9000),
        True,
    ),
    (
        "TCP: DENY ignores methods, denies the port",
        [deny(to(methods=["GET"], ports=["9000"]))],
        req(http=False, method="", destination_port=9000),
        False,
    ),
    (
        "TCP: DENY on another port",
        [deny(to(methods=["GET"], ports=["9000"]))],
        req(http=False, destination_port=9001),
        True,
    ),
]


@pytest.mark.parametrize(
    ("policies", "attrs", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decisions(policies: list[AuthzPolicy], attrs: RequestAttributes, allowed: bool) -> None:
    verdict = compile_policies(policies).check(attrs)
    assert verdict.allowed is allowed, verdict.reason
    assert verdict.status == (200 if allowed else 403)
    assert verdict.body == ("" if allowed else "RBAC: access denied")


def test_reason_names_policy_and_rule() -> None:
    authz = compile_policies(
        [
            allow(to(methods=["POST"]), to(methods=["GET"]), name="viewer"),
            deny(to(paths=["/admin"]), name="no-admin"),
        ]
    )
    ok = authz.check(req())
    assert ok.allowed and ok.policy == "foo/viewer" and ok.rule == 1
    assert ok.reason == "allowed by ALLOW policy foo/viewer rule 1"
    bad = authz.check(req(path="/admin"))
    assert not bad.allowed and bad.policy == "foo/no-admin" and bad.rule == 0
    assert bad.reason == "denied by DENY policy foo/no-admin rule 0"
    none = authz.check(req(method="PUT"))
    assert none.reason == "no ALLOW policy matched (foo/viewer)" and none.policy is None


def test_explain_lines() -> None:
    authz = compile_policies([allow(frm(principals=[PP]), name="viewer")])
    lines = authz.explain(req(source_principal="cluster.local/ns/x/sa/y"))
    assert lines[0] == "DENY (403): no ALLOW policy matched (foo/viewer)"
    assert "  ALLOW foo/viewer" in lines
    assert any(
        "rule 0: no match: from: principals (got 'cluster.local/ns/x/sa/y')" in line
        for line in lines
    )


def test_audit_is_recorded_not_enforced() -> None:
    audit = policy({"action": "AUDIT", "rules": [to(paths=["/secret"])]}, "audit-secret")
    verdict = compile_policies([audit, allow({})]).check(req(path="/secret"))
    assert verdict.allowed and verdict.audited == ("foo/audit-secret rule 0",)


def test_dry_run_is_shadow_only() -> None:
    dry = policy({"action": "DENY", "rules": [{}]}, "dry-deny", dry_run=True)
    verdict = compile_policies([dry]).check(req())
    assert verdict.allowed
    assert verdict.shadow == "dry-run: would be denied: denied by DENY policy foo/dry-deny rule 0"
    manifest = {
        "metadata": {"name": "d", "namespace": "foo", "annotations": {"istio.io/dry-run": "true"}},
        "spec": {"action": "DENY", "rules": [{}]},
    }
    assert compile_policies([manifest]).check(req()).allowed


def test_custom_is_refused_clearly() -> None:
    custom = policy({"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]}, "ext")
    with pytest.raises(
        PolicyRejected, match=r"foo/ext: action CUSTOM \(provider 'ext-authz'\) is not supported"
    ):
        compile_policies([custom])


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"action": "DENY"}, "DENY action without `rules`"),
        ({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}, "invalid port: http"),
        ({"rules": [{"when": [{"key": "request.bogus", "values": ["x"]}]}]}, "unknown attribute"),
        ({"rules": [{"from": [{"source": {"principalz": ["x"]}}]}]}, "principalz"),
    ],
)
def test_invalid_policies_are_refused_with_the_field(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyRejected, match="AuthorizationPolicy foo/bad is invalid") as err:
        compile_policies([policy(spec, "bad")])
    assert fragment in str(err.value)


def test_helpers() -> None:
    assert namespace_of(PP) == "default"
    assert namespace_of(None) is None and namespace_of("nonsense") is None
    assert fold_headers([("A", "1"), ("a", "2"), ("B", "x")]) == {"a": "1,2", "b": "x"}


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
PATHS = st.sampled_from(["/", "/ip", "/admin", "/admin/x", "/public/y", "/headers"])
PRINCIPALS = st.sampled_from([None, PP, "cluster.local/ns/foo/sa/sleep"])


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["to"] = [{"operation": {"methods": draw(st.lists(METHODS, min_size=1, max_size=2))}}]
    if draw(st.booleans()):
        rule.setdefault("to", [{"operation": {}}])[0]["operation"]["paths"] = draw(
            st.lists(st.sampled_from(["/ip", "/admin/*", "*", "/public/*"]), min_size=1, max_size=2)
        )
    if draw(st.booleans()):
        rule["from"] = [
            {"source": {"principals": [draw(st.sampled_from([PP, "*", "*/sa/sleep"]))]}}
        ]
    return rule


@given(
    deny_rules=st.lists(rules(), min_size=1, max_size=3),
    allow_rules=st.lists(rules(), max_size=3),
    method=METHODS,
    path=PATHS,
    principal=PRINCIPALS,
)
def test_a_matching_deny_always_wins(
    deny_rules: list[dict[str, Any]],
    allow_rules: list[dict[str, Any]],
    method: str,
    path: str,
    principal: str | None,
) -> None:
    attrs = req(method=method, path=path, source_principal=principal)
    deny_only = compile_policies([deny(*deny_rules)])
    both = compile_policies([allow(*allow_rules), deny(*deny_rules), allow({}, name="everything")])
    if not deny_only.check(attrs).allowed:
        assert not both.check(attrs).allowed
    else:
        assert both.check(attrs).allowed  # "everything" allows what no DENY matched
