"""The node lifecycle controller's decision for one node name. Pure.

What lives here, after kube-controller-manager's node lifecycle controller,
its taint eviction controller and the pod garbage collector:

* **Health**: a node whose Ready condition's ``lastHeartbeatTime`` is older
  than the grace period (``--node-monitor-grace-period``) gets Ready,
  MemoryPressure, DiskPressure and PIDPressure set to Unknown (reason
  ``NodeStatusUnknown``, "Kubelet stopped posting node status."); a node that
  never posted a Ready condition gets it as Unknown (``NodeStatusNeverUpdated``)
  once the startup grace period has passed since its creation.
* **Taints**: the NoSchedule taints that mirror conditions (upstream's
  ``doNoScheduleTaintingPass``: Ready False -> not-ready, Unknown ->
  unreachable, pressure conditions, cordon) and the NoExecute taint for an
  unready node (not-ready or unreachable), stamped with ``timeAdded``; all
  removed once the node's agent posts Ready=True again. A ``NodeNotReady``
  event on the node goes with the NoExecute taint.
* **Pods on an unreachable node** get their Ready condition set to False
  (upstream ``MarkPodsNotReady``, with a ``NodeNotReady`` warning).
* **Eviction** (the taint manager): a pod on a node with NoExecute taints is
  deleted (gracefully: it stays Terminating until its agent confirms) once it
  no longer tolerates them: at once for a taint it does not tolerate; after
  the smallest ``tolerationSeconds`` of the tolerations it uses, counted from
  the taint's ``timeAdded``. A pod with no toleration for the not-ready or
  unreachable taint is treated as tolerating it for the pod eviction timeout
  (``--pod-eviction-timeout``), as upstream's DefaultTolerationSeconds
  admission gives every pod. The pod gets the ``DisruptionTarget`` condition
  and a ``TaintManagerEviction`` event first.
* **Pod GC**: pods bound to a node that does not exist are deleted with grace
  0, once they are older than the quarantine (upstream waits the same 40 s
  before trusting that a node is really gone).

What must not: I/O, a clock (``now`` is a parameter), or reading anything but
the node and the pods bound to it.

Deliberate differences from upstream: the heartbeat age is read from the
condition itself rather than from when the controller saw it change (one
machine, one clock); there is no per-zone eviction rate limiting; pods are
marked not ready only while the node is Unknown (a node reporting Ready=False
has a live agent that reports its own pods); a NoExecute taint without
``timeAdded`` counts as added long ago.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from meshwork.core.reconcile import (
    Action,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.core.scheduler_filters import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TaintInfo,
    TolerationInfo,
)
from meshwork.model.core import Node, NodeCondition, NodeStatus, Taint
from meshwork.model.pod import Pod, PodCondition, PodStatus

# kube-controller-manager defaults.
DEFAULT_GRACE_PERIOD_S = 40.0  # --node-monitor-grace-period
DEFAULT_STARTUP_GRACE_PERIOD_S = 60.0  # --node-startup-grace-period
DEFAULT_POD_EVICTION_TIMEOUT_S = 300.0  # --pod-eviction-timeout / DefaultTolerationSeconds
DEFAULT_POD_GC_QUARANTINE_S = 40.0  # podgc quarantineTime
# A look again just after a deadline, so the comparison is past it.
_JUST_AFTER = 0.01

TAINT_MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
TAINT_DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
TAINT_PID_PRESSURE = "node.kubernetes.io/pid-pressure"
TAINT_NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"

# nodeConditionToTaintKeyStatusMap: (condition type, status) -> NoSchedule taint key.
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): TAINT_NOT_READY,
    ("Ready", "Unknown"): TAINT_UNREACHABLE,
    ("MemoryPressure", "True"): TAINT_MEMORY_PRESSURE,
    ("DiskPressure", "True"): TAINT_DISK_PRESSURE,
    ("PIDPressure", "True"): TAINT_PID_PRESSURE,
    ("NetworkUnavailable", "True"): TAINT_NETWORK_UNAVAILABLE,
}
_NO_SCHEDULE_MANAGED = frozenset({*CONDITION_TAINTS.values(), TAINT_UNSCHEDULABLE})
_NO_EXECUTE_MANAGED = frozenset({TAINT_NOT_READY, TAINT_UNREACHABLE})
# The conditions set to Unknown when the agent goes silent (NetworkUnavailable
# is left alone: the control plane owns it).
_SILENT_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

REASON_UNKNOWN = "NodeStatusUnknown"
MESSAGE_UNKNOWN = "Kubelet stopped posting node status."
REASON_NEVER = "NodeStatusNeverUpdated"
MESSAGE_NEVER = "Kubelet never posted node status."


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """The controller's timings, in seconds."""

    grace_period: float = DEFAULT_GRACE_PERIOD_S
    startup_grace_period: float = DEFAULT_STARTUP_GRACE_PERIOD_S
    pod_eviction_timeout: float = DEFAULT_POD_EVICTION_TIMEOUT_S
    pod_gc_quarantine: float = DEFAULT_POD_GC_QUARANTINE_S


def node_ref(name: str, uid: str | None) -> ObjectRef:
    return ObjectRef("", "Node", None, name, uid)


def _pod_ref(pod: Pod) -> ObjectRef:
    return ObjectRef("", "Pod", pod.metadata.namespace, pod.metadata.name or "", pod.metadata.uid)


def _condition(conditions: Iterable[NodeCondition], kind: str) -> NodeCondition | None:
    return next((c for c in conditions if c.type == kind), None)


# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------


def heartbeat_deadline(node: Node, config: LifecycleConfig) -> float | None:
    """When the node's status goes stale (epoch seconds), or None if it cannot be told."""
    conditions = (node.status.conditions if node.status else None) or []
    ready = _condition(conditions, "Ready")
    created = parse_time(node.metadata.creation_timestamp)
    if ready is None:
        return created + config.startup_grace_period if created is not None else None
    seen = parse_time(ready.last_heartbeat_time) or parse_time(ready.last_transition_time) or created
    return seen + config.grace_period if seen is not None else None


def silenced_conditions(node: Node, now: float) -> list[NodeCondition]:
    """The node's conditions once its agent is known to be silent (upstream tryUpdateNodeHealth)."""
    stamp = rfc3339(now)
    conditions = [c.model_copy() for c in (node.status.conditions if node.status else None) or []]
    for kind in _SILENT_CONDITIONS:
        current = _condition(conditions, kind)
        if current is None:
            conditions.append(NodeCondition(
                type=kind, status="Unknown", reason=REASON_NEVER, message=MESSAGE_NEVER,
                last_heartbeat_time=node.metadata.creation_timestamp, last_transition_time=stamp,
            ))  # fmt: skip
        elif current.status != "Unknown":
            current.status = "Unknown"
            current.reason = REASON_UNKNOWN
            current.message = MESSAGE_UNKNOWN
            current.last_transition_time = stamp
    return conditions


# ---------------------------------------------------------------------------
# Taints
# ---------------------------------------------------------------------------


def wanted_taints(conditions: Iterable[NodeCondition], unschedulable: bool) -> set[tuple[str, str]]:
    """(key, effect) of every taint this controller wants on a node in this state."""
    wanted: set[tuple[str, str]] = set()
    for cond in conditions:
        key = CONDITION_TAINTS.get((cond.type, cond.status))
        if key is not None:
            wanted.add((key, "NoSchedule"))
            if key in _NO_EXECUTE_MANAGED:
                wanted.add((key, "NoExecute"))
    if unschedulable:
        wanted.add((TAINT_UNSCHEDULABLE, "NoSchedule"))
    return wanted


def _managed(taint: Taint) -> bool:
    if taint.effect == "NoSchedule":
        return taint.key in _NO_SCHEDULE_MANAGED
    return taint.effect == "NoExecute" and taint.key in _NO_EXECUTE_MANAGED


def reconcile_taints(taints: Sequence[Taint], wanted: set[tuple[str, str]], now: float) -> list[Taint]:
    """``taints`` with the managed ones made equal to ``wanted``; others kept as they are.

    A taint already present keeps its ``timeAdded``; a new one gets ``now``
    (upstream SwapNodeControllerTaint stamps what it adds).
    """
    kept = [t for t in taints if not _managed(t) or (t.key, t.effect) in wanted]
    have = {(t.key, t.effect) for t in kept}
    stamp = rfc3339(now)
    added = [Taint.model_validate({"key": k, "effect": e, "timeAdded": stamp}) for k, e in sorted(wanted - have)]
    return kept + added


# ---------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------


def _tolerations(pod: Pod) -> list[tuple[TolerationInfo, int | None]]:
    return [
        (TolerationInfo(t.key or "", t.operator or "Equal", t.value or "", t.effect or ""), t.toleration_seconds)
        for t in pod.spec.tolerations or ()
    ]


def eviction_time(pod: Pod, taints: Sequence[Taint], config: LifecycleConfig) -> float | None:
    """When the taint manager deletes ``pod`` (epoch seconds; 0.0 = now), or None for never.

    Upstream ``processPodOnNode``: a NoExecute taint the pod does not tolerate
    evicts it at once; otherwise it goes after the smallest tolerationSeconds
    among the tolerations it uses (forever when none sets one). The clock
    starts at the latest ``timeAdded`` of those taints.
    """
    no_execute = [t for t in taints if t.effect == "NoExecute"]
    if not no_execute:
        return None
    tolerations = _tolerations(pod)
    seconds: list[float] = []
    start = 0.0
    for taint in no_execute:
        info = TaintInfo(taint.key, taint.value or "", "NoExecute")
        used = [s for t, s in tolerations if t.tolerates(info)]
        if not used:
            if taint.key not in _NO_EXECUTE_MANAGED:
                return 0.0
            used = [int(config.pod_eviction_timeout)]  # DefaultTolerationSeconds
        seconds.extend(float(s) for s in used if s is not None)
        start = max(start, parse_time(taint.time_added) or 0.0)
    if not seconds:
        return None
    shortest = min(seconds)
    return 0.0 if shortest <= 0 else start + shortest


def _with_condition(status: PodStatus, condition: PodCondition) -> PodStatus:
    others = [c for c in status.conditions or [] if c.type != condition.type]
    return status.model_copy(update={"conditions": [*others, condition]})


def _pod_actions(
    pods: Iterable[Pod], taints: Sequence[Taint], unreachable: bool, now: float, config: LifecycleConfig
) -> tuple[list[Action], float | None]:
    """Mark pods not ready on an unreachable node, and evict those past their toleration."""
    actions: list[Action] = []
    wakes: list[float] = []
    stamp = rfc3339(now)
    for pod in sorted(pods, key=lambda p: (p.metadata.namespace or "", p.metadata.name or "")):
        if pod.metadata.deletion_timestamp is not None:
            continue
        status = pod.status or PodStatus()
        new_status = status
        ready = next((c for c in status.conditions or [] if c.type == "Ready"), None)
        not_ready = unreachable and ready is not None and ready.status == "True"
        if not_ready:
            assert ready is not None
            new_status = _with_condition(new_status, ready.model_copy(update={"status": "False", "last_transition_time": stamp}))
        due = eviction_time(pod, taints, config)
        evict = due is not None and due <= now
        if due is not None and not evict:
            wakes.append(due - now + _JUST_AFTER)
        if evict:
            new_status = _with_condition(new_status, PodCondition(
                type="DisruptionTarget", status="True", reason="DeletionByTaintManager",
                message="Taint manager: deleting due to NoExecute taint", last_transition_time=stamp,
            ))  # fmt: skip
        if new_status is not status:
            actions.append(UpdateStatus(pod.model_copy(update={"status": new_status})))
        ref = _pod_ref(pod)
        if not_ready:
            actions.append(RecordEvent(ref, "Warning", "NodeNotReady", "Node is not ready"))
        if evict:
            name = f"{pod.metadata.namespace}/{pod.metadata.name}"
            actions.append(RecordEvent(ref, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {name}"))
            actions.append(DeleteObject("", "Pod", pod.metadata.namespace, pod.metadata.name or "", pod.metadata.uid))
    return actions, min(wakes) if wakes else None


def collect_orphans(pods: Iterable[Pod], now: float, config: LifecycleConfig) -> Outcome:
    """Pod GC for a node that does not exist: delete its pods with grace 0 after the quarantine."""
    actions: list[Action] = []
    wakes: list[float] = []
    for pod in sorted(pods, key=lambda p: (p.metadata.namespace or "", p.metadata.name or "")):
        created = parse_time(pod.metadata.creation_timestamp) or 0.0
        due = created + config.pod_gc_quarantine
        if due > now:
            wakes.append(due - now + _JUST_AFTER)
            continue
        actions.append(DeleteObject(
            "", "Pod", pod.metadata.namespace, pod.metadata.name or "", pod.metadata.uid, grace_period=0,
        ))  # fmt: skip
    return Outcome(tuple(actions), min(wakes) if wakes else None)


# ---------------------------------------------------------------------------
# The reconcile
# ---------------------------------------------------------------------------


def _needs_pods(conditions: Iterable[NodeCondition], taints: Sequence[Taint]) -> bool:
    ready = _condition(conditions, "Ready")
    return (ready is not None and ready.status == "Unknown") or any(t.effect == "NoExecute" for t in taints)


def reconcile_node(
    name: str,
    node: Node | None,
    pods_on_node: Callable[[], Sequence[Pod]],
    now: float,
    config: LifecycleConfig = LifecycleConfig(),
) -> Outcome:
    """One pass over node ``name``: its health, its taints, and the pods bound to it.

    ``pods_on_node`` returns the pods whose ``spec.nodeName`` is ``name``; it
    is called only when they matter (the node is gone, unreachable, or has a
    NoExecute taint), so a healthy node's heartbeat costs no pod scan.
    """
    if node is None:
        return collect_orphans(pods_on_node(), now, config)
    actions: list[Action] = []
    wakes: list[float] = []
    conditions = list((node.status.conditions if node.status else None) or [])
    deadline = heartbeat_deadline(node, config)
    if deadline is not None and now > deadline:
        silenced = silenced_conditions(node, now)
        if silenced != conditions:
            status = node.status.model_copy(update={"conditions": silenced}) if node.status else NodeStatus(conditions=silenced)
            actions.append(UpdateStatus(node.model_copy(update={"status": status})))
            conditions = silenced
    elif deadline is not None:
        wakes.append(deadline - now + _JUST_AFTER)

    current = list(node.spec.taints or [])
    taints = reconcile_taints(current, wanted_taints(conditions, bool(node.spec.unschedulable)), now)
    if [(t.key, t.effect) for t in taints] != [(t.key, t.effect) for t in current]:
        spec = node.spec.model_copy(update={"taints": taints or None})
        actions.append(UpdateObject(node.model_copy(update={"spec": spec})))
        had = {(t.key, t.effect) for t in current}
        if any(t.effect == "NoExecute" and t.key in _NO_EXECUTE_MANAGED and (t.key, t.effect) not in had for t in taints):
            actions.append(RecordEvent(node_ref(name, node.metadata.uid), "Normal", "NodeNotReady",
                                       f"Node {name} status is now: NodeNotReady"))  # fmt: skip

    if _needs_pods(conditions, taints):
        ready = _condition(conditions, "Ready")
        unreachable = ready is not None and ready.status == "Unknown"
        pod_actions, wake = _pod_actions(pods_on_node(), taints, unreachable, now, config)
        actions.extend(pod_actions)
        if wake is not None:
            wakes.append(wake)
    return Outcome(tuple(actions), min(wakes) if wakes else None)
