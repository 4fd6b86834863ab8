"""The Pod kind and the pod-level types of a pod template (core/v1).

What lives here: ``Pod`` itself, ``PodSpec``/``PodTemplateSpec``/``PodStatus``,
affinity, tolerations, topology spread and the other pod-level fields.
Containers live in ``meshwork.model.container``, volumes in
``meshwork.model.volume``, selectors/references/field-error helpers in
``meshwork.model.corev1``; every one of those names is re-exported here
(see ``__all__``), so ``from meshwork.model.pod import Container`` is the
stable import path for workload kinds and the Argo kinds.

Rules of this module:

* Upstream defaulting (``SetDefaults_PodSpec``, ``SetDefaults_Container``,
  ``SetDefaults_Probe`` ...) is written as field defaults or as
  ``model_validator(mode="after")`` on the type the upstream function owns.
  Defaults that upstream applies only to a Pod object (requests from limits,
  ``enableServiceLinks``, host-network ports) live on ``Pod``, not on
  ``PodSpec``, so that templates look the way ``kubectl get -o yaml`` shows them.
* Semantic checks raise through ``fail_at`` so that the error names the
  exact wire path (``spec.containers.1.name``).
* No selector *evaluation* and no I/O here.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshwork.model.base import (
    REGISTRY,
    KindInfo,
    Model,
    ObjectMeta,
    Quantity,
    Resource,
    dns1123_label_error,
)
from meshwork.model.container import (
    AppArmorProfile,
    Capabilities,
    ConfigMapEnvSource,
    ConfigMapKeySelector,
    Container,
    ContainerPort,
    ContainerResizePolicy,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    HTTPHeader,
    Lifecycle,
    LifecycleHandler,
    ObjectFieldSelector,
    PodSecurityContext,
    Probe,
    Protocol,
    ResourceClaim,
    ResourceFieldSelector,
    ResourceRequirements,
    SeccompProfile,
    SecretEnvSource,
    SecretKeySelector,
    SecurityContext,
    SELinuxOptions,
    SleepAction,
    Sysctl,
    TCPSocketAction,
    VolumeDevice,
    VolumeMount,
    WindowsSecurityContextOptions,
    default_pull_policy,
)
from meshwork.model.corev1 import (
    IANA_SVC_NAME_MAX,
    PORT_MAX,
    PORT_MIN,
    LabelSelector,
    LabelSelectorRequirement,
    Loc,
    LocalObjectReference,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    ObjectReference,
    attr_name,
    check_quantities,
    exactly_one,
    fail_at,
    iana_svc_name_error,
    parse_quantity,
    port_error,
    wire_name,
)
from meshwork.model.volume import (
    DEFAULT_FILE_MODE,
    DEFAULT_TOKEN_EXPIRATION_SECONDS,
    MIN_TOKEN_EXPIRATION_SECONDS,
    ClusterTrustBundleProjection,
    ConfigMapProjection,
    ConfigMapVolumeSource,
    CSIVolumeSource,
    DownwardAPIProjection,
    DownwardAPIVolumeFile,
    DownwardAPIVolumeSource,
    EmptyDirVolumeSource,
    EphemeralVolumeSource,
    HostPathVolumeSource,
    ImageVolumeSource,
    KeyToPath,
    NFSVolumeSource,
    PersistentVolumeClaimVolumeSource,
    ProjectedVolumeSource,
    SecretProjection,
    SecretVolumeSource,
    ServiceAccountTokenProjection,
    Volume,
    VolumeProjection,
)

DEFAULT_TERMINATION_GRACE_SECONDS = 30  # v1.DefaultTerminationGracePeriodSeconds

# Every name below is importable from ``meshwork.model.pod`` (the stable path).
__all__ = [
    "DEFAULT_FILE_MODE",
    "DEFAULT_TERMINATION_GRACE_SECONDS",
    "DEFAULT_TOKEN_EXPIRATION_SECONDS",
    "IANA_SVC_NAME_MAX",
    "MIN_TOKEN_EXPIRATION_SECONDS",
    "PORT_MAX",
    "PORT_MIN",
    "Affinity",
    "AppArmorProfile",
    "CSIVolumeSource",
    "Capabilities",
    "ClusterTrustBundleProjection",
    "ConfigMapEnvSource",
    "ConfigMapKeySelector",
    "ConfigMapProjection",
    "ConfigMapVolumeSource",
    "Container",
    "ContainerPort",
    "ContainerResizePolicy",
    "ContainerState",
    "ContainerStateRunning",
    "ContainerStateTerminated",
    "ContainerStateWaiting",
    "ContainerStatus",
    "DownwardAPIProjection",
    "DownwardAPIVolumeFile",
    "DownwardAPIVolumeSource",
    "EmptyDirVolumeSource",
    "EnvFromSource",
    "EnvVar",
    "EnvVarSource",
    "EphemeralVolumeSource",
    "ExecAction",
    "GRPCAction",
    "HTTPGetAction",
    "HTTPHeader",
    "HostAlias",
    "HostPathVolumeSource",
    "ImageVolumeSource",
    "KeyToPath",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Lifecycle",
    "LifecycleHandler",
    "Loc",
    "LocalObjectReference",
    "NFSVolumeSource",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "ObjectFieldSelector",
    "ObjectReference",
    "PersistentVolumeClaimVolumeSource",
    "Pod",
    "PodAffinity",
    "PodAffinityTerm",
    "PodAntiAffinity",
    "PodCondition",
    "PodDNSConfig",
    "PodDNSConfigOption",
    "PodIP",
    "PodOS",
    "PodPhase",
    "PodReadinessGate",
    "PodResourceClaim",
    "PodSchedulingGate",
    "PodSecurityContext",
    "PodSpec",
    "PodStatus",
    "PodTemplateSpec",
    "PreferredSchedulingTerm",
    "Probe",
    "ProjectedVolumeSource",
    "Protocol",
    "ResourceClaim",
    "ResourceFieldSelector",
    "ResourceRequirements",
    "RestartPolicy",
    "SELinuxOptions",
    "SeccompProfile",
    "SecretEnvSource",
    "SecretKeySelector",
    "SecretProjection",
    "SecretVolumeSource",
    "SecurityContext",
    "ServiceAccountTokenProjection",
    "SleepAction",
    "Sysctl",
    "TCPSocketAction",
    "TaintEffect",
    "Toleration",
    "TopologySpreadConstraint",
    "Volume",
    "VolumeDevice",
    "VolumeMount",
    "VolumeProjection",
    "WeightedPodAffinityTerm",
    "WindowsSecurityContextOptions",
    "attr_name",
    "check_quantities",
    "default_pull_policy",
    "exactly_one",
    "fail_at",
    "iana_svc_name_error",
    "parse_quantity",
    "port_error",
    "wire_name",
]

# ---------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------


class PreferredSchedulingTerm(Model):
    """A weighted node preference."""

    weight: int
    preference: NodeSelectorTerm


class NodeAffinity(Model):
    """Node constraints: required (hard) and preferred (soft)."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = None


class PodAffinityTerm(Model):
    """Pods matching ``labelSelector`` in ``namespaces`` share ``topologyKey`` with this one."""

    label_selector: LabelSelector | None = None
    namespaces: list[str] | None = None
    topology_key: str
    namespace_selector: LabelSelector | None = None
    match_label_keys: list[str] | None = None
    mismatch_label_keys: list[str] | None = None


class WeightedPodAffinityTerm(Model):
    """A weighted pod (anti-)affinity preference."""

    weight: int
    pod_affinity_term: PodAffinityTerm


class PodAffinity(Model):
    """Co-locate with matching pods."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = None


class PodAntiAffinity(Model):
    """Keep away from matching pods."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = None


class Affinity(Model):
    """Node, pod and pod-anti affinity rules."""

    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAntiAffinity | None = None


TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Toleration(Model):
    """Lets the pod be scheduled onto nodes with a matching taint."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: TaintEffect | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError("value: must be empty when `operator` is 'Exists'")
        if not self.key and self.operator != "Exists":
            raise ValueError("operator: must be 'Exists' when `key` is empty")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("effect: must be 'NoExecute' when `tolerationSeconds` is set")
        return self


class TopologySpreadConstraint(Model):
    """Spread matching pods evenly across a topology domain."""

    max_skew: int
    topology_key: str
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    min_domains: int | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    match_label_keys: list[str] | None = None


class HostAlias(Model):
    """Extra ``/etc/hosts`` entries."""

    ip: str
    hostnames: list[str] | None = None


class PodDNSConfigOption(Model):
    """One resolver option."""

    name: str | None = None
    value: str | None = None


class PodDNSConfig(Model):
    """Resolver settings merged with those of ``dnsPolicy``."""

    nameservers: list[str] | None = None
    searches: list[str] | None = None
    options: list[PodDNSConfigOption] | None = None


class PodReadinessGate(Model):
    """An extra condition that must be True for the pod to be Ready."""

    condition_type: str


class PodOS(Model):
    """The operating system the pod needs."""

    name: Literal["linux", "windows"]


class PodSchedulingGate(Model):
    """A gate that holds the pod back from scheduling until removed."""

    name: str


class PodResourceClaim(Model):
    """A dynamic resource claim the pod uses."""

    name: str
    resource_claim_name: str | None = None
    resource_claim_template_name: str | None = None


# ---------------------------------------------------------------------------
# PodSpec, template, status
# ---------------------------------------------------------------------------

RestartPolicy = Literal["Always", "OnFailure", "Never"]


class PodSpec(Model):
    """What a pod runs and how (defaults as in ``SetDefaults_PodSpec``)."""

    volumes: list[Volume] | None = None
    init_containers: list[Container] | None = None
    containers: list[Container]
    restart_policy: RestartPolicy = "Always"
    termination_grace_period_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS
    active_deadline_seconds: int | None = None
    dns_policy: Literal["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"] = "ClusterFirst"
    node_selector: dict[str, str] | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    node_name: str | None = None
    host_network: bool | None = None
    host_pid: bool | None = Field(default=None, alias="hostPID")
    host_ipc: bool | None = Field(default=None, alias="hostIPC")
    share_process_namespace: bool | None = None
    security_context: PodSecurityContext = Field(default_factory=PodSecurityContext)
    image_pull_secrets: list[LocalObjectReference] | None = None
    hostname: str | None = None
    subdomain: str | None = None
    affinity: Affinity | None = None
    scheduler_name: str = "default-scheduler"
    tolerations: list[Toleration] | None = None
    host_aliases: list[HostAlias] | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    dns_config: PodDNSConfig | None = None
    readiness_gates: list[PodReadinessGate] | None = None
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    preemption_policy: Literal["PreemptLowerPriority", "Never"] | None = None
    overhead: dict[str, Quantity] | None = None
    topology_spread_constraints: list[TopologySpreadConstraint] | None = None
    set_hostname_as_fqdn: bool | None = Field(default=None, alias="setHostnameAsFQDN")
    os: PodOS | None = None
    host_users: bool | None = None
    scheduling_gates: list[PodSchedulingGate] | None = None
    resource_claims: list[PodResourceClaim] | None = None
    resources: ResourceRequirements | None = None

    @field_validator("overhead")
    @classmethod
    def _quantities(cls, value: dict[str, Quantity] | None) -> dict[str, Quantity] | None:
        return check_quantities(value)

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        # serviceAccount is the deprecated alias of serviceAccountName; the API shows both.
        if self.service_account_name is None and self.service_account:
            self.service_account_name = self.service_account
        elif self.service_account_name and self.service_account is None:
            self.service_account = self.service_account_name
        errors: list[tuple[Loc, str, Any]] = []
        if not self.containers:
            errors.append((("containers",), "Required value", []))
        volumes: set[str] = set()
        for i, vol in enumerate(self.volumes or ()):
            if vol.name in volumes:
                errors.append((("volumes", i, "name"), "Duplicate value", vol.name))
            volumes.add(vol.name)
        names: set[str] = set()
        for field, containers in (("initContainers", self.init_containers),
                                  ("containers", self.containers)):  # fmt: skip
            for i, c in enumerate(containers or ()):
                if c.name in names:
                    errors.append(((field, i, "name"), "Duplicate value", c.name))
                names.add(c.name)
                if field == "containers" and c.restart_policy is not None:
                    errors.append(((field, i, "restartPolicy"),
                                   "may not be set for non-init containers", c.restart_policy))  # fmt: skip
                if field == "initContainers" and c.restart_policy is None:
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                        if getattr(c, attr_name(probe)) is not None:
                            errors.append(((field, i, probe),
                                           "may not be set for init containers without "
                                           "restartPolicy=Always", None))  # fmt: skip
                for j, mount in enumerate(c.volume_mounts or ()):
                    if mount.name not in volumes:
                        errors.append(((field, i, "volumeMounts", j, "name"), "Not found",
                                       mount.name))  # fmt: skip
        if self.termination_grace_period_seconds < 0:
            errors.append((("terminationGracePeriodSeconds",), "must be >= 0",
                           self.termination_grace_period_seconds))  # fmt: skip
        if self.active_deadline_seconds is not None and self.active_deadline_seconds < 1:
            errors.append((("activeDeadlineSeconds",), "must be greater than 0",
                           self.active_deadline_seconds))  # fmt: skip
        if self.hostname is not None and dns1123_label_error(self.hostname):
            errors.append((("hostname",), dns1123_label_error(self.hostname) or "", self.hostname))
        if self.subdomain is not None and dns1123_label_error(self.subdomain):
            errors.append((("subdomain",), dns1123_label_error(self.subdomain) or "",
                           self.subdomain))  # fmt: skip
        fail_at("PodSpec", errors)
        return self

    def all_containers(self) -> list[Container]:
        """Init containers first, then app containers, in declaration order."""
        return [*(self.init_containers or ()), *self.containers]


class PodTemplateSpec(Model):
    """The pod a workload creates: labels/annotations and a PodSpec."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class PodCondition(Model):
    """One of PodScheduled, Initialized, ContainersReady, Ready, ... with its status."""

    type: str
    observed_generation: int | None = None
    status: Literal["True", "False", "Unknown"]
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class ContainerStateWaiting(Model):
    """Not running yet: ContainerCreating, CrashLoopBackOff, ErrImagePull ..."""

    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(Model):
    """Running since ``startedAt``."""

    started_at: str | None = None


class ContainerStateTerminated(Model):
    """Exited: code, signal, reason, times."""

    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str | None = Field(default=None, alias="containerID")


class ContainerState(Model):
    """At most one of waiting, running, terminated."""

    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(Model):
    """What the node agent reports about one container."""

    name: str
    state: ContainerState | None = None
    last_state: ContainerState | None = None
    ready: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str = Field(default="", alias="imageID")
    container_id: str | None = Field(default=None, alias="containerID")
    started: bool | None = None
    allocated_resources: dict[str, Quantity] | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    user: dict[str, Any] | None = None
    stop_signal: str | None = None


class PodIP(Model):
    """One IP address of a pod or host."""

    ip: str


PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


class PodStatus(Model):
    """Observed state of a pod, written by the scheduler and the node agent."""

    observed_generation: int | None = None
    phase: PodPhase | None = None
    conditions: list[PodCondition] | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")
    host_ips: list[PodIP] | None = Field(default=None, alias="hostIPs")
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] | None = Field(default=None, alias="podIPs")
    start_time: str | None = None
    init_container_statuses: list[ContainerStatus] | None = None
    container_statuses: list[ContainerStatus] | None = None
    ephemeral_container_statuses: list[ContainerStatus] | None = None
    qos_class: Literal["Guaranteed", "Burstable", "BestEffort"] | None = None
    resize: str | None = None


class Pod(Resource):
    """A group of containers scheduled together onto one node (core/v1 Pod)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    spec: PodSpec
    status: PodStatus | None = None

    status_validated_alone = True  # _pod_defaults reads and writes only spec

    @model_validator(mode="after")
    def _pod_defaults(self) -> Self:
        # SetDefaults_Pod: only a Pod (not a template) gets these. A caller may
        # have built this Pod from a template's PodSpec instance, so nothing
        # shared is mutated: the spec and each changed container are copied
        # (shallowly: a deep copy of every pod costs more than validating it).
        spec = self.spec.model_copy()
        if spec.enable_service_links is None:
            spec.enable_service_links = True

        def defaulted(c: Container) -> Container:
            limits = c.resources.limits
            needs_requests = bool(limits) and any(k not in (c.resources.requests or {}) for k in limits or {})
            needs_host_ports = bool(spec.host_network) and any(not p.host_port for p in c.ports or ())
            if not (needs_requests or needs_host_ports):
                return c
            c = c.model_copy()
            if needs_requests:
                c.resources = c.resources.model_copy(
                    update={"requests": {**(limits or {}), **(c.resources.requests or {})}}
                )
            if needs_host_ports:
                c.ports = [
                    p if p.host_port else p.model_copy(update={"host_port": p.container_port})
                    for p in c.ports or ()
                ]
            return c

        spec.containers = [defaulted(c) for c in spec.containers]
        if spec.init_containers:
            spec.init_containers = [defaulted(c) for c in spec.init_containers]
        self.spec = spec
        return self


REGISTRY.register(KindInfo(
    group="", versions=("v1",), kind="Pod", plural="pods", singular="pod", model=Pod,
    short_names=("po",), categories=("all",),
))  # fmt: skip
