"""The loopback ranges this machine already listens in, read from the kernel's real socket table."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from meshwork.control.hostnet import busy_loopback_networks


def test_a_listener_marks_its_16_busy_and_a_closed_one_does_not() -> None:
    with socket.socket() as s:
        s.bind(("127.93.4.5", 0))
        s.listen()
        assert ipaddress.IPv4Network("127.93.0.0/16") in busy_loopback_networks()
        with socket.socket() as unlistened:  # bound but not listening: not a server, not counted
            unlistened.bind(("127.94.4.5", 0))
            assert ipaddress.IPv4Network("127.94.0.0/16") not in busy_loopback_networks()


def test_the_host_range_and_unreadable_tables_count_for_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.9", 0))
        s.listen()
        assert all(net.network_address.packed[1] != 0 for net in busy_loopback_networks())
    assert busy_loopback_networks(table=str(tmp_path / "missing")) == []
    (tmp_path / "garbage").write_text("header\n  0: zz:zz 00000000:0000 0A\n")
    assert busy_loopback_networks(table=str(tmp_path / "garbage")) == []
