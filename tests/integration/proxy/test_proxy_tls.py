"""TLS in the proxy engine over real sockets and real handshakes.

Proxies run on an event loop in a thread of this process (plain asyncio and
uvloop, as production runs); clients are blocking sockets wrapped by Python's
ssl module in the test thread. Certificates come from ``tests/support/pki``:
a mesh root with SPIFFE leaves, an expired leaf, a leaf from a foreign root.
The "app" behind a mesh listener is often the proxy itself answering with a
``DirectResponse`` that spells out the ``Downstream`` it was given, so a test
reads what the engine saw (TLS or not, the client's principal) from the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest
import uvloop
from proxytools import HANG_GUARD, LoopThread, read_reply

from meshwork.core.http1 import Request
from meshwork.proxy.observe import ConnectionInfo, RequestInfo
from meshwork.proxy.plan import DirectResponse, Downstream, Endpoint, Forward, Plan, UpstreamTls
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.static import StaticCluster
from meshwork.proxy.tls import ContextHolder, ListenerTls, TlsMode, client_context, server_context
from support.pki import Leaf, Pki, client_hello, spiffe

pytestmark = pytest.mark.integration

SLEEP = spiffe("sleep")
REVIEWS = spiffe("reviews")
RATINGS = spiffe("ratings")


class UvLoopThread(LoopThread):
    def __init__(self) -> None:  # the same thread, with uvloop's loop
        import threading

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    lt = LoopThread() if request.param == "asyncio" else UvLoopThread()
    try:
        yield lt
    finally:
        lt.stop()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def leaves(pki: Pki) -> dict[str, Leaf]:
    return {"sleep": pki.leaf(SLEEP), "reviews": pki.leaf(REVIEWS), "ratings": pki.leaf(RATINGS)}


class Echo:
    """A decider answering every request itself with what it knows of the downstream."""

    def __init__(self) -> None:
        self.seen: list[Downstream] = []

    def decide(self, request: Request, downstream: Downstream) -> Plan:
        self.seen.append(downstream)
        body = f"tls={downstream.tls} principal={downstream.principal} sni={downstream.sni}"
        return DirectResponse(200, body.encode())


class Recorder:
    def __init__(self) -> None:
        self.requests: list[RequestInfo] = []

    def request_done(self, info: RequestInfo) -> None:
        self.requests.append(info)

    def connection_opened(self, info: ConnectionInfo) -> None:
        pass

    def connection_closed(self, info: ConnectionInfo) -> None:
        pass


def mesh_server(pki: Pki, leaf: Leaf) -> ssl.SSLContext:
    return server_context(leaf.cert_pem, leaf.key_pem, pki.bundle)


def mesh_client(pki: Pki, leaf: Leaf | None) -> ssl.SSLContext:
    if leaf is None:
        return client_context(pki.bundle)
    return client_context(pki.bundle, leaf.cert_pem, leaf.key_pem)


def start(loop: LoopThread, decider: object, tls: ListenerTls | None, **kw: object) -> tuple[HttpProxy, int]:
    async def go() -> tuple[HttpProxy, int]:
        proxy = HttpProxy(decider, **kw)  # type: ignore[arg-type]
        return proxy, await proxy.start("127.0.0.1", 0, tls=tls)

    return loop.run(go())  # type: ignore[no-any-return]


def tls_connect(port: int, ctx: ssl.SSLContext, sni: str | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def ask(sock: socket.socket, path: str = "/") -> tuple[int, str]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
    reply = read_reply(sock)
    return reply.status, reply.body.decode()


def served_serial(sock: ssl.SSLSocket) -> int:
    cert = sock.getpeercert()
    assert cert, "the server's certificate was not verified"
    return int(str(cert["serialNumber"]), 16)


def nothing_comes_back(sock: socket.socket) -> bool:
    """True when the peer closes (or resets) without sending a byte."""
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True


def close(loop: LoopThread, *proxies: HttpProxy) -> None:
    for p in proxies:
        loop.run(p.close(0.5))


# --- STRICT ----------------------------------------------------------------------------------


def test_strict_closes_a_plaintext_client_without_an_answer(loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]) -> None:
    tls = ListenerTls(TlsMode.STRICT, ContextHolder(mesh_server(pki, leaves["reviews"])))
    proxy, port = start(loop, Echo(), tls)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            assert nothing_comes_back(sock)
        assert loop.call(lambda: proxy.tls_stats["plaintext_refused"]) == 1
    finally:
        close(loop, proxy)


@pytest.mark.parametrize("client", ["no certificate", "expired", "foreign root"])
def test_strict_refuses_clients_without_a_valid_mesh_certificate(
    loop: LoopThread, pki: Pki, leaves: dict[str, Leaf], client: str
) -> None:
    echo = Echo()
    tls = ListenerTls(TlsMode.STRICT, ContextHolder(mesh_server(pki, leaves["reviews"])))
    proxy, port = start(loop, echo, tls)
    leaf = {"no certificate": None, "expired": pki.leaf(SLEEP, expired=True), "foreign root": Pki().leaf(SLEEP)}[client]
    try:
        # TLS 1.3: the client finishes its side first; the server's verdict arrives as an alert.
        with contextlib.suppress(ssl.SSLError, ConnectionResetError), tls_connect(port, mesh_client(pki, leaf)) as s:
            with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
                s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            assert nothing_comes_back(s)
        assert echo.seen == []
        assert loop.call(lambda: proxy.tls_stats["handshake_failures"]) == 1
    finally:
        close(loop, proxy)


def test_strict_serves_a_mesh_client_and_the_decider_sees_its_principal(
    loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]
) -> None:
    echo = Echo()
    tls = ListenerTls(TlsMode.STRICT, ContextHolder(mesh_server(pki, leaves["reviews"])))
    proxy, port = start(loop, echo, tls)
    try:
        with tls_connect(port, mesh_client(pki, leaves["sleep"])) as s:
            assert s.selected_alpn_protocol() == "istio-http/1.1"
            assert s.version() == "TLSv1.3"
            assert ask(s) == (200, "tls=True principal=cluster.local/ns/default/sa/sleep sni=None")
            assert ask(s)[0] == 200
        assert len(echo.seen) == 2
        assert echo.seen[0] is echo.seen[1]  # one Downstream per connection, not per request
        assert echo.seen[0].port == port and echo.seen[0].address == "127.0.0.1"
    finally:
        close(loop, proxy)


# --- PERMISSIVE and DISABLE ------------------------------------------------------------------------


def test_permissive_takes_mutual_tls_and_plaintext(loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]) -> None:
    tls = ListenerTls(TlsMode.PERMISSIVE, ContextHolder(mesh_server(pki, leaves["reviews"])))
    proxy, port = start(loop, Echo(), tls)
    try:
        with tls_connect(port, mesh_client(pki, leaves["sleep"])) as s:
            assert ask(s) == (200, "tls=True principal=cluster.local/ns/default/sa/sleep sni=None")
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as p:
            assert ask(p) == (200, "tls=False principal=None sni=None")
            assert ask(p)[0] == 200
        # The mode is read per connection: switch to STRICT and plaintext is refused from now on.
        tls.mode = TlsMode.STRICT
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as p:
            p.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            assert nothing_comes_back(p)
        tls.mode = TlsMode.DISABLE
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as p:
            assert ask(p) == (200, "tls=False principal=None sni=None")
        stats = loop.call(lambda: dict(proxy.tls_stats))
        assert stats["tls"] == 1 and stats["plaintext"] == 2 and stats["plaintext_refused"] == 1
    finally:
        close(loop, proxy)


# --- rotation ------------------------------------------------------------------------------------


def test_swapping_the_context_keeps_old_connections_and_serves_new_ones_the_new_certificate(
    loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]
) -> None:
    old, new = leaves["reviews"], pki.leaf(REVIEWS)
    holder = ContextHolder(mesh_server(pki, old))
    proxy, port = start(loop, Echo(), ListenerTls(TlsMode.STRICT, holder))
    client = mesh_client(pki, leaves["sleep"])
    try:
        with tls_connect(port, client) as before:
            assert ask(before)[0] == 200
            assert served_serial(before) == old.serial
            holder.swap(mesh_server(pki, new))
            with tls_connect(port, client) as after:
                assert served_serial(after) == new.serial
                assert ask(after)[0] == 200
            assert ask(before)[0] == 200  # the connection opened before the swap still works
            assert served_serial(before) == old.serial
    finally:
        close(loop, proxy)


# --- upstream TLS ---------------------------------------------------------------------------------


def test_upstream_mutual_tls_and_plaintext_to_one_address_never_share_connections(
    loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]
) -> None:
    # The destination: a PERMISSIVE listener that says how each request reached it.
    inbound, in_port = start(loop, Echo(), ListenerTls(TlsMode.PERMISSIVE, ContextHolder(mesh_server(pki, leaves["reviews"]))))
    upstream_tls = UpstreamTls(ContextHolder(mesh_client(pki, leaves["sleep"])), identities=frozenset({REVIEWS}))
    mtls = StaticCluster([Endpoint("127.0.0.1", in_port, tls=upstream_tls)], name="mtls")
    plain = StaticCluster([Endpoint("127.0.0.1", in_port)], name="plain")

    class ByPath:
        def decide(self, request: Request, downstream: Downstream) -> Plan:
            return Forward(mtls if request.target.startswith(b"/mtls") else plain)

    outbound, out_port = start(loop, ByPath(), None)
    try:
        with socket.create_connection(("127.0.0.1", out_port), timeout=HANG_GUARD) as c:
            for _ in range(3):  # alternate over kept-alive pools: each answer must come the way it was sent
                assert ask(c, "/mtls") == (200, "tls=True principal=cluster.local/ns/default/sa/sleep sni=None")
                assert ask(c, "/plain") == (200, "tls=False principal=None sni=None")
        pools = loop.call(lambda: {k: p.connects for k, p in outbound.pools.items()})
        assert len(pools) == 2 and all(n == 1 for n in pools.values())  # one connection each, reused
    finally:
        close(loop, outbound, inbound)


def test_upstream_san_mismatch_is_a_503_connect_failure(loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]) -> None:
    inbound, in_port = start(loop, Echo(), ListenerTls(TlsMode.STRICT, ContextHolder(mesh_server(pki, leaves["ratings"]))))
    wanted = UpstreamTls(ContextHolder(mesh_client(pki, leaves["sleep"])), identities=frozenset({REVIEWS}))
    cluster = StaticCluster([Endpoint("127.0.0.1", in_port, tls=wanted)], name="reviews")
    recorder = Recorder()

    class To:
        def decide(self, request: Request, downstream: Downstream) -> Plan:
            return Forward(cluster)

    outbound, out_port = start(loop, To(), None, observer=recorder)
    try:
        with socket.create_connection(("127.0.0.1", out_port), timeout=HANG_GUARD) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            reply = read_reply(c)
        assert reply.status == 503
        assert b"TLS error: SAN mismatch" in reply.body and RATINGS.encode() in reply.body
        info = loop.call(lambda: recorder.requests[-1])
        assert info.flags == "UF" and "SAN mismatch" in info.reason
    finally:
        close(loop, outbound, inbound)


def test_upstream_tls_to_an_untrusted_server_is_a_connect_failure(
    loop: LoopThread, pki: Pki, leaves: dict[str, Leaf]
) -> None:
    foreign = Pki()
    inbound, in_port = start(loop, Echo(), ListenerTls(TlsMode.STRICT, ContextHolder(mesh_server(foreign, foreign.leaf(REVIEWS)))))
    wanted = UpstreamTls(ContextHolder(mesh_client(pki, leaves["sleep"])), identities=frozenset({REVIEWS}))
    cluster = StaticCluster([Endpoint("127.0.0.1", in_port, tls=wanted)], name="reviews")

    class To:
        def decide(self, request: Request, downstream: Downstream) -> Plan:
            return Forward(cluster)

    outbound, out_port = start(loop, To(), None)
    try:
        with socket.create_connection(("127.0.0.1", out_port), timeout=HANG_GUARD) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            reply = read_reply(c)
        assert reply.status == 503 and b"CERTIFICATE_VERIFY_FAILED" in reply.body
    finally:
        close(loop, outbound, inbound)


# --- gateways: SNI ---------------------------------------------------------------------------------


def test_sni_picks_the_certificate(loop: LoopThread, pki: Pki) -> None:
    certs = {name: pki.leaf(dns=(name,)) for name in ("a.example.com", "b.example.com", "*.shop.example.com", "default.example.com")}

    def simple(leaf: Leaf) -> ContextHolder:
        return ContextHolder(server_context(leaf.cert_pem, leaf.key_pem, require_client_cert=False, alpn=("http/1.1",)))

    tls = ListenerTls(
        TlsMode.STRICT,
        simple(certs["default.example.com"]),
        by_sni={name: simple(certs[name]) for name in ("a.example.com", "b.example.com", "*.shop.example.com")},
    )
    echo = Echo()
    proxy, port = start(loop, echo, tls)
    client = ssl.create_default_context(cadata=pki.bundle.decode())
    try:
        for sni, want in [("a.example.com", "a.example.com"), ("b.example.com", "b.example.com"),
                          ("cart.shop.example.com", "*.shop.example.com")]:  # fmt: skip
            with tls_connect(port, client, sni) as s:  # the client checks the name against the certificate too
                assert served_serial(s) == certs[want].serial
                assert ask(s) == (200, f"tls=True principal=None sni={sni}")
        other = ssl.create_default_context(cadata=pki.bundle.decode())
        other.check_hostname = False
        with tls_connect(port, other, "unknown.example.org") as s:
            assert served_serial(s) == certs["default.example.com"].serial
    finally:
        close(loop, proxy)


def test_passthrough_forwards_the_tls_bytes_untouched(loop: LoopThread, pki: Pki) -> None:
    backend_leaf = pki.leaf(dns=("pass.example.com",))
    seen = bytearray()

    async def backend() -> tuple[asyncio.Server, asyncio.Server]:
        ctx = server_context(backend_leaf.cert_pem, backend_leaf.key_pem, require_client_cert=False, alpn=())

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nbackend")
                await writer.drain()
            writer.close()

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                seen.extend(data)
            writer.close()

        return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx), await asyncio.start_server(record, "127.0.0.1", 0)

    tls_backend, raw_backend = loop.run(backend())
    clusters = {
        "pass.example.com": StaticCluster([Endpoint("127.0.0.1", tls_backend.sockets[0].getsockname()[1])], name="pass"),
        "raw.example.com": StaticCluster([Endpoint("127.0.0.1", raw_backend.sockets[0].getsockname()[1])], name="raw"),
    }
    gateway_leaf = pki.leaf(dns=("gateway.example.com",))
    tls = ListenerTls(
        TlsMode.STRICT,
        ContextHolder(server_context(gateway_leaf.cert_pem, gateway_leaf.key_pem, require_client_cert=False)),
        passthrough=lambda sni: clusters.get(sni or ""),
    )
    proxy, port = start(loop, Echo(), tls)
    try:
        client = ssl.create_default_context(cadata=pki.bundle.decode())
        with tls_connect(port, client, "pass.example.com") as s:
            assert served_serial(s) == backend_leaf.serial  # the backend's own certificate, end to end
            assert ask(s) == (200, "backend")
        # Byte for byte: a real ClientHello and whatever follows reach the upstream as sent.
        hello = client_hello("raw.example.com")
        sent = hello + b"\x17\x03\x03\x00\x05abcde"
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as raw:
            raw.sendall(sent)
            raw.shutdown(socket.SHUT_WR)
            assert raw.recv(1024) == b""
        deadline = 200
        while bytes(seen) != sent and deadline:
            loop.run(asyncio.sleep(0.01))
            deadline -= 1
        assert bytes(seen) == sent
        assert loop.call(lambda: proxy.tls_stats["passthrough"]) == 2
        # A name nobody passes through terminates TLS here, with the gateway's certificate.
        other = ssl.create_default_context(cadata=pki.bundle.decode())
        with tls_connect(port, other, "gateway.example.com") as s:
            assert served_serial(s) == gateway_leaf.serial
    finally:
        close(loop, proxy)
        for server in (tls_backend, raw_backend):
            server.close()


