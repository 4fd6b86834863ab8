"""meshwork.agent.probing against real servers and processes on this machine.

Servers listen on port 0 of a 127.x address and are closed in a finally; exec
probes start real processes in their own group. HANG_GUARD only turns a hang
into a failure; no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from meshwork.agent.probing import MAX_OUTPUT, run_probe
from meshwork.core.probes import (
    PROBE_USER_AGENT,
    ExecTarget,
    GRPCTarget,
    HTTPRequest,
    ProbeKind,
    RunProbe,
    Target,
    TCPTarget,
    UnresolvedTarget,
)

pytestmark = pytest.mark.integration

HANG_GUARD = 30.0
HOST = "127.3.0.1"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(scenario(), HANG_GUARD)

    asyncio.run(guarded())


def probe(kind: ProbeKind, target: Target, timeout: float = 5.0) -> RunProbe:
    return RunProbe("liveness", kind, target, timeout)


def get(
    port: int, path: str, *, scheme: str = "http", headers: tuple[tuple[str, str], ...] = ()
) -> RunProbe:
    req = HTTPRequest("GET", "https" if scheme == "https" else "http", HOST, port, path, headers)
    return probe("httpGet", req)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server: the path picks the answer."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        if path == "/hang":
            await asyncio.sleep(3600)
        elif path == "/close":
            return
        elif path == "/echo":
            body = head
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")  # fmt: skip
        elif path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"x" * 50000)
        elif path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            body = b"" if code in (204, 304) else b"nope"
            writer.write(b"HTTP/1.1 %d X\r\nLocation: http://elsewhere.example/\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (code, len(body), body))  # fmt: skip
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def http_server(ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(_handle, HOST, 0, ssl=ssl_ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task() and task.get_coro().__name__ == "_handle":  # type: ignore[union-attr]
                task.cancel()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def test_http_success_returns_the_body() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(get(port, "/chunked"))
            assert result.success and not result.errored
            assert result.message == "abcdef"
            result = await run_probe(get(port, "/until-close"))
            assert result.success and result.message == "all of it"

    run(scenario)


def test_http_sends_probe_headers_and_user_agent() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(get(port, "/echo", headers=(("X-Custom", "yes"),)))
            assert result.success
            lines = result.message.split("\r\n")
            assert f"Host: {HOST}:{port}" in lines
            assert "X-Custom: yes" in lines
            assert f"User-Agent: {PROBE_USER_AGENT}" in lines
            custom = get(port, "/echo", headers=(("user-agent", "mine/1"), ("Host", "svc.local")))
            result = await run_probe(custom)
            lines = result.message.split("\r\n")
            assert "user-agent: mine/1" in lines and "Host: svc.local" in lines
            assert not any(line.startswith("User-Agent: kube-probe") for line in lines)

    run(scenario)


@pytest.mark.parametrize(("code", "success"), [(200, True), (204, True), (302, True), (399, True),
                                               (400, False), (404, False), (500, False)])  # fmt: skip
def test_http_status_ranges(code: int, success: bool) -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(get(port, f"/status/{code}"))
            assert result.success is success
            if not success:
                assert result.message == f"HTTP probe failed with statuscode: {code}"
                assert "nope" not in result.message  # never the body on failure
            elif 300 <= code:
                assert result.message.startswith("Probe terminated redirects")

    run(scenario)


def test_http_body_is_read_at_most_10k() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(get(port, "/big"))
            assert result.success
            assert len(result.message) == MAX_OUTPUT

    run(scenario)


def test_http_connection_refused_reads_like_kubelet() -> None:
    async def scenario() -> None:
        port = closed_port()
        result = await run_probe(get(port, "/healthz"))
        assert not result.success and not result.errored
        assert result.message == (
            f'Get "http://{HOST}:{port}/healthz": dial tcp {HOST}:{port}: connect: connection refused'
        )

    run(scenario)


def test_http_hanging_server_times_out() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(
                probe("httpGet", HTTPRequest("GET", "http", HOST, port, "/hang", ()), timeout=0.3)
            )
            assert not result.success and not result.errored
            assert result.message == (
                f'Get "http://{HOST}:{port}/hang": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )

    run(scenario)


def test_http_server_closing_without_answer_is_eof() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(get(port, "/close"))
            assert not result.success
            assert result.message == f'Get "http://{HOST}:{port}/close": EOF'

    run(scenario)


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return ctx


def test_https_does_not_verify_the_certificate(tmp_path: Path) -> None:
    ctx = _self_signed(tmp_path)

    async def scenario() -> None:
        async with http_server(ctx) as port:
            result = await run_probe(get(port, "/chunked", scheme="https"))
            assert result.success, result.message
            assert result.message == "abcdef"

    run(scenario)


def test_tcp_open_and_closed_ports() -> None:
    async def scenario() -> None:
        async with http_server() as port:
            result = await run_probe(probe("tcpSocket", TCPTarget(HOST, port)))
            assert result.success and result.message == ""
        port = closed_port()
        result = await run_probe(probe("tcpSocket", TCPTarget(HOST, port)))
        assert not result.success
        assert result.message == f"dial tcp {HOST}:{port}: connect: connection refused"

    run(scenario)


def test_exec_exit_status_and_output() -> None:
    async def scenario() -> None:
        ok = await run_probe(probe("exec", ExecTarget(("sh", "-c", "echo fine"))))
        assert ok.success and ok.message == "fine\n"
        bad = await run_probe(probe("exec", ExecTarget(("sh", "-c", "echo broken >&2; exit 1"))))
        assert not bad.success and not bad.errored
        assert bad.message == "broken\n"
        loud = await run_probe(
            probe("exec", ExecTarget(("sh", "-c", "yes | head -c 100000; exit 3")))
        )
        assert not loud.success and len(loud.message) == MAX_OUTPUT

    run(scenario)


def test_exec_uses_container_env_and_cwd(tmp_path: Path) -> None:
    async def scenario() -> None:
        result = await run_probe(
            probe("exec", ExecTarget(("sh", "-c", 'echo "$GREETING $(pwd)"'))),
            env={"GREETING": "hello", "PATH": os.environ["PATH"]},
            cwd=str(tmp_path),
        )
        assert result.success
        assert result.message == f"hello {tmp_path}\n"

    run(scenario)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_exec_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"

    async def scenario() -> None:
        # The shell starts a background sleeper (same group) and waits on it.
        script = f"sleep 3600 & echo $! > {pidfile}; wait"
        result = await run_probe(probe("exec", ExecTarget(("sh", "-c", script)), timeout=0.5))
        assert not result.success and not result.errored
        assert result.message == f'command "sh -c {script}" timed out'

    try:
        run(scenario)
        child = int(pidfile.read_text())
        # SIGKILL is delivered at once but the kernel reaps asynchronously: allow it a moment.
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the probe's background child survived the timeout"
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except (ProcessLookupError, ValueError):
                pass


def test_exec_background_child_does_not_hold_the_probe(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"

    async def scenario() -> None:
        script = f"sleep 3600 & echo $! > {pidfile}; echo done"
        result = await run_probe(probe("exec", ExecTarget(("sh", "-c", script)), timeout=20))
        assert result.success and result.message == "done\n"

    try:
        run(scenario)
        # SIGKILL is delivered asynchronously: give a loaded machine a moment to finish the job.
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid)
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except (ProcessLookupError, ValueError):
                pass


def test_exec_missing_binary_is_an_error() -> None:
    async def scenario() -> None:
        result = await run_probe(probe("exec", ExecTarget(("no-such-binary-xyz",))))
        assert result.errored and not result.success
        assert '"no-such-binary-xyz": executable file not found' in result.message

    run(scenario)


def test_unresolved_and_grpc_are_errored() -> None:
    async def scenario() -> None:
        result = await run_probe(
            probe("httpGet", UnresolvedTarget("couldn't find port: web in app"))
        )
        assert result.errored and result.message == "couldn't find port: web in app"
        result = await run_probe(probe("grpc", GRPCTarget(HOST, 9090, "")))
        assert result.errored and not result.success
        assert "grpc probe" in result.message and "not supported" in result.message

    run(scenario)
