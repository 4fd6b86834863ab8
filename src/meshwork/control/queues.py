"""The queue controller's shell: which ClusterQueue a change concerns, and its view.

The decisions are in ``meshwork.core.queue``. Keys are ClusterQueue names. A
change to a ClusterQueue concerns itself; to a LocalQueue, the ClusterQueue
it points at; to a Job or Workflow labelled ``kueue.x-k8s.io/queue-name``,
the ClusterQueue of that LocalQueue (a Job finishing frees quota, so every
change of a queued Job counts). Namespace and priority-class changes
re-examine every ClusterQueue.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from meshwork.control.api.cache import CachedEvent, resource_of
from meshwork.control.controllers import JOBS, Views
from meshwork.control.runner import Controller
from meshwork.core.queue.reconcile import QueueView, reconcile_cluster_queue
from meshwork.core.queue.workload import LABEL_QUEUE
from meshwork.core.reconcile import Outcome
from meshwork.model.argo_workflows import Workflow
from meshwork.model.kinds import REGISTRY
from meshwork.model.kueue import ClusterQueue, LocalQueue
from meshwork.model.workloads import Job

CLUSTER_QUEUES = REGISTRY.require("kueue.x-k8s.io", "ClusterQueue")
LOCAL_QUEUES = REGISTRY.require("kueue.x-k8s.io", "LocalQueue")
WORKLOAD_PRIORITY_CLASSES = REGISTRY.require("kueue.x-k8s.io", "WorkloadPriorityClass")
PRIORITY_CLASSES = REGISTRY.require("scheduling.k8s.io", "PriorityClass")
NAMESPACES = REGISTRY.require("", "Namespace")
WORKFLOWS = REGISTRY.require("argoproj.io", "Workflow")
_LABEL = LABEL_QUEUE.encode()


def queue_controller(views: Views) -> Controller:
    cache = views.cache

    def all_queues() -> Iterator[str]:
        for item in cache.list(CLUSTER_QUEUES.resource):
            yield item.obj.get("metadata", {}).get("name", "")

    def cluster_queue_of(namespace: str, local_queue: str) -> str | None:
        item = cache.get(f"{LOCAL_QUEUES.resource}/{namespace}/{local_queue}")
        return (item.obj.get("spec") or {}).get("clusterQueue") if item is not None else None

    def keys_for(event: CachedEvent) -> Iterable[str]:
        # Decide by the key (and bytes) before decoding: most changes (pods,
        # events) concern no queue, and decoding each of them cost the most here.
        resource = resource_of(event.key)
        if resource == CLUSTER_QUEUES.resource:
            return [] if event.type == "DELETED" else [event.key[len(resource) + 1 :].lstrip("/")]
        if resource == LOCAL_QUEUES.resource:
            target = (event.item.obj.get("spec") or {}).get("clusterQueue")
            return [target] if target else []
        if resource in (JOBS.resource, WORKFLOWS.resource):
            if _LABEL not in event.item.record.value:
                return []
            meta = event.item.obj.get("metadata", {})
            lq = (meta.get("labels") or {}).get(LABEL_QUEUE)
            target = cluster_queue_of(meta.get("namespace", ""), lq) if lq else None
            return [target] if target else []
        if resource in (NAMESPACES.resource, WORKLOAD_PRIORITY_CLASSES.resource, PRIORITY_CLASSES.resource):
            return list(all_queues())
        return []

    def reconcile(key: str, now: float) -> Outcome:
        cq = views.one(CLUSTER_QUEUES, ClusterQueue, f"/{key}")
        if cq is None:
            return Outcome()
        local_queues = [
            LocalQueue.model_validate(item.obj)
            for item in cache.list(LOCAL_QUEUES.resource)
            if (item.obj.get("spec") or {}).get("clusterQueue") == key
        ]
        wanted = {(lq.metadata.namespace or "", lq.metadata.name or "") for lq in local_queues}
        namespaces = {ns for ns, _ in wanted}

        def queued(resource: str) -> Iterator[tuple[dict[str, object], int]]:
            for ns in sorted(namespaces):
                for item in cache.list(resource, ns):
                    if _LABEL not in item.record.value:
                        continue
                    lq = (item.obj.get("metadata", {}).get("labels") or {}).get(LABEL_QUEUE)
                    if (ns, lq) in wanted:
                        yield item.obj, item.record.create_revision

        jobs = [(Job.model_validate(obj), rev) for obj, rev in queued(JOBS.resource)]
        workflows = [(Workflow.model_validate(obj), rev) for obj, rev in queued(WORKFLOWS.resource)]
        labels = {
            item.obj.get("metadata", {}).get("name", ""): dict(item.obj.get("metadata", {}).get("labels") or {})
            for item in cache.list(NAMESPACES.resource)
        }
        for ns in namespaces:  # a namespace used before its object exists carries the name label only
            labels.setdefault(ns, {})
            labels[ns].setdefault("kubernetes.io/metadata.name", ns)
        workload_classes = {item.obj.get("metadata", {}).get("name", ""): int(item.obj.get("value", 0))
                            for item in cache.list(WORKLOAD_PRIORITY_CLASSES.resource)}  # fmt: skip
        priority_classes = {item.obj.get("metadata", {}).get("name", ""): int(item.obj.get("value", 0))
                            for item in cache.list(PRIORITY_CLASSES.resource)}  # fmt: skip
        view = QueueView(cq, local_queues, jobs, workflows, labels, workload_classes, priority_classes)
        return reconcile_cluster_queue(view, now)

    watched = (CLUSTER_QUEUES, LOCAL_QUEUES, JOBS, WORKFLOWS, NAMESPACES, WORKLOAD_PRIORITY_CLASSES, PRIORITY_CLASSES)
    return Controller("queue", keys_for, all_queues, reconcile, frozenset(i.resource for i in watched))
