"""The proxy process end to end: real backends (h11), a real ``meshwork proxy``, raw sockets.

Counts, not timings: upstream connections are counted by the backends, RSS by /proc.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from proxytools import HANG_GUARD, Procs, connect, get, is_closed, read_reply, rss_kib

pytestmark = pytest.mark.integration

ENVOY_UF = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"


def stats(port: int) -> dict[str, object]:
    return json.loads(get(port, "/_stats").body)  # type: ignore[no-any-return]


def access_log(path: Path | None, want: int = 1) -> list[dict[str, object]]:
    """The proxy's access-log lines (flushed every sweep tick: wait for ``want`` of them)."""
    assert path is not None
    deadline = time.monotonic() + HANG_GUARD
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= want or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def test_round_robin_and_keep_alive_reuse(procs: Procs) -> None:
    backends = [procs.backend(f"b{i}") for i in range(3)]
    proxy = procs.proxy([b.port for b in backends])
    sock = connect(proxy.port)
    try:
        seen = [get(proxy.port, "/hello", sock).body for _ in range(6)]  # warm-up
        assert sorted(set(seen)) == [b"hello from b0", b"hello from b1", b"hello from b2"]
        before = sum(int(stats(b.port)["connections"]) for b in backends)  # type: ignore[call-overload]
        for _ in range(150):
            reply = get(proxy.port, "/hello", sock)
            assert reply.status == 200
            assert "connection" not in reply.headers  # hop-by-hop from the backend stripped
        after = sum(int(stats(b.port)["connections"]) for b in backends)  # type: ignore[call-overload]
    finally:
        sock.close()
    # /_stats itself opened one direct connection per backend per call.
    assert after - before == len(backends), "the proxy opened new upstream connections after warm-up"


def test_chunked_bodies_both_ways(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    pieces = [os.urandom(n) for n in (1, 1000, 70000, 5)]
    sock = connect(proxy.port)
    try:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in pieces:
            sock.sendall(b"%x\r\n%s\r\n" % (len(p), p))
        sock.sendall(b"0\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 200
        assert reply.headers.get("transfer-encoding") == "chunked"
        assert reply.body == b"".join(pieces)
        # The echo answers before the request ends; the connection still stays open.
        assert reply.headers.get("connection") != "close"
        assert get(proxy.port, "/hello", sock).status == 200
    finally:
        sock.close()


def test_large_bodies_stream_without_growing_rss(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    get(proxy.port, "/hello")
    base = rss_kib(proxy.pid)
    size = 50 * 1024 * 1024
    piece = b"y" * (1 << 20)
    sock = connect(proxy.port)
    try:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            sock.sendall(piece)
        reply = read_reply(sock)
        assert reply.status == 200
        assert json.loads(reply.body)["length"] == size
        sock.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        reply = read_reply(sock)
        assert reply.status == 200 and len(reply.body) == size
    finally:
        sock.close()
    grown_mib = (rss_kib(proxy.pid, "VmHWM") - base) / 1024
    assert grown_mib < 8, f"proxy peak RSS grew by {grown_mib:.1f} MiB while streaming 2x50 MiB"


def test_expect_100_continue(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    sock = connect(proxy.port)
    try:
        sock.sendall(
            b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = read_reply(sock)
        assert interim.status == 100
        sock.sendall(b"hello")
        reply = read_reply(sock)
        assert reply.status == 200 and json.loads(reply.body)["length"] == 5
    finally:
        sock.close()
    seen = stats(backend.port)["requests"]
    assert isinstance(seen, list)
    assert all("expect" not in r["headers"] for r in seen)  # we answered it; not forwarded


def test_websocket_upgrade_is_spliced(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    sock = connect(proxy.port)
    try:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        buf = bytearray()
        reply = read_reply(sock, buf)
        assert reply.status == 101
        assert reply.headers["upgrade"] == "websocket"
        assert reply.headers["connection"].lower() == "upgrade"
        for message in (b"\x81\x05hello", b"x" * 100000):
            sock.sendall(message)
            while len(buf) < len(message):
                buf += sock.recv(65536)
            assert bytes(buf[: len(message)]) == message
            del buf[: len(message)]
    finally:
        sock.close()


def test_killed_backend_is_503_uf_with_envoys_body(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port], "--retries", "0")
    assert get(proxy.port, "/hello").status == 200
    os.killpg(backend.pid, signal.SIGKILL)
    backend.proc.wait(timeout=HANG_GUARD)
    sock = connect(proxy.port)
    try:
        replies = [get(proxy.port, "/hello", sock) for _ in range(3)]  # pooled one dies, then refused
        for reply in replies:
            assert reply.status == 503
        assert replies[-1].body == ENVOY_UF
        assert "x-meshwork-reason" in replies[-1].headers
        assert "could not connect" in replies[-1].headers["x-meshwork-reason"]
    finally:
        sock.close()
    flags = [r["response_flags"] for r in access_log(proxy.log, 4)]
    assert flags[0] == "-" and flags[-1] == "UF"


def test_retry_goes_to_another_upstream_and_hides_a_refused_one(procs: Procs) -> None:
    backend = procs.backend("b0")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connections are refused
    proxy = procs.proxy([dead_port, backend.port])
    for _ in range(10):
        assert get(proxy.port, "/hello").body == b"hello from b0"
    records = access_log(proxy.log, 10)
    assert all(r["response_code"] == 200 for r in records)
    assert any(r["attempts"] == 2 for r in records)


def test_retriable_503_is_retried_then_forwarded_with_urx(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    reply = get(proxy.port, "/status/503")
    assert reply.status == 503 and reply.body == b"status 503 from b0"
    seen = stats(backend.port)["requests"]
    assert isinstance(seen, list)
    assert [r["target"] for r in seen].count("/status/503") == 3  # 1 try + Istio's 2 retries
    assert access_log(proxy.log)[0]["response_flags"] == "URX"


def test_timeout_is_504_ut(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port], "--timeout", "0.3")
    sock = connect(proxy.port)
    try:
        reply = get(proxy.port, "/slow?s=5", sock)
        assert reply.status == 504
        assert reply.body == b"upstream request timeout"
        assert "x-meshwork-reason" in reply.headers
        assert get(proxy.port, "/hello", sock).status == 200  # the client connection survives
    finally:
        sock.close()
    assert access_log(proxy.log, 2)[0]["response_flags"] == "UT"


def test_no_keep_alive_client_gets_close(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    sock = connect(proxy.port)
    try:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert is_closed(sock)
    finally:
        sock.close()
    headers = stats(backend.port)["requests"][0]["headers"]  # type: ignore[index]
    assert "connection" not in headers  # hop-by-hop: not forwarded


def test_http10_client(procs: Procs) -> None:
    backend = procs.backend("b0")
    proxy = procs.proxy([backend.port])
    sock = connect(proxy.port)
    try:
        sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 200 and reply.body == b"hello from b0"
        assert reply.headers["connection"] == "keep-alive"
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert is_closed(sock)
    finally:
        sock.close()
