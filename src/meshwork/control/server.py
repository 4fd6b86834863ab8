"""``meshwork server``: the control-plane process.

Opens the store, starts the API server (watch cache, garbage collector) on
loopback by default, writes the admin token and the client config into the
data dir, and stops gracefully on SIGTERM or SIGINT: it stops accepting,
lets in-flight requests finish, ends watches, and closes the store so every
acknowledged write is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meshwork.control.api.certs import CertificateService
from meshwork.control.api.server import ApiServer
from meshwork.control.auth import ensure_data_dir, load_or_create_token
from meshwork.control.ca import CertificateAuthority
from meshwork.control.localagent import LocalAgent
from meshwork.control.pki import MIN_WORKLOAD_TTL, WORKLOAD_TTL
from meshwork.control.store.open import open_store
from meshwork.core.reconcile.nodelifecycle import LifecycleConfig
from meshwork.core.security.identity import DEFAULT_TRUST_DOMAIN
from meshwork.httpd import HttpServer
from meshwork.model.kinds import REGISTRY

log = logging.getLogger("meshwork.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7380
PID_FILE = "server.pid"
# In-flight requests get this long to finish after SIGTERM before the server closes.
SHUTDOWN_GRACE_S = 10.0
# Generation thresholds for the collector: the default (700, 10, 10) runs a
# young collection every few requests; a control plane allocates in bursts.
GC_THRESHOLDS = (50_000, 20, 100)
# A request body larger than this is refused with 413 (Kubernetes' own limit is 3 MiB).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
# Duration flags take Go's time.ParseDuration units, as kube-controller-manager's do.
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")


def parse_duration(text: str) -> float:
    """A duration flag in seconds: plain seconds ("40", "2.5") or units ("40s", "5m", "1h30m", "500ms")."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if _DURATION.fullmatch(value) is None:
            raise ValueError(f'invalid duration "{text}": use seconds ("40") or units ("40s", "5m", "1h")') from None
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f'invalid duration "{text}": must be a finite, non-negative time')
    return seconds


def lifecycle_config(grace_period: float | None = None, pod_eviction_timeout: float | None = None) -> LifecycleConfig:
    """The node lifecycle timings from the server flags (None: the default).

    Pod GC waits as long as the grace period before trusting that a pod's node
    is gone (upstream's quarantine has the same 40 s default).
    """
    base = LifecycleConfig()
    grace = base.grace_period if grace_period is None else grace_period
    return LifecycleConfig(
        grace_period=grace,
        startup_grace_period=max(base.startup_grace_period, grace),
        pod_eviction_timeout=base.pod_eviction_timeout if pod_eviction_timeout is None else pod_eviction_timeout,
        pod_gc_quarantine=grace,
    )


@dataclass(frozen=True, slots=True)
class CaOptions:
    """The server's CA flags: trust domain, workload certificate lifetime, a user's root (cert, key)."""

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    workload_cert_ttl: float = WORKLOAD_TTL.total_seconds()
    root: tuple[Path, Path] | None = None


def workload_cert_ttl(text: str) -> float:
    """``--workload-cert-ttl`` in seconds (a duration, one minute at least)."""
    seconds = parse_duration(text)
    if seconds < MIN_WORKLOAD_TTL.total_seconds():
        raise ValueError(f'workload certificate lifetime "{text}" is shorter than the minimum of 1m')
    return seconds


def open_ca(data_dir: Path, options: CaOptions) -> CertificateAuthority:
    """The CA in ``data_dir`` (created at first start, reused after)."""
    return CertificateAuthority.open(
        data_dir, datetime.now(UTC), trust_domain=options.trust_domain,
        workload_ttl=timedelta(seconds=options.workload_cert_ttl), external=options.root,
    )


async def serve(
    *,
    host: str,
    port: int,
    data_dir: Path,
    store_url: str | None = None,
    stop: asyncio.Event | None = None,
    announce: bool = True,
    controllers: bool = True,
    agent: bool = False,
    node_name: str | None = None,
    lifecycle: LifecycleConfig | None = None,
    ingress: str | None = None,
    ca: CaOptions | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when it is not given).

    ``agent``: also run this machine's node agent (a child process).
    ``lifecycle``: the node lifecycle controller's grace period and pod eviction
    timeout (``--node-monitor-grace-period``, ``--pod-eviction-timeout``).
    ``ingress``: ``HOST=PORTMAP`` for the ingress gateway (``127.0.0.1=80:8080,443:8443``),
    or None for none.
    ``ca``: the certificate authority's trust domain, workload certificate
    lifetime and optional user root (``--trust-domain``, ``--workload-cert-ttl``,
    ``--ca-cert``/``--ca-key``).
    """
    ensure_data_dir(data_dir)
    authority = open_ca(data_dir, ca or CaOptions())  # before anything starts: a bad --ca-cert stops here
    REGISTRY.load_all()  # every model now, so no request pays for importing one
    token = load_or_create_token(data_dir)
    store = open_store(store_url or f"sqlite:///{data_dir / 'store.db'}")
    from meshwork.control.tokens import load_or_create_key

    api = ApiServer(store, tokens={token: "admin"}, controllers=controllers, lifecycle=lifecycle,
                    signing_key=load_or_create_key(data_dir), data_dir=data_dir)
    http = HttpServer(api.handle, max_body=MAX_REQUEST_BYTES)
    pid_path = data_dir / PID_FILE
    local_agent = LocalAgent(data_dir, name=node_name) if agent else None
    certs = CertificateService(authority, api.objects, api.push)
    api.push.certs = certs
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await api.start()
        await certs.start()
        if ingress is not None:
            from meshwork.control.ingress import ensure_ingress_gateway, parse_ports

            gw_host, _, gw_ports = ingress.partition("=")
            await ensure_ingress_gateway(api.objects, gw_host, parse_ports(gw_ports))
        await http.start(host, port)
        url = f"http://{host}:{http.port}"
        from meshwork.cli.config import write_client_config

        write_client_config(data_dir, url, token)
        # Everything alive now (modules, model classes, the loaded cache) lives
        # as long as the server: keep the collector from walking it on every
        # full collection, which otherwise stalls the loop for tens of ms.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        pid_path.write_text(f"{os.getpid()}\n")
        if local_agent is not None:
            await local_agent.start(url, api.access.node_token(local_agent.name))
        if announce:
            print(f"meshwork server listening on {url}", flush=True)
        log.info("listening on %s (data dir %s)", url, data_dir)
        await stop.wait()
        log.info("shutting down")
    finally:
        if local_agent is not None:
            # First the pods (the agent stops them while the API still answers), then the API.
            await local_agent.stop()
        api.closing.set()
        await certs.close()
        await http.close(SHUTDOWN_GRACE_S)
        await api.close()
        await store.close()
        with contextlib.suppress(FileNotFoundError):
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink()


def run_server(
    *,
    host: str,
    port: int,
    data_dir: Path,
    store_url: str | None = None,
    controllers: bool = True,
    agent: bool = False,
    node_name: str | None = None,
    lifecycle: LifecycleConfig | None = None,
    ingress: str | None = None,
    ca: CaOptions | None = None,
) -> None:
    """Blocking entry point for the CLI: run the server on uvloop when it is installed."""
    logging.basicConfig(
        level=os.environ.get("MESHWORK_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    coro = serve(host=host, port=port, data_dir=data_dir, store_url=store_url, controllers=controllers,
                 agent=agent, node_name=node_name, lifecycle=lifecycle, ingress=ingress, ca=ca)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
