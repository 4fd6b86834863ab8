"""Resource limits on real processes: the kernel's cgroup OOM kill, the watchdog fallback, usage.

The cgroup tests need root and a writable cgroup (v1 or v2 with memory and cpu
delegated); elsewhere they skip and say why. Every group a test starts is
SIGKILLed in a finally, and every cgroup it made is removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from meshwork.agent.limits import Cgroups, MemoryWatchdog, cpu_quota_us, group_usage

pytestmark = pytest.mark.integration

HANG_GUARD = 60.0  # seconds: only to turn a hang into a failure
MiB = 1024 * 1024
# Touches every page of 200 MiB, then waits: far past a 50 MiB limit.
HOG = "import time; b = b'x' * (200 * 1024 * 1024); time.sleep(3600)"
SPIN = "while True: pass"


def start_group(code: str, procs: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Like the agent's shim: a new session whose leader joins the cgroups, then runs the app."""
    join = "".join(f'echo $$ > "{p}"; ' for p in procs)
    return subprocess.Popen(
        ["sh", "-c", f'{join}exec "$0" -c "$1"', sys.executable, code],
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    name = f"meshwork-test-{os.getpid()}"
    cg = Cgroups.detect(name)
    if cg.mode == "none":
        pytest.skip(f"this machine gives no writable cgroup: {cg.reason}")
    try:
        yield cg
    finally:
        for base in {cg.memory_base, cg.cpu_base}:
            if base is not None:
                for child in base.iterdir():
                    if child.is_dir():
                        child.rmdir()
                base.rmdir()


def test_kernel_oom_kills_a_process_over_its_cgroup_memory_limit(cgroups: Cgroups) -> None:
    if not cgroups.enforces_memory:
        pytest.skip(f"memory controller not writable: {cgroups.describe()}")
    procs = cgroups.prepare("oom", 50 * MiB, None)
    assert procs and all(Path(p).name == "cgroup.procs" for p in procs)
    assert not cgroups.oom_killed("oom")
    proc = start_group(HOG, procs)
    try:
        rc = proc.wait(timeout=HANG_GUARD)
    finally:
        kill_group(proc)
    assert rc == -signal.SIGKILL
    assert cgroups.oom_killed("oom")
    assert "memory limit enforced by cgroup" in cgroups.describe()
    # The container restarts in the same cgroup with a higher limit: the old kill is not news.
    procs = cgroups.prepare("oom", 400 * MiB, None)
    assert not cgroups.oom_killed("oom")
    proc = start_group("b = b'x' * (200 * 1024 * 1024)", procs)
    try:
        assert proc.wait(timeout=HANG_GUARD) == 0
    finally:
        kill_group(proc)
    assert not cgroups.oom_killed("oom")
    assert cgroups.remove("oom")


def test_cpu_quota_is_set_and_usage_grows(cgroups: Cgroups) -> None:
    if not cgroups.enforces_cpu:
        pytest.skip(f"cpu controller not writable: {cgroups.describe()}")
    procs = cgroups.prepare("spin", 64 * MiB, 250)
    assert cpu_quota_us(250) == 25_000
    cpu_dir = cgroups.cpu_base / "spin"  # type: ignore[operator]
    if cgroups.mode == "v1":
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"
    else:
        assert (cpu_dir / "cpu.max").read_text().split() == ["25000", "100000"]
    proc = start_group(SPIN, procs)
    try:
        wait_for(lambda: proc.pid in cgroups.pids("spin"), "the process to join its cgroup")
        first = cgroups.usage("spin")
        assert first is not None
        wait_for(lambda: cgroups.usage("spin").cpu_seconds > first.cpu_seconds,  # type: ignore[union-attr]
                 "cgroup CPU time to grow")  # fmt: skip
        assert not cgroups.remove("spin")  # busy: it still holds a process
    finally:
        kill_group(proc)
    wait_for(lambda: not cgroups.pids("spin"), "the cgroup to empty")
    assert cgroups.remove("spin")
    assert not cgroups.oom_killed("spin")


def test_group_usage_sees_a_busy_group_burn_cpu() -> None:
    proc = start_group(SPIN)
    idle = start_group("import time; time.sleep(3600)")
    try:
        wait_for(lambda: proc.pid in group_usage({proc.pid}), "the group to appear")
        first = group_usage({proc.pid, idle.pid})
        assert first[proc.pid].rss_bytes > 0 and idle.pid in first
        wait_for(lambda: group_usage({proc.pid})[proc.pid].cpu_seconds > first[proc.pid].cpu_seconds,
                 "CPU time to grow")  # fmt: skip
    finally:
        kill_group(proc)
        kill_group(idle)
    assert proc.pid not in group_usage({proc.pid})


def test_watchdog_names_a_group_over_its_limit_and_the_agent_kills_it() -> None:
    cg = Cgroups.none("forced for this test")
    assert cg.prepare("x", 50 * MiB, 500) == []
    assert "not enforced" in cg.describe() and "watchdog" in cg.describe()
    hog = start_group(HOG)
    small = start_group("import time; time.sleep(3600)")
    dog = MemoryWatchdog()
    dog.watch(hog.pid, 50 * MiB)
    dog.watch(small.pid, 50 * MiB)
    try:
        over: list[int] = []
        wait_for(lambda: bool(over.extend(dog.tick()) or over), "the watchdog to see the hog")
        assert over == [hog.pid]
        assert dog.last[hog.pid].rss_bytes > 50 * MiB
        os.killpg(hog.pid, signal.SIGKILL)  # what the agent does with the answer
        assert hog.wait(timeout=HANG_GUARD) == -signal.SIGKILL
        assert dog.tick() == []  # reported once; the small one stays under
        assert small.poll() is None
    finally:
        kill_group(hog)
        kill_group(small)


def test_detect_without_cgroups_says_why(tmp_path: Path) -> None:
    cg = Cgroups.detect(root=tmp_path)
    assert cg.mode == "none" and not cg.enforces_memory and not cg.enforces_cpu
    assert str(tmp_path) in cg.reason
    assert cg.usage("x") is None and not cg.oom_killed("x") and cg.remove("x")
