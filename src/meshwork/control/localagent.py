"""The server's own node: a ``meshwork agent`` child process it starts and stops.

The agent runs as a separate process (its memory and CPU are its own, and a
crash in a pod's handling never takes the API down). It watches its parent:
when the server dies without stopping it, the agent exits and leaves its
pods running, and the next server's agent re-adopts them. A graceful server
stop SIGTERMs the agent first, which stops every pod, so ``meshwork down``
leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("meshwork.server")

AGENT_PID_FILE = "agent.pid"
STOP_TIMEOUT_S = 60.0  # pods get their grace periods; then the agent is killed
STALE_WAIT_S = 5.0


def default_node_name() -> str:
    return socket.gethostname().split(".")[0].lower() or "node"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_agent(pid: int) -> bool:
    args = _cmdline(pid)
    return "meshwork" in " ".join(args) and "agent" in args


class LocalAgent:
    def __init__(self, data_dir: Path, *, name: str | None = None) -> None:
        self.data_dir = data_dir
        self.name = name or default_node_name()
        self.pid_path = data_dir / AGENT_PID_FILE
        self.proc: subprocess.Popen[bytes] | None = None

    async def _retire_stale(self) -> None:
        """An agent left by a server that died exits on its own within a second; make sure."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + STALE_WAIT_S
        while _is_agent(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if _is_agent(pid):
            log.warning("agent pid %d of a previous server is still running; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def start(self, url: str, node_token: str) -> None:
        """Start the agent with the node's own credential (``nodes/<name>/node-token``, 0600)."""
        await self._retire_stale()
        from meshwork.control.auth import write_private

        node_dir = self.data_dir / "nodes" / self.name
        node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token_file = node_dir / "node-token"
        write_private(token_file, (node_token + "\n").encode())
        log_file = open(self.data_dir / "agent.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshwork", "agent", "--server", url,
                 "--token-file", str(token_file), "--name", self.name,
                 "--data-dir", str(self.data_dir), "--parent-pid", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            log_file.close()
        self.pid_path.write_text(f"{self.proc.pid}\n")
        log.info("started node agent %s (pid %d)", self.name, self.proc.pid)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.warning("node agent did not stop within %.0fs; killing it", timeout)
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            if self.pid_path.read_text().strip() == str(proc.pid):
                self.pid_path.unlink()
        self.proc = None
