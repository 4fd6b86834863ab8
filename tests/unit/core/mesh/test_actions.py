"""What a matched route does: weights, redirect, rewrite, headers, fault, mirror, CORS, retries."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshcases import get, istio, manifests, service, table

from meshwork.core.mesh.compile_http import retry_policy
from meshwork.core.mesh.route import (
    Request,
    RouteDecision,
    apply_header_ops,
    match_route,
    pick_weighted,
    retry_backoff,
    retry_on,
    shadow_authority,
)
from meshwork.core.mesh.snapshot import ProxyInfo
from meshwork.core.mesh.table import DEFAULT_RETRY, HeaderOps, WeightedDestination
from meshwork.model.istio_http import HTTPRetry


def decide(http: dict[str, Any], req: Request | None = None, seed: int = 0) -> RouteDecision:
    http.setdefault("route", [{"destination": {"host": "web"}}])
    vs = istio("VirtualService", "web", {"hosts": ["web"], "http": [http]})
    t = table([vs], [service("web", port=8080), service("mirror", port=8080, base=30)])
    return match_route(t, req or get("web:8080", "/", port=8080), random.Random(seed))


def dests(weights: list[int]) -> list[WeightedDestination]:
    return [WeightedDestination(f"c{i}", "h", 80, None, w) for i, w in enumerate(weights)]


@given(st.lists(st.integers(0, 100), min_size=1, max_size=5).filter(lambda ws: sum(ws) > 0))
def test_evenly_spread_draws_give_exact_proportions(weights: list[int]) -> None:
    total = sum(weights)
    picked = Counter(pick_weighted(dests(weights), (i + 0.5) / total).cluster for i in range(total))
    assert {f"c{i}": w for i, w in enumerate(weights) if w} == dict(picked)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=2, max_size=4), st.integers(0, 2**32))
def test_weighted_choice_stays_within_three_percent(weights: list[int], seed: int) -> None:
    rng = random.Random(seed)
    n = 4000
    total = sum(weights)
    picked = Counter(pick_weighted(dests(weights), rng.random()).cluster for _ in range(n))
    for i, w in enumerate(weights):
        assert abs(picked[f"c{i}"] / n - w / total) <= 0.03


def test_redirect_defaults_to_301_and_keeps_the_query() -> None:
    d = decide(
        {"redirect": {"uri": "/v2/items"}, "route": None},
        get("web:8080", "/v1/items?page=2", port=8080),
    )
    assert (d.action, d.status, d.location) == ("redirect", 301, "http://web:8080/v2/items?page=2")
    d = decide(
        {
            "redirect": {"authority": "new.example.com", "scheme": "https", "redirectCode": 308},
            "route": None,
        },
        get("web", "/a", port=8080),
    )
    assert (d.status, d.location) == (308, "https://new.example.com/a")
    d = decide({"redirect": {"port": 9443}, "route": None}, get("web", "/a", port=8080))
    assert d.location == "http://web:9443/a"
    assert ("location", d.location) in d.response_extra


def test_prefix_rewrite_replaces_the_matched_part() -> None:
    d = decide(
        {"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new"}},
        get("web", "/old/page?x=1", port=8080),
    )
    assert d.path == "/new/page?x=1"
    d = decide(
        {"match": [{"uri": {"exact": "/login"}}], "rewrite": {"uri": "/auth/login"}},
        get("web", "/login?next=/", port=8080),
    )
    assert d.path == "/auth/login?next=/"
    d = decide({"rewrite": {"uri": "/v2/"}}, get("web", "/items", port=8080))
    assert d.path == "/v2/items"  # no URI match: Envoy's prefix is "/"
    d = decide(
        {
            "rewrite": {
                "uriRegexRewrite": {
                    "match": "^/service/([^/]+)(/.*)$",
                    "rewrite": "\\2/instance/\\1",
                }
            }
        },
        get("web", "/service/foo/v1/api?q=1", port=8080),
    )
    assert d.path == "/v1/api/instance/foo?q=1"
    d = decide({"rewrite": {"authority": "web.internal"}})
    assert d.authority == "web.internal"


def test_header_operations_route_then_destination() -> None:
    d = decide(
        {
            "headers": {
                "request": {"set": {"x-a": "route"}, "add": {"x-b": "1"}, "remove": ["cookie"]},
                "response": {"set": {"x-served": "r"}},
            },
            "route": [
                {"destination": {"host": "web"}, "headers": {"request": {"set": {"X-A": "dest"}}}}
            ],
        }
    )
    out = apply_header_ops(
        [("x-a", "client"), ("cookie", "c=1"), ("accept", "*/*")], d.request_headers
    )
    assert out == [("accept", "*/*"), ("x-b", "1"), ("x-a", "dest")]
    assert apply_header_ops([], d.response_headers) == [("x-served", "r")]


@pytest.mark.parametrize("percent", [0.0, 25.0, 100.0])
def test_abort_at_its_percentage(percent: float) -> None:
    http = {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": percent}}}}
    n = 2000
    aborted = sum(decide(dict(http), seed=i).action == "reply" for i in range(n))
    assert abs(aborted / n - percent / 100) <= 0.03


def test_delay_and_abort_without_percentage_never_fire() -> None:
    d = decide({"fault": {"delay": {"fixedDelay": "2s"}, "abort": {"httpStatus": 500}}})
    assert (d.action, d.delay, d.flags) == ("forward", 0.0, ())


def test_fault_injection_conformance_file_delays_then_aborts_matching_requests() -> None:
    # sourceLabels version=v1: only a v1 client's sidecar gets the faulty route
    v2 = table(
        manifests("testdata/config/rule-fault-injection.yaml"),
        proxy=ProxyInfo("c", "testns", {"version": "v2"}),
    )
    v1 = table(
        manifests("testdata/config/rule-fault-injection.yaml"),
        proxy=ProxyInfo("c", "testns", {"version": "v1"}),
    )
    req = Request("GET", "/", "fault.test.istio.io:8080", {"version": "v2"}, 8080)
    d = match_route(v1, req, random.Random(0))
    assert (d.status, d.delay, d.flags) == (503, 5.0, ("DI", "FI"))
    assert match_route(v2, req, random.Random(0)).flags == ("NR",)


def test_mirror_copies_at_its_percentage_and_shadows_the_host() -> None:
    http = {"mirror": {"host": "mirror"}, "mirrorPercentage": {"value": 50.0}}
    n = 2000
    mirrored = sum(bool(decide(dict(http), seed=i).mirrors) for i in range(n))
    assert abs(mirrored / n - 0.5) <= 0.03
    always = decide({"mirrors": [{"destination": {"host": "mirror"}}]})
    assert [m.cluster for m in always.mirrors] == [
        "outbound|8080||mirror.default.svc.cluster.local"
    ]
    assert shadow_authority("mirror:8080") == "mirror-shadow:8080"
    assert shadow_authority("mirror") == "mirror-shadow"


def test_cors_conformance_policy_answers_preflights_and_decorates_answers() -> None:
    t = table(manifests("testdata/config/rule-default-route-cors-policy.yaml"))
    pre = Request(
        "OPTIONS",
        "/",
        "cors.test.istio.io",
        {"origin": "http://foo.example", "access-control-request-method": "POST"},
        80,
    )
    d = match_route(t, pre, random.Random(0))
    assert d.action == "preflight" and d.status == 200
    assert dict(d.response_extra) == {
        "access-control-allow-origin": "http://foo.example",
        "access-control-allow-methods": "POST,GET,OPTIONS",
        "access-control-allow-headers": "content-type",
        "access-control-max-age": "300",
        "access-control-allow-credentials": "true",
    }
    simple = match_route(
        t,
        Request("GET", "/", "cors.test.istio.io", {"origin": "http://foo.example"}, 80),
        random.Random(0),
    )
    assert simple.action == "forward"
    assert dict(simple.response_extra)["access-control-expose-headers"] == "x-custom-header"
    stranger = Request(
        "OPTIONS",
        "/",
        "cors.test.istio.io",
        {"origin": "http://evil.example", "access-control-request-method": "POST"},
        80,
    )
    assert (
        match_route(t, stranger, random.Random(0)).action == "forward"
    )  # unmatched preflights are forwarded


def test_default_retry_policy_retries_503_and_connect_failures_only() -> None:
    assert retry_on(DEFAULT_RETRY, 503)
    assert retry_on(DEFAULT_RETRY, "connect_failure")
    assert retry_on(DEFAULT_RETRY, "refused_stream")
    assert not retry_on(DEFAULT_RETRY, 500)
    assert not retry_on(DEFAULT_RETRY, "reset")
    assert not retry_on(DEFAULT_RETRY, "timeout")


@pytest.mark.parametrize(
    ("retry_on_text", "outcome", "expected"),
    [
        ("5xx", 500, True),
        ("5xx", 599, True),
        ("5xx", 404, False),
        ("5xx", "reset", True),
        ("5xx", "timeout", True),
        ("5xx", "connect_failure", True),
        ("gateway-error", 502, True),
        ("gateway-error", 500, False),
        ("gateway-error", "timeout", True),
        ("reset", "reset", True),
        ("reset", 503, False),
        ("connect-failure", "connect_failure", True),
        ("connect-failure", "reset", False),
        ("retriable-4xx", 409, True),
        ("retriable-4xx", 404, False),
        ("503", 503, True),
        ("503", 502, False),
        ("reset,503,504", 504, True),
        ("refused-stream", "refused_stream", True),
        ("refused-stream", "reset", False),
    ],
)
def test_retry_conditions(retry_on_text: str, outcome: int | str, expected: bool) -> None:
    policy = retry_policy(HTTPRetry(attempts=3, retry_on=retry_on_text))
    assert retry_on(policy, outcome) is expected


def test_retry_policy_translation() -> None:
    assert retry_policy(None) == DEFAULT_RETRY
    off = retry_policy(HTTPRetry(attempts=0))
    assert off.attempts == 0 and not retry_on(off, 503)
    p = retry_policy(HTTPRetry(attempts=3, per_try_timeout="2s", retry_on="gateway-error,503"))
    assert p.attempts == 3 and p.per_try_timeout == 2.0
    assert p.retry_on == {"gateway-error", "retriable-status-codes"} and p.status_codes == {503}
    kept = retry_policy(HTTPRetry(attempts=5))
    assert kept.retry_on == DEFAULT_RETRY.retry_on and kept.attempts == 5
    d = decide(
        {"retries": {"attempts": 4, "perTryTimeout": "1s", "retryOn": "5xx"}, "timeout": "10s"}
    )
    assert (d.retry.attempts, d.retry.per_try_timeout, d.timeout) == (4, 1.0, 10.0)


@given(st.integers(1, 10), st.floats(0, 1, exclude_max=True))
def test_backoff_is_jittered_and_capped(retry: int, draw: float) -> None:
    wait = retry_backoff(DEFAULT_RETRY, retry, draw)
    assert 0 <= wait <= min((2**retry - 1) * 0.025, 0.25) + 1e-12


def test_apply_header_ops_keeps_other_headers_in_order() -> None:
    ops = (HeaderOps(set=(("x", "1"),), remove=("y",)),)
    assert apply_header_ops([("a", "1"), ("X", "0"), ("y", "2"), ("b", "3")], ops) == [
        ("a", "1"),
        ("b", "3"),
        ("x", "1"),
    ]
