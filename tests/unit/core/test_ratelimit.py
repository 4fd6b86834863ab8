"""core.ratelimit: token buckets (time passed in) and descriptors, as Envoy's local_ratelimit has them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.ratelimit import (
    Bucket,
    Facts,
    Limiter,
    RateLimitInvalid,
    TokenBucket,
    compile_limit,
    selected_limits,
    take,
)


def limit(spec: dict, name: str = "lim") -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


buckets = st.builds(
    TokenBucket,
    max_tokens=st.integers(1, 50),
    tokens_per_fill=st.integers(1, 50),
    fill_interval=st.sampled_from([0.0625, 0.125, 0.25, 1.0, 4.0]),  # exact in binary
)
# Request times: increasing offsets from 0.
times = st.lists(st.floats(0, 2.0, allow_nan=False), min_size=1, max_size=300).map(
    lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))]
)


@given(buckets, times)
def test_never_more_than_the_bucket_allows(config: TokenBucket, at: list[float]) -> None:
    """Within any run of requests, what is let through is at most maxTokens plus the fills due."""
    bucket: Bucket | None = None
    allowed: list[float] = []
    for now in at:
        ok, bucket = take(config, bucket, now)
        if ok:
            allowed.append(now)
        assert 0 <= bucket.tokens <= config.max_tokens
    start = at[0]
    for i, t in enumerate(allowed):
        fills = math.floor((t - start) / config.fill_interval + 1e-9)
        assert i + 1 <= config.max_tokens + fills * config.tokens_per_fill


@given(buckets, st.integers(1, 40))
def test_a_draining_caller_gets_the_fill_rate(config: TokenBucket, periods: int) -> None:
    """A caller that always empties the bucket gets maxTokens, then min(tokensPerFill, maxTokens) per fill."""
    step = config.fill_interval / 8
    bucket: Bucket | None = None
    allowed = 0
    n = periods * 8
    for i in range(n + 1):
        for _ in range(60):  # more than a bucket ever holds: drained at every instant
            ok, bucket = take(config, bucket, i * step)
            allowed += ok
    assert allowed == config.max_tokens + periods * min(config.tokens_per_fill, config.max_tokens)


@given(buckets, st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False))
def test_a_clock_going_back_adds_nothing(config: TokenBucket, first: float, back: float) -> None:
    _ok, bucket = take(config, None, first + back)
    drained = Bucket(0, bucket.filled_at)
    ok, after = take(config, drained, first)
    assert not ok and after == drained


def test_tokens_come_back_per_fill_interval() -> None:
    config = TokenBucket(max_tokens=2, tokens_per_fill=1, fill_interval=1.0)
    bucket = None
    results = []
    for now in (0.0, 0.1, 0.2, 0.99, 1.0, 1.5, 2.0, 2.1, 10.0, 10.0, 10.0):
        ok, bucket = take(config, bucket, now)
        results.append(ok)
    assert results == [True, True, False, False, True, False, True, False, True, True, False]


def test_descriptor_per_source_identity_keeps_one_bucket_per_caller() -> None:
    lim = compile_limit(limit({"descriptors": [{"entries": [{"key": "source.principal"}],
                                                "tokenBucket": {"maxTokens": 2, "fillInterval": "1s"}}]}))
    limiter = Limiter((lim,))
    a, b = Facts(principal="cluster.local/ns/default/sa/a"), Facts(principal="cluster.local/ns/default/sa/b")
    assert [limiter.check(a, 0.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.check(b, 0.0).allowed  # another caller has its own bucket
    refused = limiter.check(a, 0.5)
    assert not refused.allowed and refused.limit == 2 and refused.remaining == 0 and refused.reset == 1
    assert refused.by == "default/lim descriptor 0"
    assert limiter.check(a, 1.0).allowed


def test_no_matching_descriptor_uses_the_default_bucket() -> None:
    lim = compile_limit(limit({
        "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "1s"},
        "descriptors": [{"entries": [{"key": "request.header", "header": "X-Api-Key", "value": "gold"}],
                         "tokenBucket": {"maxTokens": 3, "fillInterval": "1s"}}],
    }))
    limiter = Limiter((lim,))
    gold = Facts(headers={"x-api-key": "gold"})
    other = Facts(headers={"x-api-key": "free"})
    assert [limiter.check(gold, 0).allowed for _ in range(4)] == [True, True, True, False]
    assert [limiter.check(other, 0).allowed for _ in range(2)] == [True, False]
    assert limiter.check(Facts(), 0).allowed is False  # no key at all: the default bucket too


def test_a_refused_request_takes_no_token_from_the_other_buckets() -> None:
    a = compile_limit(limit({"tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}}, "wide"))
    b = compile_limit(limit({"descriptors": [{"entries": [{"key": "route", "value": "r1"}],
                                              "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]}, "narrow"))
    limiter = Limiter((a, b))
    assert limiter.check(Facts(route="r1"), 0).allowed
    assert not limiter.check(Facts(route="r1"), 0).allowed
    verdicts = [limiter.check(Facts(route="r2"), 0) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, True, False]  # the refusal spent nothing


def test_carry_keeps_buckets_of_unchanged_limits_only() -> None:
    spec = {"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}
    first = Limiter.carry([compile_limit(limit(spec, "a")), compile_limit(limit(spec, "b"))], None)
    first.check(Facts(), 0)
    assert not first.check(Facts(), 0).allowed
    changed = {"tokenBucket": {"maxTokens": 2, "fillInterval": "1s"}}
    second = Limiter.carry([compile_limit(limit(spec, "a")), compile_limit(limit(changed, "b"))], first)
    assert {k[0] for k in second.buckets} == {"default/a"}
    assert not second.check(Facts(), 0).allowed  # a's bucket is still empty


@pytest.mark.parametrize(("spec", "field"), [
    ({}, "spec.tokenBucket"),
    ({"tokenBucket": {"maxTokens": 0, "fillInterval": "1s"}}, "spec.tokenBucket.maxTokens"),
    ({"tokenBucket": {"maxTokens": 1, "fillInterval": "10ms"}}, "spec.tokenBucket.fillInterval"),
    ({"tokenBucket": {"maxTokens": 1, "fillInterval": "soon"}}, "spec.tokenBucket.fillInterval"),
    ({"descriptors": [{"entries": [{"key": "cookie"}], "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]},
     "spec.descriptors[0].entries[0].key"),
    ({"descriptors": [{"entries": [{"key": "request.header"}], "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]},
     "spec.descriptors[0].entries[0].header"),
    ({"descriptors": [{"entries": [], "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}]},
     "spec.descriptors[0].entries"),
])  # fmt: skip
def test_invalid_limits_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(RateLimitInvalid) as caught:
        compile_limit(limit(spec))
    assert str(caught.value).startswith(f"LocalRateLimit default/lim: {field}:")


def test_workload_selector() -> None:
    spec = {"workloadSelector": {"labels": {"app": "web"}}, "tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}
    assert [lim.name for lim in selected_limits([limit(spec)], {"app": "web", "version": "v1"})] == ["default/lim"]
    assert selected_limits([limit(spec)], {"app": "db"}) == []
