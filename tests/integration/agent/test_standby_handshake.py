"""A spare proxy's side of agent.standby: ``python -m meshwork`` with MESHWORK_STANDBY set waits
for its pod's environment before reading its command line, and leaves when the agent does."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _spare(name: str, cwd: Path) -> subprocess.Popen[str]:
    env = {"PATH": os.environ.get("PATH", ""), "MESHWORK_STANDBY": name, "SPARE_ONLY": "1"}
    return subprocess.Popen([sys.executable, "-m", "meshwork", "--data-dir", str(cwd), "version"], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_the_spare_takes_the_environment_it_is_handed_then_runs_its_command(tmp_path: Path) -> None:
    name = f"@meshwork-test-standby-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name[1:])
        listener.listen(1)
        listener.settimeout(60)
        proc = _spare(name, tmp_path)
        try:
            conn, _ = listener.accept()  # after its imports
            with conn:
                workdir = tmp_path / "pod"
                workdir.mkdir()
                env = {"PATH": os.environ.get("PATH", ""), "MESHWORK_HOME": str(tmp_path),
                       "MESHWORK_SERVER": "http://127.0.0.1:9"}  # a server that refuses at once
                conn.sendall(json.dumps({"env": env, "cwd": str(workdir)}).encode())
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "Client Version" in out  # the command ran ...
    assert "127.0.0.1:9" in out + err  # ... with the environment it was handed, not its own


def test_the_spare_leaves_quietly_when_the_agent_goes_first(tmp_path: Path) -> None:
    name = f"@meshwork-test-standby-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name[1:])
        listener.listen(1)
        listener.settimeout(60)
        proc = _spare(name, tmp_path)
        try:
            conn, _ = listener.accept()
            conn.close()  # no pod for it: the agent drops it
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert out == ""  # its command never ran
    nobody = subprocess.run([sys.executable, "-m", "meshwork", "version"], env={
        "PATH": os.environ.get("PATH", ""), "MESHWORK_STANDBY": f"@meshwork-test-nobody-{secrets.token_hex(8)}"},
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert nobody.returncode == 0 and nobody.stdout == ""  # no agent at all: gone at once
