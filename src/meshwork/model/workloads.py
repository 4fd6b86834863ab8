"""Workload kinds: Deployment, ReplicaSet, DaemonSet, ControllerRevision (apps/v1), Job and CronJob (batch/v1).

What lives here: the spec/status models of those kinds, their upstream
defaulting (``SetDefaults_Deployment``, ``SetDefaults_Job`` ... which apply to
the *object*, so a CronJob's ``jobTemplate`` does not get Job defaults), and
the checks the API server makes on them (selector matches template labels,
template restartPolicy, rolling-update bounds, pod failure policy shape).

What must not: controller logic (rollouts, job tracking) and selector
evaluation beyond the one check that a selector matches its own template.
Pod templates come from ``meshwork.model.pod``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshwork.model.base import REGISTRY, IntOrString, KindInfo, Model, ObjectMeta, Resource
from meshwork.model.pod import (
    LabelSelector,
    Loc,
    ObjectReference,
    PodTemplateSpec,
    fail_at,
)

DEFAULT_REVISION_HISTORY_LIMIT = 10  # apps/v1 default for Deployment and DaemonSet
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600  # apps/v1 Deployment default
DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 Job default
MAX_INT32 = 2**31 - 1  # backoffLimit default when backoffLimitPerIndex is set
CRONJOB_NAME_MAX = 52  # 63 minus the 11 characters the controller appends to Job names
MAX_FAILED_INDEXES_LIMIT = 100_000  # upstream cap on maxFailedIndexes / backoffLimitPerIndex jobs
_PERCENT = re.compile(r"^[0-9]+%$")
_CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily",
                          "@midnight", "@hourly"})  # fmt: skip
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-]+$")
CRON_FIELDS = 5  # minute hour day-of-month month day-of-week (robfig/cron standard parser)


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (used only to check a workload's own template)."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or ():
        present = req.key in labels
        if req.operator == "In" and (not present or labels[req.key] not in (req.values or ())):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in (req.values or ()):
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def check_selector(
    selector: LabelSelector | None, template: PodTemplateSpec | None, *, required: bool
) -> list[tuple[Loc, str, Any]]:
    """Upstream: a workload's selector is non-empty and selects its own template."""
    if selector is None:
        return [(("selector",), "Required value", None)] if required else []
    if not selector.match_labels and not selector.match_expressions:
        return [(("selector",), "empty selector is invalid for this kind", {})]
    if template is not None and not selector_matches(selector, template.metadata.labels or {}):
        return [(("template", "metadata", "labels"), "`selector` does not match template `labels`",
                 template.metadata.labels)]  # fmt: skip
    return []


def _always_restart(template: PodTemplateSpec) -> list[tuple[Loc, str, Any]]:
    policy = template.spec.restart_policy
    if policy != "Always":
        return [(("template", "spec", "restartPolicy"),
                 'Unsupported value: supported values: "Always"', policy)]  # fmt: skip
    return []


def _int_or_percent(value: IntOrString, loc: Loc, *, max_percent: bool) -> list[tuple[Loc, str, Any]]:
    if isinstance(value, int):
        return [] if value >= 0 else [(loc, "must be greater than or equal to 0", value)]
    if not _PERCENT.match(value):
        return [(loc, "a valid percent string must be a numeric string followed by an ending '%'",
                 value)]  # fmt: skip
    if max_percent and int(value[:-1]) > 100:
        return [(loc, "must not be greater than 100%", value)]
    return []


def _is_zero(value: IntOrString | None) -> bool:
    return value in (0, "0%")


def _non_negative(obj: Model, names: tuple[str, ...], prefix: Loc = ()) -> list[tuple[Loc, str, Any]]:
    errors: list[tuple[Loc, str, Any]] = []
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 0:
            field = type(obj).model_fields[name].alias or name
            errors.append(((*prefix, field), "must be greater than or equal to 0", value))
    return errors


class WorkloadCondition(Model):
    """A status condition of a Deployment, ReplicaSet, DaemonSet, Job or CronJob."""

    type: str
    status: Literal["True", "False", "Unknown"]
    last_update_time: str | None = None
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


# ---------------------------------------------------------------------------
# Deployment
# ---------------------------------------------------------------------------


class RollingUpdateDeployment(Model):
    """How far a rolling update may go below and above the desired replicas."""

    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None


class DeploymentStrategy(Model):
    """Recreate, or RollingUpdate (25%/25% by default)."""

    type: Literal["Recreate", "RollingUpdate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        if self.type == "Recreate":
            if self.rolling_update is not None:
                fail_at("DeploymentStrategy", [(("rollingUpdate",),
                        "may not be specified when strategy `type` is 'Recreate'", None)])  # fmt: skip
            return self
        ru = self.rolling_update = self.rolling_update or RollingUpdateDeployment()
        if ru.max_unavailable is None:
            ru.max_unavailable = "25%"
        if ru.max_surge is None:
            ru.max_surge = "25%"
        errors = [
            *_int_or_percent(ru.max_unavailable, ("rollingUpdate", "maxUnavailable"), max_percent=True),
            *_int_or_percent(ru.max_surge, ("rollingUpdate", "maxSurge"), max_percent=False),
        ]
        if not errors and _is_zero(ru.max_unavailable) and _is_zero(ru.max_surge):
            errors.append((("rollingUpdate", "maxUnavailable"),
                           "may not be 0 when `maxSurge` is 0", ru.max_unavailable))  # fmt: skip
        fail_at("DeploymentStrategy", errors)
        return self


class DeploymentSpec(Model):
    """Desired replicas of a pod template and how to roll out changes."""

    replicas: int | None = None
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    paused: bool | None = None
    progress_deadline_seconds: int | None = None


class DeploymentStatus(Model):
    """Observed rollout state."""

    observed_generation: int | None = None
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    unavailable_replicas: int | None = None
    terminating_replicas: int | None = None
    conditions: list[WorkloadCondition] | None = None
    collision_count: int | None = None


class Deployment(Resource):
    """Declarative updates for ReplicaSets and their Pods (apps/v1 Deployment)."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        spec = self.spec
        if spec.replicas is None:
            spec.replicas = 1
        if spec.revision_history_limit is None:
            spec.revision_history_limit = DEFAULT_REVISION_HISTORY_LIMIT
        if spec.progress_deadline_seconds is None:
            spec.progress_deadline_seconds = DEFAULT_PROGRESS_DEADLINE_SECONDS
        errors = check_selector(spec.selector, spec.template, required=True)
        errors += _always_restart(spec.template)
        errors += _non_negative(spec, ("replicas", "min_ready_seconds", "revision_history_limit"))
        if spec.progress_deadline_seconds <= (spec.min_ready_seconds or 0):
            errors.append((("progressDeadlineSeconds",),
                           "must be greater than minReadySeconds", spec.progress_deadline_seconds))  # fmt: skip
        fail_at("Deployment", [(("spec", *loc), msg, v) for loc, msg, v in errors])
        return self


# ---------------------------------------------------------------------------
# ReplicaSet
# ---------------------------------------------------------------------------


class ReplicaSetSpec(Model):
    """A number of identical pods from one template."""

    replicas: int = 1
    min_ready_seconds: int | None = None
    selector: LabelSelector
    template: PodTemplateSpec | None = None


class ReplicaSetStatus(Model):
    """Observed replica counts."""

    replicas: int = 0
    fully_labeled_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    terminating_replicas: int | None = None
    observed_generation: int | None = None
    conditions: list[WorkloadCondition] | None = None


class ReplicaSet(Resource):
    """Keeps a stable set of replica pods running (apps/v1 ReplicaSet)."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    spec: ReplicaSetSpec
    status: ReplicaSetStatus | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        spec = self.spec
        errors = check_selector(spec.selector, spec.template, required=True)
        if spec.template is not None:
            errors += _always_restart(spec.template)
        errors += _non_negative(spec, ("replicas", "min_ready_seconds"))
        fail_at("ReplicaSet", [(("spec", *loc), msg, v) for loc, msg, v in errors])
        return self


# ---------------------------------------------------------------------------
# DaemonSet
# ---------------------------------------------------------------------------


class RollingUpdateDaemonSet(Model):
    """How many nodes may be without (or with an extra) daemon pod during an update."""

    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None


class DaemonSetUpdateStrategy(Model):
    """RollingUpdate (1 unavailable, 0 surge by default) or OnDelete."""

    type: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"
    rolling_update: RollingUpdateDaemonSet | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        if self.type != "RollingUpdate":
            return self
        ru = self.rolling_update = self.rolling_update or RollingUpdateDaemonSet()
        if ru.max_unavailable is None:
            ru.max_unavailable = 1
        if ru.max_surge is None:
            ru.max_surge = 0
        errors = [
            *_int_or_percent(ru.max_unavailable, ("rollingUpdate", "maxUnavailable"), max_percent=True),
            *_int_or_percent(ru.max_surge, ("rollingUpdate", "maxSurge"), max_percent=True),
        ]
        if not errors and _is_zero(ru.max_unavailable) and _is_zero(ru.max_surge):
            errors.append((("rollingUpdate", "maxUnavailable"),
                           "may not be 0 when `maxSurge` is 0", ru.max_unavailable))  # fmt: skip
        fail_at("DaemonSetUpdateStrategy", errors)
        return self


class DaemonSetSpec(Model):
    """One pod from the template on every eligible node."""

    selector: LabelSelector
    template: PodTemplateSpec
    update_strategy: DaemonSetUpdateStrategy = Field(default_factory=DaemonSetUpdateStrategy)
    min_ready_seconds: int | None = None
    revision_history_limit: int = DEFAULT_REVISION_HISTORY_LIMIT


class DaemonSetStatus(Model):
    """Observed per-node scheduling counts."""

    current_number_scheduled: int = 0
    number_misscheduled: int = 0
    desired_number_scheduled: int = 0
    number_ready: int = 0
    observed_generation: int | None = None
    updated_number_scheduled: int | None = None
    number_available: int | None = None
    number_unavailable: int | None = None
    collision_count: int | None = None
    conditions: list[WorkloadCondition] | None = None


class DaemonSet(Resource):
    """Runs a copy of a pod on each eligible node (apps/v1 DaemonSet)."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["DaemonSet"] = "DaemonSet"
    spec: DaemonSetSpec
    status: DaemonSetStatus | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        spec = self.spec
        errors = check_selector(spec.selector, spec.template, required=True)
        errors += _always_restart(spec.template)
        errors += _non_negative(spec, ("min_ready_seconds", "revision_history_limit"))
        fail_at("DaemonSet", [(("spec", *loc), msg, v) for loc, msg, v in errors])
        return self


class ControllerRevision(Resource):
    """An immutable snapshot of a workload's template, for rollback (apps/v1 ControllerRevision)."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["ControllerRevision"] = "ControllerRevision"
    data: dict[str, Any] | None = None
    revision: int


# ---------------------------------------------------------------------------
# Job
# ---------------------------------------------------------------------------


class PodFailurePolicyOnExitCodesRequirement(Model):
    """Matches a failed pod by the exit codes of its containers."""

    container_name: str | None = None
    operator: Literal["In", "NotIn"]
    values: list[int]

    @field_validator("values")
    @classmethod
    def _values(cls, values: list[int]) -> list[int]:
        if not values:
            raise ValueError("Required value")
        if len(set(values)) != len(values):
            raise ValueError("Duplicate value")
        if values != sorted(values):
            raise ValueError("must be ordered")
        return values


class PodFailurePolicyOnPodConditionsPattern(Model):
    """Matches a failed pod by one of its conditions."""

    type: str
    status: Literal["True", "False", "Unknown"] = "True"


class PodFailurePolicyRule(Model):
    """What to do with a pod failure that matches exit codes or conditions."""

    action: Literal["FailJob", "FailIndex", "Ignore", "Count"]
    on_exit_codes: PodFailurePolicyOnExitCodesRequirement | None = None
    on_pod_conditions: list[PodFailurePolicyOnPodConditionsPattern] | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> Self:
        if (self.on_exit_codes is None) == (self.on_pod_conditions is None):
            raise ValueError("specify one of: `onExitCodes` or `onPodConditions`")
        if self.on_exit_codes is not None and self.on_exit_codes.operator == "In" and \
                0 in self.on_exit_codes.values:  # fmt: skip
            fail_at("PodFailurePolicyRule", [(("onExitCodes", "values"),
                    "must not be 0 for the In operator", 0)])  # fmt: skip
        return self


class PodFailurePolicy(Model):
    """Rules checked in order for each failed pod; the first match decides."""

    rules: list[PodFailurePolicyRule]


class SuccessPolicyRule(Model):
    """The Job succeeds once these indexes (or this many of them) succeed."""

    succeeded_indexes: str | None = None
    succeeded_count: int | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.succeeded_indexes is None and self.succeeded_count is None:
            raise ValueError("at least one of succeededCount or succeededIndexes must be specified")
        return self


class SuccessPolicy(Model):
    """When an Indexed Job may be declared succeeded early."""

    rules: list[SuccessPolicyRule]


class JobSpec(Model):
    """A pod template run to completion, with retry and parallelism settings."""

    parallelism: int | None = None
    completions: int | None = None
    active_deadline_seconds: int | None = None
    pod_failure_policy: PodFailurePolicy | None = None
    success_policy: SuccessPolicy | None = None
    backoff_limit: int | None = None
    backoff_limit_per_index: int | None = None
    max_failed_indexes: int | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None
    template: PodTemplateSpec
    ttl_seconds_after_finished: int | None = None
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    suspend: bool | None = None
    pod_replacement_policy: Literal["TerminatingOrFailed", "Failed"] | None = None
    managed_by: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors = _non_negative(self, ("parallelism", "completions", "backoff_limit",
                                      "backoff_limit_per_index", "max_failed_indexes",
                                      "ttl_seconds_after_finished"))  # fmt: skip
        if self.active_deadline_seconds is not None and self.active_deadline_seconds <= 0:
            errors.append((("activeDeadlineSeconds",), "must be greater than 0",
                           self.active_deadline_seconds))  # fmt: skip
        policy = self.template.spec.restart_policy
        if policy not in ("OnFailure", "Never"):
            errors.append((("template", "spec", "restartPolicy"),
                           'Unsupported value: supported values: "OnFailure", "Never"', policy))  # fmt: skip
        elif self.pod_failure_policy is not None and policy != "Never":
            errors.append((("template", "spec", "restartPolicy"),
                           'only "Never" is supported when podFailurePolicy is specified', policy))  # fmt: skip
        indexed = self.completion_mode == "Indexed"
        if indexed and self.completions is None:
            errors.append((("completions",), "when completion mode is Indexed", None))
        for field, value in (("backoffLimitPerIndex", self.backoff_limit_per_index),
                             ("maxFailedIndexes", self.max_failed_indexes),
                             ("successPolicy", self.success_policy)):  # fmt: skip
            if value is not None and not indexed:
                errors.append(((field,), "requires indexed completion mode", value))
        if self.max_failed_indexes is not None and self.backoff_limit_per_index is None:
            errors.append((("maxFailedIndexes",), "when maxFailedIndexes is specified, "
                           "backoffLimitPerIndex must also be specified", self.max_failed_indexes))  # fmt: skip
        for i, rule in enumerate(self.pod_failure_policy.rules if self.pod_failure_policy else ()):
            if rule.action == "FailIndex" and self.backoff_limit_per_index is None:
                errors.append((("podFailurePolicy", "rules", i, "action"),
                               "requires the backoffLimitPerIndex to be set", rule.action))  # fmt: skip
        errors += check_selector(self.selector, self.template, required=False)
        fail_at("JobSpec", errors)
        return self


class UncountedTerminatedPods(Model):
    """UIDs of finished pods the Job controller has not counted yet."""

    succeeded: list[str] | None = None
    failed: list[str] | None = None


class JobStatus(Model):
    """Observed progress of a Job."""

    conditions: list[WorkloadCondition] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    terminating: int | None = None
    completed_indexes: str | None = None
    failed_indexes: str | None = None
    uncounted_terminated_pods: UncountedTerminatedPods | None = None
    ready: int | None = None


class Job(Resource):
    """Runs pods until a number of them complete successfully (batch/v1 Job)."""

    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    spec: JobSpec
    status: JobStatus | None = None

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        # SetDefaults_Job (the object only; a CronJob's jobTemplate is left as written).
        spec = self.spec
        if spec.completions is None and spec.parallelism is None:
            spec.completions = 1
        if spec.parallelism is None:
            spec.parallelism = 1
        if spec.backoff_limit is None:
            spec.backoff_limit = MAX_INT32 if spec.backoff_limit_per_index is not None else DEFAULT_BACKOFF_LIMIT
        if spec.template.metadata.labels and not self.metadata.labels:
            self.metadata.labels = dict(spec.template.metadata.labels)
        if spec.completion_mode is None:
            spec.completion_mode = "NonIndexed"
        if spec.suspend is None:
            spec.suspend = False
        if spec.pod_replacement_policy is None:
            spec.pod_replacement_policy = "Failed" if spec.pod_failure_policy else "TerminatingOrFailed"
        if spec.manual_selector is None:
            spec.manual_selector = False
        return self


# ---------------------------------------------------------------------------
# CronJob
# ---------------------------------------------------------------------------


class JobTemplateSpec(Model):
    """The Job a CronJob creates at each scheduled time."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: JobSpec


def cron_schedule_error(schedule: str) -> str | None:
    """Why ``schedule`` is not a standard 5-field cron line or macro, or None (syntax only)."""
    text = schedule.strip()
    if not text:
        return "Required value"
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    if text.startswith("@"):
        if text in _CRON_MACROS or text.startswith("@every "):
            return None
        return f"unrecognized descriptor: {text}"
    fields = text.split()
    if len(fields) != CRON_FIELDS:
        return f"expected exactly {CRON_FIELDS} fields, found {len(fields)}: {text}"
    for part in fields:
        if not _CRON_FIELD.match(part):
            return f"invalid cron field {part!r}"
    return None


class CronJobSpec(Model):
    """A Job template and the cron schedule it runs on."""

    schedule: str
    time_zone: str | None = None
    starting_deadline_seconds: int | None = None
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    suspend: bool = False
    job_template: JobTemplateSpec
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        err = cron_schedule_error(self.schedule)
        if err:
            errors.append((("schedule",), err, self.schedule))
        errors += _non_negative(self, ("starting_deadline_seconds", "successful_jobs_history_limit",
                                       "failed_jobs_history_limit"))  # fmt: skip
        fail_at("CronJobSpec", errors)
        return self


class CronJobStatus(Model):
    """The Jobs running now and the last schedule times."""

    active: list[ObjectReference] | None = None
    last_schedule_time: str | None = None
    last_successful_time: str | None = None


class CronJob(Resource):
    """Creates Jobs on a repeating schedule (batch/v1 CronJob; batch/v1beta1 accepted)."""

    api_version: Literal["batch/v1", "batch/v1beta1"] = "batch/v1"
    kind: Literal["CronJob"] = "CronJob"
    spec: CronJobSpec
    status: CronJobStatus | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        name = self.metadata.name
        if name is not None and len(name) > CRONJOB_NAME_MAX:
            fail_at("CronJob", [(("metadata", "name"),
                    f"must be no more than {CRONJOB_NAME_MAX} characters", name)])  # fmt: skip
        return self


REGISTRY.register(KindInfo(
    group="apps", versions=("v1",), kind="Deployment", plural="deployments",
    singular="deployment", model=Deployment, short_names=("deploy",), categories=("all",),
))
REGISTRY.register(KindInfo(
    group="apps", versions=("v1",), kind="ReplicaSet", plural="replicasets",
    singular="replicaset", model=ReplicaSet, short_names=("rs",), categories=("all",),
))
REGISTRY.register(KindInfo(
    group="apps", versions=("v1",), kind="DaemonSet", plural="daemonsets",
    singular="daemonset", model=DaemonSet, short_names=("ds",), categories=("all",),
))
REGISTRY.register(KindInfo(
    group="apps", versions=("v1",), kind="ControllerRevision", plural="controllerrevisions",
    singular="controllerrevision", model=ControllerRevision, has_status=False,
))
REGISTRY.register(KindInfo(
    group="batch", versions=("v1",), kind="Job", plural="jobs", singular="job", model=Job,
    categories=("all",),
))
REGISTRY.register(KindInfo(
    group="batch", versions=("v1", "v1beta1"), kind="CronJob", plural="cronjobs",
    singular="cronjob", model=CronJob, short_names=("cj",), categories=("all",),
))  # fmt: skip
