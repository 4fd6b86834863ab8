"""JWT verification on cryptography: every alg round-trips; every kind of bad token is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshwork.core.security.jwt import (
    Claims,
    Jwks,
    JwksError,
    JwtFailure,
    jwk_from_public_key,
    parse_jwks,
    sign,
    verify,
)

NOW = 1_700_000_000.0
ISS = "testing@secure.istio.io"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEYS: dict[str, Any] = {
    "RS256": RSA_KEY,
    "RS384": RSA_KEY,
    "RS512": RSA_KEY,
    "PS256": RSA_KEY,
    "PS384": RSA_KEY,
    "PS512": RSA_KEY,
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "ES512": ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def jwks_of(*keys: Any, kid: str | None = None) -> Jwks:
    return parse_jwks(
        json.dumps({"keys": [jwk_from_public_key(k.public_key(), kid=kid) for k in keys]})
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": ISS, "exp": NOW + 3600, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_every_alg_round_trips(alg: str) -> None:
    key = KEYS[alg]
    token = sign(claims(groups=["group1"]), key, alg, kid="k1")
    result = verify(token, jwks_of(key, kid="k1"), now=NOW, issuer=ISS)
    assert isinstance(result, Claims), result
    assert result.principal == f"{ISS}/{ISS}"
    assert result.payload["groups"] == ["group1"]


def test_ed448_round_trips() -> None:
    key = ed448.Ed448PrivateKey.generate()
    assert isinstance(
        verify(sign(claims(), key, "EdDSA"), jwks_of(key), now=NOW, issuer=ISS), Claims
    )


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"
    )


ES = KEYS["ES256"]
GOOD_JWKS = jwks_of(RSA_KEY, ES, kid=None)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (sign(claims(exp=NOW - 61), RSA_KEY, "RS256"), "Jwt is expired"),
        (sign(claims(nbf=NOW + 61), RSA_KEY, "RS256"), "Jwt not yet valid"),
        (sign(claims(iss="someone-else"), RSA_KEY, "RS256"), "Jwt issuer is not configured"),
        (
            sign({k: v for k, v in claims().items() if k != "iss"}, RSA_KEY, "RS256"),
            "Jwt issuer is not configured",
        ),
        (sign(claims(aud="other"), RSA_KEY, "RS256"), "Audiences in Jwt are not allowed"),
        (sign(claims(), OTHER_RSA, "RS256"), "Jwt verification fails"),
        (unsigned({"alg": "none"}, claims()), "Jwt header [alg] is not supported"),
        (unsigned({"alg": "HS256"}, claims(), b"x" * 32), "Jwt header [alg] is not supported"),
        (
            unsigned({"typ": "JWT"}, claims()),
            "Jwt header [alg] field is required and must be a string",
        ),
        ("a.b", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ("!!.e30.e30", "Jwt header is an invalid Base64url encoded"),
        (f"{b64(b'not json')}.e30.", "Jwt header is an invalid JSON"),
        (
            unsigned({"alg": "RS256"}, {"iss": ISS, "exp": "soon"}),
            "Jwt payload [exp] field is not an integer",
        ),
        (unsigned({"alg": "RS256"}, {"iss": 7}), "Jwt payload [iss] field is not a string"),
        # alg/key confusion: an ES256 header on a token the RSA key signed, and vice versa
        (sign(claims(), RSA_KEY, "RS256", header={"alg": "ES256"}), "Jwt verification fails"),
        (
            sign(claims(), KEYS["ES384"], "ES384"),
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
    ],
)
def test_refused(token: str, message: str) -> None:
    result = verify(
        token,
        GOOD_JWKS,
        now=NOW,
        issuer=ISS,
        audiences=["httpbin"] if "aud" in message.lower() else (),
    )
    assert result == JwtFailure(message)
    assert result.status == 401


def test_skew_tolerates_a_minute() -> None:
    assert isinstance(
        verify(sign(claims(exp=NOW - 59), RSA_KEY, "RS256"), GOOD_JWKS, now=NOW, issuer=ISS), Claims
    )
    assert isinstance(
        verify(sign(claims(nbf=NOW + 59), RSA_KEY, "RS256"), GOOD_JWKS, now=NOW, issuer=ISS), Claims
    )


def test_audiences() -> None:
    token = sign(claims(aud=["a", "httpbin"]), RSA_KEY, "RS256")
    assert isinstance(verify(token, GOOD_JWKS, now=NOW, issuer=ISS, audiences=["httpbin"]), Claims)
    assert isinstance(verify(token, GOOD_JWKS, now=NOW, issuer=ISS), Claims)  # none configured: any


def test_kid_selects_key_and_jwk_alg_is_binding() -> None:
    token = sign(claims(), RSA_KEY, "RS256", kid="right")
    jwks = parse_jwks(
        json.dumps(
            {
                "keys": [
                    jwk_from_public_key(OTHER_RSA.public_key(), kid="wrong"),
                    jwk_from_public_key(RSA_KEY.public_key(), kid="right"),
                ]
            }
        )
    )
    assert isinstance(verify(token, jwks, now=NOW, issuer=ISS), Claims)
    pinned = parse_jwks(
        json.dumps({"keys": [jwk_from_public_key(RSA_KEY.public_key(), alg="PS256")]})
    )
    assert verify(token, pinned, now=NOW, issuer=ISS) == JwtFailure(
        "Jwks doesn't have key to match kid or alg from Jwt"
    )


def test_parse_jwks() -> None:
    single = parse_jwks(json.dumps(jwk_from_public_key(ES.public_key(), kid="one")))
    assert [k.kid for k in single.keys] == ["one"]
    mixed = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            jwk_from_public_key(ES.public_key()),
        ]
    }
    assert [k.kty for k in parse_jwks(json.dumps(mixed)).keys] == [
        "EC"
    ]  # HMAC and tiny RSA skipped
    for bad in ("not json", "[]", '{"keys": [{"kty": "oct", "k": "x"}]}', '{"keys": 3}'):
        with pytest.raises(JwksError):
            parse_jwks(bad)


def test_istio_sample_jwks_parses() -> None:
    # The shape of Istio's security/tools/jwt/samples/jwks.json: one RS256 key with kid and e/n.
    n = RSA_KEY.public_key().public_numbers().n
    doc = {
        "keys": [
            {
                "e": "AQAB",
                "kid": "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ",
                "kty": "RSA",
                "n": b64(n.to_bytes(256, "big")),
            }
        ]
    }
    jwks = parse_jwks(json.dumps(doc))
    token = sign(claims(), RSA_KEY, "RS256", kid="DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ")
    assert isinstance(verify(token, jwks, now=NOW, issuer=ISS), Claims)


PAYLOADS = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(
        lambda k: k not in ("iss", "exp", "nbf", "iat", "aud", "sub")
    ),
    st.one_of(
        st.text(max_size=20),
        st.integers(),
        st.booleans(),
        st.lists(st.text(max_size=5), max_size=3),
    ),
    max_size=5,
)
EC_CURVES = st.sampled_from(
    [("ES256", ec.SECP256R1), ("ES384", ec.SECP384R1), ("ES512", ec.SECP521R1)]
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(payload=PAYLOADS, curve=EC_CURVES, rsa_alg=st.sampled_from(["RS256", "PS384", "RS512"]))
def test_generated_keys_round_trip(
    payload: dict[str, Any], curve: tuple[str, Any], rsa_alg: str
) -> None:
    alg, curve_cls = curve
    key = ec.generate_private_key(curve_cls())
    edkey = ed25519.Ed25519PrivateKey.generate()
    body = {**payload, **claims()}
    for k, a in ((key, alg), (edkey, "EdDSA"), (RSA_KEY, rsa_alg)):
        result = verify(sign(body, k, a), jwks_of(k), now=NOW, issuer=ISS)
        assert isinstance(result, Claims) and dict(result.payload) == body


def _flip(segment: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    raw[index % len(raw)] ^= 0x01
    return b64(bytes(raw))


@settings(max_examples=60, deadline=None)
@given(
    alg=st.sampled_from(sorted(KEYS)),
    part=st.sampled_from([1, 2]),
    index=st.integers(min_value=0, max_value=10_000),
    payload=PAYLOADS,
)
def test_tampering_always_fails(alg: str, part: int, index: int, payload: dict[str, Any]) -> None:
    key = KEYS[alg]
    token = sign({**payload, **claims()}, key, alg)
    pieces = token.split(".")
    pieces[part] = _flip(pieces[part], index)
    result = verify(".".join(pieces), jwks_of(key), now=NOW, issuer=ISS)
    assert isinstance(result, JwtFailure)
