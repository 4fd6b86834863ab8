"""Experiments: the ReplicaSets a canary ``experiment`` step runs beside the Rollout's own.

What lives here: the Experiment a Rollout's experiment step creates (Argo's
``GetExperimentFromTemplate``: named ``<rollout>-<hash>-<revision>-<step>``,
each template a copy of the canary or stable pod template with the step's
``selector`` and ``metadata`` labels laid over it, 1 replica unless given),
and ``reconcile_experiment``: one ReplicaSet ``<experiment>-<template>`` per
template; phase Pending until every template's pods are available, then
Running; Successful once ``duration`` has passed since then, or when
``spec.terminate`` is set (the way ``kubectl argo rollouts terminate`` ends
an experiment that has no duration); the ReplicaSets then scale to 0.

What must not: the Rollout's step logic (``canary``), or I/O; ``now`` is a
parameter. Analyses inside an Experiment are not run: an Experiment that
asks for them says so in its status message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshwork.core.reconcile import Action, CreateObject, Outcome, UpdateObject, UpdateStatus
from meshwork.core.reconcile.podtemplate import (
    compute_hash,
    controller_ref,
    parse_time,
    rfc3339,
    with_label,
)
from meshwork.core.rollout.replicas import counts, scaled
from meshwork.core.rollout.traffic import HASH_LABEL
from meshwork.model.argo_analysis import Experiment, ExperimentSpec
from meshwork.model.argo_common import parse_go_duration
from meshwork.model.argo_rollouts import Rollout, RolloutExperimentStep
from meshwork.model.base import ObjectMeta
from meshwork.model.pod import LabelSelector, Pod, PodTemplateSpec
from meshwork.model.workloads import ReplicaSet, ReplicaSetSpec

DONE = ("Successful", "Failed", "Error")


def experiment_name(rollout: Rollout, h: str, revision: int, index: int) -> str:
    return f"{rollout.metadata.name}-{h}-{revision}-{index}"


def step_experiment(rollout: Rollout, step: RolloutExperimentStep, name: str, h: str,
                    canary: PodTemplateSpec, stable: PodTemplateSpec) -> Experiment:  # fmt: skip
    """The Experiment an experiment step runs (the templates' ``specRef`` picks the pod template)."""
    templates: list[dict[str, Any]] = []
    for t in step.templates:
        base = canary if t.spec_ref == "canary" else stable
        wire = base.model_dump(mode="json", by_alias=True, exclude_none=True)
        labels = {k: v for k, v in (wire.get("metadata", {}).get("labels") or {}).items() if k != HASH_LABEL}
        labels.update((t.metadata.labels if t.metadata else None) or {})
        wire.setdefault("metadata", {})["labels"] = labels
        if t.metadata is not None and t.metadata.annotations:
            wire["metadata"]["annotations"] = {**(wire["metadata"].get("annotations") or {}), **t.metadata.annotations}
        selector = (t.selector.model_dump(mode="json", by_alias=True, exclude_none=True) if t.selector is not None
                    else {"matchLabels": labels})  # fmt: skip
        templates.append({"name": t.name, "replicas": 1 if t.replicas is None else t.replicas,
                          "selector": selector, "template": wire})  # fmt: skip
    spec: dict[str, Any] = {"templates": templates}
    if step.duration:
        spec["duration"] = step.duration
    return Experiment(
        metadata=ObjectMeta(name=name, namespace=rollout.metadata.namespace,
                            labels={HASH_LABEL: h}, owner_references=[controller_ref(rollout)]),
        spec=ExperimentSpec.model_validate(spec),
    )


def _replicaset(exp: Experiment, index: int) -> ReplicaSet:
    t = exp.spec.templates[index]
    template = PodTemplateSpec.model_validate(t.template.model_dump(mode="json", by_alias=True, exclude_none=True))
    h = compute_hash(template)
    labels = with_label(template.metadata.labels, HASH_LABEL, h)
    tmpl = template.model_copy(update={"metadata": template.metadata.model_copy(update={"labels": labels})})
    return ReplicaSet(
        metadata=ObjectMeta(name=f"{exp.metadata.name}-{t.name}", namespace=exp.metadata.namespace, labels=labels,
                            annotations={"experiment.argoproj.io/template-name": t.name},
                            owner_references=[controller_ref(exp)]),
        spec=ReplicaSetSpec(replicas=1 if t.replicas is None else t.replicas, min_ready_seconds=t.min_ready_seconds,
                            selector=LabelSelector(match_labels=with_label(t.selector.match_labels, HASH_LABEL, h),
                                                   match_expressions=t.selector.match_expressions),
                            template=tmpl),
    )


def reconcile_experiment(exp: Experiment, replicasets: Sequence[ReplicaSet], pods: Sequence[Pod],
                         now: float) -> Outcome:  # fmt: skip
    """One Experiment sync: its ReplicaSets, their counts, and its phase."""
    old = exp.status.model_dump(mode="json", by_alias=True, exclude_none=True) if exp.status else {}
    status: dict[str, Any] = dict(old)
    phase = status.get("phase") or "Pending"
    by_name = {rs.metadata.name: rs for rs in replicasets}
    actions: list[Action] = []
    requeue: float | None = None
    available_at = parse_time(status.get("availableAt"))
    duration = parse_go_duration(exp.spec.duration) if exp.spec.duration else None
    if phase not in DONE:
        if exp.spec.terminate:
            phase, status["message"] = "Successful", "Experiment terminated"
        elif duration is not None and available_at is not None and now >= available_at + duration:
            phase, status["message"] = "Successful", "Experiment completed"
    statuses = []
    all_available = True
    for i, t in enumerate(exp.spec.templates):
        want = 0 if phase in DONE else (1 if t.replicas is None else t.replicas)
        rs = by_name.get(f"{exp.metadata.name}-{t.name}")
        if rs is None:
            if want:
                actions.append(CreateObject(_replicaset(exp, i)))
            all_available = all_available and not want
            statuses.append({"name": t.name, "replicas": 0, "readyReplicas": 0, "availableReplicas": 0,
                             "status": "Progressing" if want else "Successful"})  # fmt: skip
            continue
        resized = scaled(rs, want)
        if resized is not None:
            actions.append(UpdateObject(resized))
        c = counts(rs, pods, t.min_ready_seconds or 0, now)
        ok = c.available >= want
        all_available = all_available and ok
        statuses.append({"name": t.name, "replicas": c.active, "readyReplicas": c.ready, "availableReplicas": c.available,
                         "status": phase if phase in DONE else ("Running" if ok else "Progressing")})  # fmt: skip
    if phase not in DONE and all_available:
        if available_at is None:
            status["availableAt"] = rfc3339(now)
            available_at = now
        phase = "Running"
        if duration is not None:
            requeue = max(0.0, available_at + duration - now)
    if exp.spec.analyses and phase not in DONE:
        status["message"] = "analyses inside an Experiment are not run by meshwork"
    status["phase"] = phase
    status["templateStatuses"] = statuses
    if status != old:
        wire = exp.model_dump(mode="json", by_alias=True, exclude_none=True)
        wire["status"] = status
        actions.append(UpdateStatus(Experiment.model_validate(wire)))
    return Outcome(tuple(actions), requeue)

