"""When this proxy is ready: its start's timeline, and the word it sends the node agent.

What lives here: ``Startup``, which notes when the proxy's start passed each
step (imported, first config, certificate, ready), counted from the process's
start or from the moment a pod took it as a warm spare (``agent.standby``),
for one log line once it is first Ready; ``process_age``; ``notify_ready``,
the sending half of systemd's sd_notify ``READY=1`` (the agent's receiving
half is ``agent.notify``), which makes the agent probe the proxy at once
instead of at its next probe.

What must not live here: what "ready" means (a first config applied,
``proxy.sidecar``), the readiness endpoint (``proxy.admin``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Startup", "notify_ready", "process_age"]


def process_age() -> float:
    """Seconds since this process started (``/proc/self/stat``, clock-tick resolution); 0.0 off Linux."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        ticks = int(stat[stat.rfind(b")") + 2:].split()[19])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def notify_ready(env: Mapping[str, str] = os.environ) -> bool:
    """Tell the node agent this proxy is ready (systemd's sd_notify ``READY=1`` to ``$NOTIFY_SOCKET``,
    an abstract address ``@name``): it probes at once instead of at its next probe. False when there is
    no socket or nobody listens; never raises (the agent's probes find the proxy Ready all the same)."""
    name = env.get("NOTIFY_SOCKET")
    if not name:
        return False
    address = "\0" + name[1:] if name.startswith("@") else name
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(b"READY=1", address)
    except OSError:
        return False
    return True


class Startup:
    """When this proxy's start passed each step, for one log line once it is first Ready.

    ``handed_over_at``: the moment (monotonic) a pod took this spare proxy; None: a proxy
    started for its pod, whose start counts from the process's.
    """

    def __init__(self, handed_over_at: float | None = None) -> None:
        now = time.monotonic()
        # The process's start on the monotonic clock, or the moment a pod took this spare.
        self.origin = handed_over_at if handed_over_at is not None else now - process_age()
        self.since = "taken from standby" if handed_over_at is not None else "the process started"
        self.marks: dict[str, float] = {"imported": now}
        self.reported = False

    def mark(self, step: str) -> None:
        self.marks.setdefault(step, time.monotonic())

    def summary(self) -> str:
        return ", ".join(f"{step} +{(at - self.origin) * 1000:.0f} ms" for step, at in self.marks.items())
