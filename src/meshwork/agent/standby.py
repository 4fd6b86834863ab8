"""A warm spare sidecar: the proxy's Python imports done before a pod needs it.

Starting the injected proxy costs about 300 ms of imports (the mesh compiler,
its models, TLS), all on a cold start's path: the app starts only once the
proxy is ready. So once this node has run a meshed pod, the agent keeps one
spare ``python -m meshwork sidecar`` started the usual way (a shim, its own
process group, FIFOs, an exit file; ``agent.runtime``) with
``MESHWORK_STANDBY=@<name>`` set: ``meshwork.__main__`` then imports the
proxy and connects to that abstract stream socket, where it waits for the
environment of the pod it will serve. The next meshed pod takes it
(``take``): its FIFOs are renamed into the pod's directory, it receives the
container's environment and working directory (one JSON document, then EOF)
and from then on is that pod's ``istio-proxy`` in every respect: its own
certificate, asked for with its own pod's identity, its status, logs,
restarts. A new spare starts behind it.

A spare serves one pod once. It exits when the agent goes away (EOF before
any assignment), and a new agent kills the spares an old one left
(``sweep``). What a spare never gets: cgroup limits (a container with limits
starts the usual way), another command than the catalogue's proxy. Its
``/proc/<pid>/environ`` stays the spare's (the pod's variables are in its
``os.environ``). ``MESHWORK_SIDECAR_STANDBY=0`` in the agent's environment
turns spares off; one costs an idle Python process (about 60 MiB).

What must not live here: when containers start (``agent.worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from meshwork.agent import runtime

__all__ = ["STANDBY_ARGV", "STANDBY_ENV", "Spare", "StandbyPool"]

log = logging.getLogger("meshwork.agent")

STANDBY_ENV = "MESHWORK_STANDBY"
STANDBY_ARGV = (sys.executable, "-m", "meshwork", "sidecar")  # the catalogue's meshwork/proxyv2 and istio/proxyv2
STATE = "standby.json"  # a spare's Instance while no pod has it
REFILL_DELAY_S = 0.5  # a new spare starts this long after one is taken: not on that pod's start path
HAND_OVER_TIMEOUT_S = 60.0  # a spare still importing when taken connects within this (it has ~0.5 s to go)
MAX_FAILURES = 3  # spares that die before use in a row: stop keeping one (the proxy cannot start here)


def _abstract(name: str) -> str:
    return "\0" + name[1:]


class Spare:
    """One spare proxy process, waiting (or still importing) for its pod's environment."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.dir = root / secrets.token_hex(8)
        self.dir.mkdir(parents=True, mode=0o700)
        self.name = f"@meshwork-standby-{secrets.token_hex(12)}"
        self.out, self.err, self.exit_file = self.dir / "out", self.dir / "err", self.dir / "exit"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._fifo_fds: list[int] = []
        try:
            self._listener.bind(_abstract(self.name))
            self._listener.listen(4)
            self._listener.setblocking(False)
            for fifo in (self.out, self.err):  # held read-write so the spawn's opens do not block
                runtime.make_fifo(fifo)
                self._fifo_fds.append(os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
            self.pid = runtime.spawn(list(STANDBY_ARGV), env={**env, STANDBY_ENV: self.name}, cwd=str(self.dir),
                                     out_fifo=self.out, err_fifo=self.err, exit_file=self.exit_file,
                                     tag=f"{self.dir}/istio-proxy")  # fmt: skip
        except OSError:
            self.close_fds()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.instance = runtime.Instance(container="istio-proxy", pid=self.pid, start_ticks=0, started_at=time.time(),
                                         restart_count=0, exit_file=str(self.exit_file))  # fmt: skip
        self.proc = runtime.start(self.dir / STATE, self.instance)
        self.taken = False
        self._sending: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc.alive()

    def hand_over(self, env: Mapping[str, str], cwd: str, out: Path, err: Path) -> None:
        """Make this spare the container whose FIFOs are ``out``/``err``: they take the spare's
        place, and the spare gets ``env`` and ``cwd`` once it connects (at once when it already has).
        The caller then tracks the process (``runtime.start``) and opens its logs."""
        self.taken = True
        os.replace(self.out, out)
        os.replace(self.err, err)
        (self.dir / STATE).unlink(missing_ok=True)  # no longer a spare: a new agent must not kill it
        self.proc.close()  # the container's Process watches it from now on
        payload = json.dumps({"env": dict(env), "cwd": cwd}).encode()
        self._sending = asyncio.get_running_loop().create_task(self._send(payload))  # kept: not collected

    async def _send(self, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HAND_OVER_TIMEOUT_S):
                while True:
                    conn, _ = await loop.sock_accept(self._listener)
                    if self._is_spare(conn):
                        break
                    conn.close()  # another process of this machine found the name: not for it
            with conn:
                await loop.sock_sendall(conn, payload)
                conn.shutdown(socket.SHUT_WR)
        except (OSError, TimeoutError) as exc:  # it died meanwhile: the container's exit says so
            log.warning("standby proxy %d: could not hand over its pod: %s", self.pid, exc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        finally:
            self.close_fds()

    def _is_spare(self, conn: socket.socket) -> bool:
        """The peer (SO_PEERCRED, checked by the kernel) is a process of this spare's group."""
        try:
            pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))  # fmt: skip
            return os.getpgid(pid) == self.pid
        except OSError:
            return False

    def close_fds(self) -> None:
        self._listener.close()
        for fd in self._fifo_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fifo_fds = []

    async def discard(self) -> None:
        """Stop an untaken spare and remove what it left."""
        self.close_fds()  # EOF for a spare that is waiting: it exits by itself
        self.proc.signal_group(signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.proc.exited), 5)
        self.proc.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class StandbyPool:
    """At most one spare proxy per node, started once the node has run a meshed pod."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spare: Spare | None = None
        self.enabled = os.environ.get("MESHWORK_SIDECAR_STANDBY", "1") != "0"
        self._env: dict[str, str] | None = None
        self._refill: asyncio.TimerHandle | None = None
        self._failures = 0
        self._started = False  # a spare was ever started
        self._closed = False
        self._discarding: set[asyncio.Task[None]] = set()

    def sweep(self) -> None:
        """Kill the spares a previous agent left (they leave by themselves once its socket is gone; this
        is for one still importing then); keep the directories of spares pods took (their exit files)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            inst = runtime.Instance.load(entry / STATE)
            if inst is None:  # a pod's proxy now: its exit file goes when the pod does (``forget``)
                continue
            if runtime.proc_start_time(inst.pid) == inst.start_ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(inst.pid, signal.SIGKILL)
            shutil.rmtree(entry, ignore_errors=True)

    def take(self, env: Mapping[str, str]) -> Spare | None:
        """The spare, if one is running, for a proxy whose environment is ``env``; a new one follows.

        ``env`` also teaches the pool what a spare's own environment is (everything but the pod's)."""
        if not self.enabled or self._closed:
            return None
        self._env = {k: v for k, v in env.items() if k in _NODE_KEYS}
        spare, self.spare = self.spare, None
        self._schedule()
        if spare is not None and spare.alive:
            self._failures = 0
            return spare
        if spare is not None:
            self._failures += 1
            self._discard(spare)
        return None

    def _discard(self, spare: Spare) -> None:
        task = asyncio.get_running_loop().create_task(spare.discard())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    def _schedule(self) -> None:
        if self._refill is None and self._failures < MAX_FAILURES:
            # The node's first spare starts at once, beside its first meshed pod: the next may come soon.
            delay = REFILL_DELAY_S if self._started else 0.0
            self._refill = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._refill = None
        if self._closed or self.spare is not None or self._env is None:
            return
        self._started = True
        try:
            self.spare = Spare(self.root, self._env)
        except OSError as exc:
            self._failures += 1
            log.warning("cannot start a standby proxy: %s", exc)
            return
        self.spare.proc.exited.add_done_callback(functools.partial(self._spare_exited, self.spare))

    def _spare_exited(self, spare: Spare, _fut: asyncio.Future[int]) -> None:
        if spare is self.spare and not spare.taken and not self._closed:  # it died waiting: start another
            self.spare = None
            self._failures += 1
            self._discard(spare)
            self._schedule()

    def forget(self, exit_file: Path) -> None:
        """A pod that took a spare is gone: remove the spare's directory (its exit file)."""
        if exit_file.parent.parent == self.root:
            shutil.rmtree(exit_file.parent, ignore_errors=True)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
        spare, self.spare = self.spare, None
        if spare is not None:
            await spare.discard()
        if self._discarding:
            await asyncio.gather(*self._discarding, return_exceptions=True)


# What a spare's own environment keeps of a proxy's: the node's, never the pod's.
_NODE_KEYS = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
                        "MESHWORK_SERVER", "MESHWORK_TOKEN_FILE"})  # fmt: skip
