"""The Kueue kinds meshwork's batch queue uses (kueue.x-k8s.io/v1beta1):
ResourceFlavor, ClusterQueue, LocalQueue and WorkloadPriorityClass.

Kueue's shapes, so the same manifests run on a cluster with Kueue installed:
a cluster-scoped ``ClusterQueue`` holds the quota (``resourceGroups`` of
``coveredResources`` and per-flavor ``nominalQuota``), a namespaced
``LocalQueue`` points at one, and a Job or Workflow joins a queue with the
label ``kueue.x-k8s.io/queue-name: <local queue>``. meshwork's own choices
(the queueing policy and the SJF ageing factor) are annotations on the
ClusterQueue, so they do not break ``kubectl apply`` against real Kueue; see
``meshwork.core.queue`` for what they mean.

What lives here: the fields and their checks. What must not: admission,
ordering, or I/O. Cohorts, borrowing, preemption and fair sharing are
accepted (so upstream manifests load) but not acted on.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from meshwork.model.base import Model, Quantity, Resource
from meshwork.model.core import Condition
from meshwork.model.corev1 import LabelSelector, fail_at, parse_quantity
from meshwork.model.kinds import REGISTRY, KindInfo
from meshwork.model.pod import Toleration

GROUP = "kueue.x-k8s.io"
VERSIONS = ("v1beta1", "v1beta2")
KueueApiVersion = Literal["kueue.x-k8s.io/v1beta1", "kueue.x-k8s.io/v1beta2"]
# Kueue's CRD limits: at most 16 resource groups, 16 flavors and 16 resources each.
MAX_GROUPS = 16
MAX_FLAVORS = 16
MAX_RESOURCES = 16


class ResourceFlavorTaint(Model):
    """A taint of the nodes of a flavor (corev1.Taint)."""

    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: str | None = None


class ResourceFlavorSpec(Model):
    """The node labels and taints of a variant of the cluster's resources."""

    node_labels: dict[str, str] | None = None
    node_taints: list[ResourceFlavorTaint] | None = None
    tolerations: list[Toleration] | None = None
    topology_name: str | None = None


class ResourceFlavor(Resource):
    """A variant of the cluster's resources (cluster-scoped)."""

    api_version: KueueApiVersion = "kueue.x-k8s.io/v1beta1"
    kind: Literal["ResourceFlavor"] = "ResourceFlavor"
    spec: ResourceFlavorSpec = Field(default_factory=ResourceFlavorSpec)


class ResourceQuota(Model):
    """The quota of one resource in one flavor."""

    name: str
    nominal_quota: Quantity
    borrowing_limit: Quantity | None = None
    lending_limit: Quantity | None = None


class FlavorQuotas(Model):
    """One flavor's quotas for the resources its group covers."""

    name: str
    resources: list[ResourceQuota]


class ResourceGroup(Model):
    """Resources whose flavors are chosen together, and the flavors in the order they are tried."""

    covered_resources: list[str]
    flavors: list[FlavorQuotas]


class BorrowWithinCohort(Model):
    policy: Literal["Never", "LowerPriority"] | None = None
    max_priority_threshold: int | None = None


class ClusterQueuePreemption(Model):
    reclaim_within_cohort: Literal["Never", "LowerPriority", "Any"] | None = None
    borrow_within_cohort: BorrowWithinCohort | None = None
    within_cluster_queue: Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"] | None = None


class FlavorFungibility(Model):
    when_can_borrow: Literal["Borrow", "TryNextFlavor"] | None = None
    when_can_preempt: Literal["Preempt", "TryNextFlavor"] | None = None


class FairSharing(Model):
    weight: Quantity | None = None


class ClusterQueueSpec(Model):
    """Quota, which namespaces may use it, and how waiting work is ordered."""

    resource_groups: list[ResourceGroup] | None = None
    cohort: str | None = None
    queueing_strategy: Literal["StrictFIFO", "BestEffortFIFO"] = "BestEffortFIFO"
    namespace_selector: LabelSelector | None = None
    flavor_fungibility: FlavorFungibility | None = None
    preemption: ClusterQueuePreemption | None = None
    admission_checks: list[str] | None = None
    stop_policy: Literal["None", "Hold", "HoldAndDrain"] | None = None
    fair_sharing: FairSharing | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str, object]] = []
        groups = self.resource_groups or []
        if len(groups) > MAX_GROUPS:
            errors.append((("resourceGroups",), f"must have at most {MAX_GROUPS} items", len(groups)))
        covered: set[str] = set()
        flavors: set[str] = set()
        for gi, group in enumerate(groups):
            where: tuple[str | int, ...] = ("resourceGroups", gi)
            if len(group.flavors) > MAX_FLAVORS:
                errors.append(((*where, "flavors"), f"must have at most {MAX_FLAVORS} items", len(group.flavors)))
            if len(group.covered_resources) > MAX_RESOURCES:
                errors.append(((*where, "coveredResources"), f"must have at most {MAX_RESOURCES} items",
                               len(group.covered_resources)))  # fmt: skip
            for name in group.covered_resources:
                if name in covered:
                    errors.append(((*where, "coveredResources"), "resource is covered by more than one group", name))
                covered.add(name)
            for fi, flavor in enumerate(group.flavors):
                if flavor.name in flavors:
                    errors.append(((*where, "flavors", fi, "name"), "flavor is used by more than one group",
                                   flavor.name))  # fmt: skip
                flavors.add(flavor.name)
                names = [r.name for r in flavor.resources]
                if names != list(group.covered_resources):
                    errors.append(((*where, "flavors", fi, "resources"),
                                   "must list the covered resources, in the same order", names))  # fmt: skip
                for ri, quota in enumerate(flavor.resources):
                    try:
                        if parse_quantity(quota.nominal_quota) < 0:
                            raise ValueError("must be greater than or equal to 0")
                    except ValueError as exc:
                        errors.append(((*where, "flavors", fi, "resources", ri, "nominalQuota"), str(exc),
                                       quota.nominal_quota))  # fmt: skip
        if errors:
            fail_at("ClusterQueueSpec", errors)
        return self


class ResourceUsage(Model):
    name: str
    total: Quantity | None = None
    borrowed: Quantity | None = None


class FlavorUsage(Model):
    name: str
    resources: list[ResourceUsage]


class ClusterQueuePendingWorkload(Model):
    """One waiting workload, in the order the queue will try them."""

    name: str
    namespace: str


class ClusterQueuePendingWorkloadsStatus(Model):
    cluster_queue_pending_workload: list[ClusterQueuePendingWorkload] | None = None
    last_change_time: str | None = None


class ClusterQueueStatus(Model):
    conditions: list[Condition] | None = None
    pending_workloads: int | None = None
    reserving_workloads: int | None = None
    admitted_workloads: int | None = None
    flavors_reservation: list[FlavorUsage] | None = None
    flavors_usage: list[FlavorUsage] | None = None
    pending_workloads_status: ClusterQueuePendingWorkloadsStatus | None = None


class ClusterQueue(Resource):
    """A pool of quota that admits waiting work (cluster-scoped)."""

    api_version: KueueApiVersion = "kueue.x-k8s.io/v1beta1"
    kind: Literal["ClusterQueue"] = "ClusterQueue"
    spec: ClusterQueueSpec = Field(default_factory=ClusterQueueSpec)
    status: ClusterQueueStatus | None = None


class LocalQueueSpec(Model):
    cluster_queue: str
    stop_policy: Literal["None", "Hold", "HoldAndDrain"] | None = None


class LocalQueueFlavorUsage(Model):
    name: str
    resources: list[ResourceUsage] | None = None


class LocalQueueStatus(Model):
    conditions: list[Condition] | None = None
    pending_workloads: int | None = None
    reserving_workloads: int | None = None
    admitted_workloads: int | None = None
    flavors_reservation: list[LocalQueueFlavorUsage] | None = None
    flavor_usage: list[LocalQueueFlavorUsage] | None = None


class LocalQueue(Resource):
    """A namespace's name for a ClusterQueue: what Jobs and Workflows label themselves with."""

    api_version: KueueApiVersion = "kueue.x-k8s.io/v1beta1"
    kind: Literal["LocalQueue"] = "LocalQueue"
    spec: LocalQueueSpec
    status: LocalQueueStatus | None = None


class WorkloadPriorityClass(Resource):
    """A priority for queued work only (it does not change the pods' priority)."""

    api_version: KueueApiVersion = "kueue.x-k8s.io/v1beta1"
    kind: Literal["WorkloadPriorityClass"] = "WorkloadPriorityClass"
    value: int
    description: str | None = None


def _register() -> None:
    kinds: list[tuple[type[Resource], str, bool, tuple[str, ...], bool]] = [
        (ResourceFlavor, "resourceflavors", False, ("flavor", "flavors", "rf"), False),
        (ClusterQueue, "clusterqueues", False, ("cq",), True),
        (LocalQueue, "localqueues", True, ("queue", "queues", "lq"), True),
        (WorkloadPriorityClass, "workloadpriorityclasses", False, (), False),
    ]
    for model, plural, namespaced, short, has_status in kinds:
        kind = model.model_fields["kind"].default
        REGISTRY.register(KindInfo(
            group=GROUP, versions=VERSIONS, kind=kind, plural=plural, singular=kind.lower(), model=model,
            namespaced=namespaced, short_names=short, has_status=has_status,
        ))  # fmt: skip


_register()
