"""TLS cost in the proxy: plaintext vs TLS through it, one hop and a mesh hop, and the handshake.

Run: ``python -m bench.tls_bench [--duration S] [--conns N] [--rounds R]``.
Every proxy runs in its own forked process on uvloop (as ``meshwork proxy``
does); the backend is a meshwork listener that answers every request itself
(15 bytes), so it costs the same in every row. wrk drives the steady-state
rows (keep-alive, 64 connections, small body); a Python client drives the
handshake rows (a new connection per request, one at a time). Rows:

* ``plain 1 hop``: wrk -> proxy -> backend, all plaintext;
* ``tls 1 hop``: wrk -(TLS, server certificate only)-> proxy -> backend;
* ``plain 2 hops``: wrk -> outbound proxy -> inbound proxy -> backend (a sidecar pair without mTLS);
* ``mtls 2 hops``: the same with mutual TLS and the SAN check between the proxies (the mesh path);
* ``new conn plain`` / ``new conn mtls``: connect, (handshake,) one request, close; per-connection cost.

Proxy CPU is user+system time of the proxy processes over the run (from
/proc), per 1,000 requests; quote ratios between rows of one run, not
absolute numbers (2 shared cores: wrk, proxies and backend compete).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from meshwork.core.http1 import Request  # noqa: E402
from meshwork.proxy.plan import DirectResponse, Downstream, Endpoint, Forward, Plan, UpstreamTls  # noqa: E402
from meshwork.proxy.server import HttpProxy, listen_socket  # noqa: E402
from meshwork.proxy.static import StaticCluster  # noqa: E402
from meshwork.proxy.tls import (  # noqa: E402
    HTTP_ALPN,
    ContextHolder,
    ListenerTls,
    TlsMode,
    client_context,
    server_context,
)
from support.pki import Leaf, Pki, spiffe  # noqa: E402

REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"


class Hello:
    def decide(self, request: Request, downstream: Downstream) -> Plan:
        return DirectResponse(200, b"hello from b0\n")


class To:
    def __init__(self, endpoint: Endpoint) -> None:
        self.plan = Forward(StaticCluster([endpoint]), retries=None)

    def decide(self, request: Request, downstream: Downstream) -> Plan:
        return self.plan


def spawn(make: Callable[[], tuple[object, ListenerTls | None]]) -> tuple[int, int]:
    """Fork a proxy process on uvloop; returns (pid, port)."""
    sock = listen_socket("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            import uvloop

            async def main() -> None:
                decider, tls = make()
                proxy = HttpProxy(decider)  # type: ignore[arg-type]
                await proxy.start(sock=sock, tls=tls)
                stop = asyncio.Event()
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
                await stop.wait()

            uvloop.run(main())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    sock.close()
    return pid, port


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, ctx: ssl.SSLContext | None = None) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                s = ctx.wrap_socket(raw) if ctx is not None else raw
                s.sendall(REQUEST)
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"proxy on port {port} never answered")


def wrk(url: str, duration: int, conns: int) -> tuple[float, str, str]:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 30, check=True).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    return rps, p50, p99


def new_connections(port: int, ctx: ssl.SSLContext | None, seconds: float) -> int:
    """Connect, (handshake,) one request, close, for ``seconds``; how many were done."""
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            s = ctx.wrap_socket(raw) if ctx is not None else raw
            s.sendall(REQUEST)
            got = s.recv(200)
            assert got.startswith(b"HTTP/1.1 200"), got
            n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("tls bench skipped: wrk is missing")
        return 0
    pki = Pki()
    sleep, reviews = pki.leaf(spiffe("sleep")), pki.leaf(spiffe("reviews"))
    web: Leaf = pki.leaf(dns=("localhost",))

    def mesh_listener() -> ListenerTls:
        return ListenerTls(TlsMode.STRICT, ContextHolder(server_context(reviews.cert_pem, reviews.key_pem, pki.bundle)))

    def edge_listener() -> ListenerTls:
        ctx = server_context(web.cert_pem, web.key_pem, require_client_cert=False, alpn=HTTP_ALPN)
        return ListenerTls(TlsMode.STRICT, ContextHolder(ctx))

    pids: list[int] = []
    try:
        backend_pid, backend = spawn(lambda: (Hello(), None))
        pids.append(backend_pid)
        wait_ready(backend)
        b = Endpoint("127.0.0.1", backend)
        one_plain = spawn(lambda: (To(b), None))
        one_tls = spawn(lambda: (To(b), edge_listener()))
        in_plain = spawn(lambda: (To(b), None))
        in_mtls = spawn(lambda: (To(b), mesh_listener()))
        out_plain = spawn(lambda: (To(Endpoint("127.0.0.1", in_plain[1])), None))

        def mtls_out() -> tuple[object, None]:
            up = UpstreamTls(ContextHolder(client_context(pki.bundle, sleep.cert_pem, sleep.key_pem)),
                             identities=frozenset({spiffe("reviews")}))  # fmt: skip
            return To(Endpoint("127.0.0.1", in_mtls[1], tls=up)), None

        out_mtls = spawn(mtls_out)
        for pid, _ in (one_plain, one_tls, in_plain, in_mtls, out_plain, out_mtls):
            pids.append(pid)
        edge_client = ssl.create_default_context(cadata=pki.bundle.decode())
        edge_client.check_hostname = False
        mesh_client = client_context(pki.bundle, sleep.cert_pem, sleep.key_pem)
        for port, ctx in ((one_plain[1], None), (one_tls[1], edge_client), (out_plain[1], None),
                          (out_mtls[1], None), (in_mtls[1], mesh_client)):  # fmt: skip
            wait_ready(port, ctx)
        rows = [
            ("plain 1 hop", f"http://127.0.0.1:{one_plain[1]}/small", [one_plain[0]]),
            ("tls 1 hop", f"https://localhost:{one_tls[1]}/small", [one_tls[0]]),
            ("plain 2 hops", f"http://127.0.0.1:{out_plain[1]}/small", [out_plain[0], in_plain[0]]),
            ("mtls 2 hops", f"http://127.0.0.1:{out_mtls[1]}/small", [out_mtls[0], in_mtls[0]]),
        ]
        print(f"interpreter: {sys.executable} ({sys.version.split()[0]}), {ssl.OPENSSL_VERSION}")
        print(f"wrk -t1 -c{args.conns} -d{args.duration}s, small body, {args.rounds} round(s)\n")
        print("| row | req/s | p50 | p99 | proxy CPU ms per 1k req |")
        print("|---|---|---|---|---|")
        for _ in range(args.rounds):
            for name, url, who in rows:
                wrk(url, 2, args.conns)  # warm-up: pools and sessions
                before = cpu_seconds(who)
                rps, p50, p99 = wrk(url, args.duration, args.conns)
                cpu = cpu_seconds(who) - before
                print(f"| {name} | {rps:,.0f} | {p50} | {p99} | {cpu / (rps * args.duration) * 1e6:.1f} |", flush=True)
        print("\n| new connection per request (sequential) | conn/s | proxy CPU ms per connection |")
        print("|---|---|---|")
        for name, port, ctx, who in (("plain", in_plain[1], None, [in_plain[0]]),
                                     ("mtls (mesh handshake, ECDSA P-256)", in_mtls[1], mesh_client, [in_mtls[0]])):  # fmt: skip
            before = cpu_seconds(who)
            n = new_connections(port, ctx, args.duration / 2)
            cpu = cpu_seconds(who) - before
            print(f"| {name} | {n / (args.duration / 2):,.0f} | {cpu / n * 1e3:.2f} |", flush=True)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
