"""A pod's graceful stop: leave the Endpoints, run preStop hooks, stop containers in the safe order.

What lives here, in the order the worker uses it when a pod is deleted:

* ``grace_period``: the metadata's ``deletionGracePeriodSeconds``, else the
  spec's ``terminationGracePeriodSeconds``;
* ``leave_endpoints``: wait (bounded) until no Endpoints of the namespace
  lists the pod's IP, then a moment for proxies and clients to drop it, so
  no new request reaches a container that is about to stop;
* ``stop_in_order``: the app containers first, then the init/native sidecar
  containers in reverse order (upstream's order: a sidecar outlives the
  apps it serves); each group runs its ``preStop`` hooks (sleep, exec,
  httpGet; a failing hook is a ``FailedPreStopHook`` event and never blocks
  the stop), then gets SIGTERM and, at the deadline, SIGKILL;
* ``stopped_phase``: the phase a pod stopped before it finished ends in.

What must not live here: the decision to stop (``agent.worker``), stopping
one process group (``agent.runtime``), status writes (``agent.podstatus``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from meshwork.core.probes import RunProbe
from meshwork.model.pod import Pod, PodPhase

if TYPE_CHECKING:
    from meshwork.agent.run import Run

__all__ = [
    "ENDPOINTS_DRAIN_MAX_S",
    "PROXY_PROPAGATION_S",
    "grace_period",
    "leave_endpoints",
    "pre_stop",
    "stop_in_order",
    "stopped_phase",
]

ENDPOINTS_DRAIN_MAX_S = 5.0  # longest wait for a terminating pod to leave every Endpoints
PROXY_PROPAGATION_S = 0.5  # then this long for proxies and clients to drop it
ENDPOINTS_POLL_S = 0.05  # the informer is local: looking again costs a dict walk

Event = Callable[[str, str, str], None]  # (type, reason, message) of a pod event


class EndpointsView(Protocol):
    """The agent's Endpoints informer (``agent.node.Sources``)."""

    def lists_address(self, ns: str, ip: str) -> bool: ...


def grace_period(pod: Pod) -> float:
    """Seconds the pod's containers get between SIGTERM and SIGKILL."""
    meta = pod.metadata
    return float(meta.deletion_grace_period_seconds if meta.deletion_grace_period_seconds is not None
                 else pod.spec.termination_grace_period_seconds)  # fmt: skip


async def leave_endpoints(sources: EndpointsView, ns: str, ip: str, limit: float,
                          flush: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    """Wait until no Endpoints of ``ns`` lists ``ip`` (at most ``limit`` s), then let proxies catch up.

    ``flush`` writes the pod's status first (its containers not ready), which takes it out.
    """
    deadline = time.monotonic() + limit
    await flush()
    # The agent's Endpoints informer follows the same watch the proxies do: no API polling.
    while time.monotonic() < deadline and sources.lists_address(ns, ip):
        await asyncio.sleep(ENDPOINTS_POLL_S)
    await asyncio.sleep(PROXY_PROPAGATION_S)


async def stop_in_order(running: Iterable[Run], deadline: float, grace: float, *, event: Event,
                        address_of: Callable[[str], str]) -> None:  # fmt: skip
    """Stop the running containers: apps first, then the others in reverse order; each group's
    preStop hooks (when there is a grace period), then SIGTERM, SIGKILL at ``deadline`` (monotonic)."""
    running = list(running)
    regular = [r for r in running if r.kind == "regular"]
    others = [r for r in running if r.kind != "regular"]
    for group in (regular, list(reversed(others))):
        if not group:
            continue
        if grace > 0:
            await asyncio.gather(*(pre_stop(r, deadline, event=event, address=address_of(r.spec.name))
                                   for r in group))  # fmt: skip
        for r in group:
            event("Normal", "Killing", f"Stopping container {r.spec.name}")
        remaining = max(0.0, deadline - time.monotonic())
        await asyncio.gather(*(r.proc.stop(remaining) for r in group if r.proc is not None))


async def pre_stop(run: Run, deadline: float, *, event: Event, address: str) -> None:
    """The container's preStop hook, bounded by ``deadline``; ``address`` is where an httpGet goes."""
    hook = run.spec.lifecycle.pre_stop if run.spec.lifecycle else None
    if hook is None:
        return
    timeout = max(0.0, deadline - time.monotonic())
    try:
        if hook.sleep is not None:
            await asyncio.sleep(min(float(hook.sleep.seconds), timeout))
        elif hook.exec_ is not None:
            from meshwork.agent.probing import run_probe
            from meshwork.core.probes import ExecTarget

            cmd = RunProbe("liveness", "exec", ExecTarget(tuple(hook.exec_.command or ())), timeout)
            result = await run_probe(cmd, env=run.env, cwd=run.cwd)
            if not result.success:
                event("Warning", "FailedPreStopHook", f"PreStopHook failed: {result.message}")
        elif hook.http_get is not None:
            from meshwork.agent.probing import run_probe
            from meshwork.core.probes import http_request

            req = http_request(hook.http_get, run.spec, address)
            cmd = RunProbe("liveness", "httpGet", req, timeout)
            result = await run_probe(cmd)
            if not result.success:
                event("Warning", "FailedPreStopHook", f"PreStopHook failed: {result.message}")
    except Exception as exc:  # a broken hook never blocks the stop
        event("Warning", "FailedPreStopHook", f"PreStopHook failed: {exc}")


def stopped_phase(pod: Pod, phase: PodPhase, runs: Iterable[Run]) -> PodPhase:
    """The phase of a pod stopped before it finished, from ``phase`` as its containers now give it:
    Succeeded when every app container exited 0 (and the pod may restart), else Failed."""
    if phase in ("Succeeded", "Failed"):
        return phase
    if pod.spec.restart_policy == "Never":
        return "Failed"
    apps_succeeded = all((r.terminated is not None and r.terminated.exit_code == 0)
                         for r in runs if r.kind == "regular")  # fmt: skip
    return "Succeeded" if apps_succeeded else "Failed"
