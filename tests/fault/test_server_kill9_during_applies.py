"""SIGKILL of the API server in the middle of 3,000 concurrent creates.

Must hold (RELIABILITY.md §2, "Control plane restarted"): every write the
server acknowledged is there after a restart, and the SQLite database passes
``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from support.server import ServerProcess, configmap

pytestmark = pytest.mark.fault

TOTAL = 3000
KILL_AFTER = 200  # acknowledged creates before the kill: well inside the run, however fast it is
CLIENTS = 16


def test_acknowledged_creates_survive_kill9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    acked: list[str] = []
    lock = threading.Lock()
    started = threading.Event()
    try:
        server.start()

        def worker(offset: int) -> None:
            api = server.client()
            try:
                for i in range(offset, TOTAL, CLIENTS):
                    name = f"cm-{i:04d}"
                    try:
                        reply = api.post("/api/v1/namespaces/default/configmaps", configmap(name, {"i": str(i)}), timeout=5)
                    except OSError:
                        return  # the server is gone: nothing more will be acknowledged
                    if reply.status == 201:
                        with lock:
                            acked.append(name)
                            if len(acked) >= KILL_AFTER:
                                started.set()
            finally:
                api.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        assert started.wait(60), "no writes were acknowledged"
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        for t in threads:
            t.join(30)
        with lock:
            acknowledged = set(acked)
        assert KILL_AFTER <= len(acknowledged) < TOTAL, f"the kill landed outside the run ({len(acknowledged)} acked)"

        db = sqlite3.connect(tmp_path / "store.db")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()

        server.start()
        api = server.client()
        items = api.get("/api/v1/namespaces/default/configmaps").json["items"]
        stored = {o["metadata"]["name"] for o in items}
        assert acknowledged <= stored, f"lost acknowledged writes: {sorted(acknowledged - stored)[:10]}"
        revisions = [int(o["metadata"]["resourceVersion"]) for o in items]
        assert len(set(revisions)) == len(revisions)
        # The store keeps accepting writes after recovery, at a newer revision.
        after = api.post("/api/v1/namespaces/default/configmaps", configmap("after-restart")).json
        assert int(after["metadata"]["resourceVersion"]) > max(revisions)
        api.close()
    finally:
        server.kill()
