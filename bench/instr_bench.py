"""User-space instructions per proxied request, counted by callgrind: a figure that does not flake.

Timings on this shared 2-core machine move by ±15 % between runs; instruction
counts do not (valgrind counts the same total with the other core busy). This
bench runs each proxy under ``valgrind --tool=callgrind`` in front of 3 nginx
backends, sends a warm-up, zeroes the counters, sends exactly N small GETs over
8 kept-alive connections, dumps the counters, and prints instructions per
request for: haproxy (the reference), ``meshwork proxy --metrics`` with the
compiled hot path (``meshwork._accel``), and the same proxy interpreted
(``MESHWORK_PURE=1``). Kernel time (about two thirds of every proxy's CPU
here: loopback TCP and syscalls) is not counted: this is the part a proxy's
own code decides. The timed comparison is ``bench.proxy_bench``.

Run: ``.venv/bin/python -m bench.instr_bench [--requests N]`` (about a minute).
Needs valgrind, haproxy and nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from meshwork import _accel

BACKENDS = (39101, 39102, 39103)
PROXY_PORT = 39100
REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:39100\r\n\r\n"

NGINX_CONF = """daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type text/plain; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path {d}/t_cb; proxy_temp_path {d}/t_px; fastcgi_temp_path {d}/t_fc;
  uwsgi_temp_path {d}/t_uw; scgi_temp_path {d}/t_sc;
{servers}
}}
"""
NGINX_SERVER = '  server {{ listen 127.0.0.1:{port}; add_header X-Backend b{i} always; location = /small {{ return 200 "hello from b{i}\\n"; }} }}'
HAPROXY_CONF = """global
  nbthread 1
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  balance roundrobin
{servers}
"""


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout:.0f} s")


async def _load(port: int, total: int, conns: int = 8) -> None:
    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
            i = head.lower().find(b"content-length:")
            await reader.readexactly(int(head[i + 15 : head.find(b"\r\n", i)]))
        writer.close()

    await asyncio.gather(*(one(total // conns) for _ in range(conns)))


def _measure(argv: list[str], workdir: Path, name: str, requests: int, env: dict[str, str] | None = None) -> float:
    out = workdir / f"{name}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    with _process([*valgrind, *argv], env=env, log=workdir / f"{name}.log") as proc:
        _wait_port(PROXY_PORT, 120)
        asyncio.run(_load(PROXY_PORT, 800))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        asyncio.run(_load(PROXY_PORT, requests))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        time.sleep(0.5)
    dumps = sorted(workdir.glob(f"{name}.callgrind.*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {name}")
    for line in dumps[0].read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1]) / requests
    raise RuntimeError(f"no totals in {dumps[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000)
    args = ap.parse_args()
    missing = [t for t in ("valgrind", "callgrind_control", "nginx", "haproxy") if _tool(t) is None]
    if missing:
        print(f"instruction bench skipped: missing {', '.join(missing)}")
        return 0
    upstreams = ",".join(f"127.0.0.1:{p}" for p in BACKENDS)
    ours = [sys.executable, "-m", "meshwork", "proxy", "--listen", f"127.0.0.1:{PROXY_PORT}",
            "--upstream", upstreams, "--metrics", "127.0.0.1:0"]
    compiled = _accel.compiled_files(_accel.build_dir()) is not None
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="meshwork-instr-") as tmp:
        work = Path(tmp)
        servers = "\n".join(NGINX_SERVER.format(port=p, i=i) for i, p in enumerate(BACKENDS))
        (work / "nginx.conf").write_text(NGINX_CONF.format(d=work, servers=servers))
        backend_lines = "\n".join(f"  server b{i} 127.0.0.1:{p}" for i, p in enumerate(BACKENDS))
        (work / "haproxy.cfg").write_text(HAPROXY_CONF.format(port=PROXY_PORT, servers=backend_lines))
        with _process([str(_tool("nginx")), "-p", str(work), "-c", str(work / "nginx.conf")]):
            _wait_port(BACKENDS[-1], 10)
            rows.append(("haproxy", _measure([str(_tool("haproxy")), "-f", str(work / "haproxy.cfg")],
                                             work, "haproxy", args.requests)))
            pure_env = {**os.environ, "MESHWORK_PURE": "1"}
            if compiled:
                rows.append(("meshwork (compiled)", _measure(ours, work, "compiled", args.requests)))
            rows.append(("meshwork (interpreted)", _measure(ours, work, "pure", args.requests, env=pure_env)))
    ref = rows[0][1]
    print(f"user-space instructions per proxied request (callgrind, {args.requests} small GETs, 8 connections,"
          " 3 nginx backends; routing, round robin and Istio metrics on for meshwork)")
    print(f"| {'target':<24} | {'instructions/request':>21} | {'x haproxy':>9} |")
    print(f"|{'-' * 26}|{'-' * 23}|{'-' * 11}|")
    for name, n in rows:
        print(f"| {name:<24} | {n:>21,.0f} | {n / ref:>9.2f} |")
    if not compiled:
        print("no compiled build for these sources (make install builds it): only the interpreted proxy ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
