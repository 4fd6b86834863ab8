"""The matchers of AuthorizationPolicy rules: one ``Check`` per field of a source, operation or condition.

What lives here: how each Istio field compares its values with a request
(Istio's ``pilot/pkg/security/authz`` generators, as the reference pages
describe them):

- strings: ``abc`` exact, ``abc*`` prefix, ``*abc`` suffix, ``*`` present (for
  identities and claims: present *and non-empty*, so ``principals: ["*"]``
  means "any mTLS peer" and ``requestPrincipals: ["*"]`` "any valid JWT");
- ``hosts``: the same, case-insensitive, and a request ``Host`` may carry a
  port (``httpbin.foo`` matches ``httpbin.foo:8000``);
- ``paths``: the same (case-sensitive unless the authorizer is compiled with
  ``ignore_case_paths``), plus Istio's templates ``{*}`` (one segment) and
  ``{**}`` (any number of segments); the query never takes part;
- IPs: an address or a CIDR; ports: decimal strings;
- list-valued attributes (``request.auth.audiences``, list claims) match when
  any element does.

A field's values are ORed, a ``not`` field is the negation of the same
match, and every present field of one source/operation must hold (AND).

``Check.scope`` says when a check can be evaluated: ``"any"``, ``"http"``
(HTTP-only fields: methods, paths, hosts, request principals, headers, JWT
claims; not available on a TCP connection) or ``"unsupported"``
(``experimental.envoy.filters.*`` metadata, which meshwork has none of). The
authorizer decides what a check that cannot be evaluated means (fail closed:
an ALLOW rule with one never matches, a DENY rule ignores it and so matches
more), as Istio does for HTTP fields on TCP.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from meshwork.core.security.attributes import RequestAttributes

__all__ = ["Check", "Scope", "condition_check", "operation_checks", "source_checks"]

Scope = Literal["any", "http", "unsupported"]
Getter = Callable[[RequestAttributes], object]
Matcher = Callable[[str], bool]

_CLAIM_PATH = re.compile(r"\[([^\[\]]+)\]")
_HOST_PORT = re.compile(r"(.+?)(?::[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Check:
    """One field of a rule: ``label`` names it for ``meshwork why``; ``get`` reads the attribute."""

    label: str
    get: Getter
    accepts: Callable[[object], bool]
    scope: Scope = "any"

    def __call__(self, attrs: RequestAttributes) -> bool:
        return self.accepts(self.get(attrs))


# ---------------------------------------------------------------------------
# value matchers
# ---------------------------------------------------------------------------


def string_matcher(pattern: str, *, nonempty: bool = False, ignore_case: bool = False) -> Matcher:
    """Istio's exact / ``prefix*`` / ``*suffix`` / ``*`` match of one value."""
    if pattern == "*":
        return (lambda v: v != "") if nonempty else (lambda v: True)
    fold: Callable[[str], str] = str.lower if ignore_case else (lambda s: s)
    if pattern.endswith("*"):
        prefix = fold(pattern[:-1])
        return lambda v: fold(v).startswith(prefix) and (v != "" or not nonempty)
    if pattern.startswith("*"):
        suffix = fold(pattern[1:])
        return lambda v: fold(v).endswith(suffix) and (v != "" or not nonempty)
    exact = fold(pattern)
    return lambda v: fold(v) == exact


def host_matcher(pattern: str) -> Matcher:
    """Case-insensitive; the request's ``host:port`` matches a pattern without a port."""
    p = pattern.lower()
    if p == "*":
        return lambda v: True
    if p.endswith("*"):
        prefix = p[:-1]
        return lambda v: v.lower().startswith(prefix)
    if p.startswith("*"):
        suffix = p[1:]
        return lambda v: _host_only(v.lower()).endswith(suffix)
    return lambda v: v.lower() == p or _host_only(v.lower()) == p


def _host_only(host: str) -> str:
    m = _HOST_PORT.fullmatch(host)
    return m.group(1) if m else host


def path_matcher(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """Paths: exact, ``/prefix/*``, ``*/suffix``, ``*``, and the templates ``{*}`` / ``{**}``."""
    if "{*}" in pattern or "{**}" in pattern:
        parts = re.split(r"(\{\*\*\}|\{\*\})", pattern)
        regex = "".join(
            "[^/]+" if part == "{*}" else ".*" if part == "{**}" else re.escape(part)
            for part in parts
        )
        compiled = re.compile(regex, re.IGNORECASE if ignore_case else 0)
        return lambda v: compiled.fullmatch(v) is not None
    return string_matcher(pattern, ignore_case=ignore_case)


def ip_matcher(pattern: str) -> Callable[[str], bool]:
    network = ipaddress.ip_network(pattern, strict=False)

    def match(value: str) -> bool:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version == network.version and address in network

    return match


def _any_of(matchers: Sequence[Matcher]) -> Callable[[object], bool]:
    """True when the attribute (a string, or a list of strings) has a value any matcher accepts."""

    def accepts(value: object) -> bool:
        if value is None:
            return False
        if isinstance(value, str):
            return any(m(value) for m in matchers)
        if isinstance(value, list | tuple):
            return any(isinstance(v, str) and m(v) for v in value for m in matchers)
        return False

    return accepts


def _none_of(matchers: Sequence[Matcher]) -> Callable[[object], bool]:
    positive = _any_of(matchers)
    return lambda value: not positive(value)


def _field(
    label: str,
    get: Getter,
    values: list[str] | None,
    negate: bool,
    make: Callable[[str], Matcher],
    scope: Scope = "any",
) -> list[Check]:
    if not values:
        return []
    matchers = [make(v) for v in values]
    return [Check(label, get, _none_of(matchers) if negate else _any_of(matchers), scope)]


def _identity(pattern: str) -> Matcher:
    return string_matcher(pattern, nonempty=True)


def _service_account_of(principal: object) -> object:
    """``<ns>/<sa>`` of a ``<td>/ns/<ns>/sa/<sa>`` principal."""
    if not isinstance(principal, str):
        return None
    parts = principal.split("/")
    if len(parts) >= 5 and parts[-4] == "ns" and parts[-2] == "sa":
        return f"{parts[-3]}/{parts[-1]}"
    return None


def _port_matcher(pattern: str) -> Matcher:
    return lambda v: v == pattern


def _port_text(attrs: RequestAttributes) -> object:
    return None if attrs.destination_port is None else str(attrs.destination_port)


# ---------------------------------------------------------------------------
# rule parts
# ---------------------------------------------------------------------------


def source_checks(fields: dict[str, list[str]], policy_namespace: str) -> list[Check]:
    """The checks of one ``from.source`` (camelCase field names, as on the wire)."""

    def sa(pattern: str) -> Matcher:
        full = pattern if "/" in pattern else f"{policy_namespace}/{pattern}"
        return lambda v: v == full

    def principal(a: RequestAttributes) -> object:
        return a.source_principal

    def service_account(a: RequestAttributes) -> object:
        return _service_account_of(a.source_principal)

    def request_principal(a: RequestAttributes) -> object:
        return a.request_principal

    def namespace(a: RequestAttributes) -> object:
        return a.source_namespace

    def source_ip(a: RequestAttributes) -> object:
        return a.source_ip

    def client_ip(a: RequestAttributes) -> object:
        return a.client_ip

    spec: list[tuple[str, Getter, Callable[[str], Matcher], Scope]] = [
        ("principals", principal, _identity, "any"),
        ("serviceAccounts", service_account, sa, "any"),
        ("requestPrincipals", request_principal, _identity, "http"),
        ("namespaces", namespace, _identity, "any"),
        ("ipBlocks", source_ip, ip_matcher, "any"),
        ("remoteIpBlocks", client_ip, ip_matcher, "any"),
    ]
    return _checks(fields, spec)


def operation_checks(fields: dict[str, list[str]], *, ignore_case_paths: bool) -> list[Check]:
    """The checks of one ``to.operation``."""

    def host(a: RequestAttributes) -> object:
        return a.host

    def method(a: RequestAttributes) -> object:
        return a.method

    def path(a: RequestAttributes) -> object:
        return a.match_path

    def paths(pattern: str) -> Matcher:
        return path_matcher(pattern, ignore_case=ignore_case_paths)

    spec: list[tuple[str, Getter, Callable[[str], Matcher], Scope]] = [
        ("hosts", host, host_matcher, "http"),
        ("ports", _port_text, _port_matcher, "any"),
        ("methods", method, string_matcher, "http"),
        ("paths", path, paths, "http"),
    ]
    return _checks(fields, spec)


def _checks(
    fields: dict[str, list[str]],
    spec: list[tuple[str, Getter, Callable[[str], Matcher], Scope]],
) -> list[Check]:
    out: list[Check] = []
    for name, get, make, scope in spec:
        negated = "not" + name[0].upper() + name[1:]
        out += _field(name, get, fields.get(name), False, make, scope)
        out += _field(negated, get, fields.get(negated), True, make, scope)
    return out


def _claim_getter(path: tuple[str, ...]) -> Getter:
    def get(a: RequestAttributes) -> object:
        if a.request_principal is None:
            return None
        node: object = a.claims
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    return get


def condition_check(
    key: str, values: list[str] | None, not_values: list[str] | None, policy_namespace: str
) -> list[Check]:
    """The checks of one ``when`` condition (Istio's condition keys; the model validated them)."""
    get: Getter
    make: Callable[[str], Matcher] = _identity
    scope: Scope = "any"
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1].lower()

        def get(a: RequestAttributes) -> object:
            return a.headers.get(name)

        make, scope = string_matcher, "http"
    elif key.startswith("request.auth.claims["):
        get = _claim_getter(tuple(_CLAIM_PATH.findall(key[len("request.auth.claims") :])))
        scope = "http"
    elif key in _SIMPLE:
        get, make, scope = _SIMPLE[key]
    elif key == "source.serviceAccount":

        def get(a: RequestAttributes) -> object:
            return _service_account_of(a.source_principal)

        def make(pattern: str) -> Matcher:
            full = pattern if "/" in pattern else f"{policy_namespace}/{pattern}"
            return lambda v: v == full

    else:  # experimental.envoy.filters.*: dynamic metadata meshwork never has
        get, scope = (lambda a: None), "unsupported"
    label = f"when {key}"
    return _field(label, get, values, False, make, scope) + _field(
        f"{label} notValues", get, not_values, True, make, scope
    )


_SIMPLE: dict[str, tuple[Getter, Callable[[str], Matcher], Scope]] = {
    "source.ip": (lambda a: a.source_ip, ip_matcher, "any"),
    "remote.ip": (lambda a: a.client_ip, ip_matcher, "any"),
    "destination.ip": (lambda a: a.destination_ip, ip_matcher, "any"),
    "destination.port": (_port_text, _port_matcher, "any"),
    "source.namespace": (lambda a: a.source_namespace, _identity, "any"),
    "source.principal": (lambda a: a.source_principal, _identity, "any"),
    "connection.sni": (lambda a: a.sni, _identity, "any"),
    "request.auth.principal": (lambda a: a.request_principal, _identity, "http"),
    "request.auth.audiences": (lambda a: a.audiences, _identity, "http"),
    "request.auth.presenter": (lambda a: a.presenter, _identity, "http"),
}
