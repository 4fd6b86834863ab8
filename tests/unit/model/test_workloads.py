"""Deployment, ReplicaSet, DaemonSet, Job, CronJob: upstream defaulting and validation with exact
error paths, selector/template agreement, and the round-trip property for deployments."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meshwork.model.base import REGISTRY, Resource, to_wire
from meshwork.model.pod import LabelSelector
from meshwork.model.workloads import (
    MAX_INT32,
    ControllerRevision,
    CronJob,
    DaemonSet,
    Deployment,
    Job,
    ReplicaSet,
    cron_schedule_error,
    selector_matches,
)

LABELS = {"app": "web"}


def template(restart: str | None = None, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx:1.25", **container}]}
    if restart:
        spec["restartPolicy"] = restart
    return {"metadata": {"labels": dict(LABELS)}, "spec": spec}


def deployment(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": dict(LABELS)}, "template": template(), **spec}}


def replicaset(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
            "spec": {"selector": {"matchLabels": dict(LABELS)}, "template": template(), **spec}}


def daemonset(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": dict(LABELS)}, "template": template(), **spec}}


def job(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {"template": template("Never"), **spec}}


def cronjob(api_version: str = "batch/v1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "CronJob", "metadata": {"name": "hello"},
            "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": template("OnFailure")}},
                     **spec}}


def model_of(manifest: dict[str, Any]) -> type[Resource]:
    info = REGISTRY.for_api_version(manifest["apiVersion"], manifest["kind"])
    assert info is not None
    return info.model


def dig(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part] if part in data or isinstance(part, int) else None
        if data is None:
            return None
    return data


# (case id, manifest, wire path, expected value; None = absent)
DEFAULTS = [
    ("deploy replicas", deployment(), ("spec", "replicas"), 1),
    ("deploy strategy", deployment(), ("spec", "strategy"),
     {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    ("deploy partial rollingUpdate", deployment(strategy={"rollingUpdate": {"maxSurge": 1}}),
     ("spec", "strategy", "rollingUpdate"), {"maxUnavailable": "25%", "maxSurge": 1}),
    ("deploy recreate", deployment(strategy={"type": "Recreate"}), ("spec", "strategy"), {"type": "Recreate"}),
    ("deploy history", deployment(), ("spec", "revisionHistoryLimit"), 10),
    ("deploy deadline", deployment(), ("spec", "progressDeadlineSeconds"), 600),
    ("deploy template pod defaults", deployment(), ("spec", "template", "spec", "dnsPolicy"), "ClusterFirst"),
    ("template keeps requests unset",
     deployment(template=template(resources={"limits": {"cpu": "1"}})),
     ("spec", "template", "spec", "containers", 0, "resources"), {"limits": {"cpu": "1"}}),
    ("template has no enableServiceLinks", deployment(), ("spec", "template", "spec", "enableServiceLinks"), None),
    ("rs replicas", replicaset(), ("spec", "replicas"), 1),
    ("ds strategy", daemonset(), ("spec", "updateStrategy"),
     {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    ("ds on delete", daemonset(updateStrategy={"type": "OnDelete"}), ("spec", "updateStrategy"), {"type": "OnDelete"}),
    ("ds history", daemonset(), ("spec", "revisionHistoryLimit"), 10),
    ("job completions", job(), ("spec", "completions"), 1),
    ("job parallelism", job(), ("spec", "parallelism"), 1),
    ("job work queue keeps completions unset", job(parallelism=3), ("spec", "completions"), None),
    ("job parallelism when completions set", job(completions=5), ("spec", "parallelism"), 1),
    ("job backoff", job(), ("spec", "backoffLimit"), 6),
    ("job backoff per index", job(completionMode="Indexed", completions=3, backoffLimitPerIndex=1),
     ("spec", "backoffLimit"), MAX_INT32),
    ("job completion mode", job(), ("spec", "completionMode"), "NonIndexed"),
    ("job suspend", job(), ("spec", "suspend"), False),
    ("job manualSelector", job(), ("spec", "manualSelector"), False),
    ("job replacement", job(), ("spec", "podReplacementPolicy"), "TerminatingOrFailed"),
    ("job replacement with pfp",
     job(podFailurePolicy={"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}),
     ("spec", "podReplacementPolicy"), "Failed"),
    ("job pfp condition status",
     job(podFailurePolicy={"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}),
     ("spec", "podFailurePolicy", "rules", 0, "onPodConditions", 0, "status"), "True"),
    ("job labels from template", job(), ("metadata", "labels"), LABELS),
    ("cj concurrency", cronjob(), ("spec", "concurrencyPolicy"), "Allow"),
    ("cj suspend", cronjob(), ("spec", "suspend"), False),
    ("cj success history", cronjob(), ("spec", "successfulJobsHistoryLimit"), 3),
    ("cj failed history", cronjob(), ("spec", "failedJobsHistoryLimit"), 1),
    ("cj jobTemplate has no Job defaults", cronjob(), ("spec", "jobTemplate", "spec", "backoffLimit"), None),
    ("cj jobTemplate pod defaults", cronjob(),
     ("spec", "jobTemplate", "spec", "template", "spec", "schedulerName"), "default-scheduler"),
    ("cj v1beta1 accepted", cronjob("batch/v1beta1"), ("apiVersion",), "batch/v1beta1"),
]


@pytest.mark.parametrize(("manifest", "path", "expected"), [c[1:] for c in DEFAULTS],
                         ids=[c[0] for c in DEFAULTS])
def test_defaults(manifest: dict[str, Any], path: tuple[Any, ...], expected: Any) -> None:
    model_cls = model_of(manifest)
    model = model_cls.model_validate(manifest)
    wire = to_wire(model)
    assert dig(wire, path) == expected
    assert model_cls.model_validate(wire) == model


def test_explicit_job_labels_are_kept() -> None:
    manifest = job()
    manifest["metadata"]["labels"] = {"team": "a"}
    assert to_wire(Job.model_validate(manifest))["metadata"]["labels"] == {"team": "a"}


MISMATCH = "`selector` does not match template `labels`"
TEMPLATE_LABELS = ("spec", "template", "metadata", "labels")

# (case id, manifest, expected loc, message fragment)
INVALID = [
    ("deploy selector mismatch", deployment(selector={"matchLabels": {"app": "other"}}), TEMPLATE_LABELS, MISMATCH),
    ("deploy expression mismatch",
     deployment(selector={"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
     TEMPLATE_LABELS, MISMATCH),
    ("deploy empty selector", deployment(selector={}), ("spec", "selector"), "empty selector"),
    ("deploy no selector", {**deployment(), "spec": {"template": template()}}, ("spec", "selector"), "required"),
    ("deploy restart never", deployment(template=template("Never")), ("spec", "template", "spec", "restartPolicy"),
     "Always"),
    ("deploy recreate with rollingUpdate",
     deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
     ("spec", "strategy", "rollingUpdate"), "Recreate"),
    ("deploy both zero", deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
     ("spec", "strategy", "rollingUpdate", "maxUnavailable"), "may not be 0"),
    ("deploy over 100%", deployment(strategy={"rollingUpdate": {"maxUnavailable": "120%"}}),
     ("spec", "strategy", "rollingUpdate", "maxUnavailable"), "100%"),
    ("deploy bad percent", deployment(strategy={"rollingUpdate": {"maxSurge": "ten"}}),
     ("spec", "strategy", "rollingUpdate", "maxSurge"), "percent"),
    ("deploy bad strategy type", deployment(strategy={"type": "BlueGreen"}), ("spec", "strategy", "type"), "Recreate"),
    ("deploy negative replicas", deployment(replicas=-1), ("spec", "replicas"), "greater than or equal to 0"),
    ("deploy deadline under minReady", deployment(minReadySeconds=700), ("spec", "progressDeadlineSeconds"),
     "minReadySeconds"),
    ("deploy bad container", deployment(template=template(ports=[{"containerPort": 0}])),
     ("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), "between 1 and 65535"),
    ("rs selector mismatch", replicaset(selector={"matchLabels": {"app": "x"}}), TEMPLATE_LABELS, MISMATCH),
    ("ds selector mismatch", daemonset(selector={"matchLabels": {"tier": "x"}}), TEMPLATE_LABELS, MISMATCH),
    ("ds restart", daemonset(template=template("OnFailure")), ("spec", "template", "spec", "restartPolicy"), "Always"),
    ("job restart always", job(template=template()), ("spec", "template", "spec", "restartPolicy"), "OnFailure"),
    ("job selector mismatch", job(selector={"matchLabels": {"app": "x"}}, manualSelector=True),
     TEMPLATE_LABELS, MISMATCH),
    ("job pfp needs Never",
     job(template=template("OnFailure"), podFailurePolicy={"rules": [
         {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}),
     ("spec", "template", "spec", "restartPolicy"), "podFailurePolicy"),
    ("job exit code 0 with In",
     job(podFailurePolicy={"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0, 1]}}]}),
     ("spec", "podFailurePolicy", "rules", 0, "onExitCodes", "values"), "must not be 0"),
    ("job unordered exit codes",
     job(podFailurePolicy={"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3, 1]}}]}),
     ("spec", "podFailurePolicy", "rules", 0, "onExitCodes", "values"), "ordered"),
    ("job rule with both matchers",
     job(podFailurePolicy={"rules": [{"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]},
                                      "onPodConditions": [{"type": "X"}]}]}),
     ("spec", "podFailurePolicy", "rules", 0), "one of"),
    ("job bad action", job(podFailurePolicy={"rules": [{"action": "Retry", "onPodConditions": [{"type": "X"}]}]}),
     ("spec", "podFailurePolicy", "rules", 0, "action"), "FailJob"),
    ("job FailIndex needs per-index",
     job(completionMode="Indexed", completions=2, podFailurePolicy={"rules": [
         {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]}),
     ("spec", "podFailurePolicy", "rules", 0, "action"), "backoffLimitPerIndex"),
    ("job indexed needs completions", job(completionMode="Indexed", parallelism=2), ("spec", "completions"),
     "Indexed"),
    ("job per-index needs indexed", job(backoffLimitPerIndex=1), ("spec", "backoffLimitPerIndex"), "indexed"),
    ("job success policy needs indexed", job(successPolicy={"rules": [{"succeededCount": 1}]}),
     ("spec", "successPolicy"), "indexed"),
    ("job empty success rule", job(completionMode="Indexed", completions=2, successPolicy={"rules": [{}]}),
     ("spec", "successPolicy", "rules", 0), "at least one"),
    ("job deadline 0", job(activeDeadlineSeconds=0), ("spec", "activeDeadlineSeconds"), "greater than 0"),
    ("job negative backoff", job(backoffLimit=-1), ("spec", "backoffLimit"), "greater than or equal to 0"),
    ("job no template", {**job(), "spec": {}}, ("spec", "template"), "required"),
    ("cj restart always",
     cronjob(jobTemplate={"spec": {"template": template()}}),
     ("spec", "jobTemplate", "spec", "template", "spec", "restartPolicy"), "OnFailure"),
    ("cj bad schedule", cronjob(schedule="every minute"), ("spec", "schedule"), "5 fields"),
    ("cj TZ in schedule", cronjob(schedule="TZ=UTC 0 * * * *"), ("spec", "schedule"), "timeZone"),
    ("cj empty schedule", cronjob(schedule=""), ("spec", "schedule"), "Required"),
    ("cj bad policy", cronjob(concurrencyPolicy="Sometimes"), ("spec", "concurrencyPolicy"), "Forbid"),
    ("cj long name", {**cronjob(), "metadata": {"name": "a" * 53}}, ("metadata", "name"), "52"),
    ("cj v2alpha1", cronjob("batch/v2alpha1"), ("apiVersion",), "batch/v1"),
]


@pytest.mark.parametrize(("manifest", "loc", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(manifest: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    kind = {"Deployment": Deployment, "ReplicaSet": ReplicaSet, "DaemonSet": DaemonSet, "Job": Job,
            "CronJob": CronJob}[manifest["kind"]]
    with pytest.raises(ValidationError) as info:
        kind.model_validate(manifest)
    errors = info.value.errors()
    locs = [e["loc"] for e in errors]
    assert loc in locs, errors
    err = errors[locs.index(loc)]
    assert fragment.lower() in (err["msg"] + str(err.get("ctx", ""))).lower(), err


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_selector_matches(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(LabelSelector.model_validate(selector), labels) is matches


@pytest.mark.parametrize(
    ("schedule", "ok"),
    [("*/1 * * * *", True), ("0 0 * * MON-FRI", True), ("@hourly", True), ("@every 5m", True),
     ("0 0 * *", False), ("@sometimes", False), ("CRON_TZ=UTC 0 0 * * *", False), ("0 0 * * * *", False)],
)
def test_cron_schedule_syntax(schedule: str, ok: bool) -> None:
    assert (cron_schedule_error(schedule) is None) is ok


def test_controller_revision_round_trips() -> None:
    manifest = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "web-5d4f"},
                "revision": 3, "data": {"spec": {"template": {"$patch": "replace"}}}}
    model = ControllerRevision.model_validate(manifest)
    assert to_wire(model) == manifest


@pytest.mark.parametrize(
    ("name", "group", "kind", "short", "versions"),
    [("deploy", "apps", "Deployment", "deploy", ("v1",)), ("rs", "apps", "ReplicaSet", "rs", ("v1",)),
     ("ds", "apps", "DaemonSet", "ds", ("v1",)), ("jobs", "batch", "Job", None, ("v1",)),
     ("cj", "batch", "CronJob", "cj", ("v1", "v1beta1")),
     ("controllerrevisions", "apps", "ControllerRevision", None, ("v1",))],
)
def test_registry(name: str, group: str, kind: str, short: str | None, versions: tuple[str, ...]) -> None:
    [info] = REGISTRY.for_name(name)
    assert (info.group, info.kind, info.versions) == (group, kind, versions)
    assert info.namespaced and info.name_rule == "subdomain"
    assert info.has_status is (kind != "ControllerRevision")
    if short:
        assert short in info.short_names
    for version in versions:
        assert REGISTRY.for_api_version(f"{group}/{version}", kind) is info


# --- property: defaulting is idempotent ------------------------------------------------------

names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
int_or_percent = st.one_of(st.integers(0, 5), st.integers(0, 100).map(lambda n: f"{n}%"))


@st.composite
def deployments(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.dictionaries(names, names, min_size=1, max_size=3))
    selector_keys = draw(st.lists(st.sampled_from(sorted(labels)), min_size=1, unique=True))
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {k: labels[k] for k in selector_keys}},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [
            {"name": n, "image": draw(st.sampled_from(["nginx", "nginx:1.25"]))}
            for n in draw(st.lists(names, min_size=1, max_size=2, unique=True))]}},
    }
    if draw(st.booleans()):
        spec["replicas"] = draw(st.integers(0, 10))
    strategy = draw(st.sampled_from(["none", "Recreate", "RollingUpdate"]))
    if strategy == "Recreate":
        spec["strategy"] = {"type": "Recreate"}
    elif strategy == "RollingUpdate":
        surge = draw(int_or_percent)
        unavailable = draw(int_or_percent.filter(lambda v: v not in (0, "0%") or surge not in (0, "0%")))
        spec["strategy"] = {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    if draw(st.booleans()):
        spec["minReadySeconds"] = draw(st.integers(0, 30))
    if draw(st.booleans()):
        spec["paused"] = draw(st.booleans())
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": draw(names)}, "spec": spec}


@settings(max_examples=60, deadline=None)
@given(manifest=deployments())
def test_deployment_defaults_are_idempotent(manifest: dict[str, Any]) -> None:
    original = copy.deepcopy(manifest)
    model = Deployment.model_validate(manifest)
    assert manifest == original
    wire = to_wire(model)
    again = Deployment.model_validate(wire)
    assert again == model
    assert to_wire(again) == wire
