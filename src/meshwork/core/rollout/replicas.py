"""A Rollout's ReplicaSets: naming, building, counting, scaling down later.

What lives here: the ReplicaSet a Rollout runs a pod template in (named
``<rollout>-<hash>``, labelled and selected by ``rollouts-pod-template-hash``,
annotated with Argo's ``rollout.argoproj.io/revision``), per-ReplicaSet pod
counts from the pods in the view, and the ``scale-down-deadline`` annotation
Argo uses to keep a ReplicaSet up for a while after it stops serving.

What must not: which ReplicaSet should have how many pods (``canary``,
``bluegreen``), or I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshwork.core.reconcile.podtemplate import (
    compute_hash,
    controller_ref,
    is_active,
    is_available,
    is_ready,
    parse_time,
    rfc3339,
    with_label,
)
from meshwork.core.rollout.traffic import HASH_LABEL
from meshwork.model.argo_rollouts import Rollout
from meshwork.model.base import ObjectMeta
from meshwork.model.pod import LabelSelector, Pod, PodTemplateSpec
from meshwork.model.workloads import ReplicaSet, ReplicaSetSpec

REVISION_ANNOTATION = "rollout.argoproj.io/revision"
SCALE_DOWN_DEADLINE = "argo-rollouts.argoproj.io/scale-down-deadline"


@dataclass(frozen=True, slots=True)
class Counts:
    """A ReplicaSet's active, ready and available pods."""

    active: int = 0
    ready: int = 0
    available: int = 0


def pod_hash(rs: ReplicaSet) -> str:
    return (rs.metadata.labels or {}).get(HASH_LABEL, "")


def revision_of(rs: ReplicaSet) -> int:
    try:
        return int((rs.metadata.annotations or {}).get(REVISION_ANNOTATION, ""))
    except ValueError:
        return 0


def template_hash(template: PodTemplateSpec, collision_count: int | None) -> str:
    return compute_hash(template, collision_count)


def new_replicaset(rollout: Rollout, template: PodTemplateSpec, h: str, revision: int, replicas: int) -> ReplicaSet:
    """The ReplicaSet for template hash ``h`` (Argo's ``newReplicaSet``)."""
    labels = with_label(template.metadata.labels, HASH_LABEL, h)
    tmpl = template.model_copy(update={"metadata": template.metadata.model_copy(update={"labels": labels})})
    selector = rollout.spec.selector or LabelSelector(match_labels=dict(template.metadata.labels or {}))
    match = with_label(selector.match_labels, HASH_LABEL, h)
    return ReplicaSet(
        metadata=ObjectMeta(
            name=f"{rollout.metadata.name}-{h}",
            namespace=rollout.metadata.namespace,
            labels=labels,
            annotations={REVISION_ANNOTATION: str(revision)},
            owner_references=[controller_ref(rollout)],
        ),
        spec=ReplicaSetSpec(
            replicas=replicas,
            min_ready_seconds=rollout.spec.min_ready_seconds,
            selector=selector.model_copy(update={"match_labels": match}),
            template=tmpl,
        ),
    )


def counts(rs: ReplicaSet, pods: Iterable[Pod], min_ready: int, now: float) -> Counts:
    """Counts of the pods ``rs`` controls (by ownerReference uid)."""
    active = ready = available = 0
    for pod in pods:
        refs = pod.metadata.owner_references or ()
        if not any(r.controller and r.uid == rs.metadata.uid for r in refs) or not is_active(pod):
            continue
        active += 1
        if is_ready(pod):
            ready += 1
            if is_available(pod, min_ready, now):
                available += 1
    return Counts(active, ready, available)


def scaled(rs: ReplicaSet, replicas: int, deadline: float | None = None, *, keep_deadline: bool = False) -> ReplicaSet | None:
    """``rs`` at ``replicas`` (with a scale-down deadline, or none); None when unchanged."""
    annotations = dict(rs.metadata.annotations or {})
    old = annotations.get(SCALE_DOWN_DEADLINE)
    if deadline is not None:
        annotations[SCALE_DOWN_DEADLINE] = old if keep_deadline and old else rfc3339(deadline)
    else:
        annotations.pop(SCALE_DOWN_DEADLINE, None)
    if rs.spec.replicas == replicas and annotations == (rs.metadata.annotations or {}):
        return None
    meta = rs.metadata.model_copy(update={"annotations": annotations or None})
    return rs.model_copy(update={"metadata": meta, "spec": rs.spec.model_copy(update={"replicas": replicas})})


def deadline_of(rs: ReplicaSet) -> float | None:
    return parse_time((rs.metadata.annotations or {}).get(SCALE_DOWN_DEADLINE))
