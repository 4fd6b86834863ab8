"""The built-in controllers: each pure reconcile with its two cache adapters.

``keys_for`` says which keys an object change concerns (a pod's change
concerns its ReplicaSet, and through it the Deployment); ``view`` reads the
objects a reconcile needs from the watch cache, as typed models. Nothing
here decides anything: the decisions are in ``meshwork.core.reconcile``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from meshwork.control.api.cache import CachedEvent, CachedObject, WatchCache, resource_of
from meshwork.control.runner import Controller
from meshwork.core.reconcile import Outcome
from meshwork.core.reconcile.configrollout import SourceRef, reconcile_config_rollout, references
from meshwork.core.reconcile.cronjob import reconcile_cronjob
from meshwork.core.reconcile.daemonset import reconcile_daemonset
from meshwork.core.reconcile.deployment import reconcile_deployment
from meshwork.core.reconcile.endpoints import reconcile_endpoints
from meshwork.core.reconcile.job import reconcile_job
from meshwork.core.reconcile.nodelifecycle import LifecycleConfig, reconcile_node
from meshwork.core.reconcile.replicaset import reconcile_replicaset
from meshwork.core.reconcile.scheduling import reconcile_scheduling
from meshwork.core.scheduler_filters import build_snapshot
from meshwork.core.selectors import selector_from_spec
from meshwork.model.base import Resource
from meshwork.model.core import ConfigMap, Endpoints, Node, Secret, Service
from meshwork.model.kinds import REGISTRY, KindInfo
from meshwork.model.pod import Pod
from meshwork.model.workloads import CronJob, DaemonSet, Deployment, Job, ReplicaSet

M = TypeVar("M", bound=Resource)


PODS = REGISTRY.require("", "Pod")
SERVICES = REGISTRY.require("", "Service")
ENDPOINTS = REGISTRY.require("", "Endpoints")
REPLICASETS = REGISTRY.require("apps", "ReplicaSet")
DEPLOYMENTS = REGISTRY.require("apps", "Deployment")
JOBS = REGISTRY.require("batch", "Job")
CRONJOBS = REGISTRY.require("batch", "CronJob")
DAEMONSETS = REGISTRY.require("apps", "DaemonSet")


def _resources(*infos: KindInfo) -> frozenset[str]:
    return frozenset(info.resource for info in infos)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def _controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _owner_key(item: CachedObject, kind: str) -> str | None:
    """``ns/name`` of the controller owning ``item`` when it is a ``kind``."""
    if kind.encode() not in item.record.value:  # cheap test before decoding
        return None
    ref = _controller_ref(item.obj)
    if ref is None or ref.get("kind") != kind:
        return None
    return f"{item.obj['metadata'].get('namespace', '')}/{ref.get('name', '')}"


class Views:
    """Typed reads from the watch cache."""

    def __init__(self, cache: WatchCache) -> None:
        self.cache = cache

    def one(self, info: KindInfo, model: type[M], key: str) -> M | None:
        namespace, name = _split(key)
        item = self.cache.get(f"{info.resource}/{namespace}/{name}")
        return model.model_validate(item.obj) if item is not None else None

    def all_in(self, info: KindInfo, model: type[M], namespace: str, owner_uid: str | None = None) -> list[M]:
        items = self.cache.list(info.resource, namespace)
        if owner_uid is not None:
            needle = owner_uid.encode()
            items = [i for i in items if needle in i.record.value]
        return [model.model_validate(i.obj) for i in items]

    def keys(self, info: KindInfo) -> Iterator[str]:
        for item in self.cache.list(info.resource):
            yield _key(item.obj)

    def owner_via_replicaset(self, pod: CachedObject, kind: str) -> list[str]:
        """``[ns/name]`` of the ``kind`` (Deployment, Rollout, Experiment) owning the ReplicaSet
        that owns ``pod``; [] when there is none."""
        rs_key = _owner_key(pod, "ReplicaSet")
        if rs_key is None:
            return []
        namespace, name = _split(rs_key)
        rs = self.cache.get(f"{REPLICASETS.resource}/{namespace}/{name}")
        key = _owner_key(rs, kind) if rs is not None else None
        return [key] if key else []

    def pods_of(self, namespace: str, replicasets: Iterable[ReplicaSet]) -> list[Pod]:
        """The pods of these ReplicaSets; only those are decoded."""
        owners = [rs.metadata.uid.encode() for rs in replicasets if rs.metadata.uid]
        return [Pod.model_validate(i.obj) for i in self.cache.list(PODS.resource, namespace)
                if any(uid in i.record.value for uid in owners)]  # fmt: skip


def replicaset_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == REPLICASETS.resource:
            return [_key(event.item.obj)]
        if resource == PODS.resource:
            key = _owner_key(event.item, "ReplicaSet")
            return [key] if key else []
        return []

    def reconcile(key: str, now: float) -> Outcome:
        rs = views.one(REPLICASETS, ReplicaSet, key)
        if rs is None:
            return Outcome()
        pods = views.all_in(PODS, Pod, _split(key)[0], owner_uid=rs.metadata.uid)
        return reconcile_replicaset(rs, pods, now)

    return Controller("replicaset", keys_for, lambda: views.keys(REPLICASETS), reconcile, _resources(REPLICASETS, PODS))


def deployment_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == DEPLOYMENTS.resource:
            return [_key(event.item.obj)]
        if resource == REPLICASETS.resource:
            key = _owner_key(event.item, "Deployment")
            return [key] if key else []
        if resource == PODS.resource:
            return views.owner_via_replicaset(event.item, "Deployment")
        return []

    def reconcile(key: str, now: float) -> Outcome:
        deploy = views.one(DEPLOYMENTS, Deployment, key)
        if deploy is None:
            return Outcome()
        namespace = _split(key)[0]
        replicasets = views.all_in(REPLICASETS, ReplicaSet, namespace, owner_uid=deploy.metadata.uid)
        return reconcile_deployment(deploy, replicasets, views.pods_of(namespace, replicasets), now)

    return Controller("deployment", keys_for, lambda: views.keys(DEPLOYMENTS), reconcile, _resources(DEPLOYMENTS, REPLICASETS, PODS))


def job_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == JOBS.resource:
            return [_key(event.item.obj)]
        if resource == PODS.resource:
            key = _owner_key(event.item, "Job")
            return [key] if key else []
        return []

    def reconcile(key: str, now: float) -> Outcome:
        job = views.one(JOBS, Job, key)
        if job is None:
            return Outcome()
        pods = views.all_in(PODS, Pod, _split(key)[0], owner_uid=job.metadata.uid)
        return reconcile_job(job, pods, now)

    return Controller("job", keys_for, lambda: views.keys(JOBS), reconcile, _resources(JOBS, PODS))


def cronjob_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == CRONJOBS.resource:
            return [_key(event.item.obj)]
        if resource == JOBS.resource:
            key = _owner_key(event.item, "CronJob")
            return [key] if key else []
        return []

    def reconcile(key: str, now: float) -> Outcome:
        cj = views.one(CRONJOBS, CronJob, key)
        if cj is None:
            return Outcome()
        jobs = views.all_in(JOBS, Job, _split(key)[0], owner_uid=cj.metadata.uid)
        return reconcile_cronjob(cj, jobs, now)

    return Controller("cronjob", keys_for, lambda: views.keys(CRONJOBS), reconcile, _resources(CRONJOBS, JOBS))


def endpoints_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource in (SERVICES.resource, ENDPOINTS.resource):
            return [_key(event.item.obj)]
        if resource == PODS.resource:
            namespace = _split(event.key[len(resource) + 1 :])[0]
            services = views.cache.list(SERVICES.resource, namespace)
            if not services:
                return []  # decoding the pod would tell nothing
            labels = event.item.obj.get("metadata", {}).get("labels") or {}
            keys = []
            for svc in services:
                selector = (svc.obj.get("spec") or {}).get("selector")
                if selector and selector_from_spec({"matchLabels": selector}).matches(labels):
                    keys.append(_key(svc.obj))
            return keys
        return []

    def reconcile(key: str, now: float) -> Outcome:
        service = views.one(SERVICES, Service, key)
        existing = views.one(ENDPOINTS, Endpoints, key)
        pods = views.all_in(PODS, Pod, _split(key)[0]) if service is not None else []
        return reconcile_endpoints(service, pods, existing)

    return Controller("endpoints", keys_for, lambda: views.keys(SERVICES), reconcile, _resources(SERVICES, ENDPOINTS, PODS))


NODES = REGISTRY.require("", "Node")


# Pod metadata a scheduling attempt does not depend on: kube-scheduler's
# isPodUpdated strips these (and the status) before deciding that an update of
# an unschedulable pod is worth another attempt.
_POD_VOLATILE_META = frozenset(("resourceVersion", "generation", "managedFields", "finalizers"))


def _pod_signature(obj: dict[str, Any]) -> tuple[object, ...]:
    """What of a pending pod a scheduling attempt depends on: all but its status and bookkeeping."""
    meta = obj.get("metadata") or {}
    return (obj.get("spec"), {k: v for k, v in meta.items() if k not in _POD_VOLATILE_META})


def _node_signature(obj: dict[str, Any]) -> tuple[object, ...]:
    """What of a node can turn a pod schedulable: kube-scheduler's nodeSchedulingPropertiesChange
    (allocatable, labels, taints, spec.unschedulable, and each condition's status, so that a
    heartbeat's new lastHeartbeatTime is no change)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or () if isinstance(c, dict)}
    return (
        (obj.get("metadata") or {}).get("labels"), spec.get("taints"), bool(spec.get("unschedulable")),
        status.get("allocatable"), conditions,
    )  # fmt: skip


def scheduler_controller(views: Views) -> Controller:
    """Binds pending pods (no ``spec.nodeName``) to nodes.

    A pod that did not fit waits, as in kube-scheduler's unschedulable queue,
    until something that may make room happens: a node added or changed in a
    way scheduling reads, a bound pod deleted or finished, or the pod itself
    changed (not its status: the scheduler's own PodScheduled write does not
    count); at the latest after ``RETRY_S`` (the reconcile's requeue).
    """
    # Pending pods whose last attempt found no node -> what that attempt saw of them.
    unschedulable: dict[str, tuple[object, ...]] = {}
    # Node name -> its signature as last seen, to tell a heartbeat from a change.
    node_signatures: dict[str, tuple[object, ...]] = {}

    def pending_keys() -> Iterator[str]:
        for item in views.cache.list(PODS.resource):
            if b'"nodeName":"' not in item.record.value:
                yield _key(item.obj)

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == PODS.resource:
            key = event.key[len(resource) + 1 :]
            value = event.item.record.value
            was_bound = b'"nodeName":"' in value
            if event.type == "DELETED":
                unschedulable.pop(key, None)
                # Only a bound pod going away frees room; a pending pod's deletion
                # must not retry every pending pod (GC deletes them in bulk).
                return list(unschedulable) if was_bound else []
            if not was_bound:
                seen = unschedulable.get(key)
                if seen is None:
                    return [key]
                signature = _pod_signature(event.item.obj)
                if signature != seen:
                    return [key]
                # Only its status or bookkeeping changed (our own PodScheduled write,
                # say). Keep the new, equal signature: it shares the cached object's
                # dicts, so the old object's can be freed.
                unschedulable[key] = signature
                return []
            unschedulable.pop(key, None)
            finished = b'"Succeeded"' in value or b'"Failed"' in value
            return list(unschedulable) if finished else []
        if resource == NODES.resource:
            name = event.key[len(resource) + 1 :].lstrip("/")
            if event.type == "DELETED":
                node_signatures.pop(name, None)
                return []  # a node going away makes room nowhere
            signature = _node_signature(event.item.obj)
            if node_signatures.get(name) == signature:
                return []
            node_signatures[name] = signature
            return list(unschedulable)
        return []

    # Decoded nodes and bound pods, reused while their stored record is the same
    # object: without it every pass re-validated every bound pod (quadratic in a
    # burst of creates). build_snapshot only reads them.
    memo: dict[str, tuple[object, Any]] = {}
    # Bound pods, kept by the cache as pods change: scanning every pod's bytes on
    # each pass made a burst of pending pods quadratic.
    bound_index = views.cache.add_index(PODS.resource, lambda i: b'"nodeName":"' in i.record.value)

    def decoded(item: CachedObject, model: type[M]) -> M:
        key = f"{model.__name__}/{_key(item.obj)}"
        hit = memo.get(key)
        if hit is not None and hit[0] is item.record:
            return hit[1]  # type: ignore[no-any-return]
        value = model.model_validate(item.obj)
        memo[key] = (item.record, value)
        return value

    def reconcile(key: str, now: float) -> Outcome:
        item = views.cache.get(f"{PODS.resource}/{key}")
        pod = Pod.model_validate(item.obj) if item is not None else None
        if item is None or pod is None or pod.spec.node_name:
            unschedulable.pop(key, None)
            return Outcome()
        nodes = [decoded(i, Node) for i in views.cache.list(NODES.resource)]
        items = views.cache.list_index(bound_index)
        if len(memo) > 2 * (len(items) + len(nodes)) + 64:
            live = {f"Pod/{_key(i.obj)}" for i in items} | {f"Node/{_key(i.obj)}" for i in views.cache.list(NODES.resource)}
            for stale in [k for k in memo if k not in live]:
                del memo[stale]
        bound = [decoded(i, Pod) for i in items]
        outcome = reconcile_scheduling(pod, build_snapshot(nodes, bound), now)
        if outcome.requeue_after is not None:  # no node for it: wait for a change that may make room
            unschedulable[key] = _pod_signature(item.obj)
        else:
            unschedulable.pop(key, None)
        return outcome

    return Controller("scheduler", keys_for, pending_keys, reconcile, _resources(PODS, NODES))


def _pods_on(views: Views, node_name: str) -> list[Pod]:
    """Pods whose ``spec.nodeName`` is ``node_name`` (a byte test before decoding)."""
    needle = f'"nodeName":{json.dumps(node_name)}'.encode()
    return [
        pod
        for item in views.cache.list(PODS.resource)
        if needle in item.record.value and (pod := Pod.model_validate(item.obj)).spec.node_name == node_name
    ]


def node_lifecycle_controller(views: Views, config: LifecycleConfig) -> Controller:
    """Node health, readiness taints, taint-based eviction and pod GC, keyed by node name."""

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == NODES.resource:
            return [event.item.obj.get("metadata", {}).get("name", "")]
        if resource == PODS.resource and event.type != "DELETED":
            if b'"nodeName":"' not in event.item.record.value:
                return []  # pending: no node's concern (and no decoding)
            node_name = (event.item.obj.get("spec") or {}).get("nodeName")
            return [node_name] if node_name else []
        return []

    def initial_keys() -> Iterator[str]:
        names = {item.obj.get("metadata", {}).get("name", "") for item in views.cache.list(NODES.resource)}
        for item in views.cache.list(PODS.resource):
            if b'"nodeName":"' in item.record.value:
                names.add((item.obj.get("spec") or {}).get("nodeName") or "")
        return iter(sorted(n for n in names if n))

    def reconcile(key: str, now: float) -> Outcome:
        node = views.one(NODES, Node, f"/{key}")
        return reconcile_node(key, node, lambda: _pods_on(views, key), now, config)

    return Controller("nodelifecycle", keys_for, initial_keys, reconcile, _resources(NODES, PODS))


def daemonset_controller(views: Views) -> Controller:
    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == DAEMONSETS.resource:
            return [_key(event.item.obj)]
        if resource == PODS.resource:
            key = _owner_key(event.item, "DaemonSet")
            return [key] if key else []
        if resource == NODES.resource:
            return list(views.keys(DAEMONSETS))  # a node's labels, taints or existence changed
        return []

    def reconcile(key: str, now: float) -> Outcome:
        ds = views.one(DAEMONSETS, DaemonSet, key)
        if ds is None:
            return Outcome()
        nodes = [Node.model_validate(i.obj) for i in views.cache.list(NODES.resource)]
        pods = views.all_in(PODS, Pod, _split(key)[0], owner_uid=ds.metadata.uid)
        return reconcile_daemonset(ds, nodes, pods, now)

    return Controller("daemonset", keys_for, lambda: views.keys(DAEMONSETS), reconcile, _resources(DAEMONSETS, PODS, NODES))


CONFIGMAPS = REGISTRY.require("", "ConfigMap")
SECRETS = REGISTRY.require("", "Secret")


def config_rollout_controller(views: Views) -> Controller:
    """Rolls a Deployment or DaemonSet when a ConfigMap or Secret it reads changes;
    keyed ``Deployment/ns/name`` or ``DaemonSet/ns/name``."""
    workloads: dict[str, tuple[KindInfo, type[Deployment] | type[DaemonSet]]] = {
        "Deployment": (DEPLOYMENTS, Deployment),
        "DaemonSet": (DAEMONSETS, DaemonSet),
    }
    sources: dict[str, tuple[KindInfo, type[ConfigMap] | type[Secret]]] = {
        "ConfigMap": (CONFIGMAPS, ConfigMap),
        "Secret": (SECRETS, Secret),
    }

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        for kind, (info, _) in workloads.items():
            if resource == info.resource:
                return [] if event.type == "DELETED" else [f"{kind}/{_key(event.item.obj)}"]
        if resource not in (CONFIGMAPS.resource, SECRETS.resource):
            return []
        # Every workload in the namespace whose bytes name the object (a false
        # match costs one reconcile that decides nothing).
        meta = event.item.obj.get("metadata", {})
        needle = json.dumps(meta.get("name", "")).encode()
        return [
            f"{kind}/{_key(item.obj)}"
            for kind, (info, _) in workloads.items()
            for item in views.cache.list(info.resource, meta.get("namespace", ""))
            if needle in item.record.value
        ]

    def initial_keys() -> Iterator[str]:
        for kind, (info, _) in workloads.items():
            for key in views.keys(info):
                yield f"{kind}/{key}"

    def reconcile(key: str, now: float) -> Outcome:
        kind, _, rest = key.partition("/")
        info, model = workloads[kind]
        workload = views.one(info, model, rest)
        if workload is None:
            return Outcome()
        namespace = _split(rest)[0]
        found: dict[SourceRef, ConfigMap | Secret | None] = {}
        for ref in references(workload.spec.template.spec):
            source_info, source_model = sources[ref.kind]
            found[ref] = views.one(source_info, source_model, f"{namespace}/{ref.name}")
        return reconcile_config_rollout(workload, found)

    return Controller("configrollout", keys_for, initial_keys, reconcile, _resources(DEPLOYMENTS, DAEMONSETS, CONFIGMAPS, SECRETS))


def builtin_controllers(
    cache: WatchCache,
    lifecycle: LifecycleConfig | None = None,
    data_dir: Path | None = None,
    node_token: Callable[[str], str] | None = None,
) -> list[Controller]:
    """Every built-in controller; ``lifecycle`` holds the node lifecycle timings (server flags),
    ``data_dir`` the server's data directory (workflow artifacts live under it), ``node_token``
    the credential for a node's agent (the HPA controller reads its usage stats)."""
    from meshwork.control.hpa import hpa_controller
    from meshwork.control.queues import queue_controller
    from meshwork.control.rollouts import (
        analysisrun_controller,
        experiment_controller,
        rollout_controller,
    )
    from meshwork.control.workflows import cronworkflow_controller, workflow_controller

    views = Views(cache)
    return [
        queue_controller(views),
        workflow_controller(views, data_dir),
        cronworkflow_controller(views),
        rollout_controller(views),
        analysisrun_controller(views),
        experiment_controller(views),
        deployment_controller(views),
        replicaset_controller(views),
        daemonset_controller(views),
        config_rollout_controller(views),
        job_controller(views),
        cronjob_controller(views),
        endpoints_controller(views),
        scheduler_controller(views),
        node_lifecycle_controller(views, lifecycle or LifecycleConfig()),
        hpa_controller(views, node_token=node_token),
    ]
