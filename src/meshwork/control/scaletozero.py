"""Scale to zero in the control plane: the idle watcher and the activation endpoint.

What lives here: ``ScaleToZero``, run by the API server.

* Every ``TICK_S`` it reads the request counters of the sidecars of each
  opted-in Deployment's pods (a Deployment with no Ready pod is starting, never idle) (``<podIP>:15020/stats/prometheus``,
  ``istio_requests_total`` reported by the destination: the requests the pods
  served) and sets ``spec.replicas`` to 0 on a Deployment that served nothing
  for its idle period (``core.scaletozero``). The Deployment controller then
  stops the pods, gracefully.
* ``POST /apis/mesh.meshwork.io/v1/namespaces/{ns}/services/{name}/activate``
  (mounted by the push server; RBAC verb ``create`` on ``services/activate``
  in group ``mesh.meshwork.io``, which the proxies' role holds): a proxy
  holding requests for a Service with no endpoint asks for its Deployments.
  Each one at zero replicas gets one, with a compare-and-swap on its
  resourceVersion, so any number of concurrent activations, from one proxy
  or many, start one replica. The answer says what was started, or 503 with
  the reason when a pod cannot start (a crash loop, an image that cannot
  run), which the proxy passes on to the requests it holds. It counts as a
  request for the idle watch, so a workload is never stopped as it wakes.

Scale-up beyond one replica is the autoscaler's business; this only leaves
and reaches zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from meshwork.control.api.cache import WatchCache
from meshwork.control.api.objects import Objects
from meshwork.core import scaletozero as stz
from meshwork.core.scaletozero import Activity
from meshwork.errors import Conflict, MethodNotAllowed, NotFound
from meshwork.httpd import Request, Response
from meshwork.model.kinds import REGISTRY
from meshwork.telemetry.meshstats import scrape

log = logging.getLogger("meshwork.scaletozero")

# How often the idle watch looks (a tenth of the shortest useful idle period, MIN_IDLE_S x 10).
TICK_S = 1.0
DEPLOYMENTS = "deployments.apps"
PODS = "pods"
SERVICES = "services"
_CAS_RETRIES = 5


def _pod_counts(ips: dict[str, str]) -> dict[str, float]:
    """Requests each pod's sidecar served (reporter destination); pods that do not answer are left out."""
    out: dict[str, float] = {}
    for name, ip in ips.items():
        series = scrape(ip, "destination")
        if series is not None:
            out[name] = sum(v for k, v in series.items() if k[0] == "istio_requests_total")
    return out


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ScaleToZero:
    def __init__(self, objects: Objects, cache: WatchCache, *, tick: float = TICK_S) -> None:
        self._objects = objects
        self._cache = cache
        self._tick = tick
        self._activity: dict[tuple[str, str], Activity] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one scale decision at a time
        self.info = REGISTRY.require("apps", "Deployment")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scale-to-zero")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the idle watch ------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.check()
            except Exception:
                log.exception("scale to zero: the idle check failed")

    def _pods_of(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        ns = deployment["metadata"].get("namespace") or "default"
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return [item.obj for item in self._cache.list(PODS, ns)
                if stz.selects(selector, (item.obj.get("metadata") or {}).get("labels") or {})
                and not item.obj["metadata"].get("deletionTimestamp")]  # fmt: skip

    async def check(self) -> None:
        """One look at every opted-in Deployment: scale to zero those idle for their period."""
        now = time.monotonic()
        seen: set[tuple[str, str]] = set()
        for item in self._cache.list(DEPLOYMENTS):
            dep = item.obj
            if stz.idle_period(dep) is None:
                continue
            key = (dep["metadata"].get("namespace") or "default", dep["metadata"]["name"])
            seen.add(key)
            activity = self._activity.get(key) or Activity(now)  # first sight: idle from now on
            if (dep.get("spec") or {}).get("replicas", 1) == 0:
                self._activity[key] = Activity(now)
                continue
            pods = self._pods_of(dep)
            if not any(_ready(p) for p in pods):  # still starting (or failing): not idle, whatever it served
                self._activity[key] = Activity(now, activity.counts)
                continue
            ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods
                   if (p.get("status") or {}).get("podIP")}  # fmt: skip
            counts = await asyncio.to_thread(_pod_counts, ips) if ips else {}
            activity = self._activity[key] = stz.observe(activity, counts, time.monotonic())
            if stz.due_for_zero(dep, activity, time.monotonic()):
                await self._scale(key, 0, "idle")
        for gone in [k for k in self._activity if k not in seen]:
            del self._activity[gone]

    async def _scale(self, key: tuple[str, str], to: int, why: str) -> bool:
        """Set replicas to ``to`` when they are still zero (``to`` 1) or not zero (``to`` 0); CAS, retried."""
        ns, name = key
        async with self._lock:
            for _ in range(_CAS_RETRIES):
                item = self._cache.get(f"{DEPLOYMENTS}/{ns}/{name}")
                if item is None:
                    return False
                replicas = (item.obj.get("spec") or {}).get("replicas", 1)
                if (to == 0 and replicas == 0) or (to > 0 and replicas != 0):
                    return False  # someone else did it already: nothing to start or stop
                patch = {"metadata": {"resourceVersion": str(item.revision)}, "spec": {"replicas": to}}
                try:
                    await self._objects.patch(self.info, ns, name, patch, "merge")
                except Conflict:
                    continue
                log.info("scale to zero: deployment %s/%s scaled from %s to %s (%s)", ns, name, replicas, to, why)
                return True
        return False

    # -- activation ----------------------------------------------------------------------

    async def handle(self, req: Request, namespace: str, service: str) -> Response:
        if req.method != "POST":
            raise MethodNotAllowed(f"{req.method} is not allowed on {req.path}")
        svc = self._cache.get(f"{SERVICES}/{namespace}/{service}")
        if svc is None:
            raise NotFound(f'services "{service}" not found')
        selector = (svc.obj.get("spec") or {}).get("selector") or {}
        now = time.monotonic()
        started, waking, failures = [], [], []
        for item in self._cache.list(DEPLOYMENTS, namespace):
            dep = item.obj
            labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            if stz.idle_period(dep) is None or not stz.selects(selector, labels):
                continue
            key = (namespace, dep["metadata"]["name"])
            self._activity[key] = Activity(now, (self._activity.get(key) or Activity(now)).counts)
            if await self._scale(key, 1, f"a request for service {service}"):
                started.append(key[1])
            else:
                waking.append(key[1])
            failure = stz.start_failure(self._pods_of(dep))
            if failure is not None:
                failures.append(f"deployment {key[1]}: {failure}")
        if not started and not waking:
            raise NotFound(f"service {namespace}/{service} is backed by no Deployment that scales to zero")
        body = {"kind": "Activation", "apiVersion": "mesh.meshwork.io/v1", "namespace": namespace,
                "service": service, "started": started, "waking": waking}  # fmt: skip
        if failures and not started:
            body["failure"] = "; ".join(failures)
            return Response(503, json.dumps(body).encode())
        return Response(200, json.dumps(body).encode())
