"""The ``Store`` contract, run against every backend (memory and a real SQLite file)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from meshwork.control.store import watch as watch_module
from meshwork.control.store.base import Record, Store, WatchEvent
from meshwork.errors import AlreadyExists, Conflict, Gone, NotFound

Pod = Callable[..., dict[str, Any]]


def rv(rec: Record) -> str:
    return str(json.loads(rec.value)["metadata"]["resourceVersion"])


def test_create_get_injects_resource_version(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        assert store.revision == 0
        obj = make_pod("web-1")
        rec = await store.create("pods/default/web-1", obj)
        assert (rec.create_revision, rec.mod_revision) == (1, 1)
        assert rv(rec) == "1"
        assert obj["metadata"]["resourceVersion"] == "1"  # the caller's object too
        assert store.revision == 1
        got = await store.get("pods/default/web-1")
        assert got == rec
        # Compact JSON, everything else unchanged.
        assert b" " not in got.value
        decoded = json.loads(got.value)
        decoded["metadata"].pop("resourceVersion")
        expected = make_pod("web-1")
        assert decoded == expected

    backend.run(body)


def test_create_without_metadata_gets_one(backend: Any) -> None:
    async def body(store: Store) -> None:
        rec = await store.create("configmaps/default/x", {"data": {"a": "b"}})
        assert json.loads(rec.value) == {"data": {"a": "b"}, "metadata": {"resourceVersion": "1"}}

    backend.run(body)


def test_already_exists_consumes_no_revision(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        await store.create("pods/default/a", make_pod("a"))
        with pytest.raises(AlreadyExists) as info:
            await store.create("pods/default/a", make_pod("a"))
        assert info.value.status == 409 and info.value.reason == "AlreadyExists"
        assert store.revision == 1
        rec = await store.create("pods/default/b", make_pod("b"))
        assert rec.mod_revision == 2

    backend.run(body)


def test_not_found(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        for call in (
            store.get("pods/default/nope"),
            store.update("pods/default/nope", make_pod("nope")),
            store.delete("pods/default/nope"),
        ):
            with pytest.raises(NotFound) as info:
                await call
            assert info.value.status == 404
        assert store.revision == 0

    backend.run(body)


def test_update_compare_and_swap(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        obj = make_pod("a")
        first = await store.create("pods/default/a", obj)
        obj["spec"]["containers"][0]["image"] = "web:2"
        second = await store.update("pods/default/a", obj, expected_revision=first.mod_revision)
        assert (second.create_revision, second.mod_revision) == (1, 2)
        assert rv(second) == "2" and obj["metadata"]["resourceVersion"] == "2"
        with pytest.raises(Conflict) as info:
            await store.update(
                "pods/default/a", make_pod("a"), expected_revision=first.mod_revision
            )
        assert info.value.status == 409 and info.value.reason == "Conflict"
        assert store.revision == 2
        assert (await store.get("pods/default/a")) == second
        # No expected revision: unconditional.
        third = await store.update("pods/default/a", make_pod("a"))
        assert third.mod_revision == 3 and third.create_revision == 1

    backend.run(body)


def test_delete_compare_and_swap_and_last_value(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        await store.create("pods/default/a", make_pod("a"))
        second = await store.update("pods/default/a", make_pod("a", image="v2"))
        with pytest.raises(Conflict):
            await store.delete("pods/default/a", expected_revision=1)
        gone = await store.delete("pods/default/a", expected_revision=second.mod_revision)
        assert (gone.create_revision, gone.mod_revision) == (1, 3)
        assert rv(gone) == "3"
        assert json.loads(gone.value)["spec"] == {"image": "v2"}
        with pytest.raises(NotFound):
            await store.get("pods/default/a")
        # The key can be created again, with a new create_revision.
        again = await store.create("pods/default/a", make_pod("a"))
        assert (again.create_revision, again.mod_revision) == (4, 4)

    backend.run(body)


def test_revisions_strictly_increase(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        seen: list[int] = []
        for i in range(5):
            seen.append((await store.create(f"pods/default/p{i}", make_pod(f"p{i}"))).mod_revision)
            with pytest.raises(AlreadyExists):
                await store.create(f"pods/default/p{i}", make_pod(f"p{i}"))
            seen.append((await store.update(f"pods/default/p{i}", make_pod(f"p{i}"))).mod_revision)
        seen.append((await store.delete("pods/default/p0")).mod_revision)
        assert seen == list(range(1, 12))
        assert store.revision == 11

    backend.run(body)


def test_concurrent_writes_each_succeed_or_fail_alone(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        await store.create("pods/default/taken", make_pod("taken"))
        keys = [f"pods/default/p{i}" for i in range(30)] + ["pods/default/taken"] * 5
        results = await asyncio.gather(
            *(store.create(k, make_pod(k.rsplit("/", 1)[1])) for k in keys),
            return_exceptions=True,
        )
        ok = [r for r in results if isinstance(r, Record)]
        failed = [r for r in results if not isinstance(r, Record)]
        assert len(ok) == 30 and all(isinstance(f, AlreadyExists) for f in failed)
        assert len(failed) == 5
        # Failures consume no revision: the successes are exactly 2..31.
        assert sorted(r.mod_revision for r in ok) == list(range(2, 32))
        assert store.revision == 31
        records, rev = await store.list("pods/")
        assert rev == 31 and len(records) == 31

    backend.run(body)


def test_list_sorted_with_prefix_isolation(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        keys = [
            "pods/default/b",
            "pods/default/a",
            "pods/default-x/a",
            "pods/defaulty/a",
            "pods/default",  # not under pods/default/
            "podsx/default/a",
            "services/default/a",
            "nodes//node-1",
        ]
        for k in keys:
            await store.create(k, make_pod("x"))
        records, rev = await store.list("pods/default/")
        assert [r.key for r in records] == ["pods/default/a", "pods/default/b"]
        assert rev == store.revision == len(keys)
        records, _ = await store.list("pods/")
        assert [r.key for r in records] == sorted(k for k in keys if k.startswith("pods/"))
        records, _ = await store.list("")
        assert [r.key for r in records] == sorted(keys)
        records, rev = await store.list("deployments/")
        assert records == [] and rev == len(keys)

    backend.run(body)


def test_list_is_a_consistent_snapshot(backend: Any, make_pod: Pod) -> None:
    """Lists taken while writers run equal the replayed state at the revision they report."""

    async def body(store: Store) -> None:
        stream = store.watch("pods/", 0)
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"pods/default/w{n}-{i % 4}"
                try:
                    await store.create(key, make_pod("x"))
                except AlreadyExists:
                    if i % 3:
                        await store.update(key, make_pod("x", gen=i))
                    else:
                        await store.delete(key)
                i += 1

        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        snapshots = []
        try:
            for _ in range(8):
                snapshots.append(await store.list("pods/"))
                await asyncio.sleep(0)
        finally:
            stop.set()
            await asyncio.gather(*writers)
        final = store.revision
        state: dict[str, Record] = {}
        by_revision: dict[int, dict[str, Record]] = {0: {}}
        for ev in await backend.take(stream, final):
            if ev.type == "DELETED":
                state.pop(ev.record.key)
            else:
                state[ev.record.key] = ev.record
            by_revision[ev.revision] = dict(state)
        for records, rev in snapshots:
            assert {r.key: r for r in records} == by_revision[rev]

    backend.run(body)


def test_watch_replays_history_then_follows_live(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        for i in range(10):
            await store.create(f"pods/default/p{i}", make_pod(f"p{i}"))
        stream = store.watch("pods/", 4)
        more = asyncio.gather(
            *(store.update(f"pods/default/p{i}", make_pod(f"p{i}", gen=2)) for i in range(10))
        )
        got = await backend.take(stream, 16)
        await more
        assert [e.revision for e in got] == list(range(5, 21))
        assert [e.type for e in got] == ["ADDED"] * 6 + ["MODIFIED"] * 10
        # Nothing else is pending: the next event is a new write.
        await store.delete("pods/default/p0")
        nxt = await backend.next(stream)
        assert (nxt.type, nxt.revision, nxt.record.key) == ("DELETED", 21, "pods/default/p0")

    backend.run(body)


def test_watch_event_records_match_reads(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        stream = store.watch("pods/", 0)
        created = await store.create("pods/default/a", make_pod("a"))
        updated = await store.update("pods/default/a", make_pod("a", gen=2))
        deleted = await store.delete("pods/default/a")
        got = await backend.take(stream, 3)
        assert got == [
            WatchEvent("ADDED", created),
            WatchEvent("MODIFIED", updated),
            WatchEvent("DELETED", deleted),
        ]
        # DELETED carries the last value, stamped with the delete's revision.
        assert got[2].record.create_revision == 1
        assert rv(got[2].record) == "3"
        assert json.loads(got[2].record.value)["spec"] == {"gen": 2}
        # History replays the same records.
        replay = await backend.take(store.watch("pods/", 1), 2)
        assert replay == got[1:]

    backend.run(body)


def test_watch_from_zero_means_from_now(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        await store.create("pods/default/old", make_pod("old"))
        stream = store.watch("pods/", 0)
        await store.create("pods/default/new", make_pod("new"))
        ev = await backend.next(stream)
        assert (ev.record.key, ev.revision) == ("pods/default/new", 2)

    backend.run(body)


def test_watch_from_future_revision_waits_for_it(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        stream = store.watch("pods/", 2)
        for i in range(4):
            await store.create(f"pods/default/p{i}", make_pod("x"))
        assert [e.revision for e in await backend.take(stream, 2)] == [3, 4]

    backend.run(body)


def test_watch_prefix_isolation(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        live = store.watch("pods/default/", 0)
        for key in ("pods/default-x/a", "pods/defaulty/a", "podsx/default/a", "pods/default/a"):
            await store.create(key, make_pod("a"))
        history = store.watch("pods/default/", 1)
        for stream in (live, history):
            ev = await backend.next(stream)
            assert (ev.record.key, ev.revision) == ("pods/default/a", 4)
        await store.create("pods/default/b", make_pod("b"))
        for stream in (live, history):
            assert (await backend.next(stream)).record.key == "pods/default/b"

    backend.run(body)


def test_watch_gone_after_compaction(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        for i in range(8):
            await store.create(f"pods/default/p{i}", make_pod("x"))
        await store.compact(5)
        assert store.compacted_revision == 5
        with pytest.raises(Gone) as info:
            store.watch("pods/", 3)
        assert info.value.status == 410
        # From the compacted revision itself nothing is missing.
        assert [e.revision for e in await backend.take(store.watch("pods/", 5), 3)] == [6, 7, 8]
        # Compacting to an older revision is a no-op; past the current one is an error.
        await store.compact(2)
        assert store.compacted_revision == 5
        with pytest.raises(ValueError):
            await store.compact(9)
        # Data is untouched by compaction.
        records, _ = await store.list("pods/")
        assert len(records) == 8

    backend.run(body)


def test_watch_overtaken_by_compaction_while_replaying(
    backend: Any, make_pod: Pod, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "HISTORY_PAGE", 4)

    async def body(store: Store) -> None:
        for i in range(12):
            await store.create(f"pods/default/p{i}", make_pod("x"))
        stream = store.watch("pods/", 1)
        assert (await backend.next(stream)).revision == 2  # first page: 2..5 is buffered
        await store.compact(9)
        for expected in (3, 4, 5):
            assert (await backend.next(stream)).revision == expected
        with pytest.raises(Gone):
            await backend.next(stream)
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    backend.run(body)


def test_slow_watcher_is_cut_off_with_gone(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        slow = store.watch("pods/", 0)
        fast = store.watch("pods/", 0)
        for i in range(6):  # never blocks although ``slow`` reads nothing
            await store.create(f"pods/default/p{i}", make_pod("x"))
            assert (await backend.next(fast)).revision == i + 1
        with pytest.raises(Gone):
            await backend.next(slow)
        with pytest.raises(StopAsyncIteration):
            await anext(slow)
        # The client's recovery: re-list, then watch from the list's revision.
        records, rev = await store.list("pods/")
        assert len(records) == 6
        again = store.watch("pods/", rev)
        await store.delete("pods/default/p0")
        assert (await backend.next(again)).type == "DELETED"

    backend.run(body, watch_queue_size=3)


def test_close_ends_watches_after_queued_events(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        stream = store.watch("pods/", 0)
        await store.create("pods/default/a", make_pod("a"))
        await store.close()
        assert (await backend.next(stream)).revision == 1
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        with pytest.raises(RuntimeError):
            await store.create("pods/default/b", make_pod("b"))

    backend.run(body)


def test_aclose_stops_a_waiting_watch(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        stream = store.watch("pods/", 0)
        waiter = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        await stream.aclose()  # type: ignore[attr-defined]
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, 30)
        await store.create("pods/default/a", make_pod("a"))  # no subscriber left to feed

    backend.run(body)


def test_background_compaction_keeps_the_retention_window(backend: Any, make_pod: Pod) -> None:
    async def body(store: Store) -> None:
        for i in range(20):
            await store.create(f"pods/default/p{i}", make_pod("x"))
        async with asyncio.timeout(30):
            while store.compacted_revision < 15:
                await asyncio.sleep(0.01)
        assert store.compacted_revision == 15  # keeps the newest 5 revisions
        assert [e.revision for e in await backend.take(store.watch("pods/", 15), 5)] == list(
            range(16, 21)
        )

    backend.run(body, compact_interval=0.01, retention_seconds=0, retention_revisions=5)
