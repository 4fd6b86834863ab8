"""Local rate limiting: token buckets and descriptors, as Envoy's local_ratelimit filter has them. Pure.

What lives here:

* ``TokenBucket`` (the configuration: ``maxTokens``, ``tokensPerFill``,
  ``fillInterval``) and ``Bucket`` (one bucket's state), with ``take``: the
  bucket after ``now``'s fills and whether a token was there. A bucket starts
  full; every whole ``fillInterval`` since its last fill adds
  ``tokensPerFill`` tokens, never above ``maxTokens`` (Envoy fills on a timer
  at those instants; here the fills owed are added when the bucket is next
  looked at, which gives the same counts).
* ``compile_limit(obj)``: one ``LocalRateLimit`` wire object checked and
  compiled into a ``Limit``: its descriptors (entries keyed by the route, the
  source's mTLS principal, the source workload, the source IP or a request
  header value; an entry without ``value`` keeps one bucket per distinct
  value, so "per source identity" is one descriptor) and the default bucket,
  which Envoy applies when no descriptor matches.
* ``Limiter``: the buckets of the limits that select one proxy, and
  ``check(facts, now)``: every matching descriptor must hold a token (then
  each gives one), else the request is limited. Its answer carries what the
  ``x-ratelimit-*`` headers say (the tightest bucket's limit, remaining
  tokens and seconds to its next fill).

What must not live here: clocks (``now`` is a parameter), sockets, HTTP
answers (``proxy.ratelimit``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshwork.model.istio import duration_nanos

__all__ = [
    "ENTRY_KEYS",
    "Bucket",
    "Descriptor",
    "Entry",
    "Facts",
    "Limit",
    "Limiter",
    "TokenBucket",
    "Verdict",
    "compile_limit",
    "take",
]

EntryKey = Literal["route", "source.principal", "source.workload", "source.ip", "request.header"]
ENTRY_KEYS: tuple[str, ...] = ("route", "source.principal", "source.workload", "source.ip", "request.header")
# Envoy refuses a fill_interval under 50 ms (local_ratelimit's documented minimum).
MIN_FILL_INTERVAL_S = 0.05
# Per-value buckets one descriptor may hold; the least recently used goes first beyond it
# (Envoy's max_dynamic_descriptors bounds the same thing; 20000 is its order of magnitude).
MAX_DYNAMIC_BUCKETS = 20_000
# A header value longer than this is never a bucket key (Envoy caps header values at 60 KiB;
# an API key is far shorter).
MAX_VALUE_LEN = 1024


class RateLimitInvalid(ValueError):
    """A LocalRateLimit that cannot be enforced; the text names the object and the field."""


@dataclass(frozen=True, slots=True)
class TokenBucket:
    max_tokens: int
    tokens_per_fill: int
    fill_interval: float  # seconds

    def describe(self) -> str:
        return f"{self.max_tokens} tokens, {self.tokens_per_fill} per {self.fill_interval:g}s"


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket's state: tokens left and when the last fill (or the start) was."""

    tokens: int
    filled_at: float


def take(config: TokenBucket, bucket: Bucket | None, now: float) -> tuple[bool, Bucket]:
    """Whether a token is there at ``now`` (it is then taken), and the bucket after it.

    ``None`` is a new bucket: full, its fills counted from ``now``. A clock that
    went back adds nothing.
    """
    if bucket is None:
        bucket = Bucket(config.max_tokens, now)
    elif now > bucket.filled_at:
        fills = math.floor((now - bucket.filled_at) / config.fill_interval)
        if fills > 0:
            tokens = min(config.max_tokens, bucket.tokens + fills * config.tokens_per_fill)
            bucket = Bucket(tokens, bucket.filled_at + fills * config.fill_interval)
    if bucket.tokens <= 0:
        return False, bucket
    return True, Bucket(bucket.tokens - 1, bucket.filled_at)


def reset_after(config: TokenBucket, bucket: Bucket, now: float) -> float:
    """Seconds from ``now`` to the bucket's next fill."""
    return max(0.0, bucket.filled_at + config.fill_interval - now)


@dataclass(frozen=True, slots=True)
class Entry:
    key: EntryKey
    header: str | None = None  # request.header: the header's name, lower-case
    value: str | None = None  # None: any value, one bucket per distinct value

    def describe(self) -> str:
        what = f"request.header {self.header}" if self.key == "request.header" else self.key
        return f"{what}={self.value}" if self.value is not None else f"{what} (per value)"


@dataclass(frozen=True, slots=True)
class Descriptor:
    entries: tuple[Entry, ...]
    bucket: TokenBucket

    def describe(self) -> str:
        return ", ".join(e.describe() for e in self.entries) + f": {self.bucket.describe()}"


@dataclass(frozen=True, slots=True)
class Limit:
    """One compiled LocalRateLimit."""

    name: str  # namespace/name
    selector: tuple[tuple[str, str], ...]  # workloadSelector.labels; empty: every workload of the namespace
    default: TokenBucket | None
    descriptors: tuple[Descriptor, ...]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True, slots=True)
class Facts:
    """What descriptors may be keyed by, for one request."""

    route: str = ""
    principal: str | None = None  # the mTLS peer's identity (downstream.principal)
    workload: str | None = None  # the source pod's workload, from its address
    ip: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    def value(self, entry: Entry) -> str | None:
        if entry.key == "route":
            return self.route or None
        if entry.key == "source.principal":
            return self.principal
        if entry.key == "source.workload":
            return self.workload
        if entry.key == "source.ip":
            return self.ip
        found = self.headers.get(entry.header or "")
        return found if found is not None and len(found) <= MAX_VALUE_LEN else None


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int = 0  # x-ratelimit-limit: the tightest matching bucket's maxTokens
    remaining: int = 0  # x-ratelimit-remaining
    reset: int = 0  # x-ratelimit-reset: whole seconds to that bucket's next fill
    by: str = ""  # which limit and descriptor decided ("ns/name default" / "ns/name descriptor 0")

    @property
    def limited(self) -> bool:
        return not self.allowed


_ALLOW_ALL = Verdict(True)


# -- compiling ---------------------------------------------------------------------------------


def _fail(name: str, path: str, message: str) -> RateLimitInvalid:
    return RateLimitInvalid(f"LocalRateLimit {name}: spec.{path}: {message}")


def _bucket(name: str, path: str, raw: Any) -> TokenBucket:
    if not isinstance(raw, Mapping):
        raise _fail(name, path, "must be an object with maxTokens, tokensPerFill and fillInterval")
    max_tokens, per_fill, interval = raw.get("maxTokens"), raw.get("tokensPerFill", 1), raw.get("fillInterval")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _fail(name, f"{path}.maxTokens", "must be an integer of at least 1")
    if not isinstance(per_fill, int) or isinstance(per_fill, bool) or per_fill < 1:
        raise _fail(name, f"{path}.tokensPerFill", "must be an integer of at least 1")
    nanos = duration_nanos(interval) if isinstance(interval, str) else None
    if nanos is None or nanos < MIN_FILL_INTERVAL_S * 1e9:
        raise _fail(name, f"{path}.fillInterval", f"must be a duration of at least 50ms, not {interval!r}")
    return TokenBucket(max_tokens, per_fill, nanos / 1e9)


def compile_limit(obj: Mapping[str, Any]) -> Limit:
    """A ``LocalRateLimit`` wire object as a ``Limit``; ``RateLimitInvalid`` names what is wrong."""
    meta = obj.get("metadata") or {}
    name = f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"
    spec = obj.get("spec") or {}
    selector = (spec.get("workloadSelector") or {}).get("labels") or {}
    default = _bucket(name, "tokenBucket", spec["tokenBucket"]) if spec.get("tokenBucket") is not None else None
    descriptors: list[Descriptor] = []
    for i, raw in enumerate(spec.get("descriptors") or ()):
        path = f"descriptors[{i}]"
        entries: list[Entry] = []
        for j, e in enumerate((raw or {}).get("entries") or ()):
            key = (e or {}).get("key")
            if key not in ENTRY_KEYS:
                raise _fail(name, f"{path}.entries[{j}].key", f"must be one of {', '.join(ENTRY_KEYS)}, not {key!r}")
            header = e.get("header")
            if key == "request.header" and not (isinstance(header, str) and header):
                raise _fail(name, f"{path}.entries[{j}].header", "names the header for key request.header")
            if key != "request.header" and header is not None:
                raise _fail(name, f"{path}.entries[{j}].header", "is only for key request.header")
            value = e.get("value")
            entries.append(Entry(key, header.lower() if isinstance(header, str) else None,
                                 str(value) if value is not None else None))  # fmt: skip
        if not entries:
            raise _fail(name, f"{path}.entries", "needs at least one entry")
        descriptors.append(Descriptor(tuple(entries), _bucket(name, f"{path}.tokenBucket", (raw or {}).get("tokenBucket"))))
    if default is None and not descriptors:
        raise _fail(name, "tokenBucket", "set a tokenBucket, descriptors, or both")
    return Limit(name, tuple(sorted((str(k), str(v)) for k, v in selector.items())), default, tuple(descriptors))


# -- enforcing ---------------------------------------------------------------------------------

_BucketKey = tuple[str, int, tuple[str, ...]]  # (limit name, descriptor index or -1, entry values)


@dataclass(eq=False)
class Limiter:
    """The buckets of ``limits``. Build a new one with ``carry`` to keep the state of unchanged limits."""

    limits: tuple[Limit, ...]
    buckets: OrderedDict[_BucketKey, Bucket] = field(default_factory=OrderedDict)

    @classmethod
    def carry(cls, limits: Iterable[Limit], previous: Limiter | None) -> Limiter:
        """A limiter for ``limits`` that keeps the buckets ``previous`` had for the same limits."""
        chosen = tuple(limits)
        new = cls(chosen)
        if previous is not None:
            same = {lim.name for lim in chosen if lim in previous.limits}
            new.buckets = OrderedDict((k, b) for k, b in previous.buckets.items() if k[0] in same)
        return new

    def matching(self, facts: Facts) -> list[tuple[_BucketKey, TokenBucket, str]]:
        """The buckets a request draws on: per limit, its matching descriptors, else its default."""
        out: list[tuple[_BucketKey, TokenBucket, str]] = []
        for lim in self.limits:
            found = False
            for i, d in enumerate(lim.descriptors):
                values: list[str] = []
                for e in d.entries:
                    v = facts.value(e)
                    if v is None or (e.value is not None and v != e.value):
                        break
                    values.append(v)
                else:
                    found = True
                    out.append(((lim.name, i, tuple(values)), d.bucket, f"{lim.name} descriptor {i}"))
            if not found and lim.default is not None:
                out.append(((lim.name, -1, ()), lim.default, f"{lim.name} default"))
        return out

    def check(self, facts: Facts, now: float) -> Verdict:
        """Take a token from every bucket the request draws on, or none when one is empty."""
        if not self.limits:
            return _ALLOW_ALL
        chosen = self.matching(facts)
        if not chosen:
            return _ALLOW_ALL
        after: list[tuple[_BucketKey, TokenBucket, str, bool, Bucket]] = []
        for key, config, by in chosen:
            ok, bucket = take(config, self.buckets.get(key), now)
            after.append((key, config, by, ok, bucket))
        denied = [a for a in after if not a[3]]
        for key, _config, _by, ok, bucket in after:
            # A refused request takes nothing: buckets that had a token keep it (the fills are kept).
            self._store(key, bucket if not denied else Bucket(bucket.tokens + (1 if ok else 0), bucket.filled_at))
        decider = denied[0] if denied else min(after, key=lambda a: (a[4].tokens, a[1].max_tokens))
        _key, config, by, _ok, bucket = decider
        return Verdict(not denied, config.max_tokens, max(0, bucket.tokens),
                       math.ceil(reset_after(config, bucket, now)), by)  # fmt: skip

    def _store(self, key: _BucketKey, bucket: Bucket) -> None:
        buckets = self.buckets
        buckets[key] = bucket
        buckets.move_to_end(key)
        if len(buckets) > MAX_DYNAMIC_BUCKETS * max(1, len(self.limits)):
            buckets.popitem(last=False)


def selected_limits(raw: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> list[Limit]:
    """The LocalRateLimits of a snapshot whose workloadSelector picks a proxy with ``labels``."""
    return [lim for lim in (compile_limit(o) for o in raw) if lim.selects(labels)]


def explain(where: str, limits: Iterable[Limit], facts: Facts) -> list[str]:
    """What ``meshwork why`` says of the rate limits a request meets at ``where`` (no token is taken)."""
    chosen = tuple(limits)
    if not chosen:
        return [f"rate limits at {where}: no LocalRateLimit applies"]
    lines: list[str] = []
    drawn = {by for _key, _config, by in Limiter(chosen).matching(facts)}
    for lim in chosen:
        for i, d in enumerate(lim.descriptors):
            used = f"{lim.name} descriptor {i}" in drawn
            lines.append(f"rate limit at {where}: LocalRateLimit {lim.name} descriptor {i} "
                         f"({d.describe()}): {'applies' if used else 'does not match'}")  # fmt: skip
        if lim.default is not None:
            used = f"{lim.name} default" in drawn
            lines.append(f"rate limit at {where}: LocalRateLimit {lim.name} default bucket "
                         f"({lim.default.describe()}): {'applies' if used else 'not used (a descriptor matched)'}")  # fmt: skip
    lines.append("  over the limit: 429 local_rate_limited, flag RL, x-ratelimit-limit/remaining/reset")
    return lines
