"""Admission of queued work: policy order, quota, gang, strategies, starvation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.queue.admission import FlavorQuota, Group, Quota, admit, assign, usage_of
from meshwork.core.queue.policy import ordered, policy_of
from meshwork.core.queue.workload import PODS, Workload, parse_duration

ONE_SLOT = Quota((Group(("pods",), (FlavorQuota("default", {"pods": Decimal(1)}),)),))


def wl(name: str, *, pods: int = 1, cpu: str = "0", arrival: float = 0.0, seq: int = 0, priority: int = 0,
       duration: float | None = None, admitted: bool = False, finished: bool = False,
       flavor: str = "default") -> Workload:  # fmt: skip
    requests = {PODS: Decimal(pods), "cpu": Decimal(cpu) * pods}
    return Workload(
        kind="Job", namespace="default", name=name, queue="q", arrival=arrival, sequence=seq or hash(name) % 1000,
        requests=requests, priority=priority, duration=duration, admitted_by="cq" if admitted else None,
        flavors={r: flavor for r in requests} if admitted else {}, finished=finished,
    )  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("12", 12.0), ("1.5", 1.5),
    ("", None), ("abc", None), ("5x", None), ("-3", None), ("3s5", None), (None, None),
])  # fmt: skip
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# The fixed mix of the scheduling-policy test: (name, declared seconds, priority), arriving in this order.
MIX = [("a", 8.0, 1), ("b", 3.0, 5), ("c", 5.0, 2), ("d", 1.0, 1), ("e", 6.0, 9), ("f", 2.0, 3)]


def mix() -> list[Workload]:
    return [wl(n, arrival=1000.0, seq=i + 1, duration=d, priority=p) for i, (n, d, p) in enumerate(MIX)]


@pytest.mark.parametrize(("policy", "order"), [
    ("FIFO", "abcdef"), ("Priority", "ebfcad"), ("ShortestJobFirst", "dfbcea"),
])  # fmt: skip
def test_policy_orders_the_mix(policy: str, order: str) -> None:
    chosen = policy_of({"meshwork.io/queueing-policy": policy})
    assert not isinstance(chosen, str)
    assert "".join(w.name for w in ordered(mix(), chosen[0], chosen[1])) == order


def test_policy_annotation_defaults_and_errors() -> None:
    assert policy_of(None) == ("Priority", 0.1)
    assert policy_of({"meshwork.io/queueing-policy": "sjf", "meshwork.io/sjf-ageing-factor": "0.5"}) == (
        "ShortestJobFirst", 0.5)
    assert isinstance(policy_of({"meshwork.io/queueing-policy": "random"}), str)
    assert isinstance(policy_of({"meshwork.io/sjf-ageing-factor": "-1"}), str)


def test_sjf_ageing_lets_an_old_long_job_ahead_of_new_short_ones() -> None:
    old_long = wl("long", arrival=0.0, duration=100.0)
    new_short = wl("short", arrival=500.0, duration=1.0)  # 100 - 0.1*500 = 50 > 1: still behind
    newer_short = wl("later", arrival=1200.0, duration=1.0)  # 1 + 0.1*1200 = 121 > 100: now behind the long job
    names = [w.name for w in ordered([newer_short, old_long, new_short], "ShortestJobFirst", 0.1)]
    assert names == ["short", "long", "later"]


def test_gang_is_admitted_whole_or_not_at_all() -> None:
    quota = Quota((Group(("cpu", "pods"), (FlavorQuota("default", {"cpu": Decimal(4), "pods": Decimal(10)}),)),))
    running = wl("running", pods=1, cpu="1", admitted=True)
    gang = wl("gang", pods=4, cpu="1", seq=1)  # needs 4 cpu, 3 are free
    small = wl("small", pods=2, cpu="1", seq=2)
    d = admit(quota, [running, gang, small], "FIFO")
    assert [a.workload.name for a in d.admitted] == ["small"]
    assert "cpu" in d.reasons[gang.key] and "1 more needed" in d.reasons[gang.key]
    strict = admit(quota, [running, gang, small], "FIFO", strategy="StrictFIFO")
    assert strict.admitted == ()
    assert "StrictFIFO" in strict.reasons[small.key]


def test_finished_work_gives_its_quota_back_and_hold_admits_nothing() -> None:
    done = wl("done", admitted=True, finished=True)
    nxt = wl("next", seq=5)
    assert [a.workload.name for a in admit(ONE_SLOT, [done, nxt], "FIFO").admitted] == ["next"]
    assert admit(ONE_SLOT, [done, nxt], "FIFO", held=True).admitted == ()


def test_flavors_are_tried_in_order_and_uncovered_resources_refused() -> None:
    quota = Quota((Group(("cpu",), (FlavorQuota("small", {"cpu": Decimal(1)}), FlavorQuota("big", {"cpu": Decimal(8)}))),))
    assert assign(quota, {}, {"cpu": Decimal(1)}) == {"cpu": "small"}
    assert assign(quota, {}, {"cpu": Decimal(2)}) == {"cpu": "big"}
    assert assign(quota, {("small", "cpu"): Decimal(1)}, {"cpu": Decimal(1)}) == {"cpu": "big"}
    assert assign(quota, {}, {"cpu": Decimal(1), "pods": Decimal(1)}) == {"cpu": "small"}  # pods: uncovered, ignored
    why = assign(quota, {}, {"nvidia.com/gpu": Decimal(1)})
    assert why == "resource nvidia.com/gpu unavailable in ClusterQueue"


workloads = st.lists(
    st.tuples(st.integers(1, 5), st.integers(0, 3), st.integers(0, 20), st.booleans(), st.booleans()),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(workloads, st.integers(0, 10), st.integers(0, 12), st.sampled_from(["FIFO", "Priority", "ShortestJobFirst"]),
       st.sampled_from(["StrictFIFO", "BestEffortFIFO"]))  # fmt: skip
def test_admission_never_exceeds_quota(raw: list[tuple[int, int, int, bool, bool]], cpu_quota: int, pod_quota: int,
                                       policy: str, strategy: str) -> None:  # fmt: skip
    quota = Quota((Group(("cpu", "pods"), (
        FlavorQuota("a", {"cpu": Decimal(cpu_quota), "pods": Decimal(pod_quota)}),
        FlavorQuota("b", {"cpu": Decimal(cpu_quota // 2), "pods": Decimal(pod_quota // 2)}),
    )),))  # fmt: skip
    items = [wl(f"w{i}", pods=p, cpu=str(c), seq=i + 1, priority=prio, duration=float(prio), finished=fin)
             for i, (p, c, prio, fin, _) in enumerate(raw)]  # fmt: skip
    # some already admitted, but only as many as fit (the previous pass kept the quota)
    first = admit(quota, items, "FIFO")  # type: ignore[arg-type]
    admitted = {a.workload.key: a.flavors for a in first.admitted if raw[int(a.workload.name[1:])][4]}
    state = [Workload(**{**{s: getattr(w, s) for s in w.__slots__},  # type: ignore[arg-type]
                         "admitted_by": "cq" if w.key in admitted else None, "flavors": admitted.get(w.key, {})})
             for w in items]  # fmt: skip
    d = admit(quota, state, policy, strategy=strategy)  # type: ignore[arg-type]
    nominal = quota.nominal()
    for key, used in d.usage.items():
        assert used <= nominal[key], (key, used)
    recount = usage_of([*state, *(Workload(**{**{s: getattr(a.workload, s) for s in a.workload.__slots__},  # type: ignore[arg-type]
                                                "admitted_by": "cq", "flavors": a.flavors}) for a in d.admitted)])
    assert {k: v for k, v in recount.items() if v} == {k: v for k, v in d.usage.items() if v}
    # gang: every admitted workload has a flavor for every covered resource it asks for
    for a in d.admitted:
        assert set(a.flavors) == {"cpu", "pods"}
        assert len(set(a.flavors.values())) == 1
    # and nothing waits that BestEffortFIFO could have admitted on the final usage
    if strategy == "BestEffortFIFO":
        for w in d.pending:
            assert isinstance(assign(quota, d.usage, w.requests), str)


def simulate(jobs: list[tuple[float, float]], ageing: float) -> list[tuple[int, float]]:
    """One slot; jobs (arrival, duration) run for their duration. Returns (job, admitted at) in order."""
    clock = 0.0
    running: tuple[int, float] | None = None  # (job, ends at)
    started: dict[int, float] = {}
    while len(started) < len(jobs):
        if running is not None:
            clock = running[1]
            running = None
        arrived = [i for i, (a, _) in enumerate(jobs) if a <= clock and i not in started]
        if not arrived:
            clock = min(a for i, (a, _) in enumerate(jobs) if i not in started)
            continue
        view = [wl(f"j{i}", arrival=jobs[i][0], seq=i + 1, duration=jobs[i][1]) for i in arrived]
        d = admit(ONE_SLOT, view, "ShortestJobFirst", ageing=ageing)
        assert len(d.admitted) == 1
        j = int(d.admitted[0].workload.name[1:])
        started[j] = clock
        running = (j, clock + jobs[j][1])
    return sorted(started.items(), key=lambda kv: (kv[1], kv[0]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 200, allow_nan=False), st.floats(0.5, 60, allow_nan=False)), min_size=1,
                max_size=25), st.floats(0.01, 2.0))  # fmt: skip
def test_sjf_with_ageing_bounds_who_may_overtake(jobs: list[tuple[float, float]], ageing: float) -> None:
    """Every job is admitted, and a job that arrived later than J only overtakes J when
    its duration is shorter by more than the ageing J earned: ``d_K + f*a_K <= d_J + f*a_J``.
    Only finitely many arrivals satisfy that, so J is never starved."""
    order = simulate(jobs, ageing)
    assert sorted(j for j, _ in order) == list(range(len(jobs)))
    started = dict(order)
    for j, (a_j, d_j) in enumerate(jobs):
        for k, (a_k, d_k) in enumerate(jobs):
            if a_k > a_j and started[k] < started[j]:
                assert d_k + ageing * a_k <= d_j + ageing * a_j + 1e-9


def test_without_ageing_a_long_job_starves_behind_a_stream_of_short_ones() -> None:
    stream = [(0.0, 100.0)] + [(0.5 * i, 1.0) for i in range(400)]  # short jobs arrive faster than they run
    assert simulate(stream, 0.0)[-1][0] == 0  # pure SJF: the long job goes last, after the whole stream
    aged = simulate(stream, 0.5)  # 100 + 0.5*0 < 1 + 0.5*a once a > 198: later arrivals queue behind it
    position = [j for j, _ in aged].index(0)
    assert position < 400
    # everyone admitted after it arrived at or after the cut-off (at it: a tie, which FIFO gives the long job)
    assert all(stream[k][0] >= 198 for k, _ in aged[position + 1:])
    assert len(aged) - position - 1 > 0
