"""The Argo Rollouts analysis kinds (argoproj.io/v1alpha1): AnalysisTemplate,
ClusterAnalysisTemplate, AnalysisRun, and Experiment.

What lives here: their wire models with Argo's field names, and the checks
the analysis controller makes on a spec before it runs it (Argo's
``ValidateMetrics``: one provider per metric, unique names, count against
limits, durations). Metric providers meshwork does not run (Kayenta,
Datadog, CloudWatch, ...) are accepted and kept as written.

What must not: taking measurements, evaluating conditions, substituting
``{{args.*}}``, or I/O. Nothing is defaulted into the wire form (see
``argo_common``).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import JsonValue, model_validator

from meshwork.model.argo_common import (
    Errors,
    WrittenJobSpec,
    WrittenPodTemplate,
    duration_errors,
    register_argo_kind,
    set_fields,
)
from meshwork.model.base import IntOrString, Model, ObjectMeta, OpenModel, Resource
from meshwork.model.corev1 import LabelSelector, fail_at
from meshwork.model.workloads import check_selector

# ---------------------------------------------------------------------------
# Analysis: templates, runs, metrics
# ---------------------------------------------------------------------------


class SecretKeyRef(Model):
    """A key of a Secret in the analysis namespace."""

    name: str
    key: str


class FieldRef(Model):
    """A field of the owning object, e.g. ``metadata.labels['region']``."""

    field_path: str


class ArgumentValueFrom(Model):
    """Where an analysis argument's value comes from."""

    secret_key_ref: SecretKeyRef | None = None
    field_ref: FieldRef | None = None


class Argument(Model):
    """An AnalysisTemplate/AnalysisRun argument, referenced as ``{{args.NAME}}``."""

    name: str
    value: str | None = None
    value_from: ArgumentValueFrom | None = None


class DryRun(Model):
    """A metric (``*`` for all) whose result does not fail the run."""

    metric_name: str


class MeasurementRetention(Model):
    """How many measurements of a metric to keep."""

    metric_name: str
    limit: int


class WebMetricHeader(Model):
    """One request header."""

    key: str
    value: str


class PrometheusRangeQueryArgs(Model):
    """Turns the query into a range query."""

    start: str | None = None
    end: str | None = None
    step: str | None = None


class PrometheusMetric(Model):
    """A PromQL query against ``address``."""

    address: str | None = None
    query: str | None = None
    timeout: int | None = None
    insecure: bool | None = None
    headers: list[WebMetricHeader] | None = None
    authentication: OpenModel | None = None
    range_query: PrometheusRangeQueryArgs | None = None


class WebMetric(Model):
    """An HTTP request whose JSON answer (at ``jsonPath``) is the measurement."""

    method: Literal["GET", "POST", "PUT"] | None = None
    url: str
    headers: list[WebMetricHeader] | None = None
    body: str | None = None
    timeout_seconds: int | None = None
    json_path: str | None = None
    insecure: bool | None = None
    json_body: JsonValue | None = None
    authentication: OpenModel | None = None


class JobMetric(Model):
    """A Kubernetes Job whose success or failure is the measurement."""

    metadata: ObjectMeta | None = None
    spec: WrittenJobSpec


class MeshworkMetric(Model):
    """meshwork's own provider: a service's golden signals from its sidecars' Istio metrics.

    ``metric`` is ``success-rate`` (share of non-5xx answers), ``request-rate``
    (per second), or ``latency-p50``/``-p90``/``-p99`` (ms), over ``window``
    (a Go duration, default 30s), counted at the serving pods' sidecars
    (``reporter="destination"``); ``podSelector`` narrows the pods (e.g. the
    canary's ``rollouts-pod-template-hash``). The result is a one-element list,
    as a Prometheus vector is: ``result[0] >= 0.95``. No requests in the
    window is a measurement error.
    """

    service: str
    namespace: str | None = None
    metric: Literal["success-rate", "request-rate", "latency-p50", "latency-p90", "latency-p99"]
    window: str | None = None
    pod_selector: dict[str, str] | None = None


_PROVIDERS = ("meshwork", "prometheus", "web", "job", "kayenta", "datadog", "wavefront", "new_relic",
              "cloud_watch", "graphite", "influxdb", "skywalking", "plugin")  # fmt: skip


class MetricProvider(Model):
    """Exactly one measurement source. Providers meshwork does not run are kept as written."""

    meshwork: MeshworkMetric | None = None
    prometheus: PrometheusMetric | None = None
    web: WebMetric | None = None
    job: JobMetric | None = None
    kayenta: OpenModel | None = None
    datadog: OpenModel | None = None
    wavefront: OpenModel | None = None
    new_relic: OpenModel | None = None
    cloud_watch: OpenModel | None = None
    graphite: OpenModel | None = None
    influxdb: OpenModel | None = None
    skywalking: OpenModel | None = None
    plugin: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _one_provider(self) -> Self:
        present = set_fields(self, _PROVIDERS)
        if not present:
            raise ValueError("no provider specified")
        if len(present) > 1:
            raise ValueError("multiple providers specified")
        return self


def _int_value(value: IntOrString | None) -> int | None:
    """The number in an int-or-string limit, None when absent or still templated."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


class Metric(Model):
    """One measurement, repeated every ``interval``, judged by the conditions."""

    name: str
    interval: str | None = None
    initial_delay: str | None = None
    count: IntOrString | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: IntOrString | None = None
    inconclusive_limit: IntOrString | None = None
    consecutive_error_limit: IntOrString | None = None
    provider: MetricProvider

    @model_validator(mode="after")
    def _checks(self) -> Self:
        # Argo's ValidateMetric; int-or-string limits are checked once they are numbers.
        count = _int_value(self.count)
        failure = _int_value(self.failure_limit)
        inconclusive = _int_value(self.inconclusive_limit)
        errors: Errors = []
        if count is not None and count > 0:
            if failure is not None and count < failure:
                errors.append((("count",), "count must be >= failureLimit", self.count))
            if inconclusive is not None and count < inconclusive:
                errors.append((("count",), "count must be >= inconclusiveLimit", self.count))
        if count is not None and count > 1 and not self.interval:
            errors.append((("interval",), "interval must be specified when count > 1", None))
        errors += duration_errors(self.interval, ("interval",), "interval")
        errors += duration_errors(self.initial_delay, ("initialDelay",), "startDelay")
        for field, value in (("failureLimit", failure), ("inconclusiveLimit", inconclusive),
                             ("consecutiveErrorLimit", _int_value(self.consecutive_error_limit))):  # fmt: skip
            if value is not None and value < 0:
                errors.append(((field,), f"{field} must be >= 0", value))
        fail_at("Metric", errors)
        return self


class AnalysisTemplateSpec(Model):
    """The metrics an analysis measures and the arguments it takes."""

    metrics: list[Metric]
    args: list[Argument] | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors: Errors = []
        if not self.metrics:
            errors.append((("metrics",), "no metrics specified", []))
        seen: set[str] = set()
        for i, metric in enumerate(self.metrics):
            if metric.name in seen:
                errors.append((("metrics", i, "name"), f"duplicate name '{metric.name}'", metric.name))
            seen.add(metric.name)
        fail_at("AnalysisTemplateSpec", errors)
        return self


class AnalysisRunSpec(AnalysisTemplateSpec):
    """An AnalysisTemplate instantiated with argument values."""

    terminate: bool | None = None


class AnalysisRunStatus(OpenModel):
    """Written by the analysis controller; unknown fields are kept."""

    phase: str | None = None
    message: str | None = None
    metric_results: list[OpenModel] | None = None
    started_at: str | None = None
    run_summary: OpenModel | None = None
    dry_run_summary: OpenModel | None = None


class AnalysisTemplate(Resource):
    """A reusable analysis: metrics, conditions and arguments (namespaced)."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["AnalysisTemplate"] = "AnalysisTemplate"
    spec: AnalysisTemplateSpec


class ClusterAnalysisTemplate(Resource):
    """An AnalysisTemplate usable from every namespace (cluster-scoped)."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["ClusterAnalysisTemplate"] = "ClusterAnalysisTemplate"
    spec: AnalysisTemplateSpec


class AnalysisRun(Resource):
    """One execution of an analysis; finishes Successful, Failed, Error or Inconclusive."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["AnalysisRun"] = "AnalysisRun"
    spec: AnalysisRunSpec
    status: AnalysisRunStatus | None = None


# ---------------------------------------------------------------------------
# Experiments, and metadata shared with Rollout steps
# ---------------------------------------------------------------------------


class PodTemplateMetadata(Model):
    """Extra labels and annotations for a set of pods (or AnalysisRuns)."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


AnalysisRunMetadata = PodTemplateMetadata


class TemplateService(Model):
    """Asks the experiment to create a Service for its ReplicaSet."""

    name: str | None = None


class TemplateSpec(Model):
    """One ReplicaSet an Experiment runs."""

    name: str
    replicas: int | None = None
    min_ready_seconds: int | None = None
    selector: LabelSelector
    template: WrittenPodTemplate
    service: TemplateService | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        fail_at("TemplateSpec", check_selector(self.selector, self.template, required=True))
        return self


class ExperimentAnalysisTemplateRef(Model):
    """An analysis an Experiment runs beside its ReplicaSets."""

    name: str
    template_name: str
    cluster_scope: bool | None = None
    args: list[Argument] | None = None
    required_for_completion: bool | None = None


class ExperimentSpec(Model):
    """ReplicaSets run side by side for ``duration``, judged by analyses."""

    templates: list[TemplateSpec]
    duration: str | None = None
    progress_deadline_seconds: int | None = None
    terminate: bool | None = None
    analyses: list[ExperimentAnalysisTemplateRef] | None = None
    scale_down_delay_seconds: int | None = None
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None
    analysis_run_metadata: AnalysisRunMetadata | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors = duration_errors(self.duration, ("duration",), "duration")
        seen: set[str] = set()
        for i, tmpl in enumerate(self.templates):
            if tmpl.name in seen:
                errors.append((("templates", i, "name"), "Duplicate value", tmpl.name))
            seen.add(tmpl.name)
        fail_at("ExperimentSpec", errors)
        return self


class ExperimentStatus(OpenModel):
    """Written by the Experiment controller; unknown fields are kept."""

    phase: str | None = None
    message: str | None = None
    template_statuses: list[OpenModel] | None = None
    available_at: str | None = None
    conditions: list[OpenModel] | None = None
    analysis_runs: list[OpenModel] | None = None


class Experiment(Resource):
    """Runs ReplicaSets and analyses for a limited time (used by Rollout experiment steps)."""

    api_version: Literal["argoproj.io/v1alpha1"] = "argoproj.io/v1alpha1"
    kind: Literal["Experiment"] = "Experiment"
    spec: ExperimentSpec
    status: ExperimentStatus | None = None



register_argo_kind(AnalysisTemplate, "analysistemplates", ("at",), has_status=False)
register_argo_kind(ClusterAnalysisTemplate, "clusteranalysistemplates", ("cat",), namespaced=False,
                   has_status=False)  # fmt: skip
register_argo_kind(AnalysisRun, "analysisruns", ("ar",))
register_argo_kind(Experiment, "experiments", ("exp",))
