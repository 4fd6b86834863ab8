"""AuthorizationPolicy on TCP connections: the same compiled rules, HTTP-only fields fail closed.

Istio's "Authorization on TCP traffic" task and the AuthorizationPolicy
reference: a connection shows only TCP attributes (source principal,
namespace and IPs, destination IP and port, SNI); an ALLOW rule with an
HTTP-only field (hosts, methods, paths, requestPrincipals, request headers,
``request.auth.*``) never matches a connection, and a DENY rule ignores those
fields, so it denies more.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.security.attributes import RequestAttributes
from meshwork.core.security.authz import AuthzPolicy, compile_policies, connection_attributes

SLEEP = "cluster.local/ns/foo/sa/sleep"
OTHER = "cluster.local/ns/bar/sa/other"

# The task's policies (istio.io/latest/docs/tasks/security/authorization/authz-tcp/).
TCP_POLICY_PORTS = {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["9000", "9001"]}}]}]}
TCP_POLICY_GET = {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["9000"]}}]}]}
TCP_DENY_GET = {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["9000"]}}]}]}


def conn(port: int, *, source_ip: str = "127.0.0.1", principal: str | None = None) -> RequestAttributes:
    return connection_attributes(
        source_ip=source_ip, destination_ip="127.1.0.9", destination_port=port, source_principal=principal
    )


def decide(specs: list[dict[str, Any]], attrs: RequestAttributes) -> bool:
    policies = [AuthzPolicy(f"p{i}", "foo", spec) for i, spec in enumerate(specs)]
    return compile_policies(policies).check(attrs).allowed


@pytest.mark.parametrize(
    ("specs", "allowed_ports"),
    [
        ([], {9000, 9001, 9002}),
        ([TCP_POLICY_PORTS], {9000, 9001}),
        ([TCP_POLICY_GET], set()),
        ([TCP_DENY_GET], {9001, 9002}),
        ([TCP_POLICY_PORTS, TCP_DENY_GET], {9001}),
    ],
    ids=["no policy", "allow ports", "allow GET on 9000", "deny GET on 9000", "allow ports, deny GET"],
)
def test_the_tasks_policies(specs: list[dict[str, Any]], allowed_ports: set[int]) -> None:
    assert {p for p in (9000, 9001, 9002) if decide(specs, conn(p))} == allowed_ports


def test_check_connection_and_the_reason() -> None:
    authz = compile_policies([AuthzPolicy("tcp-policy", "foo", TCP_POLICY_GET)])
    verdict = authz.check_connection(source_ip="127.0.0.1", destination_ip="127.1.0.9", destination_port=9000)
    assert not verdict.allowed and verdict.reason == "no ALLOW policy matched (foo/tcp-policy)"
    lines = authz.explain(conn(9000))
    assert "methods (not available on TCP)" in "\n".join(lines), lines
    deny = compile_policies([AuthzPolicy("tcp-deny", "foo", TCP_DENY_GET)])
    verdict = deny.check_connection(source_ip="127.0.0.1", destination_ip="127.1.0.9", destination_port=9000)
    assert (verdict.allowed, verdict.policy, verdict.rule) == (False, "foo/tcp-deny", 0)


@pytest.mark.parametrize(
    "rule",
    [
        {"from": [{"source": {"requestPrincipals": ["*"]}}]},
        {"from": [{"source": {"notRequestPrincipals": ["x/y"]}}]},
        {"to": [{"operation": {"hosts": ["tcp-echo"]}}]},
        {"to": [{"operation": {"notPaths": ["/admin"]}}]},
        {"when": [{"key": "request.headers[x-token]", "values": ["a"]}]},
        {"when": [{"key": "request.auth.claims[iss]", "notValues": ["x"]}]},
        {"when": [{"key": "request.auth.principal", "values": ["*"]}]},
    ],
)
def test_every_http_only_field(rule: dict[str, Any]) -> None:
    """Each HTTP-only field: an ALLOW rule with it admits no connection; a DENY rule with it
    (and nothing else) denies every connection."""
    assert not decide([{"action": "ALLOW", "rules": [rule]}], conn(9000))
    assert not decide([{"action": "DENY", "rules": [rule]}], conn(9000))
    assert decide([{"action": "DENY", "rules": [rule]}, {"rules": [{}]}], conn(9000)) is False


def test_tcp_fields_match_connections() -> None:
    assert decide([{"rules": [{"from": [{"source": {"principals": [SLEEP]}}]}]}], conn(9000, principal=SLEEP))
    assert not decide([{"rules": [{"from": [{"source": {"principals": ["*"]}}]}]}], conn(9000))  # plaintext
    assert decide([{"rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}], conn(9000, principal=SLEEP))
    assert decide([{"rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.0/8"]}}]}]}], conn(9000))
    assert not decide([{"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}], conn(9000))
    assert decide([{"rules": [{"when": [{"key": "destination.port", "values": ["9000"]}]}]}], conn(9000))
    assert decide([{"rules": [{"when": [{"key": "destination.ip", "values": ["127.1.0.0/16"]}]}]}], conn(1))
    deny_others = [{"action": "DENY", "rules": [{"to": [{"operation": {"notPorts": ["9000"]}}]}]}]
    assert decide(deny_others, conn(9000)) and not decide(deny_others, conn(9001))


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

PORTS = st.sampled_from([9000, 9001, 9002])
SOURCE_IPS = st.sampled_from(["127.0.0.1", "127.1.0.4", "10.1.2.3"])
PRINCIPALS = st.sampled_from([None, SLEEP, OTHER])


@st.composite
def tcp_rules(draw: st.DrawFn) -> dict[str, Any]:
    """A rule of TCP fields only."""
    rule: dict[str, Any] = {}
    op: dict[str, Any] = {}
    for name in ("ports", "notPorts"):
        if draw(st.booleans()):
            op[name] = draw(st.lists(st.sampled_from(["9000", "9001", "9002"]), min_size=1, max_size=2))
    if op:
        rule["to"] = [{"operation": op}]
    src: dict[str, Any] = {}
    if draw(st.booleans()):
        src["principals"] = [draw(st.sampled_from([SLEEP, "*", "*/sa/other"]))]
    if draw(st.booleans()):
        src["notNamespaces"] = [draw(st.sampled_from(["foo", "bar"]))]
    if draw(st.booleans()):
        src["ipBlocks"] = [draw(st.sampled_from(["127.0.0.0/8", "10.0.0.0/8"]))]
    if src:
        rule["from"] = [{"source": src}]
    if draw(st.booleans()):
        rule["when"] = [{"key": "destination.port", "values": [draw(st.sampled_from(["9000", "9002"]))]}]
    return rule


@st.composite
def http_parts(draw: st.DrawFn) -> dict[str, Any]:
    """HTTP-only fields, to be added to a rule (at least one)."""
    op: dict[str, Any] = {}
    kind = draw(st.sampled_from(["methods", "paths", "hosts", "notMethods", "requestPrincipals", "header"]))
    if kind == "requestPrincipals":
        return {"from": {"requestPrincipals": ["*"]}}
    if kind == "header":
        return {"when": {"key": "request.headers[x-a]", "values": ["1"]}}
    op[kind] = [draw(st.sampled_from(["GET", "/ip", "tcp-echo", "*"]))]
    return {"to": op}


def with_http(rule: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(rule)
    if "to" in parts:
        out.setdefault("to", [{"operation": {}}])[0]["operation"].update(parts["to"])
    if "from" in parts:
        out.setdefault("from", [{"source": {}}])[0]["source"].update(parts["from"])
    if "when" in parts:
        out.setdefault("when", []).append(parts["when"])
    return out


def policies_of(action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"action": action, "rules": rules}


@given(
    allow=st.lists(tcp_rules(), max_size=3),
    deny=st.lists(tcp_rules(), max_size=3),
    port=PORTS,
    source_ip=SOURCE_IPS,
    principal=PRINCIPALS,
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/", "/ip"]),
)
def test_tcp_only_rules_decide_a_connection_as_a_request(
    allow: list[dict[str, Any]], deny: list[dict[str, Any]], port: int, source_ip: str,
    principal: str | None, method: str, path: str,
) -> None:  # fmt: skip
    """Rules of TCP fields only: a connection gets the verdict an HTTP request from the same
    peer to the same port gets, whatever the request's method and path."""
    specs = ([policies_of("ALLOW", allow)] if allow else []) + ([policies_of("DENY", deny)] if deny else [])
    policies = [AuthzPolicy(f"p{i}", "foo", s) for i, s in enumerate(specs)]
    authz = compile_policies(policies)
    tcp = authz.check(conn(port, source_ip=source_ip, principal=principal))
    http = authz.check(RequestAttributes.build(
        method=method, path=path, host="tcp-echo", source_ip=source_ip, source_principal=principal,
        destination_ip="127.1.0.9", destination_port=port,
    ))  # fmt: skip
    assert (tcp.allowed, tcp.reason) == (http.allowed, http.reason)


@given(
    rules=st.lists(st.tuples(tcp_rules(), http_parts()), min_size=1, max_size=3),
    port=PORTS,
    source_ip=SOURCE_IPS,
    principal=PRINCIPALS,
)
def test_allow_rules_with_http_fields_never_admit_a_connection(
    rules: list[tuple[dict[str, Any], dict[str, Any]]], port: int, source_ip: str, principal: str | None
) -> None:
    spec = policies_of("ALLOW", [with_http(rule, parts) for rule, parts in rules])
    assert not decide([spec], conn(port, source_ip=source_ip, principal=principal))


@given(
    rules=st.lists(st.tuples(tcp_rules(), http_parts()), min_size=1, max_size=3),
    port=PORTS,
    source_ip=SOURCE_IPS,
    principal=PRINCIPALS,
)
def test_deny_rules_ignore_http_fields_on_a_connection(
    rules: list[tuple[dict[str, Any], dict[str, Any]]], port: int, source_ip: str, principal: str | None
) -> None:
    """A DENY rule decides a connection as the same rule without its HTTP-only fields does."""
    attrs = conn(port, source_ip=source_ip, principal=principal)
    with_fields = policies_of("DENY", [with_http(rule, parts) for rule, parts in rules])
    without = policies_of("DENY", [rule for rule, _ in rules])
    assert decide([with_fields], attrs) == decide([without], attrs)
