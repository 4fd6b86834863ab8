"""Load balancing over one cluster's endpoints, as Envoy does it for Istio's DestinationRule.

What lives here: ``Endpoint`` (one upstream host), ``LbConfig`` (a
DestinationRule ``loadBalancer`` read into what the balancer needs) and
``LoadBalancer``, which picks an endpoint for a request. Randomness is a
``random.Random`` the caller passes in; which endpoints are ejected (outlier
detection) or already tried (retries) are arguments too, so the balancer
keeps only its own state: the round-robin position, the active request count
per endpoint, and the lazily built hash ring or Maglev table.

Kept from Envoy and Istio:

* No ``loadBalancer`` means ``LEAST_REQUEST`` (Istio's default since 1.14).
* ``LEAST_REQUEST``: power of two choices: two endpoints drawn at random
  (with replacement), the one with fewer active requests wins, the first
  drawn on a tie.
* ``ROUND_ROBIN`` walks the endpoints in order, skipping unusable ones;
  ``RANDOM`` draws uniformly; ``PASSTHROUGH`` picks nothing: the proxy
  connects to the address the client asked for.
* ``consistentHash`` hashes ``httpHeaderName``, ``httpCookie``,
  ``useSourceIp`` or ``httpQueryParameterName``; ring hash (``ringHash`` or the
  deprecated ``minimumRingSize``, 1024 by default) or Maglev (``maglev``,
  table 65537). With no hash key (header absent, cookie absent without a TTL)
  the pick is random, as in Envoy. A missing cookie with a ``ttl`` makes a
  new value, hashed at once, and the pick says "set this cookie".
* Retries: ``exclude`` holds hosts already tried (Envoy's ``previous_hosts``
  predicate, which Istio sets on every retry policy); when no other host is
  left, a tried one is used again.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshwork.core.mesh.hashring import (
    DEFAULT_MAGLEV_SIZE,
    DEFAULT_RING_SIZE,
    Maglev,
    Ring,
    hash64,
)
from meshwork.core.mesh.hosts import seconds
from meshwork.model.istio_traffic import LoadBalancerSettings

LbPolicy = Literal["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "PASSTHROUGH", "RING_HASH", "MAGLEV"]
HashOn = Literal["header", "cookie", "source_ip", "query"]
CHOICE_COUNT = 2  # Envoy least_request choice_count default: power of two choices


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream host of a cluster."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    name: str = ""  # the pod, for logs and ``meshwork why``

    @property
    def key(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """What a consistent-hash balancer hashes."""

    on: HashOn
    name: str = ""
    cookie_path: str | None = None
    cookie_ttl: float | None = None  # None: never generate; 0: a session cookie


@dataclass(frozen=True, slots=True)
class LbConfig:
    policy: LbPolicy = "LEAST_REQUEST"
    hash_policy: HashPolicy | None = None
    ring_size: int = DEFAULT_RING_SIZE
    table_size: int = DEFAULT_MAGLEV_SIZE

    @staticmethod
    def from_model(settings: LoadBalancerSettings | None) -> LbConfig:
        """Read a DestinationRule ``loadBalancer`` (None: Istio's default)."""
        if settings is None:
            return LbConfig()
        ch = settings.consistent_hash
        if ch is None:
            simple = settings.simple or "LEAST_REQUEST"
            if simple in ("UNSPECIFIED", "LEAST_CONN"):  # LEAST_CONN is the old name
                simple = "LEAST_REQUEST"
            policy: LbPolicy = simple if simple in _SIMPLE else "LEAST_REQUEST"  # type: ignore[assignment]
            return LbConfig(policy=policy)
        hash_policy: HashPolicy | None = None
        if ch.http_header_name:
            hash_policy = HashPolicy("header", ch.http_header_name.lower())
        elif ch.http_cookie is not None:
            hash_policy = HashPolicy(
                "cookie", ch.http_cookie.name, ch.http_cookie.path, seconds(ch.http_cookie.ttl)
            )
        elif ch.use_source_ip:
            hash_policy = HashPolicy("source_ip")
        elif ch.http_query_parameter_name:
            hash_policy = HashPolicy("query", ch.http_query_parameter_name)
        if ch.maglev is not None:
            return LbConfig(
                "MAGLEV", hash_policy, table_size=ch.maglev.table_size or DEFAULT_MAGLEV_SIZE
            )
        ring = (ch.ring_hash.minimum_ring_size if ch.ring_hash else None) or ch.minimum_ring_size
        return LbConfig("RING_HASH", hash_policy, ring_size=ring or DEFAULT_RING_SIZE)


_SIMPLE = ("ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "PASSTHROUGH")


@dataclass(frozen=True, slots=True)
class HashInput:
    """The parts of a request a hash policy may read (header names lower-case)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    source_ip: str = ""
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetCookie:
    """A cookie the proxy adds to the response so the client sticks to its endpoint."""

    name: str
    value: str
    path: str | None
    ttl: float

    def header_value(self) -> str:
        """The ``set-cookie`` value, as Envoy writes it (``Max-Age`` only with a TTL)."""
        parts = [f"{self.name}={self.value}"]
        if self.ttl > 0:
            parts.append(f"Max-Age={int(self.ttl)}")
        if self.path:
            parts.append(f"Path={self.path}")
        parts.append("HttpOnly")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Pick:
    """The balancer's answer: an endpoint (None: none usable, or passthrough)."""

    endpoint: Endpoint | None
    set_cookie: SetCookie | None = None
    sampled: tuple[str, ...] = ()  # LEAST_REQUEST: the keys drawn, in order
    passthrough: bool = False


def parse_cookies(header: str) -> dict[str, str]:
    """A ``cookie`` header's pairs (the first of a repeated name wins)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


class LoadBalancer:
    """Picks endpoints of one cluster; keeps round-robin position and active request counts."""

    def __init__(self, config: LbConfig, endpoints: Sequence[Endpoint], start: int = 0) -> None:
        self.config = config
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self._next = start % len(self.endpoints) if self.endpoints else 0
        self._active: dict[str, int] = {}
        self._hasher: Ring | Maglev | None = None

    # -- active requests (LEAST_REQUEST reads them; every policy keeps them for stats) --

    def request_started(self, key: str) -> None:
        self._active[key] = self._active.get(key, 0) + 1

    def request_finished(self, key: str) -> None:
        left = self._active.get(key, 0) - 1
        if left > 0:
            self._active[key] = left
        else:
            self._active.pop(key, None)

    def active(self, key: str) -> int:
        return self._active.get(key, 0)

    # -- picking --

    def pick(
        self,
        rng: random.Random,
        *,
        hash_input: HashInput | None = None,
        unavailable: Collection[str] = (),
        exclude: Collection[str] = (),
    ) -> Pick:
        """An endpoint not in ``unavailable``, avoiding ``exclude`` when another one is left."""
        if self.config.policy == "PASSTHROUGH":
            return Pick(None, passthrough=True)
        usable = [e for e in self.endpoints if e.key not in unavailable]
        if not usable:
            return Pick(None)
        if exclude:
            fresh = [e for e in usable if e.key not in exclude]
            if fresh:
                usable = fresh
        policy = self.config.policy
        if policy in ("RING_HASH", "MAGLEV"):
            return self._pick_hash(rng, hash_input or HashInput(), usable)
        if policy == "RANDOM":
            return Pick(usable[rng.randrange(len(usable))])
        if policy == "ROUND_ROBIN":
            return Pick(self._round_robin({e.key for e in usable}))
        return self._least_request(rng, usable)

    def _round_robin(self, usable: set[str]) -> Endpoint:
        n = len(self.endpoints)
        for _ in range(n):
            endpoint = self.endpoints[self._next]
            self._next = (self._next + 1) % n
            if endpoint.key in usable:
                return endpoint
        raise AssertionError("round robin found no usable endpoint")  # usable is non-empty

    def _least_request(self, rng: random.Random, usable: list[Endpoint]) -> Pick:
        sampled = [usable[rng.randrange(len(usable))] for _ in range(CHOICE_COUNT)]
        best = sampled[0]
        for candidate in sampled[1:]:
            if self.active(candidate.key) < self.active(best.key):
                best = candidate
        return Pick(best, sampled=tuple(e.key for e in sampled))

    def _pick_hash(self, rng: random.Random, request: HashInput, usable: list[Endpoint]) -> Pick:
        policy = self.config.hash_policy
        key: str | None = None
        cookie: SetCookie | None = None
        if policy is not None:
            if policy.on == "header":
                key = request.headers.get(policy.name)
            elif policy.on == "source_ip":
                key = request.source_ip or None
            elif policy.on == "query":
                key = request.query.get(policy.name)
            else:
                key = request.cookies.get(policy.name)
                if key is None and policy.cookie_ttl is not None:
                    key = f"{rng.getrandbits(64):016x}"
                    cookie = SetCookie(policy.name, key, policy.cookie_path, policy.cookie_ttl)
        if key is None:
            return Pick(usable[rng.randrange(len(usable))])
        endpoint = self.endpoint_for(key, {e.key for e in usable})
        return Pick(endpoint, set_cookie=cookie)

    def endpoint_for(self, key: str, usable: Collection[str] | None = None) -> Endpoint | None:
        """The endpoint a hash key maps to, skipping endpoints not in ``usable``."""
        if not self.endpoints:
            return None
        if self._hasher is None:
            names = [e.key for e in self.endpoints]
            self._hasher = (
                Maglev(names, self.config.table_size)
                if self.config.policy == "MAGLEV"
                else Ring(names, self.config.ring_size)
            )
        for index in self._hasher.lookup(hash64(key)):
            endpoint = self.endpoints[index]
            if usable is None or endpoint.key in usable:
                return endpoint
        return None
