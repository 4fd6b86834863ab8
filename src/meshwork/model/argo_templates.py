"""The template language of Argo Workflows: Template and what it is made of
(containers, scripts, steps, DAG tasks, parameters, artifacts, retries,
hooks), shared by Workflow, WorkflowTemplate, ClusterWorkflowTemplate and
CronWorkflow (in ``argo_workflows``).

What lives here: the wire models with Argo's field names, Argo's loose
scalars (``AnyString`` parameter values, JSON ``withItems`` items,
int-or-string ``limit``), and the checks Argo's validator
(``workflow/validate``) makes inside one template: one type per template,
step and task names, one target per step, DAG dependencies and cycles,
parameter names.

What must not: checks across templates (references, entrypoint; those are in
``argo_workflows``), resolving ``{{...}}`` expressions, or I/O. Nothing is
defaulted into the wire form (see ``argo_common``). A ``container`` or
``script`` may omit its name: the Python object then carries Argo's name for
it, ``main``, and the wire form still omits it. Template types meshwork does
not run (containerSet, data, http, plugin) are accepted and kept as written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    JsonValue,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from meshwork.model.argo_common import WRITTEN_SERIALIZER, WRITTEN_VALIDATOR, Errors, mark_written
from meshwork.model.base import IntOrString, Model, OpenModel
from meshwork.model.container import ConfigMapKeySelector, Container, PodSecurityContext
from meshwork.model.corev1 import Loc, fail_at
from meshwork.model.pod import Affinity, HostAlias, Toleration
from meshwork.model.volume import Volume

MAIN_CONTAINER = "main"  # Argo names the main container of a pod template "main"
FIELD_NAME_MAX = 128  # Argo workflowFieldMaxLength: template, step and task names
_FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")  # Argo workflowFieldNameFmt
_PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")  # Argo paramOrArtifactNameRegex
_DEPENDS_TASK = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]*(?:\.[A-Za-z]+)?")
_TEMPLATE_TYPES = ("container", "container_set", "steps", "script", "resource", "dag", "suspend",
                   "data", "http", "plugin")  # fmt: skip
TYPE_UNSPECIFIED = ("template type unspecified. choose one of: container, containerSet, steps, "
                    "script, resource, dag, suspend, data, http, plugin")  # fmt: skip


# ---------------------------------------------------------------------------
# Argo's loose scalars and the main container
# ---------------------------------------------------------------------------


def _any_string(value: Any) -> Any:
    """Argo's ``AnyString``: a number or boolean is kept as the string Go would print."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a valid parameter value")
        return str(int(value)) if value.is_integer() else format(Decimal(repr(value)), "f")
    return value


AnyString = Annotated[str, BeforeValidator(_any_string)]


def _main_container(raw: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A template's container may omit ``name``: it is Argo's ``main`` (left out of the wire form)."""
    if isinstance(raw, dict) and "name" not in raw:
        value = handler({**raw, "name": MAIN_CONTAINER})
    else:
        value = handler(raw)
    mark_written(value, raw)
    return value


def field_name_error(name: str | None) -> str | None:
    """Why ``name`` is not a template, step or task name (Argo's isValidWorkflowFieldName), or None."""
    if not name:
        return "name is required"
    if len(name) > FIELD_NAME_MAX:
        return f"must have at most {FIELD_NAME_MAX} characters"
    if not _FIELD_NAME.match(name):
        return ("name must consist of alpha-numeric characters or '-', and must start with an "
                "alpha-numeric character (e.g. My-name1-2, 123-NAME)")  # fmt: skip
    return None


class ScriptTemplate(Container):
    """A container that runs ``source`` with its ``command`` as the interpreter."""

    source: str


class UserContainer(Container):
    """A sidecar or init container of a template's pod."""

    mirror_volume_mounts: bool | None = None


MainContainer = Annotated[Container, WrapValidator(_main_container), WRITTEN_SERIALIZER]
MainScript = Annotated[ScriptTemplate, WrapValidator(_main_container), WRITTEN_SERIALIZER]
WrittenUserContainer = Annotated[UserContainer, WRITTEN_VALIDATOR, WRITTEN_SERIALIZER]
WrittenVolume = Annotated[Volume, WRITTEN_VALIDATOR, WRITTEN_SERIALIZER]
WrittenPodSecurityContext = Annotated[PodSecurityContext, WRITTEN_VALIDATOR, WRITTEN_SERIALIZER]


# ---------------------------------------------------------------------------
# Parameters, artifacts, arguments
# ---------------------------------------------------------------------------


class SuppliedValueFrom(Model):
    """The value is supplied later (CLI, API, UI); no fields."""


class ValueFrom(Model):
    """Where a parameter's value comes from."""

    path: str | None = None
    json_path: str | None = None
    jq_filter: str | None = None
    event: str | None = None
    parameter: str | None = None
    supplied: SuppliedValueFrom | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    default: AnyString | None = None
    expression: str | None = None


class Parameter(Model):
    """A named string value: an input, an output or an argument."""

    name: str
    default: AnyString | None = None
    value: AnyString | None = None
    value_from: ValueFrom | None = None
    global_name: str | None = None
    enum: list[AnyString] | None = None
    description: AnyString | None = None


class RawArtifact(Model):
    """Artifact content given inline."""

    data: str


class Artifact(Model):
    """A file or directory passed between templates. Remote stores are kept as written."""

    name: str
    path: str | None = None
    mode: int | None = None
    from_: str | None = Field(default=None, alias="from")
    archive_logs: bool | None = None
    s3: OpenModel | None = None
    git: OpenModel | None = None
    http: OpenModel | None = None
    artifactory: OpenModel | None = None
    hdfs: OpenModel | None = None
    raw: RawArtifact | None = None
    oss: OpenModel | None = None
    gcs: OpenModel | None = None
    azure: OpenModel | None = None
    global_name: str | None = None
    archive: OpenModel | None = None
    optional: bool | None = None
    sub_path: str | None = None
    recurse_mode: bool | None = None
    from_expression: str | None = None
    artifact_gc: OpenModel | None = Field(default=None, alias="artifactGC")
    deleted: bool | None = None


def _name_errors(items: Iterable[Parameter | Artifact] | None, field: str) -> Errors:
    """Argo: parameter and artifact names are ``[-a-zA-Z0-9_]+`` and unique in their list."""
    errors: Errors = []
    seen: set[str] = set()
    for i, item in enumerate(items or ()):
        if not _PARAM_NAME.match(item.name):
            errors.append(((field, i, "name"), "Parameter/Artifact name must consist of alpha-numeric "
                           "characters, '_' or '-' e.g. my_param_1, MY-PARAM-1", item.name))  # fmt: skip
        elif item.name in seen:
            errors.append(((field, i, "name"), f"'{item.name}' is not unique", item.name))
        seen.add(item.name)
    return errors


class _NamedLists(Model):
    """Parameters and artifacts whose names are checked."""

    parameters: list[Parameter] | None = None
    artifacts: list[Artifact] | None = None

    @model_validator(mode="after")
    def _names(self) -> Self:
        fail_at(type(self).__name__, _name_errors(self.parameters, "parameters")
                + _name_errors(self.artifacts, "artifacts"))  # fmt: skip
        return self


class Arguments(_NamedLists):
    """Values passed to a template or to the workflow."""


class Inputs(_NamedLists):
    """The parameters and artifacts a template takes."""


class Outputs(_NamedLists):
    """The parameters and artifacts a template produces, and a script's result."""

    result: str | None = None
    exit_code: str | None = None


# ---------------------------------------------------------------------------
# Steps, DAG tasks, hooks
# ---------------------------------------------------------------------------


class TemplateRef(Model):
    """A template of a WorkflowTemplate (or, with clusterScope, a ClusterWorkflowTemplate)."""

    name: str | None = None
    template: str | None = None
    cluster_scope: bool | None = None


class LifecycleHook(Model):
    """A template run on an event (``exit``) or when ``expression`` becomes true."""

    template: str | None = None
    arguments: Arguments | None = None
    template_ref: TemplateRef | None = None
    expression: str | None = None


class ContinueOn(Model):
    """Let the workflow go on after this step errors or fails."""

    error: bool | None = None
    failed: bool | None = None


class Sequence(Model):
    """Expand a step over numbers: ``count`` of them, or ``start`` to ``end``."""

    count: IntOrString | None = None
    start: IntOrString | None = None
    end: IntOrString | None = None
    format: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.count is not None and self.end is not None:
            raise ValueError("only one of count or end can be defined in withSequence")
        return self


class _Call(Model):
    """What a step and a DAG task share: which template, with what, how often."""

    template: str | None = None
    inline: Template | None = None
    arguments: Arguments | None = None
    template_ref: TemplateRef | None = None
    with_items: list[JsonValue] | None = None
    with_param: str | None = None
    with_sequence: Sequence | None = None
    when: str | None = None
    continue_on: ContinueOn | None = None
    on_exit: str | None = None
    hooks: dict[str, LifecycleHook] | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        targets = [n for n in ("template", "template_ref", "inline") if getattr(self, n) is not None]
        if len(targets) != 1:
            errors.append(((), "exactly one of template, templateRef or inline must be specified", None))
        loops = [n for n in ("with_items", "with_param", "with_sequence") if getattr(self, n) is not None]
        if len(loops) > 1:
            errors.append(((), "only one of withItems, withParam or withSequence can be specified", None))
        if self.inline is not None and not template_types(self.inline):
            errors.append((("inline",), TYPE_UNSPECIFIED, None))
        fail_at(type(self).__name__, errors)
        return self


class WorkflowStep(_Call):
    """One step of a steps template; the steps of an inner list run in parallel."""

    name: str | None = None


class DAGTask(_Call):
    """One node of a DAG, run when its dependencies allow."""

    name: str
    dependencies: list[str] | None = None
    depends: str | None = None


def _depends_names(depends: str) -> list[str]:
    """Task names in a ``depends`` expression: ``A && (B.Failed || C)`` -> A, B, C."""
    return [token.split(".", 1)[0] for token in _DEPENDS_TASK.findall(depends)]


def _find_cycle(edges: dict[str, list[str]]) -> bool:
    """Whether the task -> dependency graph has a cycle (Kahn's algorithm)."""
    waiting = {task: len(deps) for task, deps in edges.items()}
    users: dict[str, list[str]] = {task: [] for task in edges}
    for task, deps in edges.items():
        for dep in deps:
            users[dep].append(task)
    ready = [task for task, count in waiting.items() if count == 0]
    done = 0
    while ready:
        task = ready.pop()
        done += 1
        for user in users[task]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    return done != len(edges)


class DAGTemplate(Model):
    """Tasks run as their dependencies complete; ``target`` limits what must run."""

    target: str | None = None
    tasks: list[DAGTask]
    fail_fast: bool | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        names: set[str] = set()
        for i, task in enumerate(self.tasks):
            err = field_name_error(task.name)
            if err:
                errors.append((("tasks", i, "name"), err, task.name))
            elif task.name in names:
                errors.append((("tasks", i, "name"), f"task name '{task.name}' is not unique", task.name))
            names.add(task.name)
        if any(t.depends is not None for t in self.tasks) and any(t.dependencies for t in self.tasks):
            errors.append((("tasks",), "cannot use both 'depends' and 'dependencies' in the same DAG "
                           "template", None))  # fmt: skip
        edges: dict[str, list[str]] = {}
        for i, task in enumerate(self.tasks):
            deps = list(task.dependencies or ())
            field = "dependencies"
            if task.depends is not None:
                deps, field = _depends_names(task.depends), "depends"
            for dep in deps:
                if dep not in names:
                    errors.append((("tasks", i, field), f"dependency '{dep}' not defined", dep))
            edges[task.name] = [d for d in deps if d in names]
        for target in (self.target or "").split():
            if target not in names:
                errors.append((("target",), f"target '{target}' is not defined", target))
        if not errors and _find_cycle(edges):
            errors.append((("tasks",), "dependency cycle detected", None))
        fail_at("DAGTemplate", errors)
        return self


# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------


class SuspendTemplate(Model):
    """Pause until resumed, or for ``duration`` (seconds, or a duration like ``"2m"``)."""

    duration: str | None = None


class ResourceTemplate(Model):
    """Create, apply, patch, get or delete a Kubernetes object."""

    action: Literal["get", "create", "apply", "delete", "replace", "patch"]
    merge_strategy: Literal["strategic", "merge", "json"] | None = None
    manifest: str | None = None
    manifest_from: OpenModel | None = None
    set_owner_reference: bool | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    flags: list[str] | None = None


class Backoff(Model):
    """Wait ``duration`` (times ``factor`` per retry, at most ``cap``) between retries."""

    duration: str | None = None
    factor: IntOrString | None = None
    max_duration: str | None = None
    cap: str | None = None


class RetryNodeAntiAffinity(Model):
    """Retry on another node (no fields)."""


class RetryAffinity(Model):
    """Where retries may run."""

    node_anti_affinity: RetryNodeAntiAffinity | None = None


class RetryStrategy(Model):
    """How often, on what, and how spaced a template is retried."""

    limit: IntOrString | None = None
    retry_policy: Literal["Always", "OnFailure", "OnError", "OnTransientError"] | None = None
    backoff: Backoff | None = None
    affinity: RetryAffinity | None = None
    expression: str | None = None


class SemaphoreRef(Model):
    """A semaphore whose limit is a ConfigMap key."""

    config_map_key_ref: ConfigMapKeySelector | None = None
    namespace: str | None = None


class Mutex(Model):
    """A named lock."""

    name: str | None = None
    namespace: str | None = None


class Synchronization(Model):
    """Locks a workflow or template must hold to run."""

    semaphore: SemaphoreRef | None = None
    mutex: Mutex | None = None
    semaphores: list[SemaphoreRef] | None = None
    mutexes: list[Mutex] | None = None


class Metadata(Model):
    """Labels and annotations for a template's pod."""

    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None


def template_types(template: Template) -> list[str]:
    """Which kinds of work (container, steps, dag, ...) ``template`` sets; Argo wants exactly one."""
    return [n for n in _TEMPLATE_TYPES if getattr(template, n) is not None]


class Template(Model):
    """A unit of work: a container, script, resource, suspend, steps or DAG."""

    name: str | None = None
    inputs: Inputs | None = None
    outputs: Outputs | None = None
    node_selector: dict[str, str] | None = None
    affinity: Affinity | None = None
    metadata: Metadata | None = None
    daemon: bool | None = None
    steps: list[list[WorkflowStep]] | None = None
    container: MainContainer | None = None
    container_set: OpenModel | None = None
    script: MainScript | None = None
    resource: ResourceTemplate | None = None
    dag: DAGTemplate | None = None
    suspend: SuspendTemplate | None = None
    data: OpenModel | None = None
    http: OpenModel | None = None
    plugin: OpenModel | None = None
    volumes: list[WrittenVolume] | None = None
    init_containers: list[WrittenUserContainer] | None = None
    sidecars: list[WrittenUserContainer] | None = None
    archive_location: OpenModel | None = None
    active_deadline_seconds: IntOrString | None = None
    retry_strategy: RetryStrategy | None = None
    parallelism: int | None = None
    fail_fast: bool | None = None
    tolerations: list[Toleration] | None = None
    scheduler_name: str | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    executor: OpenModel | None = None
    host_aliases: list[HostAlias] | None = None
    security_context: WrittenPodSecurityContext | None = None
    pod_spec_patch: str | None = None
    metrics: OpenModel | None = None
    synchronization: Synchronization | None = None
    memoize: OpenModel | None = None
    timeout: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        if len(template_types(self)) > 1:
            errors.append(((), "multiple template types specified", template_types(self)))
        seen: set[str] = set()
        for i, group in enumerate(self.steps or ()):
            for j, step in enumerate(group):
                err = field_name_error(step.name)
                if err:
                    errors.append((("steps", i, j, "name"), err, step.name))
                elif step.name in seen:
                    errors.append((("steps", i, j, "name"), f"step name '{step.name}' is not unique",
                                   step.name))  # fmt: skip
                seen.add(step.name or "")
        fail_at("Template", errors)
        return self

    def calls(self) -> list[tuple[Loc, _Call]]:
        """Every step and DAG task of this template, with its path inside the template."""
        found: list[tuple[Loc, _Call]] = []
        for i, group in enumerate(self.steps or ()):
            found += [(("steps", i, j), step) for j, step in enumerate(group)]
        if self.dag is not None:
            found += [(("dag", "tasks", i), task) for i, task in enumerate(self.dag.tasks)]
        return found
