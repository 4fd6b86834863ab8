"""Consistent hashing for the load balancer: Envoy's ring hash and Maglev tables.

What lives here: ``hash64`` (the stable 64-bit hash of a key), ``Ring`` (a
ring-hash ring: each endpoint owns ``minimum_ring_size`` points) and
``Maglev`` (Google's Maglev lookup table of a prime size, 65537 by default).
Both answer ``lookup(hash)`` with a list of endpoint indexes in preference
order, so a caller can skip endpoints it may not use (ejected, or already
tried by a retry) and still land on the same fallback for the same key.

Kept from Envoy: minimum ring size 1024 (Istio's default) capped at 8M
points; Maglev's default table size 65537 and its population algorithm
(offset and skip from two hashes of the endpoint name). Changed: Envoy spreads
``minimum_ring_size`` points over all endpoints, so the points of every
endpoint change when one leaves; here each endpoint owns
``minimum_ring_size`` points of its own (the ring is at least that large, and
larger), so an endpoint leaving moves exactly the keys it owned. Simplified:
Envoy hashes with xxHash64 and weights endpoints; here the hash is BLAKE2b and
all endpoints weigh the same. An unavailable endpoint is skipped by walking the
ring (or table) forward, instead of rebuilding without it; for the ring this
gives the same answer as a rebuild.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence

DEFAULT_RING_SIZE = 1024  # Envoy's minimum_ring_size default, also Istio's
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's maximum_ring_size default
DEFAULT_MAGLEV_SIZE = 65537  # Envoy's Maglev table_size default (a prime)


def hash64(key: str) -> int:
    """A stable 64-bit hash of ``key`` (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


class Ring:
    """A ring-hash ring over endpoint names (their ``ip:port``), ``minimum_ring_size`` points each."""

    __slots__ = ("_hashes", "_owners", "size")

    def __init__(self, names: Sequence[str], minimum_ring_size: int = DEFAULT_RING_SIZE) -> None:
        points: list[tuple[int, int]] = []
        if names:
            per_host = max(1, min(minimum_ring_size, MAX_RING_SIZE // len(names)))
            for index, name in enumerate(names):
                points.extend((hash64(f"{name}_{i}"), index) for i in range(per_host))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]
        self.size = len(points)

    def lookup(self, key_hash: int) -> Iterator[int]:
        """Endpoint indexes clockwise from ``key_hash`` (each point in turn; repeats possible)."""
        if not self._owners:
            return
        start = bisect.bisect_left(self._hashes, key_hash)
        n = len(self._owners)
        for step in range(n):
            yield self._owners[(start + step) % n]


class Maglev:
    """A Maglev lookup table: ``table_size`` slots (a prime) filled evenly by the endpoints."""

    __slots__ = ("_table", "size")

    def __init__(self, names: Sequence[str], table_size: int = DEFAULT_MAGLEV_SIZE) -> None:
        if not is_prime(table_size):
            raise ValueError(f"maglev table size {table_size} must be a prime number")
        self.size = table_size
        self._table: list[int] = []
        if not names:
            return
        m = table_size
        offsets = [hash64(f"{name}#offset") % m for name in names]
        skips = [hash64(f"{name}#skip") % (m - 1) + 1 for name in names]
        following = [0] * len(names)
        table = [-1] * m
        filled = 0
        while True:
            for i in range(len(names)):
                offset, skip, j = offsets[i], skips[i], following[i]
                slot = (offset + j * skip) % m
                while table[slot] >= 0:
                    j += 1
                    slot = (offset + j * skip) % m
                table[slot] = i
                following[i] = j + 1
                filled += 1
                if filled == m:
                    self._table = table
                    return

    def lookup(self, key_hash: int) -> Iterator[int]:
        """Endpoint indexes from the key's slot onwards (each slot in turn)."""
        table = self._table
        if not table:
            return
        m = len(table)
        start = key_hash % m
        for step in range(m):
            yield table[(start + step) % m]
