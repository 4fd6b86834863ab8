"""The verified-token cache of RequestAuthentication: a dict lookup for a repeated token, never past ``exp``."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.security.attributes import fold_headers
from meshwork.core.security.jwt import CLOCK_SKEW, jwk_from_public_key, sign
from meshwork.core.security.requestauthn import (
    RequestAuthenticator,
    VerifiedTokens,
    compile_request_authn,
)

NOW = 1_700_000_000.0
ISS = "testing@secure.istio.io"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = json.dumps({"keys": [jwk_from_public_key(KEY.public_key())]})
OTHER_JWKS = json.dumps({"keys": [jwk_from_public_key(OTHER_KEY.public_key())]})
TOKEN = sign({"iss": ISS, "sub": "alice", "exp": NOW + 60, "nbf": NOW - 10}, KEY, "ES256")


def authn(jwks: str = JWKS, **rule: Any) -> RequestAuthenticator:
    return compile_request_authn([{"jwtRules": [{"issuer": ISS, "jwks": jwks, **rule}]}])


def call(a: RequestAuthenticator, token: str, now: float) -> Any:
    return a.authenticate(fold_headers({"Authorization": f"Bearer {token}"}), None, now=now)


def test_a_repeated_token_is_verified_once() -> None:
    a = authn()
    first = call(a, TOKEN, NOW)
    assert first.ok and first.principal == f"{ISS}/alice"
    again = [call(a, TOKEN, NOW + i) for i in range(5)]
    assert all(r == first for r in again)  # the same result: principal, claims, headers
    assert (a.verified.misses, a.verified.hits, len(a.verified)) == (1, 5, 1)


def test_an_expired_entry_is_never_accepted() -> None:
    a = authn()
    assert call(a, TOKEN, NOW).ok
    assert call(a, TOKEN, NOW + 60 + CLOCK_SKEW).ok  # the last moment verify itself allows
    late = call(a, TOKEN, NOW + 60 + CLOCK_SKEW + 0.001)
    assert not late.ok and late.error == "Jwt is expired"
    assert len(a.verified) == 0  # dropped, and the failure is not remembered


def test_a_clock_gone_back_before_nbf_verifies_afresh() -> None:
    a = authn()
    assert call(a, TOKEN, NOW).ok
    early = call(a, TOKEN, NOW - 10 - CLOCK_SKEW - 1)
    assert not early.ok and early.error == "Jwt not yet valid"


def test_failures_are_not_remembered_and_rule_sets_do_not_share() -> None:
    wrong = authn(OTHER_JWKS)  # the token is not signed by these keys
    assert not call(wrong, TOKEN, NOW).ok and len(wrong.verified) == 0
    assert not call(wrong, TOKEN, NOW).ok
    right = authn()
    assert call(right, TOKEN, NOW).ok and len(right.verified) == 1
    assert not call(wrong, TOKEN, NOW).ok  # another authenticator (another rule set): its own cache
    # The same token found by a rule that may not use it (a header it does not read) is not a hit.
    header_only = authn(fromHeaders=[{"name": "x-jwt"}])
    assert call(header_only, TOKEN, NOW).principal is None  # not looked for in Authorization


def test_the_cache_is_a_bounded_lru() -> None:
    a = compile_request_authn([{"jwtRules": [{"issuer": ISS, "jwks": JWKS}]}])
    small = RequestAuthenticator(a.rules, a.warnings, VerifiedTokens(capacity=2))
    tokens = [sign({"iss": ISS, "sub": f"u{i}", "exp": NOW + 60}, KEY, "ES256") for i in range(3)]
    call(small, tokens[0], NOW)
    call(small, tokens[1], NOW)
    call(small, tokens[0], NOW)  # u0 is now the most recently used
    call(small, tokens[2], NOW)  # evicts u1
    assert len(small.verified) == 2
    hits = small.verified.hits
    call(small, tokens[0], NOW)
    assert small.verified.hits == hits + 1
    call(small, tokens[1], NOW)
    assert small.verified.hits == hits + 1  # u1 had to be verified again


@given(st.floats(min_value=NOW - 3600, max_value=NOW + 3600, allow_nan=False), st.booleans())
def test_cached_or_not_the_answer_is_the_same(now: float, warm: bool) -> None:
    cached = authn()
    if warm:
        call(cached, TOKEN, NOW)
    fresh = RequestAuthenticator(cached.rules, cached.warnings, VerifiedTokens(capacity=0))
    assert call(cached, TOKEN, now) == call(fresh, TOKEN, now)
