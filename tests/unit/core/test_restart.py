"""Restart policy, CrashLoopBackOff and pod phase (meshwork.core.restart)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.restart import (
    BACKOFF_MAX,
    RestartTracker,
    completed_phase,
    format_pod,
    go_duration,
    pod_phase,
    rfc3339,
    should_restart,
)
from meshwork.model.pod import ContainerStatus, PodSpec

POD = format_pod("web-1", "default", "u-1")


def crash_loop(
    tracker: RestartTracker, exits: int, *, run_for: float = 1.0
) -> tuple[list[float], float]:
    """Exit ``exits`` times, each after running ``run_for`` s; return the waits imposed
    and the time of the last restart."""
    now, waits = 1000.0, []
    for _ in range(exits):
        started = now
        now += run_for
        d = tracker.exited("app", 1, started_at=started, finished_at=now, now=now)
        assert d.restart_at is not None
        waits.append(d.restart_at - now)
        now = d.restart_at
        tracker.restarted("app", now)
    return waits, now


def test_backoff_sequence_doubles_to_five_minutes() -> None:
    waits, _ = crash_loop(RestartTracker(pod=POD, policy="Always"), 9)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_backoff_resets_after_ten_minutes_of_running() -> None:
    t = RestartTracker(pod=POD, policy="Always")
    _, start = crash_loop(t, 7)
    assert t.current_backoff("app") == 300
    # Ran 10 min + 1 s since the last restart: the entry is stale, restart at once, back to 10 s.
    d = t.exited("app", 1, started_at=start, finished_at=start + 601, now=start + 601)
    assert d.restart_at == start + 601 and d.waiting_reason is None
    t.restarted("app", start + 601)
    assert t.current_backoff("app") == 10


def test_no_reset_at_exactly_ten_minutes() -> None:
    t = RestartTracker(pod=POD, policy="Always")
    _, start = crash_loop(t, 3)  # 40 s in force
    d = t.exited("app", 1, started_at=start, finished_at=start + 600, now=start + 600)
    assert d.restart_at == start + 640


def test_crash_loop_waiting_reason_message_and_event() -> None:
    t = RestartTracker(pod=POD, policy="Always")
    _, start = crash_loop(t, 5)  # 160 s in force
    d = t.exited("app", 2, started_at=start, finished_at=start + 5, now=start + 5)
    assert d.waiting_reason == "CrashLoopBackOff"
    assert d.message == "back-off 2m40s restarting failed container=app pod=web-1_default(u-1)"
    assert d.event is not None and d.event.reason == "BackOff" and d.event.type == "Warning"
    assert d.event.message == "Back-off restarting failed container app in pod web-1_default(u-1)"
    # Asking again after the back-off has passed: start now, no waiting reason.
    later = t.decide("app", start + 5 + 160)
    assert later.restart_at == start + 165 and later.waiting_reason is None


def test_restart_count_and_last_state() -> None:
    t = RestartTracker(pod=POD, policy="Always")
    t.exited("app", 137, started_at=0.0, finished_at=60.0, now=60.0, oom_killed=True)
    assert t.restarted("app", 60.0) == 1
    term = t.last_terminated("app")
    assert term is not None
    assert (term.exit_code, term.reason) == (137, "OOMKilled")
    assert (term.started_at, term.finished_at) == ("1970-01-01T00:00:00Z", "1970-01-01T00:01:00Z")
    t.exited("app", 0, started_at=60.0, finished_at=61.0, now=61.0)
    assert t.last_terminated("app").reason == "Completed"  # type: ignore[union-attr]
    t.exited("app", 3, started_at=61.0, finished_at=62.0, now=62.0)
    assert t.last_terminated("app").reason == "Error"  # type: ignore[union-attr]
    assert t.restart_count("app") == 1 and t.restart_count("other") == 0


@pytest.mark.parametrize(
    ("policy", "exit_code", "kind", "expected"),
    [
        ("Always", 0, "regular", True),
        ("Always", 1, "regular", True),
        ("OnFailure", 0, "regular", False),
        ("OnFailure", 1, "regular", True),
        ("Never", 1, "regular", False),
        ("Never", 0, "regular", False),
        ("Always", 0, "init", False),
        ("Always", 1, "init", True),
        ("OnFailure", 1, "init", True),
        ("Never", 1, "init", False),
        ("Never", 0, "sidecar", True),
        ("Never", 1, "sidecar", True),
    ],
)
def test_should_restart(policy: Any, exit_code: int, kind: Any, expected: bool) -> None:
    assert should_restart(policy, exit_code, kind) is expected


def test_never_and_onfailure_success_do_not_restart() -> None:
    t = RestartTracker(pod=POD, policy="OnFailure")
    assert t.exited("app", 0, started_at=0, finished_at=1, now=1).restart_at is None
    t = RestartTracker(pod=POD, policy="Never")
    assert t.exited("app", 1, started_at=0, finished_at=1, now=1).restart_at is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (20, "20s"), (80, "1m20s"), (160, "2m40s"), (300, "5m0s"), (3600, "1h0m0s"),
     (1.5, "1.5s"), (0, "0s"), (0.25, "250ms")],
)  # fmt: skip
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_rfc3339() -> None:
    assert rfc3339(1_700_000_000.7) == "2023-11-14T22:13:20Z"


@given(st.lists(st.floats(min_value=0.0, max_value=2000.0), min_size=1, max_size=30))
def test_backoff_bounds(run_times: list[float]) -> None:
    """Any crash history: waits never exceed 5 min, and a run over 10 min resets to an
    immediate restart."""
    t = RestartTracker(pod=POD, policy="Always")
    now = 0.0
    for run in run_times:
        start = now
        now += run
        d = t.exited("app", 1, started_at=start, finished_at=now, now=now)
        assert d.restart_at is not None
        wait = d.restart_at - now
        assert 0 <= wait <= BACKOFF_MAX + 1e-6  # float sums of epoch times
        if run > 600:
            assert wait == 0
        assert (wait > 0) == (d.waiting_reason == "CrashLoopBackOff")
        now = d.restart_at
        t.restarted("app", now)


# ---------------------------------------------------------------------------
# Phase
# ---------------------------------------------------------------------------


def spec(
    policy: str = "Always", *, init: int = 0, sidecars: int = 0, containers: int = 1
) -> PodSpec:
    inits: list[dict[str, Any]] = [{"name": f"init{i}", "image": "i"} for i in range(init)]
    inits += [
        {"name": f"side{i}", "image": "i", "restartPolicy": "Always"} for i in range(sidecars)
    ]
    return PodSpec.model_validate({
        "restartPolicy": policy, "initContainers": inits or None,
        "containers": [{"name": f"c{i}", "image": "i"} for i in range(containers)],
    })  # fmt: skip


def status(
    name: str, state: str, code: int = 0, *, last: int | None = None, started: bool = True
) -> ContainerStatus:
    body: dict[str, Any] = {"name": name, "started": started}
    if state == "running":
        body["state"] = {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
    elif state == "terminated":
        body["state"] = {"terminated": {"exitCode": code}}
    elif state == "waiting":
        body["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    if last is not None:
        body["lastState"] = {"terminated": {"exitCode": last}}
    return ContainerStatus.model_validate(body)


R, T, W = "running", "terminated", "waiting"

PHASES: list[tuple[str, PodSpec, list[ContainerStatus], list[ContainerStatus], bool, str]] = [
    ("no statuses yet", spec(), [], [], False, "Pending"),
    ("running", spec(), [], [status("c0", R)], False, "Running"),
    ("waiting first start", spec(), [], [status("c0", W)], False, "Pending"),
    ("crash looping counts as running", spec(), [], [status("c0", W, last=1)], False, "Running"),
    ("always, exited 0, restarting", spec(), [], [status("c0", T, 0)], False, "Running"),
    ("onfailure, exited 0", spec("OnFailure"), [], [status("c0", T, 0)], False, "Succeeded"),
    ("onfailure, exited 1 restarts", spec("OnFailure"), [], [status("c0", T, 1)], False, "Running"),
    ("never, exited 1", spec("Never"), [], [status("c0", T, 1)], False, "Failed"),
    ("never, one of two failed", spec("Never", containers=2), [],
     [status("c0", T, 0), status("c1", T, 2)], False, "Failed"),
    ("init running", spec(init=1), [status("init0", R)], [], False, "Pending"),
    ("init failed under never", spec("Never", init=1), [status("init0", T, 1)], [], False, "Failed"),
    ("init failed, retried under always", spec(init=1), [status("init0", T, 1)], [], False, "Pending"),
    ("init done, main running", spec(init=1), [status("init0", T, 0)], [status("c0", R)], False, "Running"),
    ("sidecar not started yet", spec(sidecars=1), [status("side0", R, started=False)], [], False, "Pending"),
    ("sidecar started, main running", spec(sidecars=1), [status("side0", R)], [status("c0", R)], False,
     "Running"),
    ("job: main done, sidecar still running", spec("Never", sidecars=1), [status("side0", R)],
     [status("c0", T, 0)], False, "Running"),
    ("job: main done, sidecar killed 137", spec("Never", sidecars=1), [status("side0", T, 137)],
     [status("c0", T, 0)], False, "Succeeded"),
    ("job: main failed, sidecar fine", spec("Never", sidecars=1), [status("side0", T, 0)],
     [status("c0", T, 1)], False, "Failed"),
    ("terminal pod, always, exited 0", spec(), [], [status("c0", T, 0)], True, "Succeeded"),
    ("terminal pod, always, exited 1", spec(), [], [status("c0", T, 1)], True, "Failed"),
]  # fmt: skip


@pytest.mark.parametrize(("spec_", "inits", "mains", "terminal", "phase"),
                         [p[1:] for p in PHASES], ids=[p[0] for p in PHASES])  # fmt: skip
def test_pod_phase(spec_: PodSpec, inits: list[ContainerStatus], mains: list[ContainerStatus],
                   terminal: bool, phase: str) -> None:  # fmt: skip
    assert pod_phase(spec_, inits, mains, pod_is_terminal=terminal) == phase


COMPLETED: list[tuple[str, PodSpec, list[ContainerStatus], list[ContainerStatus], str | None]] = [
    ("always never completes", spec(), [], [status("c0", T, 0)], None),
    ("never: all exited 0", spec("Never", containers=2), [], [status("c0", T, 0), status("c1", T, 0)],
     "Succeeded"),
    ("never: one still running", spec("Never", containers=2), [], [status("c0", T, 0), status("c1", R)],
     None),
    ("never: one failed", spec("Never", containers=2), [], [status("c0", T, 1), status("c1", T, 0)],
     "Failed"),
    ("onfailure: failure restarts", spec("OnFailure"), [], [status("c0", T, 1)], None),
    ("onfailure: success", spec("OnFailure"), [], [status("c0", T, 0)], "Succeeded"),
    ("sidecar running does not hold the job", spec("Never", sidecars=1), [status("side0", R)],
     [status("c0", T, 0)], "Succeeded"),
    ("sidecar crash does not fail the job", spec("OnFailure", sidecars=1), [status("side0", T, 1)],
     [status("c0", T, 0)], "Succeeded"),
    ("init failure under never", spec("Never", init=1), [status("init0", T, 1)], [], "Failed"),
]  # fmt: skip


@pytest.mark.parametrize(("spec_", "inits", "mains", "phase"),
                         [p[1:] for p in COMPLETED], ids=[p[0] for p in COMPLETED])  # fmt: skip
def test_completed_phase(spec_: PodSpec, inits: list[ContainerStatus], mains: list[ContainerStatus],
                         phase: str | None) -> None:  # fmt: skip
    assert completed_phase(spec_, inits, mains) == phase
    if phase is not None:
        # Once the agent stops the sidecars and marks the pod terminal, getPhase agrees.
        stopped = [status(s.name, T, 137) for s in inits if s.name.startswith("side")]
        others = [s for s in inits if not s.name.startswith("side")]
        assert pod_phase(spec_, [*others, *stopped], mains, pod_is_terminal=True) == phase
