"""Argo Workflows kinds: upstream manifests, invalid specs with their error paths, round trips.

Covers meshwork.model.argo_workflows and argo_templates.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from meshwork.model.argo_templates import (
    MAIN_CONTAINER,
    TYPE_UNSPECIFIED,
    DAGTask,
    DAGTemplate,
    Parameter,
    Template,
)
from meshwork.model.argo_workflows import (
    ClusterWorkflowTemplate,
    CronWorkflow,
    Workflow,
    WorkflowSpec,
    WorkflowTemplate,
)
from meshwork.model.base import REGISTRY, ObjectMeta, Resource, to_wire
from meshwork.model.container import Container
from support.conformance import CONFORMANCE as SHARED_CONFORMANCE
from support.conformance import DELETE, argo_docs, patched

CONFORMANCE = SHARED_CONFORMANCE / "argo-workflows"



def assert_error(model: type[Resource], doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(doc)
    errors = [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]
    assert any(where == loc and message in msg for where, msg in errors), errors


def echo(name: str = "echo") -> dict[str, Any]:
    return {"name": name, "container": {"image": "busybox", "command": ["echo", "hi"]}}


def workflow(*templates: dict[str, Any], entrypoint: str = "main", kind: str = "Workflow") -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": {"generateName": "wf-"},
            "spec": {"entrypoint": entrypoint, "templates": list(templates)}}  # fmt: skip


def steps(*groups: list[dict[str, Any]], name: str = "main") -> dict[str, Any]:
    return {"name": name, "steps": [list(g) for g in groups]}


def dag(*tasks: dict[str, Any], name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "dag": {"tasks": list(tasks), **extra}}


def cron(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "c"},
            "spec": {"workflowSpec": {"entrypoint": "echo", "templates": [echo()]}, **spec}}  # fmt: skip


T0 = ("spec", "templates", 0)


# --- upstream manifests -------------------------------------------------------


@pytest.mark.parametrize("doc", argo_docs(CONFORMANCE))
def test_upstream_manifest_validates_and_keeps_its_wire_form(doc: dict[str, Any]) -> None:
    info = REGISTRY.for_api_version(doc["apiVersion"], doc["kind"])
    assert info is not None, doc["kind"]
    obj = info.model.model_validate(doc)
    wire = to_wire(obj)
    assert wire == doc  # Argo stores what was written: no defaults, items and scalars as given
    assert info.model.model_validate(wire) == obj


def test_registry_names_and_scopes() -> None:
    expected = {
        "Workflow": ("workflows", ("wf",), True, Workflow),
        "WorkflowTemplate": ("workflowtemplates", ("wftmpl",), True, WorkflowTemplate),
        "ClusterWorkflowTemplate": ("clusterworkflowtemplates", ("clusterwftmpl", "cwft"), False,
                                    ClusterWorkflowTemplate),
        "CronWorkflow": ("cronworkflows", ("cwf", "cronwf"), True, CronWorkflow),
    }  # fmt: skip
    for kind, (plural, short, namespaced, model) in expected.items():
        info = REGISTRY.for_api_version("argoproj.io/v1alpha1", kind)
        assert info is not None and info.model is model
        assert (info.plural, info.short_names, info.namespaced) == (plural, short, namespaced)
        for name in short:
            assert REGISTRY.for_name(name) == [info]


# --- the main container -------------------------------------------------------


def test_unnamed_container_is_main_in_python_and_unnamed_on_the_wire() -> None:
    doc = workflow(echo("main"))
    obj = Workflow.model_validate(doc)
    templates = obj.spec.templates or []
    assert templates[0].container is not None
    assert templates[0].container.name == MAIN_CONTAINER
    assert templates[0].container.image_pull_policy == "Always"  # busybox: no tag means latest
    assert to_wire(obj) == doc


def test_named_container_and_script_keep_their_names() -> None:
    doc = workflow({"name": "main", "script": {"name": "py", "image": "python:3", "command": ["python"],
                                               "source": "print(1)\n"}})  # fmt: skip
    obj = Workflow.model_validate(doc)
    assert (obj.spec.templates or [])[0].script is not None
    assert to_wire(obj) == doc


# --- parameter values ---------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    ("A", "A"), (1, "1"), (-7, "-7"), (1.5, "1.5"), (2.0, "2"), (1e21, "1000000000000000000000"),
    (1.5e-7, "0.00000015"), (True, "true"), (False, "false"),
])  # fmt: skip
def test_parameter_values_are_strings_as_argo_prints_them(value: Any, text: str) -> None:
    assert Parameter.model_validate({"name": "p", "value": value, "default": value}).value == text


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text()))
def test_any_string_is_lossless(value: Any) -> None:
    text = Parameter.model_validate({"name": "p", "value": value}).value
    assert isinstance(text, str)
    if isinstance(value, bool):
        assert text == str(value).lower()
    elif isinstance(value, int):
        assert int(text) == value
    elif isinstance(value, float):
        assert "e" not in text.lower()  # Go's 'f' format: never an exponent
        assert float(text) == value  # and the shortest digits that read back the same
    else:
        assert text == value
    assert Parameter.model_validate({"name": "p", "value": text}).value == text


# --- invalid workflows ----------------------------------------------------------

CALL = (*T0, "steps", 0, 0)
TASKS = (*T0, "dag", "tasks")

WORKFLOW_CASES = [
    ("no entrypoint", patched(workflow(echo("main")), "spec.entrypoint", DELETE), ("spec", "entrypoint"),
     "spec.entrypoint is required"),
    ("undefined entrypoint", workflow(echo(), entrypoint="main"), ("spec", "entrypoint"),
     "template 'main' is not defined"),
    ("two template types", workflow(echo("main") | {"suspend": {}}), T0, "multiple template types"),
    ("no template type", workflow({"name": "main"}), T0, TYPE_UNSPECIFIED),
    ("duplicate template", workflow(echo("main"), echo("main")), ("spec", "templates", 1, "name"), "not unique"),
    ("template name", workflow(echo("main"), echo("hello_world")), ("spec", "templates", 1, "name"),
     "alpha-numeric"),
    ("template name required", workflow(echo("main"), {"container": {"image": "x"}}),
     ("spec", "templates", 1, "name"), "name is required"),
    ("step to an undefined template", workflow(steps([{"name": "a", "template": "nope"}])),
     (*CALL, "template"), "template 'nope' is not defined"),
    ("step with template and templateRef", workflow(steps([{"name": "a", "template": "echo",
                                                            "templateRef": {"name": "t", "template": "x"}}]), echo()),
     CALL, "exactly one of template, templateRef or inline"),
    ("step without a target", workflow(steps([{"name": "a"}])), CALL, "exactly one of template"),
    ("inline template without a type", workflow(steps([{"name": "a", "inline": {"inputs": {}}}])),
     (*CALL, "inline"), TYPE_UNSPECIFIED),
    ("duplicate step", workflow(steps([{"name": "a", "template": "echo"}], [{"name": "a", "template": "echo"}]),
                                echo()),
     (*T0, "steps", 1, 0, "name"), "step name 'a' is not unique"),
    ("two loops", workflow(steps([{"name": "a", "template": "echo", "withItems": [1], "withParam": "[]"}]), echo()),
     CALL, "only one of withItems, withParam or withSequence"),
    ("sequence count and end", workflow(steps([{"name": "a", "template": "echo",
                                                "withSequence": {"count": 3, "end": "5"}}]), echo()),
     (*CALL, "withSequence"), "only one of count or end"),
    ("dag dependency undefined", workflow(dag({"name": "A", "template": "echo"},
                                              {"name": "B", "template": "echo", "dependencies": ["Z"]}), echo()),
     (*TASKS, 1, "dependencies"), "dependency 'Z' not defined"),
    ("dag depends undefined", workflow(dag({"name": "A", "template": "echo"},
                                           {"name": "B", "template": "echo", "depends": "A && Z.Failed"}), echo()),
     (*TASKS, 1, "depends"), "dependency 'Z' not defined"),
    ("dag cycle", workflow(dag({"name": "A", "template": "echo", "depends": "C"},
                               {"name": "B", "template": "echo", "depends": "A"},
                               {"name": "C", "template": "echo", "depends": "B.Succeeded"}), echo()),
     TASKS, "dependency cycle detected"),
    ("dag self dependency", workflow(dag({"name": "A", "template": "echo", "dependencies": ["A"]}), echo()),
     TASKS, "dependency cycle detected"),
    ("depends and dependencies", workflow(dag({"name": "A", "template": "echo"},
                                              {"name": "B", "template": "echo", "depends": "A"},
                                              {"name": "C", "template": "echo", "dependencies": ["A"]}), echo()),
     TASKS, "cannot use both 'depends' and 'dependencies'"),
    ("dag target undefined", workflow(dag({"name": "A", "template": "echo"}, target="A Q"), echo()),
     (*T0, "dag", "target"), "target 'Q' is not defined"),
    ("duplicate task", workflow(dag({"name": "A", "template": "echo"}, {"name": "A", "template": "echo"}), echo()),
     (*TASKS, 1, "name"), "task name 'A' is not unique"),
    ("task without a name", workflow(dag({"template": "echo"}), echo()), (*TASKS, 0, "name"), "Field required"),
    ("input parameter name", workflow(echo("main") | {"inputs": {"parameters": [{"name": "my param"}]}}),
     (*T0, "inputs", "parameters", 0, "name"), "Parameter/Artifact name"),
    ("duplicate argument", patched(workflow(echo("main")), "spec.arguments",
                                   {"parameters": [{"name": "p", "value": 1}, {"name": "p", "value": 2}]}),
     ("spec", "arguments", "parameters", 1, "name"), "'p' is not unique"),
    ("non-finite parameter value", patched(workflow(echo("main")), "spec.arguments",
                                           {"parameters": [{"name": "p", "value": float("nan")}]}),
     ("spec", "arguments", "parameters", 0, "value"), "not a valid parameter value"),
    ("undefined onExit", patched(workflow(echo("main")), "spec.onExit", "bye"), ("spec", "onExit"),
     "template 'bye' is not defined"),
    ("undefined exit hook", patched(workflow(echo("main")), "spec.hooks", {"exit": {"template": "bye"}}),
     ("spec", "hooks", "exit", "template"), "template 'bye' is not defined"),
    ("retry policy", workflow(echo("main") | {"retryStrategy": {"limit": 3, "retryPolicy": "Sometimes"}}),
     (*T0, "retryStrategy", "retryPolicy"), "'Always'"),
    ("container field typo", workflow({"name": "main", "container": {"image": "x", "comand": ["y"]}}),
     (*T0, "container", "comand"), "Extra inputs"),
    ("container port out of range", workflow({"name": "main", "container": {"image": "x", "ports": [
        {"containerPort": 70000}]}}), (*T0, "container", "ports", 0, "containerPort"), "between 1 and 65535"),
    ("script without source", workflow({"name": "main", "script": {"image": "python", "command": ["python"]}}),
     (*T0, "script", "source"), "Field required"),
    ("resource action", workflow({"name": "main", "resource": {"action": "upsert", "manifest": "{}"}}),
     (*T0, "resource", "action"), "'get'"),
    ("pod GC strategy", patched(workflow(echo("main")), "spec.podGC", {"strategy": "Whenever"}),
     ("spec", "podGC", "strategy"), "OnPodCompletion"),
    ("parallelism as a string", patched(workflow(echo("main")), "spec.parallelism", "2"), ("spec", "parallelism"),
     "valid integer"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "loc", "message"), [pytest.param(*c[1:], id=c[0]) for c in WORKFLOW_CASES])
def test_invalid_workflow_names_the_field(doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    assert_error(Workflow, doc, loc, message)


@pytest.mark.parametrize("doc", [
    pytest.param(workflow(steps([{"name": "a", "template": "echo", "withSequence": {"start": "1", "end": 5},
                                  "continueOn": {"failed": True}}]), echo()), id="sequence"),
    pytest.param(workflow(steps([{"name": "a", "templateRef": {"name": "lib", "template": "x",
                                                               "clusterScope": True}}])), id="templateRef"),
    pytest.param(workflow(steps([{"name": "a", "inline": {"container": {"image": "x"}}}])), id="inline"),
    pytest.param(workflow(dag({"name": "A", "template": "echo"},
                              {"name": "B", "template": "echo", "depends": "A.Succeeded || A.Failed"},
                              {"name": "C", "template": "echo", "depends": "!(B.Errored) && A"},
                              target="B C", failFast=False), echo()), id="depends expression"),
    pytest.param(workflow(echo("main") | {"retryStrategy": {"limit": "{{workflow.parameters.n}}",
                                                            "backoff": {"duration": "1", "factor": 2}},
                                          "activeDeadlineSeconds": "{{inputs.parameters.t}}"}), id="templated"),
    pytest.param({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "x-"},
                  "spec": {"workflowTemplateRef": {"name": "lib"},
                           "arguments": {"parameters": [{"name": "n", "value": "3"}]}}}, id="workflowTemplateRef"),
    pytest.param(patched(workflow(echo("main")), "spec.templateDefaults", {"timeout": "1h"}), id="templateDefaults"),
    pytest.param(patched(patched(workflow(echo("main") | {"sidecars": [{"name": "db", "image": "redis:7",
                                                                         "mirrorVolumeMounts": True}]}),
                                 "spec.volumes", [{"name": "work", "emptyDir": {}}]),
                         "spec.volumeClaimTemplates", [{"metadata": {"name": "w"},
                                                        "spec": {"accessModes": ["ReadWriteOnce"]}}]),
                 id="pod settings"),
])  # fmt: skip
def test_valid_workflows(doc: dict[str, Any]) -> None:
    obj = Workflow.model_validate(doc)
    assert to_wire(obj) == doc
    assert Workflow.model_validate(to_wire(obj)) == obj


def test_workflow_templates_need_no_entrypoint() -> None:
    for kind, model in (("WorkflowTemplate", WorkflowTemplate), ("ClusterWorkflowTemplate", ClusterWorkflowTemplate)):
        doc = patched(workflow(echo("lib-echo"), kind=kind), "spec.entrypoint", DELETE)
        obj = model.model_validate(doc)
        assert to_wire(obj) == doc
        assert_error(model, workflow(echo("a"), echo("a"), kind=kind), ("spec", "templates", 1, "name"),
                     "not unique")  # fmt: skip


# --- cron workflows ---------------------------------------------------------------

CRON_CASES = [
    ("no schedule", cron(), ("spec", "schedules"), "at least one schedule"),
    ("schedule and schedules", cron(schedule="* * * * *", schedules=["0 * * * *"]), ("spec", "schedules"),
     "cannot use both"),
    ("bad schedules entry", cron(schedules=["* * * * *", "* * *"]), ("spec", "schedules", 1), "is malformed"),
    ("bad schedule", cron(schedule="every minute"), ("spec", "schedule"), "is malformed"),
    ("concurrency policy", cron(schedule="@hourly", concurrencyPolicy="Sometimes"), ("spec", "concurrencyPolicy"),
     "'Allow'"),
    ("negative history", cron(schedule="@hourly", successfulJobsHistoryLimit=-1),
     ("spec", "successfulJobsHistoryLimit"), "greater than or equal to 0"),
    ("workflowSpec without entrypoint", patched(cron(schedule="@hourly"), "spec.workflowSpec.entrypoint", DELETE),
     ("spec", "workflowSpec", "entrypoint"), "spec.entrypoint is required"),
    ("workflowSpec step to nowhere",
     patched(cron(schedule="@hourly"), "spec.workflowSpec.templates", [steps([{"name": "a", "template": "x"}],
                                                                             name="echo")]),
     ("spec", "workflowSpec", "templates", 0, "steps", 0, 0, "template"), "template 'x' is not defined"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "loc", "message"), [pytest.param(*c[1:], id=c[0]) for c in CRON_CASES])
def test_invalid_cron_workflow_names_the_field(doc: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    assert_error(CronWorkflow, doc, loc, message)


def test_cron_workflow_round_trip_and_schedules() -> None:
    doc = cron(schedule="*/5 * * * *", timezone="Europe/Paris", concurrencyPolicy="Forbid", suspend=True,
               startingDeadlineSeconds=0, workflowMetadata={"labels": {"team": "a"}},
               stopStrategy={"condition": "failed >= 3"}, when="true")  # fmt: skip
    obj = CronWorkflow.model_validate(doc)
    assert obj.spec.all_schedules() == ["*/5 * * * *"]
    assert to_wire(obj) == doc
    assert CronWorkflow.model_validate(to_wire(obj)) == obj


# --- round trips of objects built in Python ---------------------------------------


def test_workflow_built_in_python_round_trips() -> None:
    obj = Workflow(
        metadata=ObjectMeta(generate_name="hello-"),
        spec=WorkflowSpec(
            entrypoint="hello",
            templates=[
                Template(name="hello", container=Container(name="main", image="busybox", command=["echo", "hi"])),
            ],
        ),
    )
    wire = to_wire(obj)
    assert wire["kind"] == "Workflow" and wire["metadata"] == {"generateName": "hello-"}
    assert Workflow.model_validate(wire) == obj


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n))))
def test_generated_dags(shape: tuple[int, list[list[int]]]) -> None:
    """Edges only to earlier tasks is acyclic and valid; one edge back from the first task is a cycle."""
    n, picks = shape
    tasks = [{"name": f"t{i}", "template": "echo",
              "dependencies": sorted({f"t{j}" for j in picks[i] if j < i})} for i in range(n)]  # fmt: skip
    tasks = [t if t["dependencies"] else {"name": t["name"], "template": "echo"} for t in tasks]
    doc = workflow(dag(*tasks), echo())
    obj = Workflow.model_validate(doc)
    assert Workflow.model_validate(to_wire(obj)) == obj
    last = f"t{n - 1}"
    back = patched(doc, "spec.templates.0.dag.tasks.0", {"name": "t0", "template": "echo", "dependencies": [last]})
    reaches_t0 = n == 1 or _reaches(tasks, last, "t0")
    if reaches_t0:
        assert_error(Workflow, back, TASKS, "dependency cycle detected")
    else:
        Workflow.model_validate(back)


def _reaches(tasks: list[dict[str, Any]], start: str, goal: str) -> bool:
    deps = {t["name"]: t.get("dependencies", []) for t in tasks}
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo += deps[node]
    return False


def test_dag_model_alone_reports_cycles_relative_to_itself() -> None:
    with pytest.raises(ValidationError) as info:
        DAGTemplate(tasks=[DAGTask(name="a", template="x", dependencies=["b"]),
                           DAGTask(name="b", template="x", dependencies=["a"])])  # fmt: skip
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("tasks",)]
