"""The controllers' shell: a workqueue of keys, views from the watch cache, actions as CAS writes.

Each controller is a pure ``reconcile`` (``meshwork.core.reconcile``) plus
two small adapters: which keys an object change concerns, and how to build
the view a key's reconcile reads. The runner owns everything else, as
controller-runtime's does:

* the queue de-duplicates keys, and a key is never reconciled twice at once
  (one worker: keys are reconciled one after another);
* ``requeue_after`` schedules a later look; an exception retries with
  exponential back-off (5 ms doubling to 60 s); ``TerminalError`` is logged
  and not retried;
* actions are applied in order through ``Objects`` (the API's own rules);
  a conflict or a vanished object stops the rest and reconciles the key again
  from the new state, never overwriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from meshwork.control.api.cache import CachedEvent, WatchCache, resource_of
from meshwork.control.api.objects import DeleteOptions, Objects, new_uid, now_rfc3339
from meshwork.core.reconcile import (
    Action,
    CreateObject,
    DeleteObject,
    Outcome,
    RecordEvent,
    UpdateObject,
    UpdateStatus,
)
from meshwork.errors import AlreadyExists, ApiError, Conflict, NotFound, TerminalError
from meshwork.model.base import to_wire
from meshwork.model.kinds import REGISTRY

log = logging.getLogger(__name__)

# controller-runtime's default rate limiter: 5 ms doubling, capped.
BACKOFF_BASE_S = 0.005
BACKOFF_MAX_S = 60.0
# The fields of a /status write's body the API reads.
_STATUS_BODY = {"api_version", "kind", "metadata", "status"}


@dataclass(frozen=True)
class Controller:
    """A pure reconcile and its two adapters to the cache."""

    name: str
    keys_for: Callable[[CachedEvent], Iterable[str]]
    initial_keys: Callable[[], Iterable[str]]
    reconcile: Callable[[str, float], Outcome]
    # The resources whose changes may concern it (``keys_for`` sees no other);
    # None: every change. Most changes (Events, say) concern few controllers.
    resources: frozenset[str] | None = None


def _named(event: RecordEvent, created: dict[str, list[str]]) -> RecordEvent:
    """A pure reconcile names a pod it creates by its generateName ("Created pod:
    web-5d9f-"): put in the name the server chose, as upstream's event says."""
    prefix, _, name = event.message.rpartition(" ")
    names = created.get(name)
    if not prefix or not names:
        return event
    return RecordEvent(event.about, event.type, event.reason, f"{prefix} {names.pop(0)}")


class Runner:
    def __init__(
        self,
        objects: Objects,
        cache: WatchCache,
        controllers: Iterable[Controller],
        *,
        clock: Callable[[], float] = time.time,
        component: str = "meshwork-controller-manager",
    ) -> None:
        self._objects = objects
        self._cache = cache
        self._controllers = {c.name: c for c in controllers}
        self._routes: dict[str, list[Controller]] = {}  # resource -> controllers it concerns
        self._clock = clock
        self._component = component
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._failures: dict[tuple[str, str], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None
        # Events are best effort and order nothing: written in the background, so a
        # reconcile waits for its object writes only (their fsyncs batch with the events').
        self._events: set[asyncio.Task[None]] = set()
        self.reconciles = 0
        self._busy = False  # a reconcile or its writes are in progress

    async def start(self) -> None:
        self._cache.add_listener(self._on_event)
        for controller in self._controllers.values():
            for key in controller.initial_keys():
                self.enqueue(controller.name, key)
        self._task = asyncio.create_task(self._work(), name="controllers")

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._events:
            await asyncio.wait(list(self._events), timeout=5.0)

    # -- the queue ---------------------------------------------------------

    def _on_event(self, event: CachedEvent) -> None:
        resource = resource_of(event.key)
        routes = self._routes.get(resource)
        if routes is None:
            routes = self._routes[resource] = [
                c for c in self._controllers.values() if c.resources is None or resource in c.resources
            ]
        for controller in routes:
            try:
                keys = list(controller.keys_for(event))
            except Exception:
                log.exception("%s: mapping %s to keys failed", controller.name, event.key)
                continue
            for key in keys:
                self.enqueue(controller.name, key)

    @property
    def settled(self) -> bool:
        """No key is queued or being reconciled (timers for later looks may still wait)."""
        return not self._queued and not self._busy

    def enqueue(self, controller: str, key: str) -> None:
        item = (controller, key)
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    def _enqueue_after(self, item: tuple[str, str], delay: float) -> None:
        old = self._timers.pop(item, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(item, None)
            self.enqueue(*item)

        self._timers[item] = asyncio.get_running_loop().call_later(delay, fire)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._queued.discard(item)
            self._busy = True
            try:
                await self._reconcile(item)
            finally:
                self._busy = False
            # A reconcile that wrote nothing never suspended (nor does the queue's
            # get while keys wait): let the loop serve requests and deliver watch
            # events between reconciles, or a burst of them holds it.
            await asyncio.sleep(0)

    async def _reconcile(self, item: tuple[str, str]) -> None:
        controller = self._controllers[item[0]]
        try:
            outcome = controller.reconcile(item[1], self._clock())
            self.reconciles += 1
            applied = await self._apply(outcome)
        except asyncio.CancelledError:
            raise
        except TerminalError as exc:
            log.warning("%s %s: %s (not retried)", controller.name, item[1], exc)
            self._failures.pop(item, None)
            return
        except Exception:
            failures = self._failures.get(item, 0) + 1
            self._failures[item] = failures
            delay = min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)
            log.exception("%s %s failed (attempt %d); retrying in %.3fs", controller.name, item[1], failures, delay)
            self._enqueue_after(item, delay)
            return
        self._failures.pop(item, None)
        if not applied:
            self.enqueue(*item)  # the world moved under us: look again
        elif outcome.requeue_after is not None:
            self._enqueue_after(item, max(0.0, outcome.requeue_after))

    # -- applying actions ------------------------------------------------------

    async def _apply(self, outcome: Outcome) -> bool:
        """Apply actions in order; False when one found the world changed (409/404).

        A run of consecutive creates (a ReplicaSet's slow-start batch) or deletes
        goes out together, as upstream's controllers fire a batch in parallel: the
        store commits them in one group instead of one fsync each.
        """
        created: dict[str, list[str]] = {}  # generateName -> names the server gave
        # Our own writes move an object's resourceVersion: a later action on the
        # same object that started from the old one continues from ours (it could
        # not have succeeded had anyone else written in between).
        moved: dict[tuple[str, str | None, str], tuple[str, str]] = {}
        actions = list(outcome.actions)
        i = 0
        while i < len(actions):
            action = actions[i]
            if isinstance(action, CreateObject | DeleteObject):
                kind = type(action)
                j = i
                while j < len(actions) and type(actions[j]) is kind:
                    j += 1
                batch = actions[i:j]
                i = j
                results = await asyncio.gather(*(self._apply_one(a, moved) for a in batch), return_exceptions=True)
                for done, result in zip(batch, results, strict=True):
                    if isinstance(result, AlreadyExists) and isinstance(done, CreateObject):
                        continue  # created by an earlier pass whose write we had not seen yet
                    if isinstance(result, Conflict | NotFound):
                        log.debug("action %s: %s; reconciling again", type(done).__name__, result)
                        return False
                    if isinstance(result, BaseException):
                        raise result
                    if result and isinstance(done, CreateObject) and done.obj.metadata.generate_name:
                        created.setdefault(done.obj.metadata.generate_name, []).append(result)
                continue
            i += 1
            if isinstance(action, RecordEvent):
                action = _named(action, created)
            try:
                await self._apply_one(action, moved)
            except (Conflict, NotFound) as exc:
                log.debug("action %s: %s; reconciling again", type(action).__name__, exc)
                return False
        return True

    async def _apply_one(
        self, action: Action, moved: dict[tuple[str, str | None, str], tuple[str, str]]
    ) -> str | None:
        """Apply one action; for a create, the name the server gave the object."""
        objects = self._objects
        if isinstance(action, CreateObject | UpdateObject | UpdateStatus):
            obj = action.obj
            info = type(obj).info
            if isinstance(action, UpdateStatus):
                # A /status write takes only the status (and the resourceVersion
                # precondition) from the body: the rest is not worth serialising.
                wire = obj.model_dump(mode="json", by_alias=True, exclude_none=True, include=_STATUS_BODY)
            else:
                wire = to_wire(obj)
            namespace = obj.metadata.namespace if info.namespaced else None
            if isinstance(action, CreateObject):
                _, stored = await objects.create(info, namespace, wire)
                return str(stored["metadata"]["name"])
            name = obj.metadata.name or ""
            ident = (info.resource, namespace, name)
            rv = wire.get("metadata", {}).get("resourceVersion")
            if ident in moved and moved[ident][0] == rv:
                wire["metadata"]["resourceVersion"] = moved[ident][1]
            sub = "status" if isinstance(action, UpdateStatus) else None
            # A status model's dump is valid as it stands: the API need not validate it again.
            record = await objects.update(info, namespace, name, wire, subresource=sub, status_validated=sub is not None)
            if rv is not None:
                moved[ident] = (str(rv), str(record.mod_revision))
        elif isinstance(action, DeleteObject):
            target = REGISTRY.for_group_kind(action.group, action.kind)
            if target is None:
                raise ApiError(f"cannot delete unknown kind {action.group}/{action.kind}")
            try:
                await objects.delete(
                    target, action.namespace, action.name,
                    DeleteOptions(action.propagation, action.grace_period, precondition_uid=action.uid),
                )
            except NotFound:
                pass  # already gone: what we wanted
        elif isinstance(action, RecordEvent):
            task = asyncio.create_task(self._record_quietly(action))
            self._events.add(task)
            task.add_done_callback(self._events.discard)
        return None

    async def _record_quietly(self, action: RecordEvent) -> None:
        try:
            await self._record(action)
        except Exception as exc:  # an event that cannot be written is logged, never retried
            log.warning("event %s %s not recorded: %s", action.reason, action.about.name, exc)

    async def _record(self, action: RecordEvent) -> None:
        about = action.about
        info = REGISTRY.for_group_kind("", "Event")
        assert info is not None
        namespace = about.namespace or "default"
        now = now_rfc3339()
        involved: dict[str, Any] = {"kind": about.kind, "name": about.name, "namespace": about.namespace}
        owner_info = REGISTRY.for_group_kind(about.group, about.kind)
        if owner_info is not None:
            involved["apiVersion"] = owner_info.api_version
        if about.uid:
            involved["uid"] = about.uid
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # Kubernetes names events <object>.<unique hex suffix>.
            "metadata": {"name": f"{about.name}.{new_uid().replace('-', '')[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": action.reason,
            "message": action.message,
            "type": action.type,
            "source": {"component": self._component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self._component,
        }
        with contextlib.suppress(AlreadyExists):
            await self._objects.create(info, namespace, event)
