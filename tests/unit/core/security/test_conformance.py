"""Istio's security samples (../shared/conformance) decide what Istio's docs say they decide.

Tasks: authz-deny, authz-http, authz-jwt, authn-policy (istio.io), and the pilot authz testdata.
The policies are selected for the workload with ``select`` exactly as the proxy will, then
compiled and asked about the requests each task sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from meshwork.core.security.attributes import RequestAttributes
from meshwork.core.security.authz import Authorizer, AuthzPolicy, compile_policies
from meshwork.core.security.jwt import jwk_from_public_key, sign
from meshwork.core.security.peerauth import effective_mode
from meshwork.core.security.requestauthn import compile_request_authn
from meshwork.core.security.select import PolicyObject, Workload, select_policies
from support.conformance import CONFORMANCE, absent_reason

SECURITY = CONFORMANCE / "istio.io" / "security"
AUTHZ_TESTDATA = CONFORMANCE / "istio" / "testdata" / "authz"

pytestmark = pytest.mark.skipif(not SECURITY.is_dir(), reason=absent_reason())

PRODUCTPAGE = "cluster.local/ns/default/sa/bookinfo-productpage"
REVIEWS = "cluster.local/ns/default/sa/bookinfo-reviews"
SLEEP = "cluster.local/ns/foo/sa/sleep"
ISS = "testing@secure.istio.io"
NOW = 1_700_000_000.0


def docs(*paths: Path, kind: str) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                out.append(doc)
    return out


def authorizer_for(workload: Workload, *paths: Path) -> Authorizer:
    chosen = select_policies(docs(*paths, kind="AuthorizationPolicy"), workload)
    return compile_policies(AuthzPolicy(p.name, p.namespace, p.spec) for p in chosen)


def req(**kw: Any) -> RequestAttributes:
    kw.setdefault("method", "GET")
    kw.setdefault("path", "/")
    kw.setdefault("host", "httpbin.foo:8000")
    kw.setdefault("source_principal", SLEEP)
    return RequestAttributes.build(**kw)


HTTPBIN = Workload("foo", {"app": "httpbin", "version": "v1"})


def test_deny_method_get() -> None:
    authz = authorizer_for(HTTPBIN, SECURITY / "authz-deny" / "deny-method-get.yaml")
    assert not authz.check(req(path="/get")).allowed
    assert authz.check(req(path="/get")).body == "RBAC: access denied"
    assert authz.check(req(method="POST", path="/post")).allowed


def test_deny_method_get_unless_admin_token() -> None:
    authz = authorizer_for(HTTPBIN, SECURITY / "authz-deny" / "deny-method-get-unless-admin.yaml")
    assert not authz.check(req(path="/get")).allowed
    assert not authz.check(req(path="/get", headers={"x-token": "guest"})).allowed
    assert authz.check(req(path="/get", headers={"x-token": "admin"})).allowed
    assert authz.check(req(method="POST", path="/post")).allowed


def test_allow_path_ip_with_deny() -> None:
    folder = SECURITY / "authz-deny"
    authz = authorizer_for(
        HTTPBIN, folder / "deny-method-get-unless-admin.yaml", folder / "allow-path-ip.yaml"
    )
    # The task's step 7: only /ip is allowed, and GET still needs the admin token.
    assert authz.check(req(path="/ip", headers={"x-token": "admin"})).allowed
    assert not authz.check(req(path="/get", headers={"x-token": "admin"})).allowed
    assert not authz.check(req(path="/ip", headers={"x-token": "guest"})).allowed


def test_allow_nothing_denies_everything() -> None:
    authz = authorizer_for(
        Workload("default", {"app": "productpage"}), SECURITY / "authz-http" / "allow-nothing.yaml"
    )
    for method in ("GET", "POST", "DELETE"):
        assert not authz.check(req(method=method, source_principal=PRODUCTPAGE)).allowed


@pytest.mark.parametrize(
    ("app", "principal", "method", "allowed"),
    [
        ("productpage", None, "GET", True),  # anyone may view the product page
        ("productpage", None, "POST", False),
        ("details", PRODUCTPAGE, "GET", True),
        ("details", PRODUCTPAGE, "POST", False),
        ("details", REVIEWS, "GET", False),
        ("reviews", PRODUCTPAGE, "GET", True),
        ("reviews", PRODUCTPAGE, "POST", False),
        ("reviews", SLEEP, "GET", False),
        ("reviews", None, "GET", False),
        ("ratings", REVIEWS, "GET", True),
        ("ratings", PRODUCTPAGE, "GET", False),
    ],
)
def test_bookinfo_viewers(app: str, principal: str | None, method: str, allowed: bool) -> None:
    folder = SECURITY / "authz-http"
    authz = authorizer_for(
        Workload("default", {"app": app}),
        folder / "allow-nothing.yaml",
        folder / "bookinfo-viewers.yaml",
    )
    assert authz.check(req(method=method, source_principal=principal)).allowed is allowed


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [jwk_from_public_key(KEY.public_key(), kid="k")]})


def jwt_request(token: str | None, path: str = "/headers") -> RequestAttributes | int:
    """Authenticate as the sidecar would (RequestAuthentication of the task), then the attrs."""
    ra = select_policies(
        docs(SECURITY / "authz-jwt" / "request-authentication.yaml", kind="RequestAuthentication"),
        HTTPBIN,
    )
    uri = ra[0].spec["jwtRules"][0]["jwksUri"]
    authn = compile_request_authn([p.spec for p in ra], {uri: JWKS})
    headers = {"authorization": f"Bearer {token}"} if token else {}
    result = authn.authenticate(headers, None, now=NOW)
    if not result.ok:
        return result.status
    return req(path=path, request_principal=result.principal, claims=result.claims)


def token(**claims: Any) -> str:
    return sign({"iss": ISS, "sub": ISS, "exp": NOW + 600, **claims}, KEY, "RS256", kid="k")


def test_require_jwt() -> None:
    authz = authorizer_for(HTTPBIN, SECURITY / "authz-jwt" / "require-jwt.yaml")
    good = jwt_request(token())
    assert isinstance(good, RequestAttributes) and authz.check(good).allowed
    missing = jwt_request(None)
    assert isinstance(missing, RequestAttributes) and not authz.check(missing).allowed  # 403
    assert jwt_request("not.a.token") == 401
    assert jwt_request(token(exp=NOW - 3600)) == 401


def test_require_jwt_groups_claim() -> None:
    authz = authorizer_for(HTTPBIN, SECURITY / "authz-jwt" / "require-jwt-groups-claim.yaml")
    with_group = jwt_request(token(groups=["group1", "group2"]))
    assert isinstance(with_group, RequestAttributes) and authz.check(with_group).allowed
    without = jwt_request(token(groups=["group2"]))
    assert isinstance(without, RequestAttributes) and not authz.check(without).allowed


def test_ingress_jwt_per_path() -> None:
    gateway = Workload("istio-system", {"istio": "ingressgateway"})
    authz = authorizer_for(gateway, SECURITY / "authn-policy" / "ingress-jwt.yaml")
    assert not authz.check(req(path="/headers", source_principal=None)).allowed
    assert authz.check(req(path="/ip", source_principal=None)).allowed
    assert authz.check(
        req(path="/headers", request_principal=f"{ISS}/{ISS}", claims={"iss": ISS})
    ).allowed


def peer_policies(*names: str) -> list[PolicyObject]:
    paths = [SECURITY / "authn-policy" / n for n in names]
    return [PolicyObject.from_manifest(d) for d in docs(*paths, kind="PeerAuthentication")]


@pytest.mark.parametrize(
    ("workload", "port", "mode"),
    [
        (
            Workload("foo", {"app": "httpbin"}),
            80,
            "DISABLE",
        ),  # workload DISABLE overrides namespace
        (Workload("foo", {"app": "sleep"}), 80, "STRICT"),  # namespace STRICT
        (Workload("bar", {"app": "httpbin"}), 80, "DISABLE"),  # port-level DISABLE
        (Workload("bar", {"app": "httpbin"}), 8000, "STRICT"),  # the workload's STRICT elsewhere
        (Workload("bar", {"app": "sleep"}), 80, "PERMISSIVE"),  # no policy: Istio's default
        (Workload("legacy", {"app": "sleep"}), 80, "PERMISSIVE"),
    ],
)
def test_peer_authentication_precedence(workload: Workload, port: int, mode: str) -> None:
    assert (
        effective_mode(peer_policies("peer-authentication-precedence.yaml"), workload, port) == mode
    )


def test_mesh_strict_with_precedence() -> None:
    policies = peer_policies(
        "peer-authentication-mesh-strict.yaml", "peer-authentication-precedence.yaml"
    )
    assert effective_mode(policies, Workload("legacy", {"app": "sleep"}), 80) == "STRICT"
    assert effective_mode(policies, Workload("bar", {"app": "sleep"}), 80) == "STRICT"
    assert effective_mode(policies, Workload("foo", {"app": "httpbin"}), 80) == "DISABLE"


@pytest.mark.skipif(not AUTHZ_TESTDATA.is_dir(), reason=absent_reason(AUTHZ_TESTDATA))
def test_pilot_testdata_compiles_and_decides() -> None:
    deny_allow = authorizer_for(
        Workload("foo", {"app": "x"}), AUTHZ_TESTDATA / "deny-and-allow-in.yaml"
    )
    assert not deny_allow.check(req(source_principal="deny")).allowed
    assert deny_allow.check(req(source_principal="allow")).allowed
    assert not deny_allow.check(req(source_principal="other")).allowed
    multi = authorizer_for(HTTPBIN, AUTHZ_TESTDATA / "multiple-policies-in.yaml")
    assert len(multi.policies) == 9
    assert multi.check(req(method="POST")).allowed  # httpbin-1: GET or POST
    assert multi.check(req(method="PATCH", headers={"x-abc": "abc2"})).allowed  # httpbin-9
    assert not multi.check(
        req(method="PATCH", source_principal=None, destination_port=8000, host="x")
    ).allowed
    full = authorizer_for(HTTPBIN, AUTHZ_TESTDATA / "allow-full-rule-in.yaml")
    assert any("experimental.envoy.filters" in w for w in full.warnings)
    assert full.check(req(source_principal="cluster.local/ns/my-ns/sa/my-sa")).allowed  # rule 0
    assert not full.check(req(source_principal="cluster.local/ns/other/sa/x")).allowed
