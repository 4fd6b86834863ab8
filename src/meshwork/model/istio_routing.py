"""The VirtualService kind: how requests to a set of hosts are routed (networking.istio.io).

What lives here: ``VirtualService``, its HTTP, TLS and TCP routes, matches
and weighted destinations (the HTTP-route policies — redirects, retries,
faults, CORS ... — are in ``istio_http``), and the checks Istio's
validating webhook applies to them
(``pkg/config/validation/virtualservice.go`` and ``validation.go``), with
Istio's messages. Served at ``v1``, ``v1beta1`` and ``v1alpha3`` (identical
schemas), stored at ``v1``.

What must not: route matching or any use of routes (``meshwork.core``), and
defaults: Istio stores what the user wrote.

Deliberate differences, because upstream documentation applies such
manifests: Istio refuses a VirtualService with none of ``http``, ``tcp`` or
``tls`` (meshwork accepts it: it routes nothing; istio.io's concept pages),
and a TLS route whose SNI hosts are not within the VirtualService's hosts
(meshwork checks only their syntax; Argo Rollouts' getting-started guide).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import (
    DUPLICATE,
    FORBIDDEN,
    REQUIRED,
    Destination,
    Int32,
    IstioStatus,
    Loc,
    MinDuration,
    NetworkingApiVersion,
    Percent,
    Problems,
    StringMatch,
    UInt32,
    export_to_errors,
    gateway_name_error,
    header_name_error,
    ip_or_cidr_error,
    is_dns_label,
    is_ip,
    label_map_errors,
    port_error,
    q,
    register_istio,
    wildcard_domain_error,
)
from meshwork.model.istio_http import (
    PERCENT_MAX,
    CorsPolicy,
    Delegate,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    headers_errors,
    is_authority_header,
)

MESH_GATEWAY = "mesh"  # Istio constants.IstioMeshGateway: the implicit gateway of all sidecars
JWT_CLAIM_PREFIX = "@request.auth.claims."  # Istio jwt.ToRoutingClaim header form


class HTTPMatchRequest(Model):
    """Conditions a request must meet (all of them) for an HTTP route to apply."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    port: UInt32 | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    query_params: dict[str, StringMatch] | None = None
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] | None = None
    source_namespace: str | None = None
    stat_prefix: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPMatchRequest")
        for field, headers in (("headers", self.headers), ("withoutHeaders", self.without_headers)):
            for name in headers or {}:
                err = None if name.startswith(JWT_CLAIM_PREFIX) else header_name_error(name)
                if err:
                    problems.add((field, name), err, name)
        problems.extend(
            (),
            _l4_match_errors(self.port, self.source_labels, self.gateways, self.source_namespace),
        )
        problems.raise_if_any()
        return self


def _l4_match_errors(
    port: int | None,
    source_labels: dict[str, str] | None,
    gateways: list[str] | None,
    source_namespace: str | None,
) -> list[tuple[Loc, str]]:
    """The match conditions HTTP, TLS and TCP matches share."""
    errors: list[tuple[Loc, str]] = []
    if port and (err := port_error(port)):  # 0 means unset in protobuf
        errors.append((("port",), err))
    errors += [(("sourceLabels", *loc), msg) for loc, msg in label_map_errors(source_labels)]
    for i, gateway in enumerate(gateways or []):
        if err := gateway_name_error(gateway):
            errors.append((("gateways", i), err))
    if source_namespace and not is_dns_label(source_namespace):
        errors.append(
            (("sourceNamespace",), f"sourceNamespace match {source_namespace} is invalid")
        )
    return errors


class HTTPRouteDestination(Model):
    """A weighted destination of an HTTP route, with its own header edits."""

    destination: Destination
    weight: Int32 | None = None
    headers: Headers | None = None


class RouteDestination(Model):
    """A weighted destination of a TCP or TLS route."""

    destination: Destination
    weight: Int32 | None = None


def _weights_errors(weights: list[int | None]) -> list[tuple[Loc, str]]:
    """Istio ``validateRouteDestinations``: weights are relative, not negative, not all zero."""
    errors: list[tuple[Loc, str]] = [
        ((i, "weight"), f"weight {w} < 0") for i, w in enumerate(weights) if w is not None and w < 0
    ]
    if len(weights) > 1 and sum(w or 0 for w in weights) == 0:
        errors.append(((), "total destination weight = 0"))
    return errors


class HTTPRoute(Model):
    """An HTTP rule: matches, then forward, redirect, answer directly, or delegate."""

    name: str | None = None
    match: list[HTTPMatchRequest] | None = None
    route: list[HTTPRouteDestination] | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: MinDuration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] | None = None
    # Deprecated upstream; Istio's CRD accepts both spellings of this one field.
    mirror_percent: UInt32 | None = Field(
        default=None,
        validation_alias=AliasChoices("mirrorPercent", "mirror_percent"),
        serialization_alias="mirrorPercent",
    )
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("HTTPRoute")
        self._check_actions(problems)
        problems.extend(("headers",), headers_errors(self.headers))
        for i, dest in enumerate(self.route or []):
            problems.extend(("route", i, "headers"), headers_errors(dest.headers))
        problems.extend(("route",), _weights_errors([d.weight for d in self.route or []]))
        if self.mirror_percent is not None and self.mirror_percent > PERCENT_MAX:
            problems.add(
                ("mirrorPercent",),
                f"mirror_percent must have a max value of 100 (it has {self.mirror_percent})",
            )
        value = self.mirror_percentage.value if self.mirror_percentage else None
        if value is not None and not 0 <= value <= PERCENT_MAX:
            problems.add(
                ("mirrorPercentage", "value"),
                f"mirror_percentage must be in range 0..100 (it has {value})",
            )
        for i, mirror in enumerate(self.mirrors or []):
            value = mirror.percentage.value if mirror.percentage else None
            if value is not None and not 0 <= value <= PERCENT_MAX:
                problems.add(
                    ("mirrors", i, "percentage", "value"),
                    f"mirror percentage must be in range 0..100 (it has {value})",
                )
        self._check_authority(problems)
        problems.raise_if_any()
        return self

    def _check_actions(self, problems: Problems) -> None:
        """Istio ``validateHTTPRouteConflict``: what a route does must be unambiguous."""
        if self.delegate is not None:  # a root route may only delegate
            conflicts = [
                (self.redirect is not None, "redirect", f"root HTTP route {self.name or ''} must not specify redirect"),
                (self.route is not None, "route", f"root HTTP route {self.name or ''} must not specify route"),
            ]  # fmt: skip
        else:
            direct, redirect = self.direct_response is not None, self.redirect is not None
            conflicts = [
                (direct and bool(self.route), "directResponse", "HTTP route cannot contain both route and direct_response"),
                (direct and redirect, "directResponse", "HTTP route cannot contain both redirect and direct_response"),
                (redirect and bool(self.route), "redirect", "HTTP route cannot contain both route and redirect"),
                (redirect and self.fault is not None, "redirect", "HTTP route cannot contain both fault and redirect"),
                (redirect and self.rewrite is not None, "redirect", "HTTP route rule cannot contain both rewrite and redirect"),
            ]  # fmt: skip
            if not (redirect or direct or self.route):
                message = "HTTP route, redirect or direct_response is required"
                problems.add(("route",), message, reason=REQUIRED)
        for conflict, field, message in conflicts:
            if conflict:
                problems.add((field,), message, reason=FORBIDDEN)

    def _check_authority(self, problems: Problems) -> None:
        """Istio ``validateAuthorityRewrite``: the authority is rewritten in one place only."""
        current = self.rewrite.authority if self.rewrite else None
        request = self.headers.request if self.headers else None
        for verb in ("set", "add"):
            for name, value in (getattr(request, verb, None) or {}).items():
                if not is_authority_header(name):
                    continue
                if current:
                    problems.add(
                        ("headers", "request", verb, name),
                        f"authority header cannot be set multiple times: have {q(current)}, attempting to set {q(value)}",
                    )
                current = value


class TLSMatchAttributes(Model):
    """Conditions on a TLS connection (by SNI) for a TLS route to apply."""

    sni_hosts: list[str]
    destination_subnets: list[str] | None = None
    port: UInt32 | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class TLSRoute(Model):
    """A rule for TLS passthrough traffic."""

    match: list[TLSMatchAttributes] | None = None
    route: list[RouteDestination] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``validateTLSRoute`` (SNI hosts are checked for syntax only)."""
        problems = Problems("TLSRoute")
        if not self.match:
            problems.add(
                ("match",), "TLS route must have at least one match condition", reason=REQUIRED
            )
        for j, match in enumerate(self.match or []):
            _l4_problems(problems, ("match", j), match)
            if not match.sni_hosts:
                message = "TLS match must have at least one SNI host"
                problems.add(("match", j, "sniHosts"), message, reason=REQUIRED)
            for k, sni in enumerate(match.sni_hosts):
                if (err := wildcard_domain_error(sni)) and not is_ip(sni):
                    problems.add(("match", j, "sniHosts", k), err, sni)
        _route_problems(problems, "TLS", self.route)
        problems.raise_if_any()
        return self


class L4MatchAttributes(Model):
    """Conditions on a TCP connection for a TCP route to apply."""

    destination_subnets: list[str] | None = None
    port: UInt32 | None = None
    source_subnet: str | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class TCPRoute(Model):
    """A rule for opaque TCP traffic."""

    match: list[L4MatchAttributes] | None = None
    route: list[RouteDestination] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``validateTCPRoute``."""
        problems = Problems("TCPRoute")
        for j, match in enumerate(self.match or []):
            _l4_problems(problems, ("match", j), match)
        _route_problems(problems, "TCP", self.route)
        problems.raise_if_any()
        return self


def _route_problems(problems: Problems, what: str, route: list[RouteDestination] | None) -> None:
    if not route:
        problems.add(("route",), f"{what} route is required", reason=REQUIRED)
    problems.extend(("route",), _weights_errors([d.weight for d in route or []]))


def hosts_overlap(a: str, b: str) -> bool:
    """Istio ``host.Name.Matches``: equal, or one wildcard covers the other."""
    if a == b:
        return True
    if a.startswith("*") and b.startswith("*"):
        return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return False


def _l4_problems(
    problems: Problems, loc: Loc, match: TLSMatchAttributes | L4MatchAttributes
) -> None:
    problems.extend(
        loc,
        _l4_match_errors(match.port, match.source_labels, match.gateways, match.source_namespace),
    )
    for i, subnet in enumerate(match.destination_subnets or []):
        if err := ip_or_cidr_error(subnet):
            problems.add((*loc, "destinationSubnets", i), err, subnet)


class VirtualServiceSpec(Model):
    """How requests to a set of hosts are routed."""

    hosts: list[str] | None = None
    gateways: list[str] | None = None
    http: list[HTTPRoute] | None = None
    tls: list[TLSRoute] | None = None
    tcp: list[TCPRoute] | None = None
    export_to: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``ValidateVirtualService`` (the checks that need the whole spec)."""
        problems = Problems("VirtualService")
        delegate = not self.hosts  # a VirtualService without hosts is a delegate
        if delegate:
            for field, value, what in (
                ("gateways", self.gateways, "gateways"),
                ("tls", self.tls, "tls route"),
                ("tcp", self.tcp, "tcp route"),
            ):
                if value:
                    message = f"delegate virtual service must have no {what} specified"
                    problems.add((field,), message, reason=FORBIDDEN)
        for i, gateway in enumerate(self.gateways or []):
            if err := gateway_name_error(gateway):
                problems.add(("gateways", i), err, gateway)
        to_gateway = bool(self.gateways) and MESH_GATEWAY not in (self.gateways or [])
        self._check_hosts(problems, to_gateway)
        for i, route in enumerate(self.http or []):
            self._check_http_route(problems, i, route, delegate=delegate, to_gateway=to_gateway)
        for message in export_to_errors(self.export_to):
            problems.add(("exportTo",), message, self.export_to)
        problems.raise_if_any()
        return self

    def _check_hosts(self, problems: Problems, to_gateway: bool) -> None:
        valid = True
        for i, host in enumerate(self.hosts or []):
            err = wildcard_domain_error(host)
            if err and not is_ip(host):
                problems.add(("hosts", i), err, host)
                valid = False
            elif not to_gateway and host == "*":
                problems.add(
                    ("hosts", i),
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    host,
                )
                valid = False
        hosts = self.hosts or []
        for i in range(len(hosts) if valid else 0):
            for j in range(i + 1, len(hosts)):
                if hosts_overlap(hosts[i], hosts[j]):
                    problems.add(
                        ("hosts", j),
                        f"duplicate hosts in virtual service: {hosts[i]} & {hosts[j]}",
                        hosts[j],
                        DUPLICATE,
                    )

    def _check_http_route(
        self, problems: Problems, i: int, route: HTTPRoute, *, delegate: bool, to_gateway: bool
    ) -> None:
        if delegate and route.delegate is not None:
            problems.add(
                ("http", i, "delegate"),
                "delegate HTTP route cannot contain delegate",
                reason=FORBIDDEN,
            )
        for j, match in enumerate(route.match or []):
            where: Loc = ("http", i, "match", j)
            for field, headers in (
                ("headers", match.headers),
                ("withoutHeaders", match.without_headers),
            ):
                for name in headers or {}:
                    if name.startswith(JWT_CLAIM_PREFIX) and not to_gateway:
                        problems.add(
                            (*where, field, name),
                            f"JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{' '.join(self.gateways or [])}]",
                        )
            if delegate or route.delegate is not None:
                regexes = [
                    ("uri", match.uri),
                    ("scheme", match.scheme),
                    ("method", match.method),
                    ("authority", match.authority),
                ]
                for field, maps in (
                    ("headers", match.headers),
                    ("queryParams", match.query_params),
                    ("withoutHeaders", match.without_headers),
                ):
                    regexes += [(f"{field}.{k}", v) for k, v in (maps or {}).items()]
                for field, sm in regexes:
                    if sm is not None and sm.regex is not None:
                        problems.add(
                            (*where, *field.split(".", 1)),
                            f"{field} match does not support regex match for delegating",
                            sm.regex,
                        )


class VirtualService(Resource):
    """Routing rules for traffic to a set of hosts (networking.istio.io VirtualService)."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["VirtualService"] = "VirtualService"
    spec: VirtualServiceSpec
    status: IstioStatus | None = None


register_istio(VirtualService, "virtualservices", ("vs",))
