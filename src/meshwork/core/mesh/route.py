"""Routing one request with a compiled table: which route, which destination, what to do.

What lives here: ``Request`` (what the proxy parsed), ``match_route`` (table
and request in, ``RouteDecision`` out), ``retry_on`` and ``retry_backoff``
(whether and when to try again), and small helpers the proxy applies the
decision with (``apply_header_ops``, ``shadow_authority``, ``hash_input``).
Randomness (weighted choice, fault and mirror percentages) comes from a
``random.Random`` the caller owns, so a seeded one replays a decision.

Kept from Envoy/Istio:

* Virtual host by the request's host (port stripped): exact domain, then the
  longest wildcard, then ``*``. Routes are tried in order; the first whose
  match blocks match wins. Match blocks are ORed, their conditions ANDed; no
  block matches everything. No virtual host or no route is a 404 with flag
  ``NR`` (a sidecar passes an unknown host through instead, as Istio's
  ``ALLOW_ANY`` does).
* URI matches look at the path without the query string. Header names are
  case-insensitive; ``:authority``, ``:method``, ``:path`` and ``:scheme``
  match the pseudo-headers. ``withoutHeaders`` matches when the header is
  absent or does not match. Query parameters are matched raw (not
  percent-decoded), the first occurrence of a name counting.
* Filter order: CORS (a preflight from an allowed origin is answered at
  once), then fault (delay, then abort), then redirect or direct response,
  then the weighted pick of a destination.
* Redirect: ``uri`` replaces the path (the query is kept unless the new URI
  has one), ``authority`` the host, ``port`` the port, ``scheme`` the
  scheme; code 301 unless ``redirectCode`` says otherwise.
* Rewrite ``uri`` replaces the part the route matched: a prefix match's
  prefix, an exact or regex match's whole path, ``/`` for a route without a
  URI match (Envoy's ``prefix_rewrite``); ``uriRegexRewrite`` substitutes every
  match in the path.
* Header operations apply route-level first, then destination-level, so the
  more specific wins (Istio sets ``most_specific_header_mutations_wins``).
* Retry conditions are Envoy's (see ``retry_on``); the back-off is Envoy's
  fully jittered exponential one, capped at ten base intervals.
* Mirrored requests go to the mirror cluster with ``-shadow`` appended to the
  host, and their answers are ignored (the proxy's part).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshwork.core.mesh.flags import local_reply
from meshwork.core.mesh.hosts import strip_port
from meshwork.core.mesh.lb import HashInput, parse_cookies
from meshwork.core.mesh.table import (
    NO_RETRY,
    Cluster,
    Cors,
    HeaderOps,
    MatchBlock,
    Mirror,
    Redirect,
    RetryPolicy,
    Route,
    RoutingTable,
    StringMatcher,
    VirtualHost,
    WeightedDestination,
)

Action = Literal["forward", "redirect", "direct", "preflight", "reply"]
ErrorKind = Literal["connect_failure", "reset", "timeout", "refused_stream"]
MAX_BACKOFF_FACTOR = 10  # Envoy: max_interval defaults to 10 x base_interval


@dataclass(frozen=True, slots=True)
class Request:
    """What routing reads from a request. Header names lower-case, repeats joined by ``,``."""

    method: str
    path: str  # as on the request line: path and query
    authority: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # The port the request is for: on a sidecar's outbound listener the service port
    # named in the authority (``request_port``), on a gateway the listener's port.
    port: int = 80
    scheme: str = "http"

    @property
    def path_only(self) -> str:
        return self.path.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        query = self.path.partition("?")[2]
        for part in query.split("&") if query else ():
            name, _, value = part.partition("=")
            out.setdefault(name, value)
        return out

    def header(self, name: str) -> str | None:
        if name.startswith(":"):
            return {
                ":authority": self.authority,
                ":method": self.method,
                ":path": self.path,
                ":scheme": self.scheme,
            }.get(name)
        if name == "host":
            return self.authority
        return self.headers.get(name)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What the proxy does with the request. ``reply`` actions carry status, body and flags.

    Decisions are immutable and may be shared between requests: a plain route
    (no CORS, fault, redirect, rewrite or mirror) hands every request routed
    to the same destination the same object, built once per routing table.
    ``path`` and ``authority`` are None unless a rewrite changed them.
    """

    action: Action
    route: Route | None = None
    virtual_host: VirtualHost | None = None
    destination: WeightedDestination | None = None
    cluster: Cluster | None = None
    passthrough: bool = False  # forward to the address the client asked for
    path: str | None = None  # the rewritten path and query; None: send the request's own
    authority: str | None = None  # the rewritten authority; None: send the request's own
    status: int = 200
    body: bytes = b""
    flags: tuple[str, ...] = ()
    reason: str = ""
    location: str | None = None
    delay: float = 0.0  # seconds to wait first (fault injection)
    timeout: float | None = None
    retry: RetryPolicy = NO_RETRY
    mirrors: tuple[Mirror, ...] = ()
    request_headers: tuple[HeaderOps, ...] = ()
    response_headers: tuple[HeaderOps, ...] = ()
    response_extra: tuple[tuple[str, str], ...] = ()  # added to the answer (CORS, redirect)
    misses: tuple[str, ...] = ()  # with explain=True: why each earlier route did not match


def request_port(authority: str, scheme: str = "http") -> int:
    """The port an authority names, else the scheme's default (how a sidecar keys routes)."""
    _, port = strip_port(authority)
    if port is not None:
        return port
    return 443 if scheme == "https" else 80


def _matcher_ok(m: StringMatcher | None, value: str | None) -> bool:
    return m is None or (value is not None and m.matches(value))


def block_miss(
    block: MatchBlock, req: Request, query: Mapping[str, str] | None = None
) -> str | None:
    """Why ``block`` does not match ``req`` (None when it matches)."""
    if block.uri is not None and not block.uri.matches(req.path_only):
        return f"uri {req.path_only!r} is not {block.uri.describe()}"
    if not _matcher_ok(block.method, req.method):
        return f"method {req.method} is not {block.method.describe() if block.method else ''}"
    if not _matcher_ok(block.authority, req.authority):
        return f"authority {req.authority!r} does not match"
    if not _matcher_ok(block.scheme, req.scheme):
        return f"scheme {req.scheme!r} does not match"
    for name, m in block.headers:
        value = req.header(name)
        if value is None:
            return f"header {name} is absent"
        if not m.matches(value):
            return f"header {name}: {value!r} is not {m.describe()}"
    for name, m in block.without_headers:
        value = req.header(name)
        if value is not None and m.matches(value):
            return f"header {name} is present and matches withoutHeaders"
    if block.query_params:
        params = req.query if query is None else query
        for name, m in block.query_params:
            value = params.get(name)
            if value is None:
                return f"query parameter {name} is absent"
            if not m.matches(value):
                return f"query parameter {name}: {value!r} is not {m.describe()}"
    return None


def block_matches(block: MatchBlock, req: Request, query: Mapping[str, str]) -> bool:
    """Whether every condition of ``block`` holds (the hot path; ``block_miss`` explains)."""
    if block.uri is not None and not block.uri.matches(req.path_only):
        return False
    if block.method is not None and not block.method.matches(req.method):
        return False
    if block.authority is not None and not block.authority.matches(req.authority):
        return False
    if block.scheme is not None and not block.scheme.matches(req.scheme):
        return False
    for name, m in block.headers:
        value = req.header(name)
        if value is None or not m.matches(value):
            return False
    for name, m in block.without_headers:
        value = req.header(name)
        if value is not None and m.matches(value):
            return False
    for name, m in block.query_params:
        value = query.get(name)
        if value is None or not m.matches(value):
            return False
    return True


def route_matches(route: Route, req: Request) -> MatchBlock | Literal[False] | None:
    """The first block of ``route`` that matches (None for a route without blocks), or False."""
    if not route.matches:
        return None
    query = req.query if any(b.query_params for b in route.matches) else {}
    for block in route.matches:
        if block_matches(block, req, query):
            return block
    return False


def pick_weighted(destinations: Sequence[WeightedDestination], draw: float) -> WeightedDestination:
    """The destination ``draw`` (in [0, 1)) falls on, each owning a share equal to its weight.

    As Envoy: a ticket in ``[0, total weight)`` is taken, and each destination
    owns the next ``weight`` tickets in order.
    """
    total = sum(d.weight for d in destinations)
    ticket = min(int(draw * total), total - 1)
    for d in destinations:
        if ticket < d.weight:
            return d
        ticket -= d.weight
    return destinations[-1]


_PASSTHROUGH = RouteDecision("forward", passthrough=True, reason="passthrough (ALLOW_ANY)")


def _reply(
    flag: str,
    detail: str,
    *,
    route: Route | None = None,
    virtual_host: VirtualHost | None = None,
    destination: WeightedDestination | None = None,
    misses: tuple[str, ...] = (),
) -> RouteDecision:
    lr = local_reply(flag, detail)
    return RouteDecision(
        "reply",
        route=route,
        virtual_host=virtual_host,
        destination=destination,
        status=lr.status,
        body=lr.body,
        flags=(flag,),
        reason=lr.reason,
        misses=misses,
    )


def _origin_allowed(cors: Cors, origin: str) -> bool:
    return any(m.matches(origin) or (m.kind == "exact" and m.value == "*") for m in cors.origins)


def _cors_preflight(cors: Cors, origin: str) -> tuple[tuple[str, str], ...]:
    out = [("access-control-allow-origin", origin)]
    if cors.allow_methods:
        out.append(("access-control-allow-methods", cors.allow_methods))
    if cors.allow_headers:
        out.append(("access-control-allow-headers", cors.allow_headers))
    if cors.max_age:
        out.append(("access-control-max-age", cors.max_age))
    if cors.allow_credentials:
        out.append(("access-control-allow-credentials", "true"))
    return tuple(out)


def _cors_simple(cors: Cors, origin: str) -> tuple[tuple[str, str], ...]:
    out = [("access-control-allow-origin", origin)]
    if cors.allow_credentials:
        out.append(("access-control-allow-credentials", "true"))
    if cors.expose_headers:
        out.append(("access-control-expose-headers", cors.expose_headers))
    return tuple(out)


def redirect_location(r: Redirect, req: Request) -> str:
    """The ``location`` of an Istio redirect."""
    scheme = r.scheme or req.scheme
    host, port = strip_port(req.authority)
    if r.authority:
        host, given = strip_port(r.authority)
        port = given if given is not None else port
    if r.port:
        port = r.port
    elif r.derive_port == "FROM_REQUEST_PORT":
        port = req.port
    elif r.derive_port == "FROM_PROTOCOL_DEFAULT":
        port = None
    if port is not None and (scheme, port) in (("http", 80), ("https", 443)):
        port = None
    elif r.scheme and r.scheme != req.scheme and port in (80, 443):
        port = None  # Envoy drops the old scheme's default port on a scheme change
    path = req.path
    if r.uri is not None:
        path = (
            r.uri
            if "?" in r.uri
            else r.uri + (("?" + req.path.partition("?")[2]) if "?" in req.path else "")
        )
    authority = host if port is None else f"{host}:{port}"
    return f"{scheme}://{authority}{path}"


def rewrite_path(route: Route, block: MatchBlock | None, req: Request) -> str:
    """The path after ``rewrite`` (Envoy ``prefix_rewrite`` / ``regex_rewrite``)."""
    rw = route.rewrite
    if rw is None:
        return req.path
    path, q, query = req.path.partition("?")
    if rw.uri is not None:
        uri = block.uri if block is not None else None
        if uri is None:
            matched = 1 if path.startswith("/") else 0
        elif uri.kind == "prefix":
            matched = len(uri.value)
        else:
            matched = len(path)
        path = rw.uri + path[matched:]
    elif rw.regex is not None:
        path = rw.regex.sub(rw.regex_substitution, path)
    return path + q + query


def match_route(
    table: RoutingTable, req: Request, rng: random.Random, *, explain: bool = False
) -> RouteDecision:
    """Route ``req``: the decision the proxy carries out."""
    routes = table.ports.get(req.port)
    host, _ = strip_port(req.authority)
    vh = routes.lookup(host) if routes is not None else None
    if vh is None:
        if table.role == "sidecar" and table.allow_any:
            return _PASSTHROUGH
        return _reply("NR", f"no virtual host for {host or '(no host)'} on port {req.port}")
    misses: list[str] = []
    chosen: Route | None = None
    block: MatchBlock | None = None
    for route in vh.routes:
        found = route_matches(route, req)
        if found is not False:
            chosen, block = route, found
            break
        if explain:
            reasons = [block_miss(b, req) or "" for b in route.matches]
            misses.append(f"{route.name}: " + "; or ".join(reasons))
    if chosen is None:
        return _reply("NR", f"no route of {vh.name} matched", virtual_host=vh, misses=tuple(misses))
    return _decide(table, vh, chosen, block, req, rng, tuple(misses))


def _decide(
    table: RoutingTable,
    vh: VirtualHost,
    route: Route,
    block: MatchBlock | None,
    req: Request,
    rng: random.Random,
    misses: tuple[str, ...],
) -> RouteDecision:
    if (
        route.cors is None
        and route.fault is None
        and route.redirect is None
        and route.direct_response is None
        and route.rewrite is None
        and not route.mirrors
        and not misses
        and route.destinations
    ):
        dests = route.destinations
        dest = dests[0] if len(dests) == 1 else pick_weighted(dests, rng.random())
        key = (id(vh), id(dest))
        cached = table.decisions.get(key)
        if cached is None:
            cached = _forward(table, vh, route, dest, None, None, (), 0.0, (), (), misses)
            table.decisions[key] = cached
        return cached
    extra: tuple[tuple[str, str], ...] = ()
    origin = req.header("origin") if route.cors is not None else None
    if route.cors is not None and origin is not None:
        allowed = _origin_allowed(route.cors, origin)
        preflight = req.method == "OPTIONS" and req.header("access-control-request-method")
        if preflight and allowed:
            return RouteDecision(
                "preflight",
                route=route,
                virtual_host=vh,
                status=200,
                response_extra=_cors_preflight(route.cors, origin),
                reason="CORS preflight answered",
                misses=misses,
            )
        if allowed:
            extra = _cors_simple(route.cors, origin)
    delay = 0.0
    flags: list[str] = []
    fault = route.fault
    if fault is not None:
        if fault.delay and rng.random() * 100 < fault.delay_percent:
            delay = fault.delay
            flags.append("DI")
        if fault.abort_status is not None and rng.random() * 100 < fault.abort_percent:
            lr = local_reply("FI", f"route {route.name}", status=fault.abort_status)
            return RouteDecision(
                "reply",
                route=route,
                virtual_host=vh,
                status=lr.status,
                body=lr.body,
                flags=(*flags, "FI"),
                reason=lr.reason,
                delay=delay,
                misses=misses,
            )
    if route.redirect is not None:
        location = redirect_location(route.redirect, req)
        return RouteDecision(
            "redirect",
            status=route.redirect.code,
            location=location,
            flags=tuple(flags),
            response_extra=(("location", location), *extra),
            reason=f"redirected by {route.name}",
            route=route,
            virtual_host=vh,
            delay=delay,
            misses=misses,
        )
    if route.direct_response is not None:
        return RouteDecision(
            "direct",
            status=route.direct_response.status,
            body=route.direct_response.body,
            flags=tuple(flags),
            response_extra=extra,
            reason=f"direct response of {route.name}",
            route=route,
            virtual_host=vh,
            delay=delay,
            misses=misses,
        )
    if not route.destinations:
        return _reply("NR", f"route {route.name} has no destination", route=route, virtual_host=vh)
    dest = pick_weighted(route.destinations, rng.random())
    mirrors = tuple(m for m in route.mirrors if rng.random() * 100 < m.percent)
    rw = route.rewrite
    path = rewrite_path(route, block, req) if rw is not None else None
    authority = rw.authority if rw is not None and rw.authority else None
    return _forward(
        table, vh, route, dest, path, authority, tuple(flags), delay, mirrors, extra, misses
    )


def _forward(
    table: RoutingTable,
    vh: VirtualHost,
    route: Route,
    dest: WeightedDestination,
    path: str | None,
    authority: str | None,
    flags: tuple[str, ...],
    delay: float,
    mirrors: tuple[Mirror, ...],
    extra: tuple[tuple[str, str], ...],
    misses: tuple[str, ...],
) -> RouteDecision:
    cluster = table.clusters.get(dest.cluster)
    if cluster is None:
        return _reply("NC", dest.cluster, route=route, virtual_host=vh, destination=dest)
    return RouteDecision(
        "forward",
        destination=dest,
        cluster=cluster,
        path=path,
        authority=authority,
        flags=flags,
        timeout=route.timeout,
        retry=route.retry,
        mirrors=mirrors,
        request_headers=tuple(o for o in (route.headers.request, dest.headers.request) if o),
        response_headers=tuple(o for o in (route.headers.response, dest.headers.response) if o),
        response_extra=extra,
        reason=f"{route.name} -> {dest.cluster}",
        route=route,
        virtual_host=vh,
        delay=delay,
        misses=misses,
    )


def match_tcp(table: RoutingTable, port: int, host: str, rng: random.Random) -> RouteDecision:
    """Route a TCP connection to ``port`` for ``host`` (the CONNECT target or cluster IP)."""
    routes = table.tcp.get(port, {})
    route = routes.get(host.lower()) or routes.get("*")
    if route is None:
        if table.role == "sidecar" and table.allow_any:
            return _PASSTHROUGH
        return _reply("NR", f"no TCP route for {host or '*'} on port {port}")
    dest = pick_weighted(route.destinations, rng.random()) if route.destinations else None
    cluster = table.clusters.get(dest.cluster) if dest is not None else None
    if dest is None or cluster is None:
        return _reply("NC", dest.cluster if dest else route.name, destination=dest)
    return RouteDecision(
        "forward", destination=dest, cluster=cluster, reason=f"{route.name} -> {dest.cluster}"
    )


# -- retries --

_ON_CONNECT_FAILURE = frozenset({"5xx", "gateway-error", "reset", "connect-failure"})
_ON_RESET = frozenset({"5xx", "gateway-error", "reset"})
_ON_REFUSED = frozenset({"5xx", "gateway-error", "reset", "refused-stream"})


def retry_on(policy: RetryPolicy, outcome: int | str) -> bool:
    """Whether Envoy retries this outcome (a status code or an error kind) under ``policy``.

    Status codes: ``5xx`` any 5xx; ``gateway-error`` 502, 503, 504;
    ``retriable-4xx`` 409; ``retriable-status-codes`` the listed codes.
    Errors: ``connect_failure`` (retried by connect-failure, reset, 5xx,
    gateway-error), ``reset`` (reset, 5xx, gateway-error), ``timeout`` of one
    try (the same three; the route's overall timeout is never retried) and
    ``refused_stream`` (refused-stream too). gRPC conditions (unavailable,
    cancelled, ...) read ``grpc-status``, which is not an outcome here.
    """
    if policy.attempts <= 0:
        return False
    on = policy.retry_on
    if isinstance(outcome, int):
        if "5xx" in on and 500 <= outcome <= 599:
            return True
        if "gateway-error" in on and outcome in (502, 503, 504):
            return True
        if "retriable-4xx" in on and outcome == 409:
            return True
        return "retriable-status-codes" in on and outcome in policy.status_codes
    if outcome == "connect_failure":
        return not on.isdisjoint(_ON_CONNECT_FAILURE)
    if outcome in ("reset", "timeout"):
        return not on.isdisjoint(_ON_RESET)
    if outcome == "refused_stream":
        return not on.isdisjoint(_ON_REFUSED)
    return False


def retry_backoff(policy: RetryPolicy, retry: int, draw: float) -> float:
    """Seconds to wait before retry number ``retry`` (1-based); ``draw`` in [0, 1)."""
    base = policy.backoff_base
    ceiling = min(float(2**retry - 1) * base, MAX_BACKOFF_FACTOR * base)
    return draw * ceiling


# -- helpers for carrying out a decision --


def apply_header_ops(
    headers: Sequence[tuple[str, str]], ops: Sequence[HeaderOps]
) -> list[tuple[str, str]]:
    """``headers`` after each ``HeaderOps`` in turn (remove, then set, then add)."""
    out = list(headers)
    for op in ops:
        drop = set(op.remove) | {name for name, _ in op.set}
        if drop:
            out = [(n, v) for n, v in out if n.lower() not in drop]
        out.extend(op.set)
        out.extend(op.add)
    return out


def shadow_authority(authority: str) -> str:
    """Envoy's host for a mirrored request: ``-shadow`` after the host name."""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and not authority.endswith("]"):
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


def hash_input(req: Request, source_ip: str = "") -> HashInput:
    """What a consistent-hash load balancer may read from ``req``."""
    cookie = req.headers.get("cookie")
    return HashInput(
        headers=req.headers,
        cookies=parse_cookies(cookie) if cookie else {},
        source_ip=source_ip,
        query=req.query,
    )
