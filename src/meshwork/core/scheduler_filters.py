"""The scheduler's view of the cluster, and kube-scheduler's Filter plugins over it.

What lives here:

* ``ClusterSnapshot`` / ``NodeInfo`` / ``BoundPod``: frozen, integer-only data
  (millicores and bytes) built once from ``Node`` and ``Pod`` models, so the
  per-pod scheduling work never parses a quantity again.
* ``PodRequirements``: what a pending pod asks for (requests, nodeSelector,
  required node affinity, tolerations, nodeName, priority), computed once.
* The static filters, in kube-scheduler's default order (NodeUnschedulable,
  NodeName, TaintToleration, NodeAffinity) with its exact reason strings, and
  the NodeResourcesFit check. Static filters look only at the pod and the node
  (never at other pods), so their verdicts can be cached per pod "shape".

What must not live here: scoring, choosing a node, preemption, queue order
(``meshwork.core.scheduler``), and any I/O, clock or logging.

A node that is not Ready is reported the way upstream reports it: through the
taint the node lifecycle controller puts on it (``node.kubernetes.io/not-ready``
when Ready is False or missing, ``node.kubernetes.io/unreachable`` when it is
Unknown), so a pod that tolerates that taint may still land there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from meshwork.model.container import Container
from meshwork.model.core import Node
from meshwork.model.corev1 import NodeSelectorRequirement, parse_quantity
from meshwork.model.pod import Pod

# Reason strings, word for word as kube-scheduler's plugins report them.
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"
REASON_PODS = "Too many pods"

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
HARD_EFFECTS = frozenset({"NoSchedule", "NoExecute"})  # PreferNoSchedule only scores upstream

# Scoring counts a container with no request as asking for this much
# (kube-scheduler's DefaultMilliCPURequest / DefaultMemoryRequest), so
# request-less pods still spread instead of piling onto one node.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})  # such pods no longer hold resources


def taint_reason(key: str, value: str) -> str:
    """TaintToleration's reason for the first taint a pod does not tolerate."""
    return f"node(s) had untolerated taint {{{key}: {value}}}"


# ---------------------------------------------------------------------------
# Quantities
# ---------------------------------------------------------------------------


def milli_cpu(quantity: str | int | float) -> int:
    """CPU as integer millicores, rounded up as Quantity.MilliValue() does."""
    return math.ceil(parse_quantity(quantity) * 1000)


def byte_count(quantity: str | int | float) -> int:
    """A quantity as an integer, rounded up as Quantity.Value() does (memory in bytes)."""
    return math.ceil(parse_quantity(quantity))


# ---------------------------------------------------------------------------
# Snapshot data
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaintInfo:
    """A NoSchedule/NoExecute taint (value "" when the taint has none)."""

    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class TolerationInfo:
    """A pod toleration with upstream defaults applied (operator "" means Equal)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: TaintInfo) -> bool:
        """Toleration.ToleratesTaint: effect and key must match when set; Exists ignores value."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator == "Equal" and self.value == taint.value


@dataclass(frozen=True, slots=True)
class BoundPod:
    """A pod already bound to a node, reduced to what scheduling needs.

    ``cpu``/``memory`` are its requests (millicores, bytes); ``nz_*`` the same
    with upstream's non-zero defaults for containers that request nothing
    (used only for scoring). ``start_time`` orders victims of equal priority.
    """

    namespace: str
    name: str
    uid: str = ""
    priority: int = 0
    cpu: int = 0
    memory: int = 0
    nz_cpu: int = DEFAULT_MILLI_CPU_REQUEST
    nz_memory: int = DEFAULT_MEMORY_REQUEST
    start_time: str = ""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node: allocatable, labels, hard taints, cordon and readiness, and its pods.

    The ``requested_*`` sums are derived from ``pods``; build through
    ``NodeInfo.create`` or ``with_pods`` so they stay in step.
    """

    name: str
    alloc_cpu: int
    alloc_memory: int
    alloc_pods: int
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[TaintInfo, ...] = ()
    unschedulable: bool = False
    ready: bool = True
    pods: tuple[BoundPod, ...] = ()
    requested_cpu: int = 0
    requested_memory: int = 0
    nz_requested_cpu: int = 0
    nz_requested_memory: int = 0

    @classmethod
    def create(
        cls,
        name: str,
        *,
        cpu: int,
        memory: int,
        pods: int,
        labels: Mapping[str, str] | None = None,
        taints: Iterable[TaintInfo] = (),
        unschedulable: bool = False,
        ready: bool | None = True,
        bound: Iterable[BoundPod] = (),
    ) -> NodeInfo:
        """A node from already-converted integers (tests and benchmarks build nodes this way).

        ``ready`` is the Ready condition: True, False, or None for Unknown.
        """
        node = cls(
            name=name, alloc_cpu=cpu, alloc_memory=memory, alloc_pods=pods,
            labels=dict(labels or {}), taints=_effective_taints(tuple(taints), ready),
            unschedulable=unschedulable, ready=ready is True,
        )  # fmt: skip
        return node.with_pods(tuple(bound))

    def with_pods(self, pods: tuple[BoundPod, ...]) -> NodeInfo:
        """This node with exactly ``pods`` bound, the sums recomputed."""
        return replace(
            self,
            pods=pods,
            requested_cpu=sum(p.cpu for p in pods),
            requested_memory=sum(p.memory for p in pods),
            nz_requested_cpu=sum(p.nz_cpu for p in pods),
            nz_requested_memory=sum(p.nz_memory for p in pods),
        )


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Every schedulable node, sorted by name; decisions are pure functions of this."""

    nodes: tuple[NodeInfo, ...]

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if names != sorted(names) or len(set(names)) != len(names):
            object.__setattr__(
                self, "nodes", tuple(sorted({n.name: n for n in self.nodes}.values(), key=_name))
            )

    def node(self, name: str) -> NodeInfo | None:
        """The node called ``name``, or None."""
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def with_bound(self, node_name: str, pod: BoundPod) -> ClusterSnapshot:
        """The snapshot after binding ``pod`` to ``node_name``."""
        return ClusterSnapshot(
            tuple(n.with_pods((*n.pods, pod)) if n.name == node_name else n for n in self.nodes)
        )

    def without(self, node_name: str, victims: Iterable[BoundPod]) -> ClusterSnapshot:
        """The snapshot after deleting ``victims`` from ``node_name``."""
        gone = {(v.namespace, v.name) for v in victims}
        return ClusterSnapshot(tuple(
            n.with_pods(tuple(p for p in n.pods if (p.namespace, p.name) not in gone)) if n.name == node_name else n
            for n in self.nodes
        ))  # fmt: skip


def _name(node: NodeInfo) -> str:
    return node.name


def _effective_taints(taints: tuple[TaintInfo, ...], ready: bool | None) -> tuple[TaintInfo, ...]:
    """Keep NoSchedule/NoExecute taints; add the lifecycle controller's readiness taint."""
    hard = tuple(t for t in taints if t.effect in HARD_EFFECTS)
    if ready is True:
        return hard
    key = TAINT_UNREACHABLE if ready is None else TAINT_NOT_READY
    if any(t.key == key for t in hard):
        return hard
    return (*hard, TaintInfo(key, "", "NoSchedule"))


# ---------------------------------------------------------------------------
# Pod requests
# ---------------------------------------------------------------------------


def _container_requests(c: Container) -> tuple[int, int, int, int]:
    requests = c.resources.requests or {}
    cpu = milli_cpu(requests["cpu"]) if "cpu" in requests else None
    mem = byte_count(requests["memory"]) if "memory" in requests else None
    return (
        cpu or 0,
        mem or 0,
        DEFAULT_MILLI_CPU_REQUEST if cpu is None else cpu,
        DEFAULT_MEMORY_REQUEST if mem is None else mem,
    )


def pod_requests(pod: Pod) -> tuple[int, int, int, int]:
    """(cpu, memory, nz_cpu, nz_memory) as kube-scheduler computes a pod's request.

    Sum of the app containers and the restartable (sidecar) init containers,
    at least the largest plain init container plus the sidecars started
    before it, plus ``overhead``; pod-level ``resources.requests`` win when set.
    """
    total = [0, 0, 0, 0]
    for c in pod.spec.containers:
        for i, v in enumerate(_container_requests(c)):
            total[i] += v
    sidecars = [0, 0, 0, 0]
    init_peak = [0, 0, 0, 0]
    for c in pod.spec.init_containers or ():
        req = _container_requests(c)
        if c.restart_policy == "Always":
            for i, v in enumerate(req):
                total[i] += v
                sidecars[i] += v
        else:
            for i, v in enumerate(req):
                init_peak[i] = max(init_peak[i], v + sidecars[i])
    total = [max(t, p) for t, p in zip(total, init_peak, strict=True)]
    pod_level = pod.spec.resources.requests if pod.spec.resources else None
    if pod_level:
        if "cpu" in pod_level:
            total[0] = total[2] = milli_cpu(pod_level["cpu"])
        if "memory" in pod_level:
            total[1] = total[3] = byte_count(pod_level["memory"])
    overhead = pod.spec.overhead or {}
    if "cpu" in overhead:
        extra = milli_cpu(overhead["cpu"])
        total[0] += extra
        total[2] += extra
    if "memory" in overhead:
        extra = byte_count(overhead["memory"])
        total[1] += extra
        total[3] += extra
    return total[0], total[1], total[2], total[3]


def pod_priority(pod: Pod, priority_classes: Mapping[str, int] | None = None) -> int:
    """spec.priority, else the value of spec.priorityClassName, else 0."""
    if pod.spec.priority is not None:
        return pod.spec.priority
    if pod.spec.priority_class_name and priority_classes:
        return priority_classes.get(pod.spec.priority_class_name, 0)
    return 0


def bound_pod(pod: Pod, priority_classes: Mapping[str, int] | None = None) -> BoundPod:
    """A bound (or about to be bound) pod as the snapshot records it."""
    cpu, mem, nz_cpu, nz_mem = pod_requests(pod)
    return BoundPod(
        namespace=pod.metadata.namespace or "", name=pod.metadata.name or "", uid=pod.metadata.uid or "",
        priority=pod_priority(pod, priority_classes), cpu=cpu, memory=mem, nz_cpu=nz_cpu, nz_memory=nz_mem,
        start_time=(pod.status.start_time if pod.status else None) or "",
    )  # fmt: skip


def _node_ready(node: Node) -> bool | None:
    """True/False from the Ready condition; None when Unknown; False when absent."""
    for cond in (node.status.conditions if node.status else None) or ():
        if cond.type == "Ready":
            return {"True": True, "False": False}.get(cond.status)
    return False


def node_info(node: Node, pods: Iterable[BoundPod] = ()) -> NodeInfo:
    """Convert a Node (allocatable falls back to capacity; a missing resource counts as 0)."""
    alloc = (node.status.allocatable if node.status else None) or {}
    taints = tuple(TaintInfo(t.key, t.value or "", t.effect) for t in node.spec.taints or ())
    ready = _node_ready(node)
    return NodeInfo.create(
        node.metadata.name or "",
        cpu=milli_cpu(alloc["cpu"]) if "cpu" in alloc else 0,
        memory=byte_count(alloc["memory"]) if "memory" in alloc else 0,
        pods=int(parse_quantity(alloc["pods"])) if "pods" in alloc else 0,
        labels=node.metadata.labels, taints=taints, unschedulable=bool(node.spec.unschedulable),
        ready=ready, bound=pods,
    )  # fmt: skip


def build_snapshot(
    nodes: Iterable[Node], pods: Iterable[Pod], priority_classes: Mapping[str, int] | None = None
) -> ClusterSnapshot:
    """The snapshot for ``nodes`` with every non-terminal pod bound to one of them counted."""
    by_node: dict[str, list[BoundPod]] = {}
    for pod in pods:
        phase = pod.status.phase if pod.status else None
        if pod.spec.node_name and phase not in TERMINAL_PHASES:
            by_node.setdefault(pod.spec.node_name, []).append(bound_pod(pod, priority_classes))
    infos = [node_info(n, by_node.get(n.metadata.name or "", ())) for n in nodes]
    return ClusterSnapshot(tuple(sorted(infos, key=_name)))


# ---------------------------------------------------------------------------
# Pending pods
# ---------------------------------------------------------------------------

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)
Term = tuple[tuple[Requirement, ...], tuple[Requirement, ...]]  # (matchExpressions, matchFields)


@dataclass(frozen=True, slots=True)
class PodRequirements:
    """A pending pod, precomputed once: who it is, what it needs, where it may go."""

    namespace: str
    name: str
    uid: str = ""
    priority: int = 0
    preempt_never: bool = False
    cpu: int = 0
    memory: int = 0
    nz_cpu: int = DEFAULT_MILLI_CPU_REQUEST
    nz_memory: int = DEFAULT_MEMORY_REQUEST
    node_name: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()
    affinity: tuple[Term, ...] | None = None  # required terms (ORed); None = no requirement
    tolerations: tuple[TolerationInfo, ...] = ()

    @property
    def shape(self) -> tuple[object, ...]:
        """What the static filters depend on: equal shapes get equal verdicts on every node."""
        return (self.node_name, self.node_selector, self.affinity, self.tolerations)

    def as_bound(self) -> BoundPod:
        """This pod as a node will hold it once bound."""
        return BoundPod(
            self.namespace,
            self.name,
            self.uid,
            self.priority,
            self.cpu,
            self.memory,
            self.nz_cpu,
            self.nz_memory,
        )


def _requirement(r: NodeSelectorRequirement) -> Requirement:
    return (r.key, r.operator, tuple(r.values or ()))


def requirements_of(pod: Pod, priority_classes: Mapping[str, int] | None = None) -> PodRequirements:
    """Everything the scheduler needs from a pending pod, computed once."""
    cpu, mem, nz_cpu, nz_mem = pod_requests(pod)
    spec = pod.spec
    affinity: tuple[Term, ...] | None = None
    node_affinity = spec.affinity.node_affinity if spec.affinity else None
    required = (
        node_affinity.required_during_scheduling_ignored_during_execution if node_affinity else None
    )
    if required is not None:
        affinity = tuple(
            (
                tuple(_requirement(r) for r in term.match_expressions or ()),
                tuple(_requirement(r) for r in term.match_fields or ()),
            )
            for term in required.node_selector_terms
        )
    tolerations = tuple(
        TolerationInfo(t.key or "", t.operator or "Equal", t.value or "", t.effect or "")
        for t in spec.tolerations or ()
    )
    return PodRequirements(
        namespace=pod.metadata.namespace or "", name=pod.metadata.name or "", uid=pod.metadata.uid or "",
        priority=pod_priority(pod, priority_classes), preempt_never=spec.preemption_policy == "Never",
        cpu=cpu, memory=mem, nz_cpu=nz_cpu, nz_memory=nz_mem, node_name=spec.node_name or "",
        node_selector=tuple(sorted((spec.node_selector or {}).items())), affinity=affinity,
        tolerations=tolerations,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------


def _label_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    key, op, values = req
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _field_matches(req: Requirement, node_name: str) -> bool:
    key, op, values = req
    # Upstream supports only metadata.name with In/NotIn; anything else fails the term.
    if key != "metadata.name":
        return False
    if op == "In":
        return node_name in values
    if op == "NotIn":
        return node_name not in values
    return False


def _term_matches(term: Term, node: NodeInfo) -> bool:
    exprs, fields = term
    if not exprs and not fields:
        return False  # an empty term selects no node
    return all(_label_matches(r, node.labels) for r in exprs) and all(
        _field_matches(r, node.name) for r in fields
    )


def matches_node_affinity(pod: PodRequirements, node: NodeInfo) -> bool:
    """nodeSelector (every pair) AND required node affinity (any term)."""
    labels = node.labels
    for key, value in pod.node_selector:
        if labels.get(key) != value:
            return False
    if pod.affinity is None:
        return True
    return any(_term_matches(term, node) for term in pod.affinity)


def untolerated_taint(pod: PodRequirements, node: NodeInfo) -> TaintInfo | None:
    """The first NoSchedule/NoExecute taint of ``node`` that no toleration of ``pod`` covers."""
    for taint in node.taints:
        if not any(t.tolerates(taint) for t in pod.tolerations):
            return taint
    return None


_UNSCHEDULABLE_TAINT = TaintInfo(TAINT_UNSCHEDULABLE, "", "NoSchedule")


def static_reason(pod: PodRequirements, node: NodeInfo) -> str | None:
    """The first failing static filter's reason, in kube-scheduler's plugin order, or None.

    Every static failure is UnschedulableAndUnresolvable upstream: evicting
    pods cannot change it, so preemption skips such nodes.
    """
    if node.unschedulable and not any(t.tolerates(_UNSCHEDULABLE_TAINT) for t in pod.tolerations):
        return REASON_UNSCHEDULABLE
    if pod.node_name and pod.node_name != node.name:
        return REASON_NODE_NAME
    if node.taints:
        taint = untolerated_taint(pod, node)
        if taint is not None:
            return taint_reason(taint.key, taint.value)
    if (pod.node_selector or pod.affinity is not None) and not matches_node_affinity(pod, node):
        return REASON_NODE_AFFINITY
    return None


def resource_reasons(
    pod: PodRequirements, alloc: tuple[int, int, int], used: tuple[int, int, int]
) -> tuple[tuple[str, ...], bool]:
    """NodeResourcesFit: (reasons, unresolvable) for ``pod`` against allocatable and used (cpu, memory, pods).

    ``unresolvable`` is upstream's flag: the request exceeds the node's whole
    allocatable, so no eviction could make room.
    """
    a_cpu, a_mem, a_pods = alloc
    u_cpu, u_mem, u_pods = used
    reasons: list[str] = []
    unresolvable = False
    if u_pods + 1 > a_pods:
        reasons.append(REASON_PODS)
        unresolvable = a_pods < 1
    if pod.cpu > 0 and pod.cpu > a_cpu - u_cpu:
        reasons.append(REASON_CPU)
        unresolvable = unresolvable or pod.cpu > a_cpu
    if pod.memory > 0 and pod.memory > a_mem - u_mem:
        reasons.append(REASON_MEMORY)
        unresolvable = unresolvable or pod.memory > a_mem
    return tuple(reasons), unresolvable


__all__ = [
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "REASON_CPU",
    "REASON_MEMORY",
    "REASON_NODE_AFFINITY",
    "REASON_NODE_NAME",
    "REASON_PODS",
    "REASON_UNSCHEDULABLE",
    "TAINT_NOT_READY",
    "TAINT_UNREACHABLE",
    "BoundPod",
    "ClusterSnapshot",
    "NodeInfo",
    "PodRequirements",
    "TaintInfo",
    "TolerationInfo",
    "bound_pod",
    "build_snapshot",
    "byte_count",
    "matches_node_affinity",
    "milli_cpu",
    "node_info",
    "pod_priority",
    "pod_requests",
    "requirements_of",
    "resource_reasons",
    "static_reason",
    "taint_reason",
    "untolerated_taint",
]
