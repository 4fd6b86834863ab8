"""The Deployment controller's replica arithmetic: how many pods each ReplicaSet gets.

What lives here: the working plan of one Deployment sync (``Plan``, one
``PlannedRS`` per owned ReplicaSet, with the pod counts observed for it), the
surge/unavailable fenceposts, and the scaling steps of kube-controller-manager's
``rolloutRolling`` (``reconcileNewReplicaSet``, ``reconcileOldReplicaSets``,
``cleanupUnhealthyReplicas``, ``scaleDownOldReplicaSetsForRollingUpdate``),
``rolloutRecreate``'s scale-down, and ``scale`` (proportional scaling of a
Deployment resized mid-rollout).

What must not: creating the new ReplicaSet, revisions, status and conditions
(``deployment``), or I/O. Steps here change the plan only; ``deployment``
turns the plan into actions at the end.

One deliberate difference: availability is counted from the pods in the view
(ready for ``minReadySeconds`` at ``now``), not from the ReplicaSets'
``status.availableReplicas``, which lags the pods by one ReplicaSet sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshwork.core.reconcile import ObjectRef, RecordEvent
from meshwork.core.reconcile.podtemplate import parse_time
from meshwork.model.base import IntOrString
from meshwork.model.workloads import Deployment, ReplicaSet

DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"


@dataclass
class PlannedRS:
    """One owned ReplicaSet: what is stored, what this sync wants, and its pods."""

    obj: ReplicaSet
    replicas: int
    annotations: dict[str, str]
    min_ready_seconds: int | None
    created: bool = False
    actual: int = 0  # active pods (upstream status.replicas)
    ready: int = 0
    available: int = 0
    running: int = 0  # pods not Succeeded/Failed, terminating included

    @property
    def name(self) -> str:
        return self.obj.metadata.name or ""

    @property
    def stored_replicas(self) -> int:
        return 0 if self.created else self.obj.spec.replicas

    def sort_key(self) -> tuple[float, str]:
        """Upstream ``ReplicaSetsByCreationTimestamp``: oldest first, then by name."""
        created = parse_time(self.obj.metadata.creation_timestamp)
        return (created if created is not None else float("inf"), self.name)


@dataclass
class Plan:
    """The working state of one Deployment sync."""

    deploy: Deployment
    now: float
    about: ObjectRef
    new: PlannedRS | None = None
    old: list[PlannedRS] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return self.deploy.spec.replicas or 0

    def all(self) -> list[PlannedRS]:
        return [*self.old, *([self.new] if self.new else [])]


# ---------------------------------------------------------------------------
# Fenceposts
# ---------------------------------------------------------------------------


def scaled_value(value: IntOrString | None, total: int, *, round_up: bool) -> int:
    """Upstream ``GetScaledValueFromIntOrPercent``: an int, or a percent of ``total``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    return -(-percent * total // 100) if round_up else percent * total // 100


def fenceposts(deploy: Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas (``ResolveFenceposts``).

    Surge rounds up, unavailable rounds down; when both come out 0,
    unavailable becomes 1 so that the rollout can progress. Not a rolling
    update: (0, 0).
    """
    strategy = deploy.spec.strategy
    ru = strategy.rolling_update
    if strategy.type != "RollingUpdate" or ru is None:
        return 0, 0
    desired = deploy.spec.replicas or 0
    surge = scaled_value(ru.max_surge, desired, round_up=True)
    unavailable = scaled_value(ru.max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(deploy: Deployment) -> int:
    return fenceposts(deploy)[0]


def max_unavailable(deploy: Deployment) -> int:
    """Upstream ``MaxUnavailable``: 0 unless rolling with replicas, capped at replicas."""
    desired = deploy.spec.replicas or 0
    if deploy.spec.strategy.type != "RollingUpdate" or desired == 0:
        return 0
    return min(fenceposts(deploy)[1], desired)


# ---------------------------------------------------------------------------
# Scaling one ReplicaSet
# ---------------------------------------------------------------------------


def set_replicas_annotations(plan: Plan, rs: PlannedRS) -> bool:
    """Record desired and max replicas on ``rs`` (``SetReplicasAnnotations``)."""
    desired = str(plan.replicas)
    maximum = str(plan.replicas + max_surge(plan.deploy))
    changed = False
    for key, value in ((DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, maximum)):
        if rs.annotations.get(key) != value:
            rs.annotations[key] = value
            changed = True
    return changed


def scale(plan: Plan, rs: PlannedRS, new_scale: int) -> None:
    """Upstream ``scaleReplicaSet``: set the size and the replicas annotations."""
    set_replicas_annotations(plan, rs)
    if rs.replicas != new_scale:
        direction = "up" if rs.replicas < new_scale else "down"
        plan.events.append(RecordEvent(plan.about, "Normal", "ScalingReplicaSet",
                           f"Scaled {direction} replica set {rs.name} to {new_scale} from {rs.replicas}"))  # fmt: skip
        rs.replicas = new_scale


def scale_and_record(plan: Plan, rs: PlannedRS, new_scale: int) -> bool:
    """Upstream ``scaleReplicaSetAndRecordEvent``: nothing at all when the size is right."""
    if rs.replicas == new_scale:
        return False
    scale(plan, rs, new_scale)
    return True


def _total(rss: list[PlannedRS]) -> int:
    return sum(rs.replicas for rs in rss)


def new_rs_replicas(plan: Plan, new: PlannedRS) -> int:
    """Upstream ``NewRSNewReplicas``: how far the new ReplicaSet may grow now."""
    if plan.deploy.spec.strategy.type != "RollingUpdate":
        return plan.replicas
    current = _total([rs for rs in plan.all() if rs is not new]) + new.replicas
    max_total = plan.replicas + max_surge(plan.deploy)
    if current >= max_total:
        return new.replicas
    return new.replicas + min(max_total - current, plan.replicas - new.replicas)


# ---------------------------------------------------------------------------
# RollingUpdate
# ---------------------------------------------------------------------------


def reconcile_new_rs(plan: Plan) -> bool:
    """Grow (within surge) or shrink the new ReplicaSet; True when it was scaled."""
    new = plan.new
    if new is None or new.replicas == plan.replicas:
        return False
    if new.replicas > plan.replicas:
        return scale_and_record(plan, new, plan.replicas)
    return scale_and_record(plan, new, new_rs_replicas(plan, new))


def _cleanup_unhealthy(plan: Plan, old: list[PlannedRS], budget: int) -> int:
    """Scale down old ReplicaSets' unavailable pods first, oldest first, up to ``budget``."""
    done = 0
    for rs in sorted(old, key=PlannedRS.sort_key):
        if done >= budget:
            break
        if rs.replicas == 0 or rs.replicas <= rs.available:
            continue
        step = min(budget - done, rs.replicas - rs.available)
        scale_and_record(plan, rs, rs.replicas - step)
        done += step
    return done


def _scale_down_old_for_rolling(plan: Plan, old: list[PlannedRS]) -> int:
    """Scale down old ReplicaSets, oldest first, while availability stays above the floor."""
    min_available = plan.replicas - max_unavailable(plan.deploy)
    available = sum(rs.available for rs in plan.all())
    if available <= min_available:
        return 0
    allowed = available - min_available
    done = 0
    for rs in sorted(old, key=PlannedRS.sort_key):
        if done >= allowed:
            break
        if rs.replicas == 0:
            continue
        step = min(rs.replicas, allowed - done)
        scale_and_record(plan, rs, rs.replicas - step)
        done += step
    return done


def reconcile_old_rss(plan: Plan) -> bool:
    """Upstream ``reconcileOldReplicaSets``; True when an old ReplicaSet was scaled down.

    The budget: all pods, minus the availability floor, minus the new
    ReplicaSet's pods that are not available yet (they may never become so).
    """
    old = [rs for rs in plan.old if rs.replicas > 0]
    if not old:
        return False
    new_unavailable = (plan.new.replicas - plan.new.available) if plan.new else 0
    min_available = plan.replicas - max_unavailable(plan.deploy)
    budget = _total(plan.all()) - min_available - new_unavailable
    if budget <= 0:
        return False
    cleaned = _cleanup_unhealthy(plan, old, budget)
    scaled = _scale_down_old_for_rolling(plan, old)
    return cleaned + scaled > 0


# ---------------------------------------------------------------------------
# Recreate
# ---------------------------------------------------------------------------


def scale_down_old_for_recreate(plan: Plan) -> bool:
    """Every active old ReplicaSet to 0; True when one was scaled."""
    scaled = False
    for rs in plan.old:
        if rs.replicas > 0:
            scaled = scale_and_record(plan, rs, 0) or scaled
    return scaled


def old_pods_running(plan: Plan) -> bool:
    """Upstream ``oldPodsRunning``: any old pod not Succeeded/Failed, terminating included."""
    for rs in plan.old:
        status_replicas = rs.obj.status.replicas if rs.obj.status else 0
        if rs.running > 0 or status_replicas > 0:
            return True
    return False


# ---------------------------------------------------------------------------
# Scaling a Deployment (replicas changed, or paused)
# ---------------------------------------------------------------------------


def _desired_annotation(rs: PlannedRS) -> int | None:
    try:
        return int(rs.annotations[DESIRED_REPLICAS_ANNOTATION])
    except (KeyError, ValueError):
        return None


def is_scaling_event(plan: Plan) -> bool:
    """An active ReplicaSet was sized for a different spec.replicas (``isScalingEvent``)."""
    for rs in plan.all():
        desired = _desired_annotation(rs)
        if rs.replicas > 0 and desired is not None and desired != plan.replicas:
            return True
    return False


def _active_or_latest(plan: Plan) -> PlannedRS | None:
    """Upstream ``FindActiveOrLatest``: the only active ReplicaSet, or the newest if none is."""
    if plan.new is None and not plan.old:
        return None
    newest_first = sorted(plan.old, key=PlannedRS.sort_key, reverse=True)
    active = [rs for rs in [*newest_first, *([plan.new] if plan.new else [])] if rs.replicas > 0]
    if not active:
        return plan.new or newest_first[0]
    return active[0] if len(active) == 1 else None


def _is_saturated(plan: Plan) -> bool:
    new = plan.new
    return (
        new is not None
        and _desired_annotation(new) == plan.replicas
        and new.replicas == plan.replicas
        and new.available == plan.replicas
    )


def _fraction(plan: Plan, rs: PlannedRS) -> int:
    """Upstream ``getReplicaSetFraction``: this ReplicaSet's share of a resize."""
    if plan.replicas == 0:
        return -rs.replicas
    allowed = plan.replicas + max_surge(plan.deploy)
    try:
        annotated = int(rs.annotations[MAX_REPLICAS_ANNOTATION])
    except (KeyError, ValueError):
        annotated = (plan.deploy.status.replicas if plan.deploy.status else None) or 0
    if annotated <= 0:
        return 0
    exact = rs.replicas * allowed / annotated
    rounded = int(exact + 0.5) if exact >= 0 else -int(-exact + 0.5)  # Go math.Round
    return rounded - rs.replicas


def scale_deployment(plan: Plan) -> None:
    """Upstream ``scale``: resize the ReplicaSets when spec.replicas changed.

    One active ReplicaSet (or none): it alone takes the new size. A saturated
    new ReplicaSet: old ones go to 0. Mid-rollout: the change is spread over
    the active ReplicaSets in proportion to their size (``GetProportion``),
    the larger (newer on ties when adding, older when removing) first, and the
    rounding leftover goes to the first.
    """
    target = _active_or_latest(plan)
    if target is not None:
        # Upstream returns early when the size is right; refreshing the annotations
        # too keeps a hand-edited desired-replicas from reading as a scaling event forever.
        scale(plan, target, plan.replicas)
        return
    if _is_saturated(plan):
        for rs in plan.old:
            if rs.replicas > 0:
                scale_and_record(plan, rs, 0)
        return
    if plan.deploy.spec.strategy.type != "RollingUpdate":
        return
    active = [rs for rs in plan.all() if rs.replicas > 0]
    allowed = plan.replicas + max_surge(plan.deploy) if plan.replicas > 0 else 0
    to_add = allowed - _total(active)
    by_age = sorted(active, key=PlannedRS.sort_key)
    if to_add > 0:  # ReplicaSetsBySizeNewer
        ordered = sorted(reversed(by_age), key=lambda rs: -rs.replicas)
    else:  # ReplicaSetsBySizeOlder
        ordered = sorted(by_age, key=lambda rs: -rs.replicas)
    sizes: dict[int, int] = {}
    added = 0
    for rs in ordered:
        share = 0
        if to_add != 0 and added != to_add:
            fraction = _fraction(plan, rs)
            share = min(fraction, to_add - added) if to_add > 0 else max(fraction, to_add - added)
        sizes[id(rs)] = rs.replicas + share
        added += share
    if to_add != 0 and ordered:
        first = id(ordered[0])
        sizes[first] = max(sizes[first] + to_add - added, 0)
    for rs in ordered:
        scale(plan, rs, sizes[id(rs)])
