"""Experiments, pure: the step's Experiment, its ReplicaSets, Running once available, and the end
(its duration, or ``spec.terminate``), when the ReplicaSets scale to 0."""

from __future__ import annotations

from typing import Any

from meshwork.core.reconcile import CreateObject, UpdateObject, UpdateStatus
from meshwork.core.rollout.experiment import reconcile_experiment, step_experiment
from meshwork.model.argo_analysis import Experiment
from meshwork.model.argo_rollouts import Rollout, RolloutExperimentStep
from meshwork.model.pod import Pod, PodTemplateSpec
from meshwork.model.workloads import ReplicaSet

T0 = 1_700_000_000.0
RO = Rollout.model_validate({
    "metadata": {"name": "web", "namespace": "default", "uid": "ro-1"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "prod"}},
             "template": {"metadata": {"labels": {"app": "prod"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}},
             "strategy": {"canary": {"steps": [{"experiment": {"templates": [
                 {"name": "preview", "specRef": "canary", "selector": {"matchLabels": {"app": "preview"}},
                  "metadata": {"labels": {"app": "preview"}}}]}}]}}},
})  # fmt: skip


def template(image: str) -> PodTemplateSpec:
    return PodTemplateSpec.model_validate({"metadata": {"labels": {"app": "prod", "rollouts-pod-template-hash": "h"}},
                                           "spec": {"containers": [{"name": "c", "image": image}]}})  # fmt: skip


def experiment(duration: str | None = None, status: dict[str, Any] | None = None, terminate: bool = False) -> Experiment:
    step = RO.spec.strategy.canary.steps[0].experiment  # type: ignore[union-attr,index]
    assert isinstance(step, RolloutExperimentStep)
    if duration:
        step = step.model_copy(update={"duration": duration})
    exp = step_experiment(RO, step, "web-h-2-0", "h", template("v2"), template("v1"))
    wire = exp.model_dump(mode="json", by_alias=True, exclude_none=True)
    wire["metadata"]["uid"] = "exp-1"
    if terminate:
        wire["spec"]["terminate"] = True
    if status:
        wire["status"] = status
    return Experiment.model_validate(wire)


def ready_pod(rs: ReplicaSet) -> Pod:
    return Pod.model_validate({
        "metadata": {"name": "p", "namespace": "default", "labels": rs.spec.template.metadata.labels,  # type: ignore[union-attr]
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name,
                                          "uid": "rs-1", "controller": True}]},
        "spec": {"containers": [{"name": "c", "image": "v2"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })  # fmt: skip


def test_the_step_lays_its_selector_and_labels_over_the_canary_template() -> None:
    exp = experiment()
    [t] = exp.spec.templates
    assert exp.metadata.name == "web-h-2-0" and exp.metadata.owner_references[0].name == "web"  # type: ignore[index]
    assert t.replicas == 1 and t.selector.match_labels == {"app": "preview"}
    assert t.template.metadata.labels == {"app": "preview"}  # type: ignore[union-attr]
    assert t.template.spec.containers[0].image == "v2"


def test_an_experiment_runs_its_replicaset_until_terminated() -> None:
    out = reconcile_experiment(experiment(), [], [], T0)
    [create, status] = out.actions
    assert isinstance(create, CreateObject) and isinstance(create.obj, ReplicaSet)
    rs = create.obj.model_copy(update={"metadata": create.obj.metadata.model_copy(update={"uid": "rs-1"})})
    assert rs.metadata.name == "web-h-2-0-preview" and rs.spec.replicas == 1
    assert rs.spec.selector.match_labels is not None and rs.spec.selector.match_labels["app"] == "preview"
    assert isinstance(status, UpdateStatus) and status.obj.status.phase == "Pending"  # type: ignore[union-attr]
    running = reconcile_experiment(experiment(status={"phase": "Pending"}), [rs], [ready_pod(rs)], T0 + 1)
    [update] = running.actions
    assert isinstance(update, UpdateStatus)
    st = update.obj.status
    assert st is not None and st.phase == "Running" and st.available_at is not None and running.requeue_after is None
    # Again with nothing new: no action (idempotent).
    again = experiment(status=st.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert reconcile_experiment(again, [rs], [ready_pod(rs)], T0 + 2).actions == ()
    ended = reconcile_experiment(experiment(status=st.model_dump(mode="json", by_alias=True, exclude_none=True),
                                            terminate=True), [rs], [ready_pod(rs)], T0 + 3)  # fmt: skip
    scale, final = ended.actions
    assert isinstance(scale, UpdateObject) and scale.obj.spec.replicas == 0  # type: ignore[attr-defined]
    assert isinstance(final, UpdateStatus) and final.obj.status.phase == "Successful"  # type: ignore[union-attr]


def test_an_experiment_with_a_duration_ends_that_long_after_it_became_available() -> None:
    status = {"phase": "Running", "availableAt": "2023-11-14T22:13:20Z"}  # T0
    exp = experiment("30s", status)
    rs = reconcile_experiment(experiment("30s"), [], [], T0).actions[0].obj  # type: ignore[attr-defined]
    rs = rs.model_copy(update={"metadata": rs.metadata.model_copy(update={"uid": "rs-1"})})
    early = reconcile_experiment(exp, [rs], [ready_pod(rs)], T0 + 10)
    assert early.requeue_after == 20.0
    late = reconcile_experiment(exp, [rs], [ready_pod(rs)], T0 + 30)
    assert [type(a) for a in late.actions] == [UpdateObject, UpdateStatus]
    assert late.actions[1].obj.status.phase == "Successful"  # type: ignore[attr-defined]
