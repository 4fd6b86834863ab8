"""The ClusterQueue reconcile: admission writes, statuses, idempotence."""

from __future__ import annotations

from typing import Any

from meshwork.core.queue.reconcile import QueueView, reconcile_cluster_queue
from meshwork.core.reconcile import RecordEvent, UpdateObject, UpdateStatus
from meshwork.model.argo_workflows import Workflow
from meshwork.model.kueue import ClusterQueue, LocalQueue
from meshwork.model.workloads import Job

NOW = 1_800_000_000.0


def cluster_queue(**annotations: str) -> ClusterQueue:
    return ClusterQueue.model_validate({
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue",
        "metadata": {"name": "cq", "annotations": annotations, "resourceVersion": "1"},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "pods"], "flavors": [
            {"name": "default", "resources": [{"name": "cpu", "nominalQuota": 2}, {"name": "pods", "nominalQuota": 4}]}]}]},
    })  # fmt: skip


LQ = LocalQueue.model_validate({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
                                "metadata": {"name": "lq", "namespace": "default", "resourceVersion": "2"},
                                "spec": {"clusterQueue": "cq"}})  # fmt: skip


def job(name: str, parallelism: int = 1, cpu: str = "1", second: int = 0, **annotations: str) -> Job:
    return Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "5",
                     "creationTimestamp": f"2027-01-15T08:00:{second:02d}Z",
                     "labels": {"kueue.x-k8s.io/queue-name": "lq"}, "annotations": annotations},
        "spec": {"parallelism": parallelism, "suspend": True, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "command": ["true"], "resources": {"requests": {"cpu": cpu}}}]}}},
    })  # fmt: skip


def view(cq: ClusterQueue, jobs: list[Job], workflows: list[Workflow] = (), lq: LocalQueue = LQ) -> QueueView:  # type: ignore[assignment]
    return QueueView(cq, [lq], [(j, i + 1) for i, j in enumerate(jobs)], [(w, 100 + i) for i, w in enumerate(workflows)],
                     {"default": {"kubernetes.io/metadata.name": "default"}}, {}, {})  # fmt: skip


def applied(jobs: list[Job], actions: tuple[Any, ...]) -> list[Job]:
    by_name = {a.obj.metadata.name: a.obj for a in actions if isinstance(a, UpdateObject) and isinstance(a.obj, Job)}
    return [by_name.get(j.metadata.name, j) for j in jobs]


def test_admits_what_fits_gang_whole_then_is_idempotent() -> None:
    cq = cluster_queue(**{"meshwork.io/queueing-policy": "FIFO"})
    jobs = [job("one", second=1), job("gang", parallelism=2, second=2), job("three", second=3)]
    out = reconcile_cluster_queue(view(cq, jobs), NOW)
    admitted = [a.obj for a in out.actions if isinstance(a, UpdateObject)]
    assert [j.metadata.name for j in admitted] == ["one", "three"]  # the gang needs 2 cpu, only 1 is left
    assert all(j.spec.suspend is False and j.metadata.annotations["meshwork.io/admitted-by"] == "cq" for j in admitted)
    assert admitted[0].metadata.annotations["meshwork.io/admitted-flavors"] == "cpu=default,pods=default"
    assert [a.reason for a in out.actions if isinstance(a, RecordEvent)] == ["Admitted", "Admitted"]
    statuses = {a.obj.kind: a.obj for a in out.actions if isinstance(a, UpdateStatus)}
    st = statuses["ClusterQueue"].status
    assert (st.pending_workloads, st.admitted_workloads) == (1, 2)
    assert st.pending_workloads_status.cluster_queue_pending_workload[0].name == "job-gang"
    assert {r.name: r.total for r in st.flavors_usage[0].resources} == {"cpu": 2, "pods": 2}
    assert statuses["LocalQueue"].status.pending_workloads == 1
    # apply the writes: the next pass decides nothing
    again = reconcile_cluster_queue(
        view(statuses["ClusterQueue"], applied(jobs, out.actions), lq=statuses["LocalQueue"]), NOW + 5)
    assert again.actions == ()


def test_finished_job_frees_quota_for_the_gang() -> None:
    cq = cluster_queue(**{"meshwork.io/queueing-policy": "FIFO"})
    one = job("one", second=1, **{"meshwork.io/admitted-by": "cq", "meshwork.io/admitted-flavors": "cpu=default,pods=default"})
    three = job("three", second=3, **{"meshwork.io/admitted-by": "cq", "meshwork.io/admitted-flavors": "cpu=default,pods=default"})
    gang = job("gang", parallelism=2, second=2)
    assert not [a for a in reconcile_cluster_queue(view(cq, [one, gang, three]), NOW).actions if isinstance(a, UpdateObject)]
    done = Job.model_validate({**one.model_dump(by_alias=True, exclude_none=True),
                               "status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    three_done = Job.model_validate({**three.model_dump(by_alias=True, exclude_none=True),
                                     "status": {"conditions": [{"type": "Failed", "status": "True"}]}})
    out = reconcile_cluster_queue(view(cq, [done, gang, three_done]), NOW)
    assert [a.obj.metadata.name for a in out.actions if isinstance(a, UpdateObject)] == ["gang"]


def test_nil_namespace_selector_and_held_queue_admit_nothing() -> None:
    cq = cluster_queue()
    nil = ClusterQueue.model_validate({**cq.model_dump(by_alias=True, exclude_none=True),
                                       "spec": {**cq.spec.model_dump(by_alias=True, exclude_none=True), "namespaceSelector": None}})
    out = reconcile_cluster_queue(view(nil, [job("one")]), NOW)
    assert not [a for a in out.actions if isinstance(a, UpdateObject)]
    held = ClusterQueue.model_validate({**cq.model_dump(by_alias=True, exclude_none=True),
                                        "spec": {**cq.spec.model_dump(by_alias=True, exclude_none=True), "stopPolicy": "Hold"}})
    out = reconcile_cluster_queue(view(held, [job("one")]), NOW)
    assert not [a for a in out.actions if isinstance(a, UpdateObject)]
    st = next(a.obj for a in out.actions if isinstance(a, UpdateStatus) and a.obj.kind == "ClusterQueue").status
    assert st.conditions[0].status == "False" and st.conditions[0].reason == "Stopped"


def test_unadmitted_running_job_is_suspended_and_workflow_admitted_without_suspend() -> None:
    cq = cluster_queue(**{"meshwork.io/queueing-policy": "FIFO"})
    big = job("big", parallelism=3, second=1)
    running = Job.model_validate({**big.model_dump(by_alias=True, exclude_none=True),
                                  "spec": {**big.spec.model_dump(by_alias=True, exclude_none=True), "suspend": False}})
    wf = Workflow.model_validate({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "default", "creationTimestamp": "2027-01-15T08:00:05Z",
                     "labels": {"kueue.x-k8s.io/queue-name": "lq"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine",
                 "resources": {"requests": {"cpu": "1"}}}}]}})  # fmt: skip
    out = reconcile_cluster_queue(view(cq, [running], [wf]), NOW)
    writes = {a.obj.metadata.name: a.obj for a in out.actions if isinstance(a, UpdateObject)}
    assert writes["big"].spec.suspend is True
    assert writes["wf"].metadata.annotations["meshwork.io/admitted-by"] == "cq"
