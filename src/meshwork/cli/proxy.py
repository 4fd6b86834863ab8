"""``meshwork proxy``: the data-plane proxy on its own, with a fixed upstream list.

What lives here: the click command and its option parsing only. The engine
(``meshwork.proxy``) is imported when the command runs, so ``meshwork``'s
other commands never load it.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import click

__all__ = ["proxy_cmd"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return (host.strip("[]") or "0.0.0.0"), int(port)


@click.command("proxy")
@click.option("--listen", "listen", required=True, help="HOST:PORT to listen on (PORT alone means 127.0.0.1).")
@click.option("--upstream", "upstream", required=True, help="H:P[,H:P...] to forward to.")
@click.option(
    "--lb",
    type=click.Choice(["round_robin", "least_request", "random"]),
    default="round_robin",
    show_default=True,
    help="Load balancer over the upstreams (least_request: power of two choices).",
)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes sharing the port (SO_REUSEPORT).")
@click.option("--mode", type=click.Choice(["http", "tcp"]), default="http", show_default=True,
              help="http: HTTP/1.1 proxy; tcp: splice bytes to an upstream.")
@click.option("--access-log", "access_log", default=None, metavar="PATH|-",
              help="Write one JSON line per request (Envoy's fields); off by default.")
@click.option("--timeout", type=float, default=None,
              help="Seconds from the end of a request to the response head (504 UT); none by default.")
@click.option("--per-try-timeout", type=float, default=None, help="Seconds per attempt.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Retries on connect-failure and 503 (Istio's default policy).")
@click.option("--idle-timeout", type=float, default=3600.0, show_default=True,
              help="Close idle client connections after this many seconds.")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True)
@click.option("--metrics", "metrics", default=None, metavar="HOST:PORT",
              help="Count every request (Istio's standard metrics) and serve them at "
                   "http://HOST:PORT/stats/prometheus (PORT 0: any free port, printed); off by default.")
def proxy_cmd(
    listen: str,
    upstream: str,
    lb: str,
    workers: int,
    mode: str,
    access_log: str | None,
    timeout: float | None,
    per_try_timeout: float | None,
    retries: int,
    idle_timeout: float,
    connect_timeout: float,
    metrics: str | None,
) -> None:
    """Run the proxy in front of UPSTREAMs, without the control plane."""
    from dataclasses import replace

    from meshwork.proxy import server as srv
    from meshwork.proxy.plan import DEFAULT_LIMITS
    from meshwork.proxy.static import (
        ISTIO_DEFAULT_RETRIES,
        StaticCluster,
        StaticDecider,
        parse_endpoints,
    )

    host, port = _host_port(listen)
    metrics_at = _host_port(metrics) if metrics is not None else None
    try:
        endpoints = parse_endpoints(upstream)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--upstream") from exc
    limits = replace(DEFAULT_LIMITS, connect_timeout=connect_timeout)
    policy = replace(ISTIO_DEFAULT_RETRIES, attempts=retries, per_try_timeout=per_try_timeout)

    async def serve(sock: socket.socket, stop: asyncio.Event) -> None:
        from meshwork.proxy.tcp import TcpProxy

        cluster = StaticCluster(endpoints, lb, limits=limits)  # type: ignore[arg-type]
        proxy: srv.HttpProxy | TcpProxy
        if mode == "tcp":
            proxy = TcpProxy(cluster)
            await proxy.start(host, port, sock=sock)
            await stop.wait()
            await proxy.close()
            return
        log = srv.AccessLog.open(access_log) if access_log else None
        decider = StaticDecider(cluster, timeout=timeout, retries=policy if retries else None)
        admin = None
        observer = None
        if metrics_at is not None:
            from meshwork.proxy.admin import AdminServer
            from meshwork.proxy.telemetry import MeshMetrics

            mesh_metrics = MeshMetrics()
            observer = mesh_metrics.observer("source")
            admin = AdminServer(mesh_metrics, ready=True)
            bound = await admin.start(*metrics_at)
            print(f"metrics at http://{metrics_at[0]}:{bound}/stats/prometheus", flush=True)
        proxy = srv.HttpProxy(decider, observer=observer, access_log=log, idle_timeout=idle_timeout)
        await proxy.start(sock=sock)
        await stop.wait()
        await proxy.close(grace=2.0)
        if admin is not None:
            await admin.close()

    scheme = "tcp" if mode == "tcp" else "http"

    def announce(bound: int) -> None:
        print(f"meshwork proxy listening on {scheme}://{host}:{bound} ({workers} worker{'s' if workers > 1 else ''})",
              flush=True)

    if workers == 1:
        try:
            sock = srv.listen_socket(host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        bound = int(sock.getsockname()[1])
        srv.run(serve, sock, on_ready=lambda: announce(bound))
        return
    try:
        status = srv.run_workers(serve, host, port, workers, announce=announce)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sys.exit(status)
