"""meshwork's own kind ``LocalRateLimit`` (meshwork.io/v1alpha1): token buckets at sidecars and gateways.

Shaped like Envoy's local_ratelimit filter (the one Istio users configure
through an EnvoyFilter): ``tokenBucket`` {maxTokens, tokensPerFill,
fillInterval} is the default bucket, used by requests no descriptor matches;
each of ``descriptors`` has ``entries`` and its own ``tokenBucket``. An
entry's ``key`` is ``route`` (the route's name), ``source.principal`` (the
caller's mTLS identity), ``source.workload`` (the calling pod's workload),
``source.ip``, or ``request.header`` (with ``header``: for example an API
key); with ``value`` it matches that value only, without it every distinct
value gets its own bucket. A limited request is answered 429 with
``x-ratelimit-limit/remaining/reset`` and response flag RL::

    apiVersion: meshwork.io/v1alpha1
    kind: LocalRateLimit
    metadata: {name: per-caller, namespace: default}
    spec:
      workloadSelector: {labels: {app: httpbin}}
      descriptors:
      - entries: [{key: source.principal}]
        tokenBucket: {maxTokens: 10, tokensPerFill: 1, fillInterval: 100ms}

The proxy compiles it again with ``meshwork.core.ratelimit.compile_limit``
(the same checks: a refusal there is a NACK).
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import Duration, duration_nanos
from meshwork.model.kinds import REGISTRY, KindInfo

GROUP = "meshwork.io"
MIN_FILL_INTERVAL_NS = 50_000_000  # Envoy refuses a local_ratelimit fill_interval under 50 ms


class RateLimitWorkloadSelector(Model):
    """The workloads whose proxies enforce the limit (as EnvoyFilter's workloadSelector); none: all in the namespace."""

    labels: dict[str, str] | None = None


class TokenBucketSpec(Model):
    """Envoy's TokenBucket: ``maxTokens`` at most, ``tokensPerFill`` added every ``fillInterval``."""

    max_tokens: int
    tokens_per_fill: int = 1
    fill_interval: Duration

    @model_validator(mode="after")
    def _check(self) -> TokenBucketSpec:
        if self.max_tokens < 1 or self.tokens_per_fill < 1:
            raise ValueError("maxTokens and tokensPerFill must be at least 1")
        if (duration_nanos(self.fill_interval) or 0) < MIN_FILL_INTERVAL_NS:
            raise ValueError("fillInterval must be at least 50ms (Envoy's minimum)")
        return self


class DescriptorEntry(Model):
    key: Literal["route", "source.principal", "source.workload", "source.ip", "request.header"]
    header: str | None = None
    value: str | None = None


class RateLimitDescriptor(Model):
    entries: list[DescriptorEntry]
    token_bucket: TokenBucketSpec


class LocalRateLimitSpec(Model):
    workload_selector: RateLimitWorkloadSelector | None = None
    token_bucket: TokenBucketSpec | None = None
    descriptors: list[RateLimitDescriptor] | None = None

    @model_validator(mode="after")
    def _check(self) -> LocalRateLimitSpec:
        if self.token_bucket is None and not self.descriptors:
            raise ValueError("set a tokenBucket, descriptors, or both")
        for i, d in enumerate(self.descriptors or ()):
            if not d.entries:
                raise ValueError(f"descriptors[{i}].entries: needs at least one entry")
            for j, e in enumerate(d.entries):
                if (e.key == "request.header") != bool(e.header):
                    raise ValueError(f"descriptors[{i}].entries[{j}].header: names the header, for key request.header only")
        return self


class LocalRateLimit(Resource):
    """Local token-bucket rate limits in selected proxies (meshwork.io/v1alpha1 LocalRateLimit)."""

    api_version: Literal["meshwork.io/v1alpha1"] = "meshwork.io/v1alpha1"
    kind: Literal["LocalRateLimit"] = "LocalRateLimit"
    spec: LocalRateLimitSpec


REGISTRY.register(KindInfo(
    group=GROUP, versions=("v1alpha1",), kind="LocalRateLimit", plural="localratelimits",
    singular="localratelimit", model=LocalRateLimit, namespaced=True, has_status=False, short_names=("lrl",),
))  # fmt: skip
