"""Memory and CPU limits for containers, and what their process groups use.

What lives here:

* ``Cgroups``: finds out what this machine lets the agent do (cgroup v2, with
  the memory and cpu controllers delegated; cgroup v1, with writable memory
  and cpu hierarchies; or nothing, e.g. a laptop without root) and, where it
  can, makes one cgroup per container, sets its limits, reads its usage and
  its OOM-kill count, and removes it. ``describe()`` says in plain words what
  is enforced.
* ``group_usage``: CPU time and resident memory per process group, from one
  pass over ``/proc`` for all groups asked about (``meshwork top pods`` and
  the watchdog).
* ``MemoryWatchdog``: the fallback where no cgroup enforces memory: the agent
  ticks it and SIGKILLs the groups it names, then reports OOMKilled.

What must not: which container gets which limit (the pod worker parses the
quantities), killing processes, timers.

Kubernetes mapping kept (kubelet, runc):

* memory: v1 ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``
  set to the same value (no swap beyond the limit); v2 ``memory.max`` with
  ``memory.swap.max`` 0. The kernel's OOM killer then kills inside the
  cgroup, counted in ``oom_kill`` (v1 ``memory.oom_control``, v2
  ``memory.events``).
* cpu: a CFS quota per 100 ms period of ``millicores * 100`` µs, at least
  1 ms (the kubelet's ``MilliCPUToQuota``); v1 ``cpu.cfs_quota_us``, v2
  ``cpu.max``.
* usage: memory as the working set (usage minus inactive file pages, as
  cAdvisor reports it); CPU time in seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CFS_PERIOD_US",
    "Cgroups",
    "MemoryWatchdog",
    "Usage",
    "cpu_quota_us",
    "group_usage",
]

CFS_PERIOD_US = 100_000  # the kubelet's default cpu.cfs_period_us
MIN_QUOTA_US = 1_000  # the kernel refuses less; the kubelet rounds up to it
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

Mode = Literal["v2", "v1", "none"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a container (or process group) uses: CPU seconds so far and memory now."""

    cpu_seconds: float
    rss_bytes: int


def cpu_quota_us(cpu_millis: int, period_us: int = CFS_PERIOD_US) -> int:
    """CFS quota for ``cpu_millis`` millicores (kubelet ``MilliCPUToQuota``)."""
    return max(MIN_QUOTA_US, cpu_millis * period_us // 1000)


# ---------------------------------------------------------------------------
# cgroups
# ---------------------------------------------------------------------------


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path (``""`` is the v2 unified entry)."""
    out: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(","):
            out[controller] = parts[2]
    return out


def _under(mount: Path, path: str) -> Path:
    """Our cgroup inside ``mount``; when the mount is namespaced (our path is not
    visible in it), the mount's root is our cgroup."""
    candidate = mount / path.lstrip("/")
    return candidate if candidate.is_dir() else mount


def _make_dir(path: Path) -> str | None:
    """Create a cgroup directory; the reason in words when we cannot."""
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        return f"cannot create {path}: {os.strerror(exc.errno or errno.EIO)}"
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _set_v1_memory(d: Path, limit: int) -> None:
    """``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (memory+swap) to ``limit``.

    The kernel keeps memsw >= limit at every step, so raising a limit writes memsw first.
    """
    memsw = d / "memory.memsw.limit_in_bytes"
    files = [d / "memory.limit_in_bytes"] + ([memsw] if memsw.exists() else [])
    try:
        for f in files:
            _write(f, str(limit))
    except OSError as exc:
        if exc.errno != errno.EINVAL or len(files) < 2:
            raise
        for f in reversed(files):
            _write(f, str(limit))


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = int(value)
    return out


class Cgroups:
    """One cgroup per container under ``<our cgroup>/<name>/<key>``, where the machine allows.

    ``memory_base`` / ``cpu_base`` are the parents the agent creates children
    in (the same directory on v2, one per hierarchy on v1); None where that
    controller cannot be used.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        memory_base: Path | None = None,
        cpu_base: Path | None = None,
        reason: str = "",
    ) -> None:
        self.mode: Mode = mode
        self.memory_base = memory_base
        self.cpu_base = cpu_base
        self.reason = reason
        self._oom_seen: dict[str, int] = {}

    @classmethod
    def none(cls, reason: str = "no writable cgroup") -> Cgroups:
        return cls("none", reason=reason)

    @classmethod
    def detect(
        cls,
        name: str = "meshwork",
        *,
        root: str | os.PathLike[str] = "/sys/fs/cgroup",
        proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
    ) -> Cgroups:
        """Find what this machine allows and create the agent's parent cgroup(s) ``name``."""
        root = Path(root)
        own = _own_paths(Path(proc_cgroup))
        if (root / "cgroup.controllers").is_file():
            return cls._detect_v2(root, own.get("", "/"), name)
        if (root / "memory").is_dir() or (root / "cpu").is_dir():
            return cls._detect_v1(root, own, name)
        return cls.none(f"no cgroup filesystem at {root}")

    @classmethod
    def _detect_v1(cls, root: Path, own: Mapping[str, str], name: str) -> Cgroups:
        reasons: list[str] = []
        bases: dict[str, Path | None] = {}
        for controller, mounts in (("memory", ("memory",)), ("cpu", ("cpu", "cpu,cpuacct"))):
            mount = next((root / m for m in mounts if (root / m / "cgroup.procs").is_file()), None)
            if mount is None:
                reasons.append(f"no cgroup v1 {controller} hierarchy")
                bases[controller] = None
                continue
            base = _under(mount, own.get(controller, "/")) / name
            problem = _make_dir(base)
            if problem:
                reasons.append(problem)
            bases[controller] = None if problem else base
        if bases["memory"] is None and bases["cpu"] is None:
            return cls.none("; ".join(reasons))
        return cls("v1", memory_base=bases["memory"], cpu_base=bases["cpu"],
                   reason="; ".join(reasons))  # fmt: skip

    @classmethod
    def _detect_v2(cls, root: Path, own: str, name: str) -> Cgroups:
        parent = _under(root, own)
        available = set((parent / "cgroup.controllers").read_text().split())
        wanted = {"memory", "cpu"} & available
        if not wanted:
            return cls.none(f"cgroup v2 at {parent} has no memory or cpu controller delegated")
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        try:
            if wanted - enabled:
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            # EBUSY: our own cgroup holds processes ("no internal processes" rule).
            return cls.none(f"cannot enable {' '.join(sorted(wanted))} controllers in {parent}: "
                            f"{os.strerror(exc.errno or errno.EIO)}")  # fmt: skip
        base = parent / name
        problem = _make_dir(base)
        if problem:
            return cls.none(problem)
        try:
            _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            return cls.none(f"cannot delegate controllers to {base}: {os.strerror(exc.errno or 0)}")
        return cls("v2", memory_base=base if "memory" in wanted else None,
                   cpu_base=base if "cpu" in wanted else None)  # fmt: skip

    # -- what is enforced ------------------------------------------------------

    @property
    def enforces_memory(self) -> bool:
        return self.memory_base is not None

    @property
    def enforces_cpu(self) -> bool:
        return self.cpu_base is not None

    def describe(self) -> str:
        """What is enforced and how, in plain words (for the node's status and logs)."""
        how = f"by cgroup {self.mode}"
        memory = ("memory limit enforced " + how if self.enforces_memory
                  else "memory limit not enforced by the kernel: kept by the agent's watchdog "
                       "(the group is killed once its RSS is over the limit)")  # fmt: skip
        cpu = ("cpu limit enforced " + how if self.enforces_cpu
               else "cpu limit not enforced")  # fmt: skip
        text = f"{memory}; {cpu}"
        if self.reason:
            text += f" ({self.reason})"
        return text

    # -- per container -----------------------------------------------------------

    def _dirs(self, key: str) -> list[Path]:
        dirs: list[Path] = []
        for base in (self.memory_base, self.cpu_base):
            if base is not None and base / key not in dirs:
                dirs.append(base / key)
        return dirs

    def prepare(self, key: str, memory_bytes: int | None, cpu_millis: int | None) -> list[str]:
        """Create the container's cgroup(s) and set its limits.

        Returns the ``cgroup.procs`` files the container's shim writes its pid
        into (empty when nothing can be enforced). Raises OSError when a
        cgroup cannot be made or a limit refused.
        """
        if "/" in key or key in ("", ".", ".."):
            raise ValueError(f"bad cgroup key {key!r}")
        if self.mode == "none":
            return []
        procs: list[str] = []
        if self.memory_base is not None:
            d = self.memory_base / key
            d.mkdir(exist_ok=True)
            if memory_bytes is not None:
                if self.mode == "v1":
                    _set_v1_memory(d, memory_bytes)
                else:
                    _write(d / "memory.max", str(memory_bytes))
                    if (d / "memory.swap.max").exists():
                        _write(d / "memory.swap.max", "0")
            # A reused cgroup (the same container restarted) keeps its count: remember it.
            self._oom_seen[key] = self._oom_count(key)
            procs.append(str(d / "cgroup.procs"))
        if self.cpu_base is not None:
            d = self.cpu_base / key
            d.mkdir(exist_ok=True)
            if cpu_millis is not None:
                quota = cpu_quota_us(cpu_millis)
                if self.mode == "v1":
                    _write(d / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                    _write(d / "cpu.cfs_quota_us", str(quota))
                else:
                    _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            path = str(d / "cgroup.procs")
            if path not in procs:
                procs.append(path)
        return procs

    def _oom_count(self, key: str) -> int:
        if self.memory_base is None:
            return 0
        name = "memory.oom_control" if self.mode == "v1" else "memory.events"
        return _read_kv(self.memory_base / key / name).get("oom_kill", 0)

    def oom_killed(self, key: str) -> bool:
        """Whether the kernel's OOM killer killed a process of this container's cgroup
        since the last ``prepare(key)`` (since the cgroup was made, after an agent restart)."""
        return self._oom_count(key) > self._oom_seen.get(key, 0)

    def pids(self, key: str) -> list[int]:
        for d in self._dirs(key):
            with contextlib.suppress(OSError):
                return [int(p) for p in (d / "cgroup.procs").read_text().split()]
        return []

    def usage(self, key: str) -> Usage | None:
        """CPU seconds and working-set memory of the container, None without a cgroup."""
        if self.mode == "none" or not self._dirs(key):
            return None
        memory = 0
        if self.memory_base is not None:
            d = self.memory_base / key
            if self.mode == "v1":
                stat = _read_kv(d / "memory.stat")
                with contextlib.suppress(OSError, ValueError):
                    memory = int((d / "memory.usage_in_bytes").read_text())
                memory -= stat.get("total_inactive_file", stat.get("inactive_file", 0))
            else:
                stat = _read_kv(d / "memory.stat")
                with contextlib.suppress(OSError, ValueError):
                    memory = int((d / "memory.current").read_text())
                memory -= stat.get("inactive_file", 0)
        cpu: float | None = None
        if self.mode == "v2" and self.cpu_base is not None:
            usec = _read_kv(self.cpu_base / key / "cpu.stat").get("usage_usec")
            cpu = usec / 1e6 if usec is not None else None
        if cpu is None:
            # v1 cpu has no usage counter without cpuacct: sum the live processes' times.
            pids = set(self.pids(key))
            cpu = sum(_proc_times(pid) for pid in pids)
        return Usage(cpu, max(memory, 0))

    def remove(self, key: str) -> bool:
        """Remove the container's cgroup(s); False when one still holds processes."""
        removed = True
        for d in self._dirs(key):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                removed = False
        if removed:
            self._oom_seen.pop(key, None)
        return removed


# ---------------------------------------------------------------------------
# /proc: usage per process group
# ---------------------------------------------------------------------------


def _stat_fields(data: bytes) -> list[bytes]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on)."""
    return data[data.rfind(b")") + 2 :].split()


def _proc_times(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = _stat_fields(f.read())
    except OSError:
        return 0.0
    return sum(int(x) for x in rest[11:15]) / _CLK_TCK


def group_usage(pgids: Iterable[int], proc: str = "/proc") -> dict[int, Usage]:
    """CPU seconds and RSS per process group, summed over every process in it.

    One pass over ``/proc``, one read of ``/proc/<pid>/stat`` per process.
    CPU counts each member's own time plus that of the children it has
    reaped (so time does not vanish when a worker exits); RSS counts shared
    pages once per process that maps them, so forked workers over-count.
    Groups with no live process are absent from the result.
    """
    wanted = set(pgids)
    cpu: dict[int, int] = {}
    rss: dict[int, int] = {}
    if not wanted:
        return {}
    with os.scandir(proc) as it:
        for entry in it:
            name = entry.name
            if not name.isdigit():
                continue
            try:
                with open(f"{proc}/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue  # gone meanwhile
            rest = _stat_fields(data)
            if len(rest) < 22:
                continue
            pgrp = int(rest[2])
            if pgrp not in wanted:
                continue
            # utime stime cutime cstime = fields 14-17; rss (pages) = field 24.
            cpu[pgrp] = (
                cpu.get(pgrp, 0) + int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
            )
            rss[pgrp] = rss.get(pgrp, 0) + int(rest[21]) * _PAGE
    return {g: Usage(cpu[g] / _CLK_TCK, rss[g]) for g in cpu}


class MemoryWatchdog:
    """Memory limits the kernel does not enforce, kept by sampling.

    ``watch(pgid, limit)`` for every group whose limit no cgroup holds; the
    agent calls ``tick()`` periodically (the resolution of the limit is the
    period: a fast allocator can overshoot between two ticks), SIGKILLs the
    groups returned and reports them OOMKilled. A group is returned once.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._limits: dict[int, int] = {}
        self.last: dict[int, Usage] = {}

    def watch(self, pgid: int, limit_bytes: int) -> None:
        self._limits[pgid] = limit_bytes

    def forget(self, pgid: int) -> None:
        self._limits.pop(pgid, None)
        self.last.pop(pgid, None)

    def tick(self) -> list[int]:
        """The watched groups over their limit now (they are forgotten)."""
        if not self._limits:
            return []
        self.last = group_usage(self._limits, self.proc)
        over = [g for g, limit in self._limits.items()
                if g in self.last and self.last[g].rss_bytes > limit]  # fmt: skip
        for g in over:
            del self._limits[g]
        return over
