"""core.scaletozero: who opts in, which Services wake a Deployment, idleness from request counters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.scaletozero import (
    DEFAULT_IDLE_S,
    Activity,
    backed_services,
    due_for_zero,
    idle_period,
    observe,
    snapshot_body,
    start_failure,
)


def dep(annotations: dict[str, str] | None = None, replicas: int = 1) -> dict:
    return {"metadata": {"name": "hello", "namespace": "ns", "annotations": annotations or {}},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "hello", "v": "1"}}}}}


def svc(name: str, selector: dict[str, str] | None, ns: str = "ns") -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector}}


def test_opting_in_and_the_idle_period() -> None:
    assert idle_period(dep()) is None
    assert idle_period(dep({"meshwork.io/scale-to-zero": "false"})) is None
    assert idle_period(dep({"meshwork.io/scale-to-zero": "true"})) == DEFAULT_IDLE_S
    assert idle_period(dep({"meshwork.io/scale-to-zero": "True", "meshwork.io/scale-to-zero-idle": "90s"})) == 90
    assert idle_period(dep({"meshwork.io/scale-to-zero": "true", "meshwork.io/scale-to-zero-idle": "1ms"})) == 1.0
    assert idle_period(dep({"meshwork.io/scale-to-zero": "true", "meshwork.io/scale-to-zero-idle": "x"})) == 60


def test_the_services_that_wake_a_deployment() -> None:
    services = [svc("hello", {"app": "hello"}), svc("v1", {"v": "1", "app": "hello"}), svc("other", {"app": "x"}),
                svc("all", {}), svc("elsewhere", {"app": "hello"}, ns="other")]
    assert backed_services(dep(), services) == ["hello", "v1"]
    assert snapshot_body(dep(), services) is None  # not opted in
    body = snapshot_body(dep({"meshwork.io/scale-to-zero": "true"}), services)
    assert body == {"namespace": "ns", "name": "hello", "services": ["hello", "v1"]}


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), min_size=1, max_size=20))
def test_idle_only_after_a_period_without_any_counter_growing(looks: list[dict[str, int]]) -> None:
    """Counters only grow (a pod may vanish or appear); the last activity is the last look that saw growth."""
    activity = Activity(0.0)
    totals: dict[str, float] = {}
    last_growth = 0.0
    for t, increments in enumerate(looks, start=1):
        counts = {pod: totals.get(pod, 0.0) + inc for pod, inc in increments.items()}
        if any(inc > 0 for inc in increments.values()):
            last_growth = float(t)
        totals.update(counts)
        activity = observe(activity, counts, float(t))
        assert activity.last_active == last_growth
    d = dep({"meshwork.io/scale-to-zero": "true", "meshwork.io/scale-to-zero-idle": "3s"})
    now = float(len(looks))
    assert due_for_zero(d, activity, now) == (now - last_growth >= 3)
    assert not due_for_zero(dep({"meshwork.io/scale-to-zero": "true"}, replicas=0), activity, 1e9)


def test_start_failures_are_named() -> None:
    ok = {"metadata": {"name": "p1"}, "status": {"containerStatuses": [{"name": "app", "state": {"running": {}}}]}}
    assert start_failure([ok]) is None
    crashing = {"metadata": {"name": "p2"}, "status": {"containerStatuses": [{
        "name": "app", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}}
    assert start_failure([ok, crashing]) == (
        "pod p2 container app: CrashLoopBackOff: exited with code 3 (Error), restarted 2 time(s)")
    missing = {"metadata": {"name": "p3"}, "status": {"containerStatuses": [{
        "name": "app", "state": {"waiting": {"reason": "ErrImagePull", "message": "no entry for image x"}}}]}}
    assert start_failure([missing]) == "pod p3 container app: ErrImagePull: no entry for image x"
