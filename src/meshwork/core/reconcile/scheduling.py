"""Scheduling one pending pod: bind it, report why it cannot be placed, or preempt. Pure.

The placement itself is ``meshwork.core.scheduler.place``; this turns its
answer into the writes kube-scheduler makes:

* placed: ``spec.nodeName`` set (the binding) and a ``Scheduled`` event,
  "Successfully assigned ns/name to node";
* not placed: the ``PodScheduled=False`` condition with reason
  ``Unschedulable`` and upstream's message, and a ``FailedScheduling``
  warning, only when that message changed (so a stuck pod does not flood
  events); looked at again when the cluster changes in a way that may make
  room (the shell decides which changes those are), and after ``RETRY_S``
  at the latest;
* preemption: the victims are deleted and ``status.nominatedNodeName`` set.
"""

from __future__ import annotations

from meshwork.core.reconcile import (
    Action,
    DeleteObject,
    ObjectRef,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.core.reconcile.podtemplate import rfc3339
from meshwork.core.scheduler import DEFAULT_CONFIG, Placement, SchedulerConfig, place
from meshwork.core.scheduler_filters import ClusterSnapshot
from meshwork.model.pod import Pod, PodCondition, PodStatus

# The longest an unschedulable pod waits for another attempt when no cluster
# event moved it first: kube-scheduler's podMaxInUnschedulablePodsDuration.
RETRY_S = 300.0


def reconcile_scheduling(pod: Pod, snapshot: ClusterSnapshot, now: float, config: SchedulerConfig = DEFAULT_CONFIG) -> Outcome:
    meta = pod.metadata
    if pod.spec.node_name or meta.deletion_timestamp:
        return Outcome()
    phase = pod.status.phase if pod.status else None
    if phase in ("Succeeded", "Failed"):
        return Outcome()
    ref = ObjectRef("", "Pod", meta.namespace, meta.name or "", meta.uid)
    result = place(pod, snapshot, config)
    if isinstance(result, Placement):
        # Shallow copies: the input is never mutated, and nothing here or in the
        # runner mutates the sub-objects the copies share with it.
        bound = pod.model_copy(update={"spec": pod.spec.model_copy(update={"node_name": result.node_name})})
        return Outcome((
            UpdateObject(bound),
            RecordEvent(ref, "Normal", "Scheduled",
                        f"Successfully assigned {meta.namespace}/{meta.name} to {result.node_name}"),
        ))
    actions: list[Action] = []
    nominated = None
    if result.preemption is not None:
        nominated = result.preemption.node_name
        actions.extend(
            DeleteObject("", "Pod", victim.namespace, victim.name, uid=victim.uid or None)
            for victim in result.preemption.victims
        )
    status = pod.status.model_copy() if pod.status else PodStatus()
    conditions = [c for c in status.conditions or [] if c.type != "PodScheduled"]
    previous = next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)
    changed = previous is None or previous.status != "False" or previous.message != result.message
    if changed or (nominated and status.nominated_node_name != nominated):
        condition = PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable", message=result.message,
            last_transition_time=rfc3339(now) if previous is None or previous.status != "False" else previous.last_transition_time,
        )
        status.conditions = [*conditions, condition]  # a new list: the input's is untouched
        if nominated:
            status.nominated_node_name = nominated
        actions.append(UpdateStatus(pod.model_copy(update={"status": status})))
        if changed:
            actions.append(RecordEvent(ref, "Warning", "FailedScheduling", result.message))
    return Outcome(tuple(actions), requeue_after=RETRY_S)
