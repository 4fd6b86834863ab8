"""proxy.heads (hop-by-hop stripping, edits) and proxy.static (load balancers, Istio's retry default)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.http1 import Request, RequestParser
from meshwork.proxy.heads import local_reply, request_head, response_head
from meshwork.proxy.plan import Endpoint, ErrorKind, Forward, HeaderEdits
from meshwork.proxy.static import StaticCluster, istio_default_retry_on, parse_endpoints

EPS = parse_endpoints("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")


def parse(raw: bytes) -> Request:
    p = RequestParser(max_body=None)
    p.receive_data(raw)
    event = p.next_event()
    assert isinstance(event, Request)
    return event


PLAN = Forward(StaticCluster(EPS))


def test_plain_head_is_forwarded_as_it_came() -> None:
    raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    req = parse(raw)
    assert request_head(req, PLAN) is req.head


def test_hop_by_hop_and_nominated_fields_are_removed() -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
           b"X-Secret: s\r\nTE: trailers\r\nX-Keep: k\r\n\r\n")
    out = request_head(parse(raw), PLAN)
    assert out == b"GET / HTTP/1.1\r\nHost: x\r\nX-Keep: k\r\n\r\n"


def test_http10_asks_upstream_for_keep_alive_and_upgrade_keeps_upgrade() -> None:
    out = request_head(parse(b"GET / HTTP/1.0\r\n\r\n"), PLAN)
    assert out == b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    raw = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    out = request_head(parse(raw), PLAN)
    assert out == b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"


def test_rewrites_and_header_edits() -> None:
    plan = Forward(
        PLAN.cluster,
        rewrite_path=b"/v2?q=1",  # the whole new target: routing decides what becomes of the query
        rewrite_authority=b"backend",
        request_headers=HeaderEdits(set=((b"X-Set", b"1"),), add=((b"X-Add", b"2"),), remove=(b"x-drop",)),
    )
    raw = b"GET /v1?q=1 HTTP/1.1\r\nHost: x\r\nX-Drop: d\r\nX-Set: old\r\n\r\n"
    out = request_head(parse(raw), plan)
    assert out == b"GET /v2?q=1 HTTP/1.1\r\nHost: backend\r\nX-Set: 1\r\nX-Add: 2\r\n\r\n"
    proxied = parse(b"GET http://reviews:9080/r?x=1 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
    out = request_head(proxied, Forward(PLAN.cluster, rewrite_path=b"/r?x=1"))
    assert out == b"GET /r?x=1 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"  # absolute form made origin form


def test_response_head_edits() -> None:
    head = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX: 1\r\n\r\n"
    assert response_head(head, close=True) == b"HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\n\r\n"
    assert response_head(head, close=False) == b"HTTP/1.1 200 OK\r\nX: 1\r\n\r\n"
    edited = response_head(head, close=False, edits=HeaderEdits(add=((b"X-R", b"r"),)))
    assert edited == b"HTTP/1.1 200 OK\r\nX: 1\r\nX-R: r\r\n\r\n"


def test_local_reply() -> None:
    out = local_reply(503, b"no healthy upstream", close=False, reason="none left")
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-length: 19\r\n" in out and b"x-meshwork-reason: none left\r\n" in out
    assert out.endswith(b"\r\n\r\nno healthy upstream")


def test_round_robin_cycles_and_avoids_excluded() -> None:
    c = StaticCluster(EPS, "round_robin")
    assert [c.pick(frozenset()) for _ in range(6)] == [*EPS, *EPS]
    for _ in range(6):
        assert c.pick(frozenset({EPS[0]})) != EPS[0]
    assert c.pick(frozenset(EPS)) in EPS  # all tried: still an answer


@given(st.integers(0, 2**32), st.lists(st.sampled_from(EPS), max_size=2, unique=True))
def test_every_policy_honours_exclude_while_another_exists(seed: int, exclude: list[Endpoint]) -> None:
    for lb in ("round_robin", "least_request", "random"):
        c = StaticCluster(EPS, lb, rng=random.Random(seed))  # type: ignore[arg-type]
        for _ in range(5):
            assert c.pick(frozenset(exclude)) not in exclude


def test_least_request_prefers_the_less_loaded() -> None:
    c = StaticCluster(EPS, "least_request", rng=random.Random(7))
    busy = EPS[0]
    for _ in range(50):
        c._active[busy.key] += 1  # busy has many requests in flight
    picks: Counter[Endpoint] = Counter()
    for _ in range(300):
        e = c.pick(frozenset())
        assert e is not None
        picks[e] += 1
        c.release(e, 200)  # the others finish at once; busy's stay in flight
    assert picks[busy] == 0  # with two choices, the busy one never wins a comparison
    assert picks[EPS[1]] > 50 and picks[EPS[2]] > 50


def test_release_balances_pick() -> None:
    c = StaticCluster(EPS, "least_request", rng=random.Random(1))
    picked = [c.pick(frozenset()) for _ in range(10)]
    for e in picked:
        assert e is not None
        c.release(e, 200)
    assert all(c.active(e) == 0 for e in EPS)


@pytest.mark.parametrize(
    ("outcome", "retry"),
    [(503, True), (500, False), (502, False), (200, False),
     (ErrorKind.CONNECT_FAILURE, True), (ErrorKind.RESET, False), (ErrorKind.TIMEOUT, False)],
)
def test_istio_default_retry_on(outcome: object, retry: bool) -> None:
    assert istio_default_retry_on(outcome) is retry  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "host", "host:", ":80", "h:0", "h:70000", "h:8x"])
def test_parse_endpoints_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoints(bad)
