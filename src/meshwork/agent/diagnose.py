"""Why a container could not take its ports, said in plain words on the pod.

What lives here: the messages of the ``WildcardBind`` and ``PortConflict``
pod events, built from what the machine shows about one container:

* ``wildcard_binds``: a running app listens on ``0.0.0.0:<port>``, which
  takes that port on every pod IP of the node (checked once, shortly after
  the start);
* ``bind_conflict``: a container that failed, in the order the kernel checks
  (a port below the unprivileged start first, EACCES; then EADDRINUSE): a
  low port without the privilege, its port held on every address by another
  pod (named) or process, or, in a meshed pod, the pod IP's app ports held
  by the sidecar (inbound capture), said only when the container's last log
  names the error.

What must not live here: reading ``/proc`` (``agent.ports``), what a low port
needs and the message for it (``agent.binding``), recording the events and
the exit (``agent.worker``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from meshwork.core.inject import SIDECAR_NAME

if TYPE_CHECKING:
    from meshwork.agent.node import Agent
    from meshwork.agent.run import Run

__all__ = ["ADDRESS_IN_USE_TAIL", "bind_conflict", "log_tail", "wildcard_binds"]

ADDRESS_IN_USE_TAIL = 8192  # bytes of a failed container's log searched for EADDRINUSE (a traceback's end)
WILDCARD_MAX_AGE_S = 0.5  # a reading at most this old: taken after the app had time to bind
_ADDRESS_IN_USE = (b"Address already in use", b"EADDRINUSE", b"Errno 98")


def wildcard_binds(run: Run, agent: Agent, address: str) -> list[str]:
    """The WildcardBind messages for an app that took its ports on every address instead of ``address``."""
    from meshwork.agent.ports import wildcard_ports_of

    if run.proc is None or not set(run.ports) & agent.wildcard_ports(max_age=WILDCARD_MAX_AGE_S):
        return []  # the usual case: nobody listens on 0.0.0.0 at these ports; no /proc walk
    return [f"container {run.spec.name} listens on 0.0.0.0:{port}, which takes port {port} on every "
            f"pod IP of this node, so no other pod can use it: bind to $POD_IP ({address}) instead"
            for port in wildcard_ports_of(run.proc.pid, run.ports)]  # fmt: skip


def bind_conflict(run: Run, agent: Agent, *, log_file: Path, pod_ip: str | None,
                  app_ip: str | None) -> str | None:  # fmt: skip
    """Why a failed container could not listen: its port taken on every address.

    ``log_file`` is the container's last log; ``app_ip`` the address of a meshed pod's
    apps (None: not meshed).
    """
    from meshwork.agent.ports import taken_ports

    low = _low_port(run, log_file)  # EACCES comes before EADDRINUSE: the kernel checks it first
    if low:
        return low
    taken = taken_ports(run.ports)
    if not taken:
        return _captured_conflict(run, log_file, pod_ip, app_ip)
    port = taken[0]
    holder = agent.wildcard_holder(port)
    who = f"pod {holder}" if holder else "a process on this machine"
    return (f"port {port} is taken on every address by {who}, which listens on 0.0.0.0:{port}; "
            f"pods share a port number only when each binds to its own $POD_IP")  # fmt: skip


def _captured_conflict(run: Run, log_file: Path, pod_ip: str | None, app_ip: str | None) -> str | None:
    """Why a meshed app could not listen: the pod IP's ports are the sidecar's (inbound capture).

    Said only when the container's last output names the error (EADDRINUSE), since the
    sidecar's listeners are there whether or not the app tried to take them.
    """
    if app_ip is None or run.spec.name == SIDECAR_NAME:
        return None
    tail = log_tail(log_file)
    if not any(text in tail for text in _ADDRESS_IN_USE):
        return None
    return (f"address already in use: in a meshed pod the pod IP {pod_ip} belongs to the sidecar, which "
            f"takes every app port there to check mTLS and policies; the app must listen on $POD_IP "
            f"({app_ip}), not on 0.0.0.0 or {pod_ip}")  # fmt: skip


def log_tail(log_file: Path) -> bytes:
    """The end of a container's log: where an app names why it could not listen."""
    try:
        with open(log_file, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - ADDRESS_IN_USE_TAIL))
            return f.read()
    except OSError:
        return b""


def _low_port(run: Run, log_file: Path) -> str | None:
    """Why an app could not listen: a port below 1024 while the agent lacks the privilege."""
    from meshwork.agent import binding

    start = binding.unprivileged_port_start()
    if not any(p < start for p in run.ports):
        return None  # the usual case: no low port, no log read
    return binding.low_port_problem(run.ports, log_tail(log_file), start=start,
                                    allowed=binding.agent_may_bind_low_ports(), uid=os.geteuid())  # fmt: skip
