"""Standalone mode's decisions: one fixed upstream list, one load balancer, Istio's defaults.

What lives here: ``StaticCluster`` (round_robin, least_request with the power
of two choices, or random over fixed endpoints) and ``StaticDecider``, which
forwards every request to that cluster with Istio's default retry policy.
This is what ``meshwork proxy --upstream ...`` runs, through the same engine
path as a sidecar's route.

What must not live here: I/O. Randomness is an injected ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final, Literal

from meshwork.core.http1 import Request
from meshwork.proxy.plan import (
    DEFAULT_LIMITS,
    Downstream,
    Endpoint,
    ErrorKind,
    Forward,
    Outcome,
    Plan,
    PoolLimits,
    RetryPolicy,
)

__all__ = [
    "ISTIO_DEFAULT_RETRIES",
    "LB_POLICIES",
    "StaticCluster",
    "StaticDecider",
    "istio_default_retry_on",
    "parse_endpoints",
]

LbPolicy = Literal["round_robin", "least_request", "random"]
LB_POLICIES: Final[tuple[LbPolicy, ...]] = ("round_robin", "least_request", "random")

# Istio's default (no VirtualService retries): 2 retries on
# "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
# with retriable status 503, and retries go to other hosts (previous_hosts).
# refused-stream, unavailable and cancelled are HTTP/2 and gRPC conditions that
# HTTP/1.1 upstreams cannot produce.
RETRIABLE_STATUS_CODES: Final = frozenset((503,))


def istio_default_retry_on(outcome: Outcome) -> bool:
    """connect-failure or a 503 response (Istio's default retryOn for HTTP/1.1)."""
    if isinstance(outcome, int):
        return outcome in RETRIABLE_STATUS_CODES
    return outcome is ErrorKind.CONNECT_FAILURE


ISTIO_DEFAULT_RETRIES: Final = RetryPolicy(
    attempts=2, retry_on=istio_default_retry_on, retriable_statuses=RETRIABLE_STATUS_CODES
)


def parse_endpoints(spec: str) -> list[Endpoint]:
    """``"h:p,h:p"`` into endpoints; ValueError names the bad element."""
    endpoints = []
    for item in spec.split(","):
        item = item.strip()
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"upstream {item!r} is not HOST:PORT")
        endpoints.append(Endpoint(host.strip("[]"), int(port)))
    if not endpoints:
        raise ValueError("no upstreams")
    return endpoints


class StaticCluster:
    """A fixed list of endpoints and a simple load balancer over them.

    ``least_request`` picks two distinct endpoints at random and takes the one
    with fewer active requests (Envoy's default choice_count of 2); ``active``
    counts picks not yet released.
    """

    __slots__ = ("_active", "_endpoints", "_lb", "_next", "_rng", "limits", "name")

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        lb: LbPolicy = "round_robin",
        *,
        name: str = "static",
        limits: PoolLimits = DEFAULT_LIMITS,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a cluster needs at least one endpoint")
        if lb not in LB_POLICIES:
            raise ValueError(f"unknown load balancer {lb!r}")
        self.name = name
        self.limits = limits
        self._endpoints = tuple(endpoints)
        self._lb = lb
        self._rng = rng or random.Random()
        self._next = 0
        # Keyed by "host:port" strings: their hash is cached, a dataclass's is Python code.
        self._active = {e.key: 0 for e in self._endpoints}

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def active(self, endpoint: Endpoint) -> int:
        return self._active[endpoint.key]

    def pick(self, exclude: frozenset[Endpoint]) -> Endpoint | None:
        eps = self._endpoints
        if exclude:
            eps = tuple(e for e in eps if e not in exclude) or eps
        lb = self._lb
        if lb == "round_robin":
            i = self._next
            self._next = i + 1
            chosen = eps[i % len(eps)]
        elif lb == "random" or len(eps) == 1:
            chosen = eps[self._rng.randrange(len(eps))]
        else:
            a, b = self._rng.sample(eps, 2)
            active = self._active
            chosen = b if active[b.key] < active[a.key] else a
        self._active[chosen.key] += 1
        return chosen

    def release(self, endpoint: Endpoint, outcome: Outcome) -> None:
        key = endpoint.key
        n = self._active.get(key)
        if n:
            self._active[key] = n - 1


class StaticDecider:
    """Every request goes to one cluster; the Forward is built once and shared."""

    __slots__ = ("_plan",)

    def __init__(
        self,
        cluster: StaticCluster,
        *,
        timeout: float | None = None,
        retries: RetryPolicy | None = ISTIO_DEFAULT_RETRIES,
    ) -> None:
        self._plan = Forward(cluster, timeout=timeout, retries=retries, route="default")

    def decide(self, request: Request, downstream: Downstream) -> Plan:
        return self._plan
