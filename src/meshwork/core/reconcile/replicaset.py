"""The ReplicaSet controller's decision: keep ``spec.replicas`` pods of the template.

What lives here: ``reconcile_replicaset`` (kube-controller-manager's
``syncReplicaSet``/``manageReplicas``/``calculateStatus``), the order in which
surplus pods are deleted (upstream ``ActivePodsWithRanks``), and the
ReplicaSet status counts.

What must not: the Deployment's rollout logic (``deployment``), template
hashing and pod-state questions (``podtemplate``), I/O or a clock.

Deliberate differences from upstream, all documented where they apply:

* No adoption of orphan pods and no release of owned pods whose labels no
  longer match: only pods whose controller ownerReference is this
  ReplicaSet's uid count.
* No "expectations" cache: the view is a consistent snapshot, and a created
  pod is visible before the next reconcile.
* The deletion ranking compares ready times and creation times exactly,
  without upstream's logarithmic buckets, and "pods on the same node" are
  counted among this ReplicaSet's own pods only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import (
    available_after,
    is_active,
    is_controlled_by,
    is_ready,
    parse_time,
    phase_of,
    pod_from_template,
    ready_since,
    restart_count,
)
from meshwork.model.pod import Pod
from meshwork.model.workloads import ReplicaSet, ReplicaSetStatus

# Upstream ``BurstReplicas``: at most this many creates or deletes per sync, so
# one huge scale-up cannot flood the API server; the next sync does the rest.
BURST_REPLICAS = 500
POD_DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# podPhaseToOrdinal: pods earlier in their life are cheaper to delete.
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def owned_pods(owner: ReplicaSet, pods: Iterable[Pod]) -> list[Pod]:
    """Pods whose controller is ``owner`` (any state)."""
    return [p for p in pods if is_controlled_by(p, owner)]


def replicaset_ref(rs: ReplicaSet) -> ObjectRef:
    return ObjectRef(
        "apps", "ReplicaSet", rs.metadata.namespace, rs.metadata.name or "", rs.metadata.uid
    )


def _deletion_cost(pod: Pod) -> int:
    raw = (pod.metadata.annotations or {}).get(POD_DELETION_COST_ANNOTATION)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _zero_first_then_newest(value: float | None) -> tuple[int, float]:
    """Sort key: a missing time first, then later times before earlier ones."""
    return (0, 0.0) if not value else (1, -value)


def pods_to_delete(pods: Sequence[Pod], count: int) -> list[Pod]:
    """The ``count`` pods upstream deletes first (``ActivePodsWithRanks``).

    Unassigned before assigned; Pending before Unknown before Running; not
    ready before ready; lower pod-deletion-cost first; pods sharing a node
    with more of their siblings first; more recently ready first; more
    restarts first; newer first; then by name so the choice is stable.
    """
    on_node = Counter(p.spec.node_name for p in pods if p.spec.node_name)

    def key(pod: Pod) -> tuple[object, ...]:
        node = pod.spec.node_name
        ready = is_ready(pod)
        return (
            1 if node else 0,
            _PHASE_ORDINAL.get(phase_of(pod), 0),
            1 if ready else 0,
            _deletion_cost(pod),
            -on_node[node] if node else 0,
            _zero_first_then_newest(ready_since(pod)) if ready else (0, 0.0),
            -restart_count(pod),
            _zero_first_then_newest(parse_time(pod.metadata.creation_timestamp)),
            pod.metadata.name or "",
        )

    return sorted(pods, key=key)[:count]


def _labels_include(labels: dict[str, str] | None, required: dict[str, str] | None) -> bool:
    have = labels or {}
    return all(have.get(k) == v for k, v in (required or {}).items())


def replicaset_status(rs: ReplicaSet, active: Sequence[Pod], now: float) -> ReplicaSetStatus:
    """Upstream ``calculateStatus`` over the active owned pods, before this sync acts."""
    min_ready = rs.spec.min_ready_seconds or 0
    template_labels = rs.spec.template.metadata.labels if rs.spec.template else None
    old = rs.status or ReplicaSetStatus()
    return ReplicaSetStatus(
        replicas=len(active),
        fully_labeled_replicas=sum(
            1 for p in active if _labels_include(p.metadata.labels, template_labels)
        ),
        ready_replicas=sum(1 for p in active if is_ready(p)),
        available_replicas=sum(1 for p in active if available_after(p, min_ready, now) == 0.0),
        observed_generation=rs.metadata.generation,
        terminating_replicas=old.terminating_replicas,
        conditions=old.conditions,
    )


def _status_key(status: ReplicaSetStatus | None) -> tuple[object, ...]:
    s = status or ReplicaSetStatus()
    return (
        s.replicas,
        s.fully_labeled_replicas or 0,
        s.ready_replicas or 0,
        s.available_replicas or 0,
        s.observed_generation,
    )


def _manage_replicas(rs: ReplicaSet, active: Sequence[Pod]) -> list[Action]:
    """Create or delete pods so that ``spec.replicas`` are active (``manageReplicas``)."""
    actions: list[Action] = []
    about = replicaset_ref(rs)
    diff = len(active) - rs.spec.replicas
    if diff < 0 and rs.spec.template is not None:
        for _ in range(min(-diff, BURST_REPLICAS)):
            pod = pod_from_template(rs.spec.template, rs)
            actions.append(CreateObject(pod))
            # The API server picks the name; the runner that applies the create
            # knows it. The message names the generateName prefix here.
            actions.append(RecordEvent(about, "Normal", "SuccessfulCreate",
                                       f"Created pod: {pod.metadata.generate_name}"))  # fmt: skip
    elif diff > 0:
        for pod in pods_to_delete(active, min(diff, BURST_REPLICAS)):
            name = pod.metadata.name or ""
            actions.append(DeleteObject("", "Pod", pod.metadata.namespace, name, pod.metadata.uid))
            actions.append(RecordEvent(about, "Normal", "SuccessfulDelete", f"Deleted pod: {name}"))
    return actions


def reconcile_replicaset(rs: ReplicaSet, pods: Iterable[Pod], now: float) -> Outcome:
    """One ReplicaSet sync: pods to create or delete, and the status to write.

    ``pods`` may hold any pods of the namespace; only those this ReplicaSet
    controls count. A ReplicaSet being deleted gets its status updated and
    nothing else. ``requeue_after`` is set when a ready pod will become
    available once ``minReadySeconds`` pass.
    """
    owned = owned_pods(rs, pods)
    active = [p for p in owned if is_active(p)]
    actions: list[Action] = []
    if rs.metadata.deletion_timestamp is None:
        actions += _manage_replicas(rs, active)
    status = replicaset_status(rs, active, now)
    if _status_key(status) != _status_key(rs.status):
        actions.append(UpdateStatus(rs.model_copy(update={"status": status})))
    min_ready = rs.spec.min_ready_seconds or 0
    waits = [w for p in active if (w := available_after(p, min_ready, now))]
    return Outcome(tuple(actions), min(waits) if waits else None)
