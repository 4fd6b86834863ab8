"""One VirtualService ``http[]`` entry into a compiled ``Route``, as Istio translates it for Envoy.

What lives here: the translation of each HTTPRoute field (match blocks,
destinations and weights, redirect, direct response, rewrite, timeout,
retries, fault, mirrors, CORS, header operations) into the plain values of
``table``. ``compile`` decides which VirtualService applies where; this module
only translates.

Kept from Istio (pilot ``route.go`` / ``retry.go``):

* Match conditions that depend on the proxy, not the request (``gateways``,
  ``port``, ``sourceLabels``, ``sourceNamespace``) are settled here: a block
  that cannot match this proxy and port is dropped, and a route whose blocks
  are all dropped is dropped.
* A header match with no value (``{}``) is a presence match; ``ignoreUriCase``
  applies to exact and prefix URI matches only; regexes are anchored at
  both ends (RE2 ``FullMatch``).
* One destination without a weight gets all the traffic. (When several
  destinations all lack weights, meshwork splits evenly where Envoy would
  refuse the configuration.)
* Destination port: the one named, else the service's only port, else the
  port the request came in on.
* Retries: no ``retries`` field means Istio's default policy (2 attempts on
  connect-failure, refused-stream, unavailable, cancelled and 503);
  ``attempts: 0`` disables retries; status codes in ``retryOn`` become
  ``retriable-status-codes``.
* Fault percentages default to 0 (the deprecated integer ``percent`` is read
  when ``percentage`` is absent).
* ``mirrorPercentage`` (or the deprecated ``mirrorPercent``) defaults to 100.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshwork.core.mesh.hosts import resolve_host, seconds
from meshwork.core.mesh.table import (
    DEFAULT_RETRY,
    NO_HEADERS,
    NO_RETRY,
    Cors,
    DirectResponse,
    Fault,
    HeaderOps,
    HeaderPolicy,
    MatchBlock,
    Mirror,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    StringMatcher,
    WeightedDestination,
    cluster_name,
)
from meshwork.model.istio import Destination, Percent, StringMatch
from meshwork.model.istio_http import (
    CorsPolicy,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPRetry,
)
from meshwork.model.istio_routing import HTTPMatchRequest, HTTPRoute, VirtualService

PortOf = Callable[[str], int | None]
"""The only port of a service host (None when it has several or is unknown)."""


@dataclass(frozen=True, slots=True)
class Context:
    """Where a route is being compiled: which proxy, gateway and listener port."""

    gateway: str  # "mesh" for sidecars, "namespace/name" for a gateway
    port: int
    namespace: str  # the proxy's namespace
    labels: Mapping[str, str]
    domain: str
    only_port: PortOf


def string_matcher(match: StringMatch, *, ignore_case: bool = False) -> StringMatcher:
    if match.regex is not None:
        flags = re.IGNORECASE if ignore_case else 0
        return StringMatcher("regex", match.regex, re.compile(match.regex, flags))
    if match.exact is not None:
        value = match.exact.lower() if ignore_case else match.exact
        return StringMatcher("exact", value, ignore_case=ignore_case)
    if match.prefix is not None:
        value = match.prefix.lower() if ignore_case else match.prefix
        return StringMatcher("prefix", value, ignore_case=ignore_case)
    return StringMatcher("present")


def _header_matchers(raw: dict[str, StringMatch] | None) -> tuple[tuple[str, StringMatcher], ...]:
    return tuple((name.lower(), string_matcher(m)) for name, m in (raw or {}).items())


def resolve_gateway(name: str, namespace: str) -> str:
    """Istio's gateway reference: ``mesh``, ``ns/name``, ``name.ns`` or a name in ``namespace``."""
    if name == "mesh":
        return name
    if "/" in name:
        ns, _, gw = name.partition("/")
        return f"{namespace if ns == '.' else ns}/{gw}"
    if "." in name:
        gw, _, ns = name.partition(".")
        return f"{ns.split('.')[0]}/{gw}"
    return f"{namespace}/{name}"


def _block_applies(m: HTTPMatchRequest, vs: VirtualService, ctx: Context) -> bool:
    ns = vs.metadata.namespace or "default"
    gateways = m.gateways or vs.spec.gateways or ["mesh"]
    if ctx.gateway not in {resolve_gateway(g, ns) for g in gateways}:
        return False
    if m.port is not None and m.port != ctx.port:
        return False
    if m.source_labels and not _subset(m.source_labels, ctx.labels):
        return False
    return not (m.source_namespace and m.source_namespace != ctx.namespace)


def _subset(want: Mapping[str, str], have: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _block(m: HTTPMatchRequest) -> MatchBlock:
    return MatchBlock(
        name=m.name or "",
        uri=string_matcher(m.uri, ignore_case=bool(m.ignore_uri_case)) if m.uri else None,
        scheme=string_matcher(m.scheme) if m.scheme else None,
        method=string_matcher(m.method) if m.method else None,
        authority=string_matcher(m.authority) if m.authority else None,
        headers=_header_matchers(m.headers),
        without_headers=_header_matchers(m.without_headers),
        query_params=_header_matchers(m.query_params),
    )


def _ops(raw: HeaderOperations | None) -> HeaderOps:
    if raw is None:
        return HeaderOps()
    return HeaderOps(
        set=tuple((k.lower(), v) for k, v in (raw.set or {}).items()),
        add=tuple((k.lower(), v) for k, v in (raw.add or {}).items()),
        remove=tuple(k.lower() for k in raw.remove or []),
    )


def header_policy(raw: Headers | None) -> HeaderPolicy:
    if raw is None:
        return NO_HEADERS
    return HeaderPolicy(request=_ops(raw.request), response=_ops(raw.response))


def _percent(p: Percent | None, legacy: int | None = None, default: float = 0.0) -> float:
    if p is not None and p.value is not None:
        return float(p.value)
    if legacy is not None:
        return float(legacy)
    return default


def retry_policy(raw: HTTPRetry | None) -> RetryPolicy:
    """Istio ``retry.ConvertPolicy``."""
    if raw is None:
        return DEFAULT_RETRY
    if not raw.attempts or raw.attempts <= 0:
        return NO_RETRY
    retry_on, codes = DEFAULT_RETRY.retry_on, DEFAULT_RETRY.status_codes
    if raw.retry_on:
        conditions: set[str] = set()
        found: set[int] = set()
        for item in raw.retry_on.split(","):
            item = item.strip()
            if item.isdigit():
                found.add(int(item))
            elif item:
                conditions.add(item)
        if found:
            conditions.add("retriable-status-codes")
        retry_on, codes = frozenset(conditions), frozenset(found)
    return RetryPolicy(
        attempts=raw.attempts,
        retry_on=retry_on,
        status_codes=codes,
        per_try_timeout=seconds(raw.per_try_timeout),
        backoff_base=seconds(raw.backoff) or DEFAULT_RETRY.backoff_base,
    )


def _fault(raw: HTTPFaultInjection | None) -> Fault | None:
    if raw is None:
        return None
    delay = raw.delay
    abort = raw.abort
    return Fault(
        delay=seconds(delay.fixed_delay) if delay else None,
        delay_percent=_percent(delay.percentage, delay.percent) if delay else 0.0,
        abort_status=abort.http_status if abort else None,
        abort_grpc=abort.grpc_status if abort else None,
        abort_percent=_percent(abort.percentage) if abort else 0.0,
    )


def _cors(raw: CorsPolicy | None) -> Cors | None:
    if raw is None:
        return None
    origins = [string_matcher(m) for m in raw.allow_origins or []]
    origins += [StringMatcher("exact", o) for o in raw.allow_origin or []]
    max_age = seconds(raw.max_age)
    return Cors(
        origins=tuple(origins),
        allow_methods=",".join(raw.allow_methods or []),
        allow_headers=",".join(raw.allow_headers or []),
        expose_headers=",".join(raw.expose_headers or []),
        max_age=str(int(max_age)) if max_age is not None else "",
        allow_credentials=bool(raw.allow_credentials),
        unmatched_preflights=raw.unmatched_preflights or "FORWARD",
    )


def _target(dest: Destination, vs_ns: str, ctx: Context) -> tuple[str, int, str | None, str]:
    host = resolve_host(dest.host, vs_ns, ctx.domain)
    port = (dest.port.number if dest.port else None) or ctx.only_port(host) or ctx.port
    return host, port, dest.subset, cluster_name(port, dest.subset, host)


def compile_route(vs: VirtualService, index: int, http: HTTPRoute, ctx: Context) -> Route | None:
    """The compiled route, or None when none of its match blocks can match this proxy and port."""
    ns = vs.metadata.namespace or "default"
    if http.match:
        blocks = tuple(_block(m) for m in http.match if _block_applies(m, vs, ctx))
        if not blocks:
            return None
    else:
        gateways = vs.spec.gateways or ["mesh"]
        if ctx.gateway not in {resolve_gateway(g, ns) for g in gateways}:
            return None
        blocks = ()
    weighted = list(http.route or [])
    weights = [d.weight or 0 for d in weighted]
    if len(weighted) == 1 and not weights[0]:
        weights = [100]
    elif weighted and not any(weights):
        weights = [1] * len(weighted)
    destinations = []
    for d, weight in zip(weighted, weights, strict=True):
        host, port, subset, cluster = _target(d.destination, ns, ctx)
        destinations.append(
            WeightedDestination(cluster, host, port, subset, weight, header_policy(d.headers))
        )
    mirrors = []
    if http.mirror is not None:
        host, port, subset, cluster = _target(http.mirror, ns, ctx)
        pct = _percent(http.mirror_percentage, http.mirror_percent, 100.0)
        mirrors.append(Mirror(cluster, host, port, subset, pct))
    for mp in http.mirrors or []:
        host, port, subset, cluster = _target(mp.destination, ns, ctx)
        mirrors.append(Mirror(cluster, host, port, subset, _percent(mp.percentage, None, 100.0)))
    redirect = None
    if http.redirect is not None:
        r = http.redirect
        redirect = Redirect(
            r.uri, r.authority, r.port, r.derive_port, r.scheme, r.redirect_code or 301
        )
    direct = None
    if http.direct_response is not None:
        body = http.direct_response.body
        text = (body.string or "").encode() if body and body.string is not None else b""
        if body and body.bytes is not None:
            text = base64.b64decode(body.bytes)
        direct = DirectResponse(http.direct_response.status, text)
    rewrite = None
    if http.rewrite is not None:
        rw = http.rewrite
        rx = rw.uri_regex_rewrite
        rewrite = Rewrite(
            uri=rw.uri,
            regex=re.compile(rx.match) if rx and rx.match else None,
            regex_substitution=(rx.rewrite or "") if rx else "",  # RE2's \1 is Python's too
            authority=rw.authority,
        )
    return Route(
        name=http.name or f"{ns}/{vs.metadata.name}.{index}",
        virtual_service=f"{ns}/{vs.metadata.name}",
        matches=blocks,
        destinations=tuple(destinations),
        total_weight=sum(weights),
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        timeout=seconds(http.timeout) or None,
        retry=retry_policy(http.retries),
        fault=_fault(http.fault),
        mirrors=tuple(mirrors),
        cors=_cors(http.cors_policy),
        headers=header_policy(http.headers),
    )


def default_route(host: str, port: int) -> Route:
    """The route Istio gives a service no VirtualService covers."""
    cluster = cluster_name(port, None, host)
    return Route(
        name="default",
        virtual_service="",
        destinations=(WeightedDestination(cluster, host, port, None, 100),),
        total_weight=100,
    )
