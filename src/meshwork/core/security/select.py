"""Which security policies apply to a workload: namespace, labels, selector, root namespace.

What lives here: ``applies_to(policy, workload)`` and ``select_policies``,
with Istio's rule (pilot ``getConfigsForWorkload``, ``ListAuthorizationPolicies``):
a policy applies to a workload when it is in the workload's namespace or in
the mesh root namespace (``istio-system``), and its ``selector.matchLabels``
is empty or a subset of the workload's labels. So a root-namespace policy
with no selector applies to the whole mesh, and one with a selector to the
matching workloads of every namespace.

Policies that name their target with ``targetRef``/``targetRefs`` (Gateway
API attachment) apply only to the gateway they name, never to sidecars.

Results keep the order of the input, oldest first when the caller sorts by
``creationTimestamp``: PeerAuthentication precedence needs "the oldest wins".

What must not: the meaning of the policies (``authz``, ``peerauth``,
``requestauthn``) and reading them from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ROOT_NAMESPACE", "PolicyObject", "Workload", "applies_to", "select_policies"]

ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace default


@dataclass(frozen=True, slots=True)
class Workload:
    """A pod (or gateway) as policy selection sees it."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    gateway: str | None = None  # the Gateway (gateway.networking.k8s.io) it serves, if any


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """A security.istio.io object reduced to what selection needs, plus its wire ``spec``."""

    name: str
    namespace: str
    spec: Mapping[str, Any]
    created: str = ""  # creationTimestamp (RFC 3339 sorts as text)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any]) -> PolicyObject:
        meta = obj.get("metadata") or {}
        return cls(
            meta.get("name", ""),
            meta.get("namespace", "default"),
            obj.get("spec") or {},
            str(meta.get("creationTimestamp") or ""),
            meta.get("annotations") or {},
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def match_labels(self) -> Mapping[str, str]:
        selector = self.spec.get("selector") or {}
        labels: Mapping[str, str] = selector.get("matchLabels") or {}
        return labels


def _target_refs(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    refs = list(spec.get("targetRefs") or [])
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    return refs


def applies_to(
    policy: PolicyObject, workload: Workload, *, root_namespace: str = ROOT_NAMESPACE
) -> bool:
    """Istio's selection rule for AuthorizationPolicy, RequestAuthentication, PeerAuthentication."""
    if policy.namespace not in (workload.namespace, root_namespace):
        return False
    refs = _target_refs(policy.spec)
    if refs:
        return (
            workload.gateway is not None
            and policy.namespace == workload.namespace
            and any(r.get("kind") == "Gateway" and r.get("name") == workload.gateway for r in refs)
        )
    return all(workload.labels.get(k) == v for k, v in policy.match_labels.items())


def select_policies(
    policies: Iterable[PolicyObject | Mapping[str, Any]],
    workload: Workload,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> list[PolicyObject]:
    """The policies that apply to ``workload``, oldest first (then by namespace/name)."""
    objs = [p if isinstance(p, PolicyObject) else PolicyObject.from_manifest(p) for p in policies]
    chosen = [p for p in objs if applies_to(p, workload, root_namespace=root_namespace)]
    return sorted(chosen, key=lambda p: (p.created, p.namespace, p.name))
