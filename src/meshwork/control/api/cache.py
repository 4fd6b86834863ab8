"""The API server's watch cache: every stored object in memory, kept current by one store watch.

Lists and gets are served from here (a list of 10,000 pods is a join of stored
JSON bytes, with no decoding); watches fan out from here, so a hundred
watchers cost one store watch. A write handler waits for its own revision to
reach the cache (``wait_for``) before answering, so a client always reads its
own writes.

The cache keeps a ring of recent events. A watch that resumes from a revision
still in the ring is served from memory; an older one is served by the store's
own history (``Store.watch``), which answers ``Gone`` once compacted.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshwork.control.store import values
from meshwork.control.store.base import EventType, Record, Store, WatchEvent
from meshwork.errors import Gone

log = logging.getLogger(__name__)

# Events kept in memory for watch resumption; older resumptions go to the store.
RING_EVENTS = 20_000
# Per-watcher queue bound: a watcher that falls this far behind is cut off with
# 410 and must re-list, as Kubernetes does, instead of growing memory without end.
WATCHER_QUEUE = 10_000


class CachedObject:
    """A record and its decoded form, decoded at most once and only when needed."""

    __slots__ = ("_obj", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self._obj: dict[str, Any] | None = None

    @property
    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = values.loads(self.record.value)
        return self._obj

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def revision(self) -> int:
        return self.record.mod_revision


@dataclass(frozen=True, slots=True)
class CachedEvent:
    type: EventType
    item: CachedObject

    @property
    def revision(self) -> int:
        return self.item.revision

    @property
    def key(self) -> str:
        return self.item.key


def resource_of(key: str) -> str:
    return key[: key.index("/")]


@dataclass(eq=False)
class Subscription:
    """One watcher's queue. ``prefix`` filters by key before anything is queued."""

    prefix: str
    queue: asyncio.Queue[CachedEvent | None] = field(
        default_factory=lambda: asyncio.Queue(WATCHER_QUEUE)
    )
    overflowed: bool = False
    timed_out: bool = False

    def offer(self, event: CachedEvent) -> bool:
        """Queue ``event`` if it is ours; False when the watcher fell too far behind."""
        if not event.key.startswith(self.prefix):
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True


Listener = Callable[[CachedEvent], None]
Predicate = Callable[[CachedObject], bool]


@dataclass(eq=False)
class Index:
    """The keys of one resource's objects for which ``predicate`` holds, kept current by the cache."""

    resource: str
    predicate: Predicate
    keys: set[str] = field(default_factory=set)

    def update(self, item: CachedObject, present: bool) -> None:
        if present and self.predicate(item):
            self.keys.add(item.key)
        else:
            self.keys.discard(item.key)


class WatchCache:
    def __init__(self, store: Store, *, ring_events: int = RING_EVENTS) -> None:
        self._store = store
        self._objects: dict[str, dict[str, CachedObject]] = {}
        self._ring: deque[CachedEvent] = deque(maxlen=ring_events)
        self._subs: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self._indexes: list[Index] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = 0
        self._task: asyncio.Task[None] | None = None
        self.revision = 0
        # The revision before the oldest event in the ring: resumption from here
        # or later is served from memory.
        self._ring_floor = 0
        self.ready = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._follow(), name="watch-cache")
        self.ready.set()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in list(self._subs):
            self._end(sub)
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.cancel()

    async def _load(self) -> None:
        records, revision = await self._store.list("")
        self._objects = {}
        for rec in records:
            self._objects.setdefault(resource_of(rec.key), {})[rec.key] = CachedObject(rec)
        self.revision = revision
        for index in self._indexes:
            self._fill(index)
        self._ring.clear()
        self._ring_floor = revision

    async def _follow(self) -> None:
        while True:
            try:
                async for event in self._store.watch("", self.revision):
                    self._apply(event)
            except asyncio.CancelledError:
                raise
            except Gone:
                # We fell behind the store's history: rebuild, and make every
                # watcher re-list, since we cannot prove they missed nothing.
                log.warning("watch cache fell behind the store; re-listing")
                for sub in list(self._subs):
                    sub.overflowed = True
                    self._end(sub)
                await self._load()
            except Exception:
                log.exception("watch cache: store watch failed; retrying")
                await asyncio.sleep(0.5)

    # -- applying changes --------------------------------------------------

    def _apply(self, event: WatchEvent) -> None:
        rec = event.record
        if rec.mod_revision <= self.revision:
            return  # already seen (a resumed store watch may repeat the boundary)
        item = CachedObject(rec)
        bucket_resource = resource_of(rec.key)
        bucket = self._objects.setdefault(bucket_resource, {})
        if event.type == "DELETED":
            bucket.pop(rec.key, None)
        else:
            bucket[rec.key] = item
        for index in self._indexes:
            if index.resource == bucket_resource:
                index.update(item, event.type != "DELETED")
        cached = CachedEvent(event.type, item)
        if len(self._ring) == self._ring.maxlen:
            self._ring_floor = self._ring[0].revision
        self._ring.append(cached)
        self.revision = rec.mod_revision
        for sub in list(self._subs):
            if not sub.offer(cached):
                self._end(sub)
        for listener in self._listeners:
            try:
                listener(cached)
            except Exception:
                log.exception("watch cache listener failed")
        while self._waiters and self._waiters[0][0] <= self.revision:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def _end(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)
        if sub.queue.full():
            # Make room for the end marker: the watcher is being cut off anyway.
            with contextlib.suppress(asyncio.QueueEmpty):
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    # -- reads -------------------------------------------------------------

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        """Return once the cache has applied ``revision``."""
        if self.revision >= revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_seq += 1
        heapq.heappush(self._waiters, (revision, self._waiter_seq, fut))
        await asyncio.wait_for(fut, timeout)

    def get(self, key: str) -> CachedObject | None:
        bucket = self._objects.get(resource_of(key))
        return bucket.get(key) if bucket else None

    def list(self, resource: str, namespace: str | None = None) -> builtins.list[CachedObject]:
        """Objects of ``resource`` (optionally one namespace), sorted by key."""
        bucket = self._objects.get(resource, {})
        if namespace is None:
            return [bucket[k] for k in sorted(bucket)]
        prefix = f"{resource}/{namespace}/"
        return [bucket[k] for k in sorted(bucket) if k.startswith(prefix)]

    def add_index(self, resource: str, predicate: Predicate) -> Index:
        """Keep the set of ``resource`` keys whose object satisfies ``predicate``.

        The predicate sees every object of ``resource`` once per change, so a
        reader that needs a small subset (bound pods, say) does not rescan the
        whole resource on every pass. Read it with ``list_index``.
        """
        index = Index(resource, predicate)
        self._fill(index)
        self._indexes.append(index)
        return index

    def _fill(self, index: Index) -> None:
        index.keys = {k for k, item in self._objects.get(index.resource, {}).items() if index.predicate(item)}

    def list_index(self, index: Index) -> builtins.list[CachedObject]:
        """The objects in ``index``, sorted by key (as ``list`` would return them)."""
        bucket = self._objects.get(index.resource, {})
        return [bucket[k] for k in sorted(index.keys) if k in bucket]

    def count(self, resource: str) -> int:
        return len(self._objects.get(resource, {}))

    def resources(self) -> builtins.list[str]:
        return [r for r, b in self._objects.items() if b]

    # -- watches -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` synchronously for every applied event (GC, controllers)."""
        self._listeners.append(listener)

    def can_resume(self, revision: int) -> bool:
        return revision >= self._ring_floor

    def subscribe(self, prefix: str, from_revision: int | None) -> Subscription:
        """A subscription to changes under ``prefix``.

        ``from_revision=None`` starts with a synthetic ADDED event for every
        current object (Kubernetes' "get state and start at most recent");
        otherwise it replays ring events after ``from_revision`` first. Raises
        ``Gone`` when the ring no longer reaches back that far: the caller
        should then watch the store directly.
        """
        sub = Subscription(prefix)
        if from_revision is None:
            resource = prefix[: prefix.index("/")]
            for item in self._objects.get(resource, {}).values():
                if item.key.startswith(prefix) and not sub.offer(CachedEvent("ADDED", item)):
                    raise Gone("too many objects for one watch; use list, then watch")
        else:
            if not self.can_resume(from_revision):
                raise Gone(f"too old resource version: {from_revision} ({self._ring_floor})")
            for event in self._ring:
                if event.revision > from_revision and not sub.offer(event):
                    raise Gone("too many events to replay; re-list and watch again")
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
