"""Service ClusterIP and NodePort allocation, as Kubernetes' service registry does at create.

Pure choice functions (``pick_ip``, ``pick_port``) and one ``assign_service``
that fills a new Service's ``clusterIP``/``clusterIPs``, ``ipFamilies``,
``ipFamilyPolicy`` and node ports from what is already taken.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from meshwork.errors import FieldCause, ValidationError

# Service ClusterIPs come from a loopback range of their own (DESIGN.md: pods use
# 127.1.0.0/16 on the first node; Linux routes all of 127.0.0.0/8 to lo), so a
# node's proxy can listen on them without root.
SERVICE_CIDR = ipaddress.IPv4Network("127.96.0.0/16")
# Kubernetes' default --service-node-port-range.
NODE_PORT_RANGE = range(30000, 32768)


def pick_ip(used: set[str], network: ipaddress.IPv4Network = SERVICE_CIDR) -> str | None:
    """The lowest free address of ``network`` (network and broadcast addresses excluded)."""
    for host in network.hosts():
        text = str(host)
        if text not in used:
            return text
    return None


def pick_port(used: set[int], ports: range = NODE_PORT_RANGE) -> int | None:
    for port in ports:
        if port not in used:
            return port
    return None


def taken(services: Iterable[dict[str, Any]]) -> tuple[set[str], set[int]]:
    """ClusterIPs and node ports that existing Services hold."""
    ips: set[str] = set()
    node_ports: set[int] = set()
    for svc in services:
        spec = svc.get("spec") or {}
        ips.update(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None")
        node_ports.update(p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort"))
    return ips, node_ports


def _invalid(name: str, field: str, message: str) -> ValidationError:
    return ValidationError(
        f'Service "{name}" is invalid: {field}: {message}',
        causes=[FieldCause(field, message)],
        kind="Service",
        name=name,
    )


def assign_service(svc: dict[str, Any], used_ips: set[str], used_ports: set[int]) -> None:
    """Fill the allocated fields of a new Service in place; ValidationError when taken or full."""
    spec = svc.setdefault("spec", {})
    name = svc.get("metadata", {}).get("name", "")
    kind = spec.get("type", "ClusterIP")
    if kind == "ExternalName":
        return
    wanted = spec.get("clusterIP")
    if wanted == "None":
        spec["clusterIPs"] = ["None"]
    elif wanted:
        try:
            addr = ipaddress.ip_address(wanted)
        except ValueError:
            raise _invalid(name, "spec.clusterIP", f'"{wanted}" is not a valid IP address') from None
        if addr not in SERVICE_CIDR:
            raise _invalid(name, "spec.clusterIP", f'"{wanted}" is not in the valid range {SERVICE_CIDR}')
        if wanted in used_ips:
            raise _invalid(name, "spec.clusterIP", f'"{wanted}": provided IP is already allocated')
        spec["clusterIPs"] = [wanted]
    else:
        ip = pick_ip(used_ips)
        if ip is None:
            raise _invalid(name, "spec.clusterIP", f"no free addresses left in {SERVICE_CIDR}")
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if kind in ("NodePort", "LoadBalancer"):
        ports_taken = set(used_ports)
        for i, port in enumerate(spec.get("ports") or []):
            requested = port.get("nodePort")
            if requested:
                if requested in ports_taken:
                    raise _invalid(name, f"spec.ports[{i}].nodePort", f"{requested}: provided port is already allocated")
                if requested not in NODE_PORT_RANGE:
                    raise _invalid(name, f"spec.ports[{i}].nodePort", f"{requested}: provided port is not in the valid range {NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}")
            else:
                requested = pick_port(ports_taken)
                if requested is None:
                    raise _invalid(name, f"spec.ports[{i}].nodePort", "no free node ports left")
                port["nodePort"] = requested
            ports_taken.add(requested)
