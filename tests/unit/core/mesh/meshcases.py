"""Builders shared by the mesh-core tests: services, snapshots, conformance manifests, requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.route import Request
from meshwork.core.mesh.snapshot import EndpointInfo, PortInfo, ProxyInfo, ServiceInfo, Snapshot
from meshwork.core.mesh.table import RoutingTable
from meshwork.model.base import Resource
from meshwork.model.codec import validate_object
from meshwork.model.istio_networking import Gateway, ServiceEntry
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule
from meshwork.model.loader import parse_text

ISTIO = Path(__file__).resolve().parents[5] / "shared" / "conformance" / "istio"


def manifests(*relative: str) -> list[Resource]:
    """Objects of conformance files under ../shared/conformance/istio (skip when absent)."""
    out: list[Resource] = []
    for rel in relative:
        path = ISTIO / rel
        if not path.is_file():
            pytest.skip(f"{path} is absent: the conformance manifests live beside the repo")
        out += [m.obj for m in parse_text(path.read_text(), str(path))]
    return out


def istio(
    kind: str, name: str, spec: Mapping[str, Any], ns: str = "default", created: str = ""
) -> Resource:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    return validate_object(
        {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": meta, "spec": dict(spec)}
    )


def service(
    name: str,
    ns: str = "default",
    port: int = 9080,
    versions: Sequence[str] = ("v1",),
    per_version: int = 1,
    base: int = 10,
    ports: Sequence[PortInfo] | None = None,
) -> ServiceInfo:
    """A Service with ``per_version`` pods of each version, at 127.1.<base>.<n>."""
    endpoints = []
    n = 1
    for version in versions:
        for _ in range(per_version):
            endpoints.append(
                EndpointInfo(
                    ip=f"127.1.{base}.{n}",
                    ports={"http": port},
                    labels={"app": name, "version": version},
                    name=f"{name}-{version}-{n}",
                )
            )
            n += 1
    return ServiceInfo(
        name=name,
        namespace=ns,
        ports=tuple(ports) if ports else (PortInfo("http", port, port),),
        endpoints=tuple(endpoints),
    )


def snapshot(
    resources: Iterable[Resource],
    services: Iterable[ServiceInfo] = (),
    proxy: ProxyInfo | None = None,
) -> Snapshot:
    res = list(resources)
    for r in res:
        if r.metadata.namespace is None:
            r.metadata.namespace = "default"
    return Snapshot(
        proxy=proxy
        or ProxyInfo("productpage-v1-1", "default", {"app": "productpage", "version": "v1"}),
        services=tuple(services),
        virtual_services=tuple(r for r in res if isinstance(r, VirtualService)),
        destination_rules=tuple(r for r in res if isinstance(r, DestinationRule)),
        service_entries=tuple(r for r in res if isinstance(r, ServiceEntry)),
        gateways=tuple(r for r in res if isinstance(r, Gateway)),
    )


def table(
    resources: Iterable[Resource],
    services: Iterable[ServiceInfo] = (),
    proxy: ProxyInfo | None = None,
) -> RoutingTable:
    return compile_snapshot(snapshot(resources, services, proxy))


def bookinfo_services() -> list[ServiceInfo]:
    return [
        service("productpage", base=10),
        service("details", versions=("v1", "v2"), base=11),
        service("reviews", versions=("v1", "v2", "v3"), base=12),
        service("ratings", versions=("v1", "v2"), base=13),
    ]


def get(
    authority: str, path: str = "/", port: int = 9080, method: str = "GET", **headers: str
) -> Request:
    return Request(
        method=method,
        path=path,
        authority=authority,
        headers={k.replace("_", "-").lower(): v for k, v in headers.items()},
        port=port,
    )
