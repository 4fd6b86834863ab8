"""The server lifecycle commands: ``server``, ``up`` and ``down``.

What lives here: ``meshwork server`` (run the control plane in this process),
``meshwork up`` (start it in the background if needed, wait until ready, apply
manifests, then either return or stream the log until Ctrl-C and stop it), and
``meshwork down`` (stop the server recorded in the pid file, leaving no
process behind).

What must not live here: process mechanics (``daemon``) or apply logic (``apply``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from meshwork.cli import daemon
from meshwork.cli.commands import file_option
from meshwork.cli.config import read_client_config
from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.resolve import load_kinds
from meshwork.client import Client
from meshwork.errors import ApiError

if TYPE_CHECKING:
    from meshwork.cli import apply as apply_mod

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7380
# How often the foreground `up` copies new server log lines to the terminal.
LOG_FOLLOW_INTERVAL_S = 0.2
LOG_CHUNK = 64 * 1024

host_option = click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on."
)
port_option = click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to listen on."
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where state lives (default: $MESHWORK_HOME or ~/.meshwork).",
)
store_option = click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="Store URL (default: SQLite in the data dir).",
)


def _data_dir(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit.expanduser()
    return session().data_dir


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@click.command("server")
@host_option
@port_option
@data_dir_option
@store_option
@click.option(
    "--controllers/--no-controllers",
    default=True,
    show_default=True,
    help="Run the built-in controllers (Deployment, ReplicaSet, Job, CronJob, Endpoints, scheduler).",
)
@click.option(
    "--agent/--no-agent",
    default=True,
    show_default=True,
    help="Run this machine's node agent, which runs the pods as processes.",
)
@click.option("--node-name", default=None, help="Name of this machine's node (default: the host name).")
@click.option(
    "--node-monitor-grace-period",
    "grace_period",
    default="40s",
    show_default=True,
    metavar="DURATION",
    help="How long a node may go without a heartbeat before it is marked Unknown and tainted unreachable.",
)
@click.option(
    "--pod-eviction-timeout",
    "eviction_timeout",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="How long pods stay on an unreachable or not-ready node (unless their tolerations say otherwise) "
    "before they are deleted and replaced elsewhere.",
)
@click.option(
    "--ingress-gateway/--no-ingress-gateway",
    "ingress_gateway",
    default=True,
    show_default=True,
    help="Create istio-system/istio-ingressgateway (needs --agent to run it).",
)
@click.option(
    "--ingress-host", default="127.0.0.1", show_default=True, help="Address the ingress gateway listens on."
)
@click.option(
    "--ingress-ports",
    default="80:8080,443:8443",
    show_default=True,
    metavar="PORT:HOSTPORT,...",
    help="Gateway server ports and the host ports the ingress gateway listens on for them.",
)
@click.option("--trust-domain", default="cluster.local", show_default=True,
              help="SPIFFE trust domain of workload identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).")
@click.option("--workload-cert-ttl", "cert_ttl", default="24h", show_default=True, metavar="DURATION",
              envvar="MESHWORK_WORKLOAD_CERT_TTL",
              help="Lifetime of workload certificates (1m at least); proxies renew them at half-life.")
@click.option("--ca-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A CA certificate (PEM, then any chain up to the root) to sign the mesh's intermediate; "
              "default: a self-signed root made at first start.")
@click.option("--ca-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The private key of --ca-cert (PEM).")
@reports_errors
def server_cmd(
    host: str,
    port: int,
    data_dir: Path | None,
    store_url: str | None,
    controllers: bool,
    agent: bool,
    node_name: str | None,
    grace_period: str,
    eviction_timeout: str,
    ingress_gateway: bool,
    ingress_host: str,
    ingress_ports: str,
    trust_domain: str,
    cert_ttl: str,
    ca_cert: Path | None,
    ca_key: Path | None,
) -> None:
    """Run the meshwork control plane in the foreground (SIGTERM or Ctrl-C stops it)."""
    from datetime import UTC, datetime

    from meshwork.control.ca import load_user_root
    from meshwork.control.ingress import parse_ports
    from meshwork.control.server import (
        CaOptions,
        lifecycle_config,
        parse_duration,
        run_server,
        workload_cert_ttl,
    )
    from meshwork.core.security.identity import SpiffeId

    if (ca_cert is None) != (ca_key is None):
        raise click.UsageError("--ca-cert and --ca-key go together")
    try:
        lifecycle = lifecycle_config(parse_duration(grace_period), parse_duration(eviction_timeout))
        parse_ports(ingress_ports)
        SpiffeId(trust_domain, "default", "default")
        ca = CaOptions(trust_domain, workload_cert_ttl(cert_ttl),
                       (ca_cert, ca_key) if ca_cert is not None and ca_key is not None else None)
        if ca.root is not None:
            load_user_root(*ca.root, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    load_kinds()
    run_server(
        host=host, port=port, data_dir=_data_dir(data_dir), store_url=store_url, controllers=controllers,
        agent=agent, node_name=node_name, lifecycle=lifecycle,
        ingress=f"{ingress_host}={ingress_ports}" if ingress_gateway and agent else None, ca=ca,
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while ``up`` runs in the foreground, so both stop the server."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _spinner(message: str) -> contextlib.AbstractContextManager[object]:
    """A spinner on a terminal; a plain line otherwise."""
    if sys.stderr.isatty():
        from rich.console import Console

        return Console(stderr=True).status(message)
    error(message)
    return contextlib.nullcontext()


def _follow(path: Path, offset: int, proc: subprocess.Popen[bytes]) -> int | None:
    """Copy new bytes of the log to stdout until the server exits; return its exit code."""
    out = sys.stdout.buffer
    with path.open("rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read(LOG_CHUNK)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            code = proc.poll()
            if code is not None:
                rest = f.read()
                if rest:
                    out.write(rest)
                    out.flush()
                return code
            time.sleep(LOG_FOLLOW_INTERVAL_S)


@click.command("up")
@file_option
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Return once the server is ready and the manifests applied.",
)
@click.option("-n", "--namespace", default=None, help="Namespace for manifests that name none.")
@host_option
@port_option
@data_dir_option
@store_option
@click.option("--ingress-host", default=None, help="Address the ingress gateway listens on (see `server`).")
@click.option(
    "--ingress-ports",
    default=None,
    metavar="PORT:HOSTPORT,...",
    help="Gateway server ports and the host ports the ingress gateway listens on for them (see `server`).",
)
@reports_errors
def up_cmd(
    files: tuple[str, ...],
    detach: bool,
    namespace: str | None,
    host: str,
    port: int,
    data_dir: Path | None,
    store_url: str | None,
    ingress_host: str | None,
    ingress_ports: str | None,
) -> None:
    """Start the server if it is not running, wait until it is ready, and apply manifests.

    Without -d, stay in the foreground showing the server log; Ctrl-C stops
    the server (if this command started it).
    """
    if port == 0:
        raise click.UsageError("`up` needs a fixed --port to wait on (0 picks one only for `server`)")
    from meshwork.cli import apply as apply_mod  # the models: only manifests need them

    directory = _data_dir(data_dir)
    desired: list[apply_mod.Desired] = []
    if files:
        load_kinds()
        # Validate everything before starting anything: a typo should not cost a server start.
        desired = apply_mod.plan(apply_mod.load(files), session().namespace(namespace))

    extra: list[str] = []
    if ingress_ports is not None:
        from meshwork.control.ingress import parse_ports

        try:
            parse_ports(ingress_ports)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--ingress-ports") from None
        extra += ["--ingress-ports", ingress_ports]
    if ingress_host is not None:
        extra += ["--ingress-host", ingress_host]

    existing = daemon.running_server(directory)
    proc: subprocess.Popen[bytes] | None = None
    offset = 0
    if existing is not None:
        config = read_client_config(directory)
        client = Client(config.server, config.token)
        error(f"meshwork server already running (pid {existing}) at {config.server}")
        if extra:
            error("--ingress-host and --ingress-ports take effect only when `up` starts the server")
        with _spinner("waiting for the meshwork server to be ready..."):
            daemon.wait_ready(client, None)
    else:
        proc, offset = daemon.start_server(directory, host=host, port=port, store_url=store_url, extra=extra)
        client = Client(_url(host, port), None)
        try:
            with (
                _sigterm_as_interrupt(),
                _spinner(f"starting the meshwork server on {client.server}..."),
            ):
                daemon.wait_ready(client, proc, directory)
        except (daemon.DaemonError, KeyboardInterrupt) as exc:
            daemon.stop_process(proc.pid, proc=proc)
            tail = daemon.log_tail(directory, offset)
            if isinstance(exc, KeyboardInterrupt):
                raise SystemExit(130) from None
            hint = ""
            if "address already in use" in tail.lower():
                hint = (
                    f"\nhint: another process listens on {host}:{port}; choose another with --port"
                )
            raise daemon.DaemonError(
                f"{exc}\n--- last lines of {directory / daemon.LOG_FILE} ---\n{tail}{hint}"
            ) from None
        config = read_client_config(directory)
        client = Client(config.server, config.token)

    if detach or proc is None:
        failures = apply_mod.apply_all(client, desired, echo=click.echo, error=error)
        _echo_gateway_urls(client, desired)
        if proc is not None:
            error(
                f"meshwork server running at {client.server} (pid {proc.pid}); "
                f"logs in {directory / daemon.LOG_FILE}; stop it with `meshwork down`"
            )
        elif not detach:
            error("the server was already running; it keeps running (stop it with `meshwork down`)")
        if failures:
            raise SystemExit(1)
        return
    _foreground(client, proc, directory, offset, desired)


def _foreground(
    client: Client,
    proc: subprocess.Popen[bytes],
    directory: Path,
    offset: int,
    desired: list[apply_mod.Desired],
) -> None:
    """Apply, then stream the server log until Ctrl-C (or SIGTERM); then stop the server.

    Whatever ends this command — an interrupt, an error while applying — the
    server it started is stopped, so no process is left behind.
    """
    from meshwork.cli import apply as apply_mod

    code: int | None = None
    failures = 0
    try:
        with _sigterm_as_interrupt():
            failures = apply_mod.apply_all(client, desired, echo=click.echo, error=error)
            _echo_gateway_urls(client, desired)
            error(
                f"meshwork server running at {client.server} (pid {proc.pid}); press Ctrl-C to stop it"
            )
            code = _follow(directory / daemon.LOG_FILE, offset, proc)
    except KeyboardInterrupt:
        pass
    finally:
        if code is None:
            error("stopping the meshwork server...")
            result = daemon.stop_process(proc.pid, proc=proc)
            error(f"meshwork server {result}")
    if code is not None:
        error(f"the meshwork server exited with code {code}")
        raise SystemExit(1 if code else 0)
    if failures:
        raise SystemExit(1)


def gateway_urls(desired: list[apply_mod.Desired], ingress: dict[str, Any]) -> list[str]:
    """Where to open each applied HTTP Gateway served by the ingress gateway ``ingress`` (its Service).

    The host port is the Service's targetPort for a Gateway port the Service
    names (80 -> 8080), else the Gateway port itself, as the gateway listens;
    the path is the first URI match of an applied VirtualService bound to the
    Gateway (``/productpage`` for bookinfo), else ``/``.
    """
    spec, status = ingress.get("spec") or {}, ingress.get("status") or {}
    targets = {p.get("port"): p.get("targetPort") for p in spec.get("ports") or []}
    lb = (status.get("loadBalancer") or {}).get("ingress") or [{}]
    host = lb[0].get("ip") or lb[0].get("hostname") or DEFAULT_HOST
    selector = spec.get("selector") or {}
    out = []
    for gw in (d for d in desired if d.info.kind == "Gateway"):
        gw_spec = gw.obj.get("spec") or {}
        wanted = gw_spec.get("selector") or {}
        if any(selector.get(k) != v for k, v in wanted.items()):
            continue
        names = {gw.name, f"{gw.namespace}/{gw.name}"}
        paths = [
            m["uri"].get("exact") or m["uri"].get("prefix")
            for vs in desired
            if vs.info.kind == "VirtualService" and names & set((vs.obj.get("spec") or {}).get("gateways") or [])
            for route in (vs.obj.get("spec") or {}).get("http") or []
            for m in route.get("match") or []
            if isinstance(m.get("uri"), dict)
        ]
        path = next((p for p in paths if p), "/")
        for server in gw_spec.get("servers") or []:
            protocol = str((server.get("port") or {}).get("protocol", "")).upper()
            if protocol not in ("HTTP", "HTTP2", "HTTPS"):
                continue
            number = server["port"].get("number")
            target = targets.get(number, number)
            scheme = "https" if protocol == "HTTPS" else "http"
            address = f"[{host}]" if ":" in host else host
            out.append(f"{scheme}://{address}:{target}{path}    (Gateway {gw.name}, port {number})")
    return out


def _echo_gateway_urls(client: Client, desired: list[apply_mod.Desired]) -> None:
    """Print where the applied Gateways answer, when this server runs the ingress gateway."""
    if not any(d.info.kind == "Gateway" for d in desired):
        return
    from meshwork.control.ingress import NAME, NAMESPACE
    from meshwork.model.kinds import REGISTRY

    info = REGISTRY.for_group_kind("", "Service")
    assert info is not None
    try:
        ingress = client.get(info, NAMESPACE, NAME)
    except ApiError:
        return  # no ingress gateway on this server (--no-ingress-gateway or --no-agent)
    for line in gateway_urls(desired, ingress):
        click.echo(f"open {line}")


@click.command("down")
@data_dir_option
@click.option(
    "--timeout",
    type=float,
    default=daemon.STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds before SIGKILL.",
)
@reports_errors
def down_cmd(data_dir: Path | None, timeout: float) -> None:
    """Stop the meshwork server running from this data dir (SIGTERM, then SIGKILL after --timeout)."""
    directory = _data_dir(data_dir)
    pid = daemon.read_pid(directory)
    if pid is None:
        click.echo(f"no meshwork server is running (no {directory / daemon.PID_FILE})")
        return
    if not daemon.process_alive(pid):
        daemon.remove_stale_pid_file(directory, pid)
        click.echo(f"no meshwork server is running (removed the stale pid file for pid {pid})")
        return
    if not daemon.is_meshwork_process(pid):
        raise daemon.DaemonError(
            f"pid {pid} in {directory / daemon.PID_FILE} is not a meshwork server; "
            "remove the stale file if no server runs"
        )
    result = daemon.stop_process(pid, timeout=timeout)
    daemon.remove_stale_pid_file(directory, pid)
    if result == "killed":
        click.echo(f"meshwork server (pid {pid}) did not stop within {timeout:.0f}s and was killed")
    else:
        click.echo(f"meshwork server (pid {pid}) stopped")


__all__ = ["down_cmd", "server_cmd", "up_cmd"]
