"""The request guard over a real inbound decider: path, JWT and authorization decisions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.security.jwt import jwk_from_public_key, sign
from meshwork.proxy import plan
from meshwork.proxy.guard import GuardedDecider, GuardRejected, compile_guard
from meshwork.proxy.inbound import INBOUND_PORT_HEADER, AppPort, InboundDecider

ISS = "testing@secure.istio.io"
NOW = 1_700_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = json.dumps({"keys": [jwk_from_public_key(KEY.public_key())]})
URI = "http://127.0.0.1:1/jwks.json"
ADMIN = "cluster.local/ns/foo/sa/admin"


def _policy(name: str, spec: dict[str, Any], ns: str = "foo") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


def _snapshot(policies: list[dict[str, Any]], authn: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"version": "1", "proxy": {"namespace": "foo", "labels": {"app": "httpbin"}}}
    if policies:
        raw["authorizationPolicies"] = policies
    if authn:
        raw["requestAuthentications"] = list(authn)
        raw["jwks"] = {URI: JWKS}
    return {**raw, **extra}


def _request(target: str, *headers: str, method: str = "GET") -> Request:
    head = f"{method} {target} HTTP/1.1\r\nHost: httpbin.foo:8000\r\n" + "".join(h + "\r\n" for h in headers)
    got = RequestParser().receive_request((head + "\r\n").encode())
    assert got is not None
    return got[0]


DENY_ADMIN = _policy("deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]})  # fmt: skip


def _guarded(raw: dict[str, Any]) -> GuardedDecider:
    guard = compile_guard(raw)
    assert guard is not None
    inner = InboundDecider("127.1.0.9", (AppPort(8080),))
    return GuardedDecider(inner, guard, destination_port=8080, destination_ip="127.1.0.9",
                          port_header=INBOUND_PORT_HEADER, clock=lambda: NOW)  # fmt: skip


def test_no_policy_no_guard() -> None:
    assert compile_guard(_snapshot([])) is None
    other = _policy("other", {"selector": {"matchLabels": {"app": "ratings"}}})
    assert compile_guard(_snapshot([other])) is None  # selects another workload


def test_same_policies_reuse_the_compiled_guard() -> None:
    first = compile_guard(_snapshot([DENY_ADMIN]))
    again = compile_guard(_snapshot([DENY_ADMIN], services=[{"name": "x"}]), previous=first)
    assert again is first
    changed = compile_guard(_snapshot([DENY_ADMIN, _policy("b", {})]), previous=first)
    assert changed is not first and changed is not None


def test_a_policy_that_cannot_be_enforced_is_rejected_by_name() -> None:
    custom = _policy("ext", {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]})
    with pytest.raises(GuardRejected, match="foo/ext"):
        compile_guard(_snapshot([custom]))


@pytest.mark.parametrize("target", ["/admin", "/public/../admin", "/%61dmin", "//admin", "/admin/x",
                                    "/./admin", "/a/%2e%2e/admin", "/admin%2Fx", "http://httpbin.foo:8000/admin"])  # fmt: skip
def test_every_spelling_of_admin_is_denied(target: str) -> None:
    got = _guarded(_snapshot([DENY_ADMIN])).decide(_request(target), plan.Downstream("127.1.0.5"))
    assert isinstance(got, plan.DirectResponse) and got.status == 403
    assert got.body == b"RBAC: access denied" and got.flag == "" and got.private  # logged, not sent
    assert got.reason.startswith("rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]")


def test_the_normalised_path_is_what_goes_upstream() -> None:
    got = _guarded(_snapshot([DENY_ADMIN])).decide(_request("/x/../ip?a=1"), plan.Downstream("127.1.0.5"))
    assert isinstance(got, plan.Forward) and got.rewrite_path == b"/ip?a=1"
    same = _guarded(_snapshot([DENY_ADMIN])).decide(_request("/ip"), plan.Downstream("127.1.0.5"))
    assert isinstance(same, plan.Forward) and same.rewrite_path is None


def test_an_unsafe_spelling_is_400() -> None:
    for target in ("/admin;x=1", "/%00", "/%zz"):
        got = _guarded(_snapshot([DENY_ADMIN])).decide(_request(target), plan.Downstream("127.1.0.5"))
        assert isinstance(got, plan.DirectResponse) and got.status == 400 and got.private, target


def test_principal_and_namespace_rules_read_the_peer_identity() -> None:
    allow = _policy("admins", {"rules": [{"from": [{"source": {"principals": [ADMIN]}}]},
                                          {"from": [{"source": {"namespaces": ["bar"]}}],
                                           "to": [{"operation": {"methods": ["GET"]}}]}]})  # fmt: skip
    decider = _guarded(_snapshot([allow]))
    ok = decider.decide(_request("/headers", method="POST"), plan.Downstream("127.1.0.5", principal=ADMIN, tls=True))
    assert isinstance(ok, plan.Forward)
    other = plan.Downstream("127.1.0.5", principal="cluster.local/ns/foo/sa/sleep", tls=True)
    denied = decider.decide(_request("/headers"), other)
    assert isinstance(denied, plan.DirectResponse) and denied.status == 403
    assert denied.reason.startswith("rbac_access_denied_matched_policy[none]")
    bar = plan.Downstream("127.1.0.5", principal="cluster.local/ns/bar/sa/sleep", tls=True)
    assert isinstance(decider.decide(_request("/headers"), bar), plan.Forward)
    assert isinstance(decider.decide(_request("/headers", method="POST"), bar), plan.DirectResponse)
    plaintext = decider.decide(_request("/headers"), plan.Downstream("127.1.0.5"))
    assert isinstance(plaintext, plan.DirectResponse) and plaintext.status == 403


def test_destination_port_is_the_app_port_the_request_names() -> None:
    only_9000 = _policy("p", {"rules": [{"to": [{"operation": {"ports": ["9000"]}}]}]})
    decider = _guarded(_snapshot([only_9000]))
    assert isinstance(decider.decide(_request("/", "x-meshwork-inbound-port: 9000"), plan.Downstream("a")), plan.Forward)
    assert isinstance(decider.decide(_request("/"), plan.Downstream("a")), plan.DirectResponse)  # 8080, the only port


def test_jwt_invalid_is_401_valid_sets_the_request_principal() -> None:
    ra = {"metadata": {"name": "jwt", "namespace": "foo"},
          "spec": {"jwtRules": [{"issuer": ISS, "jwksUri": URI, "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}]}}  # fmt: skip
    require = _policy("require-jwt", {"rules": [{"from": [{"source": {"requestPrincipals": [f"{ISS}/alice"]}}]}]})
    decider = _guarded(_snapshot([require], (ra,)))
    good = sign({"iss": ISS, "sub": "alice", "exp": NOW + 60}, KEY, "ES256")
    ok = decider.decide(_request("/headers", f"Authorization: Bearer {good}"), plan.Downstream("a"))
    assert isinstance(ok, plan.Forward) and ok.request_headers is not None
    assert b"authorization" in ok.request_headers.remove and (b"x-sub", b"alice") in ok.request_headers.set
    assert b"x-meshwork-inbound-port" in ok.request_headers.remove  # the inner decider's edits are kept
    missing = decider.decide(_request("/headers"), plan.Downstream("a"))
    assert isinstance(missing, plan.DirectResponse) and missing.status == 403
    expired = sign({"iss": ISS, "sub": "alice", "exp": NOW - 3600}, KEY, "ES256")
    bad = decider.decide(_request("/headers", f"Authorization: Bearer {expired}"), plan.Downstream("a"))
    assert isinstance(bad, plan.DirectResponse) and bad.status == 401 and bad.body == b"Jwt is expired"
    challenge = dict(bad.headers)[b"www-authenticate"]
    assert challenge == b'Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token"'


SEGMENTS = st.sampled_from(["admin", "ADMIN", "a", ".", "..", "", "%2e", "%2E%2e", "%61dmin", "adm%69n", "%2F", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENTS, min_size=1, max_size=6))
def test_no_spelling_reaches_admin_upstream(segments: list[str]) -> None:
    """Whatever is forwarded is never /admin or under it: the check and the app see one path."""
    target = "/" + "/".join(segments)
    got = _guarded(_snapshot([DENY_ADMIN])).decide(_request(target), plan.Downstream("a"))
    if isinstance(got, plan.Forward):
        sent = (got.rewrite_path or target.encode()).decode().partition("?")[0]
        assert sent != "/admin" and not sent.startswith("/admin/"), (target, sent)


def test_the_mesh_config_chooses_path_normalisation() -> None:
    """Istio's meshConfig pathNormalization: NONE lets ``//admin`` past a DENY on /admin; the default does not."""
    down = plan.Downstream("127.1.0.5")
    none = _snapshot([DENY_ADMIN], meshConfig={"pathNormalization": {"normalization": "NONE"}})
    got = _guarded(none).decide(_request("//admin"), down)
    assert isinstance(got, plan.Forward) and got.rewrite_path is None  # forwarded as received
    assert isinstance(_guarded(none).decide(_request("/admin"), down), plan.DirectResponse)
    for default in (_snapshot([DENY_ADMIN]), _snapshot([DENY_ADMIN], meshConfig={})):
        refused = _guarded(default).decide(_request("//admin"), down)
        assert isinstance(refused, plan.DirectResponse) and refused.status == 403
    # A change of mode recompiles (the reused guard would keep the old options).
    first = compile_guard(_snapshot([DENY_ADMIN]))
    assert compile_guard(none, previous=first) is not first


def test_a_bad_mesh_config_is_rejected_even_without_policies() -> None:
    bad = {"pathNormalization": {"normalization": "SOMETIMES"}}
    for policies in ([], [DENY_ADMIN]):
        with pytest.raises(GuardRejected, match=r"pathNormalization\.normalization 'SOMETIMES'"):
            compile_guard(_snapshot(policies, meshConfig=bad))
