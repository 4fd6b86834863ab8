"""The Workflow controller's shell: cache reads, output files, and the pure reconcile.

The decisions are in ``meshwork.core.workflow``. This module maps object
changes to workflow keys (a workflow, or a pod labelled
``workflows.argoproj.io/workflow``), reads what a workflow's reconcile needs
from the watch cache, and reads the outputs the executor left in the
workflow's artifacts directory (``<data dir>/workflows/<ns>/<name>-<uid8>/
<node id>/``: ``result``, ``exitcode``, ``parameters/<name>``,
``artifacts/<name>``). Outputs are read only for pods whose node is not yet
final, so a long workflow does not re-read the files of finished nodes.

The artifacts directory is on the machine of the server: pods see it through
``$MESHWORK_ARTIFACTS``, which works while the agents run on the same machine
(the single-machine mode); a shared filesystem is needed across machines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meshwork.control.api.cache import CachedEvent, resource_of
from meshwork.control.controllers import PODS, Views
from meshwork.control.runner import Controller
from meshwork.core.queue.workload import waiting_for_admission
from meshwork.core.reconcile import Outcome
from meshwork.core.workflow.cronwf import LABEL_CRON, reconcile_cronworkflow
from meshwork.core.workflow.nodes import FINAL, NodeOutputs
from meshwork.core.workflow.reconcile import (
    LABEL_WORKFLOW,
    ExecConfig,
    artifacts_dir,
    reconcile_workflow,
)
from meshwork.core.workflow.templates import TemplateError, resolve_workflow, unresolved
from meshwork.model.argo_workflows import CronWorkflow, Workflow, WorkflowSpec, WorkflowStatus
from meshwork.model.base import ObjectMeta
from meshwork.model.kinds import REGISTRY
from meshwork.model.pod import Pod

WORKFLOWS = REGISTRY.require("argoproj.io", "Workflow")
WORKFLOW_TEMPLATES = REGISTRY.require("argoproj.io", "WorkflowTemplate")
CLUSTER_WORKFLOW_TEMPLATES = REGISTRY.require("argoproj.io", "ClusterWorkflowTemplate")
EXECUTOR = (sys.executable, "-m", "meshwork.examples.argoexec")
OUTPUT_MAX = 256 * 1024  # Argo's limit on a parameter value read from a file


def default_data_dir() -> Path:
    return Path(os.environ.get("MESHWORK_HOME") or Path.home() / ".meshwork")


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return f.read(OUTPUT_MAX).decode(errors="replace")
    except OSError:
        return None


def read_outputs(directory: Path) -> NodeOutputs | None:
    """The outputs one pod left, or None when its executor wrote nothing (yet)."""
    code_text = _read(directory / "exitcode")
    result = _read(directory / "result")
    if code_text is None and result is None:
        return None
    params: list[tuple[str, str]] = []
    pdir = directory / "parameters"
    if pdir.is_dir():
        for entry in sorted(pdir.iterdir()):
            value = _read(entry)
            if value is not None:
                params.append((entry.name, value))
    try:
        code = int(code_text) if code_text is not None else None
    except ValueError:
        code = None
    return NodeOutputs(result, tuple(params), code)


def template_spec(views: Views, namespace: str, name: str, cluster: bool) -> dict[str, Any] | None:
    """A WorkflowTemplate's (or ClusterWorkflowTemplate's) spec in wire form, from the cache."""
    key = f"{CLUSTER_WORKFLOW_TEMPLATES.resource}//{name}" if cluster else f"{WORKFLOW_TEMPLATES.resource}/{namespace}/{name}"
    item = views.cache.get(key)
    spec = item.obj.get("spec") if item is not None else None
    return dict(spec) if isinstance(spec, dict) else None


def workflow_controller(views: Views, data_dir: Path | None = None) -> Controller:
    root = (data_dir or default_data_dir()) / "workflows"
    config = ExecConfig(EXECUTOR, str(root), str(data_dir or default_data_dir()))

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == WORKFLOWS.resource:  # (a deletion too: its pass forgets the kept spec)
            meta = event.item.obj.get("metadata", {})
            return [f"{meta.get('namespace', '')}/{meta.get('name', '')}"]
        if resource == PODS.resource and LABEL_WORKFLOW.encode() in event.item.record.value:
            meta = event.item.obj.get("metadata", {})
            name = (meta.get("labels") or {}).get(LABEL_WORKFLOW)
            return [f"{meta.get('namespace', '')}/{name}"] if name else []
        return []

    # A workflow's spec changes only with its generation, but every pass used to
    # validate it again with the status (the DAG checks are a large part of a
    # pass on a big DAG): keep the validated spec per (uid, generation).
    specs: dict[str, tuple[tuple[str, int], WorkflowSpec]] = {}

    def decoded(key: str) -> Workflow | None:
        namespace, _, name = key.partition("/")
        item = views.cache.get(f"{WORKFLOWS.resource}/{namespace}/{name}")
        if item is None:
            specs.pop(key, None)
            return None
        obj = item.obj
        meta = obj.get("metadata") or {}
        ident = (str(meta.get("uid", "")), int(meta.get("generation") or 0))
        hit = specs.get(key)
        if hit is None or hit[0] != ident:
            wf = Workflow.model_validate(obj)
            specs[key] = (ident, wf.spec)
            return wf
        status = obj.get("status")
        return Workflow.model_construct(
            api_version=obj.get("apiVersion", "argoproj.io/v1alpha1"), kind="Workflow",
            metadata=ObjectMeta.model_validate(meta), spec=hit[1],
            status=WorkflowStatus.model_validate(status) if status is not None else None,
        )  # fmt: skip

    def reconcile(key: str, now: float) -> Outcome:
        wf = decoded(key)
        if wf is None:
            return Outcome()
        phase = wf.status.phase if wf.status else None
        if phase in ("Succeeded", "Failed", "Error"):
            return Outcome()
        if waiting_for_admission(wf.metadata) is not None:
            return Outcome()  # queued: the queue controller's admission starts it
        try:
            wf = resolve_workflow(wf, lambda name, cluster: template_spec(views, key.partition("/")[0], name, cluster))
        except TemplateError as exc:
            return unresolved(wf, str(exc), now)
        namespace = key.partition("/")[0]
        nodes = (wf.status.nodes if wf.status else None) or {}
        # Only the pods of nodes not yet final matter to the engine: a long
        # workflow does not decode (or read the outputs of) its finished pods again.
        final = {nid for nid, node in nodes.items() if getattr(node, "phase", None) in FINAL}
        needle = (wf.metadata.uid or "").encode()
        pods = [Pod.model_validate(item.obj) for item in views.cache.list(PODS.resource, namespace)
                if needle in item.record.value and item.obj.get("metadata", {}).get("name") not in final]  # fmt: skip
        base = Path(artifacts_dir(config, wf))
        outputs: dict[str, NodeOutputs] = {}
        for pod in pods:
            name = pod.metadata.name or ""
            if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                found = read_outputs(base / name)
                if found is not None:
                    outputs[name] = found
        return reconcile_workflow(wf, pods, outputs, config, now)

    return Controller("workflow", keys_for, lambda: views.keys(WORKFLOWS), reconcile, frozenset((WORKFLOWS.resource, PODS.resource)))


CRON_WORKFLOWS = REGISTRY.require("argoproj.io", "CronWorkflow")


def cronworkflow_controller(views: Views) -> Controller:
    """Submits a CronWorkflow's Workflows (``meshwork.core.workflow.cronwf`` decides)."""

    def keys_for(event: CachedEvent) -> Iterable[str]:
        resource = resource_of(event.key)
        if resource == CRON_WORKFLOWS.resource:
            meta = event.item.obj.get("metadata", {})
            return [] if event.type == "DELETED" else [f"{meta.get('namespace', '')}/{meta.get('name', '')}"]
        if resource == WORKFLOWS.resource and LABEL_CRON.encode() in event.item.record.value:
            meta = event.item.obj.get("metadata", {})
            owner = (meta.get("labels") or {}).get(LABEL_CRON)
            return [f"{meta.get('namespace', '')}/{owner}"] if owner else []
        return []

    def reconcile(key: str, now: float) -> Outcome:
        cwf = views.one(CRON_WORKFLOWS, CronWorkflow, key)
        if cwf is None:
            return Outcome()
        needle = LABEL_CRON.encode()
        workflows = [Workflow.model_validate(item.obj) for item in views.cache.list(WORKFLOWS.resource, key.partition("/")[0])
                     if needle in item.record.value]  # fmt: skip
        return reconcile_cronworkflow(cwf, workflows, now)

    return Controller("cronworkflow", keys_for, lambda: views.keys(CRON_WORKFLOWS), reconcile, frozenset((CRON_WORKFLOWS.resource, WORKFLOWS.resource)))
