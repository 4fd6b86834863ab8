"""Job reconcile: scenarios driven through a tiny in-test API server and kubelet."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.reconcile import (
    CreateObject,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.job import (
    COMPLETION_INDEX_KEY,
    format_indexes,
    parse_indexes,
    reconcile_job,
    rfc3339,
)
from meshwork.model.pod import Pod
from meshwork.model.workloads import Job
from support.conformance import CONFORMANCE, absent_reason

T0 = 1_700_000_000.0
EXAMPLE = CONFORMANCE / "kubernetes-website/examples/controllers/job-pod-failure-policy-example.yaml"


def make_job(**spec: Any) -> Job:
    template = spec.pop("template", None) or {
        "metadata": {"labels": {"batch.kubernetes.io/job-name": "pi", "batch.kubernetes.io/controller-uid": "u1"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
    }
    return Job.model_validate({"apiVersion": "batch/v1", "kind": "Job",
                               "metadata": {"name": "pi", "namespace": "ns", "uid": "u1"},
                               "spec": {"template": template, **spec}})  # fmt: skip


class Cluster:
    """A minimal API server + kubelet: applies actions, names pods, moves pods through phases."""

    def __init__(self, job: Job) -> None:
        self.job: Job | None = job
        self.pods: dict[str, Pod] = {}
        self.events: list[RecordEvent] = []
        self.names = itertools.count()

    def reconcile(self, now: float) -> Outcome:
        assert self.job is not None
        return reconcile_job(self.job, list(self.pods.values()), now)

    def apply(self, out: Outcome, now: float) -> None:
        for action in out.actions:
            if isinstance(action, CreateObject):
                pod = action.obj
                assert isinstance(pod, Pod)
                name = f"{pod.metadata.generate_name}{next(self.names):05d}"
                pod = pod.model_copy(deep=True)
                pod.metadata.name, pod.metadata.uid = name, f"uid-{name}"
                pod.metadata.creation_timestamp = rfc3339(now)
                self.pods[name] = pod
            elif isinstance(action, DeleteObject):
                if action.kind == "Job":
                    self.job = None
                else:  # graceful: the pod terminates until the kubelet lets go
                    self.pods[action.name].metadata.deletion_timestamp = rfc3339(now)
            elif isinstance(action, UpdateStatus | UpdateObject):
                assert isinstance(action.obj, Job)
                self.job = action.obj
            else:
                self.events.append(action)

    def step(self, now: float) -> Outcome:
        out = self.reconcile(now)
        self.apply(out, now)
        assert self.job is None or self.reconcile(now).empty, "not idempotent"
        return out

    def kubelet(self, now: float, exit_code: int | None = None, names: list[str] | None = None) -> None:
        """Terminating pods go away; running pods (or ``names``) exit with ``exit_code``."""
        for name, pod in list(self.pods.items()):
            if pod.metadata.deletion_timestamp is not None:
                del self.pods[name]
            elif exit_code is not None and (names is None or name in names) and not _done(pod):
                phase = "Succeeded" if exit_code == 0 else "Failed"
                pod.status = Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {
                    "containers": [{"name": "c", "image": "i"}]}, "status": {
                    "phase": phase, "containerStatuses": [{"name": "main", "state": {"terminated": {
                        "exitCode": exit_code, "finishedAt": rfc3339(now)}}}]}}).status  # fmt: skip

    def condition(self, kind: str) -> tuple[str | None, str | None] | None:
        assert self.job is not None
        for c in (self.job.status.conditions if self.job.status else None) or ():
            if c.type == kind and c.status == "True":
                return c.reason, c.message
        return None

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def _done(pod: Pod) -> bool:
    return pod.status is not None and pod.status.phase in ("Succeeded", "Failed")


def _running(c: Cluster) -> list[str]:
    return [n for n, p in c.pods.items() if not _done(p) and p.metadata.deletion_timestamp is None]


def test_completions_5_parallelism_2() -> None:
    c = Cluster(make_job(completions=5, parallelism=2))
    now = T0
    for expected_active in (2, 2, 1):
        c.step(now)
        assert len(_running(c)) == expected_active
        c.kubelet(now, 0)
        now += 1
    c.step(now)
    assert c.condition("Complete") == ("CompletionsReached", "Reached expected number of succeeded pods")
    assert c.condition("SuccessCriteriaMet") is not None
    assert c.job is not None and c.job.status is not None
    assert (c.job.status.succeeded, c.job.status.active, c.job.status.completion_time) == (5, None, rfc3339(now))
    assert c.reasons().count("SuccessfulCreate") == 5 and c.reasons()[-1] == "Completed"
    pod = next(iter(c.pods.values()))
    assert pod.metadata.generate_name == "pi-"
    ref = (pod.metadata.owner_references or [])[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == ("Job", "pi", "u1", True, True)
    assert (pod.metadata.labels or {})["batch.kubernetes.io/job-name"] == "pi"


def test_always_failing_reaches_backoff_limit() -> None:
    c = Cluster(make_job(backoffLimit=2))
    now = T0
    failures = 0
    while c.condition("Failed") is None:
        out = c.step(now)
        if _running(c):
            c.kubelet(now, 1)
            failures += 1
        else:
            assert out.requeue_after is not None or c.condition("Failed")
        now += out.requeue_after or 1
    assert failures == 3  # backoffLimit + 1
    assert c.condition("Failed") == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert c.condition("FailureTarget") is not None
    assert c.events[-1].type == "Warning" and c.events[-1].reason == "BackoffLimitExceeded"


def test_failure_backoff_delays_replacement() -> None:
    c = Cluster(make_job(backoffLimit=6))
    c.step(T0)
    c.kubelet(T0, 1)
    out = c.step(T0 + 3)
    assert not _running(c) and out.requeue_after == pytest.approx(7)
    c.step(T0 + 10)
    assert len(_running(c)) == 1


def test_work_queue_any_success_completes() -> None:
    c = Cluster(make_job(parallelism=3))
    assert c.job is not None and c.job.spec.completions is None
    c.step(T0)
    first, *rest = _running(c)
    c.kubelet(T0, 0, [first])
    c.step(T0 + 1)
    assert len(_running(c)) == 2 and c.condition("Complete") is None  # others keep running
    c.kubelet(T0 + 2, 0, rest)
    c.step(T0 + 2)
    assert c.condition("Complete") is not None


def test_indexed() -> None:
    c = Cluster(make_job(completions=4, parallelism=2, completionMode="Indexed"))
    c.step(T0)
    pods = list(c.pods.values())
    assert [p.metadata.generate_name for p in pods] == ["pi-0-", "pi-1-"]
    assert [p.spec.hostname for p in pods] == ["pi-0", "pi-1"]
    assert all((p.metadata.labels or {})[COMPLETION_INDEX_KEY] == (p.metadata.annotations or {})[COMPLETION_INDEX_KEY]
               for p in pods)  # fmt: skip
    env = pods[0].spec.containers[0].env or []
    assert env[-1].name == "JOB_COMPLETION_INDEX"
    assert env[-1].value_from is not None and env[-1].value_from.field_ref is not None
    assert env[-1].value_from.field_ref.field_path == f"metadata.annotations['{COMPLETION_INDEX_KEY}']"
    names = list(c.pods)
    c.kubelet(T0, 0, [names[1]])
    c.kubelet(T0, 1, [names[0]])  # index 0 fails: retried
    c.step(T0 + 1)
    assert c.job is not None and c.job.status is not None and c.job.status.completed_indexes == "1"
    assert sorted((c.pods[n].metadata.annotations or {})[COMPLETION_INDEX_KEY] for n in _running(c)) == ["2"]
    c.step(T0 + 11)  # after the 10 s back-off index 0 comes back
    assert sorted((c.pods[n].metadata.annotations or {})[COMPLETION_INDEX_KEY] for n in _running(c)) == ["0", "2"]
    c.kubelet(T0 + 12, 0)
    c.step(T0 + 12)
    c.kubelet(T0 + 13, 0)
    c.step(T0 + 13)
    assert c.job.status.completed_indexes == "0-3" and c.job.status.succeeded == 4
    assert c.condition("Complete") is not None


def test_backoff_limit_per_index() -> None:
    c = Cluster(make_job(completions=3, parallelism=3, completionMode="Indexed", backoffLimitPerIndex=0))
    c.step(T0)
    by_index = {(p.metadata.annotations or {})[COMPLETION_INDEX_KEY]: n for n, p in c.pods.items()}
    c.kubelet(T0, 1, [by_index["1"]])
    c.kubelet(T0, 0, [by_index["0"], by_index["2"]])
    c.step(T0 + 1)
    assert c.job is not None and c.job.status is not None
    assert c.job.status.failed_indexes == "1" and c.job.status.completed_indexes == "0,2"
    assert c.condition("Failed") == ("FailedIndexes", "Job has failed indexes")


def test_pod_failure_policy_example_exit_42_fails_job() -> None:
    if not EXAMPLE.is_file():
        pytest.skip(absent_reason(EXAMPLE))
    doc = yaml.safe_load(EXAMPLE.read_text())
    job = Job.model_validate({**doc, "metadata": {**doc["metadata"], "namespace": "ns", "uid": "u1"}})
    c = Cluster(job)
    c.step(T0)
    assert len(_running(c)) == job.spec.parallelism == 3
    victim = _running(c)[0]
    c.kubelet(T0, 42, [victim])
    c.step(T0 + 1)
    name = job.metadata.name
    reason, message = c.condition("FailureTarget") or (None, None)
    assert reason == "PodFailurePolicy"
    assert message == (f"Container main for pod ns/{victim} failed with exit code 42 "
                       "matching FailJob rule at index 0")  # fmt: skip
    assert not _running(c) and c.reasons().count("SuccessfulDelete") == 2
    c.kubelet(T0 + 2)
    c.step(T0 + 2)
    assert c.condition("Failed") == ("PodFailurePolicy", message) and name


def test_pod_failure_policy_ignore_does_not_count() -> None:
    c = Cluster(make_job(backoffLimit=0, podFailurePolicy={"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}))  # fmt: skip
    c.step(T0)
    pod = c.pods[_running(c)[0]]
    pod.status = Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
        {"name": "c", "image": "i"}]}, "status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True"}]}}).status  # fmt: skip
    c.step(T0 + 1)
    assert c.condition("Failed") is None and len(_running(c)) == 1


def test_active_deadline() -> None:
    c = Cluster(make_job(activeDeadlineSeconds=30))
    out = c.step(T0)
    assert out.requeue_after == 30
    c.step(T0 + 30)
    assert c.condition("FailureTarget") == ("DeadlineExceeded", "Job was active longer than specified deadline")
    c.kubelet(T0 + 31)
    c.step(T0 + 31)
    assert c.condition("Failed") == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert "DeadlineExceeded" in c.reasons()


def test_suspend_and_resume() -> None:
    c = Cluster(make_job(completions=2, parallelism=2))
    c.step(T0)
    assert c.job is not None
    c.job = c.job.model_copy(update={"spec": c.job.spec.model_copy(update={"suspend": True})})
    c.step(T0 + 5)
    assert not _running(c) and c.condition("Suspended") == ("JobSuspended", "Job suspended")
    c.kubelet(T0 + 6)
    c.step(T0 + 6)
    c.job = c.job.model_copy(update={"spec": c.job.spec.model_copy(update={"suspend": False})})
    c.step(T0 + 100)
    assert len(_running(c)) == 2 and c.condition("Suspended") is None
    assert c.job.status is not None and c.job.status.start_time == rfc3339(T0 + 100)
    assert "Suspended" in c.reasons() and "Resumed" in c.reasons()


def test_ttl_after_finished() -> None:
    c = Cluster(make_job(ttlSecondsAfterFinished=100))
    c.step(T0)
    c.kubelet(T0, 0)
    out = c.step(T0 + 1)
    assert c.condition("Complete") is not None and out.requeue_after == 100
    assert c.reconcile(T0 + 50).requeue_after == pytest.approx(51)
    out = c.reconcile(T0 + 101)
    assert out.actions == (DeleteObject("batch", "Job", "ns", "pi", "u1", propagation="Foreground"),)


def test_on_failure_restarts_count_toward_backoff() -> None:
    template = {"metadata": {"labels": {"a": "b"}},
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "i"}]}}
    c = Cluster(make_job(backoffLimit=2, template=template))
    c.step(T0)
    pod = c.pods[_running(c)[0]]
    pod.status = Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
        {"name": "c", "image": "i"}]}, "status": {"phase": "Running", "containerStatuses": [
        {"name": "main", "restartCount": 2}]}}).status  # fmt: skip
    c.step(T0 + 1)
    assert c.condition("FailureTarget") == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")


@pytest.mark.parametrize(("indexes", "text"), [(set(), None), ({0}, "0"), ({1, 3, 4, 5}, "1,3-5"),
                                               ({0, 1, 2, 7, 9, 10}, "0-2,7,9-10")])  # fmt: skip
def test_index_ranges(indexes: set[int], text: str | None) -> None:
    assert format_indexes(indexes) == text
    assert parse_indexes(text, 100) == indexes


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.booleans(),
       st.lists(st.sampled_from([None, 0, 1, 42]), min_size=1, max_size=12))  # fmt: skip
def test_reconcile_is_idempotent(completions: int, parallelism: int, indexed: bool,
                                 exits: list[int | None]) -> None:  # fmt: skip
    c = Cluster(make_job(completions=completions, parallelism=parallelism, backoffLimit=3,
                         completionMode="Indexed" if indexed else "NonIndexed"))  # fmt: skip
    now = T0
    for code in exits:
        c.step(now)  # asserts a second reconcile yields nothing
        if c.job is None or c.condition("Complete") or c.condition("Failed"):
            break
        running = _running(c)
        c.kubelet(now, code, running[:1])
        assert len(running) <= parallelism
        now += 700  # past any back-off
