"""``meshwork sidecar``: the proxy fed by the control plane (what the injected istio-proxy runs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import click

__all__ = ["sidecar_cmd", "standby"]


def standby(name: str) -> None:
    """A node agent's spare proxy (``agent.standby``): do the imports (and first-use work) a pod's
    proxy would wait for, then wait on the abstract socket ``name`` for the environment and working
    directory of the pod this process will serve, and take them. Exits when the agent closes first."""
    import json
    import socket

    import meshwork.cli.config
    import meshwork.cli.context  # the command line's session, built before any command runs
    import meshwork.proxy.inbound
    import meshwork.proxy.sidecar
    import meshwork.proxy.workers  # what `meshwork sidecar` imports
    from meshwork.proxy.workloadcert import make_csr

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401
    make_csr()  # OpenSSL's first use (the proxy makes its own key when it asks for its certificate)
    _build_models()
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect("\0" + name[1:] if name.startswith("@") else name)
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        sys.exit(0)
    if not data:
        sys.exit(0)  # the agent went away (or dropped this spare) before a pod took it
    import time

    meshwork.proxy.sidecar.HANDED_OVER_AT = time.monotonic()
    doc = json.loads(data)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in doc["env"].items()})
    os.chdir(doc["cwd"])


def _build_models() -> None:
    """Build the validators of the kinds a snapshot carries (built on first use otherwise)."""
    from meshwork.model.istio_networking import Gateway, ServiceEntry
    from meshwork.model.istio_routing import VirtualService
    from meshwork.model.istio_traffic import DestinationRule

    for model in (VirtualService, DestinationRule, Gateway, ServiceEntry):
        with contextlib.suppress(Exception):
            model.model_rebuild(force=True)


def _ports(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, _, listen = part.partition(":")
        if not service.isdigit() or (listen and not listen.isdigit()):
            raise click.BadParameter(f"{part!r}: give PORT or SERVICEPORT:LISTENPORT", param_hint="--ports")
        out[int(service)] = int(listen or service)
    return out


@click.command("sidecar")
@click.option("--server", envvar="MESHWORK_SERVER", required=True, help="API server URL.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), envvar="MESHWORK_TOKEN_FILE",
              default=None, help="File holding the bearer token (else MESHWORK_TOKEN).")  # fmt: skip
@click.option("--role", type=click.Choice(["sidecar", "gateway"]), default="sidecar", show_default=True)
@click.option("--pod", envvar="POD_NAME", required=True, help="This pod's name (POD_NAME).")
@click.option("--namespace", envvar="POD_NAMESPACE", required=True, help="This pod's namespace (POD_NAMESPACE).")
@click.option("--ip", envvar="INSTANCE_IP", required=True, help="This pod's IP (INSTANCE_IP).")
@click.option("--listen-host", default=None, help="Address to listen on (default: the pod IP; gateways: 127.0.0.1).")
@click.option("--ports", default="80:8080,443:8443", show_default=True,
              help="Gateway: Gateway server port -> port to listen on.")  # fmt: skip
@click.option("--labels", default=None, help="Gateway without a pod: its labels, k=v,...")
@click.option("--access-log", envvar="MESHWORK_ACCESS_LOG", default=None, metavar="PATH|-",
              help="One JSON line per request, Envoy's fields (- for stdout); off by default.")  # fmt: skip
@click.option("--pod-ports", envvar="ISTIO_META_POD_PORTS", default=None,
              help="The app's container ports, a JSON list (ISTIO_META_POD_PORTS, set by injection).")  # fmt: skip
@click.option("--app-ip", envvar="MESHWORK_APP_IP", default=None,
              help="The app's own address (set by the agent): the sidecar takes the app's ports on the pod IP "
                   "and forwards there (inbound capture).")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Gateway: processes sharing its ports (SO_REUSEPORT) [default: the cores, at most 4; "
                   "sidecars: 1].")  # fmt: skip
def sidecar_cmd(server: str, token_file: Path | None, role: str, pod: str, namespace: str, ip: str,
                listen_host: str | None, ports: str, labels: str | None, access_log: str | None, pod_ports: str | None,
                app_ip: str | None, workers: int | None) -> None:  # fmt: skip
    """Run the mesh proxy for one pod (sidecar) or as an ingress gateway."""
    from meshwork.proxy.inbound import parse_pod_ports
    from meshwork.proxy.sidecar import Sidecar, SidecarOptions
    from meshwork.proxy.workers import default_workers, run_gateway

    if workers is None:
        workers = default_workers(role)
    elif workers > 1 and role != "gateway":
        raise click.BadParameter("only a gateway runs several workers (a sidecar serves one pod)",
                                 param_hint="--workers")  # fmt: skip

    try:
        app_ports = parse_pod_ports(pod_ports)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pod-ports") from exc

    token = token_file.read_text().strip() if token_file else os.environ.get("MESHWORK_TOKEN", "")
    if not token:
        raise click.UsageError("give --token-file or MESHWORK_TOKEN")
    kind = "router" if role == "gateway" else "sidecar"
    proxy_id = f"{kind}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"
    host = listen_host or ("127.0.0.1" if role == "gateway" else ip)
    logging.basicConfig(level=os.environ.get("MESHWORK_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    options = SidecarOptions(server=server, token=token, proxy_id=proxy_id, listen_host=host, role=role,
                             gateway_ports=_ports(ports) if role == "gateway" else {}, labels=labels,
                             admin_host=ip, access_log=access_log, pod_ports=app_ports, pod_ip=ip,
                             app_ip=app_ip if role == "sidecar" else None)  # fmt: skip
    if workers > 1:
        sys.exit(run_gateway(options, workers))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        sidecar = Sidecar(options)
        runner = asyncio.create_task(sidecar.run(stop))
        await stop.wait()
        runner.cancel()
        await sidecar.close()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
