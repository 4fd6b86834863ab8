"""Fixtures for the store contract: one ``backend`` parametrised over memory and SQLite.

Tests are plain functions that hand an async body to ``backend.run``, which
opens a real store (a real SQLite file under ``tmp_path``), runs the body on
a fresh event loop and always closes the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshwork.control.store.base import Store, WatchEvent
from meshwork.control.store.memory import MemoryStore
from meshwork.control.store.sqlite import SQLiteStore

# Only guards against a hang: a correct store answers in milliseconds.
HANG_GUARD_SECONDS = 30.0

_MEMORY_OPTIONS = {
    "compact_interval",
    "retention_seconds",
    "retention_revisions",
    "watch_queue_size",
}


@dataclass
class Backend:
    name: str
    tmp: Path

    @property
    def db_path(self) -> Path:
        return self.tmp / "store.db"

    def open(self, **opts: Any) -> Store:
        opts.setdefault("compact_interval", None)
        if self.name == "memory":
            return MemoryStore(**{k: v for k, v in opts.items() if k in _MEMORY_OPTIONS})
        return SQLiteStore(self.db_path, **opts)

    def run(self, body: Callable[[Store], Awaitable[None]], **opts: Any) -> None:
        async def main() -> None:
            store = self.open(**opts)
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    @staticmethod
    async def next(stream: AsyncIterator[WatchEvent]) -> WatchEvent:
        return await asyncio.wait_for(anext(stream), HANG_GUARD_SECONDS)

    @staticmethod
    async def take(stream: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
        return [await Backend.next(stream) for _ in range(n)]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


def pod(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec or {"containers": [{"name": "app", "image": "web"}]},
    }


@pytest.fixture
def make_pod() -> Callable[..., dict[str, Any]]:
    return pod
