"""JSON Web Tokens: parse a JWKS, verify a compact JWS, check iss/aud/exp/nbf. Pure computation.

What lives here: ``parse_jwks(text)``, ``verify(token, jwks, now=..., issuer=...,
audiences=...)`` → ``Claims`` or ``JwtFailure``, and ``sign`` (tests and tools
make tokens with it). Signatures are checked with ``cryptography``:
RS256/384/512, PS256/384/512, ES256/384/512 and EdDSA (Ed25519, Ed448).

Refused, whatever the key set holds: ``alg: none`` and every HMAC ``HS*``
(a JWKS publishes public keys; accepting HS256 would let anyone "sign" with
the public key as the secret), and any alg/key mismatch (an RSA key never
verifies ES256, a P-256 key never verifies ES384, a JWK whose own ``alg``
differs from the token's is skipped).

The order of checks and the failure texts are Envoy's ``jwt_authn`` /
``jwt_verify_lib`` ones, because clients see them as the body of the 401:
format, then issuer ("Jwt issuer is not configured"), then exp/nbf with a
60 s clock skew ("Jwt is expired", "Jwt not yet valid"), then audiences
("Audiences in Jwt are not allowed"), then the signature ("Jwt verification
fails"). ``now`` is an argument: nothing here reads a clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "CLOCK_SKEW",
    "SUPPORTED_ALGS",
    "Claims",
    "Jwk",
    "Jwks",
    "JwksError",
    "JwtFailure",
    "jwk_from_public_key",
    "parse_jwks",
    "sign",
    "verify",
]

CLOCK_SKEW = 60.0  # seconds; Envoy jwt_authn's default clock_skew_seconds
MIN_RSA_BITS = 2048  # NIST SP 800-131A: smaller RSA keys are no longer acceptable for signatures

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# ES* alg → (curve name in JWK, curve, coordinate size in bytes)
_EC: dict[str, tuple[str, type[ec.EllipticCurve], int]] = {
    "ES256": ("P-256", ec.SECP256R1, 32),
    "ES384": ("P-384", ec.SECP384R1, 48),
    "ES512": ("P-521", ec.SECP521R1, 66),
}
_CURVES = {name: (curve, size) for name, curve, size in _EC.values()}
SUPPORTED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

# Envoy's texts (jwt_verify_lib Status).
BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
VERIFICATION_FAILS = "Jwt verification fails"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
EXPIRED = "Jwt is expired"
NOT_YET_VALID = "Jwt not yet valid"
UNKNOWN_ISSUER = "Jwt issuer is not configured"
AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
ALG_NOT_SUPPORTED = "Jwt header [alg] is not supported"


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class JwksError(ValueError):
    """A JWKS that yields no usable public key."""


@dataclass(frozen=True, slots=True)
class JwtFailure:
    """Why a token was refused, in Envoy's words: the body of the 401."""

    message: str
    status: int = 401


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: its payload, and Istio's ``request.auth.principal`` (``iss/sub``)."""

    payload: Mapping[str, Any]
    header: Mapping[str, Any]
    payload_segment: str  # base64url, as received (outputPayloadToHeader forwards it)

    @property
    def issuer(self) -> str:
        return str(self.payload.get("iss", ""))

    @property
    def principal(self) -> str:
        return f"{self.issuer}/{self.payload.get('sub', '')}"


@dataclass(frozen=True, slots=True)
class Jwk:
    kty: str  # "RSA", "EC", "OKP"
    key: PublicKey
    kid: str | None = None
    alg: str | None = None
    crv: str | None = None


@dataclass(frozen=True, slots=True)
class Jwks:
    keys: tuple[Jwk, ...] = ()


def _b64decode(text: str) -> bytes:
    """Strict base64url (RFC 7515 §2: no padding, no other characters)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64int(text: Any) -> int:
    return int.from_bytes(_b64decode(text), "big")


# ---------------------------------------------------------------------------
# JWKS
# ---------------------------------------------------------------------------


def parse_jwks(text: str) -> Jwks:
    """A JWK set (``{"keys": [...]}``) or a single JWK; keys meshwork cannot use are skipped."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise JwksError(f"Jwks is an invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise JwksError("Jwks is not a JSON object")
    raw = doc["keys"] if "keys" in doc else [doc]
    if not isinstance(raw, list):
        raise JwksError("Jwks [keys] is not a list")
    keys = tuple(k for k in (_parse_jwk(item) for item in raw) if k is not None)
    if not keys:
        raise JwksError("Jwks doesn't have any valid public key")
    return Jwks(keys)


def _parse_jwk(item: Any) -> Jwk | None:
    if not isinstance(item, dict) or item.get("use", "sig") != "sig":
        return None
    kid = item.get("kid") if isinstance(item.get("kid"), str) else None
    alg = item.get("alg") if isinstance(item.get("alg"), str) else None
    try:
        kty = item.get("kty")
        if kty == "RSA":
            rsa_key = rsa.RSAPublicNumbers(_b64int(item["e"]), _b64int(item["n"])).public_key()
            if rsa_key.key_size < MIN_RSA_BITS:
                return None
            return Jwk("RSA", rsa_key, kid, alg)
        if kty == "EC" and item.get("crv") in _CURVES:
            curve, _ = _CURVES[item["crv"]]
            numbers = ec.EllipticCurvePublicNumbers(_b64int(item["x"]), _b64int(item["y"]), curve())
            return Jwk("EC", numbers.public_key(), kid, alg, item["crv"])
        if kty == "OKP" and item.get("crv") in ("Ed25519", "Ed448"):
            cls = ed25519.Ed25519PublicKey if item["crv"] == "Ed25519" else ed448.Ed448PublicKey
            return Jwk("OKP", cls.from_public_bytes(_b64decode(item["x"])), kid, alg, item["crv"])
    except (KeyError, ValueError, TypeError, binascii.Error):
        return None
    return None


def jwk_from_public_key(
    key: PublicKey, *, kid: str | None = None, alg: str | None = None
) -> dict[str, str]:
    """The JWK of a public key (for publishing a JWKS, and for tests)."""
    out: dict[str, str]
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        size = (n.n.bit_length() + 7) // 8
        out = {
            "kty": "RSA",
            "n": _b64encode(n.n.to_bytes(size, "big")),
            "e": _b64encode(n.e.to_bytes(3, "big").lstrip(b"\0")),
        }
    elif isinstance(key, ec.EllipticCurvePublicKey):
        name, _, size = next(v for v in _EC.values() if isinstance(key.curve, v[1]))
        p = key.public_numbers()
        out = {
            "kty": "EC",
            "crv": name,
            "x": _b64encode(p.x.to_bytes(size, "big")),
            "y": _b64encode(p.y.to_bytes(size, "big")),
        }
    else:
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        out = {
            "kty": "OKP",
            "crv": crv,
            "x": _b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        }
    if kid is not None:
        out["kid"] = kid
    if alg is not None:
        out["alg"] = alg
    return out


# ---------------------------------------------------------------------------
# signatures
# ---------------------------------------------------------------------------


def _key_fits(jwk: Jwk, alg: str) -> bool:
    """Alg/key confusion guard: the key type (and curve) must be the one the alg names."""
    if jwk.alg is not None and jwk.alg != alg:
        return False
    if alg[:2] in ("RS", "PS"):
        return jwk.kty == "RSA"
    if alg in _EC:
        return jwk.kty == "EC" and jwk.crv == _EC[alg][0]
    return alg == "EdDSA" and jwk.kty == "OKP"


def _check_signature(key: PublicKey, alg: str, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            digest = _HASHES[alg[2:]]()
            if alg.startswith("RS"):
                key.verify(signature, data, padding.PKCS1v15(), digest)
            else:
                pss = padding.PSS(
                    mgf=padding.MGF1(_HASHES[alg[2:]]()), salt_length=digest.digest_size
                )
                key.verify(signature, data, pss, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = _EC[alg][2]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[alg[2:]]()))
        else:
            key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(
    payload: Mapping[str, Any],
    key: PrivateKey,
    alg: str,
    *,
    kid: str | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of ``payload`` signed with ``key`` (tests and tools; not used to verify)."""
    head: dict[str, Any] = {"alg": alg, "typ": "JWT", **(header or {})}
    if kid is not None:
        head["kid"] = kid
    signing_input = (
        _b64encode(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + _b64encode(json.dumps(dict(payload), separators=(",", ":")).encode())
    )
    data = signing_input.encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[alg[2:]]()
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(_HASHES[alg[2:]]()), salt_length=digest.digest_size)
        )
        sig = key.sign(data, pad, digest)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASHES[alg[2:]]())))
        size = _EC[alg][2]
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        sig = key.sign(data)
    return f"{signing_input}.{_b64encode(sig)}"


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes, bytes] | JwtFailure:
    parts = token.split(".")
    if len(parts) != 3:
        return JwtFailure(BAD_FORMAT)
    try:
        header_bytes = _b64decode(parts[0])
    except (ValueError, binascii.Error):
        return JwtFailure("Jwt header is an invalid Base64url encoded")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        return JwtFailure("Jwt header is an invalid JSON")
    if not isinstance(header, dict):
        return JwtFailure("Jwt header is an invalid JSON")
    alg = header.get("alg")
    if not isinstance(alg, str):
        return JwtFailure("Jwt header [alg] field is required and must be a string")
    if alg not in SUPPORTED_ALGS:
        return JwtFailure(ALG_NOT_SUPPORTED)
    if "kid" in header and not isinstance(header["kid"], str):
        return JwtFailure("Jwt header [kid] field is not a string")
    try:
        payload_bytes = _b64decode(parts[1])
    except (ValueError, binascii.Error):
        return JwtFailure("Jwt payload is an invalid Base64url encoded")
    try:
        payload = json.loads(payload_bytes)
    except ValueError:
        return JwtFailure("Jwt payload is an invalid JSON")
    if not isinstance(payload, dict):
        return JwtFailure("Jwt payload is an invalid JSON")
    for name in ("iss", "sub"):
        if name in payload and not isinstance(payload[name], str):
            return JwtFailure(f"Jwt payload [{name}] field is not a string")
    aud = payload.get("aud")
    if aud is not None and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        return JwtFailure("Jwt payload [aud] field is not a string or string list")
    for name in ("exp", "nbf", "iat"):
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return JwtFailure(f"Jwt payload [{name}] field is not an integer")
    try:
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        return JwtFailure("Jwt signature is an invalid Base64url encoded")
    return header, payload, parts[1], f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def verify(
    token: str,
    jwks: Jwks,
    *,
    now: float,
    issuer: str | None,
    audiences: Sequence[str] = (),
    clock_skew: float = CLOCK_SKEW,
) -> Claims | JwtFailure:
    """Verify ``token`` for one issuer; ``audiences`` empty means any audience is accepted."""
    parsed = _parse(token)
    if isinstance(parsed, JwtFailure):
        return parsed
    header, payload, payload_segment, data, signature = parsed
    if issuer is not None and payload.get("iss") != issuer:
        return JwtFailure(UNKNOWN_ISSUER)
    nbf, exp = payload.get("nbf"), payload.get("exp")
    if nbf is not None and now + clock_skew < nbf:
        return JwtFailure(NOT_YET_VALID)
    if exp is not None and now > exp + clock_skew:
        return JwtFailure(EXPIRED)
    if audiences:
        aud = payload.get("aud")
        token_auds = [aud] if isinstance(aud, str) else list(aud or [])
        if not set(token_auds) & set(audiences):
            return JwtFailure(AUDIENCE_NOT_ALLOWED)
    alg: str = header["alg"]
    kid = header.get("kid")
    candidates = [
        k for k in jwks.keys if _key_fits(k, alg) and (kid is None or k.kid is None or k.kid == kid)
    ]
    if kid is not None and any(k.kid == kid for k in candidates):
        candidates = [k for k in candidates if k.kid == kid]
    if not candidates:
        return JwtFailure(NO_KEY)
    if alg == "EdDSA" and len(signature) not in (64, 114):
        return JwtFailure("Jwt ED25519 signature is wrong length")
    if any(_check_signature(k.key, alg, data, signature) for k in candidates):
        return Claims(payload, header, payload_segment)
    return JwtFailure(VERIFICATION_FAILS)
