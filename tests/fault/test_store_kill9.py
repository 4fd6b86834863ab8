"""SIGKILL the SQLite store under heavy concurrent writes: nothing acknowledged is lost.

A real child process writes with many concurrent writers (creates, plus
unconditional updates of a few hot keys) while background compaction and
WAL checkpoints run on a short interval, and prints each acknowledged write
(one flushed line each). We SIGKILL it mid-stream, reopen the file, and check
that every acknowledged write is there and ``PRAGMA integrity_check`` is ok.
Three kill/reopen rounds run on the same file.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshwork.control.store.sqlite import SQLiteStore

pytestmark = pytest.mark.fault

# Only guards against a hang: the child acknowledges hundreds of writes a second.
HANG_GUARD_SECONDS = 60.0

CHILD = r"""
import asyncio, sys
from meshwork.control.store.sqlite import SQLiteStore
from meshwork.errors import AlreadyExists

async def main(path, round_):
    store = SQLiteStore(path, compact_interval=0.05, retention_seconds=0, retention_revisions=300)
    print("ready", flush=True)

    async def writer(n):
        i = 0
        while True:
            key = f"pods/r{round_}w{n}/p{i}"
            rec = await store.create(key, {"metadata": {"name": f"p{i}"}, "spec": {"pad": "x" * 800}})
            print(f"C {key} {rec.mod_revision}", flush=True)
            if i % 4 == 0:
                hot = f"pods/hot/h{n % 4}"
                try:
                    rec = await store.create(hot, {"metadata": {"name": "h"}})
                except AlreadyExists:
                    rec = await store.update(hot, {"metadata": {"name": "h"}, "spec": {"n": i}})
                print(f"U {hot} {rec.mod_revision}", flush=True)
            i += 1

    await asyncio.gather(*(writer(n) for n in range(32)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def run_and_kill(db: Path, round_: int, kill_after: int) -> list[str]:
    """Start the writer child, SIGKILL it after ``kill_after`` acks; return every complete ack line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(round_)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    acks: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        first = child.stdout.readline()
        assert first == b"ready\n", (first, child.stderr.read() if child.stderr else b"")
        while len(acks) < kill_after:
            assert time.monotonic() < deadline, "child stopped acknowledging writes"
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else b""
            acks.append(line.decode())
        child.send_signal(signal.SIGKILL)
        child.wait(HANG_GUARD_SECONDS)
        # Lines already in the pipe were acknowledged before the kill; a torn
        # last line (no newline) claims nothing.
        acks.extend(line.decode() for line in child.stdout.read().splitlines(keepends=True))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    return [a.rstrip("\n") for a in acks if a.endswith("\n")]


async def stored(db: Path) -> tuple[dict[str, int], int, int, int]:
    store = SQLiteStore(db, compact_interval=None)  # runs PRAGMA quick_check on open
    try:
        records, rev = await store.list("")
        history = 0
        if rev > store.compacted_revision:
            stream = store.watch("", store.compacted_revision)
            async for ev in stream:
                history += 1
                if ev.revision == rev:
                    break
        return {r.key: r.mod_revision for r in records}, rev, store.compacted_revision, history
    finally:
        await store.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    rng = random.Random(9)
    total_acks = 0
    for round_ in range(3):
        acks = run_and_kill(db, round_, kill_after=rng.randrange(300, 1500))
        total_acks += len(acks)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        records, revision, compacted, history = asyncio.run(stored(db))
        for line in acks:
            kind, key, rev = line.split(" ")
            assert key in records, f"acknowledged {kind} of {key} at {rev} was lost"
            # A later write may have replaced it, an earlier state must not be back.
            assert records[key] >= int(rev), line
            assert int(rev) <= revision
        assert max(records.values()) == revision
        # The log holds exactly the revisions after the compacted one (no hole).
        assert history == revision - compacted > 0
    assert total_acks >= 900
