"""Outlier detection state: ejection on consecutive errors, readmission after base x n, caps, panic."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshwork.core.mesh.lb import Endpoint, LbConfig, LoadBalancer
from meshwork.core.mesh.outlier import OutlierConfig, OutlierDetector
from meshwork.model.istio_traffic import OutlierDetection

KEYS = [f"127.1.0.{i}:80" for i in range(1, 11)]


def detector(n: int = 10, **cfg: float) -> OutlierDetector:
    return OutlierDetector(OutlierConfig(**cfg), KEYS[:n])  # type: ignore[arg-type]


def fail(d: OutlierDetector, key: str, times: int, now: float, outcome: int | str = 503) -> None:
    for _ in range(times):
        d.record(key, outcome, now)


def test_five_consecutive_5xx_eject_at_once_and_a_success_resets_the_count() -> None:
    d = detector()
    fail(d, KEYS[0], 4, now=0)
    d.record(KEYS[0], 200, 0)
    fail(d, KEYS[0], 4, now=0)
    assert d.ejected(0) == frozenset()
    ejection = d.record(KEYS[0], 500, 1.0)
    assert ejection is not None and ejection.until == 31.0
    assert d.ejected(1.0) == {KEYS[0]}


def test_local_failures_count_as_5xx_and_4xx_does_not() -> None:
    d = detector()
    for outcome in ("connect_failure", "reset", "timeout", 502, 404):
        d.record(KEYS[0], outcome, 0)
    assert d.ejected(0) == frozenset()  # the 404 reset the count
    fail(d, KEYS[1], 5, 0, "connect_failure")
    assert d.ejected(0) == {KEYS[1]}


def test_gateway_errors_counter_ignores_500() -> None:
    d = detector(consecutive_5xx=0, consecutive_gateway=3)
    fail(d, KEYS[0], 2, 0, 502)
    d.record(KEYS[0], 500, 0)
    fail(d, KEYS[0], 2, 0, 504)
    assert not d.ejected(0)
    d.record(KEYS[0], 503, 0)
    assert d.ejected(0) == {KEYS[0]}


def test_readmitted_after_base_times_the_number_of_ejections() -> None:
    d = detector(base_ejection=30.0, interval=10.0)
    fail(d, KEYS[0], 5, now=0)
    assert KEYS[0] in d.ejected(29.9)
    assert d.tick(30.0) == [KEYS[0]] and KEYS[0] not in d.ejected(30.0)
    fail(d, KEYS[0], 5, now=31.0)  # second ejection: 2 x 30 s
    assert KEYS[0] in d.ejected(90.9)
    assert KEYS[0] not in d.ejected(91.0)
    assert d.multiplier(KEYS[0]) == 2
    d.tick(91.0)
    # healthy for a base ejection time: the multiplier shrinks at a later sweep
    d.tick(121.0)
    assert d.multiplier(KEYS[0]) == 1


def test_ejection_time_is_capped_at_max_ejection_time() -> None:
    d = detector(base_ejection=100.0, max_ejection_time=250.0)
    now = 0.0
    durations = []
    for _ in range(4):
        fail(d, KEYS[0], 4, now)
        ejection = d.record(KEYS[0], 503, now)
        assert ejection is not None
        durations.append(ejection.until - now)
        now = ejection.until
        d.tick(now)
    assert durations == [100.0, 200.0, 250.0, 250.0]


def test_max_ejection_percent_caps_ejections_but_one_is_always_allowed() -> None:
    d = detector(n=10, max_ejection_percent=20)
    for key in KEYS[:5]:
        fail(d, key, 5, now=0)
    assert len(d.ejected(0)) == 2
    small = detector(n=3, max_ejection_percent=10)  # 1/3 > 10 %, but one may go
    for key in KEYS[:3]:
        fail(small, key, 5, now=0)
    assert len(small.ejected(0)) == 1


def test_panic_below_min_health_percent_uses_every_endpoint() -> None:
    d = detector(n=4, max_ejection_percent=100, min_health_percent=60)
    fail(d, KEYS[0], 5, 0)
    assert d.unavailable(0) == {KEYS[0]}  # 75 % usable
    fail(d, KEYS[1], 5, 0)
    assert d.ejected(0) == {KEYS[0], KEYS[1]}
    assert d.panic(0) and d.unavailable(0) == frozenset()  # 50 % < 60 %


def test_config_defaults_follow_istio() -> None:
    assert OutlierConfig.from_model(None) is None
    cfg = OutlierConfig.from_model(OutlierDetection())
    assert cfg == OutlierConfig(5, 0, 10.0, 30.0, 10, 0)
    cfg = OutlierConfig.from_model(
        OutlierDetection.model_validate(
            {
                "consecutive5xxErrors": 0,
                "consecutiveGatewayErrors": 2,
                "interval": "1s",
                "baseEjectionTime": "3m",
                "maxEjectionPercent": 50,
                "minHealthPercent": 30,
            }
        )
    )
    assert cfg == OutlierConfig(0, 2, 1.0, 180.0, 50, 30)


class OutlierMachine(RuleBasedStateMachine):
    """Random outcomes and clock steps: ejected hosts are never picked, the cap holds, time readmits."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.cfg = OutlierConfig(
            consecutive_5xx=3, base_ejection=5.0, interval=1.0, max_ejection_percent=50
        )
        self.det = OutlierDetector(self.cfg, KEYS[:6])
        self.lb = LoadBalancer(
            LbConfig("ROUND_ROBIN"), [Endpoint(k.split(":")[0], 80) for k in KEYS[:6]]
        )
        self.until: dict[str, float] = {}

    @rule(host=st.integers(0, 5), outcome=st.sampled_from([200, 500, 503, "reset", 404]))
    def record(self, host: int, outcome: int | str) -> None:
        ejection = self.det.record(KEYS[host], outcome, self.now)
        if ejection is not None:
            self.until[ejection.key] = ejection.until

    @rule(step=st.floats(0.1, 20.0))
    def advance(self, step: float) -> None:
        self.now += step
        self.det.tick(self.now)

    @invariant()
    def ejected_hosts_are_not_picked_and_the_cap_holds(self) -> None:
        out = self.det.unavailable(self.now)
        assert len(out) <= 3  # 50 % of 6
        for key in out:
            assert self.until[key] > self.now  # readmitted once base x n has passed
        pick = self.lb.pick(random.Random(int(self.now * 1000)), unavailable=out)
        assert pick.endpoint is not None and pick.endpoint.key not in out


OutlierMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestOutlierMachine = OutlierMachine.TestCase


@given(st.integers(1, 10), st.integers(0, 100))
def test_ejections_never_exceed_the_cap_except_the_first(n: int, pct: int) -> None:
    d = OutlierDetector(OutlierConfig(max_ejection_percent=pct), KEYS[:n])
    for key in KEYS[:n]:
        fail(d, key, 5, now=0)
    ejected = len(d.ejected(0))
    assert ejected == max(1, int(n * pct / 100 + 1e-9)) or (ejected == 1 and n * pct < 100)
