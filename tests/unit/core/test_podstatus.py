"""The pod conditions the node agent reports (``meshwork.core.podstatus``), as the kubelet does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.podstatus import pod_conditions
from meshwork.model.pod import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    PodCondition,
    PodPhase,
    PodSpec,
)

T0, T1 = "2024-01-01T00:00:00Z", "2024-01-01T00:05:00Z"


def spec(
    regular: Sequence[str],
    init: Sequence[str] = (),
    sidecars: Sequence[str] = (),
    gates: Sequence[str] = (),
) -> PodSpec:
    raw: dict[str, Any] = {"containers": [{"name": n, "image": "busybox"} for n in regular]}
    inits = [{"name": n, "image": "busybox"} for n in init]
    inits += [{"name": n, "image": "busybox", "restartPolicy": "Always"} for n in sidecars]
    if inits:
        raw["initContainers"] = inits
    if gates:
        raw["readinessGates"] = [{"conditionType": g} for g in gates]
    return PodSpec.model_validate(raw)


def running(name: str, *, ready: bool = True, started: bool = True) -> ContainerStatus:
    return ContainerStatus(name=name, ready=ready, started=started,
                           state=ContainerState(running=ContainerStateRunning(startedAt=T0)))  # fmt: skip


def waiting(name: str, reason: str = "PodInitializing") -> ContainerStatus:
    return ContainerStatus(
        name=name, started=False, state=ContainerState(waiting=ContainerStateWaiting(reason=reason))
    )


def exited(name: str, code: int = 0) -> ContainerStatus:
    term = ContainerStateTerminated(exitCode=code, reason="Completed" if code == 0 else "Error")
    return ContainerStatus(name=name, state=ContainerState(terminated=term))


def conditions(
    pod_spec: PodSpec,
    phase: PodPhase,
    init: list[ContainerStatus],
    regular: list[ContainerStatus],
    *,
    previous: list[PodCondition] | None = None,
    now: str = T1,
    sandbox: bool = True,
) -> dict[str, PodCondition]:
    out = pod_conditions(
        pod_spec, phase, init, regular, sandbox_ready=sandbox, previous=previous, now=now
    )
    return {c.type: c for c in out}


def summary(c: PodCondition) -> tuple[str, str | None, str | None]:
    return c.status, c.reason, c.message


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def test_every_container_ready_makes_the_pod_ready_and_scheduled() -> None:
    got = conditions(spec(["a", "b"]), "Running", [], [running("a"), running("b")])
    assert [c for c in got] == ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                "PodScheduled"]  # fmt: skip
    assert all(c.status == "True" for c in got.values())
    assert all(c.last_transition_time == T1 for c in got.values())


def test_an_unready_container_is_named_in_ready_and_containers_ready() -> None:
    got = conditions(
        spec(["a", "b", "c"]),
        "Running",
        [],
        [running("a"), running("b", ready=False), waiting("c")],
    )
    want = ("False", "ContainersNotReady", "containers with unready status: [b c]")
    assert summary(got["Ready"]) == want
    assert summary(got["ContainersReady"]) == want
    assert got["Initialized"].status == "True"


def test_pending_init_containers_are_named_in_initialized() -> None:
    s = spec(["app"], init=["one", "two"])
    got = conditions(s, "Pending", [exited("one"), waiting("two")], [waiting("app")])
    assert summary(got["Initialized"]) == (
        "False", "ContainersNotInitialized", "containers with incomplete status: [two]")  # fmt: skip
    # A failed init container is not complete either.
    got = conditions(s, "Pending", [exited("one", 1), waiting("two")], [waiting("app")])
    assert got["Initialized"].message == "containers with incomplete status: [one two]"


def test_a_started_sidecar_initializes_but_its_readiness_gates_ready() -> None:
    s = spec(["app"], sidecars=["proxy"])
    got = conditions(s, "Pending", [running("proxy", ready=False)], [waiting("app")])
    assert got["Initialized"].status == "True"
    assert got["Ready"].message == "containers with unready status: [proxy app]"
    got = conditions(s, "Pending", [running("proxy", ready=False, started=False)], [waiting("app")])
    assert got["Initialized"].message == "containers with incomplete status: [proxy]"
    got = conditions(s, "Running", [running("proxy")], [running("app")])
    assert got["Ready"].status == "True"


def test_a_restarting_sidecar_does_not_uninitialize_a_pod_whose_app_started() -> None:
    # kubelet HasAnyRegularContainerStarted: once an app container ran, the pod stays initialized.
    s = spec(["app"], sidecars=["proxy"])
    got = conditions(s, "Running", [waiting("proxy", "CrashLoopBackOff")], [running("app")])
    assert summary(got["Initialized"]) == ("True", None, None)
    assert got["Ready"].status == "False"


@pytest.mark.parametrize(
    ("phase", "reason"), [("Succeeded", "PodCompleted"), ("Failed", "PodFailed")]
)
def test_a_finished_pod_is_never_ready(phase: PodPhase, reason: str) -> None:
    s = spec(["app"])
    got = conditions(s, phase, [], [exited("app", 0 if phase == "Succeeded" else 1)], sandbox=False)
    assert summary(got["Ready"]) == ("False", reason, None)
    assert summary(got["ContainersReady"]) == ("False", reason, None)
    assert got["PodReadyToStartContainers"].status == "False"


def test_a_succeeded_pod_with_a_stopped_sidecar_is_initialized_as_completed() -> None:
    s = spec(["main"], sidecars=["helper"])
    got = conditions(s, "Succeeded", [exited("helper", 143)], [exited("main")])
    assert summary(got["Initialized"]) == ("True", "PodCompleted", None)


def test_a_failed_init_container_leaves_a_failed_pod_uninitialized() -> None:
    s = spec(["app"], init=["setup"])
    got = conditions(s, "Failed", [exited("setup", 3)], [waiting("app")])
    assert summary(got["Initialized"]) == (
        "False", "ContainersNotInitialized", "containers with incomplete status: [setup]")  # fmt: skip
    assert got["Ready"].reason == "PodFailed"


def test_readiness_gates_hold_ready_until_their_condition_is_true() -> None:
    s = spec(["app"], gates=["example.com/lb", "example.com/dns"])
    got = conditions(s, "Running", [], [running("app")])
    assert got["ContainersReady"].status == "True"
    assert summary(got["Ready"]) == ("False", "ReadinessGatesNotReady", (
        'corresponding condition of pod readiness gate "example.com/lb" does not exist., '
        'corresponding condition of pod readiness gate "example.com/dns" does not exist.'))  # fmt: skip
    lb_false = PodCondition(type="example.com/lb", status="False", lastTransitionTime=T0)
    dns_true = PodCondition(type="example.com/dns", status="True", lastTransitionTime=T0)
    got = conditions(s, "Running", [], [running("app")], previous=[lb_false, dns_true])
    assert (
        got["Ready"].message
        == 'the status of pod readiness gate "example.com/lb" is not "True", but False'
    )
    # Conditions others own are carried over untouched.
    assert got["example.com/lb"] == lb_false and got["example.com/dns"] == dns_true
    lb_true = lb_false.model_copy(update={"status": "True"})
    got = conditions(s, "Running", [], [running("app")], previous=[lb_true, dns_true])
    assert got["Ready"].status == "True"


def test_pod_scheduled_becomes_true_over_the_schedulers_unschedulable() -> None:
    unschedulable = PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                 message="no nodes available to schedule pods", lastTransitionTime=T0)  # fmt: skip
    got = conditions(spec(["app"]), "Pending", [], [waiting("app")], previous=[unschedulable])
    assert summary(got["PodScheduled"]) == ("True", None, None)
    assert got["PodScheduled"].last_transition_time == T1


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

PHASES: list[PodPhase] = ["Pending", "Running", "Succeeded", "Failed"]


@st.composite
def pods(draw: st.DrawFn) -> tuple[PodSpec, PodPhase, list[ContainerStatus], list[ContainerStatus]]:
    n_regular = draw(st.integers(1, 3))
    n_sidecars = draw(st.integers(0, 2))
    regular = [f"app{i}" for i in range(n_regular)]
    sidecars = [f"side{i}" for i in range(n_sidecars)]

    def status(name: str) -> ContainerStatus:
        kind = draw(st.sampled_from(["running", "waiting", "exited"]))
        if kind == "running":
            return running(name, ready=draw(st.booleans()), started=draw(st.booleans()))
        if kind == "waiting":
            return waiting(name)
        return exited(name, draw(st.sampled_from([0, 1, 137])))

    return (spec(regular, sidecars=sidecars), draw(st.sampled_from(PHASES)),
            [status(n) for n in sidecars], [status(n) for n in regular])  # fmt: skip


@given(pods())
def test_ready_only_when_every_container_and_sidecar_is_ready_and_the_pod_is_not_finished(
    pod: tuple[PodSpec, PodPhase, list[ContainerStatus], list[ContainerStatus]],
) -> None:
    s, phase, init, regular = pod
    got = conditions(s, phase, init, regular)
    all_ready = all(c.ready for c in init + regular)
    expect = all_ready and phase not in ("Succeeded", "Failed")
    assert (got["Ready"].status == "True") == expect
    assert (got["ContainersReady"].status == "True") == expect
    if not expect and phase not in ("Succeeded", "Failed"):
        unready = [c.name for c in init + regular if not c.ready]
        assert got["Ready"].message == f"containers with unready status: [{' '.join(unready)}]"


@given(pods(), pods())
def test_transition_times_are_kept_while_a_condition_keeps_its_status(
    first: tuple[PodSpec, PodPhase, list[ContainerStatus], list[ContainerStatus]],
    second: tuple[PodSpec, PodPhase, list[ContainerStatus], list[ContainerStatus]],
) -> None:
    s, phase, init, regular = first
    before = pod_conditions(s, phase, init, regular, sandbox_ready=True, previous=None, now=T0)
    # The same inputs later: nothing changed, so no time moves.
    same = pod_conditions(s, phase, init, regular, sandbox_ready=True, previous=before, now=T1)
    assert same == before
    # Other inputs later: exactly the conditions whose status flipped take the new time.
    s2, phase2, init2, regular2 = second
    after = pod_conditions(s2, phase2, init2, regular2, sandbox_ready=True, previous=before, now=T1)
    old = {c.type: c for c in before}
    for c in after:
        flipped = c.status != old[c.type].status
        assert c.last_transition_time == (T1 if flipped else T0), (c, old[c.type])
