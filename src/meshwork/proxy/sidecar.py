"""A proxy fed by the control plane: the sidecar (and gateway) runtime.

It opens the mesh config stream (``GET /apis/mesh.meshwork.io/v1/proxies/
{id}/config``, newline-delimited JSON snapshots), compiles each snapshot
with ``meshwork.core.mesh``, swaps the listeners' decider in one assignment
(requests in flight finish with the decider they started with; connections
stay open), and acknowledges: ACK with the version, or NACK with the error,
keeping the last good config. When the stream breaks it reconnects with
back-off, asking for what is newer than the version it holds, and goes on
serving meanwhile: the data plane never depends on the control plane being up.

Roles: a sidecar listens on ``$POD_IP:15001`` for its app's outbound
requests (the app's ``HTTP_PROXY``), connecting upstream from its pod IP so
the destination knows who calls, and on ``$POD_IP:15006`` for requests to
its app from other sidecars (``proxy.inbound``; metrics with
``reporter="destination"``) and, when it knows the app's own address
(``app_ip``), on ``$POD_IP:<port>`` for each app port (inbound capture: no
client reaches the app around it); a gateway listens on every port its
Gateways' servers name (mapped through the gateway Service's targetPort) on
the configured host address. The outbound listener opens only once a first
config applies (the inbound one with it), so the pod's readiness means "routing".

What lives here: the config stream and ACK/NACK, applying a snapshot, the
outbound and :15006 listeners. What must not: the app-port listeners of
inbound capture (``proxy.capture``), a gateway's listeners
(``proxy.gateway``), the start timeline and the READY=1 to the node agent
(``proxy.ready``; ``notify_ready`` stays importable from here), the engines
(``proxy.server``, ``proxy.tcp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.core.ratelimit import Limiter
from meshwork.proxy.activator import ActivatingDecider, Activator
from meshwork.proxy.admin import AdminServer
from meshwork.proxy.capture import InboundCapture
from meshwork.proxy.gateway import GatewayListeners, guard_gateway
from meshwork.proxy.guard import Guard, GuardedDecider, GuardRejected, compile_guard
from meshwork.proxy.inbound import (
    INBOUND_PORT,
    INBOUND_PORT_HEADER,
    AppPort,
    InboundDecider,
    services_from_snapshot,
)
from meshwork.proxy.mesh import ClusterState, MeshDecider, Tracing
from meshwork.proxy.meshtls import InboundMtls, MeshTls, OutboundMtls, inbound_mtls, sign_over_http
from meshwork.proxy.observe import Observer, Observers
from meshwork.proxy.plan import Decider
from meshwork.proxy.plugins import SERVER, Plugin, selected
from meshwork.proxy.ratelimit import RateLimitedDecider, limiter_for
from meshwork.proxy.ready import Startup, notify_ready
from meshwork.proxy.server import HttpProxy
from meshwork.proxy.telemetry import AccessLogWriter, Directory, MeshMetrics, MetricsObserver, Peer
from meshwork.proxy.tls import ListenerTls, TlsMode
from meshwork.proxy.tracing import OtlpExporter, Tracer

log = logging.getLogger("meshwork.proxy")

API = "/apis/mesh.meshwork.io/v1"
OUTBOUND_PORT = 15001
ADMIN_PORT = 15020
_RS_POD = re.compile(r"^(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")  # Deployment pods: name-<rs hash>-<suffix>
_OWNED_POD = re.compile(r"^(.+)-[a-z0-9]{5}$")  # ReplicaSet, DaemonSet and Job pods


def otlp_exporter(env: Mapping[str, str], *, service_name: str) -> OtlpExporter | None:
    """Spans go to an OTLP/HTTP collector when OpenTelemetry's standard variables name one.

    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is; ``OTEL_EXPORTER_OTLP_ENDPOINT``
    gets ``/v1/traces`` appended, as the OpenTelemetry spec says. The node agent
    passes them on from its own environment.
    """
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return OtlpExporter(endpoint, service_name=service_name) if endpoint else None


def workload_of(pod: str) -> str:
    """The workload name Istio reports for a pod (its Deployment's, else its owner's, else its own)."""
    for pattern in (_RS_POD, _OWNED_POD):
        m = pattern.match(pod)
        if m:
            return m.group(1)
    return pod or "unknown"
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


# A spare proxy (agent.standby) sets this when its pod takes it: its start counts from then.
HANDED_OVER_AT: float | None = None


@dataclass
class SidecarOptions:
    server: str
    token: str
    proxy_id: str
    listen_host: str
    role: str = "sidecar"
    gateway_ports: dict[int, int] = field(default_factory=dict)  # Gateway server port -> port to listen on
    labels: str | None = None  # gateways without a Pod: their selector labels
    admin_host: str | None = None  # where :15020 (metrics, readiness) listens; None: no admin endpoint
    access_log: str | None = None  # "-" (stdout, so `meshwork logs POD -c istio-proxy` shows it) or a file
    pod_ports: tuple[AppPort, ...] = ()  # the app's ports (ISTIO_META_POD_PORTS), for the inbound side
    pod_ip: str | None = None  # the app's address for inbound and the outbound source (None: listen_host)
    app_ip: str | None = None  # the app's own address: the sidecar captures the pod IP's app ports (proxy.inbound)
    reuse_port: bool = False  # listeners share their ports with the other workers of a gateway (proxy.workers)


class _Stream:
    """httptools callbacks for a chunked NDJSON response: complete lines into a queue."""

    def __init__(self) -> None:
        self.status = 0
        self.headers_done = asyncio.Event()
        self.lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buf = bytearray()

    def on_headers_complete(self) -> None:
        self.headers_done.set()

    def on_body(self, body: bytes) -> None:
        self._buf += body
        if len(self._buf) > MAX_SNAPSHOT_BYTES:
            raise ValueError("a snapshot line is too large")
        while (i := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            if line.strip():
                self.lines.put_nowait(line)

    def on_message_complete(self) -> None:
        self.lines.put_nowait(None)


class Sidecar:
    def __init__(self, options: SidecarOptions) -> None:
        self.options = options
        self.startup = Startup(HANDED_OVER_AT)
        url = urlsplit(options.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.version = ""
        self.applied = asyncio.Event()
        self.states: dict[str, ClusterState] = {}
        self.rng = random.Random()
        self.proxies: dict[int, Any] = {}  # listen port -> HttpProxy
        self.decider: MeshDecider | None = None
        self.last_error: str | None = None
        self._ack_conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.metrics = MeshMetrics()
        self.exporter = otlp_exporter(os.environ, service_name=options.proxy_id.split("~")[2].split(".")[0])
        self.tracing = Tracing(Tracer(exporter=self.exporter))
        self.admin = AdminServer(self.metrics, tracer=self.tracing.tracer)
        self.access_log = AccessLogWriter.open(options.access_log) if options.access_log else None
        outbound: list[Observer] = [self.metrics.observer("source"), self.tracing]
        if self.access_log is not None:
            outbound.append(self.access_log)
        self._observer = Observers(*outbound)
        self._inbound_observer: MetricsObserver | None = None
        self._inbound_key: tuple[Any, ...] | None = None  # what the inbound decider was built from
        self.capture = InboundCapture(options.proxy_id, options.listen_host, options.pod_ports)  # proxy.capture
        self.rate_limiter: Limiter | None = None  # this workload's LocalRateLimits (proxy.ratelimit)
        self.guard: Guard | None = None  # this workload's security policies (proxy.guard); None: none apply
        self.gateway: GatewayListeners | None = None  # a gateway's listeners (proxy.gateway)
        # The proxy's mesh certificate and TLS contexts (proxy.meshtls). A gateway has one too:
        # it originates mTLS to meshed pods (its own listeners use the Gateways' credentials).
        self.mtls: MeshTls | None = None
        self.mtls = MeshTls(sign_over_http(self.host, self.port, options.token, options.proxy_id))
        self._last_raw: dict[str, Any] | None = None  # a gateway re-applies it when its certificate arrives
        # Requests for workloads scaled to zero wait here while they start (proxy.activator).
        self.activator = Activator(self.host, self.port, options.token, self.states)

    # -- applying config -------------------------------------------------------------

    async def apply(self, raw: dict[str, Any]) -> str | None:
        """Compile and install one snapshot; the NACK text, or None when applied."""
        try:
            table = compile_snapshot(snapshot_from_wire(raw))
        except Exception as exc:  # anything wrong in a snapshot is a NACK, never a crash
            return f"{type(exc).__name__}: {exc}"
        try:
            self.guard = compile_guard(raw, previous=self.guard)
        except GuardRejected as exc:
            return str(exc)
        error = self._rate_limits(raw)
        if error is not None:
            return error
        self.activator.update(raw)
        loop = asyncio.get_running_loop()
        left_out: str | None = None  # a gateway's servers not served (applied all the same; reported as a NACK)
        if self.options.role == "gateway":
            left_out = await self._gateway_listeners(table, loop, await self._outbound_tls(raw, wait=False))
        else:
            try:
                labels = dict((raw.get("proxy") or {}).get("labels") or {})
                plugins = selected(list(raw.get("proxyPlugins") or []), labels)
            except ValueError as exc:
                return str(exc)
            tls = await self._outbound_tls(raw)
            self.startup.mark("certificate")
            decider = MeshDecider(table, states=self.states, rng=self.rng, clock=loop.time, tracing=self.tracing,
                                  plugins=plugins, tls=tls)  # fmt: skip
            self.decider = decider
            pod_ip = self.options.pod_ip or self.options.listen_host
            await self._listen(OUTBOUND_PORT, self._activating(decider), source=pod_ip)
            await self._inbound(raw, pod_ip, plugins)
        self.version = str(raw.get("version", ""))
        self._learn_peers(raw)
        self.applied.set()
        self.admin.mark_ready()
        if not self.startup.reported:
            self.startup.reported = True
            self.startup.mark("ready")
            notify_ready()
            log.info("proxy %s: ready (since %s: %s)", self.options.proxy_id, self.startup.since,
                     self.startup.summary())  # fmt: skip
        return left_out

    def _learn_peers(self, raw: dict[str, Any]) -> None:
        """Who is who, for the metrics' source/destination labels (read only when scraped)."""
        proxy = raw.get("proxy") or {}
        self.metrics.local = Peer.from_pod(
            workload=workload_of(str(proxy.get("pod") or proxy.get("name") or "")),
            namespace=str(proxy.get("namespace") or "unknown"), labels=dict(proxy.get("labels") or {}),
            service_account=str(proxy.get("serviceAccount") or "default"))  # fmt: skip
        peers: dict[str, Peer] = {}
        for svc in raw.get("services") or []:
            for ep in svc.get("endpoints") or []:
                peers[str(ep.get("ip"))] = Peer.from_pod(
                    workload=workload_of(str(ep.get("pod") or ep.get("name") or "")),
                    namespace=str(ep.get("namespace") or svc.get("namespace") or "unknown"),
                    labels=dict(ep.get("labels") or {}),
                    service_account=str(ep.get("serviceAccount") or "default"))  # fmt: skip
        self.metrics.directory = Directory(peers)

    async def _inbound(self, raw: dict[str, Any], pod_ip: str, plugins: list[Plugin] | None = None) -> None:
        """The inbound listener, its decider rebuilt only when the Services sending to this pod change
        (or its policies, or the ProxyPlugins of its SERVER side)."""
        services = services_from_snapshot(raw, pod_ip)
        mtls = self._inbound_mtls(raw, services)
        served = tuple(p for p in plugins or () if p.on_side(SERVER))
        key = (tuple(sorted(services.items())), self.guard, mtls, self.rate_limiter, served)
        if key == self._inbound_key:
            return
        if self._inbound_observer is None:
            self._inbound_observer = self.metrics.observer("destination")
        refuses = mtls.refuses_plaintext if mtls is not None and mtls.mixed else None
        inbound = InboundDecider(pod_ip, self.options.pod_ports, services, refuses, app_ip=self.options.app_ip,
                                 plugins=served)  # fmt: skip
        decider = self._limit(self._guard_inbound(inbound, pod_ip))
        await self._listen(INBOUND_PORT, decider, observer=self._inbound_observer,
                           tls=self.mtls.listener if self.mtls is not None else None)  # fmt: skip
        if self.options.app_ip:
            await self.capture.update(raw, inbound, pod_ip, mtls, mesh_tls=self.mtls, guard=self.guard,
                                      limit=self._limit, observer=self._inbound_observer)  # fmt: skip
        self._inbound_key = key

    async def _outbound_tls(self, raw: dict[str, Any], *, wait: bool = True) -> OutboundMtls | None:
        """Mutual TLS for the outbound side: a sidecar waits for its first certificate (readiness
        waits with it); a gateway does not (its own listeners never need one), and until it has
        one it reaches meshed pods in plaintext (a STRICT pod refuses that: 503 until then)."""
        if self.mtls is None:
            return None
        self.mtls.observe(raw)
        if wait:
            await self.mtls.ready.wait()
        elif not self.mtls.ready.is_set():
            self._last_raw = raw  # applied again once the certificate is here (_gateway_mtls)
            return None
        return OutboundMtls(self.mtls, raw)

    def _inbound_mtls(self, raw: dict[str, Any], services: Mapping[int, str]) -> InboundMtls | None:
        """The inbound listener's mode from PeerAuthentication; new connections follow a change."""
        if self.mtls is None:
            return None
        ports = {p.port for p in self.options.pod_ports} | set(services)
        mtls, decision = inbound_mtls(raw, ports)
        if self.mtls.listener.mode is not mtls.mode:
            log.info("proxy %s: inbound mTLS mode %s (%s)", self.options.proxy_id, mtls.mode,
                     ", ".join(decision.decided_by) or "default")  # fmt: skip
        if mtls.mode is TlsMode.STRICT and self.mtls.listener.mode is not TlsMode.STRICT:
            inbound = self.proxies.get(INBOUND_PORT)
            if inbound is not None:  # plaintext connections made before STRICT may not go on
                inbound.drain(lambda downstream: not downstream.tls)
        self.mtls.listener.mode = mtls.mode
        return mtls

    def _guard_inbound(self, decider: InboundDecider, pod_ip: str) -> Decider:
        """The inbound decider behind this workload's guard, when policies select it (proxy.guard)."""
        if self.guard is None:
            return decider
        only = decider.ports[0].port if len(decider.ports) == 1 else None
        return GuardedDecider(decider, self.guard, destination_port=only, destination_ip=pod_ip,
                              port_header=INBOUND_PORT_HEADER)  # fmt: skip

    def _rate_limits(self, raw: dict[str, Any]) -> str | None:
        """This workload's LocalRateLimits (proxy.ratelimit); the NACK text when one is invalid."""
        try:
            self.rate_limiter = limiter_for(raw, self.rate_limiter)
        except ValueError as exc:
            return str(exc)
        return None

    def _activating(self, decider: Decider) -> Decider:
        """A client-side listener's decider, holding requests for workloads at zero (proxy.activator);
        the bare decider (nothing on the request path) when the snapshot names none that can be woken."""
        if not self.activator.activatable:
            return decider
        return ActivatingDecider(decider, self.activator)

    def _limit(self, decider: Decider) -> Decider:
        """A server-side listener's decider behind this workload's rate limits, when any select it."""
        if self.rate_limiter is None:
            return decider
        metrics = self.metrics

        def workload_of_address(address: str) -> str | None:
            peer = metrics.directory.lookup(address)  # the directory of the latest snapshot
            return None if peer.workload == "unknown" else f"{peer.namespace}/{peer.workload}"

        return RateLimitedDecider(decider, self.rate_limiter, workload_of=workload_of_address)

    async def _listen(self, port: int, decider: Decider, bind_port: int | None = None, *,
                      observer: Observer | None = None, source: str | None = None,
                      tls: ListenerTls | None = None) -> None:  # fmt: skip
        proxy = self.proxies.get(port)
        if proxy is None:
            proxy = HttpProxy(decider, observer=observer or self._observer, source_address=source)
            await proxy.start(self.options.listen_host, bind_port if bind_port is not None else port, tls=tls,
                              reuse_port=self.options.reuse_port)
            self.proxies[port] = proxy
        else:
            proxy.decider = decider  # one assignment: the next request routes with the new table

    async def _gateway_listeners(self, table: Any, loop: asyncio.AbstractEventLoop,
                                 mtls: OutboundMtls | None = None) -> str | None:  # fmt: skip
        """A gateway's listeners for ``table`` (``proxy.gateway``); the servers left out and why, or None."""
        self.gateway = self.gateway or GatewayListeners(self.rng, host=self.options.listen_host,
                                                        reuse_port=self.options.reuse_port, observer=self._observer)

        def decider_for(port: int) -> Decider:
            mesh = MeshDecider(table, states=self.states, rng=self.rng, clock=loop.time, listener_port=port, tls=mtls)
            return self._limit(self._activating(guard_gateway(mesh, self.guard, port)))

        return await self.gateway.update(table, self.proxies, decider_for=decider_for, listen=self._listen,
                                         states=self.states, bind_ports=self.options.gateway_ports,
                                         guard=self.guard)  # fmt: skip

    # -- the config stream ----------------------------------------------------------------

    async def _ack(self, version: str, error: str | None) -> None:
        """ACK or NACK over one kept-alive connection (a new connection per ACK costs the
        server more than the snapshot did)."""
        body = json.dumps({"version": version, "error": error}).encode()
        path = f"{API}/proxies/{quote(self.options.proxy_id, safe='')}/ack"
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.options.token}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more on a new one
            if self._ack_conn is None:
                self._ack_conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._ack_conn
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or 0)
                if length:
                    await reader.readexactly(length)
                if b"connection: close" in head.lower():
                    writer.close()
                    self._ack_conn = None
                return
            except (OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                self._ack_conn = None
                if attempt:
                    raise

    async def _stream_once(self) -> None:
        query = f"?version={quote(self.version)}" if self.version else ""
        if self.options.labels:
            query += ("&" if query else "?") + f"labels={quote(self.options.labels)}"
        path = f"{API}/proxies/{quote(self.options.proxy_id, safe='')}/config{query}"
        reader, writer = await asyncio.open_connection(self.host, self.port)
        stream = _Stream()
        parser = httptools.HttpResponseParser(stream)
        try:
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Authorization: Bearer {self.options.token}\r\n\r\n").encode())  # fmt: skip

            async def feed() -> None:
                try:
                    while data := await reader.read(256 * 1024):
                        parser.feed_data(data)
                finally:
                    stream.lines.put_nowait(None)

            feeder = asyncio.create_task(feed())
            try:
                while (line := await stream.lines.get()) is not None:
                    if parser.get_status_code() != 200:
                        raise ConnectionError(f"config stream answered {parser.get_status_code()}: {line[:200]!r}")
                    self.startup.mark("first config")
                    raw = json.loads(line)
                    error = await self.apply(raw)
                    self.last_error = error
                    if error is not None:
                        log.warning("proxy %s: rejected config %s: %s", self.options.proxy_id, raw.get("version"), error)
                    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
                        await self._ack(str(raw.get("version", "")), error)
            finally:
                feeder.cancel()
        finally:
            writer.close()

    async def run(self, stop: asyncio.Event, feed: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serve until ``stop``: configs come from the control plane's stream, or from ``feed``
        (a gateway worker's: its supervisor holds the stream, ``proxy.workers``)."""
        if self.access_log is not None:
            self.access_log.start()
        exporting = asyncio.create_task(self.exporter.run()) if self.exporter is not None else None
        if self.options.admin_host is not None:
            await self.admin.start(self.options.admin_host, ADMIN_PORT)
        if self.mtls is not None:
            self.mtls.start(stop)
        regateway = asyncio.create_task(self._gateway_mtls()) if self.options.role == "gateway" else None
        if feed is None:
            await self.follow_stream(stop)
        else:
            await feed()
        for task in (exporting, regateway):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def follow_stream(self, stop: asyncio.Event) -> None:
        """Apply what the config stream sends until ``stop``, reconnecting with back-off."""
        delay = RECONNECT_MIN_S
        while not stop.is_set():
            try:
                await self._stream_once()
                delay = RECONNECT_MIN_S
            except (OSError, ConnectionError, ValueError, httptools.HttpParserError) as exc:
                log.info("proxy %s: config stream: %s; reconnecting", self.options.proxy_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _gateway_mtls(self) -> None:
        """A gateway's first certificate: re-apply the config it applied without one, so its routes
        to meshed pods speak mTLS from then on."""
        if self.mtls is None:
            return
        await self.mtls.ready.wait()
        raw, self._last_raw = self._last_raw, None
        if raw is not None and str(raw.get("version", "")) == self.version:
            error = await self.apply(raw)
            if error is not None:
                log.warning("proxy %s: re-applying config %s with mTLS: %s", self.options.proxy_id, self.version, error)

    async def close(self) -> None:
        if self.mtls is not None:
            await self.mtls.close()
        if self.access_log is not None:
            self.access_log.close()
        with contextlib.suppress(Exception):
            await self.admin.close()
        for proxy in self.proxies.values():
            await proxy.close(2.0)
        self.proxies.clear()
        await self.capture.close()
