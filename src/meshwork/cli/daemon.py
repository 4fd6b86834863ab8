"""Starting, finding and stopping the local meshwork server process.

What lives here: spawning ``python -m meshwork server`` in its own session
(so a terminal's Ctrl-C reaches only the CLI, and the whole process group can
be signalled at once) with its output in ``DATA_DIR/server.log``; waiting for
``/readyz``; reading ``DATA_DIR/server.pid``; and stopping a process group
with SIGTERM, a grace period, then SIGKILL, until no process of the group is
left. Linux's ``/proc`` is used to tell a zombie from a live process and to
find every member of a group; elsewhere ``kill(0)`` is the fallback.

What must not live here: click, or deciding what to print.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from meshwork.client import Client
from meshwork.errors import MeshworkError

PID_FILE = "server.pid"
LOG_FILE = "server.log"
# How long `up` waits for /readyz. A cold start opens (and may recover) the
# SQLite store and fills the watch cache; on a loaded 2-core machine that can
# take several seconds, so allow a generous margin before giving up.
READY_TIMEOUT_S = 60.0
# How long `down` waits after SIGTERM before SIGKILL (the issue asks for 30 s;
# the server itself drains requests for at most 10 s).
STOP_TIMEOUT_S = 30.0
# After SIGKILL the kernel frees the processes almost at once; wait this long at most.
KILL_WAIT_S = 5.0
POLL_INTERVAL_S = 0.1
# How much of server.log to show when the server fails to start.
LOG_TAIL_LINES = 20


class DaemonError(MeshworkError):
    """The server process could not be started, found or stopped."""


# -- processes ---------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from ``/proc/PID/stat``; None when unknown or gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ("X", -1)
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = raw.rsplit(")", 1)[-1].split()
    try:
        return fields[0], int(fields[2])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes in group ``pgid``, or None when ``/proc`` cannot tell."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_meshwork_process(pid: int) -> bool:
    """Whether ``pid`` looks like a meshwork server (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the pid file
    return b"meshwork" in cmdline


def read_pid(data_dir: Path) -> int | None:
    """The pid in ``server.pid``, or None when the file is missing or unreadable."""
    try:
        text = (data_dir / PID_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def running_server(data_dir: Path) -> int | None:
    """The pid of the live meshwork server recorded in ``data_dir``, if any."""
    pid = read_pid(data_dir)
    if pid is None or not process_alive(pid) or not is_meshwork_process(pid):
        return None
    return pid


def remove_stale_pid_file(data_dir: Path, pid: int) -> None:
    path = data_dir / PID_FILE
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(pid):
            path.unlink()


# -- start ---------------------------------------------------------------------------


def server_command(
    host: str, port: int, data_dir: Path, store_url: str | None, extra: Sequence[str] = ()
) -> list[str]:
    """``meshwork server`` with these options; ``extra`` are further server options, passed as they are."""
    cmd = [
        sys.executable,
        "-m",
        "meshwork",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    if store_url:
        cmd += ["--store", store_url]
    return [*cmd, *extra]


def start_server(
    data_dir: Path, *, host: str, port: int, store_url: str | None, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn the server in its own session, appending its output to ``server.log``.

    Returns the process and the offset in the log where this run's output starts.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = data_dir / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        offset = os.fstat(fd).st_size
        proc = subprocess.Popen(
            server_command(host, port, data_dir, store_url, extra),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    return proc, offset


def log_tail(data_dir: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with (data_dir / LOG_FILE).open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def wait_ready(
    client: Client,
    proc: subprocess.Popen[bytes] | None,
    data_dir: Path | None = None,
    *,
    timeout: float = READY_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll ``/readyz`` until it answers 200; raise ``DaemonError`` if the process dies or time runs out.

    With ``proc`` and ``data_dir``, the answer only counts once ``server.pid``
    names ``proc``: another server already on the port must not pass for ours.
    """
    deadline = clock() + timeout
    delay = POLL_INTERVAL_S
    while True:
        if proc is not None and proc.poll() is not None:
            raise DaemonError(
                f"the meshwork server exited with code {proc.returncode} before it was ready"
            )
        ours = proc is None or data_dir is None or read_pid(data_dir) == proc.pid
        if ours and client.ready():
            return
        if clock() >= deadline:
            raise DaemonError(
                f"the meshwork server at {client.server} was not ready after {timeout:.0f}s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# -- stop ------------------------------------------------------------------------------

StopResult = Literal["stopped", "killed", "gone"]


def _wait_gone(
    pid: int, pgid: int | None, proc: subprocess.Popen[bytes] | None, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.poll()  # reap our own child so it does not linger as a zombie
        alive = group_alive(pgid) if pgid is not None else process_alive(pid)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def _signal(pid: int, pgid: int | None, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if pgid is not None:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def stop_process(
    pid: int, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = STOP_TIMEOUT_S
) -> StopResult:
    """SIGTERM ``pid``'s process group (just ``pid`` if it leads none), wait, then SIGKILL.

    Returns ``gone`` if nothing was running, ``stopped`` if it ended within
    ``timeout``, ``killed`` if SIGKILL was needed. Raises ``DaemonError`` if
    processes survive even SIGKILL.
    """
    try:
        pgid: int | None = os.getpgid(pid)
    except ProcessLookupError:
        if proc is not None:
            proc.poll()
        return "gone"
    if pgid != pid:
        pgid = None  # not a group leader: signal only the process itself
    if not (group_alive(pgid) if pgid is not None else process_alive(pid)):
        if proc is not None:
            proc.poll()
        return "gone"
    _signal(pid, pgid, signal.SIGTERM)
    if _wait_gone(pid, pgid, proc, timeout):
        return "stopped"
    _signal(pid, pgid, signal.SIGKILL)
    if _wait_gone(pid, pgid, proc, KILL_WAIT_S):
        return "killed"
    raise DaemonError(f"process group {pgid or pid} survived SIGKILL")
