"""The controller runner's dispatch and fairness, over a real SQLite store and watch cache.

* a change reaches only the controllers that declared its resource;
* a pending pod's creation is routed by every built-in controller without
  decoding the pod (most of them decide from its key and bytes);
* a burst of reconciles that write nothing does not hold the event loop:
  other tasks run between any two of them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meshwork.control.api.cache import CachedEvent, WatchCache
from meshwork.control.api.objects import Objects
from meshwork.control.controllers import PODS, builtin_controllers
from meshwork.control.runner import Controller, Runner
from meshwork.control.store.sqlite import SQLiteStore
from meshwork.core.reconcile import Outcome


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}  # fmt: skip


async def _open(tmp_path: Path) -> tuple[SQLiteStore, WatchCache]:
    store = SQLiteStore(tmp_path / "store.db", compact_interval=None)
    cache = WatchCache(store)
    await cache.start()
    return store, cache


def test_changes_reach_only_the_controllers_of_their_resource(tmp_path: Path) -> None:
    seen: dict[str, list[str]] = {"pods-only": [], "everything": []}

    def recorder(name: str) -> Any:
        def keys_for(event: CachedEvent) -> Iterable[str]:
            seen[name].append(event.key)
            return []

        return keys_for

    async def scenario() -> None:
        store, cache = await _open(tmp_path)
        runner = Runner(Objects(store, cache), cache, [
            Controller("pods-only", recorder("pods-only"), list, lambda k, now: Outcome(), frozenset(("pods",))),
            Controller("everything", recorder("everything"), list, lambda k, now: Outcome()),
        ])  # fmt: skip
        try:
            await runner.start()
            await store.create("configmaps/ns/c", {"metadata": {"name": "c", "namespace": "ns"}})
            last = await store.create("pods/ns/p", pod("p"))
            await cache.wait_for(last.mod_revision)
            assert seen == {"pods-only": ["pods/ns/p"], "everything": ["configmaps/ns/c", "pods/ns/p"]}
        finally:
            await runner.close()
            await cache.close()
            await store.close()

    asyncio.run(scenario())


def test_a_pending_pod_is_routed_without_being_decoded(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, cache = await _open(tmp_path)
        runner = Runner(Objects(store, cache), cache, builtin_controllers(cache, data_dir=tmp_path))
        try:
            await runner.start()
            # Listeners run in order: this one sees each item after every controller routed it.
            undecoded: list[bool] = []
            cache.add_listener(lambda event: undecoded.append(event.item._obj is None))
            record = await store.create(f"{PODS.resource}/ns/p", pod("p"))
            await cache.wait_for(record.mod_revision)
            assert undecoded == [True]
        finally:
            await runner.close()
            await cache.close()
            await store.close()

    asyncio.run(scenario())


def test_reconciles_that_write_nothing_let_other_tasks_run_between_them(tmp_path: Path) -> None:
    ticks = 0
    seen_ticks: list[int] = []

    def reconcile(key: str, now: float) -> Outcome:
        seen_ticks.append(ticks)
        return Outcome()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def scenario() -> None:
        store, cache = await _open(tmp_path)
        runner = Runner(Objects(store, cache), cache, [Controller("noop", lambda e: [], list, reconcile)])
        task = asyncio.create_task(ticker())
        try:
            await runner.start()
            for i in range(200):
                runner.enqueue("noop", f"k{i}")
            while not runner.settled or len(seen_ticks) < 200:
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await runner.close()
            await cache.close()
            await store.close()

    asyncio.run(scenario())
    assert len(seen_ticks) == 200
    # The ticker ran between every two reconciles.
    assert all(b > a for a, b in itertools.pairwise(seen_ticks))
