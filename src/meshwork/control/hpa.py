"""The HorizontalPodAutoscaler controller's shell: metric sampling, target reads, scale writes.

The decisions are in ``meshwork.core.autoscale``. This module keeps, per
HPA, a sampler task that every sync period reads what the HPA's metrics need
and a short history of those readings; the controller's reconcile turns the
history into readings (rates over the metrics window) and hands them to
``decide``, then writes the target's ``spec.replicas`` and the HPA's status.

Where the metrics come from:

* ``Resource`` / ``ContainerResource`` ``cpu`` and ``memory``: the node
  agents' ``/stats/summary`` (each container's process group CPU seconds and
  RSS, as ``meshwork top pods`` shows), for the target's pods; utilization is
  of the containers' summed requests, sidecar included, as upstream counts
  every container of the pod.
* ``Pods``, from each target pod's sidecar (``:15020/stats/prometheus``,
  ``reporter="destination"``, what the pod served): ``requests_per_second``,
  ``error_rate`` (share of 5xx, 0..1), ``latency_p50_ms``,
  ``latency_p90_ms``, ``latency_p99_ms``.
* ``Object`` with ``describedObject`` a Service, and ``External`` with
  ``selector.matchLabels`` ``destination_service_name`` (and optionally
  ``destination_service_namespace``, default the HPA's): the same names over
  the whole Service, counted as ``meshwork top services`` counts it.

The scale is written as an update of the target (Deployment, ReplicaSet or
Rollout) with its resourceVersion as precondition: meshwork serves no
``/scale`` subresource, and the CAS update is what a scale write amounts to.

Timings (upstream's flags, as environment variables of the server):
``MESHWORK_HPA_SYNC_PERIOD`` (15 s, ``--horizontal-pod-autoscaler-sync-period``),
``MESHWORK_HPA_DOWNSCALE_STABILIZATION`` (300 s), ``MESHWORK_HPA_TOLERANCE``
(0.1), ``MESHWORK_HPA_CPU_INITIALIZATION_PERIOD`` (300 s),
``MESHWORK_HPA_INITIAL_READINESS_DELAY`` (30 s), and
``MESHWORK_HPA_METRICS_WINDOW`` (30 s: rates are taken over this window, as
metrics-server's resolution and a PromQL ``rate()`` range are).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshwork.control.api.cache import CachedEvent, resource_of
from meshwork.control.controllers import DEPLOYMENTS, NODES, PODS, REPLICASETS, Views, _key, _split
from meshwork.control.runner import Controller
from meshwork.core.autoscale.behavior import History
from meshwork.core.autoscale.decide import (
    MetricFailure,
    MetricInput,
    ObjectMetricInput,
    PodMetricInput,
    Settings,
    decide,
)
from meshwork.core.autoscale.replicas import CpuTiming, PodState, Sample
from meshwork.core.reconcile import (
    Action,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.core.selectors import selector_from_spec
from meshwork.model.autoscaling import HorizontalPodAutoscaler, MetricSpec
from meshwork.model.base import Resource
from meshwork.model.corev1 import parse_quantity
from meshwork.model.kinds import REGISTRY, KindInfo
from meshwork.telemetry.meshstats import (
    Series,
    ServiceStats,
    increases,
    meshed_pods,
    scrape,
    service_stats,
    summed,
    traffic_stats,
)

log = logging.getLogger(__name__)

HPAS = REGISTRY.require("autoscaling", "HorizontalPodAutoscaler")
ROLLOUTS = REGISTRY.require("argoproj.io", "Rollout")
SYNC_PERIOD_S = 15.0  # --horizontal-pod-autoscaler-sync-period
METRICS_WINDOW_S = 30.0  # metrics-server's resolution is 15-60 s; a rate needs a window
AGENT_TIMEOUT_S = 5.0  # an agent answers /stats/summary from /proc at once
MESH_METRICS = ("requests_per_second", "error_rate", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through $http_proxy


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


@dataclass(frozen=True, slots=True)
class HpaConfig:
    sync_period: float = SYNC_PERIOD_S
    window: float = METRICS_WINDOW_S
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def from_env(cls) -> HpaConfig:
        return cls(
            sync_period=max(0.1, _env("MESHWORK_HPA_SYNC_PERIOD", SYNC_PERIOD_S)),
            window=max(0.1, _env("MESHWORK_HPA_METRICS_WINDOW", METRICS_WINDOW_S)),
            settings=Settings(
                downscale_window=_env("MESHWORK_HPA_DOWNSCALE_STABILIZATION", 300.0),
                tolerance=_env("MESHWORK_HPA_TOLERANCE", 0.1),
                cpu=CpuTiming(_env("MESHWORK_HPA_CPU_INITIALIZATION_PERIOD", 300.0),
                              _env("MESHWORK_HPA_INITIAL_READINESS_DELAY", 30.0)),
            ),
        )


_TARGETS: dict[str, KindInfo] = {"Deployment": DEPLOYMENTS, "ReplicaSet": REPLICASETS, "Rollout": ROLLOUTS}


# ---------------------------------------------------------------------------
# Sampling (I/O, in tasks beside the controllers' worker)
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """One sampling pass: per pod, container usage (cpu seconds, bytes) and sidecar series."""

    time: float
    usage: dict[str, dict[str, tuple[float, float]]]
    series: dict[str, dict[Series, float]]


def _agent_endpoint(node: dict[str, Any]) -> tuple[str, int] | None:
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
    host = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    return (host, int(port)) if host and port else None


def _summary(host: str, port: int, token: str) -> dict[str, Any] | None:
    req = urllib.request.Request(f"http://{host}:{port}/stats/summary", headers={"Authorization": f"Bearer {token}"})
    try:
        with _DIRECT.open(req, timeout=AGENT_TIMEOUT_S) as reply:
            return dict(json.loads(reply.read()))
    except (OSError, ValueError):
        return None


def _needs(hpa: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(agent stats, per-pod sidecar series, namespace-wide sidecar series) the HPA's metrics read."""
    kinds = {m.get("type") for m in (hpa.get("spec") or {}).get("metrics") or [{"type": "Resource"}]}
    return bool(kinds & {"Resource", "ContainerResource"}), "Pods" in kinds, bool(kinds & {"Object", "External"})


class Sampler:
    """Per HPA key, a task sampling its metrics' sources every sync period into a short history."""

    def __init__(self, views: Views, config: HpaConfig, node_token: Callable[[str], str] | None) -> None:
        self.views = views
        self.config = config
        self.node_token = node_token
        self.history: dict[str, deque[Snapshot]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def ensure(self, key: str) -> None:
        if key in self.tasks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.history.setdefault(key, deque())
        self.tasks[key] = loop.create_task(self._run(key), name=f"hpa-sampler {key}")

    def stop(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.history.pop(key, None)

    async def _run(self, key: str) -> None:
        while True:
            try:
                snap = await self._sample(key)
                if snap is not None:
                    hist = self.history.setdefault(key, deque())
                    hist.append(snap)
                    # Keep one sample older than the window: the rate's starting point.
                    while len(hist) > 2 and hist[1].time <= snap.time - self.config.window:
                        hist.popleft()
            except asyncio.CancelledError:
                raise
            except Exception:  # a sampling bug must not end the sampler
                log.exception("hpa %s: sampling failed", key)
            await asyncio.sleep(self.config.sync_period)

    async def _sample(self, key: str) -> Snapshot | None:
        namespace, name = _split(key)
        item = self.views.cache.get(f"{HPAS.resource}/{namespace}/{name}")
        if item is None:
            return None
        agent, per_pod, wide = _needs(item.obj)
        pods = target_pods(self.views, item.obj)
        usage: dict[str, dict[str, tuple[float, float]]] = {}
        series: dict[str, dict[Series, float]] = {}
        if agent and self.node_token is not None:
            nodes = {(p.get("spec") or {}).get("nodeName") for p in pods} - {None, ""}
            wanted = {p["metadata"]["name"] for p in pods}
            for node_name in sorted(str(n) for n in nodes):
                node = self.views.cache.get(f"{NODES.resource}//{node_name}")
                endpoint = _agent_endpoint(node.obj) if node is not None else None
                if endpoint is None:
                    continue
                summary = await asyncio.to_thread(_summary, *endpoint, self.node_token(node_name))
                for pod in (summary or {}).get("pods") or []:
                    ref = pod.get("podRef") or {}
                    if ref.get("namespace") == namespace and ref.get("name") in wanted:
                        usage[ref["name"]] = {c["name"]: (float(c["cpuSeconds"]), float(c["memoryBytes"]))
                                              for c in pod.get("containers") or []}  # fmt: skip
        if per_pod or wide:
            if wide:
                source = [i.obj for i in self.views.cache.list(PODS.resource, namespace)]
            else:
                source = pods
            targets = meshed_pods(source)
            reporter = None if wide else "destination"
            results = await asyncio.gather(*(asyncio.to_thread(scrape, ip, reporter) for _, ip in targets))
            series = {pod: r for (pod, _), r in zip(targets, results, strict=True) if r is not None}
        return Snapshot(time.time(), usage, series)


# ---------------------------------------------------------------------------
# From samples to readings
# ---------------------------------------------------------------------------


def target_pods(views: Views, hpa: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the HPA's target selects (its ``spec.selector``)."""
    spec = hpa.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    info = _TARGETS.get(str(ref.get("kind")))
    namespace = (hpa.get("metadata") or {}).get("namespace", "")
    if info is None:
        return []
    item = views.cache.get(f"{info.resource}/{namespace}/{ref.get('name', '')}")
    selector_spec = ((item.obj.get("spec") or {}).get("selector")) if item is not None else None
    if not selector_spec:
        return []
    selector = selector_from_spec(selector_spec)
    return [i.obj for i in views.cache.list(PODS.resource, namespace)
            if selector.matches((i.obj.get("metadata") or {}).get("labels") or {})]  # fmt: skip


def _pod_state(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return PodState(
        name=pod["metadata"]["name"],
        phase=status.get("phase") or "Pending",
        deleting=bool(pod["metadata"].get("deletionTimestamp")),
        ready=None if ready is None else ready.get("status") == "True",
        ready_since=parse_time(ready.get("lastTransitionTime")) if ready is not None else None,
        started=parse_time(status.get("startTime")),
    )


def _requests(pod: dict[str, Any], resource: str, container: str | None) -> float | None:
    total = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        if container is not None and c.get("name") != container:
            continue
        q = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if q is None:
            return None
        total += float(parse_quantity(q))
    return total


def _span(hist: deque[Snapshot], now: float, window: float) -> tuple[Snapshot, Snapshot] | None:
    if len(hist) < 2:
        return None
    last = hist[-1]
    first = next((s for s in hist if s.time >= last.time - window - 1e-6), hist[0])
    if first is last:
        first = hist[-2]
    return first, last


def _resource_reading(metric: MetricSpec, pods: list[dict[str, Any]], hist: deque[Snapshot], now: float,
                      window: float) -> MetricInput:  # fmt: skip
    source = metric.resource or metric.container_resource
    assert source is not None
    resource = source.name
    container = metric.container_resource.container if metric.container_resource else None
    if resource not in ("cpu", "memory"):
        return MetricFailure(f"unable to get metrics for resource {resource}: only cpu and memory are measured")
    span = _span(hist, now, window)
    if span is None:
        return MetricFailure(f"unable to get metrics for resource {resource}: no metrics returned from resource metrics API")
    first, last = span
    samples: dict[str, Sample] = {}
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        after, before = last.usage.get(pod_name), first.usage.get(pod_name)
        if after is None or (resource == "cpu" and before is None):
            continue
        names = [n for n in after if container is None or n == container]
        if not names:
            continue
        if resource == "cpu":
            assert before is not None
            busy = sum(max(0.0, after[n][0] - before.get(n, (0.0, 0.0))[0]) for n in names)
            value = busy / max(1e-6, last.time - first.time)
        else:
            value = sum(after[n][1] for n in names)
        samples[pod_name] = Sample(value, last.time, last.time - first.time)
    requests: dict[str, float] = {}
    for pod in pods:
        asked = _requests(pod, resource, container)
        if asked is not None:
            requests[pod["metadata"]["name"]] = asked
    if not samples:
        return MetricFailure(f"unable to get metrics for resource {resource}: no metrics returned from resource metrics API")
    return PodMetricInput(tuple(_pod_state(p) for p in pods), samples, requests)


def _mesh_value(name: str, stats: ServiceStats | None) -> float | None:
    """One of ``MESH_METRICS`` from a pod's or a service's stats over the window (None: no stats).
    Without requests the rate and the error rate are 0 and a latency is unknown (None)."""
    if stats is None:
        return 0.0 if name in ("requests_per_second", "error_rate") else None
    value = {"requests_per_second": stats.rps,
             "error_rate": 1.0 - stats.success if not math.isnan(stats.success) else 0.0,
             "latency_p50_ms": stats.p50, "latency_p90_ms": stats.p90, "latency_p99_ms": stats.p99}[name]  # fmt: skip
    return None if math.isnan(value) else value


def _pods_reading(metric: MetricSpec, pods: list[dict[str, Any]], hist: deque[Snapshot], now: float,
                  window: float) -> MetricInput:  # fmt: skip
    assert metric.pods is not None
    name = metric.pods.metric.name
    if name not in MESH_METRICS:
        return MetricFailure(f"unable to get metric {name}: meshwork serves the pods metrics {', '.join(MESH_METRICS)}")
    span = _span(hist, now, window)
    if span is None:
        return MetricFailure(f"unable to get metric {name}: no samples yet")
    first, last = span
    samples: dict[str, Sample] = {}
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        after = last.series.get(pod_name)
        if after is None:
            continue
        # A pod new since the window began counts from zero (its sidecar's counters did).
        seconds = last.time - first.time
        value = _mesh_value(name, traffic_stats(increases(first.series.get(pod_name, {}), after), seconds))
        if value is not None:
            samples[pod_name] = Sample(value, last.time, last.time - first.time)
    if not samples:
        return MetricFailure(f"unable to get metric {name}: no meshed pod of the target reports it")
    return PodMetricInput(tuple(_pod_state(p) for p in pods), samples)


def _service_reading(metric: MetricSpec, namespace: str, hist: deque[Snapshot], now: float, window: float,
                     ready_pods: int) -> MetricInput:  # fmt: skip
    if metric.object is not None:
        obj = metric.object.described_object
        if obj.kind != "Service":
            return MetricFailure(f"unable to get metric {metric.object.metric.name}: {obj.kind} {obj.name}: "
                                 "meshwork serves object metrics of Services")  # fmt: skip
        service, ns, name = obj.name, namespace, metric.object.metric.name
    else:
        assert metric.external is not None
        labels = (metric.external.metric.selector.match_labels or {}) if metric.external.metric.selector else {}
        name = metric.external.metric.name
        service = labels.get("destination_service_name", "")
        ns = labels.get("destination_service_namespace", namespace)
        if not service:
            return MetricFailure(f"unable to get external metric {name}: selector.matchLabels must name "
                                 "destination_service_name")  # fmt: skip
    if name not in MESH_METRICS:
        return MetricFailure(f"unable to get metric {name}: meshwork serves {', '.join(MESH_METRICS)}")
    span = _span(hist, now, window)
    if span is None:
        return MetricFailure(f"unable to get metric {name}: no samples yet")
    first, last = span
    seconds = last.time - first.time
    deltas: dict[Series, float] = {}
    for pod_name, after in last.series.items():
        summed(deltas, increases(first.series.get(pod_name, {}), after))
    rows = [s for s in service_stats(deltas, seconds) if s.name == service and s.namespace in (ns, "unknown")]
    value = _mesh_value(name, rows[0] if rows else None)
    if value is None:
        return MetricFailure(f"unable to get metric {name} of service {service}: no requests in the window")
    return ObjectMetricInput(value, ready_pods)


# ---------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------


def _scale_of(target: Resource) -> tuple[int, int]:
    spec = getattr(target, "spec", None)
    status = getattr(target, "status", None)
    replicas = getattr(spec, "replicas", None)
    seen = getattr(status, "replicas", None) if status is not None else None
    spec_replicas = 1 if replicas is None else int(replicas)
    return spec_replicas, int(seen) if seen is not None else spec_replicas


def hpa_controller(views: Views, config: HpaConfig | None = None,
                   node_token: Callable[[str], str] | None = None) -> Controller:  # fmt: skip
    """The HPA controller; ``node_token(node)`` is the credential for that node's agent."""
    cfg = config or HpaConfig.from_env()
    sampler = Sampler(views, cfg, node_token)
    histories: dict[str, History] = {}
    last_sync: dict[str, tuple[float, int | None]] = {}  # key -> (when, generation)

    def keys_for(event: CachedEvent) -> Iterable[str]:
        if resource_of(event.key) != HPAS.resource:
            return []
        key = _key(event.item.obj)
        if event.type == "DELETED":
            sampler.stop(key)
            histories.pop(key, None)
            last_sync.pop(key, None)
            return []
        return [key]

    def reconcile(key: str, now: float) -> Outcome:
        item = views.cache.get(f"{HPAS.resource}/{key}")
        if item is None:
            sampler.stop(key)
            return Outcome()
        sampler.ensure(key)
        hpa = HorizontalPodAutoscaler.model_validate(item.obj)
        generation = hpa.metadata.generation
        prev = last_sync.get(key)
        # Like upstream's queue, sync at most once per period; a spec change syncs at once.
        if prev is not None and prev[1] == generation and now - prev[0] < cfg.sync_period * 0.9:
            return Outcome((), cfg.sync_period - (now - prev[0]))
        last_sync[key] = (now, generation)
        namespace = _split(key)[0]
        ref = hpa.spec.scale_target_ref
        info = _TARGETS.get(ref.kind)
        target: Resource | None = None
        scale: int | MetricFailure
        seen: int | None = None
        if info is None:
            scale = MetricFailure(f"the server could not find the requested resource: {ref.kind} has no scale")
        else:
            target_item = views.cache.get(f"{info.resource}/{namespace}/{ref.name}")
            if target_item is None:
                scale = MetricFailure(f'{info.resource.split("/")[-1] if "/" in info.resource else ref.kind.lower()}'
                                      f'.{info.group or "core"} "{ref.name}" not found')  # fmt: skip
            else:
                target = info.model.model_validate(target_item.obj)
                scale, seen = _scale_of(target)
        pods = target_pods(views, item.obj)
        hist = sampler.history.get(key, deque())
        ready = sum(1 for p in pods if (s := _pod_state(p)).ready and not s.deleting and s.phase == "Running")
        readings: list[MetricInput] = []
        for metric in hpa.spec.metrics or ():
            if metric.type in ("Resource", "ContainerResource"):
                readings.append(_resource_reading(metric, pods, hist, now, cfg.window))
            elif metric.type == "Pods":
                readings.append(_pods_reading(metric, pods, hist, now, cfg.window))
            else:
                readings.append(_service_reading(metric, namespace, hist, now, cfg.window, ready))
        decision = decide(hpa, scale, readings, histories.get(key, History()), now, rfc3339(now), cfg.settings, seen)
        histories[key] = decision.history
        actions: list[Action] = []
        if decision.replicas is not None and target is not None:
            spec = getattr(target, "spec")  # noqa: B009 - every scalable kind has a spec
            actions.append(UpdateObject(target.model_copy(update={"spec": spec.model_copy(update={"replicas": decision.replicas})})))
        about = ObjectRef("autoscaling", "HorizontalPodAutoscaler", namespace, hpa.metadata.name or "", hpa.metadata.uid)
        actions += [RecordEvent(about, e.type, e.reason, e.message) for e in decision.events]
        old = hpa.status.model_dump(mode="json", by_alias=True, exclude_none=True) if hpa.status else {}
        new = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if new != old:
            actions.append(UpdateStatus(hpa.model_copy(update={"status": decision.status})))
        return Outcome(tuple(actions), cfg.sync_period)

    def initial_keys() -> Iterable[str]:
        return list(views.keys(HPAS))

    return Controller("horizontalpodautoscaler", keys_for, initial_keys, reconcile, frozenset((HPAS.resource,)))
