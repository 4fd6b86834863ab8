"""The security.istio.io kinds: PeerAuthentication, RequestAuthentication, AuthorizationPolicy.

What lives here: the typed specs of the three kinds (served at ``v1`` and
``v1beta1``, whose schemas are identical, stored at ``v1``), the checks
Istio's validating webhook applies to them (``pkg/config/validation`` and
``pkg/config/security``) with Istio's messages, and their registration.

What must not: evaluating policies, verifying JWTs or mTLS (``meshwork.core``
and the proxy), and defaults. In particular ``action`` stays unset when the
user leaves it out: ALLOW is what an unset action *means*, but Istio does not
write it into the stored object, and neither do we.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import (
    FORBIDDEN,
    REQUIRED,
    IstioStatus,
    MinDuration,
    PolicyTargetReference,
    Problems,
    SecurityApiVersion,
    WorkloadSelector,
    header_name_error,
    ip_or_cidr_error,
    one_selector_error,
    port_error,
    q,
    register_istio,
)

MTLSMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
JWKS_URI_SCHEMES = ("http://", "https://")  # Istio security.ParseJwksURI accepts these only

# Condition keys Istio knows (security.ValidateAttribute); map-style keys take ``[name]``.
_PLAIN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "destination.ip", "destination.port", "connection.sni",
})  # fmt: skip
_MAP_KEY_PREFIXES = ("request.auth.claims[", "request.headers[", "experimental.envoy.filters.")
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})


# ---------------------------------------------------------------------------
# PeerAuthentication
# ---------------------------------------------------------------------------


class PeerAuthenticationMutualTLS(Model):
    """Whether inbound connections must, may or must not use mutual TLS."""

    mode: MTLSMode | None = None


class PeerAuthenticationSpec(Model):
    """The mTLS mode of a mesh, namespace or workload, optionally per port."""

    selector: WorkloadSelector | None = None
    mtls: PeerAuthenticationMutualTLS | None = None
    # map<uint32, MutualTLS>: JSON object keys are strings ("8080"); YAML ints arrive as strings.
    port_level_mtls: dict[str, PeerAuthenticationMutualTLS] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``ValidatePeerAuthentication``."""
        problems = Problems("PeerAuthentication")
        selector_empty = self.selector is None or not self.selector.match_labels
        if selector_empty and self.port_level_mtls:
            problems.add(
                ("portLevelMtls",),
                "mesh/namespace peer authentication cannot have port level mTLS",
                reason=FORBIDDEN,
            )
        if self.port_level_mtls is not None and not self.port_level_mtls:
            problems.add(
                ("portLevelMtls",),
                "port level mTLS, if defined, must have at least one element",
                reason=REQUIRED,
            )
        for port in self.port_level_mtls or {}:
            if not port.isdigit() or port_error(int(port)):
                problems.add(("portLevelMtls", port), "port must be in range 1..65535", port)
        problems.raise_if_any()
        return self


class PeerAuthentication(Resource):
    """Peer (mTLS) authentication for workloads (security.istio.io PeerAuthentication)."""

    api_version: SecurityApiVersion = "security.istio.io/v1"
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec
    status: IstioStatus | None = None


# ---------------------------------------------------------------------------
# RequestAuthentication
# ---------------------------------------------------------------------------


class JWTHeader(Model):
    """A header a JWT is read from, with its value prefix (``Bearer ``)."""

    name: str
    prefix: str | None = None


class ClaimToHeader(Model):
    """Copy a claim of a verified JWT into a request header."""

    header: str
    claim: str


class JWTRule(Model):
    """How to find and verify one issuer's JWTs."""

    issuer: str
    audiences: list[str] | None = None
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JWTHeader] | None = None
    from_params: list[str] | None = None
    from_cookies: list[str] | None = None
    output_payload_to_header: str | None = None
    forward_original_token: bool | None = None
    output_claim_to_headers: list[ClaimToHeader] | None = None
    timeout: MinDuration | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``validateJwtRule``."""
        problems = Problems("JWTRule")
        if not self.issuer:
            problems.add(("issuer",), "issuer must be set", reason=REQUIRED)
        for i, audience in enumerate(self.audiences or []):
            if not audience:
                problems.add(("audiences", i), "audience must be non-empty string", reason=REQUIRED)
        if self.jwks_uri and not self.jwks_uri.startswith(JWKS_URI_SCHEMES):
            problems.add(
                ("jwksUri",), f"URI scheme must be http or https: {q(self.jwks_uri)}", self.jwks_uri
            )
        if self.jwks:
            try:
                keys = json.loads(self.jwks)
            except ValueError as exc:
                problems.add(("jwks",), f"jwks parse error: {exc}")
            else:
                if not isinstance(keys, dict) or not isinstance(
                    keys.get("keys", keys.get("kty")), list | str
                ):
                    problems.add(
                        ("jwks",),
                        "jwks parse error: expected a JWK or a JWK set (an object with keys)",
                    )
        for i, header in enumerate(self.from_headers or []):
            if not header.name:
                problems.add(
                    ("fromHeaders", i, "name"),
                    "location header name must be non-empty string",
                    reason=REQUIRED,
                )
        for field, values, what in (
            ("fromParams", self.from_params, "location query"),
            ("fromCookies", self.from_cookies, "cookie name"),
        ):
            for i, value in enumerate(values or []):
                if not value:
                    problems.add((field, i), f"{what} must be non-empty string", reason=REQUIRED)
        for i, mapping in enumerate(self.output_claim_to_headers or []):
            if not mapping.claim or not mapping.header:
                problems.add(
                    ("outputClaimToHeaders", i),
                    "outputClaimToHeaders header and claim value must be non-empty string",
                    reason=REQUIRED,
                )
            elif err := header_name_error(mapping.header):
                problems.add(("outputClaimToHeaders", i, "header"), err, mapping.header)
        problems.raise_if_any()
        return self


class RequestAuthenticationSpec(Model):
    """Which JWTs a workload accepts (an invalid token is refused; none is allowed)."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] | None = None
    jwt_rules: list[JWTRule] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("RequestAuthentication")
        if err := one_selector_error(self.selector, self.target_ref, self.target_refs):
            problems.add(("selector",), err, reason=FORBIDDEN)
        problems.raise_if_any()
        return self


class RequestAuthentication(Resource):
    """Request (JWT) authentication for workloads (security.istio.io RequestAuthentication)."""

    api_version: SecurityApiVersion = "security.istio.io/v1"
    kind: Literal["RequestAuthentication"] = "RequestAuthentication"
    spec: RequestAuthenticationSpec
    status: IstioStatus | None = None


# ---------------------------------------------------------------------------
# AuthorizationPolicy
# ---------------------------------------------------------------------------


class Source(Model):
    """Who sends the request: peer identity, JWT principal, namespace, IP."""

    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    not_request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    service_accounts: list[str] | None = None
    not_service_accounts: list[str] | None = None
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None
    remote_ip_blocks: list[str] | None = None
    not_remote_ip_blocks: list[str] | None = None


class Operation(Model):
    """What the request does: host, port, method, path."""

    hosts: list[str] | None = None
    not_hosts: list[str] | None = None
    ports: list[str] | None = None
    not_ports: list[str] | None = None
    methods: list[str] | None = None
    not_methods: list[str] | None = None
    paths: list[str] | None = None
    not_paths: list[str] | None = None


class RuleFrom(Model):
    source: Source | None = None


class RuleTo(Model):
    operation: Operation | None = None


class Condition(Model):
    """An extra condition on a request attribute (``request.headers[x-token]``)."""

    key: str
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(Model):
    """Matches a request when all of from, to and when match (each a list of alternatives)."""

    from_: list[RuleFrom] | None = Field(default=None, alias="from")
    to: list[RuleTo] | None = None
    when: list[Condition] | None = None


class AuthorizationPolicyProvider(Model):
    """The extension provider a CUSTOM policy delegates to (ext-authz)."""

    name: str | None = None


Action = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]


class AuthorizationPolicySpec(Model):
    """Access control for workloads: an action and the requests it applies to."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] | None = None
    rules: list[Rule] | None = None
    action: Action | None = None  # unset means ALLOW; not defaulted, as upstream
    provider: AuthorizationPolicyProvider | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``ValidateAuthorizationPolicy``."""
        problems = Problems("AuthorizationPolicy")
        if err := one_selector_error(self.selector, self.target_ref, self.target_refs):
            problems.add(("selector",), err, reason=FORBIDDEN)
        meaningless = "action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
        if self.action == "CUSTOM":
            if self.rules is None:
                problems.add(("rules",), f"CUSTOM {meaningless}", reason=REQUIRED)
            elif self.provider is None or not self.provider.name:
                problems.add(
                    ("provider", "name"), "`provider.name` must not be empty", reason=REQUIRED
                )
        elif self.provider is not None:
            problems.add(
                ("provider",),
                f"`provider` must not be with non CUSTOM action, found {self.action or 'ALLOW'}",
                reason=FORBIDDEN,
            )
        if self.action == "DENY" and self.rules is None:
            problems.add(("rules",), f"DENY {meaningless}", reason=REQUIRED)
        for i, rule in enumerate(self.rules or []):
            self._check_rule(problems, i, rule)
        problems.raise_if_any()
        return self

    def _check_rule(self, problems: Problems, i: int, rule: Rule) -> None:
        if rule.from_ is not None and not rule.from_:
            problems.add(
                ("rules", i, "from"),
                f"`from` must not be empty, found at rule {i}",
                reason=REQUIRED,
            )
        for j, item in enumerate(rule.from_ or []):
            where = ("rules", i, "from", j, "source")
            if item.source is None:
                problems.add(
                    where, f"`from.source` must not be nil, found at rule {i}", reason=REQUIRED
                )
                continue
            fields = item.source.model_dump(by_alias=True, exclude_none=True)
            if not any(fields.values()):
                problems.add(
                    where, f"`from.source` must not be empty, found at rule {i}", reason=REQUIRED
                )
            if (fields.get("serviceAccounts") or fields.get("notServiceAccounts")) and (
                fields.get("principals")
                or fields.get("notPrincipals")
                or fields.get("namespaces")
                or fields.get("notNamespaces")
            ):
                problems.add(
                    where,
                    "cannot set serviceAccounts with namespaces or principals",
                    reason=FORBIDDEN,
                )
            if self.action == "CUSTOM":
                for name in (
                    "namespaces",
                    "notNamespaces",
                    "principals",
                    "notPrincipals",
                    "requestPrincipals",
                    "notRequestPrincipals",
                ):
                    if fields.get(name):
                        problems.add(
                            (*where, name),
                            f"From.{name[0].upper()}{name[1:]} is currently not supported with CUSTOM action",
                            reason=FORBIDDEN,
                        )
            _check_values(
                problems,
                where,
                fields,
                ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"),
                ip_or_cidr_error,
            )
        if rule.to is not None and not rule.to:
            problems.add(
                ("rules", i, "to"), f"`to` must not be empty, found at rule {i}", reason=REQUIRED
            )
        for j, target in enumerate(rule.to or []):
            where = ("rules", i, "to", j, "operation")
            if target.operation is None:
                problems.add(
                    where, f"`to.operation` must not be nil, found at rule {i}", reason=REQUIRED
                )
                continue
            fields = target.operation.model_dump(by_alias=True, exclude_none=True)
            if not any(fields.values()):
                problems.add(
                    where, f"`to.operation` must not be empty, found at rule {i}", reason=REQUIRED
                )
            _check_values(problems, where, fields, ("ports", "notPorts"), _port_string_error)
        for j, condition in enumerate(rule.when or []):
            self._check_condition(problems, ("rules", i, "when", j), condition)

    def _check_condition(
        self, problems: Problems, where: tuple[str | int, ...], condition: Condition
    ) -> None:
        key = condition.key
        if not key:
            problems.add((*where, "key"), "`key` must not be empty", reason=REQUIRED)
            return
        if not condition.values and not condition.not_values:
            problems.add(
                where,
                f"at least one of `values` or `notValues` must be set for key {key}",
                reason=REQUIRED,
            )
            return
        if err := condition_key_error(key):
            problems.add((*where, "key"), err, key)
            return
        if self.action == "CUSTOM" and (
            key in ("source.namespace", "source.principal") or key.startswith("request.auth.")
        ):
            problems.add(
                (*where, "key"),
                f"{key} is currently not supported with CUSTOM action",
                key,
                FORBIDDEN,
            )
        check = (
            ip_or_cidr_error
            if key in _IP_KEYS
            else _port_string_error
            if key == "destination.port"
            else None
        )
        for field, label, values in (
            ("values", "value", condition.values),
            ("notValues", "notValue", condition.not_values),
        ):
            for k, value in enumerate(values or []):
                if check is not None and (err := check(value)):
                    problems.add(
                        (*where, field, k), f"invalid `{label}` for `key` {key}: {err}", value
                    )


def _check_values(
    problems: Problems,
    where: tuple[str | int, ...],
    fields: dict[str, Any],
    checked: tuple[str, ...],
    check: Callable[[str], str | None],
) -> None:
    """``security.CheckEmptyValues`` on every list, then ``check`` on the ``checked`` ones."""
    for name, values in fields.items():
        for k, value in enumerate(values or []):
            if value == "":
                problems.add(
                    (*where, name, k),
                    f"empty value not allowed, found in {name[0].upper()}{name[1:]}",
                    reason=REQUIRED,
                )
            elif name in checked and (err := check(value)):
                problems.add((*where, name, k), err, value)


def _port_string_error(value: str) -> str | None:
    """Istio ``security.ValidatePorts``: ports are decimal strings in 1..65535."""
    if not value.isdigit() or port_error(int(value)):
        return f"invalid port: {value}"
    return None


def condition_key_error(key: str) -> str | None:
    """Istio ``security.ValidateAttribute`` for the key of a ``when`` condition."""
    if key in _PLAIN_KEYS:
        return None
    if key.startswith(_MAP_KEY_PREFIXES):
        if key.startswith("experimental.envoy.filters.") and "[" not in key:
            return f"invalid key: {key}"
        inner = key[key.find("[") + 1 : -1]
        if not key.endswith("]") or not inner:
            return f"invalid key: {key}"
        return None
    return f"unknown attribute: {key}"


DRY_RUN_ANNOTATION = "istio.io/dry-run"  # evaluate the policy and log, but do not enforce it
_GO_BOOLS = frozenset(
    {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
)  # strconv.ParseBool


class AuthorizationPolicy(Resource):
    """Access control for workloads (security.istio.io AuthorizationPolicy)."""

    api_version: SecurityApiVersion = "security.istio.io/v1"
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec
    status: IstioStatus | None = None

    @model_validator(mode="after")
    def _check_dry_run(self) -> Self:
        """Istio ``checkDryRunAnnotation``: a boolean, and only on ALLOW and DENY policies."""
        value = (self.metadata.annotations or {}).get(DRY_RUN_ANNOTATION)
        if value is None:
            return self
        problems = Problems("AuthorizationPolicy")
        where = ("metadata", "annotations", DRY_RUN_ANNOTATION)
        if (self.spec.action or "ALLOW") not in ("ALLOW", "DENY"):
            problems.add(
                where,
                f"the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {self.spec.action}",
                value,
                FORBIDDEN,
            )
        elif value not in _GO_BOOLS:
            problems.add(
                where,
                f"annotation {DRY_RUN_ANNOTATION} has invalid value ({value}): must be true or false",
                value,
            )
        problems.raise_if_any()
        return self


register_istio(PeerAuthentication, "peerauthentications", ("pa",))
register_istio(RequestAuthentication, "requestauthentications", ("ra",))
register_istio(AuthorizationPolicy, "authorizationpolicies", ("ap",))
