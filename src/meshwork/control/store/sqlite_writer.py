"""The SQLite store's writer thread: group commit, compare-and-swap, compaction.

One thread owns the only write connection. It drains a queue of pending
operations, applies each with its own compare-and-swap check inside one
transaction (a failed op is rolled back to its savepoint and fails alone),
commits once — one fsync for the whole batch — and only then hands the
outcomes and watch events, in revision order, to ``deliver`` (which the store
points at its event loop). The usual batch (creates and updates of distinct
keys) is checked against the writer's own index of revisions and stored with
one multi-row INSERT into the history, whose trigger updates the current
state: every statement costs this thread a wait for the interpreter lock the
event loop holds, so fewer statements is lower commit latency (measured:
about a fifth more creates per second through the API with 8 clients). Compaction deletes history in chunks between
batches; ``wal_checkpoint(RESTART)`` runs here too, since it must not race a
write.

Must not live here: anything that touches the event loop, readers, or watchers.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from meshwork.control.store.base import EventType, Record, WatchEvent
from meshwork.control.store.watch import (
    already_exists,
    conflict,
    not_found,
    restamp_value,
    stamp_value,
)
from meshwork.errors import InsufficientStorage, StoreCorrupt, StoreError

log = logging.getLogger(__name__)

# Room above the quota that deletes and compaction may use (a delete still
# appends a log row), enough for thousands of deletes of typical objects.
DELETE_RESERVE_BYTES = 8 * 1024**2
# Operations applied in one transaction at most; bounds a batch's latency and
# the size of one burst of watch events.
MAX_BATCH = 256
# Log rows deleted per compaction transaction, so writes interleave with a
# large compaction instead of waiting for all of it.
COMPACT_CHUNK = 5000
# The writer only ever waits on a checkpoint from another connection or a
# reader recovering the WAL; both are short.
WRITE_BUSY_TIMEOUT_MS = 5000
# How long a TRUNCATE checkpoint waits for readers before settling for less;
# the writer thread is blocked meanwhile.
CHECKPOINT_BUSY_TIMEOUT_MS = 100

CREATE, UPDATE, DELETE, COMPACT, CHECKPOINT, STOP = range(6)
WRITES: Final = (CREATE, UPDATE, DELETE)
EVENT: dict[int, EventType] = {CREATE: "ADDED", UPDATE: "MODIFIED", DELETE: "DELETED"}


# Rows in one multi-row INSERT at most: SQLite allows 32,766 host parameters
# in one statement; a log row takes five. (MAX_BATCH is well below.)
_ROWS_PER_STATEMENT: Final = 1000


def map_error(exc: sqlite3.Error) -> Exception:
    """The meshwork error for a SQLite failure."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return InsufficientStorage(
            "store is full: writes are refused until space is freed (reads and deletes still work)",
            retry_after=10,
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreCorrupt(f"store file is corrupt: {exc}")
    return StoreError(f"store failed: {exc}")


@dataclass(slots=True, eq=False)
class Op:
    """One queued operation and, once applied, its outcome."""

    kind: int
    future: asyncio.Future[Any]
    key: str = ""
    obj: dict[str, Any] | None = None
    expected: int | None = None
    revision: int = 0  # compaction target
    outcome: Record | BaseException | None = None


def _refusal(op: Op, mod_revision: int | None) -> Exception | None:
    """Why ``op`` cannot apply to its key, now at ``mod_revision`` (None: absent); None if it can."""
    if op.kind == CREATE:
        return already_exists(op.key) if mod_revision is not None else None
    if mod_revision is None:
        return not_found(op.key)
    if op.expected is not None and mod_revision != op.expected:
        return conflict(op.key)
    return None


# What the event loop gets back for one operation: its future, the caller's
# object (to stamp with the new resourceVersion) and the outcome.
Answer = tuple["asyncio.Future[Any]", dict[str, Any] | None, Record | BaseException | None]
# deliver(answers, events, new revision or None, new compacted revision or None)
Deliver = Callable[[list[Answer], list[WatchEvent], int | None, int | None], None]


class Writer:
    """The writer thread. ``submit`` from any thread; outcomes come back through ``deliver``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        revision: int,
        quota_pages: int | None,
        page_size: int,
        deliver: Deliver,
        *,
        start: bool = True,
    ) -> None:
        """``start=False`` leaves the thread unstarted (tests drive ``_write_batch`` themselves)."""
        self._conn = conn
        self._wrev = revision
        self._quota_pages = quota_pages
        self._page_size = page_size
        self._deliver_to = deliver
        self._reserve_mode: bool | None = None
        self._set_reserve(False)
        # (create, mod revision) of every stored key, as of the last commit:
        # what a batch's compare-and-swap checks read instead of a SELECT.
        self._revs = self._read_revisions()
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="store-writer", daemon=True)
        if start:
            self._thread.start()

    def submit(self, op: Op) -> None:
        self._queue.put(op)

    def join(self) -> None:
        self._thread.join()

    def _deliver(
        self,
        ops: list[Op],
        events: list[WatchEvent],
        revision: int | None,
        compacted: int | None = None,
    ) -> None:
        answers = [(op.future, op.obj, op.outcome) for op in ops]  # outcomes as of now
        self._deliver_to(answers, events, revision, compacted)

    def _main(self) -> None:
        stops: list[Op] = []
        while True:
            if not stops:
                batch = [self._queue.get()]
            else:  # closing: finish whatever is still queued, then stop
                try:
                    batch = [self._queue.get_nowait()]
                except queue.Empty:
                    break
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                writes = [op for op in batch if op.kind in WRITES]
                if writes:
                    self._write_batch(writes)
                for op in batch:
                    if op.kind == COMPACT:
                        self._compact_step(op)
                    elif op.kind == CHECKPOINT:
                        self._checkpoint(op)
            except Exception as exc:  # a bug: fail this batch's callers rather than hang them
                log.exception("store writer failed a batch")
                self._recover(batch, exc)
            stops += [op for op in batch if op.kind == STOP]
        self._conn.close()
        self._deliver(stops, [], None)

    def _read_revisions(self) -> dict[str, tuple[int, int]]:
        rows = self._conn.execute("SELECT key, create_revision, mod_revision FROM kv")
        return {key: (created, modified) for key, created, modified in rows}

    def _recover(self, batch: list[Op], exc: Exception) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._wrev = self._conn.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()[0]
            self._revs = self._read_revisions()  # whatever the failure left half-remembered
        except Exception:  # keep the thread alive: later batches report their own errors
            log.exception("store writer could not roll back")
        for op in batch:
            op.outcome = StoreError(f"store writer failed: {exc!r}")
        # Callers already answered keep their answer: _resolve skips done futures.
        self._deliver([op for op in batch if op.kind != STOP], [], None)

    def _set_reserve(self, reserve: bool) -> None:
        """Let deletes and compaction use the reserve above the quota; not creates/updates."""
        if self._quota_pages is None or self._reserve_mode is reserve:
            return
        pages = self._quota_pages + (DELETE_RESERVE_BYTES // self._page_size if reserve else 0)
        self._conn.execute(f"PRAGMA max_page_count = {pages}")
        self._reserve_mode = reserve

    def _apply(self, op: Op) -> Record:
        """Apply one write inside the open transaction; raises without side effects."""
        conn = self._conn
        rev = self._wrev + 1
        row = conn.execute(
            "SELECT create_revision, mod_revision, value FROM kv WHERE key = ?", (op.key,)
        ).fetchone()
        refusal = _refusal(op, None if row is None else row[1])
        if refusal is not None:
            raise refusal
        if op.kind == DELETE:
            assert row is not None
            value = restamp_value(row[2], rev)
        else:
            assert op.obj is not None
            value = stamp_value(op.obj, rev)
        created = rev if op.kind == CREATE else row[0]
        self._set_reserve(op.kind == DELETE)
        conn.execute("SAVEPOINT op")
        try:
            # The log_applies trigger writes kv and the revision (sqlite._SCHEMA).
            conn.execute(
                "INSERT INTO log VALUES (?, ?, ?, ?, ?)",
                (rev, op.key, EVENT[op.kind], created, value),
            )
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            raise
        conn.execute("RELEASE op")
        self._wrev = rev
        return Record(op.key, value, created, rev)

    def _write_batch(self, ops: list[Op]) -> None:
        """Apply ``ops`` in one transaction and one fsync; each succeeds or fails alone."""
        if not self._write_together(ops):
            self._write_batch_one_by_one(ops)

    def _write_batch_one_by_one(self, ops: list[Op]) -> None:
        """``_write_batch`` with a savepoint per op: any batch, any SQLite error."""
        conn = self._conn
        pending = ops
        failed: list[Op] = []
        while pending:
            base = self._wrev
            done: list[Op] = []
            lost: int | None = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                for i, op in enumerate(pending):
                    try:
                        op.outcome = self._apply(op)
                    except sqlite3.Error as exc:
                        op.outcome = map_error(exc)
                        if not conn.in_transaction:
                            lost = i  # SQLite rolled the whole transaction back
                            break
                    except Exception as exc:
                        op.outcome = exc
                    done.append(op)
                if lost is not None:
                    # Retry the others in a new transaction without the op that failed.
                    self._wrev = base
                    failed.append(pending[lost])
                    pending = pending[:lost] + pending[lost + 1 :]
                    continue
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # BEGIN or COMMIT failed: nothing in this batch is durable.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._wrev = base
                err = map_error(exc)
                for op in pending:
                    op.outcome = err
                failed.extend(pending)
                break
            self._deliver(done + failed, self._committed(done), self._wrev)
            return
        self._deliver(failed, [], None)

    def _committed(self, ops: list[Op]) -> list[WatchEvent]:
        """After a commit: remember the new revisions of ``ops`` that wrote, and their watch events."""
        events = []
        for op in ops:
            record = op.outcome
            if isinstance(record, Record):
                if op.kind == DELETE:
                    self._revs.pop(record.key, None)
                else:
                    self._revs[record.key] = (record.create_revision, record.mod_revision)
                events.append(WatchEvent(EVENT[op.kind], record))
        return events

    def _write_together(self, ops: list[Op]) -> bool:
        """The usual batch in one statement; False: nothing done, use ``_write_batch_one_by_one``.

        Each ``execute`` lets go of the interpreter lock while SQLite works and
        must win it back from the event loop's thread afterwards, which is
        busy serving requests: a batch written op by op (a SELECT, a savepoint
        and an INSERT each, then BEGIN and COMMIT) spends most of its time
        waiting for that lock. Here the compare-and-swap checks read the
        writer's own index of revisions, and one multi-row INSERT INTO log,
        committed on its own, stores everything (its trigger writes kv and
        the revision): the same rows, revisions and answers as one op at a
        time. Batches with a key twice or a delete (whose old value must be
        read) are left to the per-op path, as is any SQLite error.
        """
        if len(ops) > _ROWS_PER_STATEMENT or any(op.kind == DELETE for op in ops):
            return False
        keys = {op.key for op in ops}
        if len(keys) != len(ops):
            return False
        revs = self._revs
        rev = self._wrev
        rows: list[tuple[int, str, str, int, bytes]] = []
        for op in ops:
            current = revs.get(op.key)
            refusal = _refusal(op, None if current is None else current[1])
            if refusal is not None:
                op.outcome = refusal
                continue
            assert op.obj is not None
            try:
                value = stamp_value(op.obj, rev + 1)
            except Exception as exc:
                op.outcome = exc
                continue
            rev += 1
            created = rev if current is None else current[0]
            rows.append((rev, op.key, EVENT[op.kind], created, value))
            op.outcome = Record(op.key, value, created, rev)
        if rows:
            try:
                self._set_reserve(False)
                self._conn.execute(
                    f"INSERT INTO log VALUES {','.join(['(?,?,?,?,?)'] * len(rows))}",
                    [x for row in rows for x in row],
                )
            except sqlite3.Error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                for op in ops:
                    op.outcome = None
                return False
        self._wrev = rev
        self._deliver(ops, self._committed(ops), rev)
        return True

    def _compact_step(self, op: Op) -> None:
        """Delete one chunk of log rows; re-queue the op until it reaches its target."""
        conn = self._conn
        try:
            current = conn.execute("SELECT v FROM meta WHERE k = 'compacted'").fetchone()[0]
            upto = min(op.revision, current + COMPACT_CHUNK)
            if upto > current:
                self._set_reserve(True)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM log WHERE revision <= ?", (upto,))
                conn.execute("UPDATE meta SET v = ? WHERE k = 'compacted'", (upto,))
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            op.outcome = map_error(exc)
            self._deliver([op], [], None)
            return
        if upto < op.revision:
            self._deliver([], [], None, compacted=upto)
            self._queue.put(op)  # writes queued meanwhile go first
            return
        op.outcome = None
        self._deliver([op], [], None, compacted=max(upto, current))

    def _checkpoint(self, op: Op) -> None:
        conn = self._conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
            try:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {WRITE_BUSY_TIMEOUT_MS}")
            op.outcome = None
        except sqlite3.Error as exc:
            op.outcome = map_error(exc)
        self._deliver([op], [], None)
