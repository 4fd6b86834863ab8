"""Disk full for the store (RELIABILITY.md §2): writes fail explicitly with 507,
reads, lists, watches and deletes keep working, and writes resume once space
is freed, with no restart. The quota stands in for a full disk, as etcd's
--quota-backend-bytes does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.server import configmap, running_server

pytestmark = pytest.mark.fault

CMS = "/api/v1/namespaces/full/configmaps"


def test_full_store_refuses_writes_but_serves_reads_and_deletes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}?quota_bytes=393216&compact_interval=0.3&retention_seconds=0&retention_revisions=1"
    with running_server(tmp_path, "--store", store) as server:
        api = server.client()
        stored: list[str] = []
        refused = None
        for i in range(500):
            reply = api.post(CMS, configmap(f"c{i}", {"blob": "x" * 4000}))
            if reply.status != 201:
                refused = reply
                break
            stored.append(f"c{i}")
        assert refused is not None, "the quota was never reached"
        assert refused.status == 507, refused.body
        assert refused.json["kind"] == "Status" and refused.json["reason"] == "InsufficientStorage"
        assert len(stored) > 10
        # Reads, lists and watches are served; nothing acknowledged was lost.
        listed = api.get(CMS).json
        assert [o["metadata"]["name"] for o in listed["items"]] == sorted(stored)
        assert api.get(f"{CMS}/{stored[0]}").json["data"]["blob"] == "x" * 4000
        rv = listed["metadata"]["resourceVersion"]
        # Deletes work while full, and a watch sees them.
        for name in stored[: len(stored) // 2]:
            assert api.delete(f"{CMS}/{name}").status == 200, name
        events = list(server.client().watch(f"{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=1"))
        assert [e["type"] for e in events] == ["DELETED"] * (len(stored) // 2)
        # Once compaction has freed the history, writes resume without a restart.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reply = api.post(CMS, configmap("after", {"blob": "y" * 4000}))
            if reply.status == 201:
                break
            assert reply.status == 507
            time.sleep(0.3)
        assert reply.status == 201, reply.body
        assert api.get(f"{CMS}/after").status == 200
        api.close()
