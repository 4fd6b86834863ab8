"""Local rate limits in the proxy: a decider wrapper answering 429 (meshwork.io/v1alpha1 LocalRateLimit).

What lives here: ``limiter_for(snapshot, previous)``, the ``core.ratelimit.Limiter``
of the LocalRateLimits that select this proxy's workload (the previous one,
buckets and all, when they did not change; a config push never refills a
bucket), and ``RateLimitedDecider``, which wraps a listener's decider. It asks
the inner decider first (the guard runs before it, as Istio places Envoy's
local_ratelimit filter after RBAC, so refused requests spend no tokens), then
takes tokens for a request that would go on. A limited request is answered
429 ``local_rate_limited`` with response flag ``RL`` (in the access log and
the ``response_flags`` metric label) and Envoy's ``x-ratelimit-limit``,
``x-ratelimit-remaining`` and ``x-ratelimit-reset``; the requests let through
carry the same headers on their response.

A sidecar wraps its inbound listener, a gateway every listener (limits protect
the server side; outbound traffic is never limited here).

What must not live here: the token arithmetic and descriptor matching
(``core.ratelimit``), listeners (``proxy.sidecar``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from meshwork.core.http1 import Request
from meshwork.core.ratelimit import Facts, Limiter, Verdict, selected_limits
from meshwork.proxy import plan

__all__ = ["LIMITED_BODY", "RateLimitedDecider", "headers_of", "limiter_for"]

# Envoy's local_ratelimit answer body and response_code_details.
LIMITED_BODY = b"local_rate_limited"
_TEXT = (b"content-type", b"text/plain")


def limiter_for(raw: Mapping[str, Any], previous: Limiter | None) -> Limiter | None:
    """The limiter for the snapshot's workload (None: no limit selects it).

    Raises ``core.ratelimit.RateLimitInvalid`` (a ValueError): the proxy NACKs with its text.
    """
    labels = dict((raw.get("proxy") or {}).get("labels") or {})
    limits = selected_limits(list(raw.get("localRateLimits") or ()), labels)
    if not limits:
        return None
    if previous is not None and previous.limits == tuple(limits):
        return previous
    return Limiter.carry(limits, previous)


def headers_of(verdict: Verdict) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"x-ratelimit-limit", str(verdict.limit).encode()),
        (b"x-ratelimit-remaining", str(verdict.remaining).encode()),
        (b"x-ratelimit-reset", str(verdict.reset).encode()),
    )


def _with_response_headers(chosen: plan.Forward, extra: tuple[tuple[bytes, bytes], ...]) -> plan.Forward:
    edits = chosen.response_headers
    merged = plan.HeaderEdits(set=extra) if edits is None else plan.HeaderEdits(
        set=edits.set + extra, add=edits.add, remove=edits.remove)  # fmt: skip
    return dataclasses.replace(chosen, response_headers=merged)


class RateLimitedDecider:
    """Runs ``limiter`` after ``inner`` (see the module docstring).

    ``workload_of(address)`` names the calling pod's workload (None: unknown).
    """

    __slots__ = ("clock", "inner", "limiter", "workload_of")

    def __init__(self, inner: plan.Decider, limiter: Limiter, *,
                 workload_of: Callable[[str], str | None] = lambda _address: None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.inner = inner
        self.limiter = limiter
        self.workload_of = workload_of
        self.clock = clock

    def facts(self, request: Request, downstream: plan.Downstream, route: str) -> Facts:
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        return Facts(route=route, principal=downstream.principal, workload=self.workload_of(downstream.address),
                     ip=downstream.address or None, headers=headers)  # fmt: skip

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        chosen = self.inner.decide(request, downstream)
        if type(chosen) is not plan.Forward:
            return chosen
        route = chosen.route or chosen.cluster.name  # the inbound side: its cluster (inbound|port||svc)
        verdict = self.limiter.check(self.facts(request, downstream, route), self.clock())
        if verdict.limited:
            return plan.DirectResponse(status=429, body=LIMITED_BODY, headers=(_TEXT, *headers_of(verdict)),
                                       flag="RL", reason=f"local_rate_limited by LocalRateLimit {verdict.by}",
                                       route=chosen.route, cluster=chosen.cluster.name, private=True)  # fmt: skip
        if not verdict.limit:
            return chosen
        return _with_response_headers(chosen, headers_of(verdict))
