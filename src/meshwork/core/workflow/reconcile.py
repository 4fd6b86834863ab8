"""The Workflow controller's decision: the engine's plan as actions.

What lives here: how a workflow pod looks (named by its node id, labelled
``workflows.argoproj.io/workflow``, owned by the Workflow, its main
container's command wrapped by the workflow executor the way Argo wraps it
with ``argoexec``), what the engine sees of a pod, and ``reconcile_workflow``
which turns a plan into a status write, pod creates and deletes.

The executor (``meshwork.examples.argoexec``, given by the shell in
``ExecConfig``) runs the template's command, copies its stdout to the pod's
log and to ``$MESHWORK_ARTIFACTS/<node id>/result``, and after it exits copies
each ``outputs.parameters[].valueFrom.path`` to
``$MESHWORK_ARTIFACTS/<node id>/parameters/<name>`` and each output
artifact's ``path`` to ``.../artifacts/<name>``; input artifacts ``from``
another step are copied to their ``path`` before the command starts.

What must not: I/O (the shell reads the outputs and passes them in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateStatus,
)
from meshwork.core.workflow.engine import Plan, PodRequest, advance
from meshwork.core.workflow.nodes import NodeOutputs, PodSeen
from meshwork.model.argo_workflows import Workflow, WorkflowStatus
from meshwork.model.base import ObjectMeta, OwnerReference
from meshwork.model.container import Container, EnvVar
from meshwork.model.pod import Pod, PodSpec

LABEL_WORKFLOW = "workflows.argoproj.io/workflow"
LABEL_COMPLETED = "workflows.argoproj.io/completed"
ANNOTATION_NODE_NAME = "workflows.argoproj.io/node-name"
ANNOTATION_NODE_ID = "workflows.argoproj.io/node-id"
ENV_ARTIFACTS = "MESHWORK_ARTIFACTS"
ENV_NODE_ID = "MESHWORK_NODE_ID"
ENV_SCRIPT = "MESHWORK_SCRIPT_SOURCE"
ENV_IMAGES = "MESHWORK_IMAGES_DIR"
# The agent's reasons a container cannot start at all: the node is an Error.
CANNOT_START = frozenset({"ErrImageNeverPull", "CreateContainerError", "RunContainerError",
                          "CreateContainerConfigError", "InvalidImageName"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """Where the shell keeps artifacts and how a pod starts the executor."""

    executor: tuple[str, ...]  # e.g. (python, -m, meshwork.examples.argoexec)
    artifacts_root: str  # <data dir>/workflows: one directory per workflow below it
    images_dir: str | None = None  # the data dir whose images.yaml the executor reads


def artifacts_dir(config: ExecConfig, wf: Workflow) -> str:
    """The per-workflow artifacts directory (the uid keeps a re-created namesake apart)."""
    uid = (wf.metadata.uid or "")[:8]
    return f"{config.artifacts_root}/{wf.metadata.namespace or 'default'}/{wf.metadata.name}-{uid}"


def pod_seen(pod: Pod, outputs: NodeOutputs | None) -> PodSeen:
    """What the engine needs of a pod: its phase, the main container's exit code,
    whether it can never start."""
    status = pod.status
    phase = (status.phase if status else None) or "Pending"
    exit_code: int | None = None
    message = status.message if status else None
    cannot_start = False
    for cs in (status.container_statuses if status else None) or []:
        state = cs.state
        if state is None:
            continue
        if state.terminated is not None:
            exit_code = state.terminated.exit_code
            message = state.terminated.message or message
        elif state.waiting is not None and state.waiting.reason in CANNOT_START:
            cannot_start = True
            message = f"{state.waiting.reason}: {state.waiting.message}"
    return PodSeen(phase, exit_code, message, cannot_start, outputs)


def build_pod(wf: Workflow, request: PodRequest, config: ExecConfig) -> Pod:
    """The pod for one node: the template's container behind the executor."""
    tmpl = request.template
    main: Container = (tmpl.script or tmpl.container)  # type: ignore[assignment]
    assert main is not None
    argv: list[str] = [*config.executor, "--image", main.image or ""]
    for param in (tmpl.outputs.parameters if tmpl.outputs else None) or []:
        if param.value_from is not None and param.value_from.path:
            argv += ["--output", f"{param.name}={param.value_from.path}"]
    for art in (tmpl.outputs.artifacts if tmpl.outputs else None) or []:
        if art.path:
            argv += ["--artifact-out", f"{art.name}={art.path}"]
    for art in (tmpl.inputs.artifacts if tmpl.inputs else None) or []:
        if art.path and art.raw is not None:
            argv += ["--artifact-raw", f"{art.path}={art.raw.data}"]
        elif art.path and art.from_:
            argv += ["--artifact-in", f"{art.from_}={art.path}"]
    if not main.command and main.args:
        argv.append("--args-only")
    argv += ["--", *(main.command or []), *(main.args or [])]
    env = [e for e in main.env or [] if e.name not in (ENV_ARTIFACTS, ENV_NODE_ID, ENV_SCRIPT)]
    env += [EnvVar(name=ENV_ARTIFACTS, value=artifacts_dir(config, wf)), EnvVar(name=ENV_NODE_ID, value=request.node_id)]
    if tmpl.script is not None:
        env.append(EnvVar(name=ENV_SCRIPT, value=tmpl.script.source))
    if config.images_dir:
        env.append(EnvVar(name=ENV_IMAGES, value=config.images_dir))
    container = Container.model_validate({
        **main.model_dump(by_alias=True, exclude_none=True, exclude={"source"}),
        "name": "main", "command": argv, "args": None,
        "env": [e.model_dump(by_alias=True, exclude_none=True) for e in env],
    })  # fmt: skip
    name = wf.metadata.name or ""
    owner = OwnerReference(api_version="argoproj.io/v1alpha1", kind="Workflow", name=name,
                           uid=wf.metadata.uid or "", controller=True, block_owner_deletion=True)  # fmt: skip
    labels = {**((tmpl.metadata.labels if tmpl.metadata else None) or {}), LABEL_WORKFLOW: name, LABEL_COMPLETED: "false"}
    annotations = {**((tmpl.metadata.annotations if tmpl.metadata else None) or {}),
                   ANNOTATION_NODE_NAME: request.node_name, ANNOTATION_NODE_ID: request.node_id}  # fmt: skip
    meta = ObjectMeta(name=request.node_id, namespace=wf.metadata.namespace, labels=labels,
                      annotations=annotations, owner_references=[owner])  # fmt: skip
    spec = PodSpec(containers=[container], restart_policy="Never",
                   node_selector=tmpl.node_selector or wf.spec.node_selector,
                   service_account_name=tmpl.service_account_name or wf.spec.service_account_name)  # fmt: skip
    return Pod(metadata=meta, spec=spec)


def status_of(wf: Workflow, plan: Plan) -> WorkflowStatus:
    nodes = {nid: node.to_wire() for nid, node in plan.nodes.items()}
    base = wf.status.model_dump(by_alias=True, exclude_none=True) if wf.status else {}
    base.update({"phase": plan.phase, "startedAt": plan.started_at, "nodes": nodes, "progress": plan.progress})
    for key, value in (("finishedAt", plan.finished_at), ("message", plan.message)):
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return WorkflowStatus.model_validate(base)


def _wire(status: WorkflowStatus | None) -> dict[str, object]:
    """The status as plain data, for comparing (dict equality: no JSON encoding per pass)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True) if status else {}


def reconcile_workflow(wf: Workflow, pods: list[Pod], outputs: dict[str, NodeOutputs], config: ExecConfig,
                       now: float) -> Outcome:  # fmt: skip
    """One pass: persist the nodes first, then create and delete pods.

    The status write comes first so that a crash between the two leaves a
    Pending node whose pod is created on the next pass (or adopted, when it was
    already created): a finished node is never run again either way.
    """
    name = wf.metadata.name or ""
    mine = {p.metadata.name or "": p for p in pods
            if (p.metadata.labels or {}).get(LABEL_WORKFLOW) == name}  # fmt: skip
    seen = {pod_name: pod_seen(pod, outputs.get(pod_name)) for pod_name, pod in mine.items()}
    plan = advance(wf, seen, now)
    actions: list[Action] = []
    status = status_of(wf, plan)
    about = ObjectRef("argoproj.io", "Workflow", wf.metadata.namespace, name, wf.metadata.uid)
    old_phase = wf.status.phase if wf.status else None
    if _wire(status) != _wire(wf.status):
        updated = wf.model_copy(update={"status": status})
        actions.append(UpdateStatus(updated))
        if plan.phase != old_phase:
            kind: Literal["Normal", "Warning"] = "Normal" if plan.phase in ("Running", "Succeeded") else "Warning"
            text = f"Workflow {plan.phase.lower()}" + (f": {plan.message}" if plan.message else "")
            actions.append(RecordEvent(about, kind, f"Workflow{plan.phase}", text))
    for request in plan.create:
        if request.node_id not in mine:
            actions.append(CreateObject(build_pod(wf, request, config)))
    for pod_name in plan.delete:
        pod = mine.get(pod_name)
        if pod is not None:
            actions.append(DeleteObject("", "Pod", pod.metadata.namespace, pod_name, pod.metadata.uid, grace_period=1))
    requeue = max(0.0, plan.wake_at - now) + 0.05 if plan.wake_at is not None else None
    return Outcome(tuple(actions), requeue)
