"""The bind shim, compiled with the machine's cc and preloaded into real Python processes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshwork.agent.binding import (
    ADDRESS_ENV,
    PRELOAD_ENV,
    build_shim,
    low_port_problem,
    may_bind_low_ports,
    unprivileged_port_start,
)

pytestmark = pytest.mark.integration

# Binds what argv[1] (JSON) says, prints where each socket landed, then waits for stdin to close.
BINDER = r"""
import json, socket, sys
out = []
for family, host, port, v6only in json.loads(sys.argv[1]):
    s = socket.socket(getattr(socket, family))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((host, port))
    s.listen()
    out.append(list(s.getsockname()[:2]))
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine: the agent runs pods without the bind shim")
    built = build_shim(tmp_path_factory.mktemp("lib"))
    assert built.path is not None, built.problem
    return built.path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Binder:
    def __init__(self, env: dict[str, str], binds: list[tuple[str, str, int, int | None]]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BINDER, json.dumps(binds)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.communicate()[1]
        self.bound: list[list[object]] = json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def binders() -> Iterator[list[Binder]]:
    started: list[Binder] = []
    yield started
    for b in started:
        b.close()


def _env(shim: Path | None, address: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PRELOAD_ENV, ADDRESS_ENV)}
    if shim is not None:
        env[PRELOAD_ENV] = str(shim)
    if address is not None:
        env[ADDRESS_ENV] = address
    return env


def test_two_apps_on_0000_with_one_port_each_land_on_their_own_address(shim: Path, binders: list[Binder]) -> None:
    port = _free_port()
    for ip in ("127.77.0.5", "127.77.0.6"):
        binders.append(Binder(_env(shim, ip), [("AF_INET", "0.0.0.0", port, None)]))
        assert binders[-1].bound == [[ip, port]]
    for ip in ("127.77.0.5", "127.77.0.6"):  # each answers on its address, nothing on the wildcard
        with socket.create_connection((ip, port), timeout=5):
            pass
    with pytest.raises(OSError), socket.create_connection(("127.77.0.7", port), timeout=5):
        pass


def test_a_dual_stack_wildcard_becomes_the_mapped_address_and_the_rest_is_untouched(
        shim: Path, binders: list[Binder]) -> None:  # fmt: skip
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    p1, p2, p3 = _free_port(), _free_port(), _free_port()
    b = Binder(_env(shim, "127.77.1.9"), [
        ("AF_INET6", "::", p1, 0),  # dual-stack: would take the IPv4 port on every address
        ("AF_INET6", "::", p2, 1),  # IPv6 only: no pod IPv4 address to give it
        ("AF_INET", "127.0.0.1", p3, None),  # an explicit address is the app's choice
        ("AF_INET", "0.0.0.0", 0, None),  # port 0: a socket choosing its own source port
    ])  # fmt: skip
    binders.append(b)
    assert b.bound[:3] == [["::ffff:127.77.1.9", p1], ["::", p2], ["127.0.0.1", p3]]
    assert b.bound[3][0] == "0.0.0.0"


@pytest.mark.parametrize("address", [None, "", "not-an-ip", "::1"])
def test_without_a_usable_address_binds_are_left_alone(shim: Path, binders: list[Binder], address: str | None) -> None:
    port = _free_port()
    binders.append(Binder(_env(shim, address), [("AF_INET", "0.0.0.0", port, None)]))
    assert binders[-1].bound == [["0.0.0.0", port]]


def test_the_build_is_cached_and_atomic(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine")
    first = build_shim(tmp_path)
    assert first.path is not None and first.path.parent == tmp_path
    stamp = first.path.stat().st_mtime_ns
    again = build_shim(tmp_path, cc=["/nonexistent/cc"])  # cached: the compiler is not even asked
    assert again.path == first.path and first.path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no build leftovers


def test_without_a_compiler_there_is_no_library_and_a_reason(tmp_path: Path) -> None:
    built = build_shim(tmp_path / "lib", cc=["/nonexistent/cc"])
    assert built.path is None and built.problem and "/nonexistent/cc" in built.problem
    assert not any((tmp_path / "lib").glob("*.so"))
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
    broken.chmod(0o755)
    built = build_shim(tmp_path / "lib", cc=[str(broken)])
    assert built.path is None and built.problem and "internal error" in built.problem
    (tmp_path / "a-file").write_text("")
    built = build_shim(tmp_path / "a-file" / "lib")  # a data dir it cannot write: a reason, no crash
    assert built.path is None and built.problem and "a-file" in built.problem


def _as_user(uid: int) -> dict[str, str]:
    """In a forked child that dropped to ``uid``: its /proc status, and what binding port 80 did."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with open("/proc/self/status") as f:
                status = f.read()
            with socket.socket() as s:
                try:
                    s.bind(("127.77.2.1", 80))
                    error = ""
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            os.write(write, json.dumps({"status": status, "error": error}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    got: dict[str, str] = json.loads(data)
    return got


def test_port_80_as_an_unprivileged_user_is_denied_and_explained() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user (tests run as root here and in CI)")
    start = unprivileged_port_start()
    if start <= 80:
        pytest.skip(f"net.ipv4.ip_unprivileged_port_start is {start}: anyone may bind port 80 here")
    nobody = pwd.getpwnam("nobody").pw_uid
    got = _as_user(nobody)
    assert "Permission denied" in got["error"], got["error"]
    allowed = may_bind_low_ports(got["status"], nobody)
    assert allowed is False
    message = low_port_problem([80], got["error"].encode(), start=start, allowed=allowed, uid=nobody)
    assert message is not None and "port 80" in message and "CAP_NET_BIND_SERVICE" in message
    # The agent itself (root here) may: no message for its pods.
    with open("/proc/self/status") as f:
        assert may_bind_low_ports(f.read(), 0)
