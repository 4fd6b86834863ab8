"""The networking.istio.io edge and registry kinds: Gateway, ServiceEntry, WorkloadEntry, Sidecar.

What lives here: ``Gateway``, ``ServiceEntry``, ``WorkloadEntry`` and
``Sidecar``, the checks Istio's validating webhook applies to them
(``pkg/config/validation``) with Istio's messages, and their registration.
Importing this module registers every networking.istio.io kind meshwork
knows: it imports ``istio_routing`` (VirtualService) and ``istio_traffic``
(DestinationRule). All are served at ``v1``, ``v1beta1`` and ``v1alpha3``
(identical schemas) and stored at ``v1``.

What must not: listeners, registries or any other use of these objects
(``meshwork.core``, ``meshwork.proxy``), and defaults: Istio stores what the
user wrote.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import (
    DUPLICATE,
    FORBIDDEN,
    HTTP_PROTOCOLS,
    REQUIRED,
    TLS_PROTOCOLS,
    Destination,
    IstioStatus,
    LabelsSelector,
    Loc,
    NetworkingApiVersion,
    Problems,
    UInt32,
    export_to_errors,
    fqdn_error,
    ip_or_cidr_error,
    is_dns_label,
    is_ip,
    label_map_errors,
    namespace_host_error,
    port_error,
    protocol_error,
    q,
    register_istio,
    wildcard_domain_error,
)
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import (
    ConnectionPoolSettings,
    DestinationRule,
    ServerTLSSettings,
    server_tls_errors,
)

UNIX_PREFIX = "unix://"  # Istio UnixAddressPrefix


# ---------------------------------------------------------------------------
# Gateway
# ---------------------------------------------------------------------------


class Port(Model):
    """A port a gateway server listens on."""

    number: UInt32
    protocol: str
    name: str
    target_port: UInt32 | None = None


class Server(Model):
    """One listener of a gateway: port, hosts and TLS."""

    port: Port
    bind: str | None = None
    hosts: list[str] | None = None
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``validateServer``."""
        problems = Problems("Server")
        if not self.hosts:
            problems.add(
                ("hosts",), "server config must contain at least one host", reason=REQUIRED
            )
        for i, host in enumerate(self.hosts or []):
            if err := namespace_host_error(host):
                problems.add(("hosts", i), err, host)
        unix = (self.bind or "").startswith(UNIX_PREFIX)
        if self.port.number or not unix:
            if err := port_error(self.port.number):
                problems.add(("port", "number"), err, self.port.number)
        if self.port.target_port:
            problems.add(
                ("port", "targetPort"), "targetPort has no impact on Gateways", reason=FORBIDDEN
            )
        if not self.port.name:
            problems.add(("port", "name"), "port name must be set", reason=REQUIRED)
        if self.bind and not unix and not is_ip(self.bind):
            problems.add(("bind",), f"{self.bind} is not a valid IP", self.bind)
        proto_err = protocol_error(self.port.protocol)
        if proto_err:
            problems.add(("port", "protocol"), proto_err, self.port.protocol)
        else:
            protocol = self.port.protocol.upper()
            is_tls = protocol in TLS_PROTOCOLS
            if is_tls and self.tls is None:
                problems.add(
                    ("tls",),
                    "server must have TLS settings for HTTPS/TLS protocols",
                    reason=REQUIRED,
                )
            elif not is_tls and self.tls is not None:
                tls = self.tls
                passthrough = tls.mode in (None, "PASSTHROUGH", "AUTO_PASSTHROUGH")
                if protocol not in HTTP_PROTOCOLS:
                    problems.add(
                        ("tls",),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                        reason=FORBIDDEN,
                    )
                elif (
                    not passthrough
                    or tls.ca_certificates
                    or tls.private_key
                    or tls.server_certificate
                ):
                    problems.add(
                        ("tls",),
                        "server cannot have TLS settings for plain text HTTP ports",
                        reason=FORBIDDEN,
                    )
        if self.tls is not None:
            problems.extend(("tls",), server_tls_errors(self.tls))
        problems.raise_if_any()
        return self


class GatewaySpec(Model):
    """The listeners a set of gateway pods opens."""

    servers: list[Server] | None = None
    selector: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("Gateway")
        if not self.servers:
            problems.add(("servers",), "gateway must have at least one server", reason=REQUIRED)
        names: set[str] = set()
        for i, server in enumerate(self.servers or []):
            if server.port.name in names:
                problems.add(
                    ("servers", i, "port", "name"),
                    f"port names in servers must be unique: duplicate name {server.port.name}",
                    server.port.name,
                    DUPLICATE,
                )
            names.add(server.port.name)
        problems.raise_if_any()
        return self


class Gateway(Resource):
    """A load balancer at the edge of the mesh (networking.istio.io Gateway)."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec
    status: IstioStatus | None = None


# ---------------------------------------------------------------------------
# ServiceEntry and WorkloadEntry
# ---------------------------------------------------------------------------


class WorkloadEntrySpec(Model):
    """A non-Kubernetes workload: an address, named ports and labels."""

    address: str | None = None
    ports: dict[str, UInt32] | None = None
    labels: dict[str, str] | None = None
    network: str | None = None
    locality: str | None = None
    weight: UInt32 | None = None
    service_account: str | None = None

    def entry_errors(
        self, service_ports: set[str] | None, *, allow_fqdn: bool
    ) -> list[tuple[Loc, str]]:
        """Istio ``validateWorkloadEntry``."""
        errors: list[tuple[Loc, str]] = []
        address = self.address or ""
        if not address and not self.network:
            errors.append((("address",), "address is required"))
        if address.startswith(UNIX_PREFIX):
            path = address.removeprefix(UNIX_PREFIX)
            if not path.startswith("@") and (not path.startswith("/") or path.endswith("/")):
                errors.append((("address",), f"{path} is not an absolute path to a file"))
            if self.ports:
                errors.append((("ports",), f"unix endpoint {address} must not include ports"))
        elif address and not is_ip(address):
            if not allow_fqdn:
                errors.append(
                    (("address",), f"endpoint address {q(address)} is not a valid IP address")
                )
            elif fqdn_error(address):
                errors.append(
                    (
                        ("address",),
                        f"endpoint address {q(address)} is not a valid FQDN or an IP address",
                    )
                )
        for name, number in (self.ports or {}).items():
            if service_ports is not None and name not in service_ports:
                errors.append(
                    (("ports", name), f"endpoint port {number} is not defined by the service entry")
                )
            if not is_dns_label(name):
                errors.append((("ports", name), f"invalid port name: {name}"))
            if err := port_error(number):
                errors.append((("ports", name), err))
        errors += [(("labels", *loc), msg) for loc, msg in label_map_errors(self.labels)]
        return errors


class WorkloadEntry(Resource):
    """A VM or other non-Kubernetes workload in the mesh."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["WorkloadEntry"] = "WorkloadEntry"
    spec: WorkloadEntrySpec
    status: IstioStatus | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("WorkloadEntry")
        problems.extend(("spec",), self.spec.entry_errors(None, allow_fqdn=True))
        problems.raise_if_any()
        return self


class ServicePort(Model):
    """A port of a ServiceEntry."""

    number: UInt32
    protocol: str | None = None
    name: str
    target_port: UInt32 | None = None


Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]


class ServiceEntrySpec(Model):
    """A service added to the mesh's registry (often one outside the cluster)."""

    hosts: list[str]
    addresses: list[str] | None = None
    ports: list[ServicePort] | None = None
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Resolution | None = None
    endpoints: list[WorkloadEntrySpec] | None = None
    workload_selector: LabelsSelector | None = None
    export_to: list[str] | None = None
    subject_alt_names: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``ValidateServiceEntry``."""
        problems = Problems("ServiceEntry")
        resolution = self.resolution or "NONE"
        if self.workload_selector is not None and self.endpoints is not None:
            problems.add(
                ("workloadSelector",),
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                reason=FORBIDDEN,
            )
        if not self.hosts:
            problems.add(("hosts",), "service entry must have at least one host", reason=REQUIRED)
        for i, host in enumerate(self.hosts):
            err = f"invalid host {host}" if host == "*" else wildcard_domain_error(host)
            if err:
                problems.add(("hosts", i), err, host)
        for i, address in enumerate(self.addresses or []):
            if err := ip_or_cidr_error(address):
                problems.add(("addresses", i), err, address)
        if any("/" in a for a in self.addresses or []) and resolution not in ("NONE", "STATIC"):
            problems.add(
                ("addresses",), "CIDR addresses are allowed only for NONE/STATIC resolution types"
            )
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(self.ports or []):
            if port.name in names:
                problems.add(
                    ("ports", i, "name"),
                    f"service entry port name {q(port.name)} already defined",
                    port.name,
                    DUPLICATE,
                )
            if port.number in numbers:
                problems.add(
                    ("ports", i, "number"),
                    f"service entry port {port.number} already defined",
                    port.number,
                    DUPLICATE,
                )
            names.add(port.name)
            numbers.add(port.number)
            if not is_dns_label(port.name):
                problems.add(("ports", i, "name"), f"invalid port name: {port.name}", port.name)
            if port.protocol and (err := protocol_error(port.protocol)):
                problems.add(("ports", i, "protocol"), err, port.protocol)
            for field, number in (
                ("number", port.number),
                ("targetPort", port.target_port or None),
            ):
                if number is not None and (err := port_error(number)):
                    problems.add(("ports", i, field), err, number)
        if resolution == "NONE" and self.endpoints:
            problems.add(
                ("endpoints",),
                "no endpoints should be provided for resolution type none",
                reason=FORBIDDEN,
            )
        if resolution == "DNS_ROUND_ROBIN" and len(self.endpoints or []) > 1:
            problems.add(
                ("endpoints",),
                f"there must only be 0 or 1 endpoint for resolution mode {resolution}",
            )
        if resolution in ("DNS", "DNS_ROUND_ROBIN") and not self.endpoints:
            for i, host in enumerate(self.hosts):
                if fqdn_error(host):
                    problems.add(
                        ("hosts", i),
                        f"hosts must be FQDN if no endpoints are provided for resolution mode {resolution}",
                        host,
                    )
        for i, endpoint in enumerate(self.endpoints or []):
            problems.extend(
                ("endpoints", i), endpoint.entry_errors(names, allow_fqdn=resolution != "STATIC")
            )
        if resolution != "NONE" and len(self.hosts) > 1:
            for port in self.ports or []:
                protocol = (port.protocol or "").upper()
                if protocol not in HTTP_PROTOCOLS | TLS_PROTOCOLS:
                    problems.add(("hosts",), "multiple hosts provided with non-HTTP, non-TLS ports")
                    break
        for message in export_to_errors(self.export_to, service_entry=True):
            problems.add(("exportTo",), message, self.export_to)
        problems.raise_if_any()
        return self


class ServiceEntry(Resource):
    """Adds a service to the mesh's registry (networking.istio.io ServiceEntry)."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    spec: ServiceEntrySpec
    status: IstioStatus | None = None


# ---------------------------------------------------------------------------
# Sidecar
# ---------------------------------------------------------------------------


class SidecarPort(Model):
    """A port of a sidecar listener (number 0 with a unix bind means a socket)."""

    number: UInt32 | None = None
    protocol: str | None = None
    name: str | None = None
    target_port: UInt32 | None = None


CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class IstioIngressListener(Model):
    """An inbound listener of the sidecar."""

    port: SidecarPort
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(Model):
    """An outbound listener of the sidecar and the hosts it can reach."""

    port: SidecarPort | None = None
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    hosts: list[str]


class OutboundTrafficPolicy(Model):
    """Whether traffic to hosts outside the registry is allowed."""

    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] | None = None
    egress_proxy: Destination | None = None


class SidecarSpec(Model):
    """The ingress and egress a workload's sidecar sets up."""

    workload_selector: LabelsSelector | None = None
    ingress: list[IstioIngressListener] | None = None
    egress: list[IstioEgressListener] | None = None
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """The structural part of Istio ``ValidateSidecar``."""
        problems = Problems("Sidecar")
        if not (
            self.ingress
            or self.egress
            or self.outbound_traffic_policy
            or self.inbound_connection_pool
        ):
            problems.add((), "sidecar: empty configuration provided", reason=REQUIRED)
        for i, listener in enumerate(self.ingress or []):
            if err := port_error(listener.port.number or 0):
                problems.add(("ingress", i, "port", "number"), err, listener.port.number)
        for i, egress in enumerate(self.egress or []):
            if egress.port is None and i != len(self.egress or []) - 1:
                problems.add(
                    ("egress", i, "port"),
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                    reason=REQUIRED,
                )
            if not egress.hosts:
                problems.add(
                    ("egress", i, "hosts"),
                    "sidecar: egress listener must contain at least one host",
                    reason=REQUIRED,
                )
            for j, host in enumerate(egress.hosts):
                if "/" not in host:
                    problems.add(
                        ("egress", i, "hosts", j),
                        f"sidecar: host must be of form namespace/dnsName, got {q(host)}",
                        host,
                    )
                elif err := namespace_host_error(host):
                    problems.add(("egress", i, "hosts", j), err, host)
        policy = self.outbound_traffic_policy
        if policy is not None and policy.egress_proxy is not None and policy.mode != "ALLOW_ANY":
            problems.add(
                ("outboundTrafficPolicy", "egressProxy"),
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                reason=FORBIDDEN,
            )
        problems.raise_if_any()
        return self


class Sidecar(Resource):
    """Scopes what a workload's sidecar listens to and can reach."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["Sidecar"] = "Sidecar"
    spec: SidecarSpec
    status: IstioStatus | None = None


register_istio(
    Gateway, "gateways", ("gw",), name_rule="label"
)  # Istio: gateway names are DNS labels
register_istio(ServiceEntry, "serviceentries", ("se",))
register_istio(WorkloadEntry, "workloadentries", ("we",))
register_istio(Sidecar, "sidecars")

__all__ = [
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "Sidecar",
    "VirtualService",
    "WorkloadEntry",
]
