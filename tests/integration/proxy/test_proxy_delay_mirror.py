"""The engine's fault delay, request mirroring and observer reports, on real sockets.

The proxy runs in this process (a loop in a thread) with a decider that
returns the plan under test; backends are real processes (``backend.py``)
that record every request they get (``/_stats``). No assertion depends on
speed: a delay is checked as a lower bound on the reported duration, and
waits are bounded only to turn a hang into a failure.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from proxytools import HANG_GUARD, LoopThread, Procs, connect, get, read_reply

from meshwork.core.http1 import Request
from meshwork.proxy.mirror import shadow_authority
from meshwork.proxy.observe import ConnectionInfo, RequestInfo
from meshwork.proxy.plan import DirectResponse, Downstream, Endpoint, Forward, Plan
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster
from meshwork.proxy.tcp import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


class Recorder:
    """An observer that keeps everything it is told."""

    def __init__(self) -> None:
        self.requests: list[RequestInfo] = []
        self.opened: list[ConnectionInfo] = []
        self.closed: list[ConnectionInfo] = []

    def request_done(self, info: RequestInfo) -> None:
        self.requests.append(info)

    def connection_opened(self, info: ConnectionInfo) -> None:
        self.opened.append(info)

    def connection_closed(self, info: ConnectionInfo) -> None:
        self.closed.append(info)


class Fixed:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def decide(self, request: Request, downstream: Downstream) -> Plan:
        return self.plan


def cluster(port: int, name: str) -> StaticCluster:
    return StaticCluster([Endpoint("127.0.0.1", port)], name=name)


def recorded(port: int) -> list[dict[str, object]]:
    """Requests a backend saw, its own /_stats calls left out."""
    stats = json.loads(get(port, "/_stats").body)
    return [r for r in stats["requests"] if r["target"] != "/_stats"]


def wait_recorded(port: int, want: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + HANG_GUARD
    while True:
        seen = recorded(port)
        if len(seen) >= want or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def start(loop: LoopThread, plan: Plan, observer: Recorder | None = None) -> tuple[HttpProxy, int]:
    async def go() -> tuple[HttpProxy, int]:
        proxy = HttpProxy(Fixed(plan), observer=observer)
        return proxy, await proxy.start("127.0.0.1", 0)

    return loop.run(go())  # type: ignore[no-any-return]


def test_shadow_authority_goes_before_the_port() -> None:
    assert shadow_authority(b"reviews:9080") == b"reviews-shadow:9080"
    assert shadow_authority(b"reviews") == b"reviews-shadow"
    assert shadow_authority(b"[::1]:80") == b"[::1]-shadow:80"


def test_mirror_sends_a_copy_with_shadow_authority_and_ignores_its_answer(
    procs: Procs, loop: LoopThread
) -> None:
    main, mirror = procs.backend("main"), procs.backend("mirror")
    plan = Forward(cluster(main.port, "main"), mirror=(cluster(mirror.port, "mirror"), 100.0))
    proxy, port = start(loop, plan)
    try:
        sock = connect(port)
        try:
            sock.sendall(b"GET /status/500 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
            reply = read_reply(sock)
            assert reply.status == 500 and reply.headers["x-backend"] == "main"
            body = b"x" * 3000
            sock.sendall(b"POST /count HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 3000\r\n\r\n" + body)
            reply = read_reply(sock)
            assert reply.status == 200 and json.loads(reply.body)["length"] == 3000
        finally:
            sock.close()
        copies = wait_recorded(mirror.port, 2)
        assert [(c["method"], c["target"]) for c in copies] == [("GET", "/status/500"), ("POST", "/count")]
        assert all(c["headers"]["host"] == "reviews-shadow:9080" for c in copies)  # type: ignore[index]
        assert copies[1]["body"] == 3000
        originals = recorded(main.port)
        assert all(c["headers"]["host"] == "reviews:9080" for c in originals)  # type: ignore[index]
    finally:
        loop.run(proxy.close(grace=0.5))


def test_a_mirror_that_never_answers_or_is_down_does_not_hold_the_response(
    procs: Procs, loop: LoopThread
) -> None:
    main = procs.backend("main")
    silent = socket.socket()  # accepts connections (kernel backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    down = socket.socket()  # bound, not listening: connection refused
    down.bind(("127.0.0.1", 0))
    try:
        for target in (silent, down):
            plan = Forward(cluster(main.port, "main"),
                           mirror=(cluster(target.getsockname()[1], "shadow"), 100.0))
            proxy, port = start(loop, plan)
            try:
                sock = connect(port)
                try:
                    for _ in range(3):
                        assert get(port, "/hello", sock).body == b"hello from main"
                finally:
                    sock.close()
            finally:
                loop.run(proxy.close(grace=0.2))
    finally:
        silent.close()
        down.close()


def test_fault_delay_holds_the_request_and_is_reported(procs: Procs, loop: LoopThread) -> None:
    main = procs.backend("main")
    observer = Recorder()
    delay = 0.2
    proxy, port = start(loop, Forward(cluster(main.port, "main"), delay=delay, route="r1"), observer)
    try:
        sock = connect(port)
        try:
            body = bytes(range(256)) * 400  # 100 KiB: read (and held back) during the delay
            sock.sendall(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            reply = read_reply(sock)
            assert reply.status == 200 and json.loads(reply.body)["length"] == len(body)
        finally:
            sock.close()
        infos = loop.call(lambda: list(observer.requests))
    finally:
        loop.run(proxy.close(grace=0.5))
    [info] = infos
    assert info.flags == "DI" and info.status == 200 and info.route == "r1" and info.cluster == "main"
    # A lower bound only: libuv timers have millisecond granularity.
    assert info.duration >= delay - 0.002
    assert info.request_bytes == len(body)


def test_observer_hears_each_request_once_with_its_facts(procs: Procs, loop: LoopThread) -> None:
    main = procs.backend("main")
    observer = Recorder()
    proxy, port = start(loop, Forward(cluster(main.port, "outbound|80||main"), route="default"), observer)
    try:
        sock = connect(port)
        try:
            assert get(port, "/hello?x=1", sock).status == 200
            assert get(port, "/status/503", sock).status == 503  # retried? no policy: answered as is
        finally:
            sock.close()
        gone = connect(port)  # a client that leaves while its request is in flight
        gone.sendall(b"GET /slow?s=30 HTTP/1.1\r\nHost: test\r\n\r\n")
        wait_recorded(main.port, 3)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()  # a reset: the client is gone, not merely done sending
        deadline = time.monotonic() + HANG_GUARD
        while loop.call(lambda: len(observer.requests)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        infos = loop.call(lambda: list(observer.requests))
    finally:
        loop.run(proxy.close(grace=0.5))
    assert [(i.method, i.path, i.status, i.flags) for i in infos] == [
        (b"GET", b"/hello?x=1", 200, ""),
        (b"GET", b"/status/503", 503, ""),
        (b"GET", b"/slow?s=30", 0, "DC"),
    ]
    first = infos[0]
    assert first.authority == b"test" and first.cluster == "outbound|80||main" and first.route == "default"
    assert first.upstream == f"127.0.0.1:{main.port}" and first.attempts == 1
    assert first.response_bytes == len(b"hello from main") and first.request_bytes == 0
    assert first.source == "127.0.0.1" and first.duration >= 0
    assert first.request is not None and first.request.head.startswith(b"GET /hello?x=1 ")


def test_tcp_observer_sees_open_and_close_with_byte_counts(procs: Procs, loop: LoopThread) -> None:
    echo = procs.backend("echo", tcp=True)
    observer = Recorder()

    async def go() -> tuple[TcpProxy, int]:
        proxy = TcpProxy(cluster(echo.port, "tcp-echo"), observer=observer)
        return proxy, await proxy.start("127.0.0.1", 0)

    proxy, port = loop.run(go())
    try:
        sock = connect(port)
        try:
            sock.sendall(b"ping" * 100)
            got = b""
            while len(got) < 400:
                got += sock.recv(65536)
            opened = loop.call(lambda: list(observer.opened))
        finally:
            sock.close()
        deadline = time.monotonic() + HANG_GUARD
        while not loop.call(lambda: list(observer.closed)) and time.monotonic() < deadline:
            time.sleep(0.02)
        closed = loop.call(lambda: list(observer.closed))
    finally:
        loop.run(proxy.close())
    assert [o.upstream for o in opened] == [f"127.0.0.1:{echo.port}"]
    [info] = closed
    assert info is opened[0] and info.cluster == "tcp-echo"
    assert info.bytes_received == 400 and info.bytes_sent == 400 and info.flags == ""


def test_a_private_reason_is_logged_but_never_sent(loop: LoopThread) -> None:
    """Security refusals name policies: the access log keeps the reason, the client gets none."""
    for private in (False, True):
        recorder = Recorder()
        denial = DirectResponse(status=403, body=b"RBAC: access denied", reason="policy[deny-admin]", private=private)
        proxy, port = start(loop, denial, recorder)
        try:
            reply = get(port, "/admin")
            assert reply.status == 403 and reply.body == b"RBAC: access denied"
            assert ("x-meshwork-reason" in reply.headers) is not private, reply.headers
            deadline = time.monotonic() + HANG_GUARD
            while not recorder.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            assert recorder.requests[0].reason == "policy[deny-admin]"
        finally:
            loop.run(proxy.close(grace=0.5))
