"""The DestinationRule kind and the traffic and TLS settings Istio kinds share.

What lives here: ``DestinationRule`` (subsets and traffic policy: load
balancing, connection pools, outlier detection, client TLS, per-port
settings, tunnel, PROXY protocol, retry budget), ``ServerTLSSettings`` (used
by Gateway servers and Sidecar ingress listeners) and the checks Istio's
webhook applies to them, with Istio's messages. Served at ``v1``,
``v1beta1`` and ``v1alpha3``, stored at ``v1``.

What must not: load balancing, ejection or TLS itself (``meshwork.core`` and
the proxy), and defaults: Istio stores what the user wrote.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import (
    DUPLICATE,
    FORBIDDEN,
    REQUIRED,
    Duration,
    Int32,
    IstioStatus,
    Loc,
    MinDuration,
    NetworkingApiVersion,
    PortSelector,
    Problems,
    UInt32,
    UInt64,
    WorkloadSelector,
    export_to_errors,
    fqdn_error,
    is_ip,
    label_map_errors,
    port_error,
    register_istio,
    subset_name_error,
    wildcard_domain_error,
)

MAGLEV_TABLE_MAX = 5000011  # Envoy/Istio: the Maglev table size must be a prime below this
PORT_LEVEL_SETTINGS_MAX = 4096  # Istio CRD: +kubebuilder:validation:MaxItems=4096
PERCENT_MAX = 100


# ---------------------------------------------------------------------------
# Load balancing
# ---------------------------------------------------------------------------


class HTTPCookie(Model):
    """A cookie used as the consistent-hash key (generated when ``ttl`` is set)."""

    name: str
    path: str | None = None
    ttl: Duration | None = None  # upstream: duration-validation:none ("0s" = session cookie)


class RingHash(Model):
    minimum_ring_size: UInt64 | None = None


class MagLev(Model):
    table_size: UInt64 | None = None


class ConsistentHashLB(Model):
    """Soft session affinity: one hash key and at most one hash algorithm."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: UInt64 | None = None  # deprecated upstream: use ringHash


class LocalityDistribute(Model):
    """Weights of traffic from one locality to others."""

    from_: str | None = Field(default=None, alias="from")
    to: dict[str, UInt32] | None = None


class LocalityFailover(Model):
    """The region traffic fails over to when a region is unhealthy."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLoadBalancerSetting(Model):
    """Locality-weighted load balancing or failover."""

    distribute: list[LocalityDistribute] | None = None
    failover: list[LocalityFailover] | None = None
    failover_priority: list[str] | None = None
    enabled: bool | None = None


class WarmupConfiguration(Model):
    """Slow start: new endpoints receive progressively more traffic."""

    duration: MinDuration
    minimum_percent: float | None = Field(default=None, ge=0, le=100)
    aggression: float | None = Field(default=None, ge=0)


class LoadBalancerSettings(Model):
    """A simple algorithm or a consistent hash, plus locality and warmup settings."""

    simple: (
        Literal[
            "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
        ]
        | None
    ) = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: MinDuration | None = None
    warmup: WarmupConfiguration | None = None


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    factor = 3
    while factor * factor <= n:
        if n % factor == 0:
            return False
        factor += 2
    return True


def _load_balancer_errors(lb: LoadBalancerSettings) -> list[tuple[Loc, str]]:
    """Istio ``validateLoadBalancer`` plus the protobuf oneofs the CRD enforces."""
    errors: list[tuple[Loc, str]] = []
    if lb.simple is not None and lb.consistent_hash is not None:
        errors.append(((), "only one of simple or consistentHash may be set"))
    if (ch := lb.consistent_hash) is not None:
        keys = (ch.http_header_name, ch.http_cookie, ch.use_source_ip, ch.http_query_parameter_name)
        if sum(k is not None for k in keys) > 1:
            errors.append(
                (
                    (),
                    "consistentHash: only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
                )
            )
        if ch.ring_hash is not None and ch.maglev is not None:
            errors.append((("consistentHash",), "only one of ringHash or maglev may be set"))
        if ch.minimum_ring_size and (ch.ring_hash is not None or ch.maglev is not None):
            errors.append(
                (
                    ("consistentHash",),
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                )
            )
        if ch.maglev is not None:
            size = ch.maglev.table_size or 0
            where: Loc = ("consistentHash", "maglev", "tableSize")
            if size == 0:
                errors.append((where, "tableSize must be set for maglev"))
            elif size >= MAGLEV_TABLE_MAX:
                errors.append((where, f"tableSize must be less than {MAGLEV_TABLE_MAX} for maglev"))
            elif not _is_prime(size):
                errors.append((where, "tableSize must be a prime number for maglev"))
    if (locality := lb.locality_lb_setting) is not None:
        if locality.distribute and locality.failover:
            errors.append(
                (
                    ("localityLbSetting",),
                    "can not simultaneously specify 'distribute' and 'failover'",
                )
            )
        for i, rule in enumerate(locality.distribute or []):
            if sum((rule.to or {}).values()) != PERCENT_MAX:
                errors.append(
                    (
                        ("localityLbSetting", "distribute", i, "to"),
                        "total weight of destinations must be 100",
                    )
                )
        for i, failover in enumerate(locality.failover or []):
            if failover.from_ is not None and failover.from_ == failover.to:
                errors.append(
                    (
                        ("localityLbSetting", "failover", i),
                        "locality lb failover settings must specify different regions",
                    )
                )
    return errors


# ---------------------------------------------------------------------------
# Connection pools and outlier detection
# ---------------------------------------------------------------------------


class TcpKeepalive(Model):
    probes: UInt32 | None = None
    time: MinDuration | None = None
    interval: MinDuration | None = None


class TCPSettings(Model):
    """Limits common to HTTP and TCP upstream connections."""

    max_connections: Int32 | None = None
    connect_timeout: MinDuration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: MinDuration | None = None
    idle_timeout: Duration | None = None  # upstream: "0s" disables the idle timeout


class HTTPSettings(Model):
    """Limits of HTTP/1.1, HTTP/2 and gRPC upstream connection pools."""

    http1_max_pending_requests: Int32 | None = None
    http2_max_requests: Int32 | None = None
    max_requests_per_connection: Int32 | None = None
    max_retries: Int32 | None = None
    idle_timeout: MinDuration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Int32 | None = None


class ConnectionPoolSettings(Model):
    """Connection pool limits per upstream host (Envoy circuit breakers)."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


def _connection_pool_errors(pool: ConnectionPoolSettings) -> list[tuple[Loc, str]]:
    """Istio ``validateConnectionPool``."""
    if pool.tcp is None and pool.http is None:
        return [((), "connection pool must have at least one field")]
    errors: list[tuple[Loc, str]] = []
    if (http := pool.http) is not None:
        for field, value, what in (
            (
                "http1MaxPendingRequests",
                http.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            ("http2MaxRequests", http.http2_max_requests, "http2 max requests"),
            (
                "maxRequestsPerConnection",
                http.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", http.max_retries, "max retries"),
            ("maxConcurrentStreams", http.max_concurrent_streams, "max concurrent streams"),
        ):
            if value is not None and value < 0:
                errors.append((("http", field), f"{what} must be non-negative"))
        if http.h2_upgrade_policy == "UPGRADE" and http.use_client_protocol:
            errors.append(
                (
                    ("http", "useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                )
            )
    if pool.tcp is not None and (pool.tcp.max_connections or 0) < 0:
        errors.append((("tcp", "maxConnections"), "max connections must be non-negative"))
    return errors


class OutlierDetection(Model):
    """When to eject an upstream host from the load balancing pool."""

    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    interval: MinDuration | None = None
    base_ejection_time: MinDuration | None = None
    max_ejection_percent: Int32 | None = None
    min_health_percent: Int32 | None = None
    consecutive_errors: Int32 | None = None  # deprecated upstream

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("OutlierDetection")
        if (
            not self.split_external_local_origin_errors
            and (self.consecutive_local_origin_failures or 0) > 0
        ):
            problems.add(
                ("consecutiveLocalOriginFailures",),
                "outlier detection consecutive local origin failures is specified, "
                "but split external local origin errors is set to false",
            )
        for field, value in (
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ):
            if value is not None and not 0 <= value <= PERCENT_MAX:
                problems.add((field,), f"percentage {value} is not in range 0..100", value)
        problems.raise_if_any()
        return self


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


class ClientTLSSettings(Model):
    """TLS the sidecar originates towards the upstream."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] | None = None
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``agent.ValidateTLS``."""
        problems = Problems("ClientTLSSettings")
        if self.insecure_skip_verify:
            if self.mode == "SIMPLE" and (
                self.ca_certificates or self.credential_name or self.subject_alt_names is not None
            ):
                problems.add(
                    (),
                    "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
                    reason=FORBIDDEN,
                )
            if self.mode == "MUTUAL" and (
                self.ca_certificates or self.subject_alt_names is not None
            ):
                problems.add(
                    (),
                    "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                    reason=FORBIDDEN,
                )
        if self.mode in ("SIMPLE", "MUTUAL") and self.credential_name:
            if self.client_certificate or self.ca_certificates or self.private_key or self.ca_crl:
                problems.add(
                    (),
                    "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
                    reason=FORBIDDEN,
                )
        elif self.mode == "MUTUAL":
            if not self.client_certificate:
                problems.add(
                    ("clientCertificate",),
                    "client certificate required for mutual tls",
                    reason=REQUIRED,
                )
            if not self.private_key:
                problems.add(
                    ("privateKey",), "private key required for mutual tls", reason=REQUIRED
                )
        problems.raise_if_any()
        return self


class TLSCertificate(Model):
    """One of several server certificates (for example RSA and ECDSA)."""

    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


TLSVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLSSettings(Model):
    """TLS a gateway server or sidecar listener terminates (or passes through)."""

    https_redirect: bool | None = None
    mode: (
        Literal[
            "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
        ]
        | None
    ) = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] | None = None
    tls_certificates: list[TLSCertificate] | None = None
    subject_alt_names: list[str] | None = None
    verify_certificate_spki: list[str] | None = None
    verify_certificate_hash: list[str] | None = None
    min_protocol_version: TLSVersion | None = None
    max_protocol_version: TLSVersion | None = None
    cipher_suites: list[str] | None = None


def server_tls_errors(tls: ServerTLSSettings) -> list[tuple[Loc, str]]:
    """Istio ``validateTLSOptions`` (the errors; its warnings are not refusals)."""
    errors: list[tuple[Loc, str]] = []
    mode = tls.mode or "PASSTHROUGH"  # enum value 0
    if mode == "ISTIO_MUTUAL":
        for field, value, what in (
            ("serverCertificate", tls.server_certificate, "server certificate"),
            ("privateKey", tls.private_key, "private key"),
            ("caCertificates", tls.ca_certificates, "CA bundle"),
            ("credentialName", tls.credential_name, "credentialName"),
        ):
            if value:
                errors.append(((field,), f"ISTIO_MUTUAL TLS cannot have associated {what}"))
        return errors
    remote = bool(tls.credential_name or tls.credential_names or tls.tls_certificates)
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and not remote:
        label = "SIMPLE" if mode == "SIMPLE" else "MUTUAL"
        if not tls.server_certificate:
            errors.append((("serverCertificate",), f"{label} TLS requires a server certificate"))
        if not tls.private_key:
            errors.append((("privateKey",), f"{label} TLS requires a private key"))
        if mode != "SIMPLE" and not tls.ca_certificates:
            errors.append((("caCertificates",), "MUTUAL TLS requires a client CA bundle"))
    if tls.ca_crl:
        if tls.credential_name:
            errors.append(
                (
                    ("caCrl",),
                    "CRL is not supported with credentialName. CRL has to be specified in the credential",
                )
            )
        if mode == "SIMPLE":
            errors.append((("caCrl",), "CRL is not supported with SIMPLE TLS"))
    return errors


# ---------------------------------------------------------------------------
# Traffic policy and DestinationRule
# ---------------------------------------------------------------------------


class PortTrafficPolicy(Model):
    """Traffic settings for one port of the destination (replacing, not merging)."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(Model):
    """Tunnel TCP to the destination through HTTP CONNECT or POST."""

    protocol: str | None = None
    target_host: str
    target_port: UInt32


class ProxyProtocol(Model):
    version: Literal["V1", "V2"] | None = None


class RetryBudget(Model):
    """Retries allowed as a share of active requests (Envoy retry budget)."""

    percent: float | None = Field(default=None, ge=0, le=100)
    min_retry_concurrency: UInt32 | None = None


class TrafficPolicy(Model):
    """Load balancing, connection limits, ejection and TLS for a destination."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] | None = Field(
        default=None, max_length=PORT_LEVEL_SETTINGS_MAX
    )
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``validateTrafficPolicy``."""
        problems = Problems("TrafficPolicy")
        if all(
            v is None
            for v in (
                self.load_balancer,
                self.connection_pool,
                self.outlier_detection,
                self.tls,
                self.port_level_settings,
                self.tunnel,
                self.proxy_protocol,
                self.retry_budget,
            )
        ):
            problems.add((), "traffic policy must have at least one field", reason=REQUIRED)
        if self.tunnel is not None and self.proxy_protocol is not None:
            problems.add(
                ("tunnel",), "tunnel and proxyProtocol must not be set together", reason=FORBIDDEN
            )
        _policy_errors(problems, (), self.load_balancer, self.connection_pool)
        for i, port_policy in enumerate(self.port_level_settings or []):
            where: Loc = ("portLevelSettings", i)
            if port_policy.port is None:
                problems.add(
                    (*where, "port"), "portTrafficPolicy must have valid port", reason=REQUIRED
                )
            elif err := port_error(port_policy.port.number or 0):
                problems.add((*where, "port", "number"), err, port_policy.port.number)
            fields = (
                port_policy.load_balancer,
                port_policy.connection_pool,
                port_policy.outlier_detection,
                port_policy.tls,
            )
            if all(v is None for v in fields):
                problems.add(
                    where, "port traffic policy must have at least one field", reason=REQUIRED
                )
            _policy_errors(problems, where, port_policy.load_balancer, port_policy.connection_pool)
        if (tunnel := self.tunnel) is not None:
            if tunnel.protocol and tunnel.protocol not in ("CONNECT", "POST"):
                problems.add(
                    ("tunnel", "protocol"),
                    'tunnel protocol must be "CONNECT" or "POST"',
                    tunnel.protocol,
                )
            if fqdn_error(tunnel.target_host) and not is_ip(tunnel.target_host):
                problems.add(
                    ("tunnel", "targetHost"),
                    "tunnel target host must be valid FQDN or IP address",
                    tunnel.target_host,
                )
            if err := port_error(tunnel.target_port):
                problems.add(
                    ("tunnel", "targetPort"),
                    f"tunnel target port is invalid: {err}",
                    tunnel.target_port,
                )
        problems.raise_if_any()
        return self


def _policy_errors(
    problems: Problems,
    where: Loc,
    lb: LoadBalancerSettings | None,
    pool: ConnectionPoolSettings | None,
) -> None:
    if lb is not None:
        problems.extend((*where, "loadBalancer"), _load_balancer_errors(lb))
    if pool is not None:
        problems.extend((*where, "connectionPool"), _connection_pool_errors(pool))


class Subset(Model):
    """A named set of endpoints of the host (selected by labels), with its own policy."""

    name: str
    labels: dict[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Model):
    """Policies for traffic to one host, after routing has picked it."""

    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None
    export_to: list[str] | None = None
    workload_selector: WorkloadSelector | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Istio ``ValidateDestinationRule``."""
        problems = Problems("DestinationRule")
        if err := wildcard_domain_error(self.host):
            problems.add(
                ("host",), err, self.host, REQUIRED if not self.host else "FieldValueInvalid"
            )
        seen: set[str] = set()
        for i, subset in enumerate(self.subsets or []):
            if subset.name in seen:
                problems.add(
                    ("subsets", i, "name"),
                    f"duplicate subset names: {subset.name}",
                    subset.name,
                    DUPLICATE,
                )
            seen.add(subset.name)
            if err := subset_name_error(subset.name):
                problems.add(("subsets", i, "name"), err, subset.name)
            problems.extend(("subsets", i, "labels"), label_map_errors(subset.labels))
        for message in export_to_errors(self.export_to):
            problems.add(("exportTo",), message, self.export_to)
        problems.raise_if_any()
        return self


class DestinationRule(Resource):
    """Policies applied to traffic for a host after routing (networking.istio.io DestinationRule)."""

    api_version: NetworkingApiVersion = "networking.istio.io/v1"
    kind: Literal["DestinationRule"] = "DestinationRule"
    spec: DestinationRuleSpec
    status: IstioStatus | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """A DestinationRule with a workload selector applies in its own namespace only."""
        export_to = self.spec.export_to or []
        if self.spec.workload_selector is None or not export_to:
            return self
        own = {".", self.metadata.namespace} if self.metadata.namespace else {"."}
        if len(export_to) > 1 or (
            "*" in export_to or (self.metadata.namespace and export_to[0] not in own)
        ):
            problems = Problems("DestinationRule")
            problems.add(
                ("spec", "exportTo"),
                "destination rule with workload selector cannot have exportTo beyond current namespace",
                export_to,
            )
            problems.raise_if_any()
        return self


register_istio(DestinationRule, "destinationrules", ("dr",))
