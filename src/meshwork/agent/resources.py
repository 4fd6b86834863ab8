"""The node's side of logs and resource limits, for the pod workers.

Logs: every container's stdout and stderr FIFOs are pumped into CRI-format
files (``meshwork.agent.logs``). Limits: memory and CPU limits go to a
cgroup per container where this machine lets the agent write cgroups;
otherwise memory limits are kept by a watchdog that samples each process
group's RSS and kills a group over its limit, reported as OOMKilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshwork.model.pod import Container, parse_quantity

if TYPE_CHECKING:
    from meshwork.agent.run import Run
    from meshwork.agent.worker import PodWorker

log = logging.getLogger("meshwork.agent")

WATCHDOG_PERIOD_S = 0.5


@dataclass(slots=True)
class _Watched:
    pgid: int
    memory_limit: int | None
    worker: PodWorker
    run: Run
    key: str
    oom: bool = False


@dataclass(slots=True)
class Logs:
    writer: Any
    pumps: list[Any]


def _limit_bytes(container: Container) -> int | None:
    limits = container.resources.limits or {}
    q = limits.get("memory")
    return int(parse_quantity(str(q))) if q is not None else None


def _limit_millis(container: Container) -> int | None:
    limits = container.resources.limits or {}
    q = limits.get("cpu")
    return int(parse_quantity(str(q)) * 1000) if q is not None else None


class Resources:
    def __init__(self, node_dir: Path) -> None:
        from meshwork.agent.limits import Cgroups

        if os.environ.get("MESHWORK_CGROUPS", "").lower() in ("off", "0", "no"):
            self.cgroups = Cgroups.none("cgroups turned off (MESHWORK_CGROUPS=off)")
        else:
            self.cgroups = Cgroups.detect("meshwork-" + node_dir.name)
        self._watched: dict[int, _Watched] = {}
        self._oom: set[int] = set()

    def close(self) -> None:
        """Remove the node's parent cgroups once its pods are gone (busy ones stay)."""
        for base in (self.cgroups.memory_base, self.cgroups.cpu_base):
            if base is not None:
                with contextlib.suppress(OSError):
                    base.rmdir()

    # -- logs ------------------------------------------------------------------

    def open_logs(self, directory: Path, restart: int, out: Path, err: Path) -> Logs:
        from meshwork.agent.logs import FifoPump, LogWriter

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        writer = LogWriter(directory / f"{restart}.log")
        loop = asyncio.get_running_loop()
        pumps = [FifoPump(loop, out, "stdout", writer), FifoPump(loop, err, "stderr", writer)]
        return Logs(writer, pumps)

    def close_logs(self, logs: Logs | None) -> None:
        if logs is None:
            return
        for pump in logs.pumps:
            pump.drain_and_close()
        logs.writer.close()

    # -- limits ------------------------------------------------------------------

    def limits_for(self, key: str, container: Container) -> list[str]:
        mem, cpu = _limit_bytes(container), _limit_millis(container)
        if mem is None and cpu is None:
            return []
        try:
            return self.cgroups.prepare(key, mem, cpu)
        except OSError as exc:
            log.warning("container %s: cannot set limits with cgroups (%s); memory watchdog only", key, exc)
            return []

    def unenforced(self, container: Container) -> str | None:
        """The limits of ``container`` this node cannot enforce, said plainly; None: all are."""
        limits = container.resources.limits or {}
        cg = self.cgroups
        gaps = []
        if "memory" in limits and not cg.enforces_memory:
            gaps.append(f"memory limit {limits['memory']} is kept by the agent's RSS watchdog, not by a cgroup")
        if "cpu" in limits and not cg.enforces_cpu:
            gaps.append(f"cpu limit {limits['cpu']} is not enforced")
        if not gaps:
            return None
        return f"container {container.name}: {'; '.join(gaps)} ({cg.reason or 'no writable cgroup'})"

    def describe_limits(self) -> str:
        return str(self.cgroups.describe())

    def drop_limits(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.cgroups.remove(key)

    def oom_killed(self, pgid: int, key: str) -> bool:
        watched = self._watched.get(pgid)
        if watched is not None and watched.oom:
            return True
        try:
            return bool(self.cgroups.oom_killed(key))
        except OSError:
            return False

    def watch_group(self, pgid: int, container: Container, worker: PodWorker, run: Run) -> None:
        mem = _limit_bytes(container)
        key = f"{worker.uid}-{container.name}"
        enforced = mem is not None and self.cgroups.enforces_memory
        self._watched[pgid] = _Watched(pgid, None if enforced else mem, worker, run, key)

    def unwatch_group(self, pgid: int) -> None:
        self._watched.pop(pgid, None)

    def usage(self) -> dict[int, Any]:
        from meshwork.agent.limits import group_usage

        return dict(group_usage(set(self._watched)))

    async def run(self) -> None:
        """The memory watchdog for groups whose limit no cgroup enforces."""
        from meshwork.agent.limits import group_usage

        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            limited = {p: w for p, w in self._watched.items() if w.memory_limit is not None and not w.oom}
            if not limited:
                continue
            usage = await asyncio.to_thread(group_usage, set(limited))
            for pgid, w in limited.items():
                u = usage.get(pgid)
                if u is not None and w.memory_limit is not None and u.rss_bytes > w.memory_limit:
                    w.oom = True
                    log.warning("container %s: RSS %d over its memory limit %d: killed", w.key, u.rss_bytes,
                                w.memory_limit)  # fmt: skip
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pgid, signal.SIGKILL)
