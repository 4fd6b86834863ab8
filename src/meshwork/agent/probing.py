"""Run the probe commands of ``meshwork.core.probes`` (the I/O half of the kubelet prober).

What lives here: ``run_probe(RunProbe) -> ProbeResult``. HTTP GET over plain
asyncio streams (TLS without verification for ``HTTPS``, as the kubelet
does), a TCP connect, an exec in its own process group. Every kind gives up
after ``RunProbe.timeout`` seconds; a timeout is a failure, not an error.

What must not: when probes run, thresholds, readiness or restarts (that is
``core/probes.ProbeTracker``).

Upstream behaviour kept (pkg/probe/{http,tcp,exec}):

* httpGet: 200-399 is success (3xx is not followed: the kubelet follows only
  same-host redirects and counts the rest as success with a warning); the
  body is read up to 10 KiB and is the message of a success; a failure says
  ``HTTP probe failed with statuscode: N`` and never carries the body.
  Transport errors read like Go's: ``Get "http://10.1.0.5:8080/healthz":
  dial tcp 10.1.0.5:8080: connect: connection refused``.
* tcpSocket: success when the connection opens; else ``dial tcp ...``.
* exec: exit status 0 is success; the combined output (at most 10 KiB) is the
  message; a timeout kills the command's process group and fails with
  ``command "..." timed out``; a command that cannot start is an error.
* grpc: not implemented (it needs an HTTP/2 client); the result is errored
  with a message that says so, which the tracker reports as "unknown state".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import ssl
import subprocess
from collections.abc import Mapping

import httptools

from meshwork.core.probes import (
    PROBE_USER_AGENT,
    ExecTarget,
    GRPCTarget,
    HTTPRequest,
    ProbeResult,
    RunProbe,
    TCPTarget,
    UnresolvedTarget,
)

__all__ = ["MAX_OUTPUT", "run_probe"]

# kubelet: maxRespBodyLength / maxReadLength = 10 KiB, for HTTP bodies and exec output.
MAX_OUTPUT = 10 * 1024
# A response head longer than this is refused (Go's default MaxResponseHeaderBytes is 1 MiB;
# a health endpoint never comes close).
_MAX_HEAD = 64 * 1024


async def run_probe(
    cmd: RunProbe, *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> ProbeResult:
    """Execute ``cmd`` and say how it went. Never raises for a probe that fails.

    ``env`` and ``cwd`` are the container's, used by exec probes only.
    """
    target = cmd.target
    if isinstance(target, UnresolvedTarget):
        return ProbeResult(cmd.probe, False, target.error, errored=True)
    if isinstance(target, HTTPRequest):
        ok, message = await _http_probe(target, cmd.timeout)
        return ProbeResult(cmd.probe, ok, message)
    if isinstance(target, TCPTarget):
        ok, message = await _tcp_probe(target, cmd.timeout)
        return ProbeResult(cmd.probe, ok, message)
    if isinstance(target, ExecTarget):
        return await _exec_probe(cmd, target, env, cwd)
    if isinstance(target, GRPCTarget):
        return ProbeResult(
            cmd.probe,
            False,
            f"grpc probe of {_hostport(target.host, target.port)} not supported by meshwork "
            "(no HTTP/2 client); use an httpGet, tcpSocket or exec probe",
            errored=True,
        )
    raise TypeError(f"unknown probe target {target!r}")


# ---------------------------------------------------------------------------
# Error text in Go's words
# ---------------------------------------------------------------------------


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error_text(exc: OSError) -> str:
    """Go spells errno strings in lower case ("connection refused")."""
    if exc.errno is not None:
        text = os.strerror(exc.errno)
        return text[:1].lower() + text[1:]
    return str(exc) or type(exc).__name__


def _dial_error(host: str, port: int, exc: OSError) -> str:
    return f"dial tcp {_hostport(host, port)}: connect: {_os_error_text(exc)}"


# ---------------------------------------------------------------------------
# httpGet
# ---------------------------------------------------------------------------


def _tls_context() -> ssl.SSLContext:
    # The kubelet's probe transport sets InsecureSkipVerify: probes check liveness, not identity.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request_bytes(req: HTTPRequest) -> bytes:
    path = req.path if req.path.startswith("/") else "/" + req.path
    host = next((v for n, v in req.headers if n.lower() == "host"), _hostport(req.host, req.port))
    lines = [f"{req.method} {path} HTTP/1.1", f"Host: {host}"]
    names = set()
    for name, value in req.headers:
        if name.lower() == "host":
            continue
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {PROBE_USER_AGENT}")
    # The kubelet's transport disables keep-alive, so Go sends "Connection: close".
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Response:
    """Collects one response from httptools' callbacks."""

    def __init__(self) -> None:
        self.head_done = False
        self.complete = False
        self.body = bytearray()
        self.truncated = False

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, data: bytes) -> None:
        room = MAX_OUTPUT - len(self.body)
        if len(data) > room:
            self.truncated = True
        self.body += data[: max(room, 0)]

    def on_message_complete(self) -> None:
        self.complete = True


async def _http_probe(req: HTTPRequest, timeout: float) -> tuple[bool, str]:
    prefix = f'Get "{req.url}"'
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    writer: asyncio.StreamWriter | None = None

    async def exchange() -> None:
        nonlocal writer
        reader, writer = await asyncio.open_connection(
            req.host,
            req.port,
            ssl=_tls_context() if req.scheme == "https" else None,
            server_hostname="" if req.scheme == "https" else None,
        )
        writer.write(_request_bytes(req))
        await writer.drain()
        seen = 0
        while not response.complete and not response.truncated:
            data = await reader.read(16 * 1024)
            if not data:
                if response.head_done:
                    # Read-until-close bodies end here (httptools wants to be told).
                    with contextlib.suppress(httptools.HttpParserError):
                        parser.feed_data(b"")
                    response.complete = True
                    return
                raise EOFError
            seen += len(data)
            if not response.head_done and seen > _MAX_HEAD:
                raise ValueError("server response headers exceeded 65536 bytes; aborted")
            parser.feed_data(data)

    try:
        await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        if response.head_done:
            return False, (f"{prefix}: context deadline exceeded "
                           "(Client.Timeout or context cancellation while reading body)")  # fmt: skip
        return (
            False,
            f"{prefix}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
        )
    except EOFError:
        return False, f"{prefix}: EOF"
    except httptools.HttpParserError as exc:
        return (
            False,
            f"{prefix}: net/http: HTTP/1.x transport connection broken: malformed HTTP response ({exc})",
        )
    except ssl.SSLError as exc:
        return False, f"{prefix}: tls: {exc.reason or exc}"
    except ValueError as exc:
        return False, f"{prefix}: net/http: {exc}"
    except ConnectionResetError as exc:
        return (
            False,
            f"{prefix}: read tcp {_hostport(req.host, req.port)}: read: {_os_error_text(exc)}",
        )
    except OSError as exc:
        if response.head_done or writer is not None:
            return (
                False,
                f"{prefix}: read tcp {_hostport(req.host, req.port)}: {_os_error_text(exc)}",
            )
        return False, f"{prefix}: {_dial_error(req.host, req.port, exc)}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    status = int(parser.get_status_code())
    body = response.body.decode("utf-8", "replace")
    if 200 <= status < 300:
        return True, body
    if 300 <= status < 400:
        return True, f"Probe terminated redirects, Response body: {body}"
    return False, f"HTTP probe failed with statuscode: {status}"


# ---------------------------------------------------------------------------
# tcpSocket
# ---------------------------------------------------------------------------


async def _tcp_probe(target: TCPTarget, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), timeout
        )
    except TimeoutError:
        return False, f"dial tcp {_hostport(target.host, target.port)}: i/o timeout"
    except OSError as exc:
        return False, _dial_error(target.host, target.port, exc)
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    return True, ""


# ---------------------------------------------------------------------------
# exec
# ---------------------------------------------------------------------------


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _exited(pid: int) -> None:
    """Wait until ``pid`` ends (its leftover children may keep running and holding pipes)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _exec_probe(
    cmd: RunProbe, target: ExecTarget, env: Mapping[str, str] | None, cwd: str | None
) -> ProbeResult:
    argv = list(target.command)
    if not argv:
        return ProbeResult(cmd.probe, False, "exec probe has no command", errored=True)
    # subprocess.Popen takes the vfork path (cheap from a big agent process); the
    # output pipe and the exit are watched on the loop, with no thread.
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    except FileNotFoundError:
        os.close(read_fd)
        where = "in $PATH" if "/" not in argv[0] else ""
        text = f'exec: "{argv[0]}": executable file not found {where}'.rstrip()
        if cwd is not None and not os.path.isdir(cwd):
            text = f'chdir to cwd ("{cwd}") set in config.json failed: no such file or directory'
        return ProbeResult(cmd.probe, False, text, errored=True)
    except PermissionError as exc:
        os.close(read_fd)
        return ProbeResult(cmd.probe, False, f'exec: "{argv[0]}": {_os_error_text(exc)}',
                           errored=True)  # fmt: skip
    except OSError as exc:
        os.close(read_fd)
        if exc.errno == errno.ENOEXEC:
            return ProbeResult(cmd.probe, False, f'exec: "{argv[0]}": exec format error',
                               errored=True)  # fmt: skip
        raise
    finally:
        os.close(write_fd)
    os.set_blocking(read_fd, False)
    output = bytearray()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(read_fd, 16 * 1024)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                loop.remove_reader(read_fd)
                return
            room = MAX_OUTPUT - len(output)
            if room > 0:
                output.extend(chunk[:room])

    loop.add_reader(read_fd, drain)
    try:
        await asyncio.wait_for(_exited(proc.pid), cmd.timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        proc.wait()
        return ProbeResult(cmd.probe, False, f'command "{" ".join(argv)}" timed out')
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        # A child left in the background may still hold the pipe: end the group, then read.
        _kill_group(proc.pid)
        drain()
        loop.remove_reader(read_fd)
        os.close(read_fd)
    status = proc.wait()
    text = output.decode("utf-8", "replace")
    return ProbeResult(cmd.probe, status == 0, text)
