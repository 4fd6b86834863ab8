"""The SQLite store: one durable file, group commit, watch history in a log table.

How it works:

* **Writes** go through one writer thread (``sqlite_writer``) that batches
  them into one transaction and one fsync (group commit; WAL mode,
  ``synchronous=FULL``); callers are answered and watchers fed on the event
  loop only after the commit, in revision order.
* **Reads** (``get``, ``list``) are answered from an in-memory copy of the
  current objects (``ObjectCache``), updated in revision order together with
  the watchers, so a list is a consistent snapshot at ``revision`` and costs
  microseconds per object; memory use is the size of the live objects (not
  of history). Watch history is read on a small pool of reader threads, each
  with its own connection, which WAL lets read while the writer commits.
* **Watch history** is the ``log`` table (one row per revision). A background
  task compacts it to the retention window (``Retention``) and truncates the
  WAL, so the file stays bounded under constant churn.
* **Space**: ``quota_bytes`` caps the database like etcd's
  ``--quota-backend-bytes``. A create or update that would grow it past the
  quota fails with ``InsufficientStorage`` (507); reads and watches still
  work, and deletes and compaction may use a small reserve above the quota,
  so space can be freed and writes resume without a restart. A full disk
  (ENOSPC) is also a 507, but there even a delete fails until space is freed,
  since every write needs room in the WAL.
* One process owns the file: ``<db>.lock`` is held (flock) while it is open.

Schema: ``kv(key, create_revision, mod_revision, value)``,
``log(revision, key, type, create_revision, value)`` and ``meta(k, v)`` with
the rows ``revision`` and ``compacted``. Values are compact JSON with
``metadata.resourceVersion`` already set.

Must not live here: watch fan-out and retention policy (``watch.py``), or
anything the etcd backend would have to imitate beyond the ``Store`` protocol.
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from meshwork.control.store.base import Record, WatchEvent
from meshwork.control.store.sqlite_writer import (
    CHECKPOINT,
    COMPACT,
    CREATE,
    DELETE,
    STOP,
    UPDATE,
    WRITE_BUSY_TIMEOUT_MS,
    Answer,
    Op,
    Writer,
    map_error,
)
from meshwork.control.store.watch import (
    DEFAULT_COMPACT_INTERVAL,
    DEFAULT_RETENTION_REVISIONS,
    DEFAULT_RETENTION_SECONDS,
    WATCH_QUEUE_MAX,
    ObjectCache,
    Retention,
    WatchHub,
    WatchStream,
    gone,
    not_found,
    open_watch,
    prefix_bounds,
    run_compactor,
    set_resource_version,
    stop_task,
)
from meshwork.errors import StoreCorrupt, StoreError

T = TypeVar("T")

SCHEMA_VERSION = 1

# etcd's default --quota-backend-bytes: a store past this refuses new data.
DEFAULT_QUOTA_BYTES = 2 * 1024**3
# History reader threads (watches catching up): the machine has 2 cores, and
# SQLite reads release the GIL.
READER_THREADS = 2
# Readers map this much of the file instead of copying pages through read():
# replaying 10,000 events then costs memory copies, not 5,000 system calls.
READ_MMAP_BYTES = 256 * 1024**2
# The WAL is kept at (and cut back to) this size between checkpoints.
WAL_SIZE_LIMIT = 16 * 1024 * 1024

# How long a reader waits on a lock (only WAL recovery or a TRUNCATE
# checkpoint's reset can hold one against readers).
READ_BUSY_TIMEOUT_MS = 5000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0), ('compacted', 0);
-- A history row applies itself to the current state and the revision, so the
-- writer stores a whole batch with one multi-row INSERT INTO log. A create of
-- a key that exists, or a change of one that does not, aborts the statement.
CREATE TRIGGER IF NOT EXISTS log_applies AFTER INSERT ON log BEGIN
    INSERT INTO kv SELECT NEW.key, NEW.create_revision, NEW.revision, NEW.value WHERE NEW.type = 'ADDED';
    SELECT RAISE(ABORT, 'no such key') WHERE NEW.type != 'ADDED'
        AND NOT EXISTS (SELECT 1 FROM kv WHERE key = NEW.key);
    UPDATE kv SET mod_revision = NEW.revision, value = NEW.value
        WHERE NEW.type = 'MODIFIED' AND key = NEW.key;
    DELETE FROM kv WHERE NEW.type = 'DELETED' AND key = NEW.key;
    UPDATE meta SET v = NEW.revision WHERE k = 'revision';
END;
"""


class SQLiteStore:
    """A ``Store`` in one SQLite file (see the module docstring).

    Opening runs ``PRAGMA quick_check`` (``check_integrity``) and raises
    ``StoreCorrupt`` if it fails. ``compact_interval`` (seconds; None disables
    background compaction) also paces ``wal_checkpoint(RESTART)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compact_interval: float | None = DEFAULT_COMPACT_INTERVAL,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        retention_revisions: int = DEFAULT_RETENTION_REVISIONS,
        quota_bytes: int | None = DEFAULT_QUOTA_BYTES,
        watch_queue_size: int = WATCH_QUEUE_MAX,
        check_integrity: bool = True,
    ) -> None:
        self.path = Path(path)
        self._retention = Retention(retention_seconds, retention_revisions)
        self._compact_interval = compact_interval
        self._hub = WatchHub(watch_queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False
        self._lock_fd = self._lock()
        try:
            self._wconn = self._open_writer(check_integrity)
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            meta = dict(self._wconn.execute("SELECT k, v FROM meta").fetchall())
            rows = self._wconn.execute("SELECT key, value, create_revision, mod_revision FROM kv")
            self._cache = ObjectCache(Record(k, v, c, m) for k, v, c, m in rows)
            page_size: int = self._wconn.execute("PRAGMA page_size").fetchone()[0]
        except sqlite3.Error as exc:
            self._wconn.close()
            os.close(self._lock_fd)
            raise map_error(exc) from exc
        self._revision: int = meta["revision"]  # published: what callers have seen
        self._compacted: int = meta["compacted"]
        self._writer = Writer(
            self._wconn,
            self._revision,
            quota_bytes // page_size if quota_bytes else None,
            page_size,
            self._deliver,
        )
        self._rconns: list[sqlite3.Connection] = []
        self._rlocal = threading.local()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-reader")

    # -- opening --------------------------------------------------------------

    def _lock(self) -> int:
        """Hold ``<db>.lock`` while open: two writers would hand out the same revisions.

        (A separate file, because closing any descriptor of the database itself
        would drop SQLite's own POSIX locks.)
        """
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path} is already open in another store or process") from None
        return fd

    def _open_writer(self, check_integrity: bool) -> sqlite3.Connection:
        if not self.path.exists():
            # Objects include Secrets: only the owner may read the file (the
            # WAL and shared-memory files inherit its mode).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise map_error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {WRITE_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            # Checkpoints RESTART the WAL instead of truncating it, and SQLite cuts
            # it back to this size when it restarts: appending to a file that
            # keeps its size lets each commit's fsync skip the metadata update,
            # about 4x cheaper here than growing a truncated WAL again.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            # Debian builds default to secure_delete=ON, which rewrites every
            # page a compaction frees (measured: ~1.5x slower churn). FAST
            # still zeroes deleted rows on pages written anyway; the file is 0600.
            conn.execute("PRAGMA secure_delete = FAST")
            if check_integrity:
                result = conn.execute("PRAGMA quick_check").fetchall()
                if result != [("ok",)]:
                    raise StoreCorrupt(f"{self.path} failed its integrity check: {result[:5]}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} has schema version {version}; expected {SCHEMA_VERSION}"
                )
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            conn.close()
            raise map_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._rlocal, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = 1")
            conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
            self._rlocal.conn = conn
            self._rconns.append(conn)
        return conn

    # -- properties -----------------------------------------------------------

    @property
    def revision(self) -> int:
        """The newest revision whose callers have been answered (and watchers fed)."""
        return self._revision

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a store is bound to the event loop that first used it")
        if self._closed:
            raise RuntimeError("store is closed")
        if self._compactor is None and self._compact_interval:
            self._compactor = loop.create_task(
                run_compactor(self, self._retention, self._compact_interval, self.checkpoint)
            )
        return loop

    # -- reads ----------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = self._bind()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))
        except sqlite3.Error as exc:
            raise map_error(exc) from exc

    async def get(self, key: str) -> Record:
        self._bind()
        rec = self._cache.get(key)
        if rec is None:
            raise not_found(key)
        return rec

    async def list(self, prefix: str) -> tuple[builtins.list[Record], int]:
        self._bind()
        return self._cache.list(prefix), self._revision

    async def _history(self, prefix: str, after: int, limit: int) -> builtins.list[WatchEvent]:
        low, high = prefix_bounds(prefix)

        def run(conn: sqlite3.Connection) -> builtins.list[WatchEvent] | int:
            conn.execute("BEGIN")
            try:
                compacted = conn.execute("SELECT v FROM meta WHERE k = 'compacted'").fetchone()[0]
                if after < compacted:
                    return int(compacted)
                sql = (
                    "SELECT revision, key, type, create_revision, value FROM log WHERE revision > ?"
                )
                args: builtins.list[Any] = [after]
                if low:
                    sql += " AND key >= ?"
                    args.append(low)
                if high is not None:
                    sql += " AND key < ?"
                    args.append(high)
                rows = conn.execute(sql + " ORDER BY revision LIMIT ?", (*args, limit)).fetchall()
            finally:
                conn.execute("COMMIT")
            return [WatchEvent(t, Record(k, v, c, r)) for r, k, t, c, v in rows]

        page = await self._read(run)
        if isinstance(page, int):
            raise gone(after, page)
        return page

    def watch(self, prefix: str, from_revision: int) -> WatchStream:
        """Changes under ``prefix`` after ``from_revision`` (0: from now).

        Raises ``Gone`` at once if that history was compacted. The stream also
        ends with ``Gone`` if compaction overtakes it while it replays history,
        or if its consumer falls ``watch_queue_size`` events behind live
        writes: the client re-lists and watches from the list's revision.
        """
        return open_watch(
            self._hub, prefix, from_revision,
            revision=self._revision, compacted=self._compacted, closed=self._closed,
            history=self._history,
        )  # fmt: skip

    # -- writes ---------------------------------------------------------------

    def _submit(self, op_kind: int, **kw: Any) -> asyncio.Future[Any]:
        loop = self._bind()
        fut: asyncio.Future[Any] = loop.create_future()
        self._writer.submit(Op(op_kind, fut, **kw))
        return fut

    async def create(self, key: str, obj: dict[str, Any]) -> Record:
        rec: Record = await self._submit(CREATE, key=key, obj=obj)
        return rec

    async def update(
        self, key: str, obj: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        rec: Record = await self._submit(UPDATE, key=key, obj=obj, expected=expected_revision)
        return rec

    async def delete(self, key: str, expected_revision: int | None = None) -> Record:
        rec: Record = await self._submit(DELETE, key=key, expected=expected_revision)
        return rec

    async def compact(self, revision: int) -> None:
        """Forget history up to and including ``revision`` (at most the current revision)."""
        if revision > self._revision:
            raise ValueError(f"cannot compact to {revision}: the store is at {self._revision}")
        if revision > self._compacted:
            await self._submit(COMPACT, revision=revision)

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and restart it (when no reader holds it)."""
        await self._submit(CHECKPOINT)

    async def close(self) -> None:
        if self._closed:
            return
        loop = self._bind()
        self._closed = True
        await stop_task(self._compactor)
        stopped: asyncio.Future[Any] = loop.create_future()
        self._writer.submit(Op(STOP, stopped))
        await stopped
        await loop.run_in_executor(None, self._writer.join)
        os.close(self._lock_fd)
        self._hub.close()
        await loop.run_in_executor(None, self._close_readers)

    def _close_readers(self) -> None:
        self._readers.shutdown(wait=True)
        for conn in self._rconns:
            conn.close()
        self._rconns.clear()

    # -- answers from the writer thread ---------------------------------------

    def _deliver(
        self,
        answers: builtins.list[Answer],
        events: builtins.list[WatchEvent],
        revision: int | None,
        compacted: int | None,
    ) -> None:
        """Called on the writer thread; call_soon_threadsafe keeps batches in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._resolve, answers, events, revision, compacted)
        except RuntimeError:  # the loop closed under us; nobody is waiting any more
            pass

    def _resolve(
        self,
        answers: builtins.list[Answer],
        events: builtins.list[WatchEvent],
        revision: int | None,
        compacted: int | None,
    ) -> None:
        if revision is not None and revision > self._revision:
            self._revision = revision
        if compacted is not None and compacted > self._compacted:
            self._compacted = compacted
        for ev in events:  # before answering callers: they read their own writes
            self._cache.apply(ev)
        self._hub.publish(events)
        for future, obj, outcome in answers:
            if isinstance(outcome, Record) and obj is not None:
                set_resource_version(obj, outcome.mod_revision)
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
