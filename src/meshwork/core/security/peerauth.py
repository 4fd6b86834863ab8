"""PeerAuthentication: the mTLS mode of a workload's inbound port.

What lives here: ``effective_mode(policies, workload, port)`` (and
``compose`` for all ports at once), with Istio's precedence (pilot
``ComposePeerAuthentication``; the "Authentication policy" task's table):

- mesh level: a policy in the root namespace without a selector;
- namespace level: a policy in the workload's namespace without a selector;
- workload level: a policy in the workload's namespace whose
  ``selector.matchLabels`` match the workload's labels (a selector policy in
  the root namespace is ignored for peer authentication);
- the narrower level wins; a level whose mode is ``UNSET`` (or absent)
  inherits from the wider one; with nothing set the mode is PERMISSIVE;
- when several policies compete at one level, the oldest wins
  (``creationTimestamp``, then name);
- the workload policy's ``portLevelMtls`` overrides the mode for that
  (container) port; a port entry with mode UNSET inherits the workload's
  resulting mode.

Modes: STRICT (mTLS only), PERMISSIVE (mTLS or plaintext), DISABLE (plaintext).

What must not: TLS itself (``meshwork.proxy``), or reading the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshwork.core.security.select import ROOT_NAMESPACE, PolicyObject, Workload

__all__ = ["DEFAULT_MODE", "Mode", "PeerAuthDecision", "compose", "effective_mode"]

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
DEFAULT_MODE: Mode = "PERMISSIVE"  # Istio's default with no PeerAuthentication anywhere


@dataclass(frozen=True, slots=True)
class PeerAuthDecision:
    """The workload's mode, per-port overrides, and the policies that decided (for ``why``)."""

    mode: Mode = DEFAULT_MODE
    ports: Mapping[int, Mode] = field(default_factory=dict)
    decided_by: tuple[str, ...] = ()

    def mode_for(self, port: int | None) -> Mode:
        if port is not None and port in self.ports:
            return self.ports[port]
        return self.mode


def _mode(value: Any) -> Mode | None:
    """The mode a ``mtls`` object sets, or None for UNSET/absent (inherit)."""
    if isinstance(value, Mapping):
        mode = value.get("mode")
        if mode in ("STRICT", "PERMISSIVE", "DISABLE"):
            result: Mode = mode
            return result
    return None


def compose(
    policies: Iterable[PolicyObject | Mapping[str, Any]],
    workload: Workload,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> PeerAuthDecision:
    """The effective PeerAuthentication of ``workload`` from every PeerAuthentication there is."""
    objs = sorted(
        (p if isinstance(p, PolicyObject) else PolicyObject.from_manifest(p) for p in policies),
        key=lambda p: (p.created, p.name),
    )
    mesh = namespace = workload_level = None
    for p in objs:
        if not p.match_labels:
            if p.namespace == root_namespace and mesh is None:
                mesh = p
            if p.namespace == workload.namespace != root_namespace and namespace is None:
                namespace = p
        elif (
            p.namespace == workload.namespace != root_namespace
            and workload_level is None
            and all(workload.labels.get(k) == v for k, v in p.match_labels.items())
        ):
            workload_level = p
    mode: Mode = DEFAULT_MODE
    decided: list[str] = []
    for level in (mesh, namespace, workload_level):
        if level is not None and (m := _mode(level.spec.get("mtls"))) is not None:
            mode = m
            decided.append(level.key)
    ports: dict[int, Mode] = {}
    if workload_level is not None:
        for port, mtls in (workload_level.spec.get("portLevelMtls") or {}).items():
            ports[int(port)] = _mode(mtls) or mode
        if ports and workload_level.key not in decided:
            decided.append(workload_level.key)
    return PeerAuthDecision(mode, ports, tuple(decided))


def effective_mode(
    policies: Iterable[PolicyObject | Mapping[str, Any]],
    workload: Workload,
    port: int | None = None,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> Mode:
    """The mode of ``workload``'s inbound ``port`` (its container port)."""
    return compose(policies, workload, root_namespace=root_namespace).mode_for(port)
