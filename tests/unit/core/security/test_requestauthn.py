"""RequestAuthentication: where tokens are found, what a missing or bad one means, headers out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meshwork.core.security.attributes import fold_headers
from meshwork.core.security.jwt import jwk_from_public_key, sign
from meshwork.core.security.requestauthn import compile_request_authn

NOW = 1_700_000_000.0
ISS = "testing@secure.istio.io"
KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = json.dumps({"keys": [jwk_from_public_key(KEY.public_key())]})
TOKEN = sign({"iss": ISS, "sub": "alice", "exp": NOW + 60, "groups": ["g1"], "n": 7}, KEY, "ES256")
EXPIRED = sign({"iss": ISS, "sub": "alice", "exp": NOW - 3600}, KEY, "ES256")


def authn(**rule: Any) -> Any:
    return compile_request_authn([{"jwtRules": [{"issuer": ISS, "jwks": JWKS, **rule}]}])


def run(a: Any, headers: dict[str, str] | None = None, query: str | None = None) -> Any:
    return a.authenticate(fold_headers(headers or {}), query, now=NOW)


def test_missing_token_passes_without_principal() -> None:
    result = run(authn())
    assert result.ok and result.principal is None and result.status == 200


def test_default_locations() -> None:
    header = run(authn(), {"Authorization": f"Bearer {TOKEN}"})
    assert header.ok and header.principal == f"{ISS}/alice"
    assert header.claims["groups"] == ["g1"]
    assert header.remove_headers == ("authorization",)  # not forwarded by default
    param = run(authn(), query=f"x=1&access_token={TOKEN}")
    assert param.ok and param.principal == f"{ISS}/alice" and param.remove_headers == ()
    lower = run(authn(), {"authorization": f"bearer {TOKEN}"})
    assert lower.ok and lower.principal  # the auth scheme is case-insensitive (RFC 7235 §2.1)


def test_invalid_token_is_401_with_envoys_text() -> None:
    result = run(authn(), {"Authorization": f"Bearer {EXPIRED}"})
    assert not result.ok and result.status == 401 and result.error == "Jwt is expired"
    assert result.www_authenticate == 'Bearer error="invalid_token"'
    garbage = run(authn(), {"Authorization": "Bearer abc"})
    assert (
        garbage.error
        == "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    )


def test_unknown_issuer_and_audience() -> None:
    other = sign({"iss": "other", "sub": "x"}, KEY, "ES256")
    assert (
        run(authn(), {"Authorization": f"Bearer {other}"}).error == "Jwt issuer is not configured"
    )
    aud = run(authn(audiences=["httpbin"]), {"Authorization": f"Bearer {TOKEN}"})
    assert aud.error == "Audiences in Jwt are not allowed"


def test_from_headers_with_prefix_replaces_defaults() -> None:
    a = authn(
        fromHeaders=[{"name": "x-jwt-assertion", "prefix": "Token "}], fromParams=["my_token"]
    )
    assert run(a, {"X-Jwt-Assertion": f"Token {TOKEN}"}).principal == f"{ISS}/alice"
    assert run(a, query=f"my_token={TOKEN}").principal == f"{ISS}/alice"
    # The default location is not read any more: a token there is simply not seen.
    ignored = run(a, {"Authorization": f"Bearer {EXPIRED}"})
    assert ignored.ok and ignored.principal is None
    # Without the prefix the header is not a token location match.
    assert run(a, {"X-Jwt-Assertion": TOKEN}).principal is None


def test_cookies() -> None:
    a = authn(fromCookies=["session"])
    assert run(a, {"Cookie": f"a=b; session={TOKEN}"}).principal == f"{ISS}/alice"


def test_forward_and_output_headers() -> None:
    a = authn(
        forwardOriginalToken=True,
        outputPayloadToHeader="x-jwt-payload",
        outputClaimToHeaders=[{"header": "x-sub", "claim": "sub"}, {"header": "x-n", "claim": "n"}],
    )
    result = run(a, {"Authorization": f"Bearer {TOKEN}"})
    assert result.ok and result.remove_headers == ()
    headers = dict(result.set_headers)
    assert headers["x-sub"] == "alice" and headers["x-n"] == "7"
    assert headers["x-jwt-payload"] == TOKEN.split(".")[1]


def test_one_bad_token_among_good_fails() -> None:
    result = run(authn(), {"Authorization": f"Bearer {TOKEN}"}, query=f"access_token={EXPIRED}")
    assert not result.ok and result.error == "Jwt is expired"


def test_two_issuers_merge() -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_jwks = json.dumps({"keys": [jwk_from_public_key(other_key.public_key())]})
    a = compile_request_authn(
        [
            {"jwtRules": [{"issuer": ISS, "jwks": JWKS}]},
            {"jwtRules": [{"issuer": "second", "jwksUri": "https://keys.example/jwks.json"}]},
        ],
        {"https://keys.example/jwks.json": other_jwks},
    )
    second = sign({"iss": "second", "sub": "bob"}, other_key, "ES256")
    assert run(a, {"Authorization": f"Bearer {second}"}).principal == "second/bob"
    assert run(a, {"Authorization": f"Bearer {TOKEN}"}).principal == f"{ISS}/alice"


def test_unfetched_jwks_refuses_tokens() -> None:
    a = compile_request_authn(
        [{"jwtRules": [{"issuer": ISS, "jwksUri": "https://keys.example/jwks.json"}]}]
    )
    assert a.warnings and "no keys yet" in a.warnings[0]
    result = run(a, {"Authorization": f"Bearer {TOKEN}"})
    assert not result.ok and result.error == "Jwks doesn't have key to match kid or alg from Jwt"


def test_no_rules_is_a_no_op() -> None:
    result = run(compile_request_authn([]), {"Authorization": "Bearer junk"})
    assert result.ok and result.principal is None


def test_invalid_spec_refused() -> None:
    with pytest.raises(Exception, match="RequestAuthentication is invalid"):
        compile_request_authn([{"jwtRules": [{"issuer": ""}]}])
