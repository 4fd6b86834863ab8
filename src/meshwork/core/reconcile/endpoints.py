"""Service -> Endpoints: the endpoints controller of kube-controller-manager, as one pure reconcile.

What lives here: ``reconcile_endpoints(service, pods, existing)``, which
computes the Endpoints named like the Service and returns the one write (or
none) that makes the stored object match. Semantics follow upstream
(pkg/controller/endpoint/endpoints_controller.go, ``syncService``):

* A Service without a selector is left alone (its Endpoints are the user's).
  A Service that is gone takes its Endpoints with it.
* Pods count when they are in the Service's namespace, match its selector,
  have a pod IP, are not terminal (Succeeded/Failed), and are not
  terminating (``deletionTimestamp``) unless ``publishNotReadyAddresses``.
* A pod whose Ready condition is True (or any counted pod, with
  ``publishNotReadyAddresses``) goes to ``addresses``, others to
  ``notReadyAddresses``.
* Each Service port resolves per pod: a numeric ``targetPort`` as is, a named
  one from the pod's container ports (and native sidecars') with the same
  name and protocol; a pod without that name is left out of that port. Pods
  that resolve to different numbers land in different subsets
  (``RepackSubsets``). A headless Service without ports still lists addresses.
* ``targetRef`` (Pod, namespace, name, uid), ``nodeName``, and ``hostname``
  when ``spec.hostname`` is set and ``spec.subdomain`` names the Service.
* Labels: the Service's labels, plus ``service.kubernetes.io/headless: ""``
  for a headless Service. No ownerReferences (upstream sets none; this
  controller deletes the Endpoints itself).
* Everything is sorted (addresses by IP then UID, ports by name/port/protocol,
  subsets by their ports), so the order pods arrive in never causes a write.

Not done here (left out on purpose): the 1000-address truncation with the
``endpoints.kubernetes.io/over-capacity`` annotation, and the
``endpoints.kubernetes.io/last-change-trigger-time`` annotation, which needs
change times the snapshot does not carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshwork.core.reconcile import Action, CreateObject, DeleteObject, Outcome, UpdateObject
from meshwork.model.base import ObjectMeta
from meshwork.model.core import (
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Service,
    ServicePort,
)
from meshwork.model.pod import ObjectReference, Pod

HEADLESS_LABEL = "service.kubernetes.io/headless"  # v1.IsHeadlessService


@dataclass(frozen=True, slots=True, order=True)
class _PortKey:
    name: str
    port: int
    protocol: str
    app_protocol: str


@dataclass(frozen=True, slots=True, order=True)
class _AddrKey:
    ip: str
    uid: str


def is_pod_ready(pod: Pod) -> bool:
    """Upstream ``podutil.IsPodReady``: the Ready condition is True."""
    for cond in (pod.status.conditions if pod.status else None) or ():
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def find_port(pod: Pod, port: ServicePort) -> int | None:
    """The pod port a Service port forwards to (upstream ``podutil.FindPort``), or None."""
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int):
        return target
    containers = [*pod.spec.containers,
                  *(c for c in pod.spec.init_containers or () if c.restart_policy == "Always")]  # fmt: skip
    for c in containers:
        for p in c.ports or ():
            if p.name == target and p.protocol == port.protocol:
                return p.container_port
    return None


def _counted(pod: Pod, service: Service) -> bool:
    if pod.metadata.namespace != service.metadata.namespace:
        return False
    selector = service.spec.selector or {}
    labels = pod.metadata.labels or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    status = pod.status
    if status is None or not status.pod_ip:
        return False
    if status.phase in ("Succeeded", "Failed"):
        return False
    return not (pod.metadata.deletion_timestamp and not service.spec.publish_not_ready_addresses)


def _address(pod: Pod, service: Service) -> EndpointAddress:
    assert pod.status is not None and pod.status.pod_ip
    hostname = None
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        hostname = pod.spec.hostname
    return EndpointAddress(
        ip=pod.status.pod_ip,
        hostname=hostname,
        node_name=pod.spec.node_name or None,
        target_ref=ObjectReference(
            kind="Pod",
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
        ),
    )


def _addr_key(a: EndpointAddress) -> _AddrKey:
    return _AddrKey(a.ip, (a.target_ref.uid or "") if a.target_ref else "")


def _port_key(p: EndpointPort) -> _PortKey:
    return _PortKey(p.name or "", p.port, p.protocol, p.app_protocol or "")


def _repack(
    entries: list[tuple[EndpointAddress, bool, EndpointPort | None]],
) -> list[EndpointSubset]:
    """Group addresses that offer the same ports (upstream ``RepackSubsets``), sorted."""
    addrs: dict[_AddrKey, EndpointAddress] = {}
    by_port: dict[_PortKey | None, dict[_AddrKey, bool]] = {}
    ports: dict[_PortKey, EndpointPort] = {}
    for addr, ready, port in entries:
        key = _addr_key(addr)
        addrs.setdefault(key, addr)
        pkey = _port_key(port) if port is not None else None
        if port is not None and pkey is not None:
            ports[pkey] = port
        members = by_port.setdefault(pkey, {})
        members[key] = members.get(key, False) or ready  # ready wins
    groups: dict[frozenset[tuple[_AddrKey, bool]], list[_PortKey]] = {}
    for pkey, members in by_port.items():
        group = groups.setdefault(frozenset(members.items()), [])
        if pkey is not None:
            group.append(pkey)
    subsets = []
    for members_set, pkeys in groups.items():
        ordered = sorted(members_set)
        subsets.append(EndpointSubset(
            addresses=[addrs[k] for k, ready in ordered if ready] or None,
            not_ready_addresses=[addrs[k] for k, ready in ordered if not ready] or None,
            ports=[ports[k] for k in sorted(pkeys)] or None,
        ))  # fmt: skip
    return sorted(subsets, key=_subset_key)


def _subset_key(
    s: EndpointSubset,
) -> tuple[tuple[_PortKey, ...], tuple[_AddrKey, ...], tuple[_AddrKey, ...]]:
    return (tuple(sorted(_port_key(p) for p in s.ports or ())),
            tuple(sorted(_addr_key(a) for a in s.addresses or ())),
            tuple(sorted(_addr_key(a) for a in s.not_ready_addresses or ())))  # fmt: skip


def desired_subsets(service: Service, pods: Sequence[Pod]) -> list[EndpointSubset]:
    """The Endpoints subsets for ``service`` over ``pods`` (any namespace; filtered here)."""
    entries: list[tuple[EndpointAddress, bool, EndpointPort | None]] = []
    publish = bool(service.spec.publish_not_ready_addresses)
    headless = service.spec.cluster_ip == "None"
    for pod in pods:
        if not _counted(pod, service):
            continue
        addr = _address(pod, service)
        ready = publish or is_pod_ready(pod)
        svc_ports = service.spec.ports or []
        if not svc_ports and headless:
            entries.append((addr, ready, None))
        for sp in svc_ports:
            number = find_port(pod, sp)
            if number is None:
                continue
            entries.append((addr, ready, EndpointPort(name=sp.name, port=number, protocol=sp.protocol,
                                                      app_protocol=sp.app_protocol)))  # fmt: skip
    return _repack(entries)


def canonical_subsets(subsets: Sequence[EndpointSubset] | None) -> list[EndpointSubset]:
    """``subsets`` in the canonical (repacked, sorted) form, for comparison."""
    entries: list[tuple[EndpointAddress, bool, EndpointPort | None]] = []
    for s in subsets or ():
        for ready, group in ((True, s.addresses), (False, s.not_ready_addresses)):
            for addr in group or ():
                if s.ports:
                    entries += [(addr, ready, p) for p in s.ports]
                else:
                    entries.append((addr, ready, None))
    return _repack(entries)


def desired_labels(service: Service) -> dict[str, str] | None:
    """The Service's labels, plus the headless label for a headless Service."""
    labels = dict(service.metadata.labels or {})
    labels.pop(HEADLESS_LABEL, None)
    if not service.spec.cluster_ip or service.spec.cluster_ip == "None":
        labels[HEADLESS_LABEL] = ""
    return labels or None


def reconcile_endpoints(
    service: Service | None, pods: Sequence[Pod], existing: Endpoints | None
) -> Outcome:
    """Make the Endpoints of ``service`` match its selected pods (one create, update or delete, or nothing)."""
    if service is None:
        if existing is None:
            return Outcome()
        meta = existing.metadata
        return Outcome(actions=(DeleteObject(group="", kind="Endpoints", namespace=meta.namespace,
                                             name=meta.name or "", uid=meta.uid),))  # fmt: skip
    if not service.spec.selector:
        return Outcome()
    subsets = desired_subsets(service, pods) or None
    labels = desired_labels(service)
    actions: tuple[Action, ...]
    if existing is None:
        obj = Endpoints(metadata=ObjectMeta(name=service.metadata.name, namespace=service.metadata.namespace,
                                            labels=labels), subsets=subsets)  # fmt: skip
        actions = (CreateObject(obj),)
        return Outcome(actions=actions)
    same_subsets = (canonical_subsets(existing.subsets) or None) == subsets
    if same_subsets and (existing.metadata.labels or None) == labels:
        return Outcome()
    meta = existing.metadata.model_copy(update={"labels": labels})
    return Outcome(
        actions=(UpdateObject(existing.model_copy(update={"metadata": meta, "subsets": subsets})),)
    )
