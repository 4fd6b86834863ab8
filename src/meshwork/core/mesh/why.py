"""``meshwork why``: what the mesh does with one request, explained without sending it. Pure.

What lives here: ``explain(table, request, draw)`` runs the same
``match_route`` the proxy runs (with ``explain=True``), with the random
draws pinned so the answer is reproducible, and turns the decision into
lines a person reads: the listener and virtual host, the route that matched
and why each earlier one did not, the destination cluster and the
DestinationRule policy that shapes it (load balancer, connection pool,
outlier detection, TLS mode), the endpoints, timeout and retries, fault
injection, mirroring, rewrites and header edits. ``verdict`` is a one-word
summary tests compare with what the proxy really did.

Randomness: weighted choice and fault/mirror percentages depend on a draw;
``explain`` reports the route's whole weight table and each percentage, and
the pinned draw decides the one example shown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshwork.core.mesh.route import Request, RouteDecision, match_route
from meshwork.core.mesh.table import Cluster, RoutingTable
from meshwork.core.security.attributes import RequestAttributes
from meshwork.core.security.authz import Authorizer

OUTBOUND_PORT = 15001


class _Pinned(random.Random):
    """A Random whose draws are all ``value``: "what happens to a typical request"."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass(frozen=True, slots=True)
class Explanation:
    verdict: str  # "forward", "fault-abort", "redirect", "direct", "no-route", "passthrough", "preflight"
    lines: list[str] = field(default_factory=list)
    decision: RouteDecision | None = None


def _cluster_lines(c: Cluster) -> list[str]:
    out = [f"cluster {c.name}"]
    if c.destination_rule:
        out.append(f"  DestinationRule {c.destination_rule}")
    lb = c.lb
    hp = lb.hash_policy
    hashing = f" (hash on {hp.on} {hp.name})".replace(" )", ")") if hp is not None else ""
    out.append(f"  load balancer {lb.policy}{hashing}")
    p = c.pool
    limits = []
    if p.max_connections < 2**31:
        limits.append(f"maxConnections {p.max_connections}")
    if p.max_pending < 2**31:
        limits.append(f"http1MaxPendingRequests {p.max_pending}")
    if p.max_requests_per_connection:
        limits.append(f"maxRequestsPerConnection {p.max_requests_per_connection}")
    out.append("  connection pool " + (", ".join(limits) if limits else "unlimited (Istio's default)"))
    if c.outlier is not None:
        o = c.outlier
        out.append(f"  outlier detection: eject after {o.consecutive_5xx} consecutive 5xx"
                   f"{f' or {o.consecutive_gateway} gateway errors' if o.consecutive_gateway else ''}, "
                   f"for {o.base_ejection:g}s x times ejected, at most {o.max_ejection_percent:g}% of hosts")  # fmt: skip
    else:
        out.append("  outlier detection: off")
    if c.tls_mode:
        out.append(f"  TLS mode {c.tls_mode}")
    if c.endpoints:
        out.append(f"  endpoints ({len(c.endpoints)}): " + ", ".join(
            f"{e.key}{f' ({e.name})' if e.name else ''}" for e in c.endpoints))  # fmt: skip
    else:
        out.append("  endpoints: none -> 503 'no healthy upstream' (UH)")
    return out


def explain(table: RoutingTable, req: Request, draw: float = 0.0) -> Explanation:
    """Explain ``req`` (``draw`` in [0, 1) pins weighted and percentage choices)."""
    d = match_route(table, req, _Pinned(draw), explain=True)
    lines = [f"{req.method} {req.authority}{req.path} (port {req.port})",
             f"listener {'0.0.0.0' if table.role == 'gateway' else 'outbound'}:"
             f"{req.port if table.role == 'gateway' else OUTBOUND_PORT} ({table.role})"]  # fmt: skip
    if d.virtual_host is not None:
        lines.append(f"virtual host {d.virtual_host.name}")
    for miss in d.misses:
        lines.append(f"  skipped route {miss}")
    if d.passthrough:
        lines.append("no service or VirtualService claims this host: passed through as is (ALLOW_ANY)")
        return Explanation("passthrough", lines, d)
    route = d.route
    if route is not None:
        source = f"VirtualService {route.virtual_service}" if route.virtual_service else "the service's default route"
        lines.append(f"route {route.name} of {source}")
    if d.action == "reply":
        if "NR" in d.flags:
            lines.append(f"no route: {d.status} NR ({d.reason})")
            return Explanation("no-route", lines, d)
        if "FI" in d.flags:
            fault = route.fault if route is not None else None
            pct = f" for {fault.abort_percent:g}% of requests" if fault else ""
            lines.append(f"fault injection aborts with {d.status}{pct} (flag FI); this draw is aborted")
            return Explanation("fault-abort", lines, d)
        lines.append(f"answered locally: {d.status} {d.reason}".rstrip())
        return Explanation("direct", lines, d)
    if d.action == "redirect":
        lines.append(f"redirect {d.status} to {d.location}")
        return Explanation("redirect", lines, d)
    if d.action == "preflight":
        lines.append("CORS preflight from an allowed origin: answered by the proxy")
        return Explanation("preflight", lines, d)
    if d.action == "direct":
        lines.append(f"direct response {d.status}")
        return Explanation("direct", lines, d)
    if route is not None and len(route.destinations) > 1:
        lines.append("weights: " + ", ".join(
            f"{w.cluster} {w.weight}" for w in route.destinations))  # fmt: skip
        lines.append(f"picked for this draw: {d.destination.cluster if d.destination else '?'}")
    if d.cluster is not None:
        lines += _cluster_lines(d.cluster)
    if d.path is not None or d.authority is not None:
        lines.append(f"rewritten to {d.authority or req.authority}{d.path or req.path}")
    if any(d.request_headers):
        lines.append("request headers edited: " + "; ".join(
            ", ".join([*(f"set {n}" for n, _ in o.set), *(f"add {n}" for n, _ in o.add),
                       *(f"remove {n}" for n in o.remove)]) for o in d.request_headers if o))  # fmt: skip
    lines.append(f"timeout {d.timeout:g}s" if d.timeout else "timeout none (Istio's default)")
    r = d.retry
    if r.attempts:
        codes = f" (status {', '.join(map(str, sorted(r.status_codes)))})" if r.status_codes else ""
        per_try = f", {r.per_try_timeout:g}s per try" if r.per_try_timeout else ""
        lines.append(f"retries {r.attempts} on {','.join(sorted(r.retry_on))}{codes}{per_try}, another host first")
    else:
        lines.append("retries: none")
    fault = route.fault if route is not None else None
    verdict = "forward"
    if fault is not None and fault.delay:
        lines.append(f"fault injection delays {fault.delay:g}s for {fault.delay_percent:g}% of requests"
                     + ("; this draw is delayed" if d.delay else ""))  # fmt: skip
        if d.delay:
            verdict = "fault-delay"
    for m in d.mirrors:
        lines.append(f"mirrored to {m.cluster} ({m.percent:g}% of requests), answer ignored")
        verdict = "mirror" if verdict == "forward" else verdict
    if route is not None and route.mirrors and not d.mirrors:
        lines.append("mirroring configured; this draw is not mirrored")
    if r.attempts and verdict == "forward":
        verdict = "forward-with-retries"
    return Explanation(verdict, lines, d)


def explain_authorization(
    where: str, authorizer: Authorizer | None, attrs: RequestAttributes
) -> tuple[bool, list[str]]:
    """The destination sidecar's authorization step: allowed or not, and which policy and rule say so."""
    if authorizer is None:
        return True, [f"authorization at {where}: no AuthorizationPolicy applies: allowed"]
    first, *rest = authorizer.explain(attrs)
    return authorizer.check(attrs).allowed, [f"authorization at {where}: {first}", *rest]
