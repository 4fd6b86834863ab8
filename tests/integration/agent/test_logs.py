"""Container logs through real FIFOs written by real processes, and ``follow`` across rotation.

Each test runs its processes to completion inside a HANG_GUARD; a process
still alive at the end is killed in a finally.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from meshwork.agent.logs import FifoPump, LogWriter, follow, log_path, read_lines

pytestmark = pytest.mark.integration

HANG_GUARD = 60.0


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(scenario(), HANG_GUARD)

    asyncio.run(guarded())


async def sh(script: str, *args: str) -> int:
    proc = await asyncio.create_subprocess_exec("sh", "-c", script, "sh", *args)
    try:
        return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_fifo_pump_logs_what_a_process_writes(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    os.mkfifo(out)
    os.mkfifo(err)
    path = log_path(tmp_path / "pod", "app", 0)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writer = LogWriter(path)
        pumps = [FifoPump(loop, out, "stdout", writer), FifoPump(loop, err, "stderr", writer)]
        try:
            # Like the shim: hold both FIFOs open read-write, the app writes through them.
            rc = await sh('exec 3<>"$1" 4<>"$2"; echo one >&3; echo warn >&4; printf "two\\nlast" >&3',
                          str(out), str(err))  # fmt: skip
            assert rc == 0
        finally:
            for pump in pumps:
                pump.drain_and_close()
            writer.close()

    run(scenario)
    lines = read_lines(path.parent, 0)
    assert sorted(lines) == sorted([b"one\n", b"warn\n", b"two\n", b"last"])
    assert lines.index(b"one\n") < lines.index(b"two\n") < lines.index(b"last")
    records = path.read_bytes().splitlines()
    assert any(r.endswith(b" stderr F warn") for r in records)
    assert records[-1].endswith(b" stdout P last")  # the stream ended without a newline


def test_fifo_pump_keeps_up_with_more_than_a_pipe_buffer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    os.mkfifo(out)
    path = tmp_path / "logs" / "0.log"
    count = 200_000  # ~1.5 MB: more than the FIFO holds, so the writer blocks until we read

    async def scenario() -> None:
        writer = LogWriter(path, max_bytes=1 << 30)
        pump = FifoPump(asyncio.get_running_loop(), out, "stdout", writer)
        try:
            assert await sh('exec 3<>"$1"; seq 1 "$2" >&3', str(out), str(count)) == 0
        finally:
            pump.drain_and_close()
            writer.close()

    run(scenario)
    lines = read_lines(path.parent, 0)
    assert len(lines) == count
    assert lines[0] == b"1\n" and lines[-1] == b"%d\n" % count
    assert read_lines(path.parent, 0, tail=2) == [b"%d\n" % (count - 1), b"%d\n" % count]


def test_fifo_pump_splits_a_long_line_without_newline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    os.mkfifo(out)
    path = tmp_path / "logs" / "0.log"

    async def scenario() -> None:
        writer = LogWriter(path)
        pump = FifoPump(asyncio.get_running_loop(), out, "stdout", writer)
        try:
            assert await sh('exec 3<>"$1"; head -c 40000 /dev/zero | tr "\\0" y >&3', str(out)) == 0
        finally:
            pump.drain_and_close()
            writer.close()

    run(scenario)
    tags = [r.split(b" ")[2] for r in path.read_bytes().splitlines()]
    assert tags and set(tags) == {b"P"}
    assert read_lines(path.parent, 0) == [b"y" * 40000]


def test_follow_yields_new_lines_across_rotations(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    got: list[bytes] = []

    async def scenario() -> None:
        writer = LogWriter(directory / "0.log", max_bytes=120, max_files=1000)
        writer.write("stdout", b"before\n", 1.0)
        stop = asyncio.Event()
        first = asyncio.Event()

        async def reader() -> None:
            async for line in follow(directory, 0, stop, poll_interval=0.01):
                got.append(line)
                first.set()

        task = asyncio.create_task(reader())
        try:
            await first.wait()
            # A burst: several rotations happen before the follower looks again.
            for i in range(30):
                writer.write("stdout", b"burst %02d\n" % i, 2.0)
            await asyncio.sleep(0.05)
            # Then a line at a time, the follower catching up in between.
            for i in range(10):
                writer.write("stderr", b"slow %d\n" % i, 3.0)
                await asyncio.sleep(0.02)
            writer.write("stdout", b"unfinished", 4.0)
            writer.flush()
            stop.set()
            await task
        finally:
            task.cancel()
            writer.close()

    run(scenario)
    expected = [b"before\n"] + [b"burst %02d\n" % i for i in range(30)]
    expected += [b"slow %d\n" % i for i in range(10)] + [b"unfinished"]
    assert got == expected
    assert len(list(directory.iterdir())) > 5  # it did rotate


def test_follow_starts_with_tail_and_waits_for_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    got: list[bytes] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        seen = asyncio.Event()

        async def reader() -> None:
            async for line in follow(
                directory, 3, stop, tail=2, timestamps=True, poll_interval=0.01
            ):
                got.append(line)
                seen.set()

        task = asyncio.create_task(reader())
        writer = None
        try:
            await asyncio.sleep(0.05)  # the file does not exist yet: follow waits
            writer = LogWriter(directory / "3.log")
            writer.write("stdout", b"a\nb\n", 0.0)
            await seen.wait()
            writer.write("stdout", b"c\n", 1.0)
            while len(got) < 3:
                await asyncio.sleep(0.01)
            stop.set()
            await task
        finally:
            task.cancel()
            if writer is not None:
                writer.close()

    run(scenario)
    # Follow waited for the file, then gave the (tail of the) history and the new line.
    assert got == [b"1970-01-01T00:00:00.000000000Z a\n", b"1970-01-01T00:00:00.000000000Z b\n",
                   b"1970-01-01T00:00:01.000000000Z c\n"]  # fmt: skip


def test_follow_applies_tail_to_existing_history(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    w = LogWriter(directory / "0.log", max_bytes=60, max_files=4)
    for i in range(20):
        w.write("stdout", b"old %02d\n" % i, float(i))
    w.close()

    async def scenario() -> list[bytes]:
        stop = asyncio.Event()
        stop.set()  # only what is there now
        return [line async for line in follow(directory, 0, stop, tail=3)]

    got: list[bytes] = []

    async def collect() -> None:
        got.extend(await scenario())

    run(collect)
    assert got == [b"old 17\n", b"old 18\n", b"old 19\n"]
