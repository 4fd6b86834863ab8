"""Liveness, readiness and startup probes as a sans-IO state machine (kubelet prober semantics).

What lives here:

* ``probe_target``: what a probe checks, as data: the HTTP GET request
  (scheme, host, port, path, headers) given the pod IP and the container's
  named ports; the TCP address; the exec command (with the container's static
  ``$(VAR)`` references expanded, as the kubelet does); the gRPC address.
* ``ProbeTracker``: one per running container instance. ``due(now)`` returns
  the ``RunProbe`` commands to execute; the shell runs them (HTTP, TCP, exec,
  gRPC are I/O and not here) and feeds each outcome back with
  ``record(ProbeResult, now)``, which returns decisions: ``SetReady``,
  ``SetStarted``, ``KillContainer`` and ``ContainerEvent`` (Unhealthy).

What must not: sockets, processes, clocks, logging.

Upstream semantics kept (pkg/kubelet/prober/worker.go):

* Each probe ticks every ``periodSeconds`` from the container's start; a tick
  before ``initialDelaySeconds`` have passed does nothing.
* While a startup probe has not succeeded, liveness and readiness do not run;
  once it succeeds it stops, and readiness runs at once (the kubelet's manual
  trigger), liveness at its next tick.
* Results count in runs: a result is published only after
  ``failureThreshold`` consecutive failures or ``successThreshold`` consecutive
  successes. Readiness starts as failed (not ready), liveness as succeeded.
* Every failed probe records a Warning ``Unhealthy`` event ("Liveness probe
  failed: ..."); a published liveness or startup failure kills the container
  ("Container app failed liveness probe, will be restarted") and the tracker
  goes on hold: the restarted container gets a new tracker.

Simplification: ticks are anchored at the container's start rather than at
the moment the kubelet created its worker (the pod's admission).

Difference: until a container is first Ready, a network readiness probe also
runs between its regular ticks during its first period (at least its first
``FAST_READINESS_WINDOW_S``): 10 ms after the initial delay, then at gaps
doubling up to 50 ms (``FAST_READINESS_*``); those failures record no event.
A started app is Ready within tens of milliseconds instead of up to a period
later (the kubelet's first probe often lands before the app listens, and the
next one a whole period after). ``trigger`` runs a probe at once, off the grid:
the agent calls it when a container says it is ready (``agent.notify``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from meshwork.core.podenv import expand, mapping_for
from meshwork.core.restart import ContainerEvent
from meshwork.model.pod import Container, HTTPGetAction, Probe

ProbeType = Literal["startup", "liveness", "readiness"]
ProbeKind = Literal["httpGet", "tcpSocket", "exec", "grpc"]

# kubelet: "kube-probe/<major>.<minor>"; apps that filter probes match the prefix.
PROBE_USER_AGENT = "kube-probe/1.33"
_LABEL: dict[ProbeType, str] = {
    "startup": "Startup",
    "liveness": "Liveness",
    "readiness": "Readiness",
}


# ---------------------------------------------------------------------------
# Targets (what a probe checks), as data
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """The HTTP GET a probe sends. ``headers`` keep their order; ``Host`` among them
    (if any) is the Host header, the connection still goes to ``host:port``."""

    method: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self.path if self.path.startswith("/") else "/" + self.path
        return f"{self.scheme}://{host}:{self.port}{path}"


@dataclass(frozen=True, slots=True)
class TCPTarget:
    """Open a TCP connection to ``host:port``."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ExecTarget:
    """Run ``command`` in the container's environment; exit status 0 is success."""

    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GRPCTarget:
    """Call grpc.health.v1.Health/Check with ``service`` on ``host:port``."""

    host: str
    port: int
    service: str


@dataclass(frozen=True, slots=True)
class UnresolvedTarget:
    """The probe cannot be built (an unknown named port): the shell reports an errored result."""

    error: str


Target = HTTPRequest | TCPTarget | ExecTarget | GRPCTarget | UnresolvedTarget


def resolve_port(port: int | str, container: Container) -> int | str:
    """A probe port as a number: itself, or the container port with that name; else the error."""
    if isinstance(port, str):
        for p in container.ports or ():
            if p.name == port:
                return p.container_port
        return f"couldn't find port: {port} in {container.name}"
    if not 0 < port < 65536:
        return f"invalid port number: {port}"
    return port


def http_request(
    action: HTTPGetAction, container: Container, pod_ip: str
) -> HTTPRequest | UnresolvedTarget:
    """The request an ``httpGet`` probe sends (upstream ``NewRequestForHTTPGetAction``).

    Host defaults to the pod IP; ``User-Agent`` and ``Accept: */*`` are added
    unless the probe sets them (an empty ``Accept`` removes it).
    """
    port = resolve_port(action.port, container)
    if isinstance(port, str):
        return UnresolvedTarget(port)
    headers = [(h.name, h.value) for h in action.http_headers or ()]
    names = {n.lower() for n, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", PROBE_USER_AGENT))
    if "accept" not in names:
        headers.append(("Accept", "*/*"))
    else:
        headers = [(n, v) for n, v in headers if not (n.lower() == "accept" and v == "")]
    scheme: Literal["http", "https"] = "https" if action.scheme == "HTTPS" else "http"
    return HTTPRequest(method="GET", scheme=scheme, host=action.host or pod_ip, port=port,
                       path=action.path or "/", headers=tuple(headers))  # fmt: skip


def probe_target(probe: Probe, container: Container, pod_ip: str) -> tuple[ProbeKind, Target]:
    """What ``probe`` checks for ``container`` on a pod at ``pod_ip``."""
    if probe.http_get is not None:
        return "httpGet", http_request(probe.http_get, container, pod_ip)
    if probe.tcp_socket is not None:
        port = resolve_port(probe.tcp_socket.port, container)
        if isinstance(port, str):
            return "tcpSocket", UnresolvedTarget(port)
        return "tcpSocket", TCPTarget(host=probe.tcp_socket.host or pod_ip, port=port)
    if probe.grpc is not None:
        return "grpc", GRPCTarget(host=pod_ip, port=probe.grpc.port, service=probe.grpc.service)
    # Exec: only the container's own literal env values expand (ExpandContainerCommandOnlyStatic).
    static = {e.name: e.value or "" for e in container.env or ()}
    mapping = mapping_for(static)
    command = probe.exec_.command if probe.exec_ is not None else None
    return "exec", ExecTarget(tuple(expand(arg, mapping) for arg in command or ()))


# ---------------------------------------------------------------------------
# Commands, results, decisions
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunProbe:
    """Command: run one probe now, give up after ``timeout`` seconds (a timeout is a failure)."""

    probe: ProbeType
    kind: ProbeKind
    target: Target
    timeout: float


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of a ``RunProbe``. ``errored``: the probe could not be run at all."""

    probe: ProbeType
    success: bool
    message: str = ""
    errored: bool = False


@dataclass(frozen=True, slots=True)
class SetReady:
    """Decision: the container's ``ready`` (and so the pod's Ready condition) changes."""

    ready: bool


@dataclass(frozen=True, slots=True)
class SetStarted:
    """Decision: the container's ``started`` is now true (startup probe succeeded)."""

    started: bool


@dataclass(frozen=True, slots=True)
class KillContainer:
    """Decision: kill the container; ``message`` is the Killing event's message."""

    reason: Literal["LivenessProbe", "StartupProbe"]
    message: str
    restart: bool


Decision = SetReady | SetStarted | KillContainer | ContainerEvent


# Until a container is first Ready, its network readiness probe (httpGet, tcpSocket, grpc;
# not exec, which costs a process) also runs between its regular ticks during its first
# period (at least FAST_READINESS_WINDOW_S), after these gaps (doubling up to the cap): an app that is up is Ready in a few tens of milliseconds
# instead of up to a whole period later (what a cold start waits for; Knative's
# queue-proxy probes the same way). Failures there record no event: the regular ticks do.
FAST_READINESS_FIRST_S = 0.01
FAST_READINESS_MAX_S = 0.05  # the gap stops growing here: a refused loopback connect is cheap next to a start
# Probing between ticks lasts one period, and at least this long: a start slowed by a busy
# machine past a short period (1 s) would otherwise wait for the next tick.
FAST_READINESS_WINDOW_S = 3.0


@dataclass(slots=True)
class _Worker:
    spec: Probe
    kind: ProbeKind
    target: Target
    next_tick: float
    last: bool | None
    run: int = 0
    in_flight: bool = False
    triggered_at: float | None = None
    fast_gap: float = 0.0  # > 0: probing between ticks (readiness, until first Ready)
    fast_next: float = 0.0
    fast_end: float = 0.0  # no probing between ticks from here on (one period after the initial delay)
    fast_flight: bool = False  # the probe in flight is one of those


class ProbeTracker:
    """The probes of one running container instance."""

    def __init__(
        self, container: Container, *, pod_ip: str, started_at: float, restarts: bool = True,
        fast_readiness: bool = True,
    ) -> None:
        """``started_at``: when the container started; ``restarts``: whether a failed liveness
        probe restarts it (the pod's restartPolicy is not Never, or it is a sidecar);
        ``fast_readiness``: probe readiness between ticks until first Ready (see the module doc)."""
        self.container = container.name
        self.started_at = started_at
        self.restarts = restarts
        self.on_hold = False
        self.ready = False
        specs: tuple[tuple[ProbeType, Probe | None], ...] = (
            ("startup", container.startup_probe),
            ("liveness", container.liveness_probe),
            ("readiness", container.readiness_probe),
        )
        self._workers: dict[ProbeType, _Worker] = {}
        initial: dict[ProbeType, bool | None] = {
            "startup": None,
            "liveness": True,
            "readiness": False,
        }
        for name, spec in specs:
            if spec is not None:
                kind, target = probe_target(spec, container, pod_ip)
                w = self._workers[name] = _Worker(spec, kind, target, started_at, initial[name])
                if (fast_readiness and name == "readiness" and kind != "exec"
                        and spec.period_seconds > FAST_READINESS_FIRST_S):  # fmt: skip
                    w.fast_gap = FAST_READINESS_FIRST_S
                    w.fast_next = started_at + (spec.initial_delay_seconds or 0)
                    w.fast_end = w.fast_next + max(float(spec.period_seconds), FAST_READINESS_WINDOW_S)
        self.started = "startup" not in self._workers
        # Without a readiness probe a started container is ready at once.
        self.ready = self.started and "readiness" not in self._workers

    def _gated(self, name: ProbeType) -> bool:
        if name == "startup":
            return self.started
        return not self.started

    def _first_tick(self, w: _Worker, after: float) -> float:
        """The first tick at or after ``after`` that is past the initial delay."""
        period = float(w.spec.period_seconds)
        earliest = max(after, self.started_at + (w.spec.initial_delay_seconds or 0))
        k = max(0, math.ceil((earliest - self.started_at) / period - 1e-9))
        return self.started_at + k * period

    def _when(self, w: _Worker) -> float:
        if w.triggered_at is not None:
            if w.triggered_at >= self.started_at + (w.spec.initial_delay_seconds or 0):
                return w.triggered_at
            w.triggered_at = None  # a trigger inside the initial delay does nothing upstream
        regular = self._first_tick(w, w.next_tick)
        fast = w.fast_gap and not self.ready and w.fast_next < w.fast_end
        return min(regular, w.fast_next) if fast else regular

    def due(self, now: float) -> list[RunProbe]:
        """The probes to run at ``now`` (each is then in flight until its result is recorded)."""
        if self.on_hold:
            return []
        out: list[RunProbe] = []
        for name, w in self._workers.items():
            if w.in_flight or self._gated(name):
                continue
            tick = self._when(w)
            if tick > now:
                continue
            w.in_flight = True
            regular = self._first_tick(w, w.next_tick)
            w.fast_flight = False
            if w.triggered_at is not None:
                w.triggered_at = None  # a manual trigger leaves the tick grid as it was
            elif w.fast_gap and tick < regular:
                w.fast_flight = True  # between ticks: the grid stays as it was
            else:
                w.next_tick = self._first_tick(w, tick + w.spec.period_seconds)
            if w.fast_gap:
                w.fast_next = tick + w.fast_gap
                w.fast_gap = min(w.fast_gap * 2, FAST_READINESS_MAX_S, float(w.spec.period_seconds))
            out.append(RunProbe(name, w.kind, w.target, float(w.spec.timeout_seconds)))
        return out

    def trigger(self, name: ProbeType, now: float) -> None:
        """Run probe ``name`` at its next ``due`` (after the one in flight, if any), off the tick
        grid, as the kubelet's manual trigger does; nothing for a probe the container lacks."""
        w = self._workers.get(name)
        if w is not None and not self.on_hold:
            w.triggered_at = now

    def next_wakeup(self) -> float | None:
        """When ``due`` next has something to return (None: only after a result arrives)."""
        if self.on_hold:
            return None
        times = [self._when(w) for name, w in self._workers.items()
                 if not w.in_flight and not self._gated(name)]  # fmt: skip
        return min(times) if times else None

    def record(self, result: ProbeResult, now: float) -> list[Decision]:
        """Feed back one probe outcome; returns what changes (kubelet ``doProbe``)."""
        w = self._workers.get(result.probe)
        if w is None or not w.in_flight:
            return []
        w.in_flight = False
        if self.on_hold or self._gated(result.probe):
            return []
        label = _LABEL[result.probe]
        out: list[Decision] = []
        if not result.success and not w.fast_flight:
            text = (f"{label} probe errored and resulted in unknown state: {result.message}"
                    if result.errored else f"{label} probe failed: {result.message}")  # fmt: skip
            out.append(ContainerEvent("Warning", "Unhealthy", text))
        if w.last == result.success:
            w.run += 1
        else:
            w.last, w.run = result.success, 1
        threshold = w.spec.success_threshold if result.success else w.spec.failure_threshold
        if w.run < threshold:
            return out
        out += self._publish(result.probe, result.success, now)
        return out

    def _publish(self, name: ProbeType, success: bool, now: float) -> list[Decision]:
        if name == "readiness":
            if success:
                self._workers[name].fast_gap = 0.0  # first Ready: the regular ticks from now on
            if success == self.ready:
                return []
            self.ready = success
            return [SetReady(success)]
        if success:
            if name == "startup" and not self.started:
                self.started = True
                out: list[Decision] = [SetStarted(True)]
                readiness = self._workers.get("readiness")
                if readiness is None:
                    self.ready = True
                    out.append(SetReady(True))
                else:
                    readiness.triggered_at = now  # the kubelet's manual readiness trigger
                    readiness.next_tick = self._first_tick(readiness, now)
                liveness = self._workers.get("liveness")
                if liveness is not None:
                    liveness.next_tick = self._first_tick(liveness, now)
                return out
            return []
        # A published liveness or startup failure: kill, and hold until the new container.
        self.on_hold = True
        for w in self._workers.values():
            w.run = 0
        what = "liveness" if name == "liveness" else "startup"
        message = f"Container {self.container} failed {what} probe"
        if self.restarts:
            message += ", will be restarted"
        out = [
            KillContainer(
                "LivenessProbe" if name == "liveness" else "StartupProbe", message, self.restarts
            )
        ]
        if self.ready:
            self.ready = False
            out.append(SetReady(False))
        return out
