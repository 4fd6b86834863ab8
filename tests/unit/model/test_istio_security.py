"""The security.istio.io kinds: field sets, Istio's validation rules, no defaults."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

import meshwork.model.istio_security  # noqa: F401  (registers the kinds)
from meshwork.model.base import REGISTRY, to_wire
from meshwork.model.codec import check_object
from meshwork.model.istio_security import AuthorizationPolicy, condition_key_error
from meshwork.model.loader import parse_text


def problems(kind: str, spec: Any) -> list[tuple[str, str]]:
    raw = {
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": spec,
    }
    return [(p.cause.field, p.cause.message) for p in check_object(raw).problems]


AUTHORIZATION_POLICY_ALL = """
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: all, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/sleep]
        notPrincipals: ["*/ns/legacy/*"]
        requestPrincipals: ["issuer/*"]
        notRequestPrincipals: ["bad/*"]
        namespaces: [default]
        notNamespaces: [legacy]
        ipBlocks: [10.0.0.0/8, 1.2.3.4]
        notIpBlocks: [10.1.0.0/16]
        remoteIpBlocks: ["2001:db8::/32"]
        notRemoteIpBlocks: [192.168.0.1]
    - source:
        serviceAccounts: [default/sleep]
        notServiceAccounts: [legacy/*]
    to:
    - operation:
        hosts: [example.com]
        notHosts: ["*.internal"]
        ports: ["8080"]
        notPorts: ["9090"]
        methods: [GET]
        notMethods: [DELETE]
        paths: [/info*, "/api/{*}/x"]
        notPaths: [/admin]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: request.headers[x-token]
      notValues: [admin]
    - key: source.ip
      values: [10.0.0.1]
    - key: destination.port
      values: ["443"]
  - {}
"""

AUTHORIZATION_POLICY_CUSTOM = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: edge}
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules:
  - to: [{operation: {paths: [/admin/*]}}]
"""

REQUEST_AUTHENTICATION_ALL = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [httpbin]
    jwksUri: https://example.com/jwks.json
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-group, claim: group}]
    timeout: 5s
  - issuer: inline
    jwks: '{"keys": [{"kty": "RSA", "n": "abc", "e": "AQAB"}]}'
"""

REQUEST_AUTHENTICATION_TARGET = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-svc}
spec:
  targetRef: {kind: Service, group: "", name: httpbin}
  jwtRules: [{issuer: a}]
"""

PEER_AUTHENTICATION_ALL = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: bar}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
  portLevelMtls:
    80: {mode: DISABLE}
    "8443": {mode: PERMISSIVE}
    9000: {mode: UNSET}
"""

ALL = [
    AUTHORIZATION_POLICY_ALL,
    AUTHORIZATION_POLICY_CUSTOM,
    REQUEST_AUTHENTICATION_ALL,
    REQUEST_AUTHENTICATION_TARGET,
    PEER_AUTHENTICATION_ALL,
]


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_keys(v) for v in value]
    return value


@pytest.mark.parametrize("text", ALL, ids=["ap", "ap-custom", "ra", "ra-target", "pa"])
def test_every_upstream_field_round_trips(text: str) -> None:
    (manifest,) = parse_text(textwrap.dedent(text), "t.yaml")
    source = _stringify_keys(yaml.safe_load(text))
    assert to_wire(manifest.obj) == {**source, "apiVersion": "security.istio.io/v1"}


def test_action_is_not_defaulted() -> None:
    (manifest,) = parse_text(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing}\nspec: {}\n",
        "t.yaml",
    )
    assert isinstance(manifest.obj, AuthorizationPolicy)
    assert manifest.obj.spec.action is None
    assert to_wire(manifest.obj)["spec"] == {}


AP_INVALID = [
    pytest.param(
        {"action": "CUSTOM", "rules": [{}]},
        ("spec.provider.name", "`provider.name` must not be empty"),
        id="custom-needs-provider",
    ),
    pytest.param(
        {"action": "CUSTOM", "provider": {"name": "x"}},
        (
            "spec.rules",
            "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        ),
        id="custom-needs-rules",
    ),
    pytest.param(
        {"action": "DENY"},
        (
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        ),
        id="deny-needs-rules",
    ),
    pytest.param(
        {"provider": {"name": "x"}, "rules": [{}]},
        ("spec.provider", "`provider` must not be with non CUSTOM action, found ALLOW"),
        id="provider-without-custom",
    ),
    pytest.param(
        {"action": "REJECT"},
        (
            "spec.action",
            'unsupported value "REJECT": supported values: "ALLOW", "DENY", "AUDIT", "CUSTOM"',
        ),
        id="action",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"a": "b"}}, "targetRef": {"kind": "Service", "name": "s"}},
        ("spec.selector", "only one of targetRefs or workloadSelector can be set"),
        id="selector-and-target",
    ),
    pytest.param(
        {"targetRef": {"kind": "Deployment", "group": "apps", "name": "s"}},
        (
            "spec.targetRef.kind",
            "targetRef must be to one of Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway but was apps/Deployment",
        ),
        id="target-kind",
    ),
    pytest.param(
        {"targetRefs": [{"kind": "Service", "name": "s", "namespace": "other"}]},
        (
            "spec.targetRefs[0].namespace",
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        ),
        id="target-namespace",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"app": "*"}}},
        ("spec.selector.matchLabels[app]", 'wildcard is not supported in selector: "app=*"'),
        id="selector-wildcard",
    ),
    pytest.param(
        {"rules": [{"from": []}]},
        ("spec.rules[0].from", "`from` must not be empty, found at rule 0"),
        id="empty-from",
    ),
    pytest.param(
        {"rules": [{"from": [{}]}]},
        ("spec.rules[0].from[0].source", "`from.source` must not be nil, found at rule 0"),
        id="nil-source",
    ),
    pytest.param(
        {"rules": [{"from": [{"source": {}}]}]},
        ("spec.rules[0].from[0].source", "`from.source` must not be empty, found at rule 0"),
        id="empty-source",
    ),
    pytest.param(
        {"rules": [{"to": [{"operation": {"methods": []}}]}]},
        ("spec.rules[0].to[0].operation", "`to.operation` must not be empty, found at rule 0"),
        id="empty-operation",
    ),
    pytest.param(
        {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]},
        (
            "spec.rules[0].from[0].source.ipBlocks[0]",
            'invalid IP address or CIDR range: "10.0.0.300"',
        ),
        id="ip-block",
    ),
    pytest.param(
        {"rules": [{"from": [{"source": {"principals": [""]}}]}]},
        (
            "spec.rules[0].from[0].source.principals[0]",
            "empty value not allowed, found in Principals",
        ),
        id="empty-value",
    ),
    pytest.param(
        {"rules": [{"from": [{"source": {"serviceAccounts": ["a/b"], "principals": ["x"]}}]}]},
        (
            "spec.rules[0].from[0].source",
            "cannot set serviceAccounts with namespaces or principals",
        ),
        id="service-accounts-exclusive",
    ),
    pytest.param(
        {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]},
        ("spec.rules[0].to[0].operation.ports[0]", "invalid port: http"),
        id="port-string",
    ),
    pytest.param(
        {"rules": [{"to": [{"operation": {"notPorts": ["70000"]}}]}]},
        ("spec.rules[0].to[0].operation.notPorts[0]", "invalid port: 70000"),
        id="port-range",
    ),
    pytest.param(
        {"rules": [{"when": [{"key": "request.headers[x]"}]}]},
        (
            "spec.rules[0].when[0]",
            "at least one of `values` or `notValues` must be set for key request.headers[x]",
        ),
        id="when-values",
    ),
    pytest.param(
        {"rules": [{"when": [{"key": "request.color", "values": ["red"]}]}]},
        ("spec.rules[0].when[0].key", "unknown attribute: request.color"),
        id="when-key",
    ),
    pytest.param(
        {"rules": [{"when": [{"key": "request.headers[]", "values": ["a"]}]}]},
        ("spec.rules[0].when[0].key", "invalid key: request.headers[]"),
        id="when-map-key",
    ),
    pytest.param(
        {"rules": [{"when": [{"key": "source.ip", "values": ["nope"]}]}]},
        (
            "spec.rules[0].when[0].values[0]",
            'invalid `value` for `key` source.ip: invalid IP address or CIDR range: "nope"',
        ),
        id="when-ip",
    ),
    pytest.param(
        {"rules": [{"when": [{"key": "destination.port", "notValues": ["x"]}]}]},
        (
            "spec.rules[0].when[0].notValues[0]",
            "invalid `notValue` for `key` destination.port: invalid port: x",
        ),
        id="when-port",
    ),
    pytest.param(
        {
            "action": "CUSTOM",
            "provider": {"name": "x"},
            "rules": [{"from": [{"source": {"principals": ["a"]}}]}],
        },
        (
            "spec.rules[0].from[0].source.principals",
            "From.Principals is currently not supported with CUSTOM action",
        ),
        id="custom-principals",
    ),
    pytest.param(
        {
            "action": "CUSTOM",
            "provider": {"name": "x"},
            "rules": [{"when": [{"key": "request.auth.principal", "values": ["a"]}]}],
        },
        (
            "spec.rules[0].when[0].key",
            "request.auth.principal is currently not supported with CUSTOM action",
        ),
        id="custom-auth-key",
    ),
    pytest.param(
        {"rules": [{"from": [{"source": {"principals": ["a"]}}], "to_": []}]},
        ("spec.rules[0].to_", 'unknown field "to_"'),
        id="python-name",
    ),
    pytest.param(
        {"rules": [{"from_": []}]},
        ("spec.rules[0].from_", 'unknown field "from_"'),
        id="from-python-name",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), AP_INVALID)
def test_authorization_policy_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("AuthorizationPolicy", spec)


@pytest.mark.parametrize(
    ("action", "value", "expected"),
    [
        ("DENY", "true", []),
        (None, "False", []),
        (
            "DENY",
            "maybe",
            [
                (
                    "metadata.annotations[istio.io/dry-run]",
                    "annotation istio.io/dry-run has invalid value (maybe): must be true or false",
                )
            ],
        ),
        (
            "AUDIT",
            "true",
            [
                (
                    "metadata.annotations[istio.io/dry-run]",
                    "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action AUDIT",
                )
            ],
        ),
    ],
)
def test_dry_run_annotation(
    action: str | None, value: str, expected: list[tuple[str, str]]
) -> None:
    spec: dict[str, Any] = {"rules": [{}]} if action is None else {"action": action, "rules": [{}]}
    raw = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "annotations": {"istio.io/dry-run": value}},
        "spec": spec,
    }
    assert [(p.cause.field, p.cause.message) for p in check_object(raw).problems] == expected


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="allow-nothing"),
        pytest.param({"action": "DENY", "rules": [{}]}, id="deny-everything"),
        pytest.param(
            {"action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
            id="audit",
        ),
        pytest.param(
            {"rules": [{"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["x"]}]}]},
            id="experimental-key",
        ),
        pytest.param(
            {
                "rules": [
                    {"when": [{"key": "request.auth.claims[nested1][nested2]", "values": ["x"]}]}
                ]
            },
            id="nested-claim",
        ),
        pytest.param(
            {"rules": [{"to": [{"operation": {"paths": ["/{**}/path/template"]}}]}]},
            id="path-template",
        ),
    ],
)
def test_authorization_policy_accepts(spec: dict[str, Any]) -> None:
    assert problems("AuthorizationPolicy", spec) == []


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("source.ip", None),
        ("request.headers[x-a]", None),
        ("request.auth.claims[iss]", None),
        ("connection.sni", None),
        ("experimental.envoy.filters.x", "invalid key: experimental.envoy.filters.x"),
        ("request.headers[x", "invalid key: request.headers[x"),
        ("source.user", "unknown attribute: source.user"),
    ],
)
def test_condition_keys(key: str, error: str | None) -> None:
    assert condition_key_error(key) == error


RA_INVALID = [
    pytest.param(
        {"jwtRules": [{"issuer": ""}]},
        ("spec.jwtRules[0].issuer", "issuer must be set"),
        id="issuer",
    ),
    pytest.param(
        {"jwtRules": [{}]}, ("spec.jwtRules[0].issuer", "required value"), id="issuer-required"
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "audiences": [""]}]},
        ("spec.jwtRules[0].audiences[0]", "audience must be non-empty string"),
        id="audience",
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "jwksUri": "ftp://x/jwks"}]},
        ("spec.jwtRules[0].jwksUri", 'URI scheme must be http or https: "ftp://x/jwks"'),
        id="jwks-uri",
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "jwks": "{not json"}]},
        (
            "spec.jwtRules[0].jwks",
            "jwks parse error: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        id="jwks",
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "fromHeaders": [{"name": ""}]}]},
        ("spec.jwtRules[0].fromHeaders[0].name", "location header name must be non-empty string"),
        id="from-header",
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "fromParams": [""]}]},
        ("spec.jwtRules[0].fromParams[0]", "location query must be non-empty string"),
        id="from-param",
    ),
    pytest.param(
        {
            "jwtRules": [
                {"issuer": "a", "outputClaimToHeaders": [{"header": "bad header", "claim": "c"}]}
            ]
        },
        (
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "header name bad header is not a valid header name",
        ),
        id="claim-header",
    ),
    pytest.param(
        {"jwtRules": [{"issuer": "a", "timeout": "0s"}]},
        ("spec.jwtRules[0].timeout", "duration must be greater than 1ms"),
        id="timeout",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Service", "name": "s"}]},
        ("spec.selector", "only one of targetRefs or workloadSelector can be set"),
        id="selector-and-targets",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), RA_INVALID)
def test_request_authentication_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("RequestAuthentication", spec)


PA_INVALID = [
    pytest.param(
        {"portLevelMtls": {"80": {"mode": "STRICT"}}},
        ("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS"),
        id="needs-selector",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {}},
        ("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element"),
        id="empty-map",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"0": {"mode": "STRICT"}}},
        ("spec.portLevelMtls[0]", "port must be in range 1..65535"),
        id="port-zero",
    ),
    pytest.param(
        {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"http": {"mode": "STRICT"}}},
        ("spec.portLevelMtls[http]", "port must be in range 1..65535"),
        id="port-name",
    ),
    pytest.param(
        {"mtls": {"mode": "strict"}},
        (
            "spec.mtls.mode",
            'unsupported value "strict": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT"',
        ),
        id="mode-case",
    ),
    pytest.param(
        {"mtls": {"mode": 3}},
        (
            "spec.mtls.mode",
            'unsupported value 3: supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT"',
        ),
        id="mode-number",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), PA_INVALID)
def test_peer_authentication_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("PeerAuthentication", spec)


@pytest.mark.parametrize(
    ("name", "kind", "plural"),
    [
        ("pa", "PeerAuthentication", "peerauthentications"),
        ("ra", "RequestAuthentication", "requestauthentications"),
        ("ap", "AuthorizationPolicy", "authorizationpolicies"),
    ],
)
def test_registered(name: str, kind: str, plural: str) -> None:
    (info,) = REGISTRY.for_name(name)
    assert (info.kind, info.group, info.plural, info.versions) == (
        kind,
        "security.istio.io",
        plural,
        ("v1", "v1beta1"),
    )
    assert REGISTRY.for_api_version("security.istio.io/v1beta1", kind) is info
