"""Admission: which waiting workloads a ClusterQueue lets run now. Pure.

The rule (Kueue's, without cohorts or preemption):

* Usage is the sum of the requests of the workloads that hold quota
  (admitted and not finished), per (flavor, resource).
* Waiting workloads are tried in the policy's order (``policy.py``). A
  workload is admitted when, for each resource group it asks something of,
  one flavor, tried in the order listed, has room for *all* the group's
  resources it asks for: ``usage + request <= nominalQuota``. The request
  is the whole gang (every pod the Job runs at once), so a Job is admitted
  with all its pods or not at all: there is no partial admission.
* A resource the workload asks for that no group covers makes it
  inadmissible (``pods`` excepted: it only counts when covered).
* ``StrictFIFO``: the first workload that does not fit stops the pass;
  ``BestEffortFIFO``: it is skipped and the next is tried.
* A ClusterQueue with ``stopPolicy: Hold`` or ``HoldAndDrain`` admits
  nothing (draining admitted work is not done).

By construction the usage after a pass never exceeds any ``nominalQuota``
that it did not already exceed (a quota lowered under running work).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from meshwork.core.queue.policy import DEFAULT_AGEING_FACTOR, Policy, ordered
from meshwork.core.queue.workload import PODS, Workload
from meshwork.model.corev1 import parse_quantity
from meshwork.model.kueue import ClusterQueueSpec

Strategy = Literal["StrictFIFO", "BestEffortFIFO"]
Usage = dict[tuple[str, str], Decimal]  # (flavor, resource) -> amount


@dataclass(frozen=True, slots=True)
class FlavorQuota:
    name: str
    quota: Mapping[str, Decimal]  # resource -> nominalQuota


@dataclass(frozen=True, slots=True)
class Group:
    covered: tuple[str, ...]
    flavors: tuple[FlavorQuota, ...]


@dataclass(frozen=True, slots=True)
class Quota:
    """A ClusterQueue's resource groups, parsed."""

    groups: tuple[Group, ...] = ()

    def group_of(self, resource: str) -> Group | None:
        for g in self.groups:
            if resource in g.covered:
                return g
        return None

    def nominal(self) -> dict[tuple[str, str], Decimal]:
        return {(f.name, r): q for g in self.groups for f in g.flavors for r, q in f.quota.items()}


def quota_of(spec: ClusterQueueSpec) -> Quota:
    return Quota(tuple(
        Group(tuple(g.covered_resources), tuple(
            FlavorQuota(f.name, {r.name: parse_quantity(r.nominal_quota) for r in f.resources}) for f in g.flavors
        ))
        for g in spec.resource_groups or ()
    ))  # fmt: skip


def usage_of(workloads: Iterable[Workload]) -> Usage:
    """What the workloads holding quota use, per (flavor, resource)."""
    usage: Usage = {}
    for w in workloads:
        if not w.holds_quota:
            continue
        for resource, amount in w.requests.items():
            flavor = w.flavors.get(resource)
            if flavor is not None:
                usage[(flavor, resource)] = usage.get((flavor, resource), Decimal(0)) + amount
    return usage


def assign(quota: Quota, usage: Mapping[tuple[str, str], Decimal], requests: Mapping[str, Decimal]) -> dict[str, str] | str:
    """The flavor of each requested resource when all of them fit; else why not."""
    by_group: dict[int, list[str]] = {}
    for resource, amount in sorted(requests.items()):
        group = quota.group_of(resource)
        if group is None:
            if resource != PODS and amount > 0:
                return f"resource {resource} unavailable in ClusterQueue"
            continue
        by_group.setdefault(quota.groups.index(group), []).append(resource)
    flavors: dict[str, str] = {}
    for gi, resources in sorted(by_group.items()):
        misses: list[str] = []
        for flavor in quota.groups[gi].flavors:
            short = [r for r in resources
                     if usage.get((flavor.name, r), Decimal(0)) + requests[r] > flavor.quota.get(r, Decimal(0))]  # fmt: skip
            if not short:
                flavors.update({r: flavor.name for r in resources})
                break
            r = short[0]
            free = flavor.quota.get(r, Decimal(0)) - usage.get((flavor.name, r), Decimal(0))
            misses.append(f"insufficient unused quota for {r} in flavor {flavor.name}, "
                          f"{_num(requests[r] - max(free, Decimal(0)))} more needed")  # fmt: skip
        else:
            return "; ".join(misses) or f"no flavor for {', '.join(resources)}"
    return flavors


def _num(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value.normalize())


@dataclass(frozen=True, slots=True)
class Admitted:
    workload: Workload
    flavors: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Decision:
    """One admission pass: what to admit now, what keeps waiting (in order) and why."""

    admitted: tuple[Admitted, ...] = ()
    pending: tuple[Workload, ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)
    usage: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)


def admit(
    quota: Quota,
    workloads: Iterable[Workload],
    policy: Policy,
    *,
    ageing: float = DEFAULT_AGEING_FACTOR,
    strategy: Strategy = "BestEffortFIFO",
    held: bool = False,
    blocked: Mapping[str, str] | None = None,
) -> Decision:
    """Admit, in policy order, every waiting workload that fits; ``blocked`` maps
    workload keys to a reason they may not be admitted at all (a namespace the
    ClusterQueue does not select)."""
    workloads = list(workloads)
    usage = usage_of(workloads)
    waiting = ordered((w for w in workloads if w.admitted_by is None and not w.finished), policy, ageing)
    admitted: list[Admitted] = []
    pending: list[Workload] = []
    reasons: dict[str, str] = {}
    stopped: str | None = "the ClusterQueue is held (stopPolicy)" if held else None
    for w in waiting:
        if stopped is not None:
            pending.append(w)
            reasons[w.key] = stopped
            continue
        why = (blocked or {}).get(w.key)
        result = why if why is not None else assign(quota, usage, w.requests)
        if isinstance(result, str):
            pending.append(w)
            reasons[w.key] = result
            if strategy == "StrictFIFO" and why is None:
                stopped = f"waiting behind {w.kind} {w.namespace}/{w.name} (StrictFIFO)"
            continue
        admitted.append(Admitted(w, result))
        for resource, flavor in result.items():
            usage[(flavor, resource)] = usage.get((flavor, resource), Decimal(0)) + w.requests[resource]
    return Decision(tuple(admitted), tuple(pending), reasons, usage)
