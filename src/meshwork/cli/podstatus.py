"""A pod's READY, STATUS and RESTARTS, derived from its status exactly as kubectl's ``printPod`` does.

What lives here: ``pod_status`` and the pod table's cells. The rules (init
containers, restartable sidecars, waiting/terminated reasons, Terminating)
follow ``pkg/printers/internalversion/printers.go``. No I/O; ``now`` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meshwork.cli.humanize import NONE, human_duration, parse_time
from meshwork.cli.wire import (
    Cell,
    Obj,
    condition_true,
    dig,
    num,
    obj_age,
    obj_name,
    or_none,
    seq,
    txt,
)


def _restartable_init(container: Any) -> bool:
    return isinstance(container, Mapping) and container.get("restartPolicy") == "Always"


def _later(a: datetime | None, b: Any) -> datetime | None:
    t = parse_time(b)
    if t is None:
        return a
    return t if a is None or t > a else a


def pod_status(pod: Obj, now: datetime) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS of a pod, derived from its status as kubectl's ``printPod`` does."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    restarts = 0
    restartable_restarts = 0
    total = len(seq(spec.get("containers")))
    ready = 0
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None

    phase = txt(status.get("phase"))
    reason = txt(status.get("reason")) or phase
    for cond in seq(status.get("conditions")):
        if (
            isinstance(cond, Mapping)
            and cond.get("type") == "PodScheduled"
            and cond.get("reason") == "SchedulingGated"
        ):
            reason = "SchedulingGated"

    init_specs = {
        c.get("name"): c for c in seq(spec.get("initContainers")) if isinstance(c, Mapping)
    }
    total += sum(1 for c in init_specs.values() if _restartable_init(c))
    init_total = len(seq(spec.get("initContainers")))

    initializing = False
    for i, cs in enumerate(seq(status.get("initContainerStatuses"))):
        if not isinstance(cs, Mapping):
            continue
        restarts += num(cs.get("restartCount"))
        finished = dig(cs, "lastState", "terminated", "finishedAt")
        last_restart = _later(last_restart, finished)
        sidecar = _restartable_init(init_specs.get(cs.get("name")))
        if sidecar:
            restartable_restarts += num(cs.get("restartCount"))
            last_restartable_restart = _later(last_restartable_restart, finished)
        terminated = dig(cs, "state", "terminated")
        waiting = dig(cs, "state", "waiting")
        if isinstance(terminated, Mapping) and num(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, Mapping):
            if not txt(terminated.get("reason")):
                if num(terminated.get("signal")) != 0:
                    reason = f"Init:Signal:{num(terminated.get('signal'))}"
                else:
                    reason = f"Init:ExitCode:{num(terminated.get('exitCode'))}"
            else:
                reason = "Init:" + txt(terminated.get("reason"))
        elif (
            isinstance(waiting, Mapping)
            and txt(waiting.get("reason"))
            and waiting.get("reason") != "PodInitializing"
        ):
            reason = "Init:" + txt(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{init_total}"
        initializing = True
        break

    if not initializing or condition_true(pod, "Initialized"):
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        for cs in reversed(seq(status.get("containerStatuses"))):
            if not isinstance(cs, Mapping):
                continue
            restarts += num(cs.get("restartCount"))
            last_restart = _later(last_restart, dig(cs, "lastState", "terminated", "finishedAt"))
            waiting = dig(cs, "state", "waiting")
            terminated = dig(cs, "state", "terminated")
            if isinstance(waiting, Mapping) and txt(waiting.get("reason")):
                reason = txt(waiting.get("reason"))
            elif isinstance(terminated, Mapping) and txt(terminated.get("reason")):
                reason = txt(terminated.get("reason"))
            elif isinstance(terminated, Mapping):
                if num(terminated.get("signal")) != 0:
                    reason = f"Signal:{num(terminated.get('signal'))}"
                else:
                    reason = f"ExitCode:{num(terminated.get('exitCode'))}"
            elif cs.get("ready") is True and isinstance(dig(cs, "state", "running"), Mapping):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if condition_true(pod, "Ready") else "NotReady"

    deleting = dig(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return f"{ready}/{total}", reason, restarts_text


def pod_cells(pod: Obj, now: datetime) -> list[Cell]:
    ready, status, restarts = pod_status(pod, now)
    ips = seq(dig(pod, "status", "podIPs"))
    ip = txt(dig(ips[0], "ip")) if ips else ""
    ip = ip or txt(dig(pod, "status", "podIP"))
    gates = seq(dig(pod, "spec", "readinessGates"))
    gates_text = NONE
    if gates:
        true = 0
        for gate in gates:
            for cond in seq(dig(pod, "status", "conditions")):
                if isinstance(cond, Mapping) and cond.get("type") == dig(gate, "conditionType"):
                    true += cond.get("status") == "True"
                    break
        gates_text = f"{true}/{len(gates)}"
    return [
        obj_name(pod),
        ready,
        status,
        restarts,
        obj_age(pod, now),
        or_none(ip),
        or_none(txt(dig(pod, "spec", "nodeName"))),
        or_none(txt(dig(pod, "status", "nominatedNodeName"))),
        gates_text,
    ]
