"""What both store backends share: watch fan-out, history retention, value stamping.

Lives here:

* ``WatchHub`` fans committed events out to live watchers, each through a
  bounded queue. A watcher whose queue overflows is cut off with ``Gone``
  (HTTP 410), exactly what a Kubernetes client already handles by re-listing
  and watching again; so a slow consumer never blocks writers and never
  grows memory without bound.
* ``WatchStream`` is the async iterator ``Store.watch`` returns: it replays
  history through a backend-supplied page reader, then follows live events,
  with no gap and no duplicate (it subscribes *before* reading history and
  drops any event whose revision it has already yielded).
* ``ObjectCache`` holds the current record of every key, sorted, so gets and
  prefix lists are answered from memory at the revision watchers were fed
  (the Kubernetes API server's watch cache does the same).
* ``Retention`` decides how far history may be compacted (a time window and a
  revision count, whichever keeps more), and ``run_compactor`` applies it.
* the store's error messages (``not_found``, ``conflict``, ``gone``, ...);
* ``stamp_value``/``restamp_value`` write ``metadata.resourceVersion`` and
  encode compact JSON, the one wire form both backends store.

Must not live here: SQL, files, threads, or anything a single backend owns.
Everything here runs on the event loop thread, except the pure stamping
helpers, which the SQLite writer thread also calls.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

from meshwork.control.store import values
from meshwork.control.store.base import Record, WatchEvent
from meshwork.errors import AlreadyExists, Conflict, Gone, NotFound

log = logging.getLogger(__name__)

# Events a live watcher may have queued before it is cut off with Gone. At the
# API's target write rate (2,000/s) that is about two seconds of falling
# behind; the queue holds references to events shared by all watchers.
WATCH_QUEUE_MAX = 4096

# Events read from history per page while a watch catches up, so replaying a
# long history never holds it all in memory at once.
HISTORY_PAGE = 1000

# Retention defaults: Kubernetes' API server compacts etcd every 5 minutes, and
# we always keep at least this many revisions so a briefly disconnected
# watcher can resume instead of re-listing.
DEFAULT_RETENTION_SECONDS = 300.0
DEFAULT_RETENTION_REVISIONS = 10_000
DEFAULT_COMPACT_INTERVAL = 60.0

# Page reader: events with revision > after under prefix, ascending, at most
# limit of them; raises Gone when history after ``after`` was compacted.
HistoryReader = Callable[[str, int, int], Awaitable[list[WatchEvent]]]


def not_found(key: str) -> NotFound:
    return NotFound(f'"{key}" not found')


def already_exists(key: str) -> AlreadyExists:
    return AlreadyExists(f'"{key}" already exists')


def conflict(key: str) -> Conflict:
    """A failed compare-and-swap, in the words Kubernetes uses."""
    return Conflict(
        f'Operation cannot be fulfilled on "{key}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def gone(from_revision: int, compacted: int) -> Gone:
    """The error for a watch that asks for history no longer held (Kubernetes' wording)."""
    return Gone(f"too old resource version: {from_revision} ({compacted + 1})")


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``[low, high)`` key range holding exactly the keys that start with ``prefix``.

    ``high`` is None when no upper bound is needed (the empty prefix, or one
    made only of U+10FFFF). Code-point order matches SQLite's BINARY collation
    over UTF-8, so the range works in SQL too.
    """
    stem = prefix.rstrip("\U0010ffff")  # nothing sorts after U+10FFFF: bump the char before
    if not stem:
        return prefix, None
    bump = ord(stem[-1]) + 1
    if 0xD800 <= bump <= 0xDFFF:  # surrogates cannot be encoded; none can be in a key
        bump = 0xE000
    return prefix, stem[:-1] + chr(bump)


class ObjectCache:
    """The current record of every key, kept sorted by key for prefix lists.

    Updated only through ``apply`` with committed events in revision order, so
    it always equals the store's state at the last applied revision.
    """

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records = {r.key: r for r in records}
        self._keys = sorted(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> Record | None:
        return self._records.get(key)

    def list(self, prefix: str) -> list[Record]:
        low, high = prefix_bounds(prefix)
        keys = self._keys
        start = bisect.bisect_left(keys, low)
        end = len(keys) if high is None else bisect.bisect_left(keys, high, start)
        records = self._records
        return [records[k] for k in keys[start:end]]

    def apply(self, event: WatchEvent) -> None:
        key = event.record.key
        if event.type == "DELETED":
            if self._records.pop(key, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            if key not in self._records:
                bisect.insort(self._keys, key)
            self._records[key] = event.record


class _Subscriber:
    """One live watcher's queue; filled by the hub, drained by its stream."""

    __slots__ = ("closed", "events", "gone", "limit", "prefix", "wakeup")

    def __init__(self, prefix: str, limit: int) -> None:
        self.prefix = prefix
        self.limit = limit
        self.events: deque[WatchEvent] = deque()
        self.wakeup = asyncio.Event()
        self.gone = False  # overflowed: the stream must raise Gone
        self.closed = False  # the store closed: the stream ends after its queue


class WatchHub:
    """Fans events out to subscribers. ``publish`` must be called in revision order."""

    def __init__(self, queue_max: int = WATCH_QUEUE_MAX) -> None:
        if queue_max < 1:
            raise ValueError("queue_max must be at least 1")
        self._queue_max = queue_max
        self._subs: set[_Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, prefix: str) -> _Subscriber:
        sub = _Subscriber(prefix, self._queue_max)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, events: Iterable[WatchEvent]) -> None:
        batch = list(events)
        if not batch or not self._subs:
            return
        for sub in list(self._subs):
            prefix = sub.prefix
            added = False
            for ev in batch:
                if ev.record.key.startswith(prefix):
                    if len(sub.events) >= sub.limit:
                        # Cut off: the client re-lists and watches again.
                        sub.gone = True
                        sub.events.clear()
                        self._subs.discard(sub)
                        added = True
                        log.warning(
                            "watch on %r fell %d events behind; ending it with 410 Gone",
                            prefix,
                            sub.limit,
                        )
                        break
                    sub.events.append(ev)
                    added = True
            if added:
                sub.wakeup.set()

    def close(self) -> None:
        """End every stream once it has drained what was already published."""
        for sub in self._subs:
            sub.closed = True
            sub.wakeup.set()
        self._subs.clear()


class WatchStream(AsyncIterator[WatchEvent]):
    """Changes under a prefix after a revision: history first, then live.

    Raises ``Gone`` when the history it needs is compacted while it catches
    up, or when it falls more than the hub's queue limit behind live writes;
    either way the caller re-lists and watches from the list's revision.
    Ends (``StopAsyncIteration``) after ``aclose()`` or when the store closes.
    """

    def __init__(
        self,
        hub: WatchHub,
        prefix: str,
        from_revision: int,
        history: HistoryReader | None,
    ) -> None:
        # Subscribe first: anything committed later reaches the queue, and
        # anything committed earlier is in history; overlap is dropped by revision.
        self._hub = hub
        self._sub = hub.subscribe(prefix)
        self._prefix = prefix
        self._last = from_revision
        self._history = history
        self._buffer: deque[WatchEvent] = deque()
        self._done = False

    @property
    def last_revision(self) -> int:
        """Revision of the newest event yielded (or the starting revision)."""
        return self._last

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._sub.gone:
                self._finish()
                raise Gone(
                    f"watch on {self._prefix!r} fell too far behind; re-list and watch again"
                )
            if self._buffer:
                ev = self._buffer.popleft()
                self._last = ev.revision
                return ev
            if self._history is not None:
                if self._sub.closed:
                    self._finish()
                    raise StopAsyncIteration
                try:
                    page = await self._history(self._prefix, self._last, HISTORY_PAGE)
                except BaseException:
                    self._finish()
                    raise
                if len(page) < HISTORY_PAGE:
                    self._history = None
                self._buffer.extend(ev for ev in page if ev.revision > self._last)
                continue
            queued = self._sub.events
            while queued:
                ev = queued.popleft()
                if ev.revision > self._last:
                    self._last = ev.revision
                    return ev
            if self._sub.closed:
                self._finish()
                raise StopAsyncIteration
            self._sub.wakeup.clear()
            await self._sub.wakeup.wait()

    def _finish(self) -> None:
        self._done = True
        self._buffer.clear()
        self._sub.events.clear()
        self._hub.unsubscribe(self._sub)

    async def aclose(self) -> None:
        """Stop watching; a pending ``__anext__`` returns StopAsyncIteration."""
        self.close()

    def close(self) -> None:
        if not self._done:
            self._finish()
            self._sub.closed = True
            self._sub.wakeup.set()


def open_watch(
    hub: WatchHub,
    prefix: str,
    from_revision: int,
    *,
    revision: int,
    compacted: int,
    closed: bool,
    history: HistoryReader,
) -> WatchStream:
    """The watch entry rule both backends share (see ``Store.watch``).

    0 means "from now"; a revision older than the compacted one is ``Gone`` at
    once; history is replayed only when there is some after ``from_revision``
    (later revisions arrive live: the stream subscribes before it reads).
    """
    if closed:
        raise RuntimeError("store is closed")
    if from_revision < 0:
        raise ValueError("from_revision must not be negative")
    if from_revision == 0:
        return WatchStream(hub, prefix, revision, None)
    if from_revision < compacted:
        raise gone(from_revision, compacted)
    return WatchStream(hub, prefix, from_revision, history if from_revision < revision else None)


class Retention:
    """How far history may be compacted: keep at least ``keep_seconds`` of it
    and at least the newest ``keep_revisions`` revisions.

    Time is known only through samples ``(when, revision)`` taken by
    ``observe`` (etcd's periodic compactor does the same), so after a restart
    nothing is compacted by age until ``keep_seconds`` have passed again.
    """

    def __init__(
        self,
        keep_seconds: float = DEFAULT_RETENTION_SECONDS,
        keep_revisions: int = DEFAULT_RETENTION_REVISIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if keep_seconds < 0 or keep_revisions < 0:
            raise ValueError("retention must not be negative")
        self.keep_seconds = keep_seconds
        self.keep_revisions = keep_revisions
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, revision: int) -> None:
        """Record that every revision up to ``revision`` exists now."""
        self._samples.append((self._clock(), revision))

    def compactable(self, revision: int) -> int:
        """The newest revision that may be forgotten when the store is at ``revision``."""
        by_count = revision - self.keep_revisions
        if self.keep_seconds == 0:
            by_age = revision
        else:
            cutoff = self._clock() - self.keep_seconds
            by_age = 0
            while self._samples and self._samples[0][0] <= cutoff:
                by_age = self._samples.popleft()[1]
            if by_age:
                # Keep the sample: it is still the base for the next call.
                self._samples.appendleft((cutoff, by_age))
        return max(0, min(by_count, by_age))


class Compactable(Protocol):
    @property
    def revision(self) -> int: ...

    @property
    def compacted_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...


async def run_compactor(
    store: Compactable,
    retention: Retention,
    interval: float,
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Every ``interval`` seconds, compact what ``retention`` allows, then run ``after``."""
    while True:
        await asyncio.sleep(interval)
        try:
            current = store.revision
            retention.observe(current)
            target = retention.compactable(current)
            if target > store.compacted_revision:
                await store.compact(target)
            if after is not None:
                await after()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep compacting on the next tick; say why this one failed
            log.exception("store compaction failed; retrying in %.0f s", interval)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def stamp_value(obj: dict[str, Any], revision: int) -> bytes:
    """Compact JSON of ``obj`` with ``metadata.resourceVersion = str(revision)``.

    ``obj`` itself is not changed (it may be read on another thread).
    """
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise TypeError("metadata must be a JSON object")
    return values.dumps({**obj, "metadata": {**meta, "resourceVersion": str(revision)}})


def restamp_value(value: bytes, revision: int) -> bytes:
    """A stored value re-encoded with ``metadata.resourceVersion = str(revision)``."""
    obj = values.loads(value)
    return stamp_value(obj, revision)


def set_resource_version(obj: dict[str, Any], revision: int) -> None:
    """Write the new resourceVersion into the caller's object, as the protocol promises."""
    meta = obj.setdefault("metadata", {})
    meta["resourceVersion"] = str(revision)
