"""WorkflowTemplate references, resolved into the spec a workflow runs. Pure.

Two kinds of reference, as Argo has them:

* ``spec.workflowTemplateRef: {name, clusterScope}``: the workflow runs the
  WorkflowTemplate's (or ClusterWorkflowTemplate's) spec, joined with its
  own as Argo's ``JoinWorkflowSpec`` does: every field the workflow sets
  wins; ``arguments.parameters`` merge by name (the workflow's values win);
  ``templates`` merge by name (the workflow's win).
* ``templateRef: {name, template, clusterScope}`` on a step or DAG task: the
  named template of another WorkflowTemplate. It is copied into the spec
  under the name ``<workflowtemplate>-<template>`` (made unique), and the
  templates *it* calls by name are looked up in that same WorkflowTemplate
  and copied the same way, so a referenced steps or DAG template works.

The resolved spec is kept in ``status.storedWorkflowTemplateSpec`` by the
controller at the first pass, and later passes run it rather than resolving
again: editing or deleting a WorkflowTemplate does not change a workflow that
has started (Argo keeps the same field for the same reason). Unlike Argo,
the stored spec also holds the copies made for ``templateRef``.

What must not live here: reading templates from the store (the shell passes
a ``lookup``), or running anything.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from meshwork.core.reconcile import ObjectRef, Outcome, RecordEvent, UpdateStatus
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.model.argo_templates import FIELD_NAME_MAX
from meshwork.model.argo_workflows import Workflow, WorkflowStatus

Spec = dict[str, Any]
# (name, clusterScope) -> the WorkflowTemplate's spec in wire form, or None when there is none
Lookup = Callable[[str, bool], Spec | None]


class TemplateError(ValueError):
    """A reference that cannot be resolved; the workflow ends in Error with this message."""


def _kind(cluster: bool) -> str:
    return "clusterworkflowtemplates.argoproj.io" if cluster else "workflowtemplates.argoproj.io"


def _fetch(lookup: Lookup, name: str, cluster: bool) -> Spec:
    spec = lookup(name, cluster)
    if spec is None:
        raise TemplateError(f'{_kind(cluster)} "{name}" not found')
    return spec


def join_specs(base: Spec, over: Spec) -> Spec:
    """Argo's JoinWorkflowSpec: ``over`` (the workflow) wins over ``base`` (the template)."""
    joined = {**copy.deepcopy(base), **{k: copy.deepcopy(v) for k, v in over.items() if k != "workflowTemplateRef"}}
    base_params = ((base.get("arguments") or {}).get("parameters")) or []
    over_params = ((over.get("arguments") or {}).get("parameters")) or []
    if base_params or over_params:
        names = {p.get("name") for p in over_params}
        params = [p for p in base_params if p.get("name") not in names] + list(over_params)
        joined["arguments"] = {**(base.get("arguments") or {}), **(over.get("arguments") or {}), "parameters": params}
    over_templates = over.get("templates") or []
    if over_templates:
        names = {t.get("name") for t in over_templates}
        joined["templates"] = [t for t in base.get("templates") or [] if t.get("name") not in names] + list(over_templates)
    return joined


def _calls(template: Spec) -> Iterator[Spec]:
    """The step and task dicts of a steps or DAG template."""
    for group in template.get("steps") or []:
        yield from group or []
    yield from ((template.get("dag") or {}).get("tasks")) or []


def _unique(name: str, taken: set[str]) -> str:
    if len(name) > FIELD_NAME_MAX:
        name = name[: FIELD_NAME_MAX - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[: FIELD_NAME_MAX - 6]}-{n}"
    taken.add(candidate)
    return candidate


def resolve_spec(spec: Spec, lookup: Lookup) -> Spec:
    """``spec`` with its workflowTemplateRef joined in and every templateRef copied in."""
    ref = spec.get("workflowTemplateRef")
    if ref:
        spec = join_specs(_fetch(lookup, ref.get("name") or "", bool(ref.get("clusterScope"))), spec)
    else:
        spec = copy.deepcopy(spec)
    templates: list[Spec] = spec.setdefault("templates", [])
    taken = {t.get("name") or "" for t in templates}
    imported: dict[tuple[bool, str, str], str] = {}

    def bring(cluster: bool, source: str, name: str) -> str:
        key = (cluster, source, name)
        if key in imported:
            return imported[key]
        src = _fetch(lookup, source, cluster)
        found = next((t for t in src.get("templates") or [] if t.get("name") == name), None)
        if found is None:
            raise TemplateError(f"template {name} not found in {_kind(cluster)} {source}")
        local = _unique(f"{source}-{name}", taken)
        imported[key] = local
        tmpl = copy.deepcopy(found)
        tmpl["name"] = local
        templates.append(tmpl)
        for call in _calls(tmpl):  # names inside the copied template mean that WorkflowTemplate's templates
            rewrite(call, cluster, source)
        return local

    def rewrite(call: Spec, cluster: bool | None, source: str | None) -> None:
        tref = call.pop("templateRef", None)
        if tref:
            call["template"] = bring(bool(tref.get("clusterScope")), tref.get("name") or "", tref.get("template") or "")
        elif source is not None and call.get("template"):
            call["template"] = bring(bool(cluster), source, call["template"])

    for tmpl in list(templates):
        for call in _calls(tmpl):
            rewrite(call, None, None)
    return spec


def has_references(wf: Workflow) -> bool:
    if wf.spec.workflow_template_ref is not None:
        return True
    return any(call.template_ref is not None for t in wf.spec.templates or () for _, call in t.calls())


def resolve_workflow(wf: Workflow, lookup: Lookup) -> Workflow:
    """The workflow as it runs: the stored resolved spec, or a fresh resolution of its references.

    Raises ``TemplateError`` for a reference that does not resolve.
    """
    status = wf.status
    stored = status.stored_workflow_template_spec if status else None
    if stored is not None:
        spec = stored.model_dump(mode="json", by_alias=True, exclude_none=True)
    elif has_references(wf):
        spec = resolve_spec(wf.spec.model_dump(mode="json", by_alias=True, exclude_none=True), lookup)
    else:
        return wf
    raw = wf.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["spec"] = spec
    raw.setdefault("status", {})["storedWorkflowTemplateSpec"] = spec
    try:
        return Workflow.model_validate(raw)
    except ValueError as exc:
        raise TemplateError(f"the resolved workflow spec is invalid: {exc}") from exc


def unresolved(wf: Workflow, message: str, now: float) -> Outcome:
    """The workflow ends in Error: a reference of it does not resolve."""
    base = wf.status.model_dump(mode="json", by_alias=True, exclude_none=True) if wf.status else {}
    stamp = rfc3339(now)
    base.update({"phase": "Error", "message": message, "startedAt": base.get("startedAt") or stamp, "finishedAt": stamp})
    about = ObjectRef("argoproj.io", "Workflow", wf.metadata.namespace, wf.metadata.name or "", wf.metadata.uid)
    return Outcome((UpdateStatus(wf.model_copy(update={"status": WorkflowStatus.model_validate(base)})),
                    RecordEvent(about, "Warning", "WorkflowFailed", message)))  # fmt: skip
