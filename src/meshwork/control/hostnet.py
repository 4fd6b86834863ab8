"""What this machine's loopback is already used for, so a new node's pod range avoids it.

Every meshwork server's first node would otherwise take ``127.1.0.0/16``: two
instances on one machine (two users, two CI jobs, a test beside a demo) would
hand their pods the same addresses. Before picking a new node's pod CIDR the
server reads the kernel's table of TCP sockets and treats every /16 with a
listener in it as held; and it claims the range it picks with an exclusive
``flock`` on a file named after it in the temp directory (``claim``), held for
the server's life, so two servers picking in the same instant, before any pod
listens, still get different ranges. The kernel drops the lock when the
process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import tempfile

__all__ = ["busy_loopback_networks", "claim"]

# Claimed networks -> the open, locked file that holds each for this process's life.
_CLAIMS: dict[str, int] = {}

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def busy_loopback_networks(prefix: int = 16, table: str = "/proc/net/tcp") -> list[ipaddress.IPv4Network]:
    """The /``prefix`` networks of 127.0.0.0/8 that hold a listening TCP socket (none when unreadable)."""
    found: set[ipaddress.IPv4Network] = set()
    try:
        with open(table) as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                if len(fields) < 4 or fields[3] != _LISTEN:
                    continue
                address = fields[1].partition(":")[0]
                ip = ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
                if ip.packed[0] == 127 and ip.packed[1] != 0:  # 127.0.x.x stays with the host
                    found.add(ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False))
    except (OSError, ValueError):
        return []
    return sorted(found)


def claim(network: ipaddress.IPv4Network, directory: str | None = None) -> bool:
    """Hold ``network`` for this process; False when another process on this machine holds it.

    True also when claims cannot be made here (an unwritable temp dir): the
    listener scan is then the only guard, as before.
    """
    key = f"{network.network_address}-{network.prefixlen}"
    if key in _CLAIMS:
        return True
    path = os.path.join(directory or tempfile.gettempdir(), f"meshwork-loopback-{key}.lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS[key] = fd
    return True
