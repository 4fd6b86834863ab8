"""agent.standby's pool on its own, with real spare processes: started on first need, replaced when
one dies, a dead one never handed out, a stale one swept, and none left after ``close``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshwork.agent import runtime, standby
from meshwork.agent.standby import STATE, StandbyPool

pytestmark = pytest.mark.integration


async def _until(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    return runtime.proc_start_time(pid) is not None


def test_a_spare_is_started_replaced_when_it_dies_and_stopped_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(standby, "REFILL_DELAY_S", 0.0)
    env = {"PATH": os.environ.get("PATH", ""), "POD_NAME": "not-for-the-spare"}

    async def run() -> None:
        pool = StandbyPool(tmp_path / "standby")
        pids: list[int] = []
        try:
            assert pool.take(env) is None  # nothing yet: the first need starts one
            await _until(lambda: pool.spare is not None, "a spare")
            first = pool.spare
            assert first is not None and _alive(first.pid)
            pids.append(first.pid)
            assert (first.dir / STATE).exists()
            os.killpg(first.pid, signal.SIGKILL)  # it dies before any pod took it
            await _until(lambda: pool.spare is not None and pool.spare is not first, "a new spare")
            second = pool.spare
            assert second is not None
            pids.append(second.pid)
            await _until(lambda: not first.dir.exists(), "the dead one's directory removed")
            assert pool.take(env) is second  # the live one is handed out
            await _until(lambda: pool.spare is not None, "a spare behind it")
            third = pool.spare
            assert third is not None
            pids.append(third.pid)
            second.close_fds()  # not handed over here: let it go
            os.killpg(second.pid, signal.SIGKILL)
        finally:
            await pool.close()
        assert pool.spare is None
        await _until(lambda: not any(_alive(p) for p in pids), "every spare gone after close")
        assert not third.dir.exists()

    asyncio.run(run())


def test_a_spare_left_by_a_previous_agent_is_swept(tmp_path: Path) -> None:
    async def run() -> None:
        old = StandbyPool(tmp_path / "standby")
        old._env = {"PATH": os.environ.get("PATH", "")}
        old._start()
        spare = old.spare
        assert spare is not None
        taken = tmp_path / "standby" / "taken"  # what a pod's proxy keeps: its exit file's directory
        taken.mkdir()
        try:
            StandbyPool(tmp_path / "standby").sweep()  # a new agent
            await _until(lambda: not _alive(spare.pid), "the old spare killed")
            assert not spare.dir.exists()
            assert taken.exists()
        finally:
            await old.close()

    asyncio.run(run())
