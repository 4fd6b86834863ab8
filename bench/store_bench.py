"""Store benchmark: write throughput, list latency, and bounded size under churn.

Run: ``python bench/store_bench.py`` (about 30-60 s on 2 cores). It prints:

1. creates/s with 8 concurrent writers (~2 KB pods, every write fsync'd);
2. the time to list 10,000 such objects, to replay them as watch history,
   and to reopen the store holding them;
3. the database size after an "hour-equivalent" of pod churn — 100 pods
   created, updated and deleted continuously, 36,000 revisions (each pod
   changing every 10 s for an hour) — with compaction and WAL checkpoints on a
   shortened interval (1 s), beside the same churn with compaction off.

Only this file's numbers are measured here; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from meshwork.control.store.sqlite import SQLiteStore

PAD = "x" * 1700  # brings a pod's JSON to about 2 KB


def pod(name: str, gen: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "bench:1", "args": [PAD]}]},
        "status": {"phase": "Running", "observedGeneration": gen},
    }


def file_size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


async def bench_creates_and_list(db: Path, writers: int, total: int) -> dict[str, Any]:
    store = SQLiteStore(db, compact_interval=None)
    out: dict[str, Any] = {}
    try:
        per = total // writers

        async def writer(n: int) -> None:
            for i in range(per):
                await store.create(f"pods/bench/w{n}-{i}", pod(f"w{n}-{i}"))

        start = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        out["rate"] = per * writers / (time.perf_counter() - start)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            records, rev = await store.list("pods/bench/")
            times.append(time.perf_counter() - start)
            assert len(records) == per * writers
        out["list"] = times
        start = time.perf_counter()
        seen = 0
        async for ev in store.watch("pods/bench/", 1):
            seen += 1
            if ev.revision == rev:
                break
        out["replay"] = (seen, time.perf_counter() - start)
    finally:
        await store.close()
    start = time.perf_counter()
    store = SQLiteStore(db, compact_interval=None)
    out["reopen"] = time.perf_counter() - start
    await store.close()
    return out


async def churn(
    db: Path, revisions: int, compact: bool, writers: int = 8
) -> tuple[int, float, int]:
    """100 pods: create, 3 status updates, delete, over and over, until ``revisions``."""
    store = SQLiteStore(
        db,
        compact_interval=1.0 if compact else None,
        # The 5-minute window scaled to a one-minute run: keep by count only.
        retention_seconds=0,
    )
    try:
        start = time.perf_counter()

        async def worker(n: int) -> None:
            names = [f"pod-{i}" for i in range(100) if i % writers == n]
            gen = 0
            while store.revision < revisions:
                for name in names:
                    key = f"pods/bench/{name}"
                    step = gen % 5
                    if step == 0:
                        await store.create(key, pod(name))
                    elif step < 4:
                        await store.update(key, pod(name, step))
                    else:
                        await store.delete(key)
                gen += 1

        await asyncio.gather(*(worker(n) for n in range(writers)))
        rate = store.revision / (time.perf_counter() - start)
        if compact:  # let the last tick run, as it would in a long-lived server
            await store.compact(max(0, store.revision - 10_000))
            await store.checkpoint()
        return file_size(db), rate, store.compacted_revision
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--revisions", type=int, default=36_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        got = asyncio.run(bench_creates_and_list(root / "creates.db", args.writers, args.objects))
        times = got["list"]
        print(f"creates/s, {args.writers} concurrent writers, ~2 KB objects: {got['rate']:,.0f}")
        print(
            f"list of {args.objects:,} objects: median {statistics.median(times) * 1000:.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"
        )
        seen, replay = got["replay"]
        print(f"watch replaying {seen:,} events from disk: {replay * 1000:.0f} ms")
        print(
            f"reopen with {args.objects:,} objects (quick_check + load): {got['reopen'] * 1000:.0f} ms"
        )
        print(
            f"pod churn, 100 pods, {args.revisions:,} revisions (an hour at one change per pod per 10 s):"
        )
        for compact in (True, False):
            size, churn_rate, compacted = asyncio.run(
                churn(root / f"churn-{compact}.db", args.revisions, compact)
            )
            label = "with compaction + checkpoint" if compact else "without compaction  "
            print(
                f"  {label}: {size / 2**20:6.1f} MiB on disk "
                f"({churn_rate:,.0f} writes/s, history compacted to {compacted:,})"
            )


if __name__ == "__main__":
    main()
