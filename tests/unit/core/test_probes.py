"""Probe state machine and probe targets (meshwork.core.probes), driven with a fake clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.probes import (
    FAST_READINESS_MAX_S,
    FAST_READINESS_WINDOW_S,
    PROBE_USER_AGENT,
    Decision,
    ExecTarget,
    GRPCTarget,
    HTTPRequest,
    KillContainer,
    ProbeResult,
    ProbeTracker,
    ProbeType,
    SetReady,
    SetStarted,
    TCPTarget,
    UnresolvedTarget,
    probe_target,
)
from meshwork.core.restart import ContainerEvent
from meshwork.model.pod import Container, Probe

IP = "127.1.0.5"


def container(**probes: dict[str, Any]) -> Container:
    body: dict[str, Any] = {"name": "app", "image": "i",
                            "ports": [{"name": "http", "containerPort": 8080}]}  # fmt: skip
    body.update(probes)
    return Container.model_validate(body)


def http_probe(**timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/healthz", "port": "http"}, **timing}


class Driver:
    """Runs a tracker on a fake clock; ``outcome(type, now)`` says whether a probe passes."""

    def __init__(self, tracker: ProbeTracker) -> None:
        self.tracker = tracker
        self.log: list[tuple[float, ProbeType]] = []
        self.decisions: list[tuple[float, Decision]] = []

    def run_until(self, end: float, outcome: Any) -> None:
        now = self.tracker.started_at
        spins = 0
        while now <= end:
            for cmd in self.tracker.due(now):
                self.log.append((now, cmd.probe))
                ok = outcome(cmd.probe, now)
                for d in self.tracker.record(
                    ProbeResult(
                        cmd.probe, ok, "" if ok else "HTTP probe failed with statuscode: 500"
                    ),
                    now,
                ):
                    self.decisions.append((now, d))
            nxt = self.tracker.next_wakeup()
            if nxt is None:
                break
            assert nxt >= now, "a wakeup in the past"
            spins = spins + 1 if nxt == now else 0
            assert spins < 4, "the tracker keeps asking for a wakeup at the same instant"
            now = nxt


def test_readiness_ticks_initial_delay_and_thresholds() -> None:
    c = container(readinessProbe=http_probe(initialDelaySeconds=5, periodSeconds=10,
                                            successThreshold=2, failureThreshold=3))  # fmt: skip
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=100.0, fast_readiness=False))  # the kubelet's grid alone
    # Succeeds until t=150, then fails.
    d.run_until(220, lambda _t, now: now < 150)
    # Ticks every 10 s from the start; the tick at 100 is inside the 5 s initial delay.
    assert [t for t, _ in d.log] == [110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220]
    ready = [(t, x.ready) for t, x in d.decisions if isinstance(x, SetReady)]
    # Two successes to become ready (110, 120); three failures to lose it (150, 160, 170).
    assert ready == [(120, True), (170, False)]
    unhealthy = [x for _, x in d.decisions if isinstance(x, ContainerEvent)]
    assert len(unhealthy) == 8  # one event per failed probe, threshold or not
    assert unhealthy[0] == ContainerEvent("Warning", "Unhealthy",
                                          "Readiness probe failed: HTTP probe failed with statuscode: 500")  # fmt: skip


def test_fast_readiness_finds_a_started_app_between_ticks_then_keeps_the_grid() -> None:
    """Until first Ready, readiness also runs 10 ms after the initial delay, then at doubling gaps;
    those failures record no event; once Ready only the regular ticks remain."""
    c = container(readinessProbe=http_probe(initialDelaySeconds=5, periodSeconds=10, failureThreshold=3))
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=100.0))
    d.run_until(160, lambda _t, now: now >= 105.3)  # the app listens 0.3 s after the initial delay
    times = [round(t, 3) for t, _ in d.log]
    assert times[:9] == [105.0, 105.01, 105.03, 105.07, 105.12, 105.17, 105.22, 105.27, 105.32]  # 10, 20, 40, 50
    ready = [(round(t, 3), x.ready) for t, x in d.decisions if isinstance(x, SetReady)]
    assert ready == [(105.32, True)]  # not 110, the next tick
    assert times[9:] == [110.0, 120.0, 130.0, 140.0, 150.0, 160.0]  # the grid, untouched
    assert not [x for _, x in d.decisions if isinstance(x, ContainerEvent)]  # fast failures: no event


def test_fast_readiness_gaps_never_exceed_the_period_and_exec_probes_keep_the_grid() -> None:
    c = container(readinessProbe=http_probe(periodSeconds=1))
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=0.0))
    d.run_until(6, lambda _t, _now: False)  # never ready
    times = [t for t, _ in d.log]
    window = FAST_READINESS_WINDOW_S  # longer than the 1 s period: a slow start is not a period late
    assert all(b - a <= FAST_READINESS_MAX_S + 1e-9 for a, b in itertools.pairwise(t for t in times if t < window))
    assert [t for t in times if t >= window] == [3, 4, 5, 6]  # then the grid alone
    events = [x for _, x in d.decisions if isinstance(x, ContainerEvent)]
    assert len(events) == 7  # one per regular tick (0..6), none for the probes between them
    exec_probe = container(readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 10})
    d = Driver(ProbeTracker(exec_probe, pod_ip=IP, started_at=0.0))
    d.run_until(30, lambda _t, now: now >= 1)
    assert [t for t, _ in d.log] == [0, 10, 20, 30]  # ready at 10: nothing between the ticks


def test_trigger_runs_readiness_at_once_off_the_grid() -> None:
    """A container that says it is ready (agent.notify) is probed then, not at its next tick;
    the grid stays; a trigger inside the initial delay, or for a probe it lacks, does nothing."""
    c = container(readinessProbe=http_probe(initialDelaySeconds=2, periodSeconds=10))
    t = ProbeTracker(c, pod_ip=IP, started_at=0.0, fast_readiness=False)
    t.trigger("readiness", 1.0)  # inside the initial delay
    assert t.due(1.0) == [] and t.next_wakeup() == 10.0
    t.trigger("readiness", 3.5)
    assert t.next_wakeup() == 3.5
    [cmd] = t.due(3.5)
    assert cmd.probe == "readiness"
    assert t.record(ProbeResult("readiness", True, ""), 3.6) == [SetReady(True)]
    assert t.next_wakeup() == 10.0  # the grid, untouched
    t.trigger("liveness", 4.0)  # no liveness probe
    assert t.due(4.0) == []
    in_flight = ProbeTracker(c, pod_ip=IP, started_at=0.0, fast_readiness=False)
    assert [x.probe for x in in_flight.due(10.0)] == ["readiness"]
    in_flight.trigger("readiness", 10.1)  # waits for the probe in flight, then runs
    assert in_flight.due(10.1) == []
    in_flight.record(ProbeResult("readiness", False, "refused"), 10.2)
    assert [x.probe for x in in_flight.due(10.2)] == ["readiness"]


def test_not_ready_until_first_success_and_ready_without_probe() -> None:
    assert ProbeTracker(container(), pod_ip=IP, started_at=0).ready is True
    t = ProbeTracker(container(readinessProbe=http_probe()), pod_ip=IP, started_at=0)
    assert t.ready is False


def test_liveness_failure_kills_after_threshold_and_holds() -> None:
    c = container(livenessProbe=http_probe(periodSeconds=5, failureThreshold=3))
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=0.0))
    d.run_until(100, lambda _t, now: now < 10)
    kills = [(t, x) for t, x in d.decisions if isinstance(x, KillContainer)]
    assert kills == [
        (
            20,
            KillContainer(
                "LivenessProbe", "Container app failed liveness probe, will be restarted", True
            ),
        )
    ]
    assert d.tracker.on_hold and d.tracker.due(1000) == [] and d.tracker.next_wakeup() is None
    events = [x.message for _, x in d.decisions if isinstance(x, ContainerEvent)]
    assert events == ["Liveness probe failed: HTTP probe failed with statuscode: 500"] * 3


def test_liveness_failure_under_never_is_not_restarted() -> None:
    c = container(livenessProbe=http_probe(failureThreshold=1))
    t = ProbeTracker(c, pod_ip=IP, started_at=0.0, restarts=False)
    [cmd] = t.due(0)
    out = t.record(ProbeResult(cmd.probe, False, "boom"), 0)
    assert KillContainer("LivenessProbe", "Container app failed liveness probe", False) in out


def test_intermittent_failures_below_threshold_do_nothing() -> None:
    c = container(livenessProbe=http_probe(periodSeconds=1, failureThreshold=3))
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=0.0))
    d.run_until(60, lambda _t, now: int(now) % 3 != 0)  # fails every third probe
    assert not any(isinstance(x, KillContainer) for _, x in d.decisions)


def test_startup_gates_liveness_and_readiness() -> None:
    c = container(
        startupProbe=http_probe(periodSeconds=10, failureThreshold=30),
        livenessProbe=http_probe(periodSeconds=10),
        readinessProbe=http_probe(periodSeconds=10),
    )
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=0.0))
    d.run_until(60, lambda _t, now: now >= 25)  # the app comes up after 25 s
    before = [p for t, p in d.log if t < 30]
    assert set(before) == {"startup"}
    assert (30, "startup") in d.log
    # Startup succeeded at 30: readiness runs at once, liveness at its next tick.
    assert (30, "readiness") in d.log and (40, "liveness") in d.log
    assert not any(p == "startup" for t, p in d.log if t > 30)
    decisions = [x for t, x in d.decisions if t == 30]
    assert decisions == [SetStarted(True), SetReady(True)]


def test_startup_failure_kills() -> None:
    c = container(startupProbe=http_probe(periodSeconds=1, failureThreshold=3))
    d = Driver(ProbeTracker(c, pod_ip=IP, started_at=0.0))
    d.run_until(10, lambda _t, _n: False)
    kills = [x for _, x in d.decisions if isinstance(x, KillContainer)]
    assert kills == [
        KillContainer("StartupProbe", "Container app failed startup probe, will be restarted", True)
    ]


def test_errored_probe_event_wording() -> None:
    t = ProbeTracker(container(readinessProbe=http_probe()), pod_ip=IP, started_at=0.0)
    assert len(t.due(0)) == 1
    out = t.record(ProbeResult("readiness", False, "no such port", errored=True), 0)
    assert out == [ContainerEvent("Warning", "Unhealthy",
                                  "Readiness probe errored and resulted in unknown state: no such port")]  # fmt: skip


def test_one_probe_in_flight_and_stale_results_ignored() -> None:
    t = ProbeTracker(
        container(readinessProbe=http_probe(periodSeconds=1)), pod_ip=IP, started_at=0.0
    )
    assert len(t.due(0)) == 1
    assert t.due(5) == []  # still in flight
    assert t.record(ProbeResult("liveness", True), 5) == []  # no such probe
    t.record(ProbeResult("readiness", True), 5)
    assert t.record(ProbeResult("readiness", True), 5) == []  # nothing in flight


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_readiness_follows_runs(results: list[bool], success: int, failure: int) -> None:
    """Ready flips exactly when the last ``threshold`` results agree and differ from the state."""
    c = container(readinessProbe=http_probe(periodSeconds=1, successThreshold=success,
                                            failureThreshold=failure))  # fmt: skip
    t = ProbeTracker(c, pod_ip=IP, started_at=0.0)
    ready = False
    for i, ok in enumerate(results):
        [cmd] = t.due(float(i))
        t.record(ProbeResult(cmd.probe, ok), float(i))
        tail = results[: i + 1]
        need = success if ok else failure
        if len(tail) >= need and all(r == ok for r in tail[-need:]):
            ready = ok
        assert t.ready is ready


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def target(probe: dict[str, Any], c: Container | None = None) -> Any:
    return probe_target(Probe.model_validate(probe), c or container(), IP)[1]


def test_http_target_named_port_and_default_headers() -> None:
    req = target(http_probe())
    assert req == HTTPRequest("GET", "http", IP, 8080, "/healthz",
                              (("User-Agent", PROBE_USER_AGENT), ("Accept", "*/*")))  # fmt: skip
    assert req.url == "http://127.1.0.5:8080/healthz"


def test_http_target_host_scheme_headers() -> None:
    req = target({"httpGet": {"port": 9443, "scheme": "HTTPS", "host": "10.0.0.9", "path": "/ready?x=1",
                              "httpHeaders": [{"name": "Host", "value": "example.com"},
                                              {"name": "Accept", "value": ""},
                                              {"name": "User-Agent", "value": "me"}]}})  # fmt: skip
    assert (req.scheme, req.host, req.port, req.path) == ("https", "10.0.0.9", 9443, "/ready?x=1")
    assert req.headers == (("Host", "example.com"), ("User-Agent", "me"))
    assert req.url == "https://10.0.0.9:9443/ready?x=1"


def test_unknown_named_port_is_unresolved() -> None:
    t = target({"tcpSocket": {"port": "metrics"}})
    assert isinstance(t, UnresolvedTarget) and "metrics" in t.error


def test_tcp_grpc_exec_targets() -> None:
    assert target({"tcpSocket": {"port": "http"}}) == TCPTarget(IP, 8080)
    assert target({"grpc": {"port": 9090}}) == GRPCTarget(IP, 9090, "")
    c = Container.model_validate({"name": "app", "image": "i", "env": [
        {"name": "FILE", "value": "/tmp/ok"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]})  # fmt: skip
    got = target({"exec": {"command": ["cat", "$(FILE)", "$(NODE)", "$(NOPE)", "$$(FILE)"]}}, c)
    assert got == ExecTarget(("cat", "/tmp/ok", "", "$(NOPE)", "$(FILE)"))


@pytest.mark.parametrize("kind", ["startup", "liveness", "readiness"])
def test_run_probe_carries_timeout(kind: str) -> None:
    c = container(**{f"{kind}Probe": http_probe(timeoutSeconds=7)})
    [cmd] = ProbeTracker(c, pod_ip=IP, started_at=0.0).due(0)
    assert (cmd.probe, cmd.kind, cmd.timeout) == (kind, "httpGet", 7.0)
