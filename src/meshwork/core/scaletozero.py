"""Scale to zero: which Deployments may go to zero replicas, when they are idle, what wakes them. Pure.

A Deployment opts in with the annotation ``meshwork.io/scale-to-zero: "true"``
and may set its idle period with ``meshwork.io/scale-to-zero-idle`` (a
duration, ``60s`` by default, Knative's stable window). An autoscaler that
allows ``minReplicas: 0`` coordinates through the same annotation on its
target: nothing here reads autoscalers.

What lives here:

* ``idle_period(deployment)``: the idle period, or None when it does not opt in;
* ``backed_services(deployment, services)``: the Services whose selector picks
  the Deployment's pods, which proxies may activate; ``snapshot_body``: the
  Deployment as a mesh snapshot carries it (``scaleToZero`` entries);
* ``Activity`` and ``observe``: from the request counters the pods' sidecars
  report (``istio_requests_total``, reporter destination), when the workload
  last served a request;
* ``due_for_zero``: whether a Deployment has been idle for its period;
* ``start_failure``: why a pod of a Deployment being activated cannot start
  (a container crash-looping, an image that cannot be run), or None.

What must not live here: clocks (``now`` is a parameter), the store, scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshwork.model.istio import duration_nanos

__all__ = [
    "ANNOTATION",
    "DEFAULT_IDLE_S",
    "IDLE_ANNOTATION",
    "Activity",
    "backed_services",
    "due_for_zero",
    "idle_period",
    "observe",
    "selects",
    "snapshot_body",
    "start_failure",
]

ANNOTATION = "meshwork.io/scale-to-zero"
IDLE_ANNOTATION = "meshwork.io/scale-to-zero-idle"
# Knative's stable window (and scale-to-zero grace) is 60 s: a minute without a request.
DEFAULT_IDLE_S = 60.0
# Below this an idle period only makes the workload flap (a readiness probe period or two).
MIN_IDLE_S = 1.0
# Container states that mean a start will not succeed by waiting (kubelet's reasons).
FAILED_WAITING = frozenset({
    "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
    "CreateContainerConfigError", "RunContainerError", "ImageNotFound",
})  # fmt: skip

Wire = Mapping[str, Any]


def idle_period(deployment: Wire) -> float | None:
    """Seconds without a request before the Deployment goes to zero; None: it does not opt in."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    if str(annotations.get(ANNOTATION, "")).lower() != "true":
        return None
    raw = annotations.get(IDLE_ANNOTATION)
    nanos = duration_nanos(str(raw)) if raw is not None else None
    if nanos is None:
        return DEFAULT_IDLE_S
    return max(MIN_IDLE_S, nanos / 1e9)


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A Service's selector picks pods with ``labels`` (an empty selector picks nothing, as upstream)."""
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _template_labels(deployment: Wire) -> dict[str, str]:
    spec = deployment.get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


def backed_services(deployment: Wire, services: Iterable[Wire]) -> list[str]:
    """The names of the Services of the Deployment's namespace whose selector picks its pods."""
    ns = (deployment.get("metadata") or {}).get("namespace") or "default"
    labels = _template_labels(deployment)
    out = []
    for svc in services:
        meta = svc.get("metadata") or {}
        if (meta.get("namespace") or "default") == ns and selects((svc.get("spec") or {}).get("selector"), labels):
            out.append(str(meta.get("name")))
    return sorted(out)


def snapshot_body(deployment: Wire, services: Iterable[Wire]) -> dict[str, Any] | None:
    """What proxies learn of a scale-to-zero Deployment: the Services they may activate it through."""
    if idle_period(deployment) is None:
        return None
    meta = deployment.get("metadata") or {}
    return {"namespace": str(meta.get("namespace") or "default"), "name": str(meta.get("name")),
            "services": backed_services(deployment, services)}  # fmt: skip


@dataclass
class Activity:
    """What the last look at a workload's sidecars saw: each pod's request count, and the last request."""

    last_active: float
    counts: dict[str, float] = field(default_factory=dict)


def observe(activity: Activity, counts: Mapping[str, float], now: float) -> Activity:
    """``activity`` after reading each pod's request counter (pods that did not answer are left out).

    A counter that grew, a new pod that served anything, or a counter that went back (its
    sidecar restarted) and counted something since, is a request since the last look. A pod
    missing from ``counts`` keeps its last count.
    """

    def grew(pod: str, value: float) -> bool:
        before = activity.counts.get(pod, 0.0)
        return value > before or (value < before and value > 0)

    busy = any(grew(pod, value) for pod, value in counts.items())
    return Activity(now if busy else activity.last_active, {**activity.counts, **counts})


def due_for_zero(deployment: Wire, activity: Activity, now: float) -> bool:
    """Whether the Deployment has replicas and has served nothing for its idle period."""
    period = idle_period(deployment)
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return period is not None and replicas != 0 and now - activity.last_active >= period


def start_failure(pods: Iterable[Wire]) -> str | None:
    """Why the Deployment's pods cannot come up (the first such reason), or None while they may."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name")
        status = pod.get("status") or {}
        for cs in status.get("containerStatuses") or ():
            if cs.get("name") == "istio-proxy":
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            restarts = cs.get("restartCount") or 0
            exited = (f"exited with code {last.get('exitCode')} ({last.get('reason') or 'Error'}), restarted "
                      f"{restarts} time(s)") if last and restarts else ""  # fmt: skip
            if waiting.get("reason") in FAILED_WAITING:
                detail = exited or str(waiting.get("message") or "")
                return f"pod {name} container {cs.get('name')}: {waiting.get('reason')}" + (f": {detail}" if detail else "")
            if exited:
                return f"pod {name} container {cs.get('name')} {exited}"
        if status.get("phase") == "Failed":
            return f"pod {name} failed: {status.get('message') or status.get('reason') or 'unknown reason'}"
    return None
