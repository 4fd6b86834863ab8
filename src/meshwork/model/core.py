"""Core (v1) kinds other than Pod: Namespace, Node, Service, Endpoints, ServiceAccount, ConfigMap, Secret, Event; and PriorityClass (scheduling.k8s.io/v1).

What lives here: their models, upstream defaulting (``SetDefaults_Service``,
``SetDefaults_Secret``, ``SetDefaults_NodeStatus`` ...) and the field checks
the API server makes on them (Service ports, ConfigMap/Secret keys and sizes,
Secret types). The Secret's ``stringData`` is folded into ``data`` here, as
the API server does on write.

What must not: IP allocation (clusterIP, nodePort), endpoint computation,
or anything that reads another object. Pod types live in ``meshwork.model.pod``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshwork.model.base import (
    REGISTRY,
    IntOrString,
    KindInfo,
    Model,
    Quantity,
    Resource,
    dns1123_label_error,
    dns1123_subdomain_error,
)
from meshwork.model.pod import (
    Loc,
    LocalObjectReference,
    ObjectReference,
    TaintEffect,
    check_quantities,
    fail_at,
    port_error,
)

CONFIG_MAX_BYTES = 1024 * 1024  # core.MaxSecretSize: ConfigMaps and Secrets hold at most 1 MiB
CONFIG_KEY_MAX = 253  # upstream IsConfigMapKey: a key is at most a DNS subdomain long
SESSION_AFFINITY_DEFAULT_SECONDS = 10800  # v1.DefaultClientIPServiceAffinitySeconds (3 h)
SESSION_AFFINITY_MAX_SECONDS = 86400  # upstream MaxClientIPServiceAffinitySeconds (1 day)
USER_PRIORITY_MAX = 1_000_000_000  # scheduling.HighestUserDefinablePriority
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

Protocol = Literal["TCP", "UDP", "SCTP"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """The standard metav1.Condition."""

    type: str
    status: ConditionStatus
    observed_generation: int | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


def config_key_error(key: str) -> str | None:
    """Why ``key`` cannot be a ConfigMap or Secret key (upstream IsConfigMapKey), or None."""
    if len(key) > CONFIG_KEY_MAX:
        return f"must be no more than {CONFIG_KEY_MAX} characters"
    if not _CONFIG_KEY.match(key):
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    if key in (".", ".."):
        return f"must not be '{key}'"
    return None


# ---------------------------------------------------------------------------
# Namespace
# ---------------------------------------------------------------------------


class NamespaceSpec(Model):
    """Finalizers that must run before the namespace is removed."""

    finalizers: list[str] | None = None


class NamespaceStatus(Model):
    """Active or Terminating."""

    phase: Literal["Active", "Terminating"] = "Active"
    conditions: list[Condition] | None = None


class Namespace(Resource):
    """A scope for names of namespaced objects (core/v1 Namespace)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    spec: NamespaceSpec | None = None
    status: NamespaceStatus = Field(default_factory=NamespaceStatus)

    @model_validator(mode="after")
    def _name_label(self) -> Self:
        # SetDefaults_Namespace: every named namespace carries its own name as a label.
        if self.metadata.name:
            self.metadata.labels = {**(self.metadata.labels or {}),
                                    "kubernetes.io/metadata.name": self.metadata.name}  # fmt: skip
        return self


# ---------------------------------------------------------------------------
# Node
# ---------------------------------------------------------------------------


class Taint(Model):
    """Repels pods that do not tolerate it."""

    key: str
    value: str | None = None
    effect: TaintEffect
    time_added: str | None = None


class NodeSpec(Model):
    """How the node is configured: pod CIDRs, taints, cordon."""

    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: list[str] | None = Field(default=None, alias="podCIDRs")
    provider_id: str | None = Field(default=None, alias="providerID")
    unschedulable: bool | None = None
    taints: list[Taint] | None = None
    config_source: dict[str, Any] | None = None
    external_id: str | None = Field(default=None, alias="externalID")


class NodeCondition(Model):
    """Ready, MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable."""

    type: str
    status: ConditionStatus
    last_heartbeat_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class NodeAddress(Model):
    """One address of the node (InternalIP, Hostname ...)."""

    type: str
    address: str


class DaemonEndpoint(Model):
    """A port a node daemon listens on (the wire name is capitalised upstream)."""

    port: int = Field(alias="Port")


class NodeDaemonEndpoints(Model):
    """Ports of the daemons on the node."""

    kubelet_endpoint: DaemonEndpoint | None = None


class NodeSwapStatus(Model):
    """Swap memory on the node."""

    capacity: int | None = None


class NodeSystemInfo(Model):
    """Identity and versions reported by the node agent."""

    machine_id: str = Field(alias="machineID")
    system_uuid: str = Field(alias="systemUUID")
    boot_id: str = Field(alias="bootID")
    kernel_version: str
    os_image: str
    container_runtime_version: str
    kubelet_version: str
    kube_proxy_version: str = ""
    operating_system: str
    architecture: str
    swap: NodeSwapStatus | None = None


class ContainerImage(Model):
    """An image present on the node."""

    names: list[str] | None = None
    size_bytes: int | None = None


class AttachedVolume(Model):
    """A volume attached to the node."""

    name: str
    device_path: str


class NodeRuntimeHandler(Model):
    """A runtime handler and its features."""

    name: str | None = None
    features: dict[str, bool] | None = None


class NodeStatus(Model):
    """Observed state of the node (``allocatable`` defaults to ``capacity``)."""

    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    phase: Literal["Pending", "Running", "Terminated"] | None = None
    conditions: list[NodeCondition] | None = None
    addresses: list[NodeAddress] | None = None
    daemon_endpoints: NodeDaemonEndpoints | None = None
    node_info: NodeSystemInfo | None = None
    images: list[ContainerImage] | None = None
    volumes_in_use: list[str] | None = None
    volumes_attached: list[AttachedVolume] | None = None
    config: dict[str, Any] | None = None
    runtime_handlers: list[NodeRuntimeHandler] | None = None
    features: dict[str, Any] | None = None

    @field_validator("capacity", "allocatable")
    @classmethod
    def _quantities(cls, value: dict[str, Quantity] | None) -> dict[str, Quantity] | None:
        return check_quantities(value)

    @model_validator(mode="after")
    def _allocatable(self) -> Self:
        if self.allocatable is None and self.capacity is not None:
            self.allocatable = dict(self.capacity)
        return self


class Node(Resource):
    """A machine (here: a node agent) that runs pods (core/v1 Node)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None


# ---------------------------------------------------------------------------
# Service
# ---------------------------------------------------------------------------


class ServicePort(Model):
    """A port the Service exposes and the pod port it forwards to."""

    name: str | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None
    port: int
    target_port: IntOrString | None = None
    node_port: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.target_port is None or self.target_port in (0, ""):
            self.target_port = self.port  # SetDefaults_Service
        errors: list[tuple[Loc, str, Any]] = []
        for field, value in (("port", self.port), ("targetPort", self.target_port)):
            err = port_error(value)
            if err:
                errors.append(((field,), err, value))
        if self.node_port is not None and self.node_port != 0:
            err = port_error(self.node_port, allow_name=False)
            if err:
                errors.append((("nodePort",), err, self.node_port))
        if self.name:
            err = dns1123_label_error(self.name)
            if err:
                errors.append((("name",), err, self.name))
        fail_at("ServicePort", errors)
        return self


class ClientIPConfig(Model):
    """How long ClientIP affinity sticks."""

    timeout_seconds: int | None = None


class SessionAffinityConfig(Model):
    """Settings of the session affinity."""

    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]


class ServiceSpec(Model):
    """A stable virtual address in front of the pods a selector picks."""

    ports: list[ServicePort] | None = None
    selector: dict[str, str] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    type: ServiceType = "ClusterIP"
    external_ips: list[str] | None = Field(default=None, alias="externalIPs")
    session_affinity: Literal["None", "ClientIP"] = "None"
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    external_name: str | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool | None = None
    session_affinity_config: SessionAffinityConfig | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] | None = None
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    allocate_load_balancer_node_ports: bool | None = None
    load_balancer_class: str | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    traffic_distribution: str | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        self._defaults()
        errors: list[tuple[Loc, str, Any]] = []
        ports = self.ports or []
        headless = self.cluster_ip == "None"
        if not ports and not headless and self.type != "ExternalName":
            errors.append((("ports",), "Required value", None))
        names: set[str] = set()
        seen: set[tuple[int, str]] = set()
        for i, port in enumerate(ports):
            if len(ports) > 1 and not port.name:
                errors.append((("ports", i, "name"), "Required value", port.name))
            elif port.name:
                if port.name in names:
                    errors.append((("ports", i, "name"), "Duplicate value", port.name))
                names.add(port.name)
            if (port.port, port.protocol) in seen:
                errors.append((("ports", i), "Duplicate value", f"{port.port}/{port.protocol}"))
            seen.add((port.port, port.protocol))
            if port.node_port and self.type in ("ClusterIP", "ExternalName"):
                errors.append((("ports", i, "nodePort"),
                               f"may not be used when `type` is '{self.type}'", port.node_port))  # fmt: skip
        if self.type == "ExternalName":
            err = dns1123_subdomain_error(self.external_name or "")
            if err:
                errors.append((("externalName",), err, self.external_name))
        if self.external_traffic_policy is not None and self.type not in ("NodePort", "LoadBalancer"):
            errors.append((("externalTrafficPolicy",),
                           "may only be set for externally-accessible services", self.external_traffic_policy))  # fmt: skip
        cfg = self.session_affinity_config
        timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
        if timeout is not None and not 0 < timeout <= SESSION_AFFINITY_MAX_SECONDS:
            errors.append((("sessionAffinityConfig", "clientIP", "timeoutSeconds"),
                           f"must be greater than 0 and less than {SESSION_AFFINITY_MAX_SECONDS}", timeout))  # fmt: skip
        fail_at("ServiceSpec", errors)
        return self

    def _defaults(self) -> None:
        if self.session_affinity == "None":
            self.session_affinity_config = None
        else:
            cfg = self.session_affinity_config
            if cfg is None or cfg.client_ip is None or cfg.client_ip.timeout_seconds is None:
                self.session_affinity_config = SessionAffinityConfig(
                    client_ip=ClientIPConfig(timeout_seconds=SESSION_AFFINITY_DEFAULT_SECONDS))
        external = self.type in ("NodePort", "LoadBalancer") or bool(self.external_ips)
        if external and self.external_traffic_policy is None:
            self.external_traffic_policy = "Cluster"
        if self.internal_traffic_policy is None and self.type != "ExternalName":
            self.internal_traffic_policy = "Cluster"
        if self.type == "LoadBalancer" and self.allocate_load_balancer_node_ports is None:
            self.allocate_load_balancer_node_ports = True


class PortStatus(Model):
    """The state of one load-balancer port."""

    port: int
    protocol: Protocol
    error: str | None = None


class LoadBalancerIngress(Model):
    """An address the load balancer answers on."""

    ip: str | None = None
    hostname: str | None = None
    ip_mode: Literal["VIP", "Proxy"] | None = None
    ports: list[PortStatus] | None = None


class LoadBalancerStatus(Model):
    """The load balancer's addresses."""

    ingress: list[LoadBalancerIngress] | None = None


class ServiceStatus(Model):
    """Observed state of the Service."""

    load_balancer: LoadBalancerStatus | None = None
    conditions: list[Condition] | None = None


class Service(Resource):
    """A named, load-balanced address for a set of pods (core/v1 Service)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec
    status: ServiceStatus | None = None

    @model_validator(mode="after")
    def _ip_mode(self) -> Self:
        if self.spec.type == "LoadBalancer" and self.status and self.status.load_balancer:
            for ing in self.status.load_balancer.ingress or ():
                if ing.ip and ing.ip_mode is None:
                    ing.ip_mode = "VIP"
        return self


# ---------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------


class EndpointAddress(Model):
    """One backend address and the pod behind it."""

    ip: str
    hostname: str | None = None
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointPort(Model):
    """A port of the backends."""

    name: str | None = None
    port: int
    protocol: Protocol = "TCP"
    app_protocol: str | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        err = port_error(port, allow_name=False)
        if err:
            raise ValueError(err)
        return port


class EndpointSubset(Model):
    """Addresses that all share the same ports."""

    addresses: list[EndpointAddress] | None = None
    not_ready_addresses: list[EndpointAddress] | None = None
    ports: list[EndpointPort] | None = None


class Endpoints(Resource):
    """The ready and not-ready backends of a Service (core/v1 Endpoints)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Endpoints"] = "Endpoints"
    subsets: list[EndpointSubset] | None = None


# ---------------------------------------------------------------------------
# ServiceAccount, ConfigMap, Secret
# ---------------------------------------------------------------------------


class ServiceAccount(Resource):
    """An identity for processes in pods (core/v1 ServiceAccount)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    secrets: list[ObjectReference] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    automount_service_account_token: bool | None = None


def _check_config_keys(
    maps: dict[str, dict[str, str] | None], *, base64_fields: frozenset[str] = frozenset()
) -> list[tuple[Loc, str, Any]]:
    """Keys valid and unique across ``maps``; total payload (decoded bytes) within the cap."""
    errors: list[tuple[Loc, str, Any]] = []
    seen: set[str] = set()
    total = 0
    for field, data in maps.items():
        for key, value in (data or {}).items():
            err = config_key_error(key)
            if err:
                errors.append(((field, key), err, key))
            elif key in seen:
                errors.append(((field, key), "duplicate of key present in another map", key))
            seen.add(key)
            total += _b64_size(value) if field in base64_fields else len(value.encode())
    if total > CONFIG_MAX_BYTES:
        errors.append(((), f"may not be more than {CONFIG_MAX_BYTES} bytes", total))
    return errors


class ConfigMap(Resource):
    """Non-secret configuration as key/value pairs (core/v1 ConfigMap)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        errors = _check_config_keys({"data": self.data, "binaryData": self.binary_data},
                                    base64_fields=frozenset({"binaryData"}))  # fmt: skip
        for key, value in (self.binary_data or {}).items():
            if _b64_error(value):
                errors.append((("binaryData", key), "illegal base64 data", value))
        fail_at("ConfigMap", errors)
        return self


def _b64_size(value: str) -> int:
    """Decoded length of well-formed base64 text, without decoding it."""
    return len(value) * 3 // 4 - value[-2:].count("=")


def _b64_error(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return True
    return False


# Keys each well-known Secret type must carry (upstream ValidateSecret).
_SECRET_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


class Secret(Resource):
    """Sensitive data as base64 key/value pairs (core/v1 Secret).

    ``stringData`` is write-only: on validation it is base64-encoded into
    ``data`` (overriding keys already there) and dropped, as the API server does.
    """

    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    type: str = "Opaque"
    immutable: bool | None = None

    @model_validator(mode="after")
    def _merge_and_check(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        for key, value in (self.data or {}).items():
            if _b64_error(value):
                errors.append((("data", key), "illegal base64 data", value))
        errors += _check_config_keys({"data": self.data}, base64_fields=frozenset({"data"}))
        for key in self.string_data or {}:
            err = config_key_error(key)
            if err:
                errors.append((("stringData", key), err, key))
        fail_at("Secret", errors)
        if self.string_data is not None:
            merged = dict(self.data or {})
            for key, value in self.string_data.items():
                merged[key] = base64.b64encode(value.encode()).decode("ascii")
            self.data, self.string_data = merged, None
            fail_at("Secret", _check_config_keys({"data": self.data}, base64_fields=frozenset({"data"})))
        keys = self.data or {}
        for key in _SECRET_REQUIRED_KEYS.get(self.type, ()):
            if key not in keys:
                errors.append((("data", key), "Required value", None))
        if self.type == "kubernetes.io/basic-auth" and not {"username", "password"} & keys.keys():
            errors.append((("data",), "must contain at least one of username or password", None))
        if self.type == "kubernetes.io/service-account-token" and \
                not (self.metadata.annotations or {}).get("kubernetes.io/service-account.name"):  # fmt: skip
            errors.append((("metadata", "annotations", "kubernetes.io/service-account.name"),
                           "Required value", None))  # fmt: skip
        fail_at("Secret", errors)
        return self

    def decoded(self) -> dict[str, bytes]:
        """The secret's values as bytes."""
        return {k: base64.b64decode(v) for k, v in (self.data or {}).items()}


# ---------------------------------------------------------------------------
# Event, PriorityClass
# ---------------------------------------------------------------------------


class EventSource(Model):
    """The component (and host) that reported an event."""

    component: str | None = None
    host: str | None = None


class EventSeries(Model):
    """A run of repeated events."""

    count: int | None = None
    last_observed_time: str | None = None


class Event(Resource):
    """A report of something that happened to an object (core/v1 Event)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Event"] = "Event"
    involved_object: ObjectReference
    reason: str | None = None
    message: str | None = None
    source: EventSource | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int | None = None
    type: Literal["Normal", "Warning"] | None = None
    event_time: str | None = None
    series: EventSeries | None = None
    action: str | None = None
    related: ObjectReference | None = None
    reporting_component: str | None = None
    reporting_instance: str | None = None


class PriorityClass(Resource):
    """Maps a name to a scheduling priority (scheduling.k8s.io/v1 PriorityClass)."""

    api_version: Literal["scheduling.k8s.io/v1"] = "scheduling.k8s.io/v1"
    kind: Literal["PriorityClass"] = "PriorityClass"
    value: int
    global_default: bool | None = None
    description: str | None = None
    preemption_policy: Literal["PreemptLowerPriority", "Never"] = "PreemptLowerPriority"

    @model_validator(mode="after")
    def _check(self) -> Self:
        system = (self.metadata.name or "").startswith("system-")
        if not system and self.value > USER_PRIORITY_MAX:
            fail_at("PriorityClass", [(("value",), "maximum allowed value of a user defined "
                                       f"priority is {USER_PRIORITY_MAX}", self.value)])  # fmt: skip
        return self


def _register() -> None:
    core: list[tuple[str, str, type[Resource], tuple[str, ...], dict[str, Any]]] = [
        ("Namespace", "namespaces", Namespace, ("ns",), {"namespaced": False, "name_rule": "label"}),
        ("Node", "nodes", Node, ("no",), {"namespaced": False}),
        ("Service", "services", Service, ("svc",), {"name_rule": "label", "categories": ("all",)}),
        ("Endpoints", "endpoints", Endpoints, ("ep",), {"has_status": False}),
        ("ServiceAccount", "serviceaccounts", ServiceAccount, ("sa",), {"has_status": False}),
        ("ConfigMap", "configmaps", ConfigMap, ("cm",), {"has_status": False}),
        ("Secret", "secrets", Secret, (), {"has_status": False}),
        ("Event", "events", Event, ("ev",), {"has_status": False}),
    ]
    for kind, plural, model, short, extra in core:
        REGISTRY.register(KindInfo(group="", versions=("v1",), kind=kind, plural=plural,
                                   singular=kind.lower(), model=model, short_names=short, **extra))  # fmt: skip
    REGISTRY.register(KindInfo(
        group="scheduling.k8s.io", versions=("v1",), kind="PriorityClass", plural="priorityclasses",
        singular="priorityclass", model=PriorityClass, namespaced=False, short_names=("pc",),
        has_status=False,
    ))  # fmt: skip


_register()
