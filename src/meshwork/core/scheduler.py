"""The scheduler's decisions: place, preempt, bind many, queue order. Pure over a snapshot.

This is kube-scheduler's scheduling cycle done the Nomad way (STYLE.md §3.4):
``place(pod, snapshot)`` filters every node (``scheduler_filters``), scores
the feasible ones with NodeResourcesFit (LeastAllocated spreads, the default;
MostAllocated bin-packs) and picks the best, ties broken by node name or by an
injected ``random.Random``. When nothing fits it returns ``Unschedulable``
with upstream's FailedScheduling message and, when preemption is on, the
``Preemption`` (node and victims) that would make room. The shell binds with
a compare-and-swap write; a 409 means "take a new snapshot and place again".

What lives here: the cycle, scoring, preemption, the FitError message, queue
order. What must not: the snapshot's data and the filters themselves
(``scheduler_filters``), and any I/O, clock or logging.

Upstream behaviour followed on purpose:

* The message is FitError.Error(): ``0/N nodes are available: <count reason,
  ...>.`` with the "count reason" strings sorted as strings, then
  ``preemption: <message>.`` from PostFilter; upstream's preemption message
  already ends in a period, so real events end in ``..`` and so do ours.
* Preemption (DefaultPreemption): only pods of strictly lower priority are
  victims; ``preemptionPolicy: Never`` is not eligible; nodes failing a filter
  that eviction cannot fix are "Preemption is not helpful for scheduling";
  victims are chosen by removing all lower-priority pods, then reprieving the
  most important first; the node is chosen by lowest highest-victim priority,
  lowest priority sum, fewest victims, latest start of the top victims, then
  name. PodDisruptionBudgets and nominated pods are not modelled.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshwork.core.scheduler_filters import (
    BoundPod,
    ClusterSnapshot,
    NodeInfo,
    PodRequirements,
    pod_priority,
    requirements_of,
    resource_reasons,
    static_reason,
)
from meshwork.model.pod import Pod

MAX_NODE_SCORE = 100  # framework.MaxNodeScore
PRIORITY_OFFSET = 2**31  # upstream adds MaxInt32+1 so negative priorities sum sensibly
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."
NO_NODES = "no nodes available to schedule pods"  # upstream's ErrNoNodesAvailable
EXPECTED_DURATION_ANNOTATION = "meshwork.io/expected-duration-seconds"
_LATEST = "\uffff"  # sorts after any RFC 3339 timestamp: "no timestamp" counts as newest

Scoring = Literal["LeastAllocated", "MostAllocated"]
QueuePolicy = Literal["FIFO", "Priority", "ShortestJobFirst"]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """How to score and whether to preempt.

    ``scoring``: LeastAllocated spreads pods (kube-scheduler's default);
    MostAllocated bin-packs. ``rng``: when given, ties between equally scored
    nodes are broken at random (as upstream's selectHost does); otherwise the
    first node by name wins, so the same input always gives the same output.
    """

    scoring: Scoring = "LeastAllocated"
    cpu_weight: int = 1
    memory_weight: int = 1
    preemption: bool = True
    rng: random.Random | None = None


DEFAULT_CONFIG = SchedulerConfig()


@dataclass(frozen=True, slots=True)
class Placement:
    """The pod fits: bind it to ``node_name``. ``score_by_node`` covers every feasible node."""

    node_name: str
    score_by_node: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Preemption:
    """Delete ``victims`` (most important first) from ``node_name`` to make room for the pod."""

    node_name: str
    victims: tuple[BoundPod, ...]


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """Nothing fits. ``message`` is the FailedScheduling event text; ``preemption`` what would help."""

    message: str
    reasons_by_node: Mapping[str, tuple[str, ...]]
    preemption: Preemption | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """Bind pod ``namespace/name`` (``uid`` as the precondition) to ``node_name``."""

    namespace: str
    name: str
    uid: str
    node_name: str


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A pod of a batch that did not fit, and why."""

    pod: PodRequirements
    outcome: Unschedulable


@dataclass(frozen=True, slots=True)
class BindResult:
    """What ``bind_many`` decided, in input order, and the snapshot those decisions lead to."""

    bindings: tuple[Binding, ...]
    unplaced: tuple[Unplaced, ...]
    snapshot: ClusterSnapshot = field(repr=False)


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def fit_error_message(
    num_nodes: int, reasons_by_node: Mapping[str, Iterable[str]], post_filter: str = ""
) -> str:
    """FitError.Error(): ``0/N nodes are available: 2 Insufficient cpu, 1 node(s) .... <post_filter>.``"""
    counts = Counter(reason for reasons in reasons_by_node.values() for reason in reasons)
    message = f"0/{num_nodes} nodes are available:"
    histogram = sorted(f"{count} {reason}" for reason, count in counts.items())
    if histogram:
        message += f" {', '.join(histogram)}."
    if post_filter:
        message += f" {post_filter}."
    return message


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def _least_allocated(requested: int, capacity: int) -> int:
    return 0 if requested > capacity else (capacity - requested) * MAX_NODE_SCORE // capacity


def _most_allocated(requested: int, capacity: int) -> int:
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


_SCORERS: dict[str, Callable[[int, int], int]] = {
    "LeastAllocated": _least_allocated,
    "MostAllocated": _most_allocated,
}


def node_score(
    config: SchedulerConfig, alloc_cpu: int, cpu: int, alloc_memory: int, memory: int
) -> int:
    """NodeResourcesFit's score (0-100) with ``cpu``/``memory`` requested once the pod is there.

    Resources a node does not offer at all are left out of the weighted mean.
    """
    fn = _SCORERS[config.scoring]
    total = weights = 0
    if alloc_cpu > 0:
        total += fn(cpu, alloc_cpu) * config.cpu_weight
        weights += config.cpu_weight
    if alloc_memory > 0:
        total += fn(memory, alloc_memory) * config.memory_weight
        weights += config.memory_weight
    return total // weights if weights else 0


# ---------------------------------------------------------------------------
# Working state: the snapshot as flat integer lists, updated in place by bind_many
# ---------------------------------------------------------------------------


class _State:
    """A mutable, private copy of a snapshot's numbers, one list slot per node."""

    __slots__ = (
        "acpu",
        "amem",
        "apods",
        "dirty",
        "nodes",
        "pods",
        "reasons",
        "ucpu",
        "umem",
        "upods",
        "zcpu",
        "zmem",
    )

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        nodes = snapshot.nodes
        self.nodes = nodes
        self.acpu = [n.alloc_cpu for n in nodes]
        self.amem = [n.alloc_memory for n in nodes]
        self.apods = [n.alloc_pods for n in nodes]
        self.ucpu = [n.requested_cpu for n in nodes]
        self.umem = [n.requested_memory for n in nodes]
        self.upods = [len(n.pods) for n in nodes]
        self.zcpu = [n.nz_requested_cpu for n in nodes]
        self.zmem = [n.nz_requested_memory for n in nodes]
        self.pods: list[list[BoundPod] | None] = [None] * len(nodes)  # copied when first changed
        self.dirty: set[int] = set()
        # Static filter verdicts per pod shape: (reason per node, indices that pass).
        self.reasons: dict[tuple[object, ...], tuple[list[str | None], tuple[int, ...]]] = {}

    def static(self, pod: PodRequirements) -> tuple[list[str | None], tuple[int, ...]]:
        key = pod.shape
        hit = self.reasons.get(key)
        if hit is None:
            reasons = [static_reason(pod, n) for n in self.nodes]
            hit = (reasons, tuple(i for i, r in enumerate(reasons) if r is None))
            self.reasons[key] = hit
        return hit

    def pods_on(self, i: int) -> list[BoundPod]:
        pods = self.pods[i]
        return list(self.nodes[i].pods) if pods is None else pods

    def bind(self, i: int, pod: BoundPod) -> None:
        pods = self.pods[i]
        if pods is None:
            pods = self.pods[i] = list(self.nodes[i].pods)
        pods.append(pod)
        self.dirty.add(i)
        self.ucpu[i] += pod.cpu
        self.umem[i] += pod.memory
        self.upods[i] += 1
        self.zcpu[i] += pod.nz_cpu
        self.zmem[i] += pod.nz_memory

    def evict(self, i: int, victims: Iterable[BoundPod]) -> None:
        gone = {(v.namespace, v.name) for v in victims}
        kept = [p for p in self.pods_on(i) if (p.namespace, p.name) not in gone]
        self.pods[i] = kept
        self.dirty.add(i)
        self.ucpu[i] = sum(p.cpu for p in kept)
        self.umem[i] = sum(p.memory for p in kept)
        self.upods[i] = len(kept)
        self.zcpu[i] = sum(p.nz_cpu for p in kept)
        self.zmem[i] = sum(p.nz_memory for p in kept)

    def snapshot(self) -> ClusterSnapshot:
        nodes: list[NodeInfo] = list(self.nodes)
        for i in self.dirty:
            nodes[i] = nodes[i].with_pods(tuple(self.pods_on(i)))
        return ClusterSnapshot(tuple(nodes))


# ---------------------------------------------------------------------------
# The cycle
# ---------------------------------------------------------------------------


def _select(
    pod: PodRequirements, st: _State, config: SchedulerConfig, scores: dict[str, int] | None
) -> int:
    """Index of the best feasible node, or -1. Fills ``scores`` when given. O(nodes), integers only."""
    _, candidates = st.static(pod)
    cpu, mem, nz_cpu, nz_mem = pod.cpu, pod.memory, pod.nz_cpu, pod.nz_memory
    acpu, amem, apods, ucpu, umem, upods = st.acpu, st.amem, st.apods, st.ucpu, st.umem, st.upods
    zcpu, zmem = st.zcpu, st.zmem
    rng = config.rng
    best, best_score = -1, -1
    ties: list[int] = []
    for i in candidates:
        if upods[i] >= apods[i]:
            continue
        if cpu and cpu > acpu[i] - ucpu[i]:
            continue
        if mem and mem > amem[i] - umem[i]:
            continue
        score = node_score(config, acpu[i], zcpu[i] + nz_cpu, amem[i], zmem[i] + nz_mem)
        if scores is not None:
            scores[st.nodes[i].name] = score
        if score > best_score:
            best, best_score = i, score
            if rng is not None:
                ties = [i]
        elif rng is not None and score == best_score:
            ties.append(i)
    if rng is not None and len(ties) > 1:
        return ties[rng.randrange(len(ties))]
    return best


def _diagnose(pod: PodRequirements, st: _State) -> tuple[dict[str, tuple[str, ...]], set[int]]:
    """Why each node failed, and which failures no eviction can fix."""
    static_reasons, _ = st.static(pod)
    reasons: dict[str, tuple[str, ...]] = {}
    unresolvable: set[int] = set()
    for i, node in enumerate(st.nodes):
        reason = static_reasons[i]
        if reason is not None:
            reasons[node.name] = (reason,)
            unresolvable.add(i)
            continue
        found, hopeless = resource_reasons(
            pod, (st.acpu[i], st.amem[i], st.apods[i]), (st.ucpu[i], st.umem[i], st.upods[i])
        )
        reasons[node.name] = found
        if hopeless:
            unresolvable.add(i)
    return reasons, unresolvable


def _importance(pod: BoundPod) -> tuple[int, str]:
    """MoreImportantPod as a sort key: higher priority first, then the longer-running pod."""
    return (-pod.priority, pod.start_time or _LATEST)


def _victims_on(pod: PodRequirements, st: _State, i: int) -> tuple[BoundPod, ...] | tuple[str, ...]:
    """SelectVictimsOnNode: the victims (BoundPods), or the reasons the node cannot help (strs)."""
    potential = [p for p in st.pods_on(i) if p.priority < pod.priority]
    if not potential:
        return (NO_VICTIMS,)
    alloc = (st.acpu[i], st.amem[i], st.apods[i])
    cpu = st.ucpu[i] - sum(p.cpu for p in potential)
    mem = st.umem[i] - sum(p.memory for p in potential)
    count = st.upods[i] - len(potential)
    reasons, _ = resource_reasons(pod, alloc, (cpu, mem, count))
    if reasons:
        return reasons
    victims: list[BoundPod] = []
    for p in sorted(potential, key=_importance):
        if resource_reasons(pod, alloc, (cpu + p.cpu, mem + p.memory, count + 1))[0]:
            victims.append(p)
        else:
            cpu, mem, count = cpu + p.cpu, mem + p.memory, count + 1
    return tuple(victims)


def _pick(candidates: list[tuple[str, tuple[BoundPod, ...]]]) -> tuple[str, tuple[BoundPod, ...]]:
    """pickOneNodeForPreemption: successive minimum criteria, then the first by name."""

    def earliest_top_start(victims: tuple[BoundPod, ...]) -> str:
        top = victims[0].priority
        return min(v.start_time or _LATEST for v in victims if v.priority == top)

    criteria: list[Callable[[tuple[BoundPod, ...]], int | str]] = [
        lambda v: v[0].priority,
        lambda v: sum(p.priority + PRIORITY_OFFSET for p in v),
        len,
    ]
    for criterion in criteria:
        best = min(criterion(v) for _, v in candidates)
        candidates = [c for c in candidates if criterion(c[1]) == best]
        if len(candidates) == 1:
            return candidates[0]
    latest = max(earliest_top_start(v) for _, v in candidates)
    candidates = [c for c in candidates if earliest_top_start(c[1]) == latest]
    return min(candidates)


def _preempt(
    pod: PodRequirements, st: _State, unresolvable: set[int]
) -> tuple[Preemption | None, str]:
    """DefaultPreemption's PostFilter: (the choice, or None with upstream's message)."""
    if pod.preempt_never:
        return None, NOT_ELIGIBLE_NEVER
    statuses: dict[str, tuple[str, ...]] = {}
    candidates: list[tuple[str, tuple[BoundPod, ...]]] = []
    for i, node in enumerate(st.nodes):
        if i in unresolvable:
            statuses[node.name] = (NOT_HELPFUL,)
            continue
        found = _victims_on(pod, st, i)
        if found and isinstance(found[0], BoundPod):
            candidates.append((node.name, tuple(v for v in found if isinstance(v, BoundPod))))
        else:
            statuses[node.name] = tuple(r for r in found if isinstance(r, str))
    if not candidates:
        return None, fit_error_message(len(st.nodes), statuses)
    name, victims = _pick(candidates)
    return Preemption(name, victims), ""


def _unschedulable(pod: PodRequirements, st: _State, config: SchedulerConfig) -> Unschedulable:
    if not st.nodes:
        return Unschedulable(NO_NODES, {})
    reasons, unresolvable = _diagnose(pod, st)
    preemption: Preemption | None = None
    post_filter = ""
    if config.preemption:
        preemption, message = _preempt(pod, st, unresolvable)
        post_filter = f"preemption: {message}" if message else ""
    return Unschedulable(
        fit_error_message(len(st.nodes), reasons, post_filter), reasons, preemption
    )


def _requirements(pod: Pod | PodRequirements) -> PodRequirements:
    return pod if isinstance(pod, PodRequirements) else requirements_of(pod)


def place(
    pod: Pod | PodRequirements, snapshot: ClusterSnapshot, config: SchedulerConfig = DEFAULT_CONFIG
) -> Placement | Unschedulable:
    """One scheduling cycle: filter, score, pick; or say why not and what preemption would do."""
    req = _requirements(pod)
    st = _State(snapshot)
    scores: dict[str, int] = {}
    best = _select(req, st, config, scores)
    if best >= 0:
        return Placement(st.nodes[best].name, scores)
    return _unschedulable(req, st, config)


def preempt(pod: Pod | PodRequirements, snapshot: ClusterSnapshot) -> Preemption | None:
    """The node and the fewest, least important victims whose deletion lets ``pod`` fit, or None.

    None also when the pod already fits somewhere (nothing needs evicting).
    """
    req = _requirements(pod)
    st = _State(snapshot)
    if _select(req, st, DEFAULT_CONFIG, None) >= 0:
        return None
    _, unresolvable = _diagnose(req, st)
    return _preempt(req, st, unresolvable)[0]


def apply_outcome(
    snapshot: ClusterSnapshot, pod: PodRequirements, outcome: Placement | Unschedulable
) -> ClusterSnapshot:
    """The snapshot once ``outcome`` is carried out: the pod bound, or victims gone and the pod's room held."""
    if isinstance(outcome, Placement):
        return snapshot.with_bound(outcome.node_name, pod.as_bound())
    if outcome.preemption is not None:
        node = outcome.preemption.node_name
        return snapshot.without(node, outcome.preemption.victims).with_bound(node, pod.as_bound())
    return snapshot


def bind_many(
    pods: Iterable[Pod | PodRequirements],
    snapshot: ClusterSnapshot,
    config: SchedulerConfig = DEFAULT_CONFIG,
) -> BindResult:
    """Place ``pods`` one after another, in the order given (sort them with ``queue_key``).

    Each placement updates the allocations the next pod sees, so a batch never
    overcommits a node. A pod that gets a ``Preemption`` holds its room on
    that node for the rest of the batch (its victims are gone from the
    working view), as upstream's nominated pods do. The result equals calling
    ``place`` and ``apply_outcome`` pod by pod.
    """
    st = _State(snapshot)
    bindings: list[Binding] = []
    unplaced: list[Unplaced] = []
    for pod in pods:
        req = _requirements(pod)
        best = _select(req, st, config, None)
        if best >= 0:
            st.bind(best, req.as_bound())
            bindings.append(Binding(req.namespace, req.name, req.uid, st.nodes[best].name))
            continue
        outcome = _unschedulable(req, st, config)
        if outcome.preemption is not None:
            i = next(k for k, n in enumerate(st.nodes) if n.name == outcome.preemption.node_name)
            st.evict(i, outcome.preemption.victims)
            st.bind(i, req.as_bound())
        unplaced.append(Unplaced(req, outcome))
    return BindResult(tuple(bindings), tuple(unplaced), st.snapshot())


# ---------------------------------------------------------------------------
# Queue order
# ---------------------------------------------------------------------------


def expected_duration(pod: Pod) -> float | None:
    """The ``meshwork.io/expected-duration-seconds`` annotation as seconds, or None if absent or invalid."""
    raw = (pod.metadata.annotations or {}).get(EXPECTED_DURATION_ANNOTATION)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def queue_key(
    pod: Pod, policy: QueuePolicy = "FIFO", priority_classes: Mapping[str, int] | None = None
) -> tuple[int | float | str, ...]:
    """Sort key for the pending queue (smallest first).

    * FIFO: creationTimestamp, then namespace/name (a pod without a timestamp is newest).
    * Priority (kube-scheduler's PrioritySort): higher priority first, then FIFO.
    * ShortestJobFirst: higher priority first, then the smallest
      ``meshwork.io/expected-duration-seconds``; pods without a valid
      annotation come after every annotated pod of their priority, then FIFO.
      Priority still wins so a short batch job never delays a critical pod.
    """
    meta = pod.metadata
    fifo = (meta.creation_timestamp or _LATEST, meta.namespace or "", meta.name or "")
    if policy == "FIFO":
        return fifo
    priority = -pod_priority(pod, priority_classes)
    if policy == "Priority":
        return (priority, *fifo)
    duration = expected_duration(pod)
    return (priority, 0 if duration is not None else 1, duration or 0.0, *fifo)


def sort_queue(
    pods: Sequence[Pod],
    policy: QueuePolicy = "FIFO",
    priority_classes: Mapping[str, int] | None = None,
) -> list[Pod]:
    """``pods`` in the order the scheduler should try them."""
    return sorted(pods, key=lambda p: queue_key(p, policy, priority_classes))


__all__ = [
    "DEFAULT_CONFIG",
    "EXPECTED_DURATION_ANNOTATION",
    "BindResult",
    "Binding",
    "Placement",
    "Preemption",
    "QueuePolicy",
    "SchedulerConfig",
    "Scoring",
    "Unplaced",
    "Unschedulable",
    "apply_outcome",
    "bind_many",
    "expected_duration",
    "fit_error_message",
    "node_score",
    "place",
    "preempt",
    "queue_key",
    "sort_queue",
]
