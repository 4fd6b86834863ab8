"""Controllers' decisions: one pure ``reconcile`` per kind, and the actions they return.

The contract (controller-runtime's, STYLE.md §3.3):

* ``reconcile(key, view, now) -> Outcome``. The input is a key and a snapshot
  view of the objects it needs, never the event that woke it: reconciliation
  is level-based, so a deleted pod is observed as missing from the view.
* It is pure: no I/O, no clock (``now`` is a parameter), no randomness unless
  an injected ``random.Random``. The same view gives the same actions.
* It is idempotent: applying its actions and reconciling again gives no
  further actions.
* Actions are data (imperative names). The runner, a shell, applies them as
  compare-and-swap writes on ``resourceVersion``; a 409 means "reconcile
  again", never "overwrite". An exception means retry with back-off;
  ``meshwork.errors.TerminalError`` means record a condition and stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meshwork.model.base import Resource


@dataclass(frozen=True, slots=True)
class CreateObject:
    """Create ``obj`` (its metadata names namespace and name or generateName)."""

    obj: Resource


@dataclass(frozen=True, slots=True)
class UpdateObject:
    """Replace the main resource with ``obj``; its resourceVersion is the CAS precondition."""

    obj: Resource


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """Write ``obj.status`` through the status subresource (CAS on resourceVersion)."""

    obj: Resource


@dataclass(frozen=True, slots=True)
class DeleteObject:
    """Delete one object; ``uid`` (when given) is a precondition, so a replacement
    with the same name is never deleted by mistake."""

    group: str
    kind: str
    namespace: str | None
    name: str
    uid: str | None = None
    propagation: Literal["Background", "Foreground", "Orphan"] = "Background"
    grace_period: int | None = None  # None: the object's own (a pod's terminationGracePeriodSeconds)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an Event is about."""

    group: str
    kind: str
    namespace: str | None
    name: str
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """A Kubernetes Event (Scheduled, Started, Killing, BackOff, ScalingReplicaSet ...)."""

    about: ObjectRef
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = CreateObject | UpdateObject | UpdateStatus | DeleteObject | RecordEvent


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile decided: actions to apply, and when to look again
    (``requeue_after`` seconds; None: only when something changes)."""

    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.actions
