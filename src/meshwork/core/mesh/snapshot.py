"""What the control plane sends one proxy: the input of ``compile``.

What lives here: the frozen dataclasses of a proxy's snapshot (who the proxy
is, the Services it can reach with their ports and endpoints, and the Istio
resources visible to it as typed models) and ``snapshot_from_wire``, which
reads the JSON form the control plane streams. Nothing here decides anything.

The wire form (camelCase, as everything else on meshwork's wire)::

    {"version": "42",
     "proxy": {"name": "reviews-v1-x", "namespace": "default", "role": "sidecar",
               "labels": {"app": "reviews"}, "ip": "127.1.0.5"},
     "domain": "cluster.local",
     "services": [{"name": "reviews", "namespace": "default",
                   "clusterIP": "127.2.0.9",
                   "ports": [{"name": "http", "port": 9080, "targetPort": 9080,
                              "protocol": "TCP", "appProtocol": null}],
                   "endpoints": [{"ip": "127.1.0.7", "ports": {"http": 9080},
                                  "labels": {"version": "v1"}, "ready": true,
                                  "name": "reviews-v1-x"}]}],
     "virtualServices": [...], "destinationRules": [...],
     "serviceEntries": [...], "gateways": [...],
     "credentials": {"httpbin-credential": {"tls.crt": "<base64>", "tls.key": "<base64>"}}}

The Istio lists hold the objects as stored (wire dicts); they are validated
through ``meshwork.model`` so the compiler reads typed fields only.
``credentials`` (gateways only) holds the ``data`` of the Secrets in the
gateway's namespace that its Gateways name in ``credentialName`` (and their
``-cacert`` companions), by Secret name, base64 values as stored.
``role`` is ``sidecar`` or ``gateway`` (ingress and east-west gateways are
the same proxy in the gateway role).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from meshwork.model.base import Resource
from meshwork.model.codec import validate_object
from meshwork.model.istio_networking import Gateway, ServiceEntry
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule

Role = Literal["sidecar", "gateway"]
DEFAULT_DOMAIN = "cluster.local"  # Kubernetes' default cluster domain
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """The proxy the snapshot is for: its workload's identity."""

    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    role: Role = "sidecar"
    ip: str = ""


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One port of a Service (``targetPort`` may be a number or a container port name)."""

    name: str
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One pod behind a Service: its IP, its port numbers by Service port name, its labels."""

    ip: str
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    name: str = ""


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A Kubernetes Service, with its endpoints."""

    name: str
    namespace: str
    ports: tuple[PortInfo, ...] = ()
    endpoints: tuple[EndpointInfo, ...] = ()
    cluster_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one proxy needs to route: services plus the Istio resources visible to it."""

    proxy: ProxyInfo
    services: tuple[ServiceInfo, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    service_entries: tuple[ServiceEntry, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    domain: str = DEFAULT_DOMAIN
    version: str = ""
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # Secret name -> data


class SnapshotError(ValueError):
    """The snapshot's JSON is not the shape this module documents."""


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise SnapshotError(f"{where}: expected an object")
    return value


def _list(value: object, where: str) -> Sequence[object]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SnapshotError(f"{where}: expected a list")
    return value


def _str_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    raw = _mapping(value, where)
    if not all(isinstance(v, str) for v in raw.values()):
        raise SnapshotError(f"{where}: expected string values")
    return {str(k): str(v) for k, v in raw.items()}


def _str(value: object, where: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: expected a string")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError(f"{where}: expected an integer")
    return value


def _port(raw: object, where: str) -> PortInfo:
    data = _mapping(raw, where)
    target = data.get("targetPort")
    if target is not None and not isinstance(target, int | str):
        raise SnapshotError(f"{where}.targetPort: expected an integer or a name")
    app = data.get("appProtocol")
    return PortInfo(
        name=_str(data.get("name"), f"{where}.name", ""),
        port=_int(data.get("port"), f"{where}.port"),
        target_port=target if isinstance(target, int | str) else None,
        protocol=_str(data.get("protocol"), f"{where}.protocol", "TCP"),
        app_protocol=app if isinstance(app, str) else None,
    )


def _endpoint(raw: object, where: str) -> EndpointInfo:
    data = _mapping(raw, where)
    ports_raw = _mapping(data.get("ports") or {}, f"{where}.ports")
    ports = {str(k): _int(v, f"{where}.ports.{k}") for k, v in ports_raw.items()}
    ready = data.get("ready", True)
    return EndpointInfo(
        ip=_str(data.get("ip"), f"{where}.ip"),
        ports=ports,
        labels=_str_map(data.get("labels"), f"{where}.labels"),
        ready=bool(ready),
        name=_str(data.get("name"), f"{where}.name", ""),
    )


def _service(raw: object, where: str) -> ServiceInfo:
    data = _mapping(raw, where)
    cluster_ip = data.get("clusterIP")
    return ServiceInfo(
        name=_str(data.get("name"), f"{where}.name"),
        namespace=_str(data.get("namespace"), f"{where}.namespace", DEFAULT_NAMESPACE),
        ports=tuple(
            _port(p, f"{where}.ports[{i}]") for i, p in enumerate(_list(data.get("ports"), where))
        ),
        endpoints=tuple(
            _endpoint(e, f"{where}.endpoints[{i}]")
            for i, e in enumerate(_list(data.get("endpoints"), where))
        ),
        cluster_ip=cluster_ip if isinstance(cluster_ip, str) and cluster_ip else None,
    )


R = TypeVar("R", bound=Resource)


def _typed(items: Sequence[object], kind: type[R], where: str) -> tuple[R, ...]:
    out: list[R] = []
    for i, item in enumerate(items):
        obj: Resource = (
            item if isinstance(item, Resource) else validate_object(_mapping(item, where))
        )
        if not isinstance(obj, kind):
            raise SnapshotError(f"{where}[{i}]: expected a {kind.__name__}, got {obj.kind}")
        out.append(obj)
    return tuple(out)


def _credentials(value: object) -> dict[str, dict[str, str]]:
    raw = _mapping(value or {}, "credentials")
    return {str(name): _str_map(data, f"credentials.{name}") for name, data in raw.items()}


def snapshot_from_wire(data: Mapping[str, object]) -> Snapshot:
    """Read a snapshot in the JSON form above; Istio objects are validated by ``meshwork.model``."""
    proxy = _mapping(data.get("proxy"), "proxy")
    role = proxy.get("role", "sidecar")
    if role not in ("sidecar", "gateway"):
        raise SnapshotError(f"proxy.role: expected sidecar or gateway, got {role!r}")
    info = ProxyInfo(
        name=_str(proxy.get("name"), "proxy.name", ""),
        namespace=_str(proxy.get("namespace"), "proxy.namespace", DEFAULT_NAMESPACE),
        labels=_str_map(proxy.get("labels"), "proxy.labels"),
        role="gateway" if role == "gateway" else "sidecar",
        ip=_str(proxy.get("ip"), "proxy.ip", ""),
    )
    return Snapshot(
        proxy=info,
        services=tuple(
            _service(s, f"services[{i}]")
            for i, s in enumerate(_list(data.get("services"), "services"))
        ),
        virtual_services=_typed(
            _list(data.get("virtualServices"), "virtualServices"), VirtualService, "virtualServices"
        ),
        destination_rules=_typed(
            _list(data.get("destinationRules"), "destinationRules"),
            DestinationRule,
            "destinationRules",
        ),
        service_entries=_typed(
            _list(data.get("serviceEntries"), "serviceEntries"), ServiceEntry, "serviceEntries"
        ),
        gateways=_typed(_list(data.get("gateways"), "gateways"), Gateway, "gateways"),
        domain=_str(data.get("domain"), "domain", DEFAULT_DOMAIN),
        version=str(data.get("version", "")),
        credentials=_credentials(data.get("credentials")),
    )
