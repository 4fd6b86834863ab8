"""A pod's status as the node reports it: built from the worker's view, written when it changed.

What lives here:

* ``container_statuses``: each container's ``ContainerStatus`` (state,
  lastState, ready, started, restartCount, containerID) from the agent's
  ``Run`` and the pod's ``RestartTracker``;
* ``pod_status``: the ``status`` the node writes (phase, conditions, host
  and pod IPs, startTime, the container statuses, qosClass kept), in wire
  form, with ``reason``, ``message`` and ``nominatedNodeName`` cleared;
* ``fingerprint``: what the status is made of, cheaply, so an unchanged pod
  costs no build and no write;
* ``StatusWriter``: one write in flight per pod, the newest wins; a failed
  write is retried on the next change; the instance files of exited
  containers are removed only once a status with their exit is written.

What must not live here: phase and conditions (``core.restart``,
``core.podstatus``), when containers start or stop (``agent.worker``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshwork.agent.api import PODS, AgentApi
from meshwork.agent.runtime import Instance
from meshwork.core.podstatus import pod_conditions
from meshwork.core.restart import RestartTracker, rfc3339
from meshwork.model.pod import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodIP,
    PodPhase,
    PodStatus,
)

if TYPE_CHECKING:
    from meshwork.agent.run import Run

__all__ = ["StatusWriter", "container_status", "container_statuses", "fingerprint", "pod_status"]

log = logging.getLogger("meshwork.agent")

WRITE_RETRY_S = 0.5  # a failed status write (the server away) is tried again no sooner than this


def container_status(run: Run, uid: str, tracker: RestartTracker) -> ContainerStatus:
    """One container's status, as the kubelet reports it."""
    name = run.spec.name
    last = tracker.last_terminated(name)
    if run.running and run.started_at is not None:
        state = ContainerState(running=ContainerStateRunning(started_at=rfc3339(run.started_at)))
    elif run.terminated is not None:
        state = ContainerState(terminated=run.terminated)
    elif run.waiting is not None:
        state = ContainerState(waiting=ContainerStateWaiting(reason=run.waiting[0], message=run.waiting[1]))
    else:
        state = ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
    cid = f"meshwork://{uid}/{name}/{run.proc.pid}" if run.running and run.proc else None
    return ContainerStatus(
        name=name, state=state,
        last_state=ContainerState(terminated=last) if last is not None and state.terminated is None
        else ContainerState(),
        ready=run.running and run.ready, restart_count=tracker.restart_count(name),
        image=run.spec.image or "", image_id="", container_id=cid,
        started=(run.running and run.started) if run.kind != "init" else None,
    )  # fmt: skip


def container_statuses(runs: Iterable[Run], uid: str,
                       tracker: RestartTracker) -> tuple[list[ContainerStatus], list[ContainerStatus]]:  # fmt: skip
    """The statuses of the init and native sidecar containers, and of the app containers."""
    runs = list(runs)
    init = [container_status(r, uid, tracker) for r in runs if r.kind != "regular"]
    regular = [container_status(r, uid, tracker) for r in runs if r.kind == "regular"]
    return init, regular


def pod_status(pod: Pod, phase: PodPhase, statuses: tuple[list[ContainerStatus], list[ContainerStatus]], *,
               pod_ip: str | None, host_ip: str, start_time: str | None, now: float) -> dict[str, Any]:  # fmt: skip
    """The pod's ``status`` in wire form (camelCase, what the node owns set or cleared)."""
    init, regular = statuses
    previous = pod.status.conditions if pod.status else None
    conditions = pod_conditions(pod.spec, phase, init, regular,
                                sandbox_ready=bool(pod_ip) and phase not in ("Succeeded", "Failed"),
                                previous=previous, now=rfc3339(now))  # fmt: skip
    status = PodStatus(
        phase=phase, conditions=conditions, host_ip=host_ip, host_ips=[PodIP(ip=host_ip)],
        pod_ip=pod_ip, pod_ips=[PodIP(ip=pod_ip)] if pod_ip else None, start_time=start_time,
        init_container_statuses=init or None, container_statuses=regular,
        qos_class=pod.status.qos_class if pod.status else None,
    )  # fmt: skip
    wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    for key in ("reason", "message", "nominatedNodeName"):
        wire.setdefault(key, None)
    return wire


def fingerprint(pod: Pod, phase: PodPhase, pod_ip: str | None, runs: Iterable[Run],
                tracker: RestartTracker) -> tuple[object, ...]:  # fmt: skip
    """What the status is made of, cheaply: unchanged means no status to build or send."""
    states = tuple(
        (r.running, r.ready, r.started, r.waiting, id(r.terminated), r.started_at,
         tracker.restart_count(r.spec.name), id(tracker.last_terminated(r.spec.name)))
        for r in runs
    )  # fmt: skip
    conds = tuple((c.type, c.status) for c in (pod.status.conditions or ())) if pod.status else ()
    return (phase, pod_ip, states, conds)


class StatusWriter:
    """Writes one pod's status when it changed: one write in flight, the newest wins.

    ``build`` gives the status in wire form, ``fingerprint`` what it is made of
    (an unchanged fingerprint skips the build).
    """

    def __init__(self, api: AgentApi, ns: str, name: str, *, build: Callable[[], dict[str, Any]],
                 fingerprint: Callable[[], tuple[object, ...]]) -> None:  # fmt: skip
        self.api, self.ns, self.name = api, ns, name
        self._build = build
        self._fingerprint = fingerprint
        self._last_status: dict[str, Any] | None = None
        self._last_fingerprint: tuple[object, ...] | None = None
        self._unlink_after_report: list[tuple[Path, int]] = []  # exited instances, until reported
        self._dirty = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"status {self.name}")

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def mark_dirty(self) -> None:
        self._dirty.set()

    def unlink_after_report(self, instance: Path, pid: int) -> None:
        """Remove ``instance`` (an exited container's) once a status with its exit is written:
        an agent restarted before that reads the exit from it instead of taking the container
        for one still running, and starting it again."""
        self._unlink_after_report.append((instance, pid))

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write the status now if it changed since the last write."""
        reported, self._unlink_after_report = self._unlink_after_report, []
        fingerprint = self._fingerprint()
        if fingerprint == self._last_fingerprint:
            _unlink_reported(reported)
            return
        wire = self._build()
        comparable = {k: v for k, v in wire.items() if k != "conditions"}
        comparable["conditions"] = [(c["type"], c["status"], c.get("reason")) for c in wire["conditions"]]
        if comparable == self._last_status:
            _unlink_reported(reported)
            return
        try:
            updated = await self.api.patch_status(PODS, self.ns, self.name, {"status": wire})
        except Exception as exc:  # the server is away or the pod is gone: the next change retries
            log.debug("pod %s/%s: status write failed: %s", self.ns, self.name, exc)
            self._unlink_after_report[:0] = reported
            await asyncio.sleep(WRITE_RETRY_S)
            self._dirty.set()
            return
        _unlink_reported(reported)
        if log.isEnabledFor(logging.DEBUG):
            ready = [c["type"] for c in wire["conditions"] if c.get("status") == "True"]
            log.debug("pod %s/%s: status written: %s, %s", self.ns, self.name, wire.get("phase"), ", ".join(ready))
        self._last_status = comparable
        self._last_fingerprint = fingerprint
        del updated  # the watch brings the new object, in order with every other change


def _unlink_reported(reported: list[tuple[Path, int]]) -> None:
    for path, pid in reported:
        inst = Instance.load(path)
        if inst is not None and inst.pid == pid:  # not a newer instance started since
            path.unlink(missing_ok=True)
