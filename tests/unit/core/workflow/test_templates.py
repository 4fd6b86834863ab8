"""WorkflowTemplate references: workflowTemplateRef joins, templateRef copies."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.workflow.templates import TemplateError, resolve_spec, resolve_workflow
from meshwork.model.argo_workflows import Workflow

LIBRARY: dict[tuple[str, bool], dict[str, Any]] = {
    ("lib", False): {
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "who", "value": "world"}, {"name": "greeting", "value": "hello"}]},
        "templates": [
            {"name": "main", "steps": [[{"name": "say", "template": "echo"}]]},
            {"name": "echo", "container": {"image": "alpine", "command": ["echo", "{{workflow.parameters.who}}"]}},
        ],
    },
    ("shared", True): {"templates": [{"name": "echo", "container": {"image": "alpine", "command": ["echo", "c"]}}]},
}


def lookup(name: str, cluster: bool) -> dict[str, Any] | None:
    return LIBRARY.get((name, cluster))


def test_workflow_template_ref_joins_with_the_workflows_own_fields_winning() -> None:
    spec = resolve_spec({"workflowTemplateRef": {"name": "lib"}, "parallelism": 2,
                         "arguments": {"parameters": [{"name": "who", "value": "meshwork"}]}}, lookup)  # fmt: skip
    assert "workflowTemplateRef" not in spec
    assert spec["entrypoint"] == "main" and spec["parallelism"] == 2
    assert {p["name"]: p["value"] for p in spec["arguments"]["parameters"]} == {"who": "meshwork", "greeting": "hello"}
    assert [t["name"] for t in spec["templates"]] == ["main", "echo"]


def test_template_ref_copies_the_template_and_what_it_calls() -> None:
    spec = resolve_spec({"entrypoint": "top", "templates": [{"name": "top", "dag": {"tasks": [
        {"name": "a", "templateRef": {"name": "lib", "template": "main"}},
        {"name": "b", "templateRef": {"name": "shared", "template": "echo", "clusterScope": True}},
        {"name": "c", "templateRef": {"name": "lib", "template": "echo"}},
    ]}}]}, lookup)  # fmt: skip
    tasks = {t["name"]: t for t in spec["templates"][0]["dag"]["tasks"]}
    assert all("templateRef" not in t for t in tasks.values())
    names = {t["name"]: t for t in spec["templates"]}
    assert tasks["a"]["template"] == "lib-main"
    assert names["lib-main"]["steps"][0][0]["template"] == "lib-echo"  # its own call, copied once
    assert tasks["c"]["template"] == "lib-echo"
    assert tasks["b"]["template"] == "shared-echo" and names["shared-echo"]["container"]["command"] == ["echo", "c"]
    Workflow.model_validate({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                             "spec": spec})  # the result is a valid stand-alone spec  # fmt: skip


@pytest.mark.parametrize(("spec", "message"), [
    ({"workflowTemplateRef": {"name": "nope"}}, 'workflowtemplates.argoproj.io "nope" not found'),
    ({"entrypoint": "t", "templates": [{"name": "t", "steps": [[{"name": "s", "templateRef": {
        "name": "lib", "template": "missing"}}]]}]}, "template missing not found in workflowtemplates.argoproj.io lib"),
    ({"workflowTemplateRef": {"name": "lib", "clusterScope": True}}, 'clusterworkflowtemplates.argoproj.io "lib" not found'),
])  # fmt: skip
def test_unresolvable_references_name_what_is_missing(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        resolve_spec(spec, lookup)


def test_resolved_spec_is_stored_and_later_passes_ignore_template_changes() -> None:
    wf = Workflow.model_validate({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                                  "spec": {"workflowTemplateRef": {"name": "lib"}}})  # fmt: skip
    first = resolve_workflow(wf, lookup)
    assert first.spec.entrypoint == "main"
    stored = first.status.stored_workflow_template_spec if first.status else None
    assert stored is not None
    later = wf.model_copy(update={"status": first.status})
    again = resolve_workflow(later, lambda name, cluster: None)  # the template is gone: the stored spec runs
    assert again.spec.model_dump() == first.spec.model_dump()
    plain = Workflow.model_validate({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "p"},
                                     "spec": {"entrypoint": "e", "templates": [{"name": "e", "container": {"image": "a"}}]}})  # fmt: skip
    assert resolve_workflow(plain, lookup) is plain
