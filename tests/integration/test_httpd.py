"""meshwork.httpd over real loopback sockets, on plain asyncio and on uvloop.

Every server listens on port 0 and is closed in a finally. Waits are bounded
by HANG_GUARD only, to fail instead of hanging; no assertion depends on how
fast this machine is.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvloop

from meshwork.httpd import HttpServer, Request, Response, StreamingResponse

pytestmark = pytest.mark.integration

HANG_GUARD = 30.0  # seconds: only to turn a hang into a failure


def _load_bad_requests() -> ModuleType:
    name = "meshwork_tests_bad_requests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "unit" / "core" / "bad_requests.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _load_bad_requests()


def run(loop_kind: str, scenario: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(scenario(), HANG_GUARD)

    if loop_kind == "uvloop":
        uvloop.run(guarded())
    else:
        asyncio.run(guarded())


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serving(
    handler: Callable[[Request], Awaitable[Any]], **kw: Any
) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, **kw)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(grace=1.0)


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def get(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None


async def read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.lower(), value.strip()))
    return int(status), headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
    data = await reader.readexactly(size)
    assert await reader.readexactly(2) == b"\r\n"
    if not size:
        return b""
    return data


async def read_reply(reader: asyncio.StreamReader, *, head_only: bool = False) -> Reply:
    status, headers = await read_head(reader)
    reply = Reply(status, headers, b"")
    if head_only or status < 200 or status in (204, 304):
        return reply
    if reply.get("content-length") is not None:
        reply.body = await reader.readexactly(int(reply.get("content-length") or 0))
    elif reply.get("transfer-encoding") == "chunked":
        parts = []
        while chunk := await read_chunk(reader):
            parts.append(chunk)
        reply.body = b"".join(parts)
    else:
        reply.body = await reader.read()
    return reply


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed: EOF (or a reset) with no further bytes."""
    try:
        return await reader.read(1) == b""
    except ConnectionError:
        return True


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


async def echo(request: Request) -> Response:
    body = f"{request.method} {request.path} {sorted(request.query.items())} {len(request.body)}".encode()
    return Response(
        200, body, headers=[("X-Peer-Port", str(request.peer[1] if request.peer else 0))]
    )


# --- Keep-alive, pipelining, framing --------------------------------------------------


def test_keep_alive_reuses_the_connection(loop_kind: str) -> None:
    async def scenario() -> None:
        async with serving(echo) as server, connect(server.port) as (reader, writer):
            ports = set()
            for i in range(3):
                writer.write(get(f"/n/{i}?a=1&a=2&b="))
                await writer.drain()
                reply = await read_reply(reader)
                assert reply.status == 200
                assert reply.body == f"GET /n/{i} [('a', ['1', '2']), ('b', [''])] 0".encode()
                assert reply.get("connection") is None
                assert reply.get("content-type") == "application/json"
                assert reply.get("date")
                ports.add(reply.get("x-peer-port"))
            assert len(ports) == 1

    run(loop_kind, scenario)


def test_pipelined_requests_are_answered_in_order(loop_kind: str) -> None:
    async def handler(request: Request) -> Response:
        n = int(request.path.rsplit("/", 1)[1])
        await asyncio.sleep(0.01 * (5 - n))  # the first ones take longest
        return Response(200, request.path.encode(), content_type=None)

    async def scenario() -> None:
        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(b"".join(get(f"/p/{i}") for i in range(5)))
            await writer.drain()
            bodies = [(await read_reply(reader)).body for _ in range(5)]
            assert bodies == [f"/p/{i}".encode() for i in range(5)]

    run(loop_kind, scenario)


def test_request_bodies_content_length_and_chunked(loop_kind: str) -> None:
    async def scenario() -> None:
        async with serving(echo) as server, connect(server.port) as (reader, writer):
            writer.write(b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            writer.write(
                b"PUT /ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nX-Trailer: 1\r\n\r\n"
            )
            await writer.drain()
            assert (await read_reply(reader)).body == b"POST /cl [] 5"
            assert (await read_reply(reader)).body == b"PUT /ch [] 7"

    run(loop_kind, scenario)


def test_head_has_no_body_and_framing_survives(loop_kind: str) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, b"twelve bytes", content_type="text/plain")

    async def scenario() -> None:
        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get())
            await writer.drain()
            head = await read_reply(reader, head_only=True)
            assert head.status == 200 and head.get("content-length") == "12"
            after = await read_reply(reader)
            assert after.body == b"twelve bytes"

    run("asyncio", scenario)


def test_no_content_statuses_have_no_length(loop_kind: str) -> None:
    async def handler(request: Request) -> Response:
        return Response(204, b"ignored")

    async def scenario() -> None:
        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(get() + get())
            await writer.drain()
            for _ in range(2):
                reply = await read_reply(reader)
                assert reply.status == 204
                assert reply.get("content-length") is None and reply.get("content-type") is None

    run(loop_kind, scenario)


def test_expect_100_continue(loop_kind: str) -> None:
    async def scenario() -> None:
        async with serving(echo) as server, connect(server.port) as (reader, writer):
            writer.write(
                b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
            )
            await writer.drain()
            interim = await read_reply(reader)
            assert interim.status == 100
            writer.write(b"abc")
            await writer.drain()
            assert (await read_reply(reader)).body == b"POST /e [] 3"

    run(loop_kind, scenario)


def test_http10_close_and_keep_alive(loop_kind: str) -> None:
    async def scenario() -> None:
        async with serving(echo) as server:
            async with connect(server.port) as (reader, writer):
                writer.write(b"GET /a HTTP/1.0\r\n\r\n")
                reply = await read_reply(reader)
                assert reply.get("connection") == "close"
                assert await closed(reader)
            async with connect(server.port) as (reader, writer):
                for _ in range(2):
                    writer.write(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                    reply = await read_reply(reader)
                    assert reply.status == 200 and reply.get("connection") == "keep-alive"

    run(loop_kind, scenario)


def test_keepalive_off_closes_after_each_response(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            serving(echo, keepalive=False) as server,
            connect(server.port) as (reader, writer),
        ):
            writer.write(get() + get("/never"))
            reply = await read_reply(reader)
            assert reply.get("connection") == "close"
            assert await closed(reader)

    run(loop_kind, scenario)


# --- Refusals -----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request.target)
        return Response(200, b"ok")


async def _expect_refusal(port: int, raw: bytes, status: int) -> None:
    async with connect(port) as (reader, writer):
        writer.write(raw)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the server may stop reading a huge request; the answer must still come
        reply = await read_reply(reader)
        assert reply.status == status, reply.body
        assert reply.get("connection") == "close"
        assert reply.get("content-type") == "text/plain; charset=utf-8"
        assert reply.body.endswith(b"\n")
        assert await closed(reader)


@pytest.mark.parametrize("case", bad.BAD_REQUESTS, ids=lambda c: f"row{c.row}-{c.id}")
def test_bad_request_table_over_a_socket(case: Any) -> None:  # a bad_requests.BadRequestCase
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(recorder) as server:
            await _expect_refusal(server.port, case.raw, case.status)
        assert recorder.seen == []  # nothing reached a handler, pipelined bytes included

    run("asyncio", scenario)


def test_bad_request_table_on_uvloop() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(recorder) as server:
            for case in bad.BAD_REQUESTS:
                await _expect_refusal(server.port, case.raw, case.status)
        assert recorder.seen == []

    run("uvloop", scenario)


def test_body_over_max_body_is_413_before_the_body(loop_kind: str) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(recorder, max_body=1000) as server:
            # The body is never sent: the answer comes from Content-Length alone.
            await _expect_refusal(
                server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413
            )
            await _expect_refusal(
                server.port,
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"
                + b"a" * 1000
                + b"\r\n1\r\n",
                413,
            )
            async with connect(server.port) as (reader, writer):
                writer.write(
                    b"POST /fits HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000
                )
                assert (await read_reply(reader)).status == 200
        assert recorder.seen == ["/fits"]

    run(loop_kind, scenario)


def test_handler_exception_is_500_and_the_server_keeps_serving(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("kaboom")
        if request.path == "/bad-header":
            return Response(200, headers=[("X-Evil", "a\r\nInjected: 1")])
        return Response(200, b"fine")

    async def scenario() -> None:
        async with serving(handler) as server:
            async with connect(server.port) as (reader, writer):
                writer.write(get("/boom") + get("/ok"))
                first = await read_reply(reader)
                assert first.status == 500 and first.get("connection") is None
                assert (await read_reply(reader)).body == b"fine"
            async with connect(server.port) as (reader, writer):
                writer.write(get("/bad-header"))
                reply = await read_reply(reader)
                assert reply.status == 500 and reply.get("injected") is None
                assert await closed(reader)
            async with connect(server.port) as (reader, writer):
                writer.write(get("/ok"))
                assert (await read_reply(reader)).status == 200

    with caplog.at_level(logging.ERROR, logger="meshwork.httpd"):
        run(loop_kind, scenario)
    assert any(
        "kaboom" in (r.exc_text or "") or "kaboom" in str(r.exc_info) for r in caplog.records
    )


# --- Timeouts -----------------------------------------------------------------------------


def test_slowloris_gets_408(loop_kind: str) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        async with (
            serving(recorder, headers_timeout=0.3) as server,
            connect(server.port) as (reader, writer),
        ):
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")

            async def trickle() -> None:  # a byte now and then never extends the deadline
                try:
                    while True:
                        writer.write(b"X")
                        await asyncio.sleep(0.05)
                except (ConnectionError, RuntimeError):
                    pass

            dripping = asyncio.create_task(trickle())
            try:
                reply = await read_reply(reader)
            finally:
                dripping.cancel()
            assert reply.status == 408 and reply.get("connection") == "close"
            assert await closed(reader)
        assert recorder.seen == []

    run(loop_kind, scenario)


def test_stalled_body_gets_408(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            serving(echo, headers_timeout=0.3) as server,
            connect(server.port) as (reader, writer),
        ):
            writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            reply = await read_reply(reader)
            assert reply.status == 408
            assert await closed(reader)

    run(loop_kind, scenario)


def test_idle_keep_alive_connection_is_closed(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            serving(echo, idle_timeout=0.2) as server,
            connect(server.port) as (reader, writer),
        ):
            writer.write(get())
            assert (await read_reply(reader)).status == 200
            assert await reader.read() == b""  # closed with no answer at all

    run(loop_kind, scenario)


# --- Streaming ------------------------------------------------------------------------------


def test_streaming_is_incremental_and_closed_on_disconnect(loop_kind: str) -> None:
    async def scenario() -> None:
        got_first = asyncio.Event()
        finalized = asyncio.Event()

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b'{"type":"ADDED"}\n'
                await got_first.wait()  # the next one exists only after the client saw the first
                yield b'{"type":"MODIFIED"}\n'
                await asyncio.Future()  # a watch with nothing more to say
            finally:
                finalized.set()

        async def handler(request: Request) -> StreamingResponse:
            return StreamingResponse(200, events())

        async with serving(handler) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(get("/watch?watch=1"))
            status, headers = await read_head(reader)
            assert status == 200 and ("transfer-encoding", "chunked") in headers
            assert await read_chunk(reader) == b'{"type":"ADDED"}\n'
            got_first.set()
            assert await read_chunk(reader) == b'{"type":"MODIFIED"}\n'
            writer.close()
            await writer.wait_closed()
            await finalized.wait()

    run(loop_kind, scenario)


def test_stream_ends_and_connection_closes_when_the_client_half_closes(loop_kind: str) -> None:
    async def scenario() -> None:
        finalized = asyncio.Event()

        async def quiet() -> AsyncIterator[bytes]:
            try:
                yield b"hello\n"
                await asyncio.Future()
            finally:
                finalized.set()

        async def handler(request: Request) -> StreamingResponse:
            return StreamingResponse(200, quiet())

        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(get("/watch"))
            await read_head(reader)
            assert await read_chunk(reader) == b"hello\n"
            writer.write_eof()
            await finalized.wait()
            assert await reader.read() == b""  # the server closed its side too

    run(loop_kind, scenario)


def test_server_close_ends_streams_cleanly(loop_kind: str) -> None:
    async def scenario() -> None:
        finalized = asyncio.Event()

        async def forever() -> AsyncIterator[bytes]:
            try:
                yield b"first\n"
                await asyncio.Future()
            finally:
                finalized.set()

        async def handler(request: Request) -> StreamingResponse:
            return StreamingResponse(200, forever(), content_type="text/plain")

        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        try:
            async with connect(server.port) as (reader, writer):
                writer.write(get("/watch"))
                await read_head(reader)
                assert await read_chunk(reader) == b"first\n"
                await server.close(grace=5.0)
                assert await read_chunk(reader) == b""  # the terminating chunk: a clean end
                assert await closed(reader)
            assert finalized.is_set()
        finally:
            await server.close(grace=0)

    run(loop_kind, scenario)


def test_streaming_to_http10_is_delimited_by_close() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b""
        yield b"b"

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(200, chunks())

    async def scenario() -> None:
        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            reply = await read_reply(reader)
            assert reply.body == b"ab" and reply.get("connection") == "close"
            assert reply.get("transfer-encoding") is None

    run("asyncio", scenario)


# --- Graceful close and flow control ------------------------------------------------------


def test_graceful_close_finishes_in_flight_and_drops_idle(loop_kind: str) -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        async def handler(request: Request) -> Response:
            if request.path == "/slow":
                started.set()
                await release.wait()
                return Response(200, b"done")
            return Response(200, b"quick")

        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        try:
            async with (
                connect(server.port) as (idle_r, idle_w),
                connect(server.port) as (slow_r, slow_w),
            ):
                idle_w.write(get("/quick"))
                assert (await read_reply(idle_r)).body == b"quick"
                slow_w.write(get("/slow"))
                await started.wait()
                closing = asyncio.create_task(server.close(grace=HANG_GUARD))
                # The idle keep-alive connection is closed at once; the slow one runs on.
                assert await closed(idle_r)
                assert not closing.done()
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", server.port)
                release.set()
                reply = await read_reply(slow_r)
                assert reply.body == b"done" and reply.get("connection") == "close"
                assert await closed(slow_r)
                await closing
        finally:
            await server.close(grace=0)

    run(loop_kind, scenario)


def test_close_grace_expiry_aborts_what_is_left() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def handler(request: Request) -> Response:
            started.set()
            try:
                await asyncio.Future()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return Response(200)  # pragma: no cover

        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        async with connect(server.port) as (reader, writer):
            writer.write(get())
            await started.wait()
            await server.close(grace=0.1)
            assert cancelled.is_set()
            assert await closed(reader)

    run("asyncio", scenario)


def test_slow_reader_pauses_the_pipeline(loop_kind: str) -> None:
    big = b"x" * (16 * 1024 * 1024)  # far beyond what loopback socket buffers absorb

    async def scenario() -> None:
        seen: list[str] = []

        async def handler(request: Request) -> Response:
            seen.append(request.path)
            return Response(200, big if request.path == "/big" else b"small", content_type=None)

        async with serving(handler) as server, connect(server.port) as (reader, writer):
            writer.write(get("/big") + get("/after"))
            await writer.drain()
            for _ in range(20):  # give the server every chance to (wrongly) run /after early
                await asyncio.sleep(0.01)
            assert seen == ["/big"]
            first = await read_reply(reader)
            assert len(first.body) == len(big)
            assert (await read_reply(reader)).body == b"small"
            assert seen == ["/big", "/after"]

    run(loop_kind, scenario)


# --- TLS ------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(loop_kind: str, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def handler(request: Request) -> Response:
        assert request.ssl_object is not None
        return Response(200, str(request.ssl_object.version()).encode())

    async def scenario() -> None:
        server = HttpServer(handler)
        await server.start("127.0.0.1", 0, ssl=server_ctx)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=client_ctx, server_hostname="localhost"
            )
            for _ in range(2):
                writer.write(get())
                reply = await read_reply(reader)
                assert reply.status == 200 and reply.body.startswith(b"TLS")
            writer.write(b"GET / HTTP/1.1\r\n\r\n")  # no Host: refused, then closed
            assert (await read_reply(reader)).status == 400
            assert await closed(reader)
            writer.close()
        finally:
            await server.close(grace=1.0)

    run(loop_kind, scenario)
