"""``make demo`` end to end: ``examples/demo/run.py`` as a person runs it.

The demo starts meshwork with Istio's bookinfo files, walks through routing,
routing by user, the 80/20 shift and the faults, stops everything and checks
that nothing is left. Here it runs as a subprocess with its temp dir under
this test's ``tmp_path`` (``TMPDIR``), so every process it starts can be found
by that path (in its command line or working directory): the test asserts
none is left, and kills any that is, even when the demo fails or hangs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo" / "run.py"
HANG_GUARD_S = 280  # the demo takes well under this; past it, it hangs

# What the demo prints when each part of the story showed what it should.
KEY_LINES = (
    "routing: all to v1 (no stars)",
    "routing by user: jason sees v2 (black stars)",
    "routing by user: anonymous sees v1 (no stars)",
    "traffic shift: v1 ",
    "fault delay: jason's reviews unavailable after ",
    "fault abort: Ratings service is currently unavailable",
    "no process left behind",
)


def cannot_run() -> str | None:
    """Why the demo's pods cannot run on this machine, or None."""
    if not sys.platform.startswith("linux") or not Path("/proc/self").exists():
        return "the demo's pods need Linux: /proc and the routed 127.0.0.0/8 loopback range"
    try:
        with socket.socket() as s:
            s.bind(("127.1.0.1", 0))
    except OSError as exc:
        return f"pods listen on their own loopback IP, but 127.1.0.1 cannot be bound here: {exc}"
    if importlib.util.find_spec("meshwork.examples.bookinfo") is None:
        return "the bookinfo sample apps (meshwork.examples.bookinfo) are not installed"
    return None


def processes_under(path: Path) -> list[tuple[int, str]]:
    """Live processes whose command line names ``path`` or whose working directory is under it."""
    marker, found = str(path), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker in cmdline or cwd.startswith(marker)):
            found.append((int(entry.name), cmdline.strip()))
    return found


def kill_all(found: list[tuple[int, str]]) -> None:
    for pid, _ in found:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """A temp dir for the demo; whatever still runs from it at teardown is killed."""
    try:
        yield tmp_path
    finally:
        kill_all(processes_under(tmp_path))


def test_make_demo_tells_the_bookinfo_story_and_leaves_nothing(sandbox: Path) -> None:
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHWORK_")}
    env["TMPDIR"] = str(sandbox)
    proc = subprocess.Popen([sys.executable, str(DEMO)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the demo did not finish within {HANG_GUARD_S} s:\n{out[-4000:]}")
    left = processes_under(sandbox)
    assert proc.returncode == 0, out[-6000:]
    for line in KEY_LINES:
        assert line in out, f"missing {line!r} in the demo's output:\n{out[-6000:]}"
    assert "/productpage    (Gateway bookinfo-gateway, port 8080)" in out, out[:3000]
    assert left == [], f"left behind by the demo: {left}"
