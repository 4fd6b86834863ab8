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

``jwksUri`` is fetched by the shell; its text comes in through
``jwks_by_uri``. A rule whose keys are unknown (not fetched yet, or the fetch
failed) verifies nothing: its tokens are refused, never waved through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from meshwork.core.security.jwt import (
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
    "compile_request_authn",
]

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


@dataclass(frozen=True, slots=True)
class RequestAuthenticator:
    rules: tuple[_JwtRule, ...] = ()
    warnings: tuple[str, ...] = ()

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
        for token, finders in found.items():
            outcome = _verify_one(token, finders, now)
            if isinstance(outcome, JwtFailure):
                return AuthnResult(False, error=outcome.message)
            claims, rule = outcome
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
    token: str, finders: list[tuple[_JwtRule, TokenLocation]], now: float
) -> tuple[Claims, _JwtRule] | JwtFailure:
    failure = JwtFailure(UNKNOWN_ISSUER)
    for rule in dict.fromkeys(r for r, _ in finders):
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
