"""Watches across compaction: resume without gaps while history holds, 410 Gone once it does not.

The server runs with a store that keeps only a few revisions and compacts
every 0.2 s. Resuming from before the watch cache's ring is served by the
store's history, which is what compaction cuts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.server import configmap, running_server

pytestmark = pytest.mark.integration

CMS = "/api/v1/namespaces/compact/configmaps"


def test_watch_from_a_compacted_revision_is_gone(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}?compact_interval=0.2&retention_seconds=0&retention_revisions=5"
    with running_server(tmp_path, "--store", store) as server:
        api = server.client()
        first = api.post(CMS, configmap("c0")).json
        first_rv = int(first["metadata"]["resourceVersion"])
        for i in range(1, 40):
            api.post(CMS, configmap(f"c{i}"))
        # A restarted server's cache holds no history, so resuming from an old
        # revision is served by the store's history, which compaction has cut.
        server.stop()
        server.start("--store", store)
        api = server.client()
        time.sleep(0.5)  # let the store compact once more after the restart
        gone = api.get(f"{CMS}?watch=1&resourceVersion={first_rv}&timeoutSeconds=1")
        assert gone.status == 410, gone.body
        assert gone.json["reason"] == "Expired" and gone.json["code"] == 410
        # A client re-lists and watches from the list's revision: that works.
        listed = api.get(CMS).json
        assert len(listed["items"]) == 40
        rv = listed["metadata"]["resourceVersion"]
        ok = api.get(f"{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=1")
        assert ok.status == 200
        api.close()


def test_watch_resumes_across_a_server_restart_without_gaps(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        api = server.client()
        start = api.post(CMS, configmap("before")).json["metadata"]["resourceVersion"]
        for i in range(5):
            api.post(CMS, configmap(f"r{i}"))
        server.stop()
        server.start()
        api = server.client()
        api.post(CMS, configmap("after"))
        events = []
        for event in api.watch(f"{CMS}?watch=1&resourceVersion={start}&timeoutSeconds=2"):
            events.append(event["object"]["metadata"]["name"])
        assert events == ["r0", "r1", "r2", "r3", "r4", "after"]
