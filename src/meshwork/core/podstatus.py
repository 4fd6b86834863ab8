"""The pod conditions the node agent reports, as a pure function of container statuses.

What lives here: kubelet's ``generateAPIPodStatus`` condition rules
(``PodReadyToStartContainers``, ``Initialized``, ``ContainersReady``,
``Ready``), with readiness gates and the ``lastTransitionTime`` kept from the
previous status while a condition's value does not change. ``PodScheduled``
is True: the pod is bound to this node (the kubelet reports it so too).

What must not: clocks (``now`` is an RFC 3339 string parameter), I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from meshwork.model.pod import ContainerStatus, PodCondition, PodPhase, PodSpec

READY_TO_START = "PodReadyToStartContainers"
INITIALIZED = "Initialized"
CONTAINERS_READY = "ContainersReady"
READY = "Ready"
SCHEDULED = "PodScheduled"

# The order `kubectl describe` shows them in.
_ORDER = (READY_TO_START, INITIALIZED, READY, CONTAINERS_READY, SCHEDULED)


def _by_name(statuses: Sequence[ContainerStatus] | None) -> dict[str, ContainerStatus]:
    return {s.name: s for s in statuses or ()}


def _names(names: list[str]) -> str:
    return "[" + " ".join(names) + "]"


def _uninitialized(spec: PodSpec, init_statuses: Sequence[ContainerStatus] | None) -> list[str]:
    """Init containers that have not completed (native sidecars count once started)."""
    by = _by_name(init_statuses)
    out: list[str] = []
    for c in spec.init_containers or ():
        st = by.get(c.name)
        if c.restart_policy == "Always":
            if st is None or not st.started:
                out.append(c.name)
            continue
        term = st.state.terminated if st is not None and st.state is not None else None
        if term is None or term.exit_code != 0:
            out.append(c.name)
    return out


def _any_regular_started(spec: PodSpec, statuses: Sequence[ContainerStatus] | None) -> bool:
    """kubelet ``HasAnyRegularContainerStarted``: one app container is running or has run."""
    by = _by_name(statuses)
    for c in spec.containers:
        st = by.get(c.name)
        if st is not None and st.state is not None and (st.state.running or st.state.terminated):
            return True
    return False


def _unready(
    spec: PodSpec,
    init_statuses: Sequence[ContainerStatus] | None,
    statuses: Sequence[ContainerStatus] | None,
) -> list[str]:
    by, init_by = _by_name(statuses), _by_name(init_statuses)
    out = [c.name for c in spec.init_containers or ()
           if c.restart_policy == "Always" and not (init_by.get(c.name) and init_by[c.name].ready)]  # fmt: skip
    out += [c.name for c in spec.containers if not (by.get(c.name) and by[c.name].ready)]
    return out


def pod_conditions(
    spec: PodSpec,
    phase: PodPhase,
    init_statuses: Sequence[ContainerStatus] | None,
    statuses: Sequence[ContainerStatus] | None,
    *,
    sandbox_ready: bool,
    previous: Sequence[PodCondition] | None,
    now: str,
) -> list[PodCondition]:
    """The pod's conditions, keeping transition times of unchanged ones from ``previous``."""
    prev = {c.type: c for c in previous or ()}
    computed: dict[str, tuple[bool, str | None, str | None]] = {}
    computed[READY_TO_START] = (sandbox_ready, None, None)
    pending_init = _uninitialized(spec, init_statuses)
    known = _by_name(init_statuses)
    if phase == "Succeeded" and all(c.name in known for c in spec.init_containers or ()):
        computed[INITIALIZED] = (True, "PodCompleted", None)
    elif _any_regular_started(spec, statuses):
        # Initialized once: a sidecar restarting later does not undo it.
        computed[INITIALIZED] = (True, None, None)
    elif pending_init:
        computed[INITIALIZED] = (
            False, "ContainersNotInitialized",
            f"containers with incomplete status: {_names(pending_init)}",
        )  # fmt: skip
    else:
        computed[INITIALIZED] = (True, None, None)
    if phase in ("Succeeded", "Failed"):
        why = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        computed[CONTAINERS_READY] = (False, why, None)
        computed[READY] = (False, why, None)
    else:
        unready = _unready(spec, init_statuses, statuses)
        if unready:
            msg = f"containers with unready status: {_names(unready)}"
            computed[CONTAINERS_READY] = (False, "ContainersNotReady", msg)
            computed[READY] = (False, "ContainersNotReady", msg)
        else:
            computed[CONTAINERS_READY] = (True, None, None)
            gates = [g.condition_type for g in spec.readiness_gates or ()]
            missing = [g for g in gates if prev.get(g) is None or prev[g].status != "True"]
            if missing:
                computed[READY] = (False, "ReadinessGatesNotReady", ", ".join(
                    f'corresponding condition of pod readiness gate "{g}" does not exist.' if g not in prev
                    else f'the status of pod readiness gate "{g}" is not "True", but {prev[g].status}'
                    for g in missing))  # fmt: skip
            else:
                computed[READY] = (True, None, None)
    # The pod is on this node, so it was scheduled (kubelet reports PodScheduled True).
    computed[SCHEDULED] = (True, None, None)
    out: list[PodCondition] = []
    for kind in _ORDER:
        ok, reason, message = computed[kind]
        status: Literal["True", "False"] = "True" if ok else "False"
        old = prev.get(kind)
        since = old.last_transition_time if old is not None and old.status == status else now
        out.append(PodCondition(type=kind, status=status, reason=reason, message=message,
                                last_transition_time=since, last_probe_time=None))  # fmt: skip
    # Conditions set by others (readiness gates, DisruptionTarget ...) stay as they are.
    out += [c for t, c in prev.items() if t not in _ORDER]
    return out
