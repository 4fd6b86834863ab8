"""A container says "I am ready" instead of waiting for its next probe (systemd's sd_notify protocol).

What lives here: ``ReadyNotify``, a datagram socket in the abstract namespace
(no file to clean up, no path length limit) whose address a container gets
as ``NOTIFY_SOCKET=@<name>``, as a ``Type=notify`` service gets it from
systemd (the sidecar's sending half: ``proxy.ready.notify_ready``). A datagram holding the line ``READY=1`` makes the agent run the
container's readiness probe at once: the probe still decides, so a false or
forged message costs one probe and never makes anything Ready. The agent
gives the socket to the injected proxy only, whose readiness otherwise waits
for the next probe (tens of milliseconds on every cold start).

What must not live here: what a probe result means (``core.probes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Callable

__all__ = ["NOTIFY_ENV", "READY", "ReadyNotify"]

NOTIFY_ENV = "NOTIFY_SOCKET"
READY = b"READY=1"
MAX_DATAGRAM = 4096  # sd_notify messages are a few short lines


def _address(name: str) -> str:
    """``@name`` (systemd's spelling of an abstract address) -> the socket module's ``\\0name``."""
    return "\0" + name[1:] if name.startswith("@") else name


class ReadyNotify:
    """One container's notify socket; ``on_ready`` runs for each ``READY=1`` received."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.name = f"@meshwork-notify-{secrets.token_hex(12)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self._sock.bind(_address(self.name))
        except OSError:
            self._sock.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        ready = False
        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            ready = ready or READY in data.split(b"\n")
        if ready:
            self._on_ready()

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

