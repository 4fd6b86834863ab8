"""The order in which a ClusterQueue tries its waiting workloads. Pure.

A ClusterQueue picks its policy with the annotation
``meshwork.io/queueing-policy`` (Kueue has no such field; an annotation keeps
the manifest valid for real Kueue):

* ``FIFO``: first come, first served: creation time, then the store's
  creation revision (timestamps have one-second resolution).
* ``Priority`` (the default, which is Kueue's own order): higher workload
  priority first, then FIFO.
* ``ShortestJobFirst``: the smallest *aged* expected duration first, then FIFO.
  A workload that has waited ``w`` seconds counts as

      effective(w) = expected_duration - ageing_factor * w

  so every second of waiting takes ``ageing_factor`` seconds off its declared
  duration, and a long job is eventually ahead of any newcomer: a job of
  duration ``d`` that arrived at ``a`` is ahead of one of duration ``d'``
  arriving at ``a'`` once ``d + f*a < d' + f*a'``. Since all waiting
  workloads age at the same rate, their order among themselves never changes
  with time; it is the order of ``d + f * arrival``, which is what the key
  below uses (no clock needed). The factor comes from
  ``meshwork.io/sjf-ageing-factor`` (default ``DEFAULT_AGEING_FACTOR``).
  A workload without a valid ``meshwork.io/expected-duration`` counts as
  ``DEFAULT_EXPECTED_DURATION``. Priority is not consulted: pick
  ``Priority`` for that.

The ClusterQueue's ``queueingStrategy`` then says what a workload that does
not fit does to the ones behind it (``admission.py``): ``StrictFIFO`` blocks
them, ``BestEffortFIFO`` (Kueue's default) lets smaller ones past. Ageing
protects long jobs from starvation only under ``StrictFIFO`` or when every
job fits the quota alone; under ``BestEffortFIFO`` small jobs may keep
slipping past a big one that waits for a larger hole, as in Kueue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from meshwork.core.queue.workload import Workload

Policy = Literal["FIFO", "Priority", "ShortestJobFirst"]
POLICIES: tuple[Policy, ...] = ("FIFO", "Priority", "ShortestJobFirst")
ANNOTATION_POLICY = "meshwork.io/queueing-policy"
ANNOTATION_AGEING = "meshwork.io/sjf-ageing-factor"
DEFAULT_POLICY: Policy = "Priority"
# One second of waiting is worth a tenth of a second of declared run time: a job
# declared 10 min longer than its rivals waits at most 100 min for them.
DEFAULT_AGEING_FACTOR = 0.1
# A job that declares nothing is treated as an hour long (Slurm's default
# partition time limit is of this order); ageing still admits it in time.
DEFAULT_EXPECTED_DURATION = 3600.0


def policy_of(annotations: Mapping[str, str] | None) -> tuple[Policy, float] | str:
    """(policy, ageing factor) from a ClusterQueue's annotations, or why they are invalid."""
    raw = (annotations or {}).get(ANNOTATION_POLICY, DEFAULT_POLICY)
    aliases = {"fifo": "FIFO", "priority": "Priority", "shortestjobfirst": "ShortestJobFirst", "sjf": "ShortestJobFirst"}
    policy = aliases.get(raw.strip().lower())
    if policy is None:
        return f"{ANNOTATION_POLICY}: unknown policy {raw!r} (FIFO, Priority or ShortestJobFirst)"
    text = (annotations or {}).get(ANNOTATION_AGEING)
    factor = DEFAULT_AGEING_FACTOR
    if text is not None:
        try:
            factor = float(text)
        except ValueError:
            factor = -1.0
        if not (0 <= factor < float("inf")):
            return f"{ANNOTATION_AGEING}: must be a number >= 0, not {text!r}"
    return policy, factor  # type: ignore[return-value]


def order_key(w: Workload, policy: Policy, ageing: float = DEFAULT_AGEING_FACTOR) -> tuple[float, ...]:
    """Sort key: smallest first."""
    fifo = (w.arrival, float(w.sequence))
    if policy == "FIFO":
        return fifo
    if policy == "Priority":
        return (-float(w.priority), *fifo)
    duration = DEFAULT_EXPECTED_DURATION if w.duration is None else w.duration
    return (duration + ageing * w.arrival if w.arrival != float("inf") else float("inf"), *fifo)


def effective_duration(w: Workload, now: float, ageing: float = DEFAULT_AGEING_FACTOR) -> float:
    """The aged duration at ``now`` (for display; ordering uses ``order_key``)."""
    duration = DEFAULT_EXPECTED_DURATION if w.duration is None else w.duration
    return duration - ageing * max(0.0, now - w.arrival)


def ordered(workloads: Iterable[Workload], policy: Policy, ageing: float = DEFAULT_AGEING_FACTOR) -> list[Workload]:
    """``workloads`` in the order the queue tries them."""
    return sorted(workloads, key=lambda w: (*order_key(w, policy, ageing), w.key))
