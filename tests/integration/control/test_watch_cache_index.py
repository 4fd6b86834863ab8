"""``WatchCache.add_index``: the indexed subset always equals a filter over ``list``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from meshwork.control.api.cache import CachedObject, WatchCache
from meshwork.control.store.sqlite import SQLiteStore


def bound(item: CachedObject) -> bool:
    return b'"nodeName":"' in item.record.value


def pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def keys(items: list[CachedObject]) -> list[str]:
    return [i.key for i in items]


def test_index_follows_creates_updates_deletes_and_reload(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "store.db", compact_interval=None)
        cache = WatchCache(store)
        try:
            await store.create("pods/ns/early", pod("early", "n1"))
            await store.create("configmaps/ns/other", {"metadata": {"name": "other", "nodeName": "x"}})
            await cache.start()
            index = cache.add_index("pods", bound)  # added after the first load: filled from it

            def expected() -> list[str]:
                return keys([i for i in cache.list("pods") if bound(i)])

            assert keys(cache.list_index(index)) == ["pods/ns/early"] == expected()
            a = await store.create("pods/ns/a", pod("a"))
            b = await store.create("pods/ns/b", pod("b", "n1"))
            await cache.wait_for(b.mod_revision)
            assert keys(cache.list_index(index)) == ["pods/ns/b", "pods/ns/early"] == expected()
            a = await store.update("pods/ns/a", pod("a", "n2"), a.mod_revision)  # bound by an update
            b = await store.update("pods/ns/b", pod("b"), b.mod_revision)  # unbound by an update
            await cache.wait_for(b.mod_revision)
            assert keys(cache.list_index(index)) == ["pods/ns/a", "pods/ns/early"] == expected()
            gone = await store.delete("pods/ns/early")
            await cache.wait_for(gone.mod_revision)
            assert keys(cache.list_index(index)) == ["pods/ns/a"] == expected()
            # A re-list (as after falling behind the store) rebuilds the index too.
            index.keys.add("pods/ns/stale")
            await cache._load()
            assert keys(cache.list_index(index)) == ["pods/ns/a"] == expected()
            assert "pods/ns/stale" not in index.keys
        finally:
            await cache.close()
            await store.close()

    asyncio.run(scenario())
