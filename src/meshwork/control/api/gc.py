"""Garbage collection: ownerReferences, deletion propagation, and namespace termination.

Level-triggered, like every controller here: cache events only say *which*
keys to look at; ``_reconcile(key)`` reads the current state and decides.

* A dependent whose owners are all gone is deleted (background propagation).
* An owner terminating with the ``orphan`` finalizer has its dependents'
  ownerReferences to it removed, then the finalizer.
* An owner terminating with ``foregroundDeletion`` has its dependents deleted
  first; the finalizer goes when none is left.
* A terminating Namespace has everything in it deleted, then goes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from meshwork.control.api import strategy
from meshwork.control.api.cache import CachedEvent, WatchCache, resource_of
from meshwork.control.api.objects import Objects
from meshwork.control.api.paths import object_key
from meshwork.errors import ApiError, NotFound
from meshwork.model.base import REGISTRY, KindInfo

log = logging.getLogger(__name__)

# A dependent whose owner is missing is deleted only after the owner has been
# missing this long, so that an owner and dependent created together never race.
ORPHAN_GRACE_S = 1.0


def _info_of_key(key: str) -> KindInfo | None:
    resource = resource_of(key)
    plural, _, group = resource.partition(".")
    return REGISTRY.for_resource(group, plural)


def _split_key(key: str) -> tuple[str | None, str]:
    _, namespace, name = key.split("/", 2)
    return (namespace or None), name


class GarbageCollector:
    def __init__(self, objects: Objects, cache: WatchCache) -> None:
        self._objects = objects
        self._cache = cache
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent keys
        self._owners: dict[str, tuple[str, ...]] = {}  # dependent key -> owner uids
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._missing_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        ns_resource = self._ns_resource()
        for resource in self._cache.resources():
            for item in self._cache.list(resource):
                value = item.record.value
                if b'"ownerReferences"' in value:
                    self._index(item.key, item.obj)
                    self._enqueue(item.key)
                if b'"deletionTimestamp"' in value or resource == ns_resource:
                    self._enqueue(item.key)
        self._cache.add_listener(self._on_event)
        self._task = asyncio.create_task(self._run(), name="garbage-collector")

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def _ns_resource() -> str:
        info = REGISTRY.for_group_kind("", "Namespace")
        assert info is not None
        return info.resource

    # -- index -------------------------------------------------------------

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        self._unindex(key)
        uids = tuple(strategy.owner_uids(obj))
        if uids:
            self._owners[key] = uids
            for uid in uids:
                self._dependents.setdefault(uid, set()).add(key)

    def _unindex(self, key: str) -> None:
        for uid in self._owners.pop(key, ()):
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[uid]

    def _on_event(self, event: CachedEvent) -> None:
        key, value = event.key, event.item.record.value
        had_owners = key in self._owners
        owners_before = self._owners.get(key, ())
        if event.type == "DELETED":
            self._unindex(key)
            obj = json.loads(value)
            uid = obj.get("metadata", {}).get("uid")
            for dep in sorted(self._dependents.get(uid, ())):
                self._enqueue(dep)
            for owner_uid in owners_before:
                owner_key = self._key_of_uid_owner(key, owner_uid, obj)
                if owner_key:
                    self._enqueue(owner_key)
            namespace, _ = _split_key(key)
            if namespace:
                self._enqueue(f"{self._ns_resource()}//{namespace}")
            return
        if b'"ownerReferences"' in value or had_owners:
            self._index(key, event.item.obj)
            self._enqueue(key)
        if b'"deletionTimestamp"' in value:
            self._enqueue(key)

    def _key_of_uid_owner(self, dep_key: str, owner_uid: str, dep_obj: dict[str, Any]) -> str | None:
        namespace, _ = _split_key(dep_key)
        for ref in dep_obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("uid") == owner_uid:
                info = REGISTRY.for_api_version(ref.get("apiVersion", ""), ref.get("kind", ""))
                if info is not None:
                    return object_key(info, namespace if info.namespaced else None, ref.get("name", ""))
        return None

    # -- work --------------------------------------------------------------

    def _enqueue(self, key: str) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _enqueue_later(self, key: str, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._enqueue(key)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                log.debug("gc: %s: %s; retrying", key, err)
                self._enqueue_later(key, 0.5)
            except Exception:
                log.exception("gc: reconciling %s failed; retrying", key)
                self._enqueue_later(key, 1.0)

    async def _reconcile(self, key: str) -> None:
        item = self._cache.get(key)
        if item is None:
            self._missing_since.pop(key, None)
            return
        obj = item.obj
        info = _info_of_key(key)
        if info is None:
            return
        namespace, name = _split_key(key)
        if await self._collect_orphan(key, info, namespace, name, obj):
            return
        if not strategy.is_terminating(obj):
            return
        if info.kind == "Namespace" and info.group == "":
            await self._terminate_namespace(key, name)
            return
        finalizers = strategy.finalizers_of(obj)
        uid = obj["metadata"].get("uid", "")
        if strategy.ORPHAN_FINALIZER in finalizers:
            for dep in sorted(self._dependents.get(uid, ())):
                await self._release(dep, uid)
            await self._drop_finalizer(info, namespace, name, strategy.ORPHAN_FINALIZER)
        elif strategy.FOREGROUND_FINALIZER in finalizers:
            deps = sorted(self._dependents.get(uid, ()))
            if deps:
                for dep in deps:
                    await self._delete_key(dep)
            else:
                await self._drop_finalizer(info, namespace, name, strategy.FOREGROUND_FINALIZER)

    async def _collect_orphan(
        self, key: str, info: KindInfo, namespace: str | None, name: str, obj: dict[str, Any]
    ) -> bool:
        """Delete ``obj`` when every owner it names is gone. True if it was deleted."""
        refs = obj.get("metadata", {}).get("ownerReferences") or []
        if not refs or strategy.is_terminating(obj):
            return False
        for ref in refs:
            owner_info = REGISTRY.for_api_version(ref.get("apiVersion", ""), ref.get("kind", ""))
            if owner_info is None:
                return False  # an owner of a kind we do not know: never collect on a guess
            owner = self._cache.get(object_key(owner_info, namespace if owner_info.namespaced else None, ref.get("name", "")))
            if owner is not None and owner.obj.get("metadata", {}).get("uid") == ref.get("uid"):
                self._missing_since.pop(key, None)
                return False
        first = self._missing_since.setdefault(key, time.monotonic())
        waited = time.monotonic() - first
        if waited < ORPHAN_GRACE_S:
            self._enqueue_later(key, ORPHAN_GRACE_S - waited + 0.05)
            return False
        self._missing_since.pop(key, None)
        await self._delete_key(key)
        return True

    async def _delete_key(self, key: str) -> None:
        info = _info_of_key(key)
        if info is None:
            return
        namespace, name = _split_key(key)
        with contextlib.suppress(NotFound):
            await self._objects.delete(info, namespace, name)

    async def _release(self, dep_key: str, owner_uid: str) -> None:
        """Remove the ownerReference to ``owner_uid`` from a dependent (orphan propagation)."""
        info = _info_of_key(dep_key)
        item = self._cache.get(dep_key)
        if info is None or item is None:
            return
        refs = item.obj.get("metadata", {}).get("ownerReferences") or []
        kept = [r for r in refs if r.get("uid") != owner_uid]
        if len(kept) == len(refs):
            return
        namespace, name = _split_key(dep_key)
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": str(item.revision)},
            {"op": "replace" if kept else "remove", "path": "/metadata/ownerReferences", **({"value": kept} if kept else {})},
        ]
        await self._objects.patch(info, namespace, name, ops, "json")

    async def _drop_finalizer(self, info: KindInfo, namespace: str | None, name: str, finalizer: str) -> None:
        item = self._objects.get(info, namespace, name)
        finalizers = [f for f in strategy.finalizers_of(item.obj) if f != finalizer]
        await self._objects.patch(
            info, namespace, name,
            {"metadata": {"finalizers": finalizers or None, "resourceVersion": str(item.revision)}},
            "merge",
        )

    async def _terminate_namespace(self, ns_key: str, namespace: str) -> None:
        remaining = 0
        for resource in self._cache.resources():
            info = _info_of_key(f"{resource}/")
            if info is None or not info.namespaced:
                continue
            for item in self._cache.list(resource, namespace):
                remaining += 1
                if not strategy.is_terminating(item.obj):
                    with contextlib.suppress(NotFound):
                        await self._objects.delete(info, namespace, item.obj["metadata"]["name"])
        if remaining == 0:
            current = self._cache.get(ns_key)
            if current is not None:
                with contextlib.suppress(NotFound):
                    record = await self._objects.store.delete(ns_key, current.revision)
                    await self._cache.wait_for(record.mod_revision)
        else:
            # Content with finalizers of its own may take a while: look again.
            self._enqueue_later(ns_key, 1.0)
