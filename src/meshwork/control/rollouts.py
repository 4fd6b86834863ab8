"""The Rollout and AnalysisRun controllers' shell: cache reads and measurements.

The decisions are in ``meshwork.core.rollout``. This module maps object
changes to Rollout keys (the Rollout, its ReplicaSets and their pods, its
AnalysisRuns, and any Service, VirtualService, DestinationRule or analysis
template in its namespace), reads a Rollout's view from the watch cache, and
takes an AnalysisRun's measurements, which need I/O:

* ``meshwork``: scrapes ``<podIP>:15020/stats/prometheus`` of the meshed pods
  (optionally those matching ``podSelector``) at the start and the end of
  ``window`` and computes the service's signal as ``meshwork top services``
  does (``reporter="destination"`` samples);
* ``web``: an HTTP GET (or POST/PUT), the JSON answer read at ``jsonPath``;
* ``prometheus``: an instant PromQL query at ``address`` (a vector's values
  as a list, a scalar as a number);
* ``job``: a Job per measurement (``core.rollout.jobs``), created as an
  action of the run's reconcile; the finished Jobs are its measurements.

Measurements run as asyncio tasks beside the controllers' worker; the run's
reconcile hands each finished one to the pure judgement and looks again
every ``POLL_S`` while one is in flight (the runner has no other way in).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshwork.control.api.cache import CachedEvent, resource_of
from meshwork.control.controllers import (
    DEPLOYMENTS,
    ENDPOINTS,
    JOBS,
    PODS,
    REPLICASETS,
    SERVICES,
    Views,
    _key,
    _owner_key,
    _split,
)
from meshwork.control.runner import Controller
from meshwork.core.reconcile import Action, CreateObject, Outcome, UpdateStatus
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.rollout.analysis import Taken, decide_run
from meshwork.core.rollout.experiment import reconcile_experiment
from meshwork.core.rollout.expr import Value
from meshwork.core.rollout.jobs import METRIC_LABEL, job_measurement, job_name, measurement_job
from meshwork.core.rollout.reconcile import RolloutView, reconcile_rollout
from meshwork.model.argo_analysis import (
    AnalysisRun,
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Experiment,
    MeshworkMetric,
    Metric,
    PrometheusMetric,
    WebMetric,
)
from meshwork.model.argo_common import parse_go_duration
from meshwork.model.argo_rollouts import Rollout
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule
from meshwork.model.kinds import REGISTRY
from meshwork.model.workloads import Deployment, Job, ReplicaSet
from meshwork.telemetry.meshstats import (
    Series,
    increases,
    meshed_pods,
    scrape_all,
    service_stats,
    summed,
)

log = logging.getLogger(__name__)

ROLLOUTS = REGISTRY.require("argoproj.io", "Rollout")
ANALYSISRUNS = REGISTRY.require("argoproj.io", "AnalysisRun")
TEMPLATES = REGISTRY.require("argoproj.io", "AnalysisTemplate")
CLUSTER_TEMPLATES = REGISTRY.require("argoproj.io", "ClusterAnalysisTemplate")
VIRTUALSERVICES = REGISTRY.require("networking.istio.io", "VirtualService")
DESTINATIONRULES = REGISTRY.require("networking.istio.io", "DestinationRule")
EXPERIMENTS = REGISTRY.require("argoproj.io", "Experiment")
POLL_S = 0.25  # how often a run with a measurement in flight is looked at again
DEFAULT_WINDOW_S = 30.0  # the meshwork provider's default window
WEB_TIMEOUT_S = 10.0  # Argo's web provider default timeoutSeconds
PROM_TIMEOUT_S = 30.0  # the prometheus provider's default query timeout
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the controller's own calls, never proxied
_NAMESPACE_WIDE = {SERVICES.resource, ENDPOINTS.resource, VIRTUALSERVICES.resource, DESTINATIONRULES.resource,
                   TEMPLATES.resource}  # fmt: skip


# ---------------------------------------------------------------------------
# The Rollout controller
# ---------------------------------------------------------------------------


def rollout_controller(views: Views) -> Controller:
    def in_namespace(namespace: str) -> list[str]:
        return [_key(i.obj) for i in views.cache.list(ROLLOUTS.resource, namespace)]

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == ROLLOUTS.resource:
            return [] if event.type == "DELETED" else [_key(event.item.obj)]
        if resource in (REPLICASETS.resource, ANALYSISRUNS.resource, EXPERIMENTS.resource):
            key = _owner_key(event.item, "Rollout")
            return [key] if key else []
        if resource == PODS.resource:
            return views.owner_via_replicaset(event.item, "Rollout")
        if resource in _NAMESPACE_WIDE:
            return in_namespace(event.item.obj.get("metadata", {}).get("namespace", ""))
        if resource == CLUSTER_TEMPLATES.resource:
            return list(views.keys(ROLLOUTS))
        if resource == DEPLOYMENTS.resource:
            # A Deployment a Rollout's workloadRef names: its template is the Rollout's.
            meta = event.item.obj.get("metadata", {})
            return [_key(i.obj) for i in views.cache.list(ROLLOUTS.resource, meta.get("namespace", ""))
                    if ((i.obj.get("spec") or {}).get("workloadRef") or {}).get("name") == meta.get("name")]  # fmt: skip
        return []

    def reconcile(key: str, now: float) -> Outcome:
        ro = views.one(ROLLOUTS, Rollout, key)
        if ro is None:
            return Outcome()
        namespace = _split(key)[0]
        template = ro.spec.template
        ref = ro.spec.workload_ref
        if template is None and ref is not None and ref.name:
            deploy = views.one(DEPLOYMENTS, Deployment, f"{namespace}/{ref.name}")
            template = deploy.spec.template if deploy is not None else None
        uid = ro.metadata.uid
        # Every ReplicaSet named like the Rollout's: another owner's one of the same name is a hash
        # collision (e.g. a workloadRef'd Deployment's ReplicaSet of the same template).
        rss = [rs for rs in views.all_in(REPLICASETS, ReplicaSet, namespace)
               if (rs.metadata.name or "").startswith(f"{ro.metadata.name}-")]  # fmt: skip
        owned = [rs for rs in rss if uid and any(r.uid == uid for r in rs.metadata.owner_references or ())]
        pods = views.pods_of(namespace, owned)
        view = RolloutView(
            rollout=ro,
            template=template,
            replicasets=rss,
            pods=pods,
            services={s.metadata.name or "": s for s in views.all_in(SERVICES, Service, namespace)},
            endpoints={e.metadata.name or "": e for e in views.all_in(ENDPOINTS, Endpoints, namespace)},
            virtual_services={v.metadata.name or "": v for v in views.all_in(VIRTUALSERVICES, VirtualService, namespace)},
            destination_rules={d.metadata.name or "": d for d in views.all_in(DESTINATIONRULES, DestinationRule, namespace)},
            analysis_runs=views.all_in(ANALYSISRUNS, AnalysisRun, namespace, owner_uid=uid),
            experiments=views.all_in(EXPERIMENTS, Experiment, namespace, owner_uid=uid),
            templates={t.metadata.name or "": t for t in views.all_in(TEMPLATES, AnalysisTemplate, namespace)},
            cluster_templates={t.metadata.name or "": t for t in
                               (ClusterAnalysisTemplate.model_validate(i.obj)
                                for i in views.cache.list(CLUSTER_TEMPLATES.resource))},
        )  # fmt: skip
        return reconcile_rollout(view, now)

    return Controller("rollout", keys_for, lambda: views.keys(ROLLOUTS), reconcile,
                      frozenset({ROLLOUTS.resource, REPLICASETS.resource, ANALYSISRUNS.resource, EXPERIMENTS.resource,
                                 PODS.resource, CLUSTER_TEMPLATES.resource, DEPLOYMENTS.resource, *_NAMESPACE_WIDE}))


def experiment_controller(views: Views) -> Controller:
    """Experiments: their ReplicaSets (``core.rollout.experiment``) and phase."""

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == EXPERIMENTS.resource:
            return [] if event.type == "DELETED" else [_key(event.item.obj)]
        if resource == REPLICASETS.resource:
            key = _owner_key(event.item, "Experiment")
            return [key] if key else []
        if resource == PODS.resource:
            return views.owner_via_replicaset(event.item, "Experiment")
        return []

    def reconcile(key: str, now: float) -> Outcome:
        exp = views.one(EXPERIMENTS, Experiment, key)
        if exp is None or exp.metadata.deletion_timestamp is not None:
            return Outcome()
        namespace = _split(key)[0]
        rss = views.all_in(REPLICASETS, ReplicaSet, namespace, owner_uid=exp.metadata.uid)
        return reconcile_experiment(exp, rss, views.pods_of(namespace, rss), now)

    return Controller("experiment", keys_for, lambda: views.keys(EXPERIMENTS), reconcile,
                      frozenset({EXPERIMENTS.resource, REPLICASETS.resource, PODS.resource}))


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


class MeasurementError(Exception):
    """A measurement that could not be taken (becomes an Error measurement)."""


_JSONPATH_PART = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def json_path(doc: Any, path: str | None) -> Value:
    """Argo's ``jsonPath`` for the web provider: ``{$.data.ok}``, ``$.items[0].value``."""
    if not path:
        return doc  # type: ignore[no-any-return]
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not text.startswith("$"):
        raise MeasurementError(f"jsonPath {path!r} must start with $")
    pos, cur = 1, doc
    while pos < len(text):
        m = _JSONPATH_PART.match(text, pos)
        if m is None:
            raise MeasurementError(f"unsupported jsonPath {path!r}")
        name, index, quoted = m.group(1), m.group(2), m.group(3)
        try:
            cur = cur[int(index)] if index is not None else cur[name or quoted]
        except (KeyError, IndexError, TypeError) as exc:
            raise MeasurementError(f"jsonPath {path!r}: nothing at {m.group(0)!r}") from exc
        pos = m.end()
    return cur  # type: ignore[no-any-return]


def _web(spec: WebMetric) -> Value:
    headers = {h.key: h.value for h in spec.headers or ()}
    data = spec.body.encode() if spec.body else (json.dumps(spec.json_body).encode() if spec.json_body is not None else None)
    req = urllib.request.Request(spec.url, data=data, method=spec.method or "GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=spec.timeout_seconds or WEB_TIMEOUT_S) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        raise MeasurementError(f"received non 2xx response code: {exc.code}") from exc
    except OSError as exc:
        raise MeasurementError(f"GET {spec.url}: {exc}") from exc
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise MeasurementError(f"could not parse JSON body: {exc}") from exc
    return json_path(doc, spec.json_path)


def _sample(value: Any) -> float:
    """One Prometheus sample value (a string: "0.98", "NaN", "+Inf")."""
    return float(value)


def _prometheus(spec: PrometheusMetric) -> Value:
    """Argo's prometheus provider: an instant PromQL query; a vector gives the list of its samples'
    values (``result[0]``), a scalar its value."""
    if not spec.address or not spec.query:
        raise MeasurementError("the prometheus provider needs address and query")
    if spec.range_query is not None:
        raise MeasurementError("the prometheus provider's rangeQuery is not supported by meshwork yet")
    url = f"{spec.address.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": spec.query})
    headers = {h.key: h.value for h in spec.headers or ()}
    try:
        with _DIRECT.open(urllib.request.Request(url, headers=headers), timeout=spec.timeout or PROM_TIMEOUT_S) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise MeasurementError(f"prometheus answered {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"prometheus query at {spec.address}: {exc}") from exc
    if doc.get("status") != "success":
        raise MeasurementError(f"prometheus: {doc.get('errorType', 'error')}: {doc.get('error', doc)}")
    data = doc.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector":
        return [_sample(s["value"][1]) for s in result or ()]
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _sample(result[1])
    raise MeasurementError(f"prometheus result type {kind!r} is not supported (an instant vector or scalar is)")


def _meshed(views: Views, namespace: str, selector: dict[str, str] | None) -> list[tuple[str, str]]:
    pods = []
    for item in views.cache.list(PODS.resource, namespace):
        labels = item.obj.get("metadata", {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in (selector or {}).items()):
            pods.append(item.obj)
    return meshed_pods(pods)


async def _mesh(views: Views, namespace: str, spec: MeshworkMetric) -> Value:
    window = parse_go_duration(spec.window) if spec.window else DEFAULT_WINDOW_S
    ns = spec.namespace or namespace
    pods = _meshed(views, ns, spec.pod_selector)
    if not pods:
        raise MeasurementError(f"no meshed pods match {spec.pod_selector or {}} in namespace {ns}")
    before = await asyncio.to_thread(scrape_all, pods, "destination")
    t0 = time.monotonic()
    await asyncio.sleep(window)
    after = await asyncio.to_thread(scrape_all, pods, "destination")
    seconds = time.monotonic() - t0
    deltas: dict[Series, float] = {}
    for pod, series in after.items():
        summed(deltas, increases(before.get(pod, {}), series))
    short = spec.service.split(".")[0]
    rows = [s for s in service_stats(deltas, seconds) if s.name == short and (s.namespace == ns or s.namespace == "unknown")]
    if not rows or rows[0].rps * seconds < 1:
        raise MeasurementError(f"no requests to {spec.service} in the last {window:g}s")
    row = rows[0]
    value = {"success-rate": row.success, "request-rate": row.rps, "latency-p50": row.p50,
             "latency-p90": row.p90, "latency-p99": row.p99}[spec.metric]  # fmt: skip
    return [round(value, 6) if not math.isnan(value) else value]


@dataclass
class Measurer:
    """Measurements in flight and finished ones not yet recorded, per (run uid, metric)."""

    views: Views
    inflight: set[tuple[str, str]] = field(default_factory=set)
    done: dict[tuple[str, str], list[Taken]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, run: AnalysisRun, metric: Metric) -> None:
        ident = (run.metadata.uid or "", metric.name)
        if ident in self.inflight or self.done.get(ident):
            return
        self.inflight.add(ident)
        task = asyncio.get_running_loop().create_task(self._measure(ident, run.metadata.namespace or "", metric))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _measure(self, ident: tuple[str, str], namespace: str, metric: Metric) -> None:
        started = time.time()
        value: Value = None
        error: str | None = None
        try:
            provider = metric.provider
            if provider.meshwork is not None:
                value = await _mesh(self.views, namespace, provider.meshwork)
            elif provider.web is not None:
                value = await asyncio.to_thread(_web, provider.web)
            elif provider.prometheus is not None:
                value = await asyncio.to_thread(_prometheus, provider.prometheus)
            else:
                kind = next(k for k, v in provider.model_dump(exclude_none=True).items() if v is not None)
                raise MeasurementError(f"the {kind} provider is not supported by meshwork yet")
        except MeasurementError as exc:
            error = str(exc)
        except Exception as exc:  # a provider bug is one Error measurement, never a dead controller
            log.exception("measurement %s failed", ident)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.inflight.discard(ident)
        self.done.setdefault(ident, []).append(Taken(ident[1], rfc3339(started), rfc3339(time.time()), value, error))

    def taken(self, run: AnalysisRun) -> list[Taken]:
        uid = run.metadata.uid or ""
        out: list[Taken] = []
        results = [r.model_dump(by_alias=True) for r in (run.status.metric_results if run.status else None) or ()]
        recorded = {(r.get("name"), x.get("startedAt")) for r in results for x in r.get("measurements") or ()}
        for (u, metric), items in list(self.done.items()):
            if u != uid:
                continue
            left = [t for t in items if (metric, t.started_at) not in recorded]
            if left:
                self.done[(u, metric)] = left
            else:
                del self.done[(u, metric)]
            out += left
        return out

    def busy(self, run: AnalysisRun) -> bool:
        uid = run.metadata.uid or ""
        return any(u == uid for u, _ in self.inflight) or any(u == uid for u, _ in self.done)


def analysisrun_controller(views: Views, measurer: Measurer | None = None) -> Controller:
    m = measurer or Measurer(views)

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == ANALYSISRUNS.resource and event.type != "DELETED":
            return [_key(event.item.obj)]
        if resource == JOBS.resource:
            owner = _owner_key(event.item, "AnalysisRun")
            return [owner] if owner else []
        return []

    def reconcile(key: str, now: float) -> Outcome:
        run = views.one(ANALYSISRUNS, AnalysisRun, key)
        if run is None:
            return Outcome()
        # The job provider's measurements are the run's Jobs (by name), taken as they finish.
        jobs = {j.metadata.name: j for j in views.all_in(JOBS, Job, _split(key)[0], owner_uid=run.metadata.uid)}
        finished = [t for j in jobs.values()
                    if (t := job_measurement(j, (j.metadata.labels or {}).get(METRIC_LABEL, ""))) is not None]  # fmt: skip
        decision = decide_run(run, [*m.taken(run), *finished], now)
        metrics = {x.name: x for x in run.spec.metrics}
        counts = {r.get("name"): int(r.get("count") or 0) for r in
                  (x.model_dump(by_alias=True) for x in decision.status.metric_results or ())}  # fmt: skip
        actions: list[Action] = []
        for name in decision.due:
            metric = metrics[name]
            if metric.provider.job is None:
                m.start(run, metric)
                continue
            n = counts.get(name, 0) + 1
            if job_name(run, name, n) not in jobs:
                actions.append(CreateObject(measurement_job(run, metric, n)))
        old = run.status.model_dump(mode="json", by_alias=True, exclude_none=True) if run.status else {}
        new = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if new != old:
            actions.append(UpdateStatus(run.model_copy(update={"status": decision.status})))
        waits = [w for w in (decision.requeue_after, POLL_S if m.busy(run) else None) if w is not None]
        return Outcome(tuple(actions), min(waits) if waits else None)

    return Controller("analysisrun", keys_for, lambda: views.keys(ANALYSISRUNS), reconcile,
                      frozenset({ANALYSISRUNS.resource, JOBS.resource}))
