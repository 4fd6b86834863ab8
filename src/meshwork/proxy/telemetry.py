"""Istio's standard metrics and the JSON access log, as observers of the proxy engine.

What lives here: ``MeshMetrics`` (the counters and histograms Istio's proxies
export, with Istio's names and labels, rendered in the Prometheus text format
0.0.4 when scraped), its per-listener ``MetricsObserver`` (reporter
``source`` for a sidecar's outbound side, ``destination`` for its inbound
side), ``Peer`` / ``Directory`` (what the labels say about each side), and
``AccessLogWriter`` (Envoy's default fields as JSON lines, written in
batches).

What must not live here: sockets (``proxy.admin`` serves the text), the
engine (``proxy.observe`` is the seam it reports through).

Cost rule: the engine does ~10k requests/s per core, so ``request_done``
does only dictionary and list arithmetic: raw counts live in a dict keyed
by a tuple of what varies per request (cluster, peer address, status,
flags), with histogram buckets as plain lists of non-cumulative counts.
Label values, cumulative buckets and text are computed only at scrape time.
``bench/telemetry_bench.py`` measures the added cost per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Final, Literal

from meshwork.proxy.observe import ConnectionInfo, RequestInfo

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "LABELS",
    "AccessLogWriter",
    "Directory",
    "MeshMetrics",
    "MetricsObserver",
    "Peer",
    "access_record",
    "escape_label",
    "parse_cluster",
]

# Envoy's default histogram buckets, which Istio's proxies use for all three
# distributions (duration in ms, request and response sizes in bytes).
BUCKETS: Final[tuple[float, ...]] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN: Final = "unknown"

Reporter = Literal["source", "destination"]

# Istio's standard labels, in the order its proxies print them.
LABELS: Final[tuple[str, ...]] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "request_protocol",
    "response_code",
    "response_flags",
    "grpc_response_status",
    "connection_security_policy",
)
_N: Final = len(BUCKETS) + 1  # the last slot is +Inf


@dataclass(frozen=True, slots=True)
class Peer:
    """One side of a request, as Istio's labels describe a workload."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN

    @classmethod
    def from_pod(cls, *, workload: str, namespace: str, labels: dict[str, str], service_account: str = "default",
                 trust_domain: str = "cluster.local") -> Peer:  # fmt: skip
        """Labels as Istio derives them from a pod: app/version labels, canonical name, SPIFFE principal."""
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        canonical = (
            labels.get("service.istio.io/canonical-name")
            or labels.get("app.kubernetes.io/name")
            or labels.get("app")
            or workload
        )
        return cls(
            workload=workload,
            namespace=namespace,
            principal=f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}",
            app=app,
            version=version,
            canonical_service=canonical,
        )


UNKNOWN_PEER: Final = Peer()


def _peer_of_principal(peer: Peer, principal: str) -> Peer:
    """The client as its certificate names it (``cluster.local/ns/foo/sa/sleep``, verified by TLS).

    The workload, app and version come from the address (the certificate does not
    carry them) only when that pod runs as the same identity; otherwise only what
    the certificate says is reported: its namespace and principal.
    """
    uri = principal if principal.startswith("spiffe://") else f"spiffe://{principal}"
    if peer.principal == uri:
        return peer
    parts = principal.split("/")
    namespace = parts[2] if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" else UNKNOWN
    return Peer(namespace=namespace, principal=uri)


def parse_cluster(name: str) -> tuple[str, str, str]:
    """``outbound|<port>|<subset>|<fqdn>`` (or ``inbound|...``) -> (service host, name, namespace).

    An inbound cluster without a host (``inbound|9080||``) gives all
    "unknown"; a cluster not named that way (``PassthroughCluster``, a
    standalone proxy's ``static``) gives ``(name or "unknown", "unknown", "unknown")``.
    """
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        host = parts[3]
        if not host:
            return UNKNOWN, UNKNOWN, UNKNOWN
        labels = host.split(".")
        return host, labels[0], labels[1] if len(labels) > 1 else UNKNOWN
    return name or UNKNOWN, UNKNOWN, UNKNOWN


class Directory:
    """Who is behind an address: pods by "ip:port" or "ip", filled by whoever knows the mesh.

    Read only at scrape time, so an update costs requests nothing.
    """

    def __init__(self, peers: dict[str, Peer] | None = None) -> None:
        self.peers: dict[str, Peer] = dict(peers or {})

    def lookup(self, address: str) -> Peer:
        if not address:
            return UNKNOWN_PEER
        peer = self.peers.get(address)
        if peer is None:
            host = address.rpartition(":")[0] if address.count(":") == 1 else address
            peer = self.peers.get(host, UNKNOWN_PEER)
        return peer


def escape_label(value: str) -> str:
    """Prometheus text format: backslash, double quote and newline are escaped in label values."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


_LE: Final = (*(_num(b) for b in BUCKETS), "+Inf")


# bisect over floats for durations; over ints for sizes (int comparisons are
# cheaper, and for an integer n, n <= 0.5 exactly when n <= 0).
_FLOAT_BOUNDS: Final[tuple[float, ...]] = tuple(float(b) for b in BUCKETS)
_INT_BOUNDS: Final[tuple[int, ...]] = tuple(int(b) for b in BUCKETS)
_NB: Final = len(BUCKETS)


def ms_slot(ms: float) -> int:
    """``bisect_left(BUCKETS, ms)``: the first duration bucket whose bound is at least ``ms``.

    Most requests take well under 10 ms, so the first bounds are written out
    (compiled, each is one float comparison) and only slower ones scan on.
    """
    if ms <= 0.5:
        return 0
    if ms <= 1.0:
        return 1
    if ms <= 5.0:
        return 2
    if ms <= 10.0:
        return 3
    i = 4
    while i < _NB and _FLOAT_BOUNDS[i] < ms:
        i += 1
    return i


def size_slot(n: int) -> int:
    """``bisect_left(BUCKETS, n)`` for a byte count: small bodies decide in the first comparisons."""
    if n <= 0:
        return 0
    if n <= 1:
        return 1
    if n <= 5:
        return 2
    if n <= 10:
        return 3
    i = 4
    while i < _NB and _INT_BOUNDS[i] < n:
        i += 1
    return i


class _Series:
    """Raw counts for one key: sums, and the three histograms' non-cumulative buckets
    (the last of each being +Inf). Typed fields, so that counting a request
    (compiled) is mostly unboxed arithmetic."""

    __slots__ = ("count", "dur", "ms", "req", "req_sizes", "resp", "resp_sizes")

    def __init__(self) -> None:
        self.count = 0
        self.ms = 0.0  # duration sum, milliseconds
        self.req = 0  # request bytes sum
        self.resp = 0  # response bytes sum
        self.dur: list[int] = [0] * _N
        self.req_sizes: list[int] = [0] * _N
        self.resp_sizes: list[int] = [0] * _N

    def merge(self, other: _Series) -> None:
        self.count += other.count
        self.ms += other.ms
        self.req += other.req
        self.resp += other.resp
        for mine, theirs in ((self.dur, other.dur), (self.req_sizes, other.req_sizes),
                             (self.resp_sizes, other.resp_sizes)):  # fmt: skip
            for i in range(_N):
                mine[i] += theirs[i]


class _Tcp:
    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self) -> None:
        self.opened = self.closed = self.received = self.sent = 0

    def merge(self, other: _Tcp) -> None:
        self.opened += other.opened
        self.closed += other.closed
        self.received += other.received
        self.sent += other.sent


# Per-request key: (cluster, peer address, status, flags, TLS identity). The identity is what
# the connection's TLS says about the peer: inbound, the client certificate's principal
# (``cluster.local/ns/foo/sa/sleep``; None: not mutual TLS); outbound, the identities the
# server's certificate was verified against (a frozenset, its hash cached; None: plaintext).
# ``_UNSEEN``: the engine did not say (a record made without connection info, and TCP).
_UNSEEN: Final = "-"
_Ident = str | frozenset[str] | None
_Key = tuple[str, str, int, str, _Ident]


class MetricsObserver:
    """One listener's view: an ``Observer`` (``proxy.observe``) that only counts.

    ``reporter`` is "source" for outbound traffic (the peer is the upstream
    endpoint) and "destination" for inbound (the peer is the client).
    """

    __slots__ = ("http", "mtls", "outbound", "reporter", "tcp")

    def __init__(self, reporter: Reporter, *, mtls: bool = False) -> None:
        self.reporter: Reporter = reporter
        self.outbound = reporter == "source"
        self.mtls = mtls
        self.http: dict[_Key, _Series] = {}
        self.tcp: dict[_Key, _Tcp] = {}

    def request_done(self, info: RequestInfo) -> None:
        downstream = info.downstream
        ident: _Ident
        if downstream is None:
            ident = _UNSEEN
        elif self.outbound:
            tls = info.upstream_tls
            ident = tls.identities if tls is not None else None
        else:
            ident = downstream.principal
        key = (info.cluster, info.upstream if self.outbound else info.source, info.status, info.flags, ident)
        s = self.http.get(key)
        if s is None:
            s = self.http[key] = _Series()
        ms = info.duration * 1000.0
        n = info.request_bytes
        r = info.response_bytes
        s.count += 1
        s.ms += ms
        s.req += n
        s.resp += r
        s.dur[ms_slot(ms)] += 1
        s.req_sizes[size_slot(n)] += 1
        s.resp_sizes[size_slot(r)] += 1

    def _tcp(self, info: ConnectionInfo) -> _Tcp:
        key = (info.cluster, info.upstream if self.outbound else info.source, 0, info.flags, _UNSEEN)
        s = self.tcp.get(key)
        if s is None:
            s = self.tcp[key] = _Tcp()
        return s

    def connection_opened(self, info: ConnectionInfo) -> None:
        self._tcp(info).opened += 1

    def connection_closed(self, info: ConnectionInfo) -> None:
        s = self._tcp(info)
        s.closed += 1
        s.received += info.bytes_received
        s.sent += info.bytes_sent


class MeshMetrics:
    """All of one proxy's Istio metrics: its listeners' observers and the scrape-time renderer.

    ``local`` describes this proxy's own workload; ``directory`` the peers;
    ``service`` is the FQDN of the service the local workload serves, used as
    ``destination_service`` for inbound clusters that do not name one. For a
    standalone proxy all may stay unknown.
    """

    def __init__(self, local: Peer = UNKNOWN_PEER, directory: Directory | None = None, *,
                 service: str = UNKNOWN) -> None:  # fmt: skip
        self.local = local
        self.directory = directory or Directory()
        self.service = service
        self.observers: list[MetricsObserver] = []

    def observer(self, reporter: Reporter, *, mtls: bool = False) -> MetricsObserver:
        """A new observer for one listener (give it to ``HttpProxy`` / ``TcpProxy``)."""
        o = MetricsObserver(reporter, mtls=mtls)
        self.observers.append(o)
        return o

    def _labels(self, o: MetricsObserver, cluster: str, peer_address: str, status: int, flags: str,
                protocol: str, ident: _Ident = _UNSEEN) -> tuple[str, ...]:  # fmt: skip
        """Istio's label values. The peer is looked up by address; where the connection's TLS
        says who it is (``ident``), the certificate wins over the address."""
        host, svc_name, svc_ns = parse_cluster(cluster)
        peer = self.directory.lookup(peer_address)
        if o.reporter == "source":
            # Istio: destination_principal is the server certificate's URI SAN (unknown over
            # plaintext); connection_security_policy is "unknown" when the source reports.
            if ident != _UNSEEN:
                principal = next(iter(ident)) if isinstance(ident, frozenset) and len(ident) == 1 else UNKNOWN
                if principal != peer.principal:
                    peer = dataclasses.replace(peer, principal=principal)
            src, dst, policy = self.local, peer, UNKNOWN
        else:
            if ident == _UNSEEN:
                policy = "mutual_tls" if o.mtls else "none"
            elif ident is None:
                policy = "none"
                peer = dataclasses.replace(peer, principal=UNKNOWN)  # no certificate: nobody vouched
            else:
                policy = "mutual_tls"
                peer = _peer_of_principal(peer, str(ident))
            src, dst = peer, self.local
            if host == UNKNOWN and self.service != UNKNOWN:
                host, svc_name, svc_ns = parse_cluster(f"inbound|||{self.service}")
        return (
            o.reporter,
            src.workload, src.namespace, src.principal, src.app, src.version, src.canonical_service,
            dst.workload, dst.namespace, dst.principal, dst.app, dst.version,
            host, svc_name, svc_ns, dst.canonical_service,
            protocol, str(status), flags or "-", "", policy,
        )  # fmt: skip

    def collect(self) -> tuple[dict[tuple[str, ...], _Series], dict[tuple[str, ...], _Tcp]]:
        """Raw counts merged by full label set (two endpoints of one workload share a series)."""
        http: dict[tuple[str, ...], _Series] = {}
        tcp: dict[tuple[str, ...], _Tcp] = {}
        for o in self.observers:
            for (cluster, addr, status, flags, ident), s in list(o.http.items()):
                labels = self._labels(o, cluster, addr, status, flags, "http", ident)
                agg = http.get(labels)
                if agg is None:
                    agg = http[labels] = _Series()
                agg.merge(s)
            for (cluster, addr, _, flags, _ident), t in list(o.tcp.items()):
                labels = self._labels(o, cluster, addr, 0, flags, "tcp")
                aggt = tcp.get(labels)
                if aggt is None:
                    aggt = tcp[labels] = _Tcp()
                aggt.merge(t)
        return http, tcp

    def render(self) -> str:
        """The Prometheus text exposition format 0.0.4 of every series."""
        http, tcp = self.collect()
        out: list[str] = []
        http_items = sorted(http.items(), key=_first)
        _family(out, "istio_requests_total", "counter", "Requests handled by this proxy.",
                ((_pairs(labels), s.count) for labels, s in http_items))  # fmt: skip
        pairs = [_pairs(labels) for labels, _ in http_items]
        series = [s for _, s in http_items]
        _histogram(out, "istio_request_duration_milliseconds", "Request duration in milliseconds.",
                   ((p, s.dur, s.ms, s.count) for p, s in zip(pairs, series, strict=True)))  # fmt: skip
        _histogram(out, "istio_request_bytes", "HTTP request body sizes in bytes.",
                   ((p, s.req_sizes, s.req, s.count) for p, s in zip(pairs, series, strict=True)))  # fmt: skip
        _histogram(out, "istio_response_bytes", "HTTP response body sizes in bytes.",
                   ((p, s.resp_sizes, s.resp, s.count) for p, s in zip(pairs, series, strict=True)))  # fmt: skip
        tcp_items = sorted(tcp.items(), key=_first)
        for name, help_, attr in (
            ("istio_tcp_sent_bytes_total", "Bytes sent to the client of TCP connections.", "sent"),
            ("istio_tcp_received_bytes_total", "Bytes received from the client of TCP connections.", "received"),
            ("istio_tcp_connections_opened_total", "TCP connections opened.", "opened"),
            ("istio_tcp_connections_closed_total", "TCP connections closed.", "closed"),
        ):
            _family(out, name, "counter", help_, ((_pairs(lb), getattr(t, attr)) for lb, t in tcp_items))
        return "".join(out)

    def summary(self) -> str:
        """A few human lines: requests by response code and by cluster, TCP connections."""
        http, tcp = self.collect()
        by_code: dict[str, int] = {}
        by_service: dict[tuple[str, str], int] = {}
        total = 0
        for labels, s in http.items():
            n = s.count
            total += n
            by_code[labels[17]] = by_code.get(labels[17], 0) + n
            key = (labels[0], labels[12])
            by_service[key] = by_service.get(key, 0) + n
        lines = [f"requests: {total}"]
        lines += [f"  {code}: {n}" for code, n in sorted(by_code.items())]
        for (reporter, service), n in sorted(by_service.items()):
            lines.append(f"  {reporter} {service}: {n}")
        opened = sum(t.opened for t in tcp.values())
        closed = sum(t.closed for t in tcp.values())
        lines.append(f"tcp connections: {opened} opened, {closed} closed, {opened - closed} open")
        return "\n".join(lines) + "\n"


def _first(item: tuple[tuple[str, ...], object]) -> tuple[str, ...]:
    return item[0]


def _pairs(labels: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in zip(LABELS, labels, strict=True))


def _family(out: list[str], name: str, kind: str, help_: str, rows: Iterable[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
    out.extend(f"{name}{{{pairs}}} {_num(value)}\n" for pairs, value in rows)


def _histogram(out: list[str], name: str, help_: str, rows: Iterable[tuple[str, list[int], float, int]]) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} histogram\n")
    for pairs, buckets, total, count in rows:
        cumulative = 0.0
        for le, n in zip(_LE, buckets, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{pairs},le="{le}"}} {_num(cumulative)}\n')
        out.append(f"{name}_sum{{{pairs}}} {_num(total)}\n{name}_count{{{pairs}}} {_num(count)}\n")


# --- Access log -----------------------------------------------------------------------

# Records held before a write; a write also happens every FLUSH_SECONDS.
ACCESS_LOG_BATCH: Final = 256
FLUSH_SECONDS: Final = 0.5


_LOGGED_HEADERS: Final = {b"x-forwarded-for": "x_forwarded_for", b"user-agent": "user_agent", b"x-request-id": "request_id"}
_second: Final[list[object]] = [-1, ""]  # the last formatted second (timestamps repeat within one)


def _stamp(t: float) -> str:
    """RFC 3339 UTC with milliseconds, as Envoy's %START_TIME%."""
    sec = int(t)
    if _second[0] != sec:
        _second[0] = sec
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((t - sec) * 1000):03d}Z"


def access_record(info: RequestInfo, end_wall: float) -> dict[str, object]:
    """Envoy/Istio's default JSON access-log fields for one request (null when unknown)."""
    req = info.request
    record: dict[str, object] = {
        "start_time": _stamp(end_wall - info.duration),
        "method": info.method.decode("latin-1"),
        "path": info.path.decode("latin-1"),
        "protocol": "HTTP/" + req.http_version.decode("ascii") if req is not None else None,
        "response_code": info.status,
        "response_flags": info.flags or "-",
        "response_code_details": info.reason or None,
        "bytes_received": info.request_bytes,
        "bytes_sent": info.response_bytes,
        "duration": round(info.duration * 1000),
        "upstream_host": info.upstream or None,
        "upstream_cluster": info.cluster or None,
        "x_forwarded_for": None,
        "user_agent": None,
        "request_id": None,
        "authority": info.authority.decode("latin-1") or None,
        "route_name": info.route or None,
        "downstream_remote_address": info.source or None,
    }
    if req is not None:
        for name, value in req.headers:
            field = _LOGGED_HEADERS.get(name.lower())
            if field is not None and record[field] is None:
                record[field] = value.decode("latin-1")
    return record


class AccessLogWriter:
    """An ``Observer`` writing one JSON line per request, in batches.

    ``request_done`` only appends the record to a list; formatting and the
    single ``write`` happen when ``batch`` records wait or every
    ``FLUSH_SECONDS`` once ``start()`` ran on the loop. Off unless configured.
    """

    def __init__(self, stream: IO[str], *, batch: int = ACCESS_LOG_BATCH) -> None:
        self.stream = stream
        self.batch = batch
        self.pending: list[tuple[RequestInfo, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._owned = False

    @classmethod
    def open(cls, path: str) -> AccessLogWriter:
        """``-`` is stdout; anything else a file opened for appending."""
        if path == "-":
            return cls(sys.stdout)
        w = cls(open(path, "a", encoding="utf-8"))  # closed by close()
        w._owned = True
        return w

    def request_done(self, info: RequestInfo) -> None:
        pending = self.pending
        pending.append((info, time.time()))
        if len(pending) >= self.batch:
            self.flush()

    def connection_opened(self, info: ConnectionInfo) -> None:
        pass

    def connection_closed(self, info: ConnectionInfo) -> None:
        pass

    def lines(self) -> Iterator[str]:
        for info, end in self.pending:
            yield json.dumps(access_record(info, end), separators=(",", ":")) + "\n"

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.lines())
        self.pending = []
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def start(self) -> None:
        """Flush every ``FLUSH_SECONDS`` on the running loop."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(FLUSH_SECONDS, tick)

        self._timer = loop.call_later(FLUSH_SECONDS, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._owned:
            with contextlib.suppress(OSError):
                self.stream.close()
