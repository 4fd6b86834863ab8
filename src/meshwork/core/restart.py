"""The kubelet's container restart policy, CrashLoopBackOff, and the pod phase, as pure decisions.

What lives here:

* ``should_restart``: does an exited container start again, given the pod's
  ``restartPolicy`` (Always / OnFailure / Never) and what kind of container it
  is (regular, init, or a native sidecar: an init container with
  ``restartPolicy: Always``).
* ``RestartTracker``: one per pod. It remembers each container's back-off
  (kubelet's ``flowcontrol.Backoff``: 10 s doubling to 5 min; an entry whose
  container ran for more than 2 x 5 min = 10 min since its last restart is
  reset), ``restartCount`` and ``lastState.terminated``, and answers "when may
  this container start again" as a ``RestartDecision``.
* ``pod_phase`` (upstream ``getPhase``) and ``completed_phase`` (the pod is
  done when its regular containers are done, whatever sidecars do).

What must not live here: processes, signals, clocks, logging. Time is always
a ``now: float`` parameter (seconds since the epoch); the shell sleeps until
``restart_at`` and calls back.

Upstream behaviour kept on purpose: the first exit of a container restarts it
at once (no back-off entry exists yet); the next waits 10 s, then 20 s, 40 s,
80 s, 160 s, 300 s, 300 s ... The CrashLoopBackOff message names the back-off
currently in force, in Go duration syntax ("back-off 1m20s restarting failed
container=app pod=web-1_default(uid)").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from meshwork.model.pod import (
    Container,
    ContainerStateTerminated,
    ContainerStatus,
    PodPhase,
    PodSpec,
    RestartPolicy,
)

BACKOFF_INITIAL = 10.0  # kubelet: backOffPeriod = 10 s (pkg/kubelet/kubelet.go)
BACKOFF_MAX = 300.0  # kubelet: MaxContainerBackOff = 300 s
BACKOFF_RESET_AFTER = (
    2 * BACKOFF_MAX
)  # flowcontrol.Backoff.hasExpired: stable after 2 x max (10 min)

REASON_CRASH_LOOP = "CrashLoopBackOff"  # waiting reason shown by `kubectl get pods`
REASON_BACKOFF = "BackOff"  # event reason (events.BackOffStartContainer)

ContainerKind = Literal["regular", "init", "sidecar"]


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """An Event about one container of the pod (Unhealthy, BackOff, Killing ...)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What to do with an exited container.

    ``restart_at`` None: it stays exited. Otherwise start it at that time (it
    may be ``now``). While waiting, the container shows ``waiting_reason`` /
    ``message`` (CrashLoopBackOff) and ``event`` is the BackOff event to record.
    """

    restart_at: float | None
    waiting_reason: str | None = None
    message: str | None = None
    event: ContainerEvent | None = None


def container_kind(container: Container, *, init: bool) -> ContainerKind:
    """Regular, init, or native sidecar (an init container with ``restartPolicy: Always``)."""
    if not init:
        return "regular"
    return "sidecar" if container.restart_policy == "Always" else "init"


def should_restart(policy: RestartPolicy, exit_code: int, kind: ContainerKind = "regular") -> bool:
    """Whether an exited container starts again (kubelet ``ShouldContainerBeRestarted``).

    Sidecars always restart (until the pod terminates). An init container that
    succeeded never runs again; one that failed is retried unless the pod's
    policy is Never (then the pod fails). Regular containers follow the policy.
    """
    if kind == "sidecar":
        return True
    if kind == "init":
        return exit_code != 0 and policy != "Never"
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def terminated_reason(exit_code: int, *, oom_killed: bool = False) -> str:
    """``lastState.terminated.reason`` as the container runtime reports it."""
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def rfc3339(ts: float) -> str:
    """A Kubernetes timestamp (``metav1.Time``: RFC 3339, whole seconds, UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String`` (10s, 1m20s, 5m0s, 1h0m0s, 1.5s)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ms = seconds * 1000
        return f"{sign}{ms:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{sign}{int(minutes)}m{sec_text}"
    return f"{sign}{sec_text}"


def format_pod(name: str, namespace: str, uid: str) -> str:
    """Upstream ``format.Pod``: ``name_namespace(uid)``."""
    return f"{name}_{namespace}({uid})"


@dataclass(slots=True)
class _Backoff:
    backoff: float
    last_update: float


@dataclass(slots=True)
class _Container:
    kind: ContainerKind
    restart_count: int = 0
    last_terminated: ContainerStateTerminated | None = None
    finished_at: float | None = None
    wants_restart: bool = False
    backoff: _Backoff | None = None


class RestartTracker:
    """Restart policy and back-off of every container of one pod.

    The shell calls ``exited`` when a container's process ends, sleeps until
    the decision's ``restart_at``, may call ``decide`` again at any time (it is
    a pure read), and calls ``restarted`` when it actually starts the container
    again (this is when upstream advances the back-off: ``backOff.Next``).
    """

    def __init__(self, *, pod: str, policy: RestartPolicy) -> None:
        """``pod`` is ``format_pod(name, namespace, uid)``; ``policy`` the pod's restartPolicy."""
        self.pod = pod
        self.policy: RestartPolicy = policy
        self._containers: dict[str, _Container] = {}

    def _get(self, name: str, kind: ContainerKind) -> _Container:
        state = self._containers.get(name)
        if state is None:
            state = self._containers[name] = _Container(kind=kind)
        return state

    def exited(
        self,
        name: str,
        exit_code: int,
        *,
        started_at: float,
        finished_at: float,
        now: float,
        kind: ContainerKind = "regular",
        oom_killed: bool = False,
        signal: int | None = None,
        message: str | None = None,
    ) -> RestartDecision:
        """Record an exit (``lastState.terminated``) and decide when the container may start again."""
        state = self._get(name, kind)
        state.kind = kind
        state.last_terminated = ContainerStateTerminated(
            exit_code=exit_code,
            signal=signal,
            reason=terminated_reason(exit_code, oom_killed=oom_killed),
            message=message,
            started_at=rfc3339(started_at),
            finished_at=rfc3339(finished_at),
        )
        state.finished_at = finished_at
        state.wants_restart = should_restart(self.policy, exit_code, kind)
        return self.decide(name, now)

    def decide(self, name: str, now: float) -> RestartDecision:
        """When the exited container ``name`` may start again (kubelet ``doBackOff``)."""
        state = self._containers.get(name)
        if state is None or state.finished_at is None or not state.wants_restart:
            return RestartDecision(restart_at=None)
        entry = state.backoff
        finished = state.finished_at
        if entry is None or finished - entry.last_update > BACKOFF_RESET_AFTER:
            return RestartDecision(restart_at=now)
        if now - finished >= entry.backoff:
            return RestartDecision(restart_at=now)
        delay = go_duration(entry.backoff)
        return RestartDecision(
            restart_at=finished + entry.backoff,
            waiting_reason=REASON_CRASH_LOOP,
            message=f"back-off {delay} restarting failed container={name} pod={self.pod}",
            event=ContainerEvent(
                "Warning", REASON_BACKOFF,
                f"Back-off restarting failed container {name} in pod {self.pod}",
            ),
        )  # fmt: skip

    def restarted(self, name: str, now: float) -> int:
        """The container was started again at ``now``: advance its back-off; return restartCount."""
        state = self._get(name, "regular")
        entry = state.backoff
        finished = state.finished_at if state.finished_at is not None else now
        if entry is None or finished - entry.last_update > BACKOFF_RESET_AFTER:
            state.backoff = _Backoff(backoff=BACKOFF_INITIAL, last_update=now)
        else:
            state.backoff = _Backoff(backoff=min(entry.backoff * 2, BACKOFF_MAX), last_update=now)
        state.restart_count += 1
        state.finished_at = None
        state.wants_restart = False
        return state.restart_count

    def restore(
        self,
        name: str,
        restart_count: int,
        last_terminated: ContainerStateTerminated | None,
        *,
        kind: ContainerKind = "regular",
    ) -> None:
        """Seed a container's count and last exit from a previous agent's status report.

        The back-off itself is not restored (upstream keeps it in memory too):
        a restarted agent starts counting delays afresh.
        """
        state = self._get(name, kind)
        state.kind = kind
        state.restart_count = max(state.restart_count, restart_count)
        if last_terminated is not None:
            state.last_terminated = last_terminated

    def restart_count(self, name: str) -> int:
        """``status.containerStatuses[].restartCount``."""
        state = self._containers.get(name)
        return state.restart_count if state else 0

    def last_terminated(self, name: str) -> ContainerStateTerminated | None:
        """``status.containerStatuses[].lastState.terminated`` (the most recent exit)."""
        state = self._containers.get(name)
        return state.last_terminated if state else None

    def current_backoff(self, name: str) -> float | None:
        """The back-off in force for ``name`` (None before its first restart)."""
        state = self._containers.get(name)
        return state.backoff.backoff if state and state.backoff else None


# ---------------------------------------------------------------------------
# Pod phase
# ---------------------------------------------------------------------------


def _status(statuses: Sequence[ContainerStatus] | None, name: str) -> ContainerStatus | None:
    for status in statuses or ():
        if status.name == name:
            return status
    return None


def _last_exit(status: ContainerStatus) -> int | None:
    last = status.last_state.terminated if status.last_state else None
    return last.exit_code if last else None


def pod_phase(
    spec: PodSpec,
    init_statuses: Sequence[ContainerStatus] | None,
    statuses: Sequence[ContainerStatus] | None,
    *,
    pod_is_terminal: bool = False,
) -> PodPhase:
    """The pod phase from its container statuses (kubelet ``getPhase``, with native sidecars)."""
    pending_init = 0
    pending_sidecars = 0
    failed_init = 0
    for c in spec.init_containers or ():
        if c.restart_policy == "Always":
            continue
        st = _status(init_statuses, c.name)
        state = st.state if st else None
        if st is None or state is None or state.running is not None:
            pending_init += 1
        elif state.terminated is not None:
            failed_init += state.terminated.exit_code != 0
        elif state.waiting is not None:
            last = _last_exit(st)
            if last is None:
                pending_init += 1
            else:
                failed_init += last != 0
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for c in spec.init_containers or ():
        if c.restart_policy != "Always":
            continue
        st = _status(init_statuses, c.name)
        state = st.state if st else None
        if st is None:
            unknown += 1
        elif state is None:
            pending_sidecars += 1
            unknown += 1
        elif state.running is not None:
            pending_sidecars += not st.started
            running += 1
        elif state.terminated is not None:
            pass  # exited sidecars do not count
        elif state.waiting is not None and _last_exit(st) is None:
            pending_sidecars += 1
            waiting += 1
    for c in spec.containers:
        st = _status(statuses, c.name)
        state = st.state if st else None
        if st is None or state is None:
            unknown += 1
        elif state.running is not None:
            running += 1
        elif state.terminated is not None:
            stopped += 1
            succeeded += state.terminated.exit_code == 0
        elif state.waiting is not None:
            if _last_exit(st) is not None:
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init and spec.restart_policy == "Never":
        return "Failed"
    if pending_init or (pending_sidecars and not pod_is_terminal) or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if pod_is_terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if spec.restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if spec.restart_policy == "Never" else "Running"
    return "Pending"


def completed_phase(
    spec: PodSpec,
    init_statuses: Sequence[ContainerStatus] | None,
    statuses: Sequence[ContainerStatus] | None,
) -> PodPhase | None:
    """Succeeded / Failed once the pod is done, else None.

    The pod is done when every regular container has exited and none will
    restart under the pod's policy (so never under Always), or when an init
    container failed under Never. Sidecars are ignored: the agent stops them
    once this returns a phase, and their exit codes do not change it.
    """
    for c in spec.init_containers or ():
        if c.restart_policy == "Always" or spec.restart_policy != "Never":
            continue
        st = _status(init_statuses, c.name)
        term = st.state.terminated if st and st.state else None
        if term is not None and term.exit_code != 0:
            return "Failed"
    if spec.restart_policy == "Always":
        return None
    failed = False
    for c in spec.containers:
        st = _status(statuses, c.name)
        term = st.state.terminated if st and st.state else None
        if term is None:
            return None
        if term.exit_code != 0:
            if spec.restart_policy == "OnFailure":
                return None
            failed = True
    return "Failed" if failed else "Succeeded"
