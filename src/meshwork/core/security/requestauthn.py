"""RequestAuthentication: find the JWTs of a request, verify them, say who sent it.

What lives here: ``compile_request_authn(policies, jwks_by_uri)`` →
``RequestAuthenticator`` and ``authenticate(headers, query, now)`` →
``AuthnResult``, with Istio's semantics (RequestAuthentication reference,
"Authentication policy" task):

- The rules of every RequestAuthentication that applies to the workload are
  merged. Each rule reads tokens from its ``fromHeaders`` (``name`` with an
  optional ``prefix`` such as ``Bearer ``), ``fromParams`` and
  ``fromCookies``; a rule with none of them reads ``Authorization: Bearer
  <token>`` and the ``access_token`` query parameter.
- No token anywhere: the request passes unauthenticated (no request
  principal); an AuthorizationPolicy must ask for ``requestPrincipals`` to
  require one.
- A token is verified by the rules that could have found it there and whose
  ``issuer`` is the token's ``iss``; none → "Jwt issuer is not configured".
  Any token that fails makes the request fail: 401 with Envoy's text.
- A verified token gives ``request.auth.principal`` = ``<iss>/<sub>`` and the
  claims. Unless ``forwardOriginalToken`` is true, the header that carried
  it is removed before the request goes on; ``outputPayloadToHeader`` and
  ``outputClaimToHeaders`` add headers.

A verified token is remembered (``VerifiedTokens``: a bounded LRU keyed by
the raw token and the rules that checked it, on the authenticator, so a new
rule set or new keys start empty) until its ``exp`` plus the clock skew
verification allows: a repeated token costs a dict lookup, not a signature
check. An entry is checked against ``now`` on every hit and dropped once
expired (or, should the clock go back, before its ``nbf``): a cached token is
never accepted when verifying it again would refuse it. Failures are not
remembered.

``jwksUri`` is fetched by the shell; its text comes in through
``jwks_by_uri``. A rule whose keys are unknown (not fetched yet, or the fetch
failed) verifies nothing: its tokens are refused, never waved through.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from meshwork.core.security.jwt import (
    CLOCK_SKEW,
    UNKNOWN_ISSUER,
    Claims,
    Jwks,
    JwksError,
    JwtFailure,
    parse_jwks,
    verify,
)
from meshwork.errors import MeshworkError
from meshwork.model.istio_security import JWTRule, RequestAuthenticationSpec

__all__ = [
    "AuthnResult",
    "RequestAuthenticator",
    "TokenLocation",
    "VerifiedTokens",
    "compile_request_authn",
]

# Verified tokens remembered per authenticator. Envoy's jwt_authn cache defaults to 100
# entries; a sidecar serves many callers and an entry is a few hundred bytes of claims.
JWT_CACHE_SIZE = 1000

DEFAULT_HEADER = ("authorization", "Bearer ")  # RFC 6750 §2.1
DEFAULT_PARAM = "access_token"  # RFC 6750 §2.3


class RequestAuthnRejected(MeshworkError):
    """A RequestAuthentication meshwork cannot use (invalid spec or inline jwks)."""


@dataclass(frozen=True, slots=True)
class TokenLocation:
    kind: str  # "header", "param", "cookie"
    name: str  # header names lower-case
    prefix: str = ""

    def extract(
        self, headers: Mapping[str, str], params: Mapping[str, str], cookies: Mapping[str, str]
    ) -> str | None:
        if self.kind == "header":
            value = headers.get(self.name)
            if value is None:
                return None
            if self.prefix:
                if not value[: len(self.prefix)].lower() == self.prefix.lower():
                    return None
                value = value[len(self.prefix) :]
            return value.strip() or None
        source = params if self.kind == "param" else cookies
        return source.get(self.name) or None


@dataclass(frozen=True, slots=True, eq=False)  # identity: a rule is one entry of one policy
class _JwtRule:
    issuer: str
    audiences: tuple[str, ...]
    jwks: Jwks
    locations: tuple[TokenLocation, ...]
    forward: bool
    payload_header: str | None
    claim_headers: tuple[tuple[str, str], ...]  # (header, claim)


@dataclass(frozen=True, slots=True)
class AuthnResult:
    """The outcome for one request. ``ok`` False: answer ``status`` with ``error`` as the body."""

    ok: bool
    principal: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    remove_headers: tuple[str, ...] = ()
    set_headers: tuple[tuple[str, str], ...] = ()

    @property
    def status(self) -> int:
        return 200 if self.ok else 401

    @property
    def www_authenticate(self) -> str | None:
        """RFC 6750 §3 challenge for a 401 (the shell may add ``realm``)."""
        return None if self.ok else 'Bearer error="invalid_token"'


_CacheKey = tuple[str, tuple[_JwtRule, ...]]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class VerifiedTokens:
    """Tokens already verified, with the window in which verifying them again would pass."""

    __slots__ = ("_entries", "capacity", "hits", "misses")

    def __init__(self, capacity: int = JWT_CACHE_SIZE) -> None:
        self._entries: OrderedDict[_CacheKey, tuple[Claims, _JwtRule, float, float]] = OrderedDict()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _CacheKey, now: float) -> tuple[Claims, _JwtRule] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        claims, rule, not_before, not_after = entry
        if now > not_after or now < not_before:
            del self._entries[key]  # expired: verified afresh (and refused) from here on
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return claims, rule

    def put(self, key: _CacheKey, claims: Claims, rule: _JwtRule) -> None:
        """Remember a token ``verify`` accepted (with the clock skew it allows at both ends)."""
        exp, nbf = _number(claims.payload.get("exp")), _number(claims.payload.get("nbf"))
        not_after = math.inf if exp is None else exp + CLOCK_SKEW
        not_before = -math.inf if nbf is None else nbf - CLOCK_SKEW
        entries = self._entries
        entries[key] = (claims, rule, not_before, not_after)
        entries.move_to_end(key)
        while len(entries) > self.capacity:
            entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class RequestAuthenticator:
    rules: tuple[_JwtRule, ...] = ()
    warnings: tuple[str, ...] = ()
    verified: VerifiedTokens = field(default_factory=VerifiedTokens, compare=False, repr=False)

    def authenticate(
        self, headers: Mapping[str, str], query: str | None, *, now: float
    ) -> AuthnResult:
        """``headers`` folded (lower-case names, see ``attributes.fold_headers``); ``query`` raw."""
        if not self.rules:
            return AuthnResult(True)
        params = dict(parse_qsl(query or "", keep_blank_values=True))
        cookies = _cookies(headers.get("cookie", ""))
        found: dict[str, list[tuple[_JwtRule, TokenLocation]]] = {}
        for rule in self.rules:
            for loc in rule.locations:
                token = loc.extract(headers, params, cookies)
                if token is not None:
                    found.setdefault(token, []).append((rule, loc))
        if not found:
            return AuthnResult(True)
        first: tuple[Claims, _JwtRule] | None = None
        remove: list[str] = []
        cache = self.verified
        for token, finders in found.items():
            rules = tuple(dict.fromkeys(r for r, _ in finders))
            key = (token, rules)
            known = cache.get(key, now)
            if known is None:
                outcome = _verify_one(token, rules, now)
                if isinstance(outcome, JwtFailure):
                    return AuthnResult(False, error=outcome.message)
                cache.put(key, *outcome)
                known = outcome
            claims, rule = known
            first = first or (claims, rule)
            if not rule.forward:
                remove += [loc.name for r, loc in finders if r is rule and loc.kind == "header"]
        assert first is not None
        claims, rule = first
        set_headers: list[tuple[str, str]] = []
        if rule.payload_header:
            set_headers.append((rule.payload_header, claims.payload_segment))
        for header, claim in rule.claim_headers:
            value = claims.payload.get(claim)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                set_headers.append((header, str(value)))
            elif isinstance(value, bool):
                set_headers.append((header, "true" if value else "false"))
        return AuthnResult(
            True,
            claims.principal,
            dict(claims.payload),
            remove_headers=tuple(dict.fromkeys(remove)),
            set_headers=tuple(set_headers),
        )


def _verify_one(
    token: str, rules: tuple[_JwtRule, ...], now: float
) -> tuple[Claims, _JwtRule] | JwtFailure:
    failure = JwtFailure(UNKNOWN_ISSUER)
    for rule in rules:
        outcome = verify(token, rule.jwks, now=now, issuer=rule.issuer, audiences=rule.audiences)
        if isinstance(outcome, Claims):
            return outcome, rule
        if outcome.message != UNKNOWN_ISSUER or failure.message == UNKNOWN_ISSUER:
            failure = outcome
    return failure


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip('"')
    return out


def _locations(rule: JWTRule) -> tuple[TokenLocation, ...]:
    out = [TokenLocation("header", h.name.lower(), h.prefix or "") for h in rule.from_headers or []]
    out += [TokenLocation("param", p) for p in rule.from_params or []]
    out += [TokenLocation("cookie", c) for c in rule.from_cookies or []]
    if not out:
        out = [TokenLocation("header", *DEFAULT_HEADER), TokenLocation("param", DEFAULT_PARAM)]
    return tuple(out)


def compile_request_authn(
    specs: Iterable[Mapping[str, Any]], jwks_by_uri: Mapping[str, str] | None = None
) -> RequestAuthenticator:
    """Merge the ``jwtRules`` of the RequestAuthentication specs (wire dicts) that apply."""
    rules: list[_JwtRule] = []
    warnings: list[str] = []
    for raw in specs:
        try:
            spec = RequestAuthenticationSpec.model_validate(dict(raw))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise RequestAuthnRejected(f"RequestAuthentication is invalid: {exc}") from exc
        for rule in spec.jwt_rules or []:
            jwks = Jwks()
            text = rule.jwks if rule.jwks else (jwks_by_uri or {}).get(rule.jwks_uri or "")
            if text:
                try:
                    jwks = parse_jwks(text)
                except JwksError as exc:
                    warnings.append(f"issuer {rule.issuer}: {exc}: its tokens are refused")
            else:
                warnings.append(
                    f"issuer {rule.issuer}: no keys yet ({rule.jwks_uri}): its tokens are refused"
                )
            rules.append(
                _JwtRule(
                    issuer=rule.issuer,
                    audiences=tuple(rule.audiences or ()),
                    jwks=jwks,
                    locations=_locations(rule),
                    forward=bool(rule.forward_original_token),
                    payload_header=rule.output_payload_to_header,
                    claim_headers=tuple(
                        (m.header, m.claim) for m in rule.output_claim_to_headers or []
                    ),
                )
            )
    return RequestAuthenticator(tuple(rules), tuple(warnings))
