"""Listening sockets as the agent reads them from /proc: real sockets, real kernel tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from meshwork.agent.ports import busy_addresses, taken_ports, wildcard_listeners, wildcard_ports_of

pytestmark = pytest.mark.integration


def _listen(host: str, port: int = 0) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen()
    return s


def test_an_address_with_a_listener_is_busy_and_a_quiet_one_is_not() -> None:
    with _listen("127.9.0.7") as s:
        assert "127.9.0.7" in busy_addresses()
        assert "127.9.0.8" not in busy_addresses()
        port = s.getsockname()[1]
        assert port not in wildcard_listeners()  # a pod IP listener is not a wildcard one
    assert "127.9.0.7" not in busy_addresses()


def test_a_wildcard_listener_is_found_and_attributed_to_its_process_group() -> None:
    code = ("import socket, time\ns = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); time.sleep(60)\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert port in wildcard_listeners()
        assert taken_ports([port, 1]) == [port]
        assert wildcard_ports_of(proc.pid, [port]) == [port]
        assert wildcard_ports_of(os.getpgid(0), [port]) == []  # not ours
    finally:
        proc.kill()
        proc.wait()
