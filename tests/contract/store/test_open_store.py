"""``open_store``: URLs to backends, options from the query string."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshwork.control.store.memory import MemoryStore
from meshwork.control.store.open import open_store
from meshwork.control.store.sqlite import SQLiteStore


def close(store: object) -> None:
    asyncio.run(store.close())  # type: ignore[attr-defined]


def test_sqlite_url_is_an_absolute_path(tmp_path: Path) -> None:
    db = tmp_path / "data" / "store.db"
    db.parent.mkdir()
    store = open_store(f"sqlite://{db}")
    try:
        assert isinstance(store, SQLiteStore) and store.path == db
        assert db.exists()
    finally:
        close(store)


def test_sqlite_options_from_query_and_keywords(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = open_store(
        f"sqlite://{db}?compact_interval=off&retention_revisions=7&quota_bytes=1048576",
        retention_revisions=9,
    )
    try:
        assert isinstance(store, SQLiteStore)
        assert store._compact_interval is None
        assert store._retention.keep_revisions == 9  # keywords win
        assert store._writer._quota_pages == 1048576 // 4096
    finally:
        close(store)


def test_memory_url() -> None:
    store = open_store("memory://?retention_revisions=3")
    assert isinstance(store, MemoryStore)
    close(store)


@pytest.mark.parametrize(
    "url",
    [
        "etcd://127.0.0.1:2379",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/store.db",
        "memory:///somewhere",
        "memory://?quota_bytes=10",
        "sqlite:///tmp/x.db?nonsense=1",
        "sqlite:///tmp/x.db?retention_revisions=many",
        "sqlite:///tmp/x.db?check_integrity=maybe",
        "/tmp/x.db",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)
