"""The in-memory store: the ``Store`` semantics with no files, for fast tests.

It keeps the same revisions, resourceVersion stamping, compare-and-swap,
watch history, compaction and ``Gone`` as the SQLite store, so a component
tested against it behaves the same on SQLite. Nothing is durable: the data
lives as long as the object. Must not live here: anything SQLite-specific or
any shortcut the durable backends cannot also honour.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
from typing import Any

from meshwork.control.store.base import EventType, Record, WatchEvent
from meshwork.control.store.watch import (
    DEFAULT_RETENTION_REVISIONS,
    DEFAULT_RETENTION_SECONDS,
    WATCH_QUEUE_MAX,
    ObjectCache,
    Retention,
    WatchHub,
    WatchStream,
    already_exists,
    conflict,
    gone,
    not_found,
    open_watch,
    restamp_value,
    run_compactor,
    set_resource_version,
    stamp_value,
    stop_task,
)


class MemoryStore:
    """A ``Store`` held in a dict and a list of events.

    ``compact_interval`` (seconds, None to disable) runs the same background
    compaction as the SQLite store, keeping ``retention_seconds`` and at least
    ``retention_revisions`` of history.
    """

    def __init__(
        self,
        *,
        compact_interval: float | None = None,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        retention_revisions: int = DEFAULT_RETENTION_REVISIONS,
        watch_queue_size: int = WATCH_QUEUE_MAX,
    ) -> None:
        self._data = ObjectCache()
        self._log: list[WatchEvent] = []  # ascending revisions > _compacted
        self._log_revs: list[int] = []  # revisions of _log, for bisect
        self._revision = 0
        self._compacted = 0
        self._hub = WatchHub(watch_queue_size)
        self._retention = Retention(retention_seconds, retention_revisions)
        self._compact_interval = compact_interval
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    async def _enter(self) -> None:
        """Yield once, as a real store does on every call, then check the store is open.

        Without the yield a loop of writes would never let other tasks run,
        which no durable backend allows either.
        """
        await asyncio.sleep(0)
        if self._closed:
            raise RuntimeError("store is closed")
        if self._compactor is None and self._compact_interval:
            self._compactor = asyncio.get_running_loop().create_task(
                run_compactor(self, self._retention, self._compact_interval)
            )

    async def get(self, key: str) -> Record:
        await self._enter()
        rec = self._data.get(key)
        if rec is None:
            raise not_found(key)
        return rec

    async def list(self, prefix: str) -> tuple[builtins.list[Record], int]:
        await self._enter()
        return self._data.list(prefix), self._revision

    def _commit(self, kind: EventType, record: Record) -> None:
        ev = WatchEvent(kind, record)
        self._revision = record.mod_revision
        self._data.apply(ev)
        self._log.append(ev)
        self._log_revs.append(record.mod_revision)
        self._hub.publish((ev,))

    def _current(self, key: str, expected_revision: int | None) -> Record:
        rec = self._data.get(key)
        if rec is None:
            raise not_found(key)
        if expected_revision is not None and rec.mod_revision != expected_revision:
            raise conflict(key)
        return rec

    async def create(self, key: str, obj: dict[str, Any]) -> Record:
        await self._enter()
        if key in self._data:
            raise already_exists(key)
        rev = self._revision + 1
        rec = Record(key, stamp_value(obj, rev), rev, rev)
        self._commit("ADDED", rec)
        set_resource_version(obj, rev)
        return rec

    async def update(
        self, key: str, obj: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        await self._enter()
        old = self._current(key, expected_revision)
        rev = self._revision + 1
        rec = Record(key, stamp_value(obj, rev), old.create_revision, rev)
        self._commit("MODIFIED", rec)
        set_resource_version(obj, rev)
        return rec

    async def delete(self, key: str, expected_revision: int | None = None) -> Record:
        await self._enter()
        old = self._current(key, expected_revision)
        rev = self._revision + 1
        rec = Record(key, restamp_value(old.value, rev), old.create_revision, rev)
        self._commit("DELETED", rec)
        return rec

    def watch(self, prefix: str, from_revision: int) -> WatchStream:
        """Changes under ``prefix`` after ``from_revision`` (0: from now).

        Raises ``Gone`` at once if that history was compacted; the stream also
        ends with ``Gone`` if its consumer falls ``watch_queue_size`` events
        behind (re-list, then watch from the list's revision).
        """
        return open_watch(
            self._hub, prefix, from_revision,
            revision=self._revision, compacted=self._compacted, closed=self._closed,
            history=self._history,
        )  # fmt: skip

    async def _history(self, prefix: str, after: int, limit: int) -> builtins.list[WatchEvent]:
        if after < self._compacted:
            raise gone(after, self._compacted)
        out: builtins.list[WatchEvent] = []
        for ev in self._log[bisect.bisect_right(self._log_revs, after) :]:
            if ev.record.key.startswith(prefix):
                out.append(ev)
                if len(out) == limit:
                    break
        return out

    async def compact(self, revision: int) -> None:
        await self._enter()
        if revision > self._revision:
            raise ValueError(f"cannot compact to {revision}: the store is at {self._revision}")
        if revision <= self._compacted:
            return
        cut = bisect.bisect_right(self._log_revs, revision)
        del self._log[:cut]
        del self._log_revs[:cut]
        self._compacted = revision

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await stop_task(self._compactor)
        self._hub.close()
