"""PeerAuthentication precedence and policy selection (namespace, labels, root namespace)."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.security.peerauth import compose, effective_mode
from meshwork.core.security.select import PolicyObject, Workload, applies_to, select_policies


def pa(
    name: str,
    ns: str,
    mode: str | None = None,
    labels: dict[str, str] | None = None,
    ports: dict[str, Any] | None = None,
    created: str = "",
) -> PolicyObject:
    spec: dict[str, Any] = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if labels:
        spec["selector"] = {"matchLabels": labels}
    if ports:
        spec["portLevelMtls"] = ports
    return PolicyObject(name, ns, spec, created)


HTTPBIN_FOO = Workload("foo", {"app": "httpbin"})


@pytest.mark.parametrize(
    ("policies", "workload", "port", "mode"),
    [
        ([], HTTPBIN_FOO, None, "PERMISSIVE"),
        ([pa("default", "istio-system", "STRICT")], HTTPBIN_FOO, None, "STRICT"),
        (
            [pa("default", "istio-system", "STRICT"), pa("ns", "foo", "DISABLE")],
            HTTPBIN_FOO,
            None,
            "DISABLE",
        ),
        (
            [pa("default", "istio-system", "STRICT"), pa("ns", "foo", "UNSET")],
            HTTPBIN_FOO,
            None,
            "STRICT",
        ),
        (
            [pa("ns", "foo", "STRICT"), pa("w", "foo", "DISABLE", {"app": "httpbin"})],
            HTTPBIN_FOO,
            None,
            "DISABLE",
        ),
        (
            [pa("ns", "foo", "STRICT"), pa("w", "foo", None, {"app": "httpbin"})],
            HTTPBIN_FOO,
            None,
            "STRICT",
        ),
        (
            [pa("ns", "foo", "STRICT"), pa("w", "foo", "DISABLE", {"app": "other"})],
            HTTPBIN_FOO,
            None,
            "STRICT",
        ),
        ([pa("ns", "bar", "STRICT")], HTTPBIN_FOO, None, "PERMISSIVE"),
        # a selector policy in the root namespace is not a workload policy elsewhere
        ([pa("w", "istio-system", "STRICT", {"app": "httpbin"})], HTTPBIN_FOO, None, "PERMISSIVE"),
        # port level: overrides for that port only; UNSET inherits the workload's mode
        (
            [pa("w", "foo", "STRICT", {"app": "httpbin"}, {"80": {"mode": "DISABLE"}})],
            HTTPBIN_FOO,
            80,
            "DISABLE",
        ),
        (
            [pa("w", "foo", "STRICT", {"app": "httpbin"}, {"80": {"mode": "DISABLE"}})],
            HTTPBIN_FOO,
            8080,
            "STRICT",
        ),
        (
            [pa("ns", "foo", "STRICT"), pa("w", "foo", None, {"app": "httpbin"}, {"80": {}})],
            HTTPBIN_FOO,
            80,
            "STRICT",
        ),
        # the oldest of two namespace-level policies wins
        (
            [
                pa("b", "foo", "DISABLE", created="2024-02-01T00:00:00Z"),
                pa("a", "foo", "STRICT", created="2024-01-01T00:00:00Z"),
            ],
            HTTPBIN_FOO,
            None,
            "STRICT",
        ),
    ],
)
def test_precedence(
    policies: list[PolicyObject], workload: Workload, port: int | None, mode: str
) -> None:
    assert effective_mode(policies, workload, port) == mode


def test_decided_by_names_the_levels() -> None:
    decision = compose(
        [pa("default", "istio-system", "STRICT"), pa("w", "foo", "DISABLE", {"app": "httpbin"})],
        HTTPBIN_FOO,
    )
    assert decision.decided_by == ("istio-system/default", "foo/w")


@pytest.mark.parametrize(
    ("policy", "workload", "applies"),
    [
        (PolicyObject("p", "foo", {}), HTTPBIN_FOO, True),
        (PolicyObject("p", "bar", {}), HTTPBIN_FOO, False),
        (PolicyObject("p", "istio-system", {}), HTTPBIN_FOO, True),
        (
            PolicyObject("p", "istio-system", {"selector": {"matchLabels": {"app": "httpbin"}}}),
            HTTPBIN_FOO,
            True,
        ),
        (
            PolicyObject(
                "p", "foo", {"selector": {"matchLabels": {"app": "httpbin", "version": "v1"}}}
            ),
            HTTPBIN_FOO,
            False,
        ),
        (
            PolicyObject("p", "foo", {"selector": {"matchLabels": {"app": "httpbin"}}}),
            Workload("foo", {"app": "httpbin", "version": "v1"}),
            True,
        ),
        (
            PolicyObject("p", "foo", {"targetRefs": [{"kind": "Gateway", "name": "gw"}]}),
            HTTPBIN_FOO,
            False,
        ),
        (
            PolicyObject("p", "foo", {"targetRefs": [{"kind": "Gateway", "name": "gw"}]}),
            Workload("foo", {}, gateway="gw"),
            True,
        ),
    ],
)
def test_applies_to(policy: PolicyObject, workload: Workload, applies: bool) -> None:
    assert applies_to(policy, workload) is applies


def test_select_orders_oldest_first() -> None:
    manifests = [
        {
            "metadata": {
                "name": "new",
                "namespace": "foo",
                "creationTimestamp": "2024-05-01T00:00:00Z",
            },
            "spec": {},
        },
        {
            "metadata": {
                "name": "old",
                "namespace": "foo",
                "creationTimestamp": "2023-05-01T00:00:00Z",
            },
            "spec": {},
        },
        {"metadata": {"name": "elsewhere", "namespace": "bar"}, "spec": {}},
    ]
    assert [p.name for p in select_policies(manifests, HTTPBIN_FOO)] == ["old", "new"]
