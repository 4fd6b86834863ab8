"""Argo Rollouts kinds: upstream manifests, invalid specs with their error paths, round trips.

Covers meshwork.model.argo_rollouts, argo_analysis and argo_common.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from meshwork.model.argo_analysis import (
    AnalysisRun,
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Experiment,
)
from meshwork.model.argo_common import parse_go_duration
from meshwork.model.argo_rollouts import (
    INVALID_DURATION,
    INVALID_SET_WEIGHT,
    INVALID_STEP,
    MISSING_STRATEGY,
    MULTIPLE_STRATEGIES,
    ROUTE_NOT_MANAGED,
    CanaryStep,
    CanaryStrategy,
    Rollout,
    RolloutPause,
    RolloutSpec,
    RolloutStrategy,
)
from meshwork.model.base import REGISTRY, ObjectMeta, Resource, to_wire
from meshwork.model.container import Container
from meshwork.model.corev1 import LabelSelector
from meshwork.model.pod import PodSpec, PodTemplateSpec
from support.conformance import CONFORMANCE as SHARED_CONFORMANCE
from support.conformance import DELETE, argo_docs, patched

CONFORMANCE = SHARED_CONFORMANCE / "argo-rollouts"



def errors_of(model: type[Resource], doc: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(doc)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def assert_error(model: type[Resource], doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    errors = errors_of(model, doc)
    assert any(where == loc and message in msg for where, msg in errors), errors


def rollout(**canary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
            "strategy": {"canary": canary},
        },
    }


ISTIO = {"canaryService": "web-canary", "stableService": "web-stable",
         "trafficRouting": {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}}  # fmt: skip
BLUE_GREEN = patched(rollout(), "spec.strategy", {"blueGreen": {"activeService": "web-active"}})
CANARY = ("spec", "strategy", "canary")
STEP0 = (*CANARY, "steps", 0)


# --- upstream manifests -----------------------------------------------------


@pytest.mark.parametrize("doc", argo_docs(CONFORMANCE))
def test_upstream_manifest_validates_and_keeps_its_wire_form(doc: dict[str, Any]) -> None:
    info = REGISTRY.for_api_version(doc["apiVersion"], doc["kind"])
    assert info is not None, doc["kind"]
    obj = info.model.model_validate(doc)
    wire = to_wire(obj)
    assert wire == doc  # Argo stores what was written: no defaults filled in
    assert info.model.model_validate(wire) == obj


def test_python_side_sees_kubernetes_defaults_but_the_wire_does_not() -> None:
    obj = Rollout.model_validate(rollout(steps=[{"setWeight": 20}]))
    assert obj.spec.template is not None
    container = obj.spec.template.spec.containers[0]
    assert container.image_pull_policy == "IfNotPresent"
    assert obj.spec.template.spec.restart_policy == "Always"
    wire_container = to_wire(obj)["spec"]["template"]["spec"]["containers"][0]
    assert wire_container == {"name": "web", "image": "web:1"}


def test_registry_names_and_scopes() -> None:
    expected = {
        "Rollout": ("rollouts", ("ro",), True, Rollout),
        "AnalysisTemplate": ("analysistemplates", ("at",), True, AnalysisTemplate),
        "ClusterAnalysisTemplate": ("clusteranalysistemplates", ("cat",), False, ClusterAnalysisTemplate),
        "AnalysisRun": ("analysisruns", ("ar",), True, AnalysisRun),
        "Experiment": ("experiments", ("exp",), True, Experiment),
    }
    for kind, (plural, short, namespaced, model) in expected.items():
        info = REGISTRY.for_api_version("argoproj.io/v1alpha1", kind)
        assert info is not None and info.model is model
        assert (info.plural, info.short_names, info.namespaced) == (plural, short, namespaced)
        assert REGISTRY.for_name(short[0]) == [info]
        assert REGISTRY.for_resource("argoproj.io", plural) is info


# --- invalid Rollouts -------------------------------------------------------

ROLLOUT_CASES = [
    ("no strategy", patched(rollout(), "spec.strategy", {}), ("spec", "strategy"), MISSING_STRATEGY),
    ("two strategies", patched(rollout(), "spec.strategy.blueGreen", {"activeService": "a"}),
     ("spec", "strategy"), MULTIPLE_STRATEGIES),
    ("template and workloadRef", patched(rollout(), "spec.workloadRef", {"kind": "Deployment", "name": "d"}),
     ("spec",), "exactly one of template or workloadRef"),
    ("neither template nor workloadRef", patched(rollout(), "spec.template", DELETE),
     ("spec",), "exactly one of template or workloadRef"),
    ("selector missing", patched(rollout(), "spec.selector", DELETE), ("spec", "selector"), "Required value"),
    ("selector misses template", patched(rollout(), "spec.selector.matchLabels.app", "other"),
     ("spec", "template", "metadata", "labels"), "does not match template"),
    ("template restartPolicy", patched(rollout(), "spec.template.spec.restartPolicy", "Never"),
     ("spec", "template", "spec", "restartPolicy"), "supported values"),
    ("bad container name", patched(rollout(), "spec.template.spec.containers.0.name", "Web_1"),
     ("spec", "template", "spec", "containers", 0, "name"), "RFC 1123"),
    ("negative replicas", patched(rollout(), "spec.replicas", -1), ("spec", "replicas"), "greater than or equal to 0"),
    ("deadline not above minReadySeconds", patched(rollout(), "spec.minReadySeconds", 600),
     ("spec", "progressDeadlineSeconds"), "must be greater than minReadySeconds"),
    ("setWeight and pause in one step", rollout(steps=[{"setWeight": 10, "pause": {}}]), STEP0, INVALID_STEP),
    ("empty step", rollout(steps=[{}]), STEP0, INVALID_STEP),
    ("setWeight above 100", rollout(steps=[{"setWeight": 101}]), (*STEP0, "setWeight"), INVALID_SET_WEIGHT),
    ("setWeight as a string", rollout(steps=[{"setWeight": "10"}]), (*STEP0, "setWeight"), "valid integer"),
    ("pause without a unit we know", rollout(steps=[{"pause": {"duration": "10x"}}]),
     (*STEP0, "pause", "duration"), INVALID_DURATION),
    ("negative pause", rollout(steps=[{"pause": {"duration": -5}}]), (*STEP0, "pause", "duration"), INVALID_DURATION),
    ("unknown step field", rollout(steps=[{"setWeight": 10, "weight": 1}]), (*STEP0, "weight"), "Extra inputs"),
    ("setCanaryScale needs traffic routing", rollout(steps=[{"setCanaryScale": {"weight": 10}}]),
     (*STEP0, "setCanaryScale"), "requires TrafficRouting"),
    ("mirror needs istio", rollout(steps=[{"setMirrorRoute": {"name": "m"}}]),
     (*STEP0, "setMirrorRoute"), "supports Istio only"),
    ("header route needs managedRoutes", rollout(**ISTIO, steps=[{"setHeaderRoute": {"name": "h"}}]),
     (*STEP0, "setHeaderRoute"), "managedRoutes"),
    ("header route not managed",
     patched(rollout(**ISTIO, steps=[{"setHeaderRoute": {"name": "h"}}]),
             "spec.strategy.canary.trafficRouting.managedRoutes", [{"name": "other"}]),
     (*STEP0, "setHeaderRoute", "name"), ROUTE_NOT_MANAGED),
    ("header match with two values",
     patched(rollout(**ISTIO, steps=[{"setHeaderRoute": {"name": "h", "match": [
         {"headerName": "agent", "headerValue": {"exact": "a", "prefix": "b"}}]}}]),
         "spec.strategy.canary.trafficRouting.managedRoutes", [{"name": "h"}]),
     (*STEP0, "setHeaderRoute", "match", 0, "headerValue"), "exactly one of"),
    ("mirror match with no value",
     patched(rollout(**ISTIO, steps=[{"setMirrorRoute": {"name": "m", "match": [{"path": {}}]}}]),
             "spec.strategy.canary.trafficRouting.managedRoutes", [{"name": "m"}]),
     (*STEP0, "setMirrorRoute", "match", 0, "path"), "value missed"),
    ("traffic routing without services", rollout(trafficRouting=ISTIO["trafficRouting"]),
     (*CANARY, "stableService"), "must to be set to use Traffic Routing"),
    ("same canary and stable service", rollout(canaryService="s", stableService="s"),
     (*CANARY, "stableService"), "two different services"),
    ("scaleDownDelaySeconds without routing", rollout(scaleDownDelaySeconds=30),
     (*CANARY, "scaleDownDelaySeconds"), "only be used with traffic routing"),
    ("maxSurge and maxUnavailable both zero", rollout(maxSurge=0, maxUnavailable="0%"),
     (*CANARY, "maxSurge"), "both can not be zero"),
    ("istio with two kinds of VirtualService",
     patched(rollout(**ISTIO), "spec.strategy.canary.trafficRouting.istio.virtualServices", [{"name": "x"}]),
     (*CANARY, "trafficRouting", "istio"), "exactly one of virtualService or virtualServices"),
    ("experiment weight without routing",
     rollout(steps=[{"experiment": {"templates": [{"name": "t", "specRef": "canary", "weight": 10}]}}]),
     (*STEP0, "experiment", "templates", 0, "weight"), "unless TrafficRouting is enabled"),
    ("experiment specRef", rollout(steps=[{"experiment": {"templates": [{"name": "t", "specRef": "new"}]}}]),
     (*STEP0, "experiment", "templates", 0, "specRef"), "'canary' or 'stable'"),
    ("anti-affinity with both rules",
     rollout(antiAffinity={"requiredDuringSchedulingIgnoredDuringExecution": {},
                           "preferredDuringSchedulingIgnoredDuringExecution": {"weight": 5}}),
     (*CANARY, "antiAffinity"), "exactly one strategy"),
    ("anti-affinity weight", rollout(antiAffinity={"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 0}}),
     (*CANARY, "antiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "weight"), "between 1-100"),
    ("blue-green without activeService", patched(BLUE_GREEN, "spec.strategy.blueGreen.activeService", DELETE),
     ("spec", "strategy", "blueGreen", "activeService"), "Field required"),
    ("blue-green same services", patched(BLUE_GREEN, "spec.strategy.blueGreen.previewService", "web-active"),
     ("spec", "strategy", "blueGreen", "activeService"), "two different services"),
    ("blue-green scale-down limit above history",
     patched(BLUE_GREEN, "spec.strategy.blueGreen.scaleDownDelayRevisionLimit", 11),
     ("spec", "strategy", "blueGreen", "scaleDownDelayRevisionLimit"), "revision history limit"),
    ("workloadRef scaleDown", patched(patched(rollout(), "spec.template", DELETE), "spec.workloadRef",
                                      {"kind": "Deployment", "name": "d", "scaleDown": "later"}),
     ("spec", "workloadRef", "scaleDown"), "'never'"),
    ("wrong apiVersion", patched(rollout(), "apiVersion", "argoproj.io/v1"), ("apiVersion",), "argoproj.io/v1alpha1"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "loc", "message"), [pytest.param(*c[1:], id=c[0]) for c in ROLLOUT_CASES])
def test_invalid_rollout_names_the_field(doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    assert_error(Rollout, doc, loc, message)


@pytest.mark.parametrize("doc", [
    pytest.param(rollout(), id="canary without steps"),
    pytest.param(rollout(steps=[{"setWeight": 0}, {"pause": {"duration": "1h30m"}}, {"pause": {"duration": "45"}}]),
                 id="pause units"),
    pytest.param(rollout(trafficRouting={"istio": {"virtualService": {"name": "vs"},
                                                   "destinationRule": {"name": "dr", "canarySubsetName": "c",
                                                                       "stableSubsetName": "s"}}},
                         steps=[{"setCanaryScale": {"replicas": 1}}]), id="subset split needs no services"),
    pytest.param(rollout(maxSurge=0, maxUnavailable=1), id="one of maxSurge/maxUnavailable zero"),
    pytest.param(rollout(trafficRouting={"nginx": {"stableIngress": "web"}}, canaryService="c", stableService="s"),
                 id="other traffic routers kept"),
    pytest.param(patched(patched(rollout(), "spec.template", DELETE), "spec.selector", DELETE)
                 | {"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                             "strategy": {"canary": {}}}}, id="workloadRef without selector"),
])  # fmt: skip
def test_valid_rollouts(doc: dict[str, Any]) -> None:
    obj = Rollout.model_validate(doc)
    assert to_wire(obj) == doc
    assert Rollout.model_validate(to_wire(obj)) == obj


@pytest.mark.parametrize(("duration", "seconds"), [
    (None, 0), (40, 40), ("40", 40), ("40s", 40), ("1h30m", 5400), ("1.5m", 90), ("0", 0), ("10x", -1), ("", -1),
])  # fmt: skip
def test_pause_duration_seconds(duration: int | str | None, seconds: int) -> None:
    if seconds < 0:
        with pytest.raises(ValidationError):
            RolloutPause(duration=duration)
        assert RolloutPause.model_construct(duration=duration).duration_seconds() == seconds
    else:
        assert RolloutPause(duration=duration).duration_seconds() == seconds


# --- Go durations -------------------------------------------------------------

GO_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("1h", 3600.0), ("1h30m", 5400.0), ("-2.5s", -2.5), ("+3m", 180.0), ("300ms", 0.3),
    ("1us", 1e-6), ("1µs", 1e-6), (".5h", 1800.0), ("2h45m30s", 9930.0),
])  # fmt: skip
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "h", "1h 30m", "-", "1.2.3s", "1H"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(GO_UNITS))), min_size=1, max_size=4))
def test_parse_go_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_go_duration(text) == pytest.approx(sum(n * GO_UNITS[u] for n, u in parts))


@given(st.text(max_size=20))
def test_parse_go_duration_fails_only_with_value_error(text: str) -> None:
    try:
        parse_go_duration(text)
    except ValueError:
        pass


# --- analysis -------------------------------------------------------------------


def analysis(*metrics: dict[str, Any], kind: str = "AnalysisTemplate") -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": {"name": "a"},
            "spec": {"metrics": list(metrics)}}  # fmt: skip


PROM = {"prometheus": {"address": "http://prom:9090", "query": "up"}}
JOB = {"job": {"spec": {"backoffLimit": 0, "template": {"spec": {
    "containers": [{"name": "c", "image": "alpine:3.8", "command": ["sh", "-c", "exit 0"]}],
    "restartPolicy": "Never"}}}}}  # fmt: skip
M0 = ("spec", "metrics", 0)

ANALYSIS_CASES = [
    ("no metrics", analysis(), ("spec", "metrics"), "no metrics specified"),
    ("duplicate metric", analysis({"name": "m", "provider": PROM}, {"name": "m", "provider": PROM}),
     ("spec", "metrics", 1, "name"), "duplicate name 'm'"),
    ("no provider", analysis({"name": "m", "provider": {}}), (*M0, "provider"), "no provider specified"),
    ("two providers", analysis({"name": "m", "provider": {**PROM, **JOB}}), (*M0, "provider"),
     "multiple providers specified"),
    ("count without interval", analysis({"name": "m", "count": 2, "provider": PROM}), (*M0, "interval"),
     "interval must be specified when count > 1"),
    ("count below failureLimit", analysis({"name": "m", "count": 1, "failureLimit": 2, "provider": PROM}),
     (*M0, "count"), "count must be >= failureLimit"),
    ("bad interval", analysis({"name": "m", "interval": "5 minutes", "provider": PROM}), (*M0, "interval"),
     "invalid interval string"),
    ("negative failureLimit", analysis({"name": "m", "failureLimit": -1, "provider": PROM}),
     (*M0, "failureLimit"), "failureLimit must be >= 0"),
    ("web without url", analysis({"name": "m", "provider": {"web": {"jsonPath": "{$.ok}"}}}),
     (*M0, "provider", "web", "url"), "Field required"),
    ("job pod must not restart", patched(analysis({"name": "m", "provider": JOB}),
                                         "spec.metrics.0.provider.job.spec.template.spec.restartPolicy", "Always"),
     (*M0, "provider", "job", "spec", "template", "spec", "restartPolicy"), "supported values"),
    ("unknown metric field", analysis({"name": "m", "provider": PROM, "limit": 1}), (*M0, "limit"), "Extra inputs"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "loc", "message"), [pytest.param(*c[1:], id=c[0]) for c in ANALYSIS_CASES])
def test_invalid_analysis_template_names_the_field(doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    assert_error(AnalysisTemplate, doc, loc, message)
    assert_error(ClusterAnalysisTemplate, patched(doc, "kind", "ClusterAnalysisTemplate"), loc, message)


def test_templated_limits_wait_for_their_arguments() -> None:
    doc = analysis({"name": "m", "count": "{{args.count}}", "failureLimit": "{{args.limit}}",
                    "interval": "{{args.interval}}", "provider": PROM})  # fmt: skip
    doc["spec"]["args"] = [{"name": "count", "value": "3"}, {"name": "limit"},
                           {"name": "interval", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]  # fmt: skip
    obj = AnalysisTemplate.model_validate(doc)
    assert to_wire(obj) == doc


def test_analysis_run_round_trip_keeps_unknown_status_fields() -> None:
    doc = patched(analysis({"name": "m", "provider": JOB}, kind="AnalysisRun"), "spec.terminate", True)
    doc["status"] = {"phase": "Running", "metricResults": [{"name": "m", "phase": "Running"}],
                     "someFutureField": {"x": 1}}  # fmt: skip
    obj = AnalysisRun.model_validate(doc)
    assert obj.status is not None and obj.status.phase == "Running"
    assert to_wire(obj) == doc
    assert AnalysisRun.model_validate(to_wire(obj)) == obj


# --- experiments ------------------------------------------------------------------


def experiment(*templates: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "e"},
            "spec": {"duration": "5m", "templates": list(templates)}}  # fmt: skip


def exp_template(name: str, app: str = "a") -> dict[str, Any]:
    return {"name": name, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                         "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}  # fmt: skip


@pytest.mark.parametrize(("doc", "loc", "message"), [
    pytest.param(experiment(exp_template("t"), exp_template("t")), ("spec", "templates", 1, "name"),
                 "Duplicate value", id="duplicate template"),
    pytest.param(patched(experiment(exp_template("t")), "spec.templates.0.selector.matchLabels.app", "b"),
                 ("spec", "templates", 0, "template", "metadata", "labels"), "does not match", id="selector"),
    pytest.param(patched(experiment(exp_template("t")), "spec.duration", "forever"), ("spec", "duration"),
                 "invalid duration string", id="duration"),
])  # fmt: skip
def test_invalid_experiment_names_the_field(doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    assert_error(Experiment, doc, loc, message)


def test_experiment_round_trip() -> None:
    doc = experiment(exp_template("baseline"), exp_template("canary", "b") | {"service": {}})
    obj = Experiment.model_validate(doc)
    assert to_wire(obj) == doc
    assert Experiment.model_validate(to_wire(obj)) == obj


# --- round trips of objects built in Python ---------------------------------------


def test_rollout_built_in_python_round_trips() -> None:
    obj = Rollout(
        metadata=ObjectMeta(name="web", namespace="shop"),
        spec=RolloutSpec(
            replicas=2,
            selector=LabelSelector(match_labels={"app": "web"}),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": "web"}),
                spec=PodSpec(containers=[Container(name="web", image="web:2")]),
            ),
            strategy=RolloutStrategy(canary=CanaryStrategy(
                steps=[CanaryStep(set_weight=20), CanaryStep(pause=RolloutPause(duration="30s"))])),
        ),
    )
    wire = to_wire(obj)
    assert wire["apiVersion"] == "argoproj.io/v1alpha1" and wire["kind"] == "Rollout"
    assert wire["spec"]["strategy"] == {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}]}}
    assert Rollout.model_validate(wire) == obj


step_strategy = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.builds(lambda d: {"pause": {} if d is None else {"duration": d}},
              st.one_of(st.none(), st.integers(0, 3600), st.sampled_from(["10s", "1m", "2h30m", "15"]))),
    st.builds(lambda r: {"analysis": {"templates": [{"templateName": "t"}],
                                      "args": [{"name": "hash", "valueFrom": {"podTemplateHashValue": r}}]}},
              st.sampled_from(["Stable", "Latest"])),
)  # fmt: skip


@given(st.lists(step_strategy, max_size=6), st.integers(0, 50), st.sampled_from([None, 1, "25%"]))
def test_generated_canary_rollouts_round_trip(steps: list[dict[str, Any]], replicas: int,
                                              surge: int | str | None) -> None:  # fmt: skip
    doc = patched(rollout(steps=steps), "spec.replicas", replicas)
    if surge is not None:
        doc["spec"]["strategy"]["canary"]["maxSurge"] = surge
    obj = Rollout.model_validate(doc)
    assert to_wire(obj) == doc
    assert Rollout.model_validate(to_wire(obj)) == obj
