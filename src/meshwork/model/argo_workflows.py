"""The Argo Workflows kinds (argoproj.io/v1alpha1): Workflow, WorkflowTemplate,
ClusterWorkflowTemplate and CronWorkflow.

What lives here: the workflow spec (templates plus workflow-wide pod
settings), the four kinds, and the checks Argo's validator makes across a
whole spec: template names, the entrypoint, and references from steps,
tasks, hooks and onExit to templates; for CronWorkflow, the schedules. The
templates themselves live in ``argo_templates``.

What must not: running or scheduling workflows, fetching a referenced
WorkflowTemplate, resolving ``{{...}}`` expressions, or I/O. Nothing is
defaulted into the wire form (see ``argo_common``); workflows are usually
named with ``metadata.generateName``.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from meshwork.model.argo_common import Errors, negative_errors, register_argo_kind
from meshwork.model.argo_templates import (
    TYPE_UNSPECIFIED,
    Arguments,
    LifecycleHook,
    Metadata,
    RetryStrategy,
    Synchronization,
    Template,
    WrittenPodSecurityContext,
    WrittenVolume,
    field_name_error,
    template_types,
)
from meshwork.model.base import Model, ObjectMeta, OpenModel, Resource
from meshwork.model.corev1 import LabelSelector, Loc, LocalObjectReference, fail_at
from meshwork.model.pod import Affinity, HostAlias, PodDNSConfig, Toleration
from meshwork.model.workloads import cron_schedule_error

# ---------------------------------------------------------------------------
# Workflow spec
# ---------------------------------------------------------------------------


class TTLStrategy(Model):
    """Delete the finished workflow after these many seconds."""

    seconds_after_completion: int | None = None
    seconds_after_success: int | None = None
    seconds_after_failure: int | None = None


class PodGC(Model):
    """When to delete the workflow's finished pods."""

    strategy: Literal["", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion",
                      "OnWorkflowSuccess"] | None = None  # fmt: skip
    label_selector: LabelSelector | None = None
    delete_delay_duration: str | None = None


class VolumeClaimGC(Model):
    """When to delete the volumes made from volumeClaimTemplates."""

    strategy: Literal["OnWorkflowCompletion", "OnWorkflowSuccess"] | None = None


class WorkflowTemplateRef(Model):
    """Run the spec of a WorkflowTemplate (or ClusterWorkflowTemplate) instead."""

    name: str | None = None
    cluster_scope: bool | None = None


class LabelValueFrom(Model):
    """A label whose value is an expression over the workflow."""

    expression: str


class WorkflowMetadata(Model):
    """Labels and annotations put on the Workflow itself."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    labels_from: dict[str, LabelValueFrom] | None = None


class PersistentVolumeClaimTemplate(Model):
    """A claim made for the workflow's run; its spec is kept as written."""

    metadata: ObjectMeta | None = None
    spec: OpenModel | None = None


class WorkflowSpec(Model):
    """Templates, the entrypoint, arguments and workflow-wide pod settings."""

    templates: list[Template] | None = None
    entrypoint: str | None = None
    arguments: Arguments | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    executor: OpenModel | None = None
    volumes: list[WrittenVolume] | None = None
    volume_claim_templates: list[PersistentVolumeClaimTemplate] | None = None
    parallelism: int | None = None
    artifact_repository_ref: OpenModel | None = None
    suspend: bool | None = None
    node_selector: dict[str, str] | None = None
    affinity: Affinity | None = None
    tolerations: list[Toleration] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    host_network: bool | None = None
    dns_policy: Literal["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"] | None = None
    dns_config: PodDNSConfig | None = None
    on_exit: str | None = None
    ttl_strategy: TTLStrategy | None = None
    active_deadline_seconds: int | None = None
    priority: int | None = None
    scheduler_name: str | None = None
    pod_gc: PodGC | None = Field(default=None, alias="podGC")
    pod_priority_class_name: str | None = None
    pod_priority: int | None = None
    host_aliases: list[HostAlias] | None = None
    security_context: WrittenPodSecurityContext | None = None
    pod_spec_patch: str | None = None
    pod_disruption_budget: OpenModel | None = None
    metrics: OpenModel | None = None
    shutdown: Literal["", "Terminate", "Stop"] | None = None
    workflow_template_ref: WorkflowTemplateRef | None = None
    synchronization: Synchronization | None = None
    volume_claim_gc: VolumeClaimGC | None = Field(default=None, alias="volumeClaimGC")
    retry_strategy: RetryStrategy | None = None
    pod_metadata: Metadata | None = None
    template_defaults: Template | None = None
    archive_logs: bool | None = None
    hooks: dict[str, LifecycleHook] | None = None
    workflow_metadata: WorkflowMetadata | None = None
    artifact_gc: OpenModel | None = Field(default=None, alias="artifactGC")

    def template(self, name: str) -> Template | None:
        """The local template called ``name``, if any."""
        return next((t for t in self.templates or () if t.name == name), None)


def check_workflow_spec(spec: WorkflowSpec, at: Loc, *, entrypoint_required: bool) -> Errors:
    """Argo's spec checks that need the whole spec: names, entrypoint and template references.

    References are checked only when the spec stands alone: with a
    ``workflowTemplateRef`` the templates come from elsewhere.
    """
    errors: Errors = []
    names: set[str] = set()
    for i, tmpl in enumerate(spec.templates or ()):
        err = field_name_error(tmpl.name)
        if err:
            errors.append(((*at, "templates", i, "name"), err, tmpl.name))
        elif tmpl.name in names:
            errors.append(((*at, "templates", i, "name"), f"template name '{tmpl.name}' is not unique",
                           tmpl.name))  # fmt: skip
        names.add(tmpl.name or "")
        if not template_types(tmpl):
            errors.append(((*at, "templates", i), TYPE_UNSPECIFIED, None))
    if spec.workflow_template_ref is not None:
        return errors
    if not spec.entrypoint:
        if entrypoint_required:
            errors.append(((*at, "entrypoint"), "spec.entrypoint is required", None))
    elif spec.entrypoint not in names:
        errors.append(((*at, "entrypoint"), f"template '{spec.entrypoint}' is not defined", spec.entrypoint))

    def ref(loc: Loc, name: str | None) -> None:
        if name is not None and name not in names:
            errors.append(((*at, *loc), f"template '{name}' is not defined", name))

    ref(("onExit",), spec.on_exit)
    for event, hook in (spec.hooks or {}).items():
        ref(("hooks", event, "template"), hook.template)
    for i, tmpl in enumerate(spec.templates or ()):
        for loc, call in tmpl.calls():
            ref(("templates", i, *loc, "template"), call.template)
            ref(("templates", i, *loc, "onExit"), call.on_exit)
            for event, hook in (call.hooks or {}).items():
                ref(("templates", i, *loc, "hooks", event, "template"), hook.template)
    return errors


class WorkflowStatus(OpenModel):
    """Written by the workflow controller; unknown fields are kept."""

    phase: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    estimated_duration: int | None = None
    progress: str | None = None
    message: str | None = None
    nodes: dict[str, OpenModel] | None = None
    outputs: OpenModel | None = None
    conditions: list[OpenModel] | None = None
    resources_duration: dict[str, int] | None = None
    stored_workflow_template_spec: OpenModel | None = None


class Workflow(Resource):
    """A run of templates to completion; usually named with ``metadata.generateName``."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["Workflow"] = "Workflow"
    spec: WorkflowSpec
    status: WorkflowStatus | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        fail_at("Workflow", check_workflow_spec(self.spec, ("spec",), entrypoint_required=True))
        return self


class WorkflowTemplate(Resource):
    """A reusable workflow spec (namespaced); its entrypoint is optional."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["WorkflowTemplate"] = "WorkflowTemplate"
    spec: WorkflowSpec

    @model_validator(mode="after")
    def _checks(self) -> Self:
        fail_at("WorkflowTemplate", check_workflow_spec(self.spec, ("spec",), entrypoint_required=False))
        return self


class ClusterWorkflowTemplate(Resource):
    """A WorkflowTemplate usable from every namespace (cluster-scoped)."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["ClusterWorkflowTemplate"] = "ClusterWorkflowTemplate"
    spec: WorkflowSpec

    @model_validator(mode="after")
    def _checks(self) -> Self:
        fail_at("ClusterWorkflowTemplate",
                check_workflow_spec(self.spec, ("spec",), entrypoint_required=False))  # fmt: skip
        return self


# ---------------------------------------------------------------------------
# CronWorkflow
# ---------------------------------------------------------------------------


class StopStrategy(Model):
    """Stop scheduling once ``condition`` (over ``succeeded``/``failed`` counts) holds."""

    condition: str


class CronWorkflowSpec(Model):
    """A workflow spec and the cron schedules it runs on."""

    workflow_spec: WorkflowSpec
    schedule: str | None = None
    schedules: list[str] | None = None
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] | None = None
    suspend: bool | None = None
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None
    timezone: str | None = None
    workflow_metadata: ObjectMeta | None = None
    stop_strategy: StopStrategy | None = None
    when: str | None = None

    def all_schedules(self) -> list[str]:
        """``schedule`` or ``schedules``, whichever is set."""
        return [self.schedule] if self.schedule else list(self.schedules or ())

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        if self.schedule and self.schedules:
            errors.append((("schedules",), "cannot use both 'schedule' and 'schedules'", None))
        elif not self.all_schedules():
            errors.append((("schedules",), "must have at least one schedule", None))
        field = "schedule" if self.schedule else "schedules"
        for i, schedule in enumerate(self.all_schedules()):
            err = cron_schedule_error(schedule)
            if err:
                loc: Loc = (field,) if self.schedule else (field, i)
                errors.append((loc, f"cron schedule {schedule} is malformed: {err}", schedule))
        errors += negative_errors(self, ("starting_deadline_seconds", "successful_jobs_history_limit",
                                         "failed_jobs_history_limit"))  # fmt: skip
        errors += check_workflow_spec(self.workflow_spec, ("workflowSpec",), entrypoint_required=True)
        fail_at("CronWorkflowSpec", errors)
        return self


class CronWorkflowStatus(OpenModel):
    """Written by the cron controller; unknown fields are kept."""

    active: list[OpenModel] | None = None
    last_scheduled_time: str | None = None
    conditions: list[OpenModel] | None = None
    succeeded: int | None = None
    failed: int | None = None
    phase: str | None = None


class CronWorkflow(Resource):
    """Submits a Workflow on a cron schedule."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["CronWorkflow"] = "CronWorkflow"
    spec: CronWorkflowSpec
    status: CronWorkflowStatus | None = None


register_argo_kind(Workflow, "workflows", ("wf",))
register_argo_kind(WorkflowTemplate, "workflowtemplates", ("wftmpl",), has_status=False)
register_argo_kind(ClusterWorkflowTemplate, "clusterworkflowtemplates", ("clusterwftmpl", "cwft"),
                   namespaced=False, has_status=False)  # fmt: skip
register_argo_kind(CronWorkflow, "cronworkflows", ("cwf", "cronwf"))
