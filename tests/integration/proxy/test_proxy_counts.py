"""Performance that cannot flake: counts per request, never timings.

haproxy makes exactly 2 reads and 2 writes per proxied request (one of each
on the client side and on the upstream side), and so must we: an extra write
per request costs several percent of throughput on loopback
(shared/bench/README.md). Two views of the same promise:

* in this process, the engine's own reads and writes, counted by wrapping
  the client and upstream transports of a real proxy on real sockets;
* in a real ``meshwork proxy`` process, the syscalls themselves, counted by
  ``strace -c`` (skipped when strace is missing or may not attach).

The backend (``fixed_backend.py``) answers in one write, and the client
sends each request in one write, so the right answer is exact.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxytools import HANG_GUARD, LoopThread, Procs, connect, read_reply

from meshwork.proxy.http import HttpProxyConnection
from meshwork.proxy.plan import Endpoint
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster, StaticDecider
from meshwork.proxy.upstream import UpstreamConnection

pytestmark = pytest.mark.integration

REQUESTS = 200
WARM_UP = 10
REQUEST = b"GET /small HTTP/1.1\r\nHost: bench:8080\r\nUser-Agent: counts/1\r\n\r\n"


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


class Counts:
    def __init__(self) -> None:
        self.client_reads = self.client_writes = self.upstream_reads = self.upstream_writes = 0


class CountingTransport(asyncio.Transport):
    """Delegates to a real transport, counting ``write`` calls.

    A ``Transport`` subclass, so that the compiled proxy (``meshwork._accel``),
    which checks attribute types at run time, takes it as the real thing.
    """

    def __init__(self, inner: asyncio.Transport, counts: Counts, side: str) -> None:
        super().__init__()
        self._inner = inner
        self._counts = counts
        self._side = side

    def write(self, data: bytes) -> None:
        if self._side == "client":
            self._counts.client_writes += 1
        else:
            self._counts.upstream_writes += 1
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _delegate(name: str) -> Any:
    def method(self: CountingTransport, *args: Any) -> Any:
        return getattr(self._inner, name)(*args)

    return method


# Everything else a Transport offers goes to the real one (the base class only raises).
for _name in (
    "abort", "can_write_eof", "close", "get_extra_info", "get_protocol", "get_write_buffer_size",
    "is_closing", "is_reading", "pause_reading", "resume_reading", "set_protocol",
    "set_write_buffer_limits", "write_eof", "writelines",
):
    setattr(CountingTransport, _name, _delegate(_name))


def counting_connection(counts: Counts) -> type[HttpProxyConnection]:
    class Counting(HttpProxyConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(CountingTransport(transport, counts, "client"))  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            counts.client_reads += 1
            super().data_received(data)

        def _attach(self, conn: UpstreamConnection) -> None:
            if not isinstance(conn.transport, CountingTransport):
                conn.transport = CountingTransport(conn.transport, counts, "upstream")  # type: ignore[assignment]
            super()._attach(conn)

        def upstream_data(self, conn: UpstreamConnection, data: bytes) -> None:
            counts.upstream_reads += 1
            super().upstream_data(conn, data)

    return Counting


def test_one_read_and_one_write_per_request_on_each_side(procs: Procs, loop: LoopThread) -> None:
    backends = [procs.backend(f"f{i}", fixed=True) for i in range(2)]
    cluster = StaticCluster([Endpoint("127.0.0.1", b.port) for b in backends])
    counts = Counts()

    async def start() -> tuple[HttpProxy, int]:
        proxy = HttpProxy(StaticDecider(cluster))
        proxy.connection_class = counting_connection(counts)
        return proxy, await proxy.start("127.0.0.1", 0)

    proxy, port = loop.run(start())
    try:
        sock = connect(port)
        try:
            for _ in range(WARM_UP):  # fills both pools
                sock.sendall(REQUEST)
                assert read_reply(sock).status == 200
            connects = loop.call(lambda: sum(p.connects for p in proxy.pools.values()))
            before = vars(counts).copy()
            for _ in range(REQUESTS):
                sock.sendall(REQUEST)
                reply = read_reply(sock)
                assert reply.status == 200 and reply.body == b"fixed\n"
            after = loop.call(lambda: vars(counts).copy())
            connects_after = loop.call(lambda: sum(p.connects for p in proxy.pools.values()))
        finally:
            sock.close()
    finally:
        loop.run(proxy.close(grace=0.5))
    per_request = {k: (after[k] - before[k]) / REQUESTS for k in after}
    assert per_request == {"client_reads": 1, "client_writes": 1, "upstream_reads": 1, "upstream_writes": 1}
    assert connects_after == connects, "new upstream connections after warm-up"


def _strace_usable() -> str | None:
    """None when strace exists and may attach to our children; else why not."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    probe = subprocess.run(["strace", "-c", "-o", "/dev/null", "true"], capture_output=True, text=True,
                           timeout=HANG_GUARD)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.strip()[:200]}"
    return None


def test_two_reads_and_two_writes_per_request_in_syscalls(procs: Procs, tmp_path: Path) -> None:
    why_not = _strace_usable()
    if why_not is not None:
        pytest.skip(why_not)
    backend = procs.backend("f0", fixed=True)
    proxy = procs.proxy([backend.port], access_log=False)  # a log file would add writes
    sock = connect(proxy.port)
    for _ in range(WARM_UP):  # the pooled upstream connection exists now
        sock.sendall(REQUEST)
        assert read_reply(sock).status == 200
    out = tmp_path / "strace.txt"
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(proxy.pid), "-o", str(out)],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert tracer.stderr is not None
        line = tracer.stderr.readline()  # "strace: Process N attached"
        if "attached" not in line:
            pytest.skip(f"strace could not attach: {line.strip()}")
        for _ in range(REQUESTS + 1):
            sock.sendall(REQUEST)
            assert read_reply(sock).status == 200
        # The proxy read the last request, so every write before it has
        # returned; only the last reply's write may still be under way.
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=HANG_GUARD)
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait()
            if tracer.stderr is not None:
                tracer.stderr.close()
            sock.close()  # only now: its EOF is not part of the count
    ok: dict[str, int] = {}  # calls that succeeded (EAGAIN and other errors left out)
    for row in out.read_text().splitlines():
        parts = row.split()
        if len(parts) >= 5 and parts[3].isdigit():
            errors = int(parts[4]) if len(parts) == 6 else 0
            ok[parts[-1]] = int(parts[3]) - errors
    reads = sum(ok.get(n, 0) for n in ("read", "recvfrom", "recvmsg", "readv"))
    writes = sum(ok.get(n, 0) for n in ("write", "sendto", "sendmsg", "writev"))
    # Per request: the client's request and the upstream's response are read
    # once each, and forwarded with one write each; nothing else reads or
    # writes while the trace runs (no access log, the client stays connected).
    assert reads == 2 * (REQUESTS + 1), ok
    assert writes in (2 * REQUESTS + 1, 2 * REQUESTS + 2), ok
