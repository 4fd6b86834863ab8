"""What only the SQLite store promises: durability on disk, file layout, space, corruption."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from meshwork.control.store.base import Record
from meshwork.control.store.sqlite import WAL_SIZE_LIMIT, SQLiteStore
from meshwork.errors import AlreadyExists, InsufficientStorage, StoreCorrupt, StoreError

HANG_GUARD_SECONDS = 30.0


def pod(name: str, size: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"pad": "x" * size}}


def run(path: Path, body: Any, **opts: Any) -> None:
    async def main() -> None:
        store = SQLiteStore(path, **{"compact_interval": None, **opts})
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def integrity(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def test_everything_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def write(store: SQLiteStore) -> None:
        for i in range(10):
            await store.create(f"pods/default/p{i}", pod(f"p{i}"))
        await store.update("pods/default/p1", pod("p1", 3))
        await store.delete("pods/default/p2")
        await store.compact(4)

    async def read(store: SQLiteStore) -> None:
        assert (store.revision, store.compacted_revision) == (12, 4)
        records, rev = await store.list("pods/")
        assert rev == 12 and len(records) == 9
        assert json.loads((await store.get("pods/default/p1")).value)["spec"] == {"pad": "xxx"}
        history = [e async for e in _take(store.watch("pods/", 4), 8)]
        assert [e.revision for e in history] == list(range(5, 13))
        assert history[-1].type == "DELETED" and history[-1].record.key == "pods/default/p2"
        # Revisions carry on from where they were.
        assert (await store.create("pods/default/new", pod("new"))).mod_revision == 13

    run(db, write)
    run(db, read)
    assert integrity(db) == [("ok",)]


async def _take(stream: Any, n: int) -> Any:
    for _ in range(n):
        yield await asyncio.wait_for(anext(stream), HANG_GUARD_SECONDS)


def test_schema_and_log_rows(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def body(store: SQLiteStore) -> None:
        await store.create("pods/default/a", pod("a"))
        await store.update("pods/default/a", pod("a", 1))
        await store.delete("pods/default/a")
        await store.create("pods/default/b", pod("b"))
        await store.compact(1)

    run(db, body)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        kv = conn.execute("SELECT key, create_revision, mod_revision FROM kv").fetchall()
        assert kv == [("pods/default/b", 4, 4)]
        rows = conn.execute("SELECT revision, key, type FROM log ORDER BY revision").fetchall()
        assert rows == [
            (2, "pods/default/a", "MODIFIED"),
            (3, "pods/default/a", "DELETED"),
            (4, "pods/default/b", "ADDED"),
        ]
        assert dict(conn.execute("SELECT k, v FROM meta").fetchall()) == {
            "revision": 4,
            "compacted": 1,
        }
        value = conn.execute("SELECT value FROM kv").fetchone()[0]
        assert (
            value
            == b'{"metadata":{"name":"b","namespace":"default","resourceVersion":"4"},"spec":{"pad":""}}'
        )
    finally:
        conn.close()


def test_file_is_private_to_its_owner(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def body(store: SQLiteStore) -> None:
        await store.create("secrets/default/s", {"data": {"password": "aHVudGVyMg=="}})

    run(db, body)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_pending_writes_finish_before_close(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def main() -> None:
        store = SQLiteStore(db, compact_interval=None)
        tasks = [
            asyncio.ensure_future(store.create(f"pods/default/p{i}", pod(f"p{i}")))
            for i in range(200)
        ]
        await asyncio.sleep(0)
        await store.close()
        assert all(t.done() and isinstance(t.result(), Record) for t in tasks)

    asyncio.run(main())

    async def check(store: SQLiteStore) -> None:
        records, rev = await store.list("pods/")
        assert len(records) == 200 and rev == 200

    run(db, check)


def test_checkpoint_copies_the_wal_and_keeps_it_bounded(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    wal = tmp_path / "store.db-wal"

    async def body(store: SQLiteStore) -> None:
        for i in range(20):
            await store.create(f"pods/default/p{i}", pod(f"p{i}", 2000))
        assert wal.stat().st_size > 0
        await store.checkpoint()
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
        # Everything is in the main database file now: a copy of it alone holds the data.
        snapshot = tmp_path / "snapshot.db"
        snapshot.write_bytes(db.read_bytes())
        conn = sqlite3.connect(snapshot)
        try:
            assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 20
        finally:
            conn.close()
        assert (await store.get("pods/default/p3")).mod_revision == 4

    run(db, body)


def test_size_stays_bounded_under_churn(tmp_path: Path) -> None:
    """With compaction and checkpoints, churn reuses pages instead of growing the file."""
    db = tmp_path / "store.db"
    sizes: list[int] = []

    async def body(store: SQLiteStore) -> None:
        keys = [f"pods/default/p{i}" for i in range(20)]
        for key in keys:
            await store.create(key, pod(key, 1500))
        for _ in range(5):
            for _ in range(20):  # 400 revisions a round, in batches of 20
                await asyncio.gather(*(store.update(key, pod(key, 1500)) for key in keys))
            await store.compact(store.revision - 100)
            await store.checkpoint()
            sizes.append(db.stat().st_size)

    run(db, body)
    # After the first compaction the file stops growing: churn reuses freed pages.
    assert sizes[-1] <= sizes[1] * 1.1, sizes
    assert integrity(db) == [("ok",)]


def test_quota_full_refuses_writes_but_serves_reads_and_deletes(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def body(store: SQLiteStore) -> None:
        watcher = store.watch("pods/", 0)
        acked: list[str] = []
        with pytest.raises(InsufficientStorage) as info:
            for i in range(1000):
                await store.create(f"pods/default/p{i}", pod(f"p{i}", 1000))
                acked.append(f"pods/default/p{i}")
        assert info.value.status == 507
        assert len(acked) > 5
        full_at = store.revision
        # Creates and growing updates keep failing; nothing is half-written.
        with pytest.raises(InsufficientStorage):
            await store.create("pods/default/extra", pod("extra", 1000))
        with pytest.raises(InsufficientStorage):
            await store.update(acked[0], pod("big", 20_000))
        assert store.revision == full_at
        # Reads and watches still work.
        records, rev = await store.list("pods/")
        assert [r.key for r in records] == sorted(acked) and rev == full_at
        assert (await store.get(acked[1])).mod_revision == 2
        # A delete committed in the same batch as refused creates still succeeds.
        mixed = await asyncio.gather(
            store.create("pods/default/x1", pod("x1", 1000)),
            store.delete(acked.pop()),
            store.create("pods/default/x2", pod("x2", 1000)),
            return_exceptions=True,
        )
        assert isinstance(mixed[1], Record) and mixed[1].mod_revision > full_at
        assert all(isinstance(r, (Record, InsufficientStorage)) for r in mixed)
        acked += [
            f"pods/default/{n}"
            for n, r in zip(("x1", "", "x2"), mixed, strict=True)
            if n and isinstance(r, Record)
        ]
        # Deletes still work, and watchers see them.
        for key in acked[: len(acked) // 2]:
            await store.delete(key)
        seen = [e async for e in _take(watcher, store.revision)]
        assert seen[-1].type == "DELETED"
        # Compaction frees history; then writes resume without a restart.
        await store.compact(store.revision)
        await store.create("pods/default/after", pod("after", 1000))
        with pytest.raises(AlreadyExists):
            await store.create("pods/default/after", pod("after", 1000))

    run(db, body, quota_bytes=256 * 1024)
    assert integrity(db) == [("ok",)]


def test_not_a_database_is_store_corrupt(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    db.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreCorrupt):
        SQLiteStore(db)


def test_damaged_pages_are_store_corrupt(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def body(store: SQLiteStore) -> None:
        for i in range(50):
            await store.create(f"pods/default/p{i}", pod(f"p{i}", 500))
        await store.checkpoint()

    run(db, body)
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # keep the header page, ruin the rest
        data[offset : offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        SQLiteStore(db)


def test_store_is_bound_to_one_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db", compact_interval=None)

    async def first() -> None:
        await store.create("pods/default/a", pod("a"))

    async def second() -> None:
        with pytest.raises(RuntimeError):
            await store.get("pods/default/a")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first())
        asyncio.run(second())
        loop.run_until_complete(store.close())
    finally:
        loop.close()


def test_one_store_per_file(tmp_path: Path) -> None:
    db = tmp_path / "store.db"

    async def body(store: SQLiteStore) -> None:
        await store.create("pods/default/a", pod("a"))
        with pytest.raises(StoreError, match="already open"):
            SQLiteStore(db)

    run(db, body)
    run(db, lambda store: store.get("pods/default/a"))  # closed: free to open again
