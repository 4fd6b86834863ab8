"""Address allocation at create: Service ClusterIPs and NodePorts, and Node pod CIDRs.

Pure choice functions (``pick_ip``, ``pick_port``, ``pick_pod_cidr``), one
``assign_service`` that fills a new Service's ``clusterIP``/``clusterIPs``,
``ipFamilies``, ``ipFamilyPolicy`` and node ports from what is already taken
(as Kubernetes' service registry does), and one ``assign_node_cidr`` that
gives a new Node its ``podCIDR``/``podCIDRs`` (what kube-controller-manager's
node IPAM does just after create; here the API server does it in the create,
so an agent reads its range back from the create's answer). A range is free
again once the object holding it is gone: what is taken is always computed
from the objects that exist.
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


# ---------------------------------------------------------------------------
# Node pod CIDRs (kube-controller-manager's node IPAM, done at create here)
# ---------------------------------------------------------------------------

# Pods live on loopback (DESIGN.md): each node gets one /16 of 127.0.0.0/8 for its
# pods, from 127.1.0.0/16 up to 127.95.0.0/16; 127.96.0.0/16 holds ClusterIPs
# and 127.0.0.0/16 stays with the host (127.0.0.1 and friends).
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
POD_CIDR_PREFIX = 16
POD_CIDR_POOL = tuple(ipaddress.IPv4Network(f"127.{i}.0.0/{POD_CIDR_PREFIX}") for i in range(1, 96))


def node_cidrs(nodes: Iterable[dict[str, Any]], *, skip: str | None = None) -> list[ipaddress.IPv4Network]:
    """The pod CIDRs existing Nodes hold (a node named ``skip`` left out; unreadable values ignored)."""
    held: list[ipaddress.IPv4Network] = []
    for node in nodes:
        if skip is not None and node.get("metadata", {}).get("name") == skip:
            continue
        spec = node.get("spec") or {}
        for text in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                held.append(net)
    return held


def pick_pod_cidr(held: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The first network of the pool that overlaps none of ``held``."""
    taken = list(held)
    for candidate in POD_CIDR_POOL:
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    return None


def _node_invalid(name: str, field: str, value: Any, message: str) -> ValidationError:
    return ValidationError(
        f'Node "{name}" is invalid: {field}: Invalid value: "{value}": {message}',
        causes=[FieldCause(field, message, "FieldValueInvalid")],
        kind="Node",
        name=name,
    )


def check_pod_cidrs(node: dict[str, Any]) -> list[ipaddress.IPv4Network]:
    """Sync ``podCIDR`` with ``podCIDRs[0]`` and parse them; ValidationError when malformed.

    As upstream's v1 conversion does, either field alone fills the other; when
    both are given the first of ``podCIDRs`` must equal ``podCIDR``.
    """
    spec = node.setdefault("spec", {})
    name = node.get("metadata", {}).get("name", "")
    single, many = spec.get("podCIDR"), spec.get("podCIDRs")
    if single and not many:
        spec["podCIDRs"] = many = [single]
    elif many and not single:
        spec["podCIDR"] = single = many[0]
    elif single and many and many[0] != single:
        raise _node_invalid(name, "spec.podCIDRs[0]", many[0], f'must match spec.podCIDR "{single}"')
    nets: list[ipaddress.IPv4Network] = []
    for i, text in enumerate(many or []):
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise _node_invalid(name, f"spec.podCIDRs[{i}]", text, "must be a valid CIDR value, (e.g. 10.9.8.0/24)") from None
        if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LOOPBACK):
            raise _node_invalid(name, f"spec.podCIDRs[{i}]", text, f"must be inside {LOOPBACK} (pods use loopback addresses)")
        if net.overlaps(SERVICE_CIDR):
            raise _node_invalid(name, f"spec.podCIDRs[{i}]", text, f"overlaps the service range {SERVICE_CIDR}")
        nets.append(net)
    if len(nets) > 1:
        raise _node_invalid(name, "spec.podCIDRs", ", ".join(many or []), "only one IPv4 pod CIDR is supported")
    return nets


def assign_node_cidr(node: dict[str, Any], held: Iterable[ipaddress.IPv4Network]) -> None:
    """Fill a new Node's ``podCIDR``/``podCIDRs`` in place from what other nodes hold.

    A Node that names its own range keeps it, unless it overlaps another
    node's (422). Without one it gets the first free /16 of the pool.
    """
    taken = list(held)
    name = node.get("metadata", {}).get("name", "")
    wanted = check_pod_cidrs(node)
    spec = node["spec"]
    for i, net in enumerate(wanted):
        clash = next((other for other in taken if net.overlaps(other)), None)
        if clash is not None:
            raise _node_invalid(name, f"spec.podCIDRs[{i}]", str(net), f"overlaps {clash}, held by another node")
    if wanted:
        return
    picked = pick_pod_cidr(taken)
    if picked is None:
        raise _node_invalid(name, "spec.podCIDR", "", f"no free pod CIDR left: every /{POD_CIDR_PREFIX} of {POD_CIDR_POOL[0]} .. {POD_CIDR_POOL[-1]} is held")
    spec["podCIDR"] = str(picked)
    spec["podCIDRs"] = [str(picked)]
