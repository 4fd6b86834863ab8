"""Who listens on the wildcard address: the one way pods on one machine collide.

Every pod has its own loopback IP, so replicas that listen on ``$POD_IP``
share a port number freely. An app that listens on ``0.0.0.0`` (or ``::``)
instead takes that port on every address of the machine, so the next pod
with the same port fails to bind. The agent reports both sides in plain
words: the pod that holds the wildcard, and the pod that cannot bind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"
_WILDCARDS = ("00000000", "00000000000000000000000000000000")


def wildcard_listeners(proc: str = "/proc") -> dict[int, set[int]]:
    """TCP ports listened on at 0.0.0.0 or [::], with the socket inodes doing it."""
    out: dict[int, set[int]] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(proc, "net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            addr, _, port = fields[1].partition(":")
            if addr in _WILDCARDS:
                out.setdefault(int(port, 16), set()).add(int(fields[9]))
    return out


def group_pids(pgid: int, proc: str = "/proc") -> list[int]:
    """Processes whose process group is ``pgid``."""
    pids = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            data = Path(entry.path, "stat").read_bytes()
            rest = data[data.rfind(b")") + 2:].split()
            if int(rest[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def socket_inodes(pids: Iterable[int], proc: str = "/proc") -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = Path(proc, str(pid), "fd")
        with contextlib.suppress(OSError):
            for fd in os.scandir(fd_dir):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


def wildcard_ports_of(pgid: int, ports: Iterable[int], proc: str = "/proc") -> list[int]:
    """Which of ``ports`` the process group ``pgid`` listens on at the wildcard address."""
    wanted = set(ports)
    listeners = {p: i for p, i in wildcard_listeners(proc).items() if p in wanted}
    if not listeners:
        return []
    mine = socket_inodes(group_pids(pgid, proc), proc)
    return sorted(p for p, inodes in listeners.items() if inodes & mine)


def taken_ports(ports: Iterable[int], proc: str = "/proc") -> list[int]:
    """Which of ``ports`` someone listens on at the wildcard address."""
    wanted = set(ports)
    return sorted(p for p in wildcard_listeners(proc) if p in wanted)


def busy_addresses(proc: str = "/proc") -> set[str]:
    """IPv4 addresses with a listening TCP socket: pod IPs some other process already uses."""
    out: set[str] = set()
    try:
        lines = Path(proc, "net", "tcp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == _LISTEN:
            raw = int(fields[1].partition(":")[0], 16)
            out.add(".".join(str((raw >> s) & 0xFF) for s in (0, 8, 16, 24)))  # little-endian u32
    return out
