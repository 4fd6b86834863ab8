"""One container of a pod as the node agent sees it, and that view rebuilt after an agent restart.

What lives here: ``Run``, the worker's state for one container (its process,
when it started, ready/started, why it waits or how it ended, when it may
restart, its probes, env and working dir, its log pumps, its notify
socket); ``restore_runs``, which takes restartCount, lastState and what is
finished for good from the pod's last reported status (the only memory an
agent has of a previous one); ``adopted_env``, the env and working dir of a
process re-adopted from a previous agent.

What must not live here: starting, stopping and probing containers
(``agent.worker``), restart policy and back-off (``core.restart``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshwork.agent.notify import ReadyNotify
from meshwork.agent.runtime import Process
from meshwork.core.probes import ProbeTracker
from meshwork.core.restart import ContainerKind, RestartTracker, should_restart
from meshwork.model.pod import Container, ContainerStateTerminated, PodStatus, RestartPolicy

__all__ = ["Run", "adopted_env", "restore_runs"]


@dataclass(slots=True)
class Run:
    """One container of the pod as the agent sees it."""

    spec: Container
    kind: ContainerKind
    proc: Process | None = None
    started_at: float | None = None
    ready: bool = False
    started: bool = False
    waiting: tuple[str, str | None] | None = ("ContainerCreating", None)
    terminated: ContainerStateTerminated | None = None
    succeeded: bool = False  # an init container that completed
    restart_at: float | None = None
    probes: ProbeTracker | None = None
    retry_at: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    logs: Any = None
    port_check_at: float | None = None
    notify: ReadyNotify | None = None  # the proxy's "I am ready" socket (agent.notify)

    @property
    def ports(self) -> list[int]:
        return [p.container_port for p in self.spec.ports or ()]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()


def restore_runs(runs: Mapping[str, Run], tracker: RestartTracker, status: PodStatus | None,
                 policy: RestartPolicy, now: float) -> None:  # fmt: skip
    """restartCount and lastState survive an agent restart through the pod's status.

    A container the last report showed running or waiting to restart, and
    that has no process to re-adopt, starts again now, as after a reboot;
    one that finished for good under the restart policy stays finished.
    """
    if status is None:
        return
    for st in (status.init_container_statuses or []) + (status.container_statuses or []):
        run = runs.get(st.name)
        if run is None:
            continue
        last = st.last_state.terminated if st.last_state else None
        tracker.restore(st.name, st.restart_count, last, kind=run.kind)
        term = st.state.terminated if st.state else None
        if term is not None and not should_restart(policy, term.exit_code, run.kind):
            run.terminated = term
            run.waiting = None
            run.succeeded = run.kind == "init" and term.exit_code == 0
        elif term is not None or (st.state is not None and st.state.running is not None) or last is not None:
            run.restart_at = now
            run.waiting = None


def adopted_env(run: Run, pod_dir: Path) -> tuple[dict[str, str], str]:
    """The env (``/proc/<pid>/environ``) and working dir of a re-adopted container's process."""
    try:
        env_raw = Path(f"/proc/{run.proc.pid if run.proc else 0}/environ").read_bytes()
        env = dict(kv.split("=", 1) for kv in env_raw.decode(errors="replace").split("\0") if "=" in kv)
    except OSError:
        env = {}
    return env, run.spec.working_dir or str(pod_dir)
