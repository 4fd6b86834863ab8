"""The DaemonSet controller's decision: one pod of the template on every eligible node. Pure.

What lives here, after kube-controller-manager's daemon controller:

* which nodes should run a daemon pod (``should_run``: the template's
  ``nodeName``, ``nodeSelector`` and required node affinity, and the node's
  NoSchedule/NoExecute taints against the template's tolerations plus the
  automatic ones every daemon pod gets);
* ``manage``: create a pod on an eligible node that has none, delete failed
  or succeeded ones, extra ones, and those on nodes that no longer qualify;
* the rolling update (``maxUnavailable`` with ``maxSurge`` 0, or surge) and
  OnDelete, pods told apart by their ``controller-revision-hash`` label;
* the status counts.

Daemon pods are not bound here: each is created with a required node
affinity ``matchFields metadata.name In [node]`` and the scheduler binds it,
as upstream does since ScheduleDaemonSetPods.

What must not: I/O, a clock, or reading anything but the DaemonSet, the
nodes and its pods. Deliberate differences from upstream: no
ControllerRevision history objects (the hash is of the template, with
``collisionCount``), no adoption of orphan pods, no back-off between
deletions of failed pods, and no slow-start batching of creates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.reconcile.deployment_rollout import scaled_value
from meshwork.core.reconcile.podtemplate import (
    available_after,
    compute_hash,
    is_available,
    is_controlled_by,
    is_ready,
    parse_time,
    phase_of,
    pod_from_template,
)
from meshwork.core.scheduler_filters import (
    NodeInfo,
    PodRequirements,
    TaintInfo,
    matches_node_affinity,
    requirements_of,
    untolerated_taint,
)
from meshwork.model.base import ObjectMeta
from meshwork.model.core import Node
from meshwork.model.corev1 import NodeSelector, NodeSelectorRequirement, NodeSelectorTerm
from meshwork.model.pod import Affinity, NodeAffinity, Pod, PodTemplateSpec, Toleration
from meshwork.model.workloads import DaemonSet, DaemonSetStatus

HASH_LABEL = "controller-revision-hash"  # apps.ControllerRevisionHashLabelKey
GENERATION_LABEL = "pod-template-generation"  # extensions.DaemonSetTemplateGenerationKey
NAME_FIELD = "metadata.name"

# util.AddOrUpdateDaemonPodTolerations: a daemon pod stays through node trouble
# (NoExecute without tolerationSeconds: never evicted) and lands on cordoned or
# pressured nodes.
DAEMON_TOLERATIONS: tuple[tuple[str, str], ...] = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
HOST_NETWORK_TOLERATION = ("node.kubernetes.io/network-unavailable", "NoSchedule")


def daemonset_ref(ds: DaemonSet) -> ObjectRef:
    return ObjectRef("apps", "DaemonSet", ds.metadata.namespace, ds.metadata.name or "", ds.metadata.uid)


# ---------------------------------------------------------------------------
# The daemon pod
# ---------------------------------------------------------------------------


def with_daemon_tolerations(tolerations: Sequence[Toleration] | None, host_network: bool) -> list[Toleration]:
    """``tolerations`` plus the automatic ones it does not already have."""
    result = list(tolerations or [])
    wanted = [*DAEMON_TOLERATIONS, *((HOST_NETWORK_TOLERATION,) if host_network else ())]
    for key, effect in wanted:
        if not any(t.key == key and t.operator == "Exists" and t.effect == effect for t in result):
            result.append(Toleration.model_validate({"key": key, "operator": "Exists", "effect": effect}))
    return result


def daemon_template(ds: DaemonSet, hash_: str) -> PodTemplateSpec:
    """Upstream ``CreatePodTemplate``: the template with the tolerations and the two labels."""
    template = ds.spec.template.model_copy(deep=True)
    labels = dict(template.metadata.labels or {})
    if ds.metadata.generation is not None:
        labels[GENERATION_LABEL] = str(ds.metadata.generation)
    labels[HASH_LABEL] = hash_
    template.metadata.labels = labels
    template.spec.tolerations = with_daemon_tolerations(template.spec.tolerations, bool(template.spec.host_network))
    return template


def _name_term(node_name: str) -> NodeSelectorTerm:
    return NodeSelectorTerm(match_fields=[NodeSelectorRequirement(key=NAME_FIELD, operator="In", values=[node_name])])


def pinned_to(template: PodTemplateSpec, node_name: str) -> PodTemplateSpec:
    """Upstream ``ReplaceDaemonSetPodNodeNameNodeAffinity``: the required node affinity
    becomes the single term ``metadata.name In [node]`` (the node already passed the rest)."""
    pinned = template.model_copy(deep=True)
    affinity = pinned.spec.affinity or Affinity()
    node_affinity = affinity.node_affinity or NodeAffinity()
    node_affinity.required_during_scheduling_ignored_during_execution = NodeSelector(node_selector_terms=[_name_term(node_name)])
    affinity.node_affinity = node_affinity
    pinned.spec.affinity = affinity
    return pinned


def target_node(pod: Pod) -> str | None:
    """Upstream ``GetTargetNodeName``: ``spec.nodeName``, else the node a lone
    ``metadata.name In [node]`` field requirement names."""
    if pod.spec.node_name:
        return pod.spec.node_name
    affinity = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    for term in required.node_selector_terms if required else ():
        for req in term.match_fields or ():
            if req.key == NAME_FIELD and req.operator == "In" and len(req.values or ()) == 1:
                return (req.values or [""])[0]
    return None


# ---------------------------------------------------------------------------
# Which nodes
# ---------------------------------------------------------------------------


def template_requirements(ds: DaemonSet) -> PodRequirements:
    """The scheduling requirements of a daemon pod (automatic tolerations included)."""
    spec = ds.spec.template.spec.model_copy(deep=True)
    spec.tolerations = with_daemon_tolerations(spec.tolerations, bool(spec.host_network))
    return requirements_of(Pod(metadata=ObjectMeta(name="daemon"), spec=spec))


def should_run(req: PodRequirements, node: Node) -> tuple[bool, bool]:
    """Upstream ``NodeShouldRunDaemonPod``: (should run, should continue running).

    Only the node's own taints count (not its readiness): a node the lifecycle
    controller taints unreachable stops getting new daemon pods, while the
    ones there stay, tolerating the NoExecute taint.
    """
    name = node.metadata.name or ""
    if req.node_name and req.node_name != name:
        return False, False
    taints = tuple(
        TaintInfo(t.key, t.value or "", t.effect) for t in node.spec.taints or () if t.effect in ("NoSchedule", "NoExecute")
    )
    info = NodeInfo(name=name, alloc_cpu=0, alloc_memory=0, alloc_pods=0, labels=dict(node.metadata.labels or {}), taints=taints)
    if not matches_node_affinity(req, info):
        return False, False
    if untolerated_taint(req, info) is None:
        return True, True
    no_execute = NodeInfo(name=name, alloc_cpu=0, alloc_memory=0, alloc_pods=0, taints=tuple(t for t in taints if t.effect == "NoExecute"))
    return False, untolerated_taint(req, no_execute) is None


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node as the controller sees it."""

    name: str
    exists: bool
    run: bool
    keep: bool
    pods: tuple[Pod, ...]  # this DaemonSet's pods there, oldest first (terminal deleted ones left out)


def _age_key(pod: Pod) -> tuple[float, str]:
    return (parse_time(pod.metadata.creation_timestamp) or 0.0, pod.metadata.name or "")


def _counted(pod: Pod) -> bool:
    """getNodesToDaemonPods: a terminal pod already being deleted is nobody's concern."""
    return not (phase_of(pod) in ("Succeeded", "Failed") and pod.metadata.deletion_timestamp is not None)


def plan_nodes(ds: DaemonSet, nodes: Iterable[Node], pods: Iterable[Pod]) -> list[NodePlan]:
    """Every node that exists or that one of the DaemonSet's pods targets, sorted by name."""
    req = template_requirements(ds)
    by_node: dict[str, list[Pod]] = {}
    for pod in pods:
        target = target_node(pod)
        if target is not None and is_controlled_by(pod, ds) and _counted(pod):
            by_node.setdefault(target, []).append(pod)
    plans: dict[str, NodePlan] = {}
    for node in nodes:
        name = node.metadata.name or ""
        run, keep = should_run(req, node)
        plans[name] = NodePlan(name, True, run, keep, tuple(sorted(by_node.get(name, []), key=_age_key)))
    for name, on_node in by_node.items():
        if name not in plans:
            plans[name] = NodePlan(name, False, False, False, tuple(sorted(on_node, key=_age_key)))
    return [plans[name] for name in sorted(plans)]


# ---------------------------------------------------------------------------
# Update strategy
# ---------------------------------------------------------------------------


def is_updated(pod: Pod, hash_: str, generation: int | None) -> bool:
    """Upstream ``IsPodUpdated``: the pod carries the current hash or template generation."""
    labels = pod.metadata.labels or {}
    if generation is not None and labels.get(GENERATION_LABEL) == str(generation):
        return True
    return labels.get(HASH_LABEL) == hash_


def _surge_allowed(ds: DaemonSet) -> bool:
    strategy = ds.spec.update_strategy
    ru = strategy.rolling_update
    return strategy.type == "RollingUpdate" and ru is not None and ru.max_surge not in (None, 0, "0%")


def budgets(ds: DaemonSet, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) against the desired node count, both rounded up;
    when both come out 0 on a non-empty set, one node may be unavailable."""
    ru = ds.spec.update_strategy.rolling_update
    surge = scaled_value(ru.max_surge if ru else 0, desired, round_up=True)
    unavailable = scaled_value(ru.max_unavailable if ru else 1, desired, round_up=True)
    if desired > 0 and surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _new_and_old(pods: Sequence[Pod], hash_: str, generation: int | None) -> tuple[Pod | None, Pod | None, bool]:
    """Upstream ``findUpdatedPodsOnNode``: (new pod, old pod, ok); not ok with two of a kind."""
    new = old = None
    for pod in pods:
        if pod.metadata.deletion_timestamp is not None:
            continue
        if is_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def rolling_update(ds: DaemonSet, plans: Sequence[NodePlan], hash_: str, now: float) -> tuple[list[Pod], list[str]]:
    """Upstream ``rollingUpdate``: (old pods to delete, nodes to surge a new pod onto)."""
    generation = ds.metadata.generation
    min_ready = ds.spec.min_ready_seconds or 0
    relevant = [p for p in plans if p.run or p.pods]
    surge_max, unavailable_max = budgets(ds, sum(1 for p in plans if p.run))
    if not _surge_allowed(ds):
        unavailable = 0
        replace: list[Pod] = []
        candidates: list[Pod] = []
        for plan in relevant:
            new, old, ok = _new_and_old(plan.pods, hash_, generation)
            if not ok or (new is None) == (old is None):
                unavailable += 1  # manage() creates or cleans up here first
            elif new is not None:
                if not is_available(new, min_ready, now):
                    unavailable += 1
            elif old is not None:
                if not is_available(old, min_ready, now):
                    replace.append(old)
                elif unavailable < unavailable_max:
                    candidates.append(old)
        room = min(max(unavailable_max - unavailable, 0), len(candidates))
        return replace + candidates[:room], []
    surged = 0
    to_delete: list[Pod] = []
    to_create: list[str] = []
    for plan in relevant:
        new, old, ok = _new_and_old(plan.pods, hash_, generation)
        if not ok:
            surged += 1
            continue
        if not plan.run:
            if old is not None:
                to_delete.append(old)
            continue
        if old is None:
            continue
        if new is None:
            if not is_available(old, min_ready, now):
                to_create.append(plan.name)
            elif surged < surge_max:
                surged += 1
                to_create.append(plan.name)
        elif not is_available(new, min_ready, now):
            surged += 1
        else:
            to_delete.append(old)
    return to_delete, to_create


# ---------------------------------------------------------------------------
# Manage and status
# ---------------------------------------------------------------------------


def manage(ds: DaemonSet, plans: Sequence[NodePlan], hash_: str, now: float) -> tuple[list[Pod], list[str], list[RecordEvent]]:
    """Upstream ``podsShouldBeOnNode`` over every node: (pods to delete, nodes needing a pod, warnings)."""
    to_delete: list[Pod] = []
    to_create: list[str] = []
    warnings: list[RecordEvent] = []
    surge = _surge_allowed(ds)
    min_ready = ds.spec.min_ready_seconds or 0
    for plan in plans:
        if not plan.exists:
            # Never bound, and the node is gone: nothing else would delete these.
            to_delete.extend(p for p in plan.pods if not p.spec.node_name and p.metadata.deletion_timestamp is None)
            continue
        if plan.run and not plan.pods:
            to_create.append(plan.name)
        elif plan.keep:
            running: list[Pod] = []
            for pod in plan.pods:
                if pod.metadata.deletion_timestamp is not None:
                    continue
                phase = phase_of(pod)
                if phase == "Failed":
                    warnings.append(RecordEvent(daemonset_ref(ds), "Warning", "FailedDaemonPod",
                                                f"Found failed daemon pod {pod.metadata.namespace}/{pod.metadata.name} "
                                                f"on node {plan.name}, will try to kill it"))  # fmt: skip
                    to_delete.append(pod)
                elif phase == "Succeeded":
                    to_delete.append(pod)
                else:
                    running.append(pod)
            if not surge:
                to_delete.extend(running[1:])  # all but the oldest
                continue
            if not running:
                if plan.run:
                    to_create.append(plan.name)
                continue
            oldest_new = next((p for p in running if (p.metadata.labels or {}).get(HASH_LABEL) == hash_), None)
            oldest_old = next((p for p in running if (p.metadata.labels or {}).get(HASH_LABEL) != hash_), None)
            to_delete.extend(p for p in running if p is not oldest_new and p is not oldest_old)
            if oldest_new is not None and oldest_old is not None and (
                not is_ready(oldest_old) or is_available(oldest_new, min_ready, now)
            ):
                to_delete.append(oldest_old)
        elif plan.pods:
            to_delete.extend(p for p in plan.pods if p.metadata.deletion_timestamp is None)
    return to_delete, to_create, warnings


def daemonset_status(ds: DaemonSet, plans: Sequence[NodePlan], hash_: str, now: float) -> DaemonSetStatus:
    """Upstream ``updateDaemonSetStatus``: the counts over the nodes, oldest pod per node."""
    desired = current = ready = available = updated = misscheduled = 0
    min_ready = ds.spec.min_ready_seconds or 0
    for plan in plans:
        if not plan.exists:
            continue
        if not plan.run:
            misscheduled += 1 if plan.pods else 0
            continue
        desired += 1
        if not plan.pods:
            continue
        current += 1
        pod = plan.pods[0]
        if is_ready(pod):
            ready += 1
            available += 1 if is_available(pod, min_ready, now) else 0
        updated += 1 if is_updated(pod, hash_, ds.metadata.generation) else 0
    old = ds.status or DaemonSetStatus()
    return DaemonSetStatus(
        current_number_scheduled=current,
        number_misscheduled=misscheduled,
        desired_number_scheduled=desired,
        number_ready=ready,
        observed_generation=ds.metadata.generation,
        updated_number_scheduled=updated,
        number_available=available,
        number_unavailable=desired - available,
        collision_count=old.collision_count,
        conditions=old.conditions,
    )


def _pod_for(ds: DaemonSet, template: PodTemplateSpec, node_name: str) -> Pod:
    return pod_from_template(pinned_to(template, node_name), ds)


def reconcile_daemonset(ds: DaemonSet, nodes: Iterable[Node], pods: Iterable[Pod], now: float) -> Outcome:
    """One DaemonSet sync: pods to create and delete, then the status.

    ``pods`` may hold any pods of the namespace; only those this DaemonSet
    controls count. A DaemonSet being deleted is left alone (the garbage
    collector removes its pods). The rolling update runs only in a pass where
    ``manage`` had nothing to do, as upstream waits for its expectations.
    """
    if ds.metadata.deletion_timestamp is not None:
        return Outcome()
    hash_ = compute_hash(ds.spec.template, ds.status.collision_count if ds.status else None)
    plans = plan_nodes(ds, list(nodes), list(pods))
    to_delete, to_create, warnings = manage(ds, plans, hash_, now)
    if not to_delete and not to_create and ds.spec.update_strategy.type == "RollingUpdate":
        to_delete, to_create = rolling_update(ds, plans, hash_, now)
    actions: list[Action] = [*warnings]
    about = daemonset_ref(ds)
    template = daemon_template(ds, hash_)
    for node_name in to_create:
        pod = _pod_for(ds, template, node_name)
        actions.append(CreateObject(pod))
        actions.append(RecordEvent(about, "Normal", "SuccessfulCreate", f"Created pod: {pod.metadata.generate_name}"))
    seen: set[str] = set()
    for pod in to_delete:
        name = pod.metadata.name or ""
        if name in seen:
            continue
        seen.add(name)
        actions.append(DeleteObject("", "Pod", pod.metadata.namespace, name, pod.metadata.uid))
        actions.append(RecordEvent(about, "Normal", "SuccessfulDelete", f"Deleted pod: {name}"))
    status = daemonset_status(ds, plans, hash_, now)
    if status != (ds.status or DaemonSetStatus()):
        actions.append(UpdateStatus(ds.model_copy(update={"status": status})))
    min_ready = ds.spec.min_ready_seconds or 0
    waits = [w for plan in plans for p in plan.pods[:1] if (w := available_after(p, min_ready, now))]
    return Outcome(tuple(actions), min(waits) if waits else None)
