"""Containers (core/v1): env, ports, probes, lifecycle hooks, resources, security contexts, volume mounts.

What lives here: ``Container`` and everything it is made of, with upstream
defaulting (``SetDefaults_Container``, ``SetDefaults_Probe``,
``SetDefaults_HTTPGetAction``, ``SetDefaults_ObjectFieldSelector``) and the
per-container checks (name, ports, probe handlers and timings).

What must not: checks that need the whole pod (unique names, volume mounts
that refer to pod volumes); those live on ``PodSpec`` in ``meshwork.model.pod``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshwork.model.base import IntOrString, Model, Quantity, dns1123_label_error
from meshwork.model.corev1 import (
    Loc,
    check_quantities,
    exactly_one,
    fail_at,
    iana_svc_name_error,
    parse_quantity,
    port_error,
    wire_name,
)

# ---------------------------------------------------------------------------
# Env
# ---------------------------------------------------------------------------


class ObjectFieldSelector(Model):
    """Selects a field of the pod (``metadata.name``, ``status.podIP`` ...)."""

    api_version: str = "v1"
    field_path: str


class ResourceFieldSelector(Model):
    """Selects a container's resource (``limits.cpu``), scaled by ``divisor``."""

    container_name: str | None = None
    resource: str
    divisor: Quantity | None = None


class ConfigMapKeySelector(Model):
    """One key of a ConfigMap."""

    name: str | None = None
    key: str
    optional: bool | None = None


class SecretKeySelector(Model):
    """One key of a Secret."""

    name: str | None = None
    key: str
    optional: bool | None = None


class EnvVarSource(Model):
    """Where an env var's value comes from (exactly one source)."""

    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        names = ("field_ref", "resource_field_ref", "config_map_key_ref", "secret_key_ref")
        present = [n for n in names if getattr(self, n) is not None]
        if len(present) != 1:
            raise ValueError("must have exactly one of fieldRef, resourceFieldRef, "
                             "configMapKeyRef or secretKeyRef")  # fmt: skip
        return self


class EnvVar(Model):
    """An environment variable: a literal ``value`` or a ``valueFrom`` source."""

    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.name or "=" in self.name:
            raise ValueError("name: must be non-empty and may not contain '='")
        if self.value and self.value_from is not None:
            raise ValueError("valueFrom: may not be specified when `value` is not empty")
        return self


class ConfigMapEnvSource(Model):
    """All keys of a ConfigMap as env vars."""

    name: str | None = None
    optional: bool | None = None


class SecretEnvSource(Model):
    """All keys of a Secret as env vars."""

    name: str | None = None
    optional: bool | None = None


class EnvFromSource(Model):
    """A ConfigMap or Secret whose keys become env vars, with an optional prefix."""

    prefix: str | None = None
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("must specify one of: `configMapRef` or `secretRef`")
        return self


# ---------------------------------------------------------------------------
# Ports, probes, lifecycle
# ---------------------------------------------------------------------------

Protocol = Literal["TCP", "UDP", "SCTP"]


class ContainerPort(Model):
    """A port the container listens on."""

    name: str | None = None
    host_port: int | None = None
    container_port: int
    protocol: Protocol = "TCP"
    host_ip: str | None = Field(default=None, alias="hostIP")

    @model_validator(mode="after")
    def _check(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        err = port_error(self.container_port, allow_name=False)
        if err:
            errors.append((("containerPort",), err, self.container_port))
        if self.host_port is not None and self.host_port != 0:
            err = port_error(self.host_port, allow_name=False)
            if err:
                errors.append((("hostPort",), err, self.host_port))
        if self.name is not None:
            err = iana_svc_name_error(self.name)
            if err:
                errors.append((("name",), err, self.name))
        fail_at("ContainerPort", errors)
        return self


class ExecAction(Model):
    """Run a command in the container; exit status 0 is success."""

    command: list[str] | None = None


class HTTPHeader(Model):
    """A header sent with an HTTP probe."""

    name: str
    value: str


class HTTPGetAction(Model):
    """An HTTP GET against the pod; 200-399 is success."""

    path: str = "/"
    port: IntOrString
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, port: IntOrString) -> IntOrString:
        err = port_error(port)
        if err:
            raise ValueError(err)
        return port


class TCPSocketAction(Model):
    """A TCP connect to the pod; an open connection is success."""

    port: IntOrString
    host: str | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, port: IntOrString) -> IntOrString:
        err = port_error(port)
        if err:
            raise ValueError(err)
        return port


class GRPCAction(Model):
    """A gRPC health check (grpc.health.v1) against a numbered port."""

    port: int
    service: str = ""

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        err = port_error(port, allow_name=False)
        if err:
            raise ValueError(err)
        return port


class SleepAction(Model):
    """Sleep for a number of seconds (a lifecycle hook)."""

    seconds: int


class LifecycleHandler(Model):
    """A postStart or preStop hook: exactly one of exec, httpGet, tcpSocket, sleep."""

    exec_: ExecAction | None = Field(default=None, alias="exec")
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    sleep: SleepAction | None = None

    @model_validator(mode="after")
    def _one_handler(self) -> Self:
        exactly_one(self, ("exec_", "http_get", "tcp_socket", "sleep"), "handler")
        return self


class Lifecycle(Model):
    """Hooks the node agent runs after start and before stop."""

    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


class Probe(Model):
    """A health check with its timing (defaults as in ``SetDefaults_Probe``)."""

    exec_: ExecAction | None = Field(default=None, alias="exec")
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int | None = None
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        exactly_one(self, ("exec_", "http_get", "tcp_socket", "grpc"), "handler")
        errors: list[tuple[Loc, str, Any]] = []
        for name in ("timeout_seconds", "period_seconds", "success_threshold",
                     "failure_threshold"):  # fmt: skip
            if getattr(self, name) < 1:
                errors.append(((wire_name(name),), "must be greater than 0", getattr(self, name)))
        if self.initial_delay_seconds is not None and self.initial_delay_seconds < 0:
            errors.append((("initialDelaySeconds",), "must be greater than or equal to 0",
                           self.initial_delay_seconds))  # fmt: skip
        fail_at("Probe", errors)
        return self


# ---------------------------------------------------------------------------
# Resources and security
# ---------------------------------------------------------------------------


class ResourceClaim(Model):
    """A reference to one of the pod's ``resourceClaims``."""

    name: str
    request: str | None = None


class ResourceRequirements(Model):
    """Compute requests and limits as quantities (``cpu: 500m``, ``memory: 64Mi``)."""

    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None
    claims: list[ResourceClaim] | None = None

    @field_validator("limits", "requests")
    @classmethod
    def _quantities(cls, value: dict[str, Quantity] | None) -> dict[str, Quantity] | None:
        return check_quantities(value)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                fail_at("ResourceRequirements", [(("requests", name),
                        f"must be less than or equal to {name} limit of {limit}", request)])  # fmt: skip
        return self


class ContainerResizePolicy(Model):
    """Whether resizing a resource needs a container restart."""

    resource_name: str
    restart_policy: Literal["NotRequired", "RestartContainer"]


class Capabilities(Model):
    """POSIX capabilities to add and drop."""

    add: list[str] | None = None
    drop: list[str] | None = None


class SELinuxOptions(Model):
    """SELinux labels for a container or pod."""

    user: str | None = None
    role: str | None = None
    type: str | None = None
    level: str | None = None


class WindowsSecurityContextOptions(Model):
    """Windows-specific security options."""

    gmsa_credential_spec_name: str | None = None
    gmsa_credential_spec: str | None = None
    run_as_user_name: str | None = None
    host_process: bool | None = None


class SeccompProfile(Model):
    """Which seccomp profile applies."""

    type: Literal["RuntimeDefault", "Unconfined", "Localhost"]
    localhost_profile: str | None = None


class AppArmorProfile(Model):
    """Which AppArmor profile applies."""

    type: Literal["RuntimeDefault", "Unconfined", "Localhost"]
    localhost_profile: str | None = None


class SecurityContext(Model):
    """Container-level security settings (override the pod's)."""

    capabilities: Capabilities | None = None
    privileged: bool | None = None
    se_linux_options: SELinuxOptions | None = None
    windows_options: WindowsSecurityContextOptions | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    allow_privilege_escalation: bool | None = None
    proc_mount: Literal["Default", "Unmasked"] | None = None
    seccomp_profile: SeccompProfile | None = None
    app_armor_profile: AppArmorProfile | None = None


class Sysctl(Model):
    """A namespaced kernel parameter set for the pod."""

    name: str
    value: str


class PodSecurityContext(Model):
    """Pod-level security settings; ``{}`` by default."""

    se_linux_options: SELinuxOptions | None = None
    windows_options: WindowsSecurityContextOptions | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    supplemental_groups: list[int] | None = None
    supplemental_groups_policy: Literal["Merge", "Strict"] | None = None
    fs_group: int | None = None
    sysctls: list[Sysctl] | None = None
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    seccomp_profile: SeccompProfile | None = None
    app_armor_profile: AppArmorProfile | None = None
    se_linux_change_policy: Literal["MountOption", "Recursive"] | None = None


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


class VolumeMount(Model):
    """Where a pod volume appears inside a container."""

    name: str
    mount_path: str
    read_only: bool | None = None
    recursive_read_only: Literal["Disabled", "IfPossible", "Enabled"] | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None
    mount_propagation: Literal["None", "HostToContainer", "Bidirectional"] | None = None


class VolumeDevice(Model):
    """A raw block device mapped into a container."""

    name: str
    device_path: str


def default_pull_policy(image: str | None) -> Literal["Always", "IfNotPresent"]:
    """``Always`` when the tag is ``latest`` or absent (and no digest), else ``IfNotPresent``."""
    if not image:
        return "Always"
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


class Container(Model):
    """One process of a pod: image or command, env, ports, probes, resources."""

    name: str
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[EnvFromSource] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    resize_policy: list[ContainerResizePolicy] | None = None
    restart_policy: Literal["Always"] | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_devices: list[VolumeDevice] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Lifecycle | None = None
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] = "File"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    security_context: SecurityContext | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        if self.image_pull_policy is None:
            self.image_pull_policy = default_pull_policy(self.image)
        errors: list[tuple[Loc, str, Any]] = []
        err = dns1123_label_error(self.name)
        if err:
            errors.append((("name",), err, self.name))
        # Port names are unique within a container. A repeated containerPort is only a
        # warning upstream (pkg/api/pod/warnings.go), so it is accepted here.
        names: set[str] = set()
        for i, port in enumerate(self.ports or ()):
            if port.name:
                if port.name in names:
                    errors.append((("ports", i, "name"), "Duplicate value", port.name))
                names.add(port.name)
        for probe_name in ("liveness_probe", "startup_probe"):
            probe: Probe | None = getattr(self, probe_name)
            if probe is not None and probe.success_threshold != 1:
                errors.append(((wire_name(probe_name), "successThreshold"), "must be 1",
                               probe.success_threshold))  # fmt: skip
        if self.readiness_probe is not None and \
                self.readiness_probe.termination_grace_period_seconds is not None:  # fmt: skip
            errors.append((("readinessProbe", "terminationGracePeriodSeconds"),
                           "must not be set for readinessProbes",
                           self.readiness_probe.termination_grace_period_seconds))  # fmt: skip
        fail_at("Container", errors)
        return self
