"""The scheduler's requeues are event-driven, as kube-scheduler's unschedulable queue is.

A real SQLite store, watch cache, ``Objects`` and ``Runner`` with the real
scheduler controller, in one event loop; only the count of reconciles per key
is observed (by wrapping the controller's reconcile). A pod that does not fit
is tried once and then waits: its own PodScheduled write and a node's
heartbeat do not wake it; a node added or changed in what scheduling reads, a
bound pod deleted, or the pod itself changed do, and it is bound at once when
room appears.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from meshwork.control.api.cache import WatchCache
from meshwork.control.api.objects import Objects
from meshwork.control.controllers import NODES, PODS, Views, scheduler_controller
from meshwork.control.runner import Runner
from meshwork.control.store.sqlite import SQLiteStore
from meshwork.core.reconcile import Outcome

NS = "sched"


@dataclasses.dataclass
class Cluster:
    objects: Objects
    cache: WatchCache
    runner: Runner
    reconciled: Counter[str]

    def pod(self, name: str) -> dict[str, Any] | None:
        item = self.cache.get(f"{PODS.resource}/{NS}/{name}")
        return item.obj if item is not None else None

    async def settle(self) -> None:
        """Until every write has reached the cache and the runner has nothing left to do."""
        await until(lambda: self.runner.settled)
        await self.cache.wait_for(self.cache.revision)


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    store = SQLiteStore(tmp_path / "store.db", compact_interval=None)
    cache = WatchCache(store)
    await cache.start()
    objects = Objects(store, cache)
    reconciled: Counter[str] = Counter()
    real = scheduler_controller(Views(cache))

    def counted(key: str, now: float) -> Outcome:
        reconciled[key] += 1
        return real.reconcile(key, now)

    runner = Runner(objects, cache, [dataclasses.replace(real, reconcile=counted)])
    await runner.start()
    try:
        yield Cluster(objects, cache, runner, reconciled)
    finally:
        await runner.close()
        await cache.close()
        await store.close()


def pod(name: str, cpu: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu}}}]},
    }  # fmt: skip


def node_status(cpu: str, heartbeat: str) -> dict[str, Any]:
    return {
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2030-01-01T00:00:00Z"}],
    }  # fmt: skip


async def add_node(c: Cluster, name: str, cpu: str) -> None:
    await c.objects.create(NODES, None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    await set_node_status(c, name, node_status(cpu, "2030-01-01T00:00:00Z"))


async def set_node_status(c: Cluster, name: str, status: dict[str, Any]) -> None:
    current = c.objects.get(NODES, None, name).obj
    await c.objects.update(NODES, None, name, {**current, "status": status}, subresource="status")


def unschedulable_message(c: Cluster, name: str) -> str | None:
    for cond in ((c.pod(name) or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "PodScheduled" and cond["status"] == "False":
            return str(cond["message"])
    return None


def node_of(c: Cluster, name: str) -> str | None:
    return ((c.pod(name) or {}).get("spec") or {}).get("nodeName")


def test_an_unschedulable_pod_is_not_tried_again_for_its_own_status_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as c:
            await c.objects.create(PODS, NS, pod("web", "1"))
            await until(lambda: unschedulable_message(c, "web"))
            await c.settle()
            assert unschedulable_message(c, "web") == "no nodes available to schedule pods"
            assert c.reconciled[f"{NS}/web"] == 1

            # The pod's own change (a label) is worth another attempt, as upstream's isPodUpdated says.
            current = c.pod("web")
            assert current is not None
            relabelled = {**current, "metadata": {**current["metadata"], "labels": {"app": "web", "v": "2"}}}
            await c.objects.update(PODS, NS, "web", relabelled)
            await until(lambda: c.reconciled[f"{NS}/web"] == 2)
            await c.settle()
            assert c.reconciled[f"{NS}/web"] == 2

    asyncio.run(scenario())


def test_a_heartbeat_wakes_nobody_and_room_on_a_node_binds_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as c:
            await add_node(c, "n1", cpu="1")
            await c.objects.create(PODS, NS, pod("big", "2"))
            await until(lambda: (m := unschedulable_message(c, "big")) and "Insufficient cpu" in m)
            await c.settle()
            tries = c.reconciled[f"{NS}/big"]

            # Only the heartbeat time moves: nothing scheduling reads has changed.
            await set_node_status(c, "n1", node_status("1", "2030-01-01T00:00:10Z"))
            await c.settle()
            assert c.reconciled[f"{NS}/big"] == tries

            # The node grows: the waiting pod is tried again and bound.
            await set_node_status(c, "n1", node_status("4", "2030-01-01T00:00:20Z"))
            await until(lambda: node_of(c, "big") == "n1")
            assert c.reconciled[f"{NS}/big"] == tries + 1

            # A node added later takes the next pod that does not fit n1.
            await c.objects.create(PODS, NS, pod("other", "3"))
            await until(lambda: unschedulable_message(c, "other"))
            await add_node(c, "n2", cpu="4")
            await until(lambda: node_of(c, "other") == "n2")

    asyncio.run(scenario())


def test_a_bound_pod_going_away_makes_room_for_a_waiting_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as c:
            await add_node(c, "n1", cpu="1")
            await c.objects.create(PODS, NS, pod("first", "800m"))
            await until(lambda: node_of(c, "first") == "n1")
            await c.objects.create(PODS, NS, pod("second", "800m"))
            await until(lambda: unschedulable_message(c, "second"))
            await c.settle()
            tries = c.reconciled[f"{NS}/second"]

            # Deleting a pending pod frees nothing: the waiting one is not tried again.
            await c.objects.create(PODS, NS, pod("third", "800m"))
            await until(lambda: unschedulable_message(c, "third"))
            item = c.objects.get(PODS, NS, "third")
            await c.objects.store.delete(item.key)
            await c.settle()
            assert c.reconciled[f"{NS}/second"] == tries

            item = c.objects.get(PODS, NS, "first")
            await c.objects.store.delete(item.key)
            await until(lambda: node_of(c, "second") == "n1")
            assert c.reconciled[f"{NS}/second"] == tries + 1

    asyncio.run(scenario())
