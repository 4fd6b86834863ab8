"""Property: under random interleavings of writes, compactions and watches, every
watcher sees every change after its start exactly once and in order, and the
final state equals the replay of the events. Run against both backends.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshwork.control.store.base import Record, Store, WatchEvent
from meshwork.control.store.memory import MemoryStore
from meshwork.control.store.sqlite import SQLiteStore
from meshwork.errors import AlreadyExists, Conflict, Gone, NotFound

HANG_GUARD_SECONDS = 30.0

# "pods/a/" must never see "pods/ab/"; "" sees everything.
KEYS = ["pods/a/k0", "pods/a/k1", "pods/a/k2", "pods/ab/k0", "pods/b/k0", "nodes//n0"]
PREFIXES = ["", "pods/", "pods/a/", "pods/ab/", "nodes/"]

write_op = st.tuples(
    st.sampled_from(["create", "update", "delete"]),
    st.sampled_from(KEYS),
    st.sampled_from(["none", "current", "stale"]),  # expected_revision
)
step = st.one_of(
    st.tuples(st.just("write"), st.lists(write_op, min_size=1, max_size=4)),
    st.tuples(
        st.just("watch"),
        st.sampled_from(PREFIXES),
        # Start revision as a fraction of the current one (0: from now).
        st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
        st.booleans(),  # eager: drain after every step; else only at the end
    ),
    st.tuples(st.just("compact"), st.sampled_from([0.0, 0.3, 0.6, 1.0])),
)
programs = st.lists(step, min_size=1, max_size=25)


@dataclass
class Watcher:
    stream: Any
    prefix: str
    start: int
    eager: bool
    needs_history: bool
    started: bool = False  # has read at least one event (so its history is read)
    seen: list[WatchEvent] = field(default_factory=list)


def expected_failure(model: dict[str, Record], kind: str, key: str, expected: int | None) -> type:
    if kind == "create":
        return AlreadyExists if key in model else type(None)
    if key not in model:
        return NotFound
    if expected is not None and model[key].mod_revision != expected:
        return Conflict
    return type(None)


async def execute(store: Store, program: list[Any]) -> dict[str, Record]:
    """Run ``program``, checking as it goes; returns the final state (key -> record)."""
    model: dict[str, Record] = {}
    truth: list[WatchEvent] = []  # truth[r - 1] is the change at revision r
    watchers: list[Watcher] = [Watcher(store.watch("", 0), "", 0, True, False)]

    def wanted(w: Watcher, upto: int) -> list[WatchEvent]:
        after = w.seen[-1].revision if w.seen else w.start
        return [e for e in truth[after:upto] if e.record.key.startswith(w.prefix)]

    async def drain(w: Watcher) -> None:
        if w.stream is None:
            return
        todo = wanted(w, store.revision)
        if todo and w.needs_history and not w.started and w.start < store.compacted_revision:
            # Its history was compacted before it read any: Gone, as etcd does.
            with pytest.raises(Gone):
                await asyncio.wait_for(anext(w.stream), HANG_GUARD_SECONDS)
            w.stream = None
            return
        for want in todo:
            w.started = True
            got = await asyncio.wait_for(anext(w.stream), HANG_GUARD_SECONDS)
            assert got == want
            w.seen.append(got)

    for item in program:
        if item[0] == "write":
            ops = item[1]
            base = store.revision
            calls = []
            for kind, key, cas in ops:
                current = model.get(key)
                expected = None
                if cas == "current" and current is not None:
                    expected = current.mod_revision
                elif cas == "stale":
                    expected = max(1, store.revision - 1)
                obj = {"metadata": {"name": key.rsplit("/", 1)[1]}, "spec": {"n": len(truth)}}
                if kind == "create":
                    calls.append(store.create(key, obj))
                elif kind == "update":
                    calls.append(store.update(key, obj, expected_revision=expected))
                else:
                    calls.append(store.delete(key, expected_revision=expected))
                if len(ops) == 1:
                    must_fail = expected_failure(model, kind, key, expected)
            results = await asyncio.gather(*calls, return_exceptions=True)
            done = sorted(
                ((r, op[0]) for r, op in zip(results, ops, strict=True) if isinstance(r, Record)),
                key=lambda pair: pair[0].mod_revision,
            )
            for r in results:
                assert isinstance(r, Record | AlreadyExists | NotFound | Conflict), r
            if len(ops) == 1:
                assert type(results[0]) is must_fail or (
                    must_fail is type(None) and isinstance(results[0], Record)
                )
            # Successes take the next revisions, with no gap; failures take none.
            assert [r.mod_revision for r, _ in done] == list(range(base + 1, base + 1 + len(done)))
            assert store.revision == base + len(done)
            for rec, kind in done:  # each success was valid at its revision
                assert json.loads(rec.value)["metadata"]["resourceVersion"] == str(rec.mod_revision)
                old = model.get(rec.key)
                if kind == "create":
                    assert old is None and rec.create_revision == rec.mod_revision
                    model[rec.key] = rec
                    truth.append(WatchEvent("ADDED", rec))
                else:
                    assert old is not None and rec.create_revision == old.create_revision
                    if kind == "update":
                        model[rec.key] = rec
                        truth.append(WatchEvent("MODIFIED", rec))
                    else:
                        del model[rec.key]
                        truth.append(WatchEvent("DELETED", rec))
        elif item[0] == "watch":
            _, prefix, fraction, eager = item
            start = round(fraction * store.revision)
            if 0 < start < store.compacted_revision:
                with pytest.raises(Gone):
                    store.watch(prefix, start)
                continue
            stream = store.watch(prefix, start)
            if start == 0:
                start = store.revision
            watchers.append(Watcher(stream, prefix, start, eager, start < store.revision))
        else:
            target = round(item[1] * store.revision)
            await store.compact(target)
            assert store.compacted_revision >= target
        for w in watchers:
            if w.eager:
                await drain(w)
        records, rev = await store.list("pods/a/")
        assert rev == store.revision
        assert records == [model[k] for k in sorted(model) if k.startswith("pods/a/")]

    final = store.revision
    for w in watchers:
        await drain(w)
    records, _ = await store.list("")
    assert records == [model[k] for k in sorted(model)]
    replayed: dict[str, Record] = {}
    for ev in watchers[0].seen:
        if ev.type == "DELETED":
            del replayed[ev.record.key]
        else:
            replayed[ev.record.key] = ev.record
    assert replayed == model and len(watchers[0].seen) == final
    await store.close()
    for w in watchers:  # exactly once: nothing more after what was expected
        if w.stream is not None:
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(anext(w.stream), HANG_GUARD_SECONDS)
    return model


@settings(max_examples=150, deadline=None)
@given(program=programs)
def test_memory_store_watchers_see_every_change_once(program: list[Any]) -> None:
    async def main() -> None:
        store = MemoryStore()
        try:
            await execute(store, program)
        finally:
            await store.close()

    asyncio.run(main())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_sqlite_store_watchers_see_every_change_once(program: list[Any]) -> None:
    async def main(path: Path) -> None:
        store = SQLiteStore(path, compact_interval=None, check_integrity=False)
        try:
            model = await execute(store, program)
        finally:
            await store.close()
        # What is on disk (not only what was answered from memory) is the same.
        store = SQLiteStore(path, compact_interval=None)
        try:
            records, rev = await store.list("")
            assert records == [model[k] for k in sorted(model)]
            assert rev == store.revision
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "store.db"))
