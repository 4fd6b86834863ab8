"""What this machine's loopback is already used for, so a new node's pod range avoids it.

Every meshwork server's first node would otherwise take ``127.1.0.0/16``: two
instances on one machine (two users, two CI jobs, a test beside a demo) would
hand their pods the same addresses. Before picking a new node's pod CIDR the
server reads the kernel's table of TCP sockets and treats every /16 with a
listener in it as held.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

__all__ = ["busy_loopback_networks"]

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
