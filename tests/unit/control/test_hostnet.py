"""The loopback ranges this machine already listens in, read from the kernel's real socket table."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

from meshwork.control.hostnet import busy_loopback_networks, claim


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


_CLAIM_IN_CHILD = (
    "import ipaddress, sys; from meshwork.control.hostnet import claim; "
    "print(claim(ipaddress.IPv4Network(sys.argv[1]), sys.argv[2]))"
)


def _claimed_by_another_process(net: str, directory: Path) -> bool:
    out = subprocess.run([sys.executable, "-c", _CLAIM_IN_CHILD, net, str(directory)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return out.stdout.strip() == "True"


def test_a_claimed_range_is_refused_to_other_processes_until_its_holder_ends(tmp_path: Path) -> None:
    net = ipaddress.IPv4Network("127.91.0.0/16")
    # Another process claims it and ends: the kernel drops its lock, so the range is free again.
    assert _claimed_by_another_process(str(net), tmp_path)
    assert claim(net, str(tmp_path))
    assert claim(net, str(tmp_path))  # this process holds it already: still ours
    assert not _claimed_by_another_process(str(net), tmp_path)  # held here: refused there
    assert _claimed_by_another_process("127.92.0.0/16", tmp_path)  # other ranges are not affected


def test_a_claim_that_cannot_be_made_does_not_block(tmp_path: Path) -> None:
    assert claim(ipaddress.IPv4Network("127.90.0.0/16"), str(tmp_path / "no" / "such" / "dir"))
