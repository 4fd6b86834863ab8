"""The Argo Rollouts kind Rollout (argoproj.io/v1alpha1): a Deployment with canary
or blue-green updates, analysis, experiments and traffic shifting.

What lives here: the Rollout wire model with Argo's field names, and the
checks Argo's controller makes on a Rollout spec before it acts on it (the
ones that need no other object: strategy and step shape, weights, services,
managed routes, selector against template). The analysis and experiment
kinds a Rollout refers to live in ``argo_analysis``.

What must not: controller logic (step progression, traffic weights,
promotion), checks that need other objects (does the VirtualService or the
AnalysisTemplate exist), or I/O. Nothing is defaulted into the wire form;
the controller's defaults are named constants here (see ``argo_common``).
Traffic routers other than Istio are accepted and kept as written.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, JsonValue, model_validator

from meshwork.model.argo_analysis import (
    AnalysisRunMetadata,
    DryRun,
    FieldRef,
    MeasurementRetention,
    PodTemplateMetadata,
    TemplateService,
)
from meshwork.model.argo_common import (
    Errors,
    WrittenPodTemplate,
    duration_errors,
    negative_errors,
    parse_go_duration,
    register_argo_kind,
    set_fields,
)
from meshwork.model.base import IntOrString, Model, OpenModel, Resource
from meshwork.model.corev1 import LabelSelector, Loc, fail_at
from meshwork.model.workloads import check_selector

_SIGNED_INT = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.ParseInt takes as seconds
PERCENT_MAX = 100  # setWeight and antiAffinity weight are percentages (Argo validation)
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600  # Argo Rollouts controller default (utils/defaults)
DEFAULT_REVISION_HISTORY_LIMIT = 10  # Argo Rollouts controller default (utils/defaults)

# Argo's own messages (pkg/apis/rollouts/validation), so users can search for them.
MISSING_STRATEGY = "Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'"
MULTIPLE_STRATEGIES = "Multiple Strategies can not be listed"
INVALID_STEP = "Step must have one of the following set: experiment, setWeight, setCanaryScale or pause"
INVALID_SET_WEIGHT = "SetWeight needs to be between 0 and 100"
INVALID_DURATION = "Duration needs to be greater than 0"
STRING_MATCH_MULTIPLE = "StringMatch match value must have exactly one of the following: exact, regex, prefix"
STRING_MATCH_MISSING = "StringMatch value missed, match value must have one of the following: exact, regex, prefix"
TRAFFIC_ROUTING_SERVICES = "Canary service and Stable service must to be set to use Traffic Routing"
ROUTE_NOT_MANAGED = "Steps define a route that does not exist in spec.strategy.canary.trafficRouting.managedRoutes"


# ---------------------------------------------------------------------------
# Rollout: analysis and experiment references, steps
# ---------------------------------------------------------------------------


class RolloutArgumentValueFrom(Model):
    """A Rollout-side argument source: a ReplicaSet's pod-template hash or a field."""

    pod_template_hash_value: Literal["Stable", "Latest"] | None = None
    field_ref: FieldRef | None = None


class AnalysisRunArgument(Model):
    """An argument a Rollout passes to the AnalysisRuns it creates."""

    name: str
    value: str | None = None
    value_from: RolloutArgumentValueFrom | None = None


class RolloutAnalysisTemplate(Model):
    """A reference to an AnalysisTemplate (or, with clusterScope, a ClusterAnalysisTemplate)."""

    template_name: str
    cluster_scope: bool | None = None


class RolloutAnalysis(Model):
    """The AnalysisRun a Rollout creates: templates combined, with arguments."""

    templates: list[RolloutAnalysisTemplate] | None = None
    args: list[AnalysisRunArgument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    analysis_run_metadata: AnalysisRunMetadata | None = None


class RolloutAnalysisBackground(RolloutAnalysis):
    """Analysis run in the background of the canary steps, from ``startingStep``."""

    starting_step: int | None = None


class RolloutExperimentTemplate(Model):
    """A ReplicaSet an experiment step runs from the canary or stable pod template."""

    name: str
    spec_ref: Literal["canary", "stable"]
    replicas: int | None = None
    metadata: PodTemplateMetadata | None = None
    selector: LabelSelector | None = None
    weight: int | None = None
    service: TemplateService | None = None


class RolloutExperimentStepAnalysisTemplateRef(Model):
    """An analysis run alongside an experiment."""

    name: str
    template_name: str
    cluster_scope: bool | None = None
    args: list[AnalysisRunArgument] | None = None
    required_for_completion: bool | None = None


class RolloutExperimentStep(Model):
    """Runs an Experiment and waits for it to finish."""

    templates: list[RolloutExperimentTemplate]
    duration: str | None = None
    analyses: list[RolloutExperimentStepAnalysisTemplateRef] | None = None
    dry_run: list[DryRun] | None = None
    analysis_run_metadata: AnalysisRunMetadata | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        fail_at("RolloutExperimentStep", duration_errors(self.duration, ("duration",), "duration"))
        return self


class RolloutPause(Model):
    """Pause for ``duration`` (seconds, or a Go duration string); forever when absent."""

    duration: IntOrString | None = None

    def duration_seconds(self) -> int:
        """Argo's ``DurationSeconds``: 0 when absent, -1 when the string is not a duration."""
        if self.duration is None:
            return 0
        if isinstance(self.duration, int):
            return self.duration
        if _SIGNED_INT.match(self.duration):
            return int(self.duration)
        try:
            return int(parse_go_duration(self.duration))
        except ValueError:
            return -1

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.duration_seconds() < 0:
            fail_at("RolloutPause", [(("duration",), INVALID_DURATION, self.duration)])
        return self


class SetCanaryScale(Model):
    """Scale the canary without changing its traffic weight."""

    weight: int | None = None
    replicas: int | None = None
    match_traffic_weight: bool | None = None


class StringMatch(Model):
    """Exactly one of exact, prefix or regex."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def shape_error(self) -> str | None:
        """Argo's message when not exactly one way of matching is given."""
        count = sum(1 for v in (self.exact, self.prefix, self.regex) if v)
        if count > 1:
            return STRING_MATCH_MULTIPLE
        return STRING_MATCH_MISSING if count == 0 else None


class HeaderRoutingMatch(Model):
    """Requests whose header ``headerName`` matches go to the canary."""

    header_name: str
    header_value: StringMatch


class SetHeaderRoute(Model):
    """Adds (or, without ``match``, removes) a header-based route to the canary."""

    name: str | None = None
    match: list[HeaderRoutingMatch] | None = None


class RouteMatch(Model):
    """Method, path and headers that select requests to mirror (all must match)."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None


class SetMirrorRoute(Model):
    """Mirrors ``percentage`` of matching requests to the canary."""

    name: str
    match: list[RouteMatch] | None = None
    percentage: int | None = None


class StepPlugin(Model):
    """A step run by an Argo Rollouts step plugin (kept as written; meshwork runs none)."""

    name: str
    config: JsonValue | None = None


_STEP_TYPES = ("set_weight", "pause", "experiment", "analysis", "set_canary_scale",
               "set_header_route", "set_mirror_route", "plugin")  # fmt: skip
_EXCLUSIVE_STEP_TYPES = ("set_weight", "pause", "experiment", "analysis")  # Argo: hasMultipleStepsType


class CanaryStep(Model):
    """One step of a canary update."""

    set_weight: int | None = None
    pause: RolloutPause | None = None
    experiment: RolloutExperimentStep | None = None
    analysis: RolloutAnalysis | None = None
    set_canary_scale: SetCanaryScale | None = None
    set_header_route: SetHeaderRoute | None = None
    set_mirror_route: SetMirrorRoute | None = None
    plugin: StepPlugin | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        if not set_fields(self, _STEP_TYPES) or len(set_fields(self, _EXCLUSIVE_STEP_TYPES)) > 1:
            errors.append(((), INVALID_STEP, None))
        if self.set_weight is not None and not 0 <= self.set_weight <= PERCENT_MAX:
            errors.append((("setWeight",), INVALID_SET_WEIGHT, self.set_weight))
        fail_at("CanaryStep", errors)
        return self


# ---------------------------------------------------------------------------
# Rollout: traffic routing and strategies
# ---------------------------------------------------------------------------


class TLSRoute(Model):
    """A TLS route of a VirtualService, found by port and SNI hosts."""

    port: int | None = None
    sni_hosts: list[str] | None = None


class TCPRoute(Model):
    """A TCP route of a VirtualService, found by port."""

    port: int | None = None


class IstioVirtualService(Model):
    """A VirtualService whose named routes the Rollout re-weights."""

    name: str
    routes: list[str] | None = None
    tls_routes: list[TLSRoute] | None = None
    tcp_routes: list[TCPRoute] | None = None


class IstioDestinationRule(Model):
    """A DestinationRule whose subsets the Rollout points at canary and stable pods."""

    name: str
    canary_subset_name: str
    stable_subset_name: str


class IstioTrafficRouting(Model):
    """Istio traffic routing: one VirtualService or several, and an optional DestinationRule."""

    virtual_service: IstioVirtualService | None = None
    virtual_services: list[IstioVirtualService] | None = None
    destination_rule: IstioDestinationRule | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if len(set_fields(self, ("virtual_service", "virtual_services"))) != 1:
            raise ValueError("exactly one of virtualService or virtualServices must be set")
        return self


class ManagedRoute(Model):
    """A route the Rollout may add for setHeaderRoute/setMirrorRoute steps."""

    name: str


class RolloutTrafficRouting(Model):
    """How canary traffic is split. meshwork routes with Istio; the others are kept as written."""

    istio: IstioTrafficRouting | None = None
    nginx: OpenModel | None = None
    alb: OpenModel | None = None
    smi: OpenModel | None = None
    ambassador: OpenModel | None = None
    app_mesh: OpenModel | None = None
    traefik: OpenModel | None = None
    apisix: OpenModel | None = None
    plugins: dict[str, JsonValue] | None = None
    managed_routes: list[ManagedRoute] | None = None
    max_traffic_weight: int | None = None


class PreferredAntiAffinity(Model):
    """Prefer (weight 1-100) not to share nodes with the previous ReplicaSet."""

    weight: int


class RequiredAntiAffinity(Model):
    """Require not sharing nodes with the previous ReplicaSet (no fields)."""


class AntiAffinity(Model):
    """Exactly one anti-affinity rule between new and previous pods."""

    preferred_during_scheduling_ignored_during_execution: PreferredAntiAffinity | None = None
    required_during_scheduling_ignored_during_execution: RequiredAntiAffinity | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        preferred = self.preferred_during_scheduling_ignored_during_execution
        if (preferred is None) == (self.required_during_scheduling_ignored_during_execution is None):
            raise ValueError("AntiAffinity must have exactly one strategy listed")
        if preferred is not None and not 1 <= preferred.weight <= PERCENT_MAX:
            fail_at("AntiAffinity", [(("preferredDuringSchedulingIgnoredDuringExecution", "weight"),
                                      "AntiAffinity weight must be between 1-100", preferred.weight)])  # fmt: skip
        return self


class PingPongSpec(Model):
    """Two services that take turns being stable (ALB traffic routing only)."""

    ping_service: str
    pong_service: str


def _route_errors(step: CanaryStep, loc: Loc, routing: RolloutTrafficRouting | None) -> Errors:
    """Argo's checks on setHeaderRoute / setMirrorRoute steps."""
    errors: Errors = []
    managed = {r.name for r in (routing.managed_routes or ())} if routing else set()
    header, mirror = step.set_header_route, step.set_mirror_route
    if header is not None:
        if routing is None or (routing.istio is None and routing.alb is None and routing.apisix is None):
            errors.append(((*loc, "setHeaderRoute"),
                           "SetHeaderRoute requires TrafficRouting, supports Istio and ALB and Apisix",
                           header.name))  # fmt: skip
        for j, hmatch in enumerate(header.match or ()):
            err = hmatch.header_value.shape_error()
            if err:
                errors.append(((*loc, "setHeaderRoute", "match", j, "headerValue"), err, None))
    if mirror is not None:
        if routing is None or routing.istio is None:
            errors.append(((*loc, "setMirrorRoute"),
                           "SetMirrorRoute requires TrafficRouting, supports Istio only", mirror.name))  # fmt: skip
        for j, rmatch in enumerate(mirror.match or ()):
            for part in ("method", "path"):
                value: StringMatch | None = getattr(rmatch, part)
                err = value.shape_error() if value is not None else None
                if err:
                    errors.append(((*loc, "setMirrorRoute", "match", j, part), err, None))
    for field, route in (("setHeaderRoute", header), ("setMirrorRoute", mirror)):
        if route is None or routing is None:
            continue
        if routing.managed_routes is None:
            errors.append(((*loc, field), "Rollout has missing field "
                           "'spec.strategy.canary.trafficRouting.managedRoutes'", None))  # fmt: skip
        elif route.name not in managed:
            errors.append(((*loc, field, "name"), ROUTE_NOT_MANAGED, route.name))
    return errors


class CanaryStrategy(Model):
    """Replace pods gradually, by replica count or (with trafficRouting) by traffic weight."""

    canary_service: str | None = None
    stable_service: str | None = None
    steps: list[CanaryStep] | None = None
    traffic_routing: RolloutTrafficRouting | None = None
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None
    analysis: RolloutAnalysisBackground | None = None
    anti_affinity: AntiAffinity | None = None
    canary_metadata: PodTemplateMetadata | None = None
    stable_metadata: PodTemplateMetadata | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int | None = None
    dynamic_stable_scale: bool | None = None
    ping_pong: PingPongSpec | None = None
    min_pods_per_replica_set: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        routing = self.traffic_routing
        errors: Errors = []
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            errors.append((("maxSurge",), "MaxSurge and MaxUnavailable both can not be zero", self.max_surge))
        if self.canary_service and self.canary_service == self.stable_service:
            errors.append((("stableService",), "This rollout uses the same service for the stable and "
                           "canary services, but two different services are required.",
                           self.stable_service))  # fmt: skip
        needs_services = routing is not None and self.ping_pong is None and not (
            routing.istio is not None and routing.istio.destination_rule is not None)
        if needs_services:
            for field, value in (("stableService", self.stable_service),
                                 ("canaryService", self.canary_service)):  # fmt: skip
                if not value:
                    errors.append(((field,), TRAFFIC_ROUTING_SERVICES, value))
        if routing is None:
            if self.scale_down_delay_seconds is not None:
                errors.append((("scaleDownDelaySeconds",),
                               "Canary scaleDownDelaySeconds can only be used with traffic routing",
                               self.scale_down_delay_seconds))  # fmt: skip
            if self.dynamic_stable_scale:
                errors.append((("dynamicStableScale",),
                               "Canary dynamicStableScale can only be used with traffic routing", True))  # fmt: skip
        elif self.scale_down_delay_seconds is not None and self.dynamic_stable_scale:
            errors.append((("dynamicStableScale",),
                           "Canary dynamicStableScale cannot be used with scaleDownDelaySeconds", True))  # fmt: skip
        for i, step in enumerate(self.steps or ()):
            loc: Loc = ("steps", i)
            if step.set_canary_scale is not None and routing is None:
                errors.append(((*loc, "setCanaryScale"), "SetCanaryScale requires TrafficRouting to be set",
                               None))  # fmt: skip
            errors += _route_errors(step, loc, routing)
            for j, tmpl in enumerate(step.experiment.templates if step.experiment else ()):
                if tmpl.weight is not None and routing is None:
                    errors.append(((*loc, "experiment", "templates", j, "weight"), "Experiment template "
                                   "weight cannot be set unless TrafficRouting is enabled", tmpl.weight))  # fmt: skip
        fail_at("CanaryStrategy", errors)
        return self


class BlueGreenStrategy(Model):
    """Run the new version beside the old one and switch the active Service at promotion."""

    active_service: str
    preview_service: str | None = None
    preview_replica_count: int | None = None
    auto_promotion_enabled: bool | None = None
    auto_promotion_seconds: int | None = None
    max_unavailable: IntOrString | None = None
    scale_down_delay_seconds: int | None = None
    scale_down_delay_revision_limit: int | None = None
    pre_promotion_analysis: RolloutAnalysis | None = None
    anti_affinity: AntiAffinity | None = None
    post_promotion_analysis: RolloutAnalysis | None = None
    preview_metadata: PodTemplateMetadata | None = None
    active_metadata: PodTemplateMetadata | None = None
    abort_scale_down_delay_seconds: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.active_service == self.preview_service:
            fail_at("BlueGreenStrategy", [(("activeService",), "This rollout uses the same service for the "
                                           "active and preview services, but two different services are "
                                           "required.", self.active_service)])  # fmt: skip
        return self


class RolloutStrategy(Model):
    """Exactly one of canary or blueGreen."""

    blue_green: BlueGreenStrategy | None = None
    canary: CanaryStrategy | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        present = set_fields(self, ("blue_green", "canary"))
        if not present:
            raise ValueError(MISSING_STRATEGY)
        if len(present) > 1:
            raise ValueError(MULTIPLE_STRATEGIES)
        return self


class ObjectRef(Model):
    """The workload (e.g. a Deployment) whose pod template a Rollout uses."""

    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    scale_down: Literal["never", "onsuccess", "progressively"] | None = None


class RollbackWindowSpec(Model):
    """Rolling back to one of the last ``revisions`` revisions skips the steps."""

    revisions: int | None = None


class AnalysisRunStrategy(Model):
    """How many finished AnalysisRuns and Experiments to keep."""

    successful_run_history_limit: int | None = None
    unsuccessful_run_history_limit: int | None = None


_NON_NEGATIVE = ("replicas", "min_ready_seconds", "revision_history_limit", "progress_deadline_seconds")


class RolloutSpec(Model):
    """Pods to run (a template, or a reference to a workload's) and how to update them."""

    replicas: int | None = None
    selector: LabelSelector | None = None
    template: WrittenPodTemplate | None = None
    workload_ref: ObjectRef | None = None
    min_ready_seconds: int | None = None
    rollback_window: RollbackWindowSpec | None = None
    strategy: RolloutStrategy
    revision_history_limit: int | None = None
    paused: bool | None = None
    progress_deadline_seconds: int | None = None
    progress_deadline_abort: bool | None = None
    restart_at: str | None = None
    analysis: AnalysisRunStrategy | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        if (self.template is None) == (self.workload_ref is None):
            errors.append(((), "exactly one of template or workloadRef must be set", None))
        if self.workload_ref is None:
            errors += check_selector(self.selector, self.template, required=True)
        if self.template is not None and self.template.spec.restart_policy != "Always":
            errors.append((("template", "spec", "restartPolicy"),
                           'Unsupported value: supported values: "Always"',
                           self.template.spec.restart_policy))  # fmt: skip
        errors += negative_errors(self, _NON_NEGATIVE)
        deadline = self.progress_deadline_seconds
        if deadline is None:
            deadline = DEFAULT_PROGRESS_DEADLINE_SECONDS
        if deadline <= (self.min_ready_seconds or 0):
            errors.append((("progressDeadlineSeconds",), "must be greater than minReadySeconds", deadline))
        blue_green = self.strategy.blue_green
        history = self.revision_history_limit
        if history is None:
            history = DEFAULT_REVISION_HISTORY_LIMIT
        if blue_green is not None and (blue_green.scale_down_delay_revision_limit or 0) > history:
            errors.append((("strategy", "blueGreen", "scaleDownDelayRevisionLimit"),
                           "This rollout's revision history limit can not be smaller than the "
                           "rollout's scale down limit", blue_green.scale_down_delay_revision_limit))  # fmt: skip
        fail_at("RolloutSpec", errors)
        return self


class RolloutCondition(OpenModel):
    """Available, Progressing, Paused, Healthy, Completed, InvalidSpec, ReplicaFailure."""

    type: str
    status: str
    last_update_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class PauseCondition(OpenModel):
    """Why (CanaryPauseStep, BlueGreenPause, ...) and since when the controller paused."""

    reason: str
    start_time: str | None = None


class RolloutAnalysisRunStatus(OpenModel):
    """The current AnalysisRun of a step or phase and its phase."""

    name: str
    status: str
    message: str | None = None


class CanaryStatus(OpenModel):
    """Canary progress: current analysis runs, experiment and traffic weights."""

    current_step_analysis_run_status: RolloutAnalysisRunStatus | None = None
    current_background_analysis_run_status: RolloutAnalysisRunStatus | None = None
    current_experiment: str | None = None
    weights: OpenModel | None = None
    stable_ping_pong: str | None = None


class BlueGreenStatus(OpenModel):
    """Blue-green progress: which pod-template hashes the services select."""

    preview_selector: str | None = None
    active_selector: str | None = None
    scale_up_preview_check_point: bool | None = None
    pre_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None
    post_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None


class RolloutStatus(OpenModel):
    """Written by the Rollout controller; unknown fields are kept."""

    phase: str | None = None
    message: str | None = None
    abort: bool | None = None
    aborted_at: str | None = None
    pause_conditions: list[PauseCondition] | None = None
    controller_pause: bool | None = None
    current_pod_hash: str | None = None
    current_step_hash: str | None = None
    current_step_index: int | None = None
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    hpa_replicas: int | None = Field(default=None, alias="HPAReplicas")
    collision_count: int | None = None
    observed_generation: str | None = None
    workload_observed_generation: str | None = None
    conditions: list[RolloutCondition] | None = None
    canary: CanaryStatus | None = None
    blue_green: BlueGreenStatus | None = None
    selector: str | None = None
    stable_rs: str | None = Field(default=None, alias="stableRS")
    restarted_at: str | None = None
    promote_full: bool | None = None


class Rollout(Resource):
    """A Deployment with canary or blue-green updates, analysis and traffic shifting."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["Rollout"] = "Rollout"
    spec: RolloutSpec
    status: RolloutStatus | None = None


register_argo_kind(Rollout, "rollouts", ("ro",))
