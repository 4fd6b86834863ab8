"""The writer's two ways to apply a batch give the same store, answers and events.

``Writer._write_together`` applies a whole batch in a few multi-row statements;
``_apply`` one op at a time with a savepoint each. Both run here on real SQLite
files made by the store's own opening code, fed the same batches (hypothesis
draws them: creates, updates with right, wrong and no expected revision,
deletes, keys repeated within a batch, missing keys, bad objects), with the
thread unstarted so each batch is exactly what was drawn. The answers, the
watch events and both tables must come out the same.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshwork.control.store.base import Record, WatchEvent
from meshwork.control.store.sqlite import SQLiteStore
from meshwork.control.store.sqlite_writer import CREATE, DELETE, UPDATE, Answer, Op, Writer

KEYS = [f"/registry/pods/ns/p{i}" for i in range(4)]
CURRENT = -1  # drawn as an expected revision: the key's revision at the time


class Side:
    """One store file and its writer, the thread not started."""

    def __init__(self, path: Path, together: bool) -> None:
        self.conn: sqlite3.Connection = SQLiteStore._open_writer(cast(Any, SimpleNamespace(path=path)), False)
        self.delivered: list[tuple[list[Answer], list[WatchEvent], int | None]] = []
        self.writer = Writer(self.conn, 0, None, 4096, self._deliver, start=False)
        self.together = together

    def _deliver(self, answers: list[Answer], events: list[WatchEvent], rev: int | None, _c: int | None) -> None:
        self.delivered.append((answers, events, rev))

    def run(self, batch: list[tuple[int, str, int | None, bool]]) -> None:
        ops = [
            Op(kind, cast(Any, None), key, None if kind == DELETE else _obj(key, good), self._expected(key, expected))
            for kind, key, expected, good in batch
        ]
        if self.together:
            self.writer._write_batch(ops)
        else:
            self.writer._write_batch_one_by_one(ops)

    def _expected(self, key: str, drawn: int | None) -> int | None:
        """``CURRENT`` becomes the key's stored mod revision (a compare-and-swap that should win)."""
        if drawn != CURRENT:
            return drawn
        row = self.conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 7

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        kv = self.conn.execute("SELECT * FROM kv ORDER BY key").fetchall()
        log = self.conn.execute("SELECT * FROM log ORDER BY revision").fetchall()
        meta = self.conn.execute("SELECT * FROM meta ORDER BY k").fetchall()
        return kv, log, meta


def _obj(key: str, good: bool) -> dict[str, Any]:
    name = key.rsplit("/", 1)[1]
    return {"kind": "Pod", "metadata": {"name": name} if good else "not a mapping", "spec": {"n": len(key)}}


def _outcome(o: Record | BaseException | None) -> object:
    return (o.key, o.value, o.create_revision, o.mod_revision) if isinstance(o, Record) else (type(o), str(o))


ops = st.tuples(
    st.sampled_from([CREATE, CREATE, UPDATE, DELETE]),
    st.sampled_from(KEYS),
    st.sampled_from([None, None, CURRENT, CURRENT, 1, 2, 3, 5]),
    st.booleans().map(lambda bad: not bad) | st.just(True),
)
# Most batches name each key once (what the together path takes), some repeat one.
batches = st.lists(
    st.lists(ops, min_size=1, max_size=4, unique_by=lambda o: o[1]) | st.lists(ops, min_size=2, max_size=6),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches)
@example([[(CREATE, KEYS[0], None, True)], [(UPDATE, KEYS[0], None, True)], [(UPDATE, KEYS[0], CURRENT, True)]])
def test_a_batch_together_is_the_batch_one_by_one(tmp_path_factory: pytest.TempPathFactory, drawn: list[Any]) -> None:
    base = tmp_path_factory.mktemp("w")
    together, alone = Side(base / "a.db", True), Side(base / "b.db", False)
    try:
        for batch in drawn:
            together.run(batch)
            alone.run(batch)
        assert together.rows() == alone.rows()
        assert len(together.delivered) == len(alone.delivered)
        for (a_answers, a_events, a_rev), (b_answers, b_events, b_rev) in zip(
            together.delivered, alone.delivered, strict=True
        ):
            assert [_outcome(o) for _, _, o in a_answers] == [_outcome(o) for _, _, o in b_answers]
            assert [(e.type, _outcome(e.record)) for e in a_events] == [(e.type, _outcome(e.record)) for e in b_events]
            assert a_rev == b_rev
    finally:
        together.conn.close()
        alone.conn.close()


def test_a_plain_batch_of_creates_is_written_together(tmp_path: Path) -> None:
    side = Side(tmp_path / "c.db", True)
    try:
        batch = [(CREATE, k, None, True) for k in KEYS]
        ops_ = [Op(k, cast(Any, None), key, _obj(key, g), e) for k, key, e, g in batch]
        assert side.writer._write_together(ops_)
        assert [o.outcome.mod_revision for o in ops_ if isinstance(o.outcome, Record)] == [1, 2, 3, 4]
        # A key twice, or deletes mixed with creates, is left to the op-by-op path.
        assert not side.writer._write_together([Op(CREATE, cast(Any, None), "/x", _obj("/x", True))] * 2)
        mixed = [Op(DELETE, cast(Any, None), KEYS[0]), Op(CREATE, cast(Any, None), "/y", _obj("/y", True))]
        assert not side.writer._write_together(mixed)
    finally:
        side.conn.close()
