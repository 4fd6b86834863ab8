"""Load balancing: round robin, random, least request (P2C), consistent hashing, exclusion for retries."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshcases import istio, service, table

from meshwork.core.mesh.hashring import Maglev, Ring, is_prime
from meshwork.core.mesh.lb import (
    Endpoint,
    HashInput,
    HashPolicy,
    LbConfig,
    LoadBalancer,
    parse_cookies,
)
from meshwork.model.istio_traffic import LoadBalancerSettings


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"127.1.0.{i + 1}", 8080, {"version": f"v{i % 2}"}) for i in range(n)]


def test_round_robin_cycles_and_skips_unusable_endpoints() -> None:
    lb = LoadBalancer(LbConfig("ROUND_ROBIN"), endpoints(3))
    rng = random.Random(0)
    keys = [lb.pick(rng).endpoint.key for _ in range(6)]  # type: ignore[union-attr]
    assert keys == ["127.1.0.1:8080", "127.1.0.2:8080", "127.1.0.3:8080"] * 2
    out = {"127.1.0.2:8080"}
    assert {lb.pick(rng, unavailable=out).endpoint.key for _ in range(6)} == {
        "127.1.0.1:8080",
        "127.1.0.3:8080",
    }  # type: ignore[union-attr]


def test_random_spreads_evenly() -> None:
    lb = LoadBalancer(LbConfig("RANDOM"), endpoints(4))
    rng = random.Random(5)
    counts = Counter(lb.pick(rng).endpoint.key for _ in range(8000))  # type: ignore[union-attr]
    assert all(abs(c / 8000 - 0.25) <= 0.03 for c in counts.values()) and len(counts) == 4


@given(st.lists(st.integers(0, 20), min_size=1, max_size=8), st.integers(0, 2**32))
def test_least_request_never_picks_the_busier_of_the_two_sampled(
    active: list[int], seed: int
) -> None:
    eps = endpoints(len(active))
    lb = LoadBalancer(LbConfig("LEAST_REQUEST"), eps)
    for ep, count in zip(eps, active, strict=True):
        for _ in range(count):
            lb.request_started(ep.key)
    pick = lb.pick(random.Random(seed))
    assert pick.endpoint is not None and len(pick.sampled) == 2
    assert lb.active(pick.endpoint.key) == min(lb.active(k) for k in pick.sampled)
    assert pick.endpoint.key == min(pick.sampled, key=lb.active)  # ties: the first drawn


def test_least_request_prefers_idle_endpoints_over_time() -> None:
    eps = endpoints(2)
    lb = LoadBalancer(LbConfig("LEAST_REQUEST"), eps)
    for _ in range(10):
        lb.request_started(eps[0].key)
    rng = random.Random(1)
    counts = Counter(lb.pick(rng).endpoint.key for _ in range(1000))  # type: ignore[union-attr]
    assert counts[eps[1].key] > counts[eps[0].key]
    lb.request_finished(eps[0].key)
    assert lb.active(eps[0].key) == 9


@given(
    st.sampled_from(["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "RING_HASH", "MAGLEV"]),
    st.sets(st.integers(0, 5), max_size=5),
    st.integers(0, 2**32),
    st.text(max_size=8),
)
@settings(deadline=None, max_examples=60)
def test_an_ejected_endpoint_is_never_picked_while_another_is_usable(
    policy: str, ejected_ix: set[int], seed: int, key: str
) -> None:
    eps = endpoints(6)
    config = LbConfig(policy, HashPolicy("header", "x-user"), ring_size=64, table_size=251)  # type: ignore[arg-type]
    lb = LoadBalancer(config, eps)
    ejected = {eps[i].key for i in ejected_ix}
    pick = lb.pick(
        random.Random(seed), hash_input=HashInput(headers={"x-user": key}), unavailable=ejected
    )
    assert pick.endpoint is not None and pick.endpoint.key not in ejected


def test_nothing_usable_picks_nothing_and_exclusion_yields_when_alone() -> None:
    eps = endpoints(2)
    lb = LoadBalancer(LbConfig("ROUND_ROBIN"), eps)
    rng = random.Random(0)
    assert lb.pick(rng, unavailable={e.key for e in eps}).endpoint is None
    assert lb.pick(rng, exclude={eps[0].key}).endpoint == eps[1]
    # a retry with every other host tried goes back to a tried one
    assert lb.pick(rng, unavailable={eps[1].key}, exclude={eps[0].key}).endpoint == eps[0]
    assert LoadBalancer(LbConfig("PASSTHROUGH"), eps).pick(rng).passthrough


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "RING_HASH"])
def test_a_retry_goes_to_a_different_host(policy: str) -> None:
    eps = endpoints(3)
    lb = LoadBalancer(LbConfig(policy, HashPolicy("header", "x-user")), eps)  # type: ignore[arg-type]
    rng = random.Random(2)
    for _ in range(50):
        first = lb.pick(rng, hash_input=HashInput(headers={"x-user": "ann"})).endpoint
        assert first is not None
        again = lb.pick(
            rng, hash_input=HashInput(headers={"x-user": "ann"}), exclude={first.key}
        ).endpoint
        assert again is not None and again.key != first.key


KEYS = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=40, unique=True)


@settings(deadline=None, max_examples=40)
@given(n=st.integers(2, 9), keys=KEYS, leaving=st.integers(0, 8))
def test_ring_hash_is_stable_and_moves_only_the_keys_of_a_leaving_endpoint(
    n: int, keys: list[str], leaving: int
) -> None:
    eps = endpoints(n)
    gone = eps[leaving % n]
    config = LbConfig("RING_HASH", HashPolicy("header", "k"), ring_size=256)
    before = LoadBalancer(config, eps)
    again = LoadBalancer(config, list(eps))
    after = LoadBalancer(config, [e for e in eps if e != gone])
    for key in keys:
        owner = before.endpoint_for(key)
        assert owner == again.endpoint_for(key)  # stable: same key, same endpoint
        if owner != gone:
            assert after.endpoint_for(key) == owner  # minimal disruption
        # skipping an ejected endpoint lands where a rebuild without it would
        assert before.endpoint_for(key, {e.key for e in eps if e != gone}) == after.endpoint_for(
            key
        )


def test_maglev_is_stable_and_disrupts_few_keys_when_an_endpoint_leaves() -> None:
    eps = endpoints(8)
    config = LbConfig("MAGLEV", HashPolicy("header", "k"), table_size=4099)
    before = LoadBalancer(config, eps)
    after = LoadBalancer(config, eps[1:])
    keys = [f"user-{i}" for i in range(3000)]
    owners = {k: before.endpoint_for(k) for k in keys}
    rebuilt = LoadBalancer(config, list(eps))
    assert owners == {k: rebuilt.endpoint_for(k) for k in keys}
    kept = [k for k in keys if owners[k] != eps[0]]
    moved = sum(after.endpoint_for(k) != owners[k] for k in kept)
    assert moved / len(kept) < 0.05  # Maglev's near-minimal disruption
    spread = Counter(owners.values())
    assert all(abs(c / 3000 - 1 / 8) < 0.04 for c in spread.values())


def test_maglev_table_is_filled_evenly_and_needs_a_prime_size() -> None:
    assert is_prime(65537) and not is_prime(65536)
    with pytest.raises(ValueError, match="prime"):
        Maglev(["a"], 100)
    table_ = Maglev([f"h{i}" for i in range(5)], 1009)
    counts = Counter(next(table_.lookup(slot)) for slot in range(1009))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert Ring(["a", "b"], 10).size == 20


def test_cookie_hash_sets_a_cookie_when_absent_and_sticks_to_it() -> None:
    config = LbConfig("RING_HASH", HashPolicy("cookie", "user", "/", 30.0))
    lb = LoadBalancer(config, endpoints(5))
    rng = random.Random(4)
    first = lb.pick(rng, hash_input=HashInput())
    assert first.set_cookie is not None and first.endpoint is not None
    assert (
        first.set_cookie.header_value()
        == f"user={first.set_cookie.value}; Max-Age=30; Path=/; HttpOnly"
    )
    cookies = parse_cookies(f"a=1; user={first.set_cookie.value}")
    for _ in range(20):
        again = lb.pick(rng, hash_input=HashInput(cookies=cookies))
        assert again.endpoint == first.endpoint and again.set_cookie is None
    no_ttl = LoadBalancer(LbConfig("RING_HASH", HashPolicy("cookie", "user")), endpoints(5))
    assert no_ttl.pick(rng, hash_input=HashInput()).set_cookie is None


def test_source_ip_and_query_parameter_hashing() -> None:
    for policy in (HashPolicy("source_ip"), HashPolicy("query", "id")):
        lb = LoadBalancer(LbConfig("RING_HASH", policy), endpoints(6))
        rng = random.Random(9)
        inp = HashInput(source_ip="127.1.9.9", query={"id": "42"})
        assert len({lb.pick(rng, hash_input=inp).endpoint for _ in range(20)}) == 1


def test_lb_config_from_destination_rule_settings() -> None:
    assert LbConfig.from_model(None).policy == "LEAST_REQUEST"  # Istio's default
    assert LbConfig.from_model(LoadBalancerSettings(simple="ROUND_ROBIN")).policy == "ROUND_ROBIN"
    ch = LbConfig.from_model(
        LoadBalancerSettings.model_validate({"consistentHash": {"httpHeaderName": "X-User"}})
    )
    assert (ch.policy, ch.ring_size, ch.hash_policy) == (
        "RING_HASH",
        1024,
        HashPolicy("header", "x-user"),
    )
    mg = LbConfig.from_model(
        LoadBalancerSettings.model_validate(
            {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 1009}}}
        )
    )
    assert (mg.policy, mg.table_size) == ("MAGLEV", 1009)
    cookie = LbConfig.from_model(
        LoadBalancerSettings.model_validate(
            {"consistentHash": {"httpCookie": {"name": "sess", "ttl": "0s"}, "minimumRingSize": 42}}
        )
    )
    assert cookie.hash_policy == HashPolicy("cookie", "sess", None, 0.0) and cookie.ring_size == 42


def test_subset_endpoints_feed_the_balancer() -> None:
    dr = istio(
        "DestinationRule",
        "web",
        {"host": "web", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]},
    )
    t = table([dr], [service("web", versions=("v1", "v2", "v2"))])
    cluster = t.clusters["outbound|9080|v2|web.default.svc.cluster.local"]
    lb = LoadBalancer(cluster.lb, cluster.endpoints)
    rng = random.Random(0)
    assert {lb.pick(rng).endpoint.labels["version"] for _ in range(30)} == {"v2"}  # type: ignore[union-attr]
