"""The agent's view of the API server: the blocking client, run off the event loop.

The agent makes few calls (a status write per pod change, an event, a
heartbeat), so each runs in a worker thread over the plain ``Client``; a
watch runs in its own thread and hands events to the loop through a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from meshwork.client import Client, resource_path
from meshwork.errors import AlreadyExists, NotFound
from meshwork.model.kinds import REGISTRY, KindInfo

PODS = REGISTRY.require("", "Pod")
NODES = REGISTRY.require("", "Node")
EVENTS = REGISTRY.require("", "Event")
CONFIGMAPS = REGISTRY.require("", "ConfigMap")
SECRETS = REGISTRY.require("", "Secret")
SERVICES = REGISTRY.require("", "Service")
ENDPOINTS = REGISTRY.require("", "Endpoints")
SERVICEACCOUNTS = REGISTRY.require("", "ServiceAccount")
VIRTUALSERVICES = REGISTRY.require("networking.istio.io", "VirtualService")
DESTINATIONRULES = REGISTRY.require("networking.istio.io", "DestinationRule")

_END = object()


class AgentApi:
    """Async calls over a blocking ``Client``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def get(self, info: KindInfo, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self.client.get, info, namespace, name)
        except NotFound:
            return None

    async def list(
        self, info: KindInfo, namespace: str | None = None, *, field_selector: str | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            lambda: self.client.list(info, namespace, field_selector=field_selector)
        )

    async def create(self, info: KindInfo, namespace: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self.client.create, info, namespace, body)
        except AlreadyExists:
            return None

    async def patch_status(self, info: KindInfo, namespace: str | None, name: str, patch: Any) -> dict[str, Any]:
        return await asyncio.to_thread(
            lambda: self.client.patch(info, namespace, name, patch, subresource="status")
        )

    async def patch(self, info: KindInfo, namespace: str | None, name: str, patch: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.client.patch(info, namespace, name, patch))

    async def confirm_pod_deleted(self, namespace: str, name: str, uid: str) -> None:
        """The node's final word on a terminating pod: delete it now, if it is still that pod."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}  # fmt: skip
        path = resource_path(PODS, namespace, name)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.client.request, "DELETE", path, body=body)

    async def watch(
        self,
        info: KindInfo,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events until the stream ends; errors (``Gone`` ...) are raised here."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stream: Iterator[dict[str, Any]] = self.client.watch(
            info, namespace, resource_version=resource_version, field_selector=field_selector
        )
        stop = threading.Event()

        def pump() -> None:
            try:
                for event in stream:
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        thread = threading.Thread(target=pump, name=f"watch-{info.resource}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[attr-defined]
