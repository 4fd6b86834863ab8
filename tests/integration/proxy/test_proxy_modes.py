"""The proxy's other modes: a TCP splice, several workers sharing one port, metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from proxytools import HANG_GUARD, Procs, connect, get

pytestmark = pytest.mark.integration


def test_tcp_mode_echoes_bytes_both_ways(procs: Procs) -> None:
    echo = procs.backend("echo", tcp=True)
    proxy = procs.proxy([echo.port], "--mode", "tcp")
    sock = connect(proxy.port)
    try:
        payload = os.urandom(300_000)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # half-close passes through; the echo then closes
        got = bytearray()
        while data := sock.recv(65536):
            got += data
        assert bytes(got) == payload
    finally:
        sock.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_two_workers_share_the_port_and_stop_with_the_parent(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port], "--workers", "2")
    workers = _children(proxy.pid)
    workers = [w for w in workers if w != backend.pid]
    assert len(workers) == 2
    listening = _listening_inodes(proxy.port)
    for w in workers:
        assert os.getpgid(w) == os.getpgid(proxy.pid)  # stoppable as one process group
        assert _socket_inodes(w) & listening, f"worker {w} has no listening socket on the port"
    assert len(listening) == 2  # one SO_REUSEPORT socket per worker
    for _ in range(20):
        assert get(proxy.port, "/hello").status == 200
    proxy.proc.send_signal(signal.SIGTERM)
    proxy.proc.wait(timeout=HANG_GUARD)
    deadline = time.monotonic() + HANG_GUARD
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
              for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_metrics_count_every_request_by_status_and_upstream(procs: Procs) -> None:
    backends = [procs.backend(f"m{i}") for i in range(2)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    proxy = procs.proxy([b.port for b in backends], "--metrics", f"127.0.0.1:{metrics_port}", access_log=False)
    for _ in range(6):
        assert get(proxy.port, "/hello").status == 200
    assert get(proxy.port, "/status/404").status == 404
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/stats/prometheus", timeout=10).read().decode()
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("istio_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = (labels["response_code"], labels["destination_service"])
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    assert sum(v for (code, _), v in counts.items() if code == "200") == 6, text
    assert sum(v for (code, _), v in counts.items() if code == "404") == 1, text
