"""Containers as process groups: start, watch, signal, and re-adopt after an agent restart.

Each container instance runs under a small ``/bin/sh`` shim that is the
leader of a new session (so of its own process group). The shim

1. writes its pid into the container's cgroup ``cgroup.procs`` files, if any,
   so everything it starts inherits the limits;
2. opens the container's stdout/stderr FIFOs read-write and keeps them open,
   so the app never gets SIGPIPE while the agent is away (a restarted agent
   reopens the FIFOs and goes on reading);
3. runs the app as a child and, when it ends, writes its exit status to a
   file, so even an agent that was not its parent learns how it ended.

The agent watches the shim through a pidfd, which works for processes that
are not its children (the ones a previous agent started). What the agent
must remember about a running instance lives in a small JSON file next to
the FIFOs; the pid is checked against its start time in ``/proc`` before it
is trusted again, so a recycled pid is never adopted or signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# The shim. $1: cgroup.procs files (colon separated, may be empty); $2/$3: the
# stdout/stderr FIFOs; $4: the exit-status file; the rest: the app's argv.
# A TERM/INT/HUP for the group reaches the app and the shim alike; the shim's
# trap only defers it until the app (a foreground child) has ended.
SHIM = r"""
IFS=:; for f in $1; do [ -n "$f" ] && echo $$ > "$f"; done; unset IFS
exec 3<>"$2" 4<>"$3"
exitfile=$4
shift 4
trap : TERM INT HUP
"$@" 3>&- 4>&- </dev/null
echo $? > "$exitfile.tmp" && mv -f "$exitfile.tmp" "$exitfile"
"""
# bash when there is one: dash (Debian's /bin/sh) drops environment variables whose
# names are not shell identifiers (``CONFIG_app.conf``), which Kubernetes passes to the
# app (relaxed env var names); bash hands them on to its children untouched.
SHIM_SHELL = shutil.which("bash") or "/bin/sh"
SHIM_NAME = "meshwork-pod"  # $0 of every shim: `ps` and the test sweep find them by it
EXIT_UNKNOWN = 137  # what the kubelet reports when a container's end was not observed


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks), None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    if len(rest) < 20 or rest[0] == b"Z":
        return None
    return int(rest[19])


@dataclass(slots=True)
class Instance:
    """What must survive an agent restart about one running container instance."""

    container: str
    pid: int
    start_ticks: int
    started_at: float
    restart_count: int
    exit_file: str
    cgroup_key: str | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Instance | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def read_exit(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def make_fifo(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)


class Process:
    """A started or adopted container instance: its shim's pid is the group id."""

    def __init__(self, instance: Instance, *, child: bool) -> None:
        self.instance = instance
        self.pid = instance.pid
        self.child = child
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.killed_by_agent = False
        self._pidfd: int | None = None

    def watch(self) -> None:
        """Resolve ``exited`` with the app's exit code when the shim ends."""
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            loop.call_soon(self._ended)
            return
        loop.add_reader(self._pidfd, self._ended)

    def _ended(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        status: int | None = None
        if self.child:
            with contextlib.suppress(ChildProcessError):
                _, raw = os.waitpid(self.pid, 0)
                status = raw
        # Whatever the app left running in its group goes with it.
        self.signal_group(signal.SIGKILL)
        code = read_exit(self.instance.exit_file)
        if code is None:
            if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                code = os.WEXITSTATUS(status)  # the shim itself failed (cannot exec sh ...)
            elif status is not None and os.WIFSIGNALED(status):
                code = 128 + os.WTERMSIG(status)
            else:
                code = EXIT_UNKNOWN
        if not self.exited.done():
            self.exited.set_result(code)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def alive(self) -> bool:
        return not self.exited.done()

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL after ``grace`` seconds; the exit code."""
        if self.exited.done():
            return self.exited.result()
        self.killed_by_agent = True
        self.signal_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), max(grace, 0.0))
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            return await self.exited

    def close(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    out_fifo: Path,
    err_fifo: Path,
    exit_file: Path,
    cgroup_procs: Sequence[str] = (),
    tag: str,
) -> int:
    """Start the shim running ``argv``; its pid (also its process group and session)."""
    with contextlib.suppress(FileNotFoundError):
        exit_file.unlink()
    # The agent holds each FIFO open read-write, so these opens do not block.
    out = os.open(out_fifo, os.O_WRONLY)
    try:
        err = os.open(err_fifo, os.O_WRONLY)
        try:
            proc = subprocess.Popen(
                [SHIM_SHELL, "-c", SHIM, f"{SHIM_NAME}:{tag}", ":".join(cgroup_procs),
                 str(out_fifo), str(err_fifo), str(exit_file), *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=dict(env), cwd=cwd, start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            os.close(err)
    finally:
        os.close(out)
    # Popen keeps a handle to reap the child; the agent reaps through its pidfd
    # instead, so drop Popen's bookkeeping of it.
    proc.returncode = 0
    return proc.pid


def adopt(instance: Instance) -> Process | None:
    """The running process a previous agent started, if it is still that process."""
    ticks = proc_start_time(instance.pid)
    if ticks is None or ticks != instance.start_ticks:
        return None
    proc = Process(instance, child=False)
    proc.watch()
    return proc


def start(instance_path: Path, instance: Instance) -> Process:
    """Track a freshly spawned instance, writing its state file first."""
    ticks = proc_start_time(instance.pid)
    instance.start_ticks = ticks if ticks is not None else 0
    instance.save(instance_path)
    proc = Process(instance, child=True)
    proc.watch()
    return proc


def now() -> float:
    return time.time()
