"""What every Istio kind shares: durations, string matches, selectors, host checks.

What lives here: the small protobuf-shaped types that several Istio kinds
use (``StringMatch``, ``Percent``, ``Destination``, the two kinds of workload
selector, ``PolicyTargetReference``, the free-form Istio status), the
``Duration`` string types, and the checks Istio's own validation applies
everywhere (hostnames, ports, labels, header names, ``exportTo``, RE2
regexes), and ``register_istio``. The kinds live in ``istio_routing``
(VirtualService, with its HTTP-route policies in ``istio_http``), ``istio_traffic`` (DestinationRule, and the TLS and
connection-pool settings Gateway and Sidecar share with it),
``istio_networking`` (Gateway, ServiceEntry, WorkloadEntry, Sidecar; importing
it registers every networking.istio.io kind) and ``istio_security``
(PeerAuthentication, RequestAuthentication, AuthorizationPolicy).

Rules of this module and of the kind modules:

* Field names and wire names are Istio's (camelCase JSON names of the
  protobuf fields). Enums are ``Literal`` strings: Istio's CRDs declare them
  as strings, so the integer protobuf form is refused.
* Istio does not default fields in the stored object (its CRDs carry no
  defaults and its webhook only validates), so no field here has a
  non-``None`` default: ``to_wire`` shows exactly what the user wrote.
* Semantic checks are Istio's (``pkg/config/validation``), with Istio's
  messages, reported through ``Problems`` so that each error names the exact
  wire path below the model that found it.
* No I/O, no evaluation of routes or policies (that is ``meshwork.core``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from meshwork.model.base import (
    REGISTRY,
    KindInfo,
    Model,
    NameRule,
    OpenModel,
    Resource,
    label_value_error,
    qualified_name_error,
)

Loc = tuple[str | int, ...]

NETWORKING_GROUP = "networking.istio.io"
NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")  # identical schemas; stored at v1
NetworkingApiVersion = Literal[
    "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"
]
SECURITY_GROUP = "security.istio.io"
SECURITY_VERSIONS = ("v1", "v1beta1")  # identical schemas; stored at v1
SecurityApiVersion = Literal["security.istio.io/v1", "security.istio.io/v1beta1"]

UINT32_MAX = 2**32 - 1  # protobuf uint32
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # protobuf int32
UINT64_MAX = 2**64 - 1  # protobuf uint64
PORT_MIN, PORT_MAX = 1, 65535  # Istio agent.ValidatePort
DOMAIN_MAX = 255  # Istio CheckDNS1123Preconditions: "too long (max 255)"
LABEL_MAX = 63  # RFC 1123 label length, as Istio's IsDNS1123Label
REGEX_MAX = 1024  # Istio validateStringRegexp: Envoy's RE2 program-size guard, by length
NANOS_PER_MS = 1_000_000
NANOS_MAX = 2**63 - 1  # Go time.Duration is an int64 of nanoseconds

UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
UInt64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]

INVALID, REQUIRED, DUPLICATE = "FieldValueInvalid", "FieldValueRequired", "FieldValueDuplicate"
FORBIDDEN, NOT_SUPPORTED = "FieldValueForbidden", "FieldValueNotSupported"


def register_istio(
    model: type[Resource],
    plural: str,
    short_names: tuple[str, ...] = (),
    *,
    name_rule: NameRule = "subdomain",
) -> KindInfo:
    """Register an Istio kind under its group (told apart by its apiVersion's group)."""
    kind = model.model_fields["kind"].default
    networking = model.model_fields["api_version"].default.startswith(NETWORKING_GROUP)
    group = NETWORKING_GROUP if networking else SECURITY_GROUP
    return REGISTRY.register(
        KindInfo(
            group=group,
            versions=NETWORKING_VERSIONS if networking else SECURITY_VERSIONS,
            kind=kind,
            plural=plural,
            singular=kind.lower(),
            model=model,
            short_names=short_names,
            name_rule=name_rule,
            categories=("istio-io", group.replace(".", "-")),
        )
    )


class Problems:
    """Collects semantic errors with paths relative to the model that checks them.

    ``raise_if_any`` raises one pydantic ``ValidationError``; raised inside a
    validator, pydantic prefixes the outer path, so the codec sees the full
    wire path (``spec.http.0.route``). ``ctx["reason"]`` carries the
    Kubernetes cause reason to the codec.
    """

    def __init__(self, title: str) -> None:
        self._title = title
        self._details: list[InitErrorDetails] = []

    def add(self, loc: Loc, message: str, value: Any = None, reason: str = INVALID) -> None:
        error = PydanticCustomError(
            "value_error", "{message}", {"message": message, "reason": reason}
        )
        self._details.append(InitErrorDetails(type=error, loc=loc, input=value))

    def extend(self, prefix: Loc, errors: list[tuple[Loc, str]]) -> None:
        for loc, message in errors:
            self.add((*prefix, *loc), message)

    def raise_if_any(self) -> None:
        if self._details:
            raise ValidationError.from_exception_data(self._title, self._details)


def q(text: str) -> str:
    """Quote a value for a message the way Istio's Go ``%q`` does (double quotes)."""
    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------------------
# Durations: Go/protobuf duration strings ("5s", "0.5s", "1m", "1h30m", "250ms")
# ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NANOS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": NANOS_PER_MS,
    "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
}  # fmt: skip


def duration_nanos(text: str) -> int | None:
    """Nanoseconds in a Go/protobuf duration string, or None when it is not one.

    Kubernetes validates Istio durations with CEL ``duration()``, which is Go's
    ``time.ParseDuration``: an optional sign, then one or more decimal numbers
    each with a unit, or a bare ``0``.
    """
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    pos, total = 0, Decimal(0)
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            return None
        total += Decimal(match.group(1)) * _UNIT_NANOS[match.group(2)]
        pos = match.end()
    if pos == 0:
        return None
    nanos = int(total)
    return -nanos if text.startswith("-") else nanos


def _check_duration(value: str) -> str:
    nanos = duration_nanos(value)
    if nanos is None:
        raise ValueError(
            f"invalid duration {q(value)}: expected a number with a unit "
            '(ns, us, ms, s, m, h), e.g. "5s", "0.5s", "1m"'
        )
    if nanos < 0:
        raise ValueError("duration must not be negative")
    if nanos > NANOS_MAX:
        raise ValueError("duration is too large")
    return value


def _check_duration_min_1ms(value: str) -> str:
    nanos = duration_nanos(_check_duration(value)) or 0
    if nanos < NANOS_PER_MS:
        raise ValueError("duration must be greater than 1ms")
    if nanos % NANOS_PER_MS:
        raise ValueError("only durations to ms precision are supported")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""Any well-formed, non-negative duration (Istio fields marked ``duration-validation:none``)."""
MinDuration = Annotated[str, AfterValidator(_check_duration_min_1ms)]
"""A duration of at least 1ms with millisecond precision (Istio ``ValidateDuration``)."""


# ---------------------------------------------------------------------------
# Checks Istio applies in many places; each returns an error message or None
# ---------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$")
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RE2 has no lookaround and no backreferences; Python's ``re`` would accept them.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


def is_dns_label(value: str) -> bool:
    """Istio's ``labels.IsDNS1123Label`` (which, unlike Kubernetes, allows upper case)."""
    return len(value) <= LABEL_MAX and bool(_DNS_LABEL.match(value))


def _labels_error(domain: str, labels: list[str]) -> str | None:
    """Istio ``ValidateDNS1123Labels``."""
    if labels[-1].isdigit():
        return f"domain name {q(domain)} invalid (top level domain {q(labels[-1])} cannot be all-numeric)"
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and label == "":
            continue  # a trailing dot is allowed
        if not is_dns_label(label):
            return f"domain name {q(domain)} invalid (label {q(label)} invalid)"
    return None


def _domain_precondition(domain: str) -> str | None:
    if not domain:
        return "empty domain name not allowed"
    if len(domain) > DOMAIN_MAX:
        return f"domain name {q(domain)} too long (max {DOMAIN_MAX})"
    return None


def fqdn_error(domain: str) -> str | None:
    """Istio ``ValidateFQDN``."""
    return _domain_precondition(domain) or _labels_error(domain, domain.split("."))


def wildcard_domain_error(domain: str) -> str | None:
    """Istio ``ValidateWildcardDomain``: a DNS name whose first label may be a wildcard."""
    err = _domain_precondition(domain)
    if err:
        return err
    first, dot, rest = domain.partition(".")
    if len(first) > LABEL_MAX or not _WILDCARD_LABEL.match(first):
        return f"domain name {q(domain)} invalid (label {q(first)} invalid)"
    return _labels_error(domain, rest.split(".")) if dot else None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ip_or_cidr_error(value: str) -> str | None:
    """Istio ``ValidateIPSubnet`` / ``security.ValidateIPs``: an address or a CIDR range."""
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return f"invalid IP address or CIDR range: {q(value)}"
    return None


def port_error(port: int) -> str | None:
    if PORT_MIN <= port <= PORT_MAX:
        return None
    return f"port number {port} must be in the range {PORT_MIN}..{PORT_MAX}"


def header_name_error(name: str) -> str | None:
    """Istio ``ValidateHTTPHeaderName``."""
    if not name:
        return "header name cannot be empty"
    if not _HEADER_NAME.match(name):
        return f"header name {name} is not a valid header name"
    return None


def header_value_error(value: str) -> str | None:
    """Istio ``ValidateHTTPHeaderValue``: no control characters except tab."""
    if _HEADER_VALUE_BAD.search(value):
        return f"header value configuration {q(value)} is invalid"
    return None


def regex_error(pattern: str, where: str) -> str | None:
    """Istio ``validateStringRegexp``: non-empty, at most 1024 long, RE2 syntax."""
    if not pattern:
        return f"{q(where)}: regex string match should not be empty"
    if len(pattern) > REGEX_MAX:
        return f"{q(where)}: regex is too large, max length allowed is {REGEX_MAX}"
    if _NOT_RE2.search(pattern):
        return f"{q(where)}: lookaround and backreferences are not RE2 syntax"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{q(where)}: {exc}; Istio uses RE2 style regex-based match"
    return None


def label_map_errors(labels: dict[str, str] | None) -> list[tuple[Loc, str]]:
    """Istio ``labels.Instance.Validate``: keys are qualified names, values label values."""
    errors: list[tuple[Loc, str]] = []
    for key, value in (labels or {}).items():
        err = qualified_name_error(key)
        if err:
            errors.append(((key,), f"invalid label key {q(key)}: {err}"))
            continue
        err = label_value_error(value)
        if err:
            errors.append(((key,), f"invalid label value {q(value)}: {err}"))
    return errors


def selector_errors(labels: dict[str, str] | None) -> list[tuple[Loc, str]]:
    """Istio ``validateWorkloadSelector``: no empty keys, no wildcards."""
    errors: list[tuple[Loc, str]] = []
    for key, value in (labels or {}).items():
        if not key:
            errors.append(((key,), f'empty key is not supported in selector: "={value}"'))
        elif "*" in key or "*" in value:
            errors.append(((key,), f'wildcard is not supported in selector: "{key}={value}"'))
    return errors


def export_to_errors(export_to: list[str] | None, *, service_entry: bool = False) -> list[str]:
    """Istio ``validateExportTo`` (without the namespace-dependent duplicate of ``.``)."""
    errors: list[str] = []
    seen: set[str] = set()
    for entry in export_to or []:
        if entry in seen:
            errors.append(f"duplicate entries in exportTo for entry {entry}")
            continue
        seen.add(entry)
        if entry == "~" and not service_entry:
            errors.append("exportTo ~ (none) is not allowed for Istio configuration objects")
        elif entry not in (".", "*", "~") and not is_dns_label(entry):
            errors.append("only .,*, or a valid DNS 1123 label is allowed as exportTo entry")
    if "*" in seen and len(export_to or []) > 1:
        errors.append("cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to or []) > 1:
        errors.append("cannot export service entry to no one (~) and someone")
    return errors


def namespace_host_error(value: str) -> str | None:
    """Istio ``ValidateNamespaceSlashWildcardHostname``: ``[namespace/]host``."""
    namespace, slash, host = value.partition("/")
    if not slash:
        namespace, host = "", value
    if slash and not namespace:
        return "namespace in hostname must not be empty"
    if slash and namespace not in ("*", ".", "~") and not is_dns_label(namespace):
        return f"invalid namespace value {q(namespace)} in host {q(value)}"
    if host == "*":
        return None
    return wildcard_domain_error(host)


# Istio protocol.Parse (case-insensitive); anything else is "unsupported".
PROTOCOLS = frozenset({
    "TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TLS", "MONGO",
    "REDIS", "MYSQL",
})  # fmt: skip
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def protocol_error(protocol: str) -> str | None:
    """Istio ``ValidateProtocol`` for a named protocol."""
    if protocol.upper() in PROTOCOLS:
        return None
    return (
        f"invalid protocol {q(protocol)}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, "
        "MONGO, REDIS, MYSQL, TCP, TLS, HTTPS, UDP"
    )


def gateway_name_error(name: str) -> str | None:
    """Istio ``validateGatewayNames``: ``name``, ``name.namespace`` or ``namespace/name``."""
    namespace, slash, gateway = name.partition("/")
    if not slash:
        return fqdn_error(name)
    if not namespace or not gateway:
        return "config namespace and gateway name cannot be empty"
    if not is_dns_label(namespace):
        return f"invalid value for namespace: {q(namespace)}"
    if not is_dns_label(gateway):
        return f"invalid value for gateway name: {q(gateway)}"
    return None


# ---------------------------------------------------------------------------
# Shared message types
# ---------------------------------------------------------------------------


class StringMatch(Model):
    """Istio ``StringMatch``: at most one of exact, prefix (case-sensitive) or RE2 regex."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("StringMatch")
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) > 1:
            problems.add((), "only one of exact, prefix or regex may be set", reason=FORBIDDEN)
        if self.regex is not None:
            err = regex_error(self.regex, "regex")
            if err:
                problems.add(("regex",), err, self.regex)
        problems.raise_if_any()
        return self

    @property
    def value(self) -> str | None:
        """The string to match, whichever kind of match this is."""
        for candidate in (self.exact, self.prefix, self.regex):
            if candidate is not None:
                return candidate
        return None


class Percent(Model):
    """A percentage in [0.0, 100.0] (``networking.v1alpha3.Percent``)."""

    value: float | None = None


def percentage_error(percent: Percent | None) -> str | None:
    """Istio ``validatePercentage``: 0, or between 0.0001 and 100."""
    if percent is None or percent.value is None:
        return None
    value = percent.value
    if value < 0.0 or value > 100.0 or 0.0 < value < 0.0001:
        return f"percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"
    return None


class PortSelector(Model):
    """The number of a port on the destination (``PortSelector``)."""

    number: UInt32 | None = None


class Destination(Model):
    """A service (and optional subset and port) traffic is sent to."""

    host: str
    subset: str | None = None
    port: PortSelector | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("Destination")
        if self.host == "*":
            problems.add(("host",), f"invalid destination host {self.host}", self.host)
        else:
            err = wildcard_domain_error(self.host)
            if err:
                problems.add(("host",), err, self.host)
        if self.subset is not None:
            err = subset_name_error(self.subset)
            if err:
                problems.add(("subset",), err, self.subset)
        if self.port is not None:
            err = port_error(self.port.number or 0)
            if err:
                problems.add(("port", "number"), err, self.port.number)
        problems.raise_if_any()
        return self


def subset_name_error(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns_label(name):
        return f"subset name is invalid: {name}"
    return None


class WorkloadSelector(Model):
    """``istio.type.v1beta1.WorkloadSelector``: pods whose labels match all of these."""

    match_labels: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("WorkloadSelector")
        problems.extend(("matchLabels",), selector_errors(self.match_labels))
        problems.raise_if_any()
        return self


class LabelsSelector(Model):
    """``networking.v1alpha3.WorkloadSelector`` (Sidecar, ServiceEntry): a ``labels`` map."""

    labels: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("WorkloadSelector")
        problems.extend(("labels",), selector_errors(self.labels))
        problems.raise_if_any()
        return self


_TARGET_KINDS = {
    ("", "Service"),
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
}  # Istio allowedTargetRefs: Service, ServiceEntry, Kubernetes Gateway


class PolicyTargetReference(Model):
    """The resource a policy attaches to (``istio.type.v1beta1.PolicyTargetReference``)."""

    group: str | None = None
    kind: str
    name: str
    namespace: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("PolicyTargetReference")
        if not self.name:
            problems.add(("name",), "targetRef name must be set", reason=REQUIRED)
        if self.namespace:
            problems.add(
                ("namespace",),
                "targetRef namespace must not be set; cross namespace referencing is not supported",
                self.namespace,
                FORBIDDEN,
            )
        if (self.group or "", self.kind) not in _TARGET_KINDS:
            problems.add(
                ("kind",),
                "targetRef must be to one of Service, networking.istio.io/ServiceEntry, "
                f"gateway.networking.k8s.io/Gateway but was {self.group or ''}/{self.kind}",
                self.kind,
                NOT_SUPPORTED,
            )
        problems.raise_if_any()
        return self


def one_selector_error(
    selector: WorkloadSelector | None,
    target_ref: PolicyTargetReference | None,
    target_refs: list[PolicyTargetReference] | None,
) -> str | None:
    """Istio ``validateOneOfSelectorType``."""
    chosen = sum((selector is not None, target_ref is not None, bool(target_refs)))
    return "only one of targetRefs or workloadSelector can be set" if chosen > 1 else None


class IstioStatus(OpenModel):
    """Istio's status is free-form (conditions, validationMessages, observedGeneration)."""
