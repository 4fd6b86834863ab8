"""The API server's HTTP face: Kubernetes-shaped routes over ``Objects`` and the watch cache.

This module maps requests to operations and operations to responses; the
rules for objects live in ``objects.py`` and ``strategy.py``. Every error is
answered as a Kubernetes ``Status`` object by one table (``ApiError.status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meshwork import __version__
from meshwork.control.api import strategy
from meshwork.control.api.cache import CachedEvent, CachedObject, Subscription, WatchCache
from meshwork.control.api.gc import GarbageCollector
from meshwork.control.api.objects import DeleteOptions, Objects, encode
from meshwork.control.api.paths import DiscoveryPath, ResourcePath, parse_path
from meshwork.control.api.status import status_bytes
from meshwork.control.runner import Runner
from meshwork.control.store import values
from meshwork.control.store.base import Store
from meshwork.core.reconcile.nodelifecycle import LifecycleConfig
from meshwork.core.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from meshwork.errors import (
    ApiError,
    BadRequest,
    Gone,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    StoreFull,
    TooLarge,
    UnsupportedMediaType,
)
from meshwork.httpd import Request, Response, StreamingResponse
from meshwork.model.base import REGISTRY, KindInfo
from meshwork.model.codec import decode_json

log = logging.getLogger(__name__)

# Paths anyone may read without a token, as Kubernetes' system:public-info-viewer allows.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})
# A watch with no timeoutSeconds ends after this long (Kubernetes picks 30-60 min);
# clients re-watch from their last resourceVersion.
DEFAULT_WATCH_TIMEOUT = 1800.0

# Queued into a watch's subscription when its timeoutSeconds runs out.
_WATCH_TIMEOUT = object()

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    # Strategic merge patch is applied as a JSON merge patch: lists are replaced
    # whole rather than merged by key. kubectl's default patch works for
    # anything that replaces or adds fields.
    "application/strategic-merge-patch+json": "merge",
    "application/json-patch+json": "json",
}


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (_first(query, name) or "").lower() in ("1", "true")


def _token_request(path: str) -> tuple[str, str] | None:
    """(namespace, name) of ``/api/v1/namespaces/{ns}/serviceaccounts/{name}/token``, else None."""
    parts = path.split("/")
    if len(parts) == 8 and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "serviceaccounts" \
            and parts[7] == "token" and parts[4] and parts[6]:
        return parts[4], parts[6]
    return None


def _at_version(value: bytes, rp: ResourcePath, obj: dict[str, Any] | None = None) -> bytes:
    """An object's bytes at the path's version (stored objects use the preferred one).

    ``obj`` is its decoded form when the caller already has it (the cache's).
    """
    if rp.version == rp.info.preferred_version:
        return value
    return encode({**(obj if obj is not None else values.loads(value)), "apiVersion": rp.api_version})


def _converted(item: CachedObject, rp: ResourcePath) -> bytes:
    return _at_version(item.record.value, rp, item.obj if rp.version != rp.info.preferred_version else None)


class ApiServer:
    def __init__(
        self,
        store: Store,
        *,
        tokens: dict[str, str],
        controllers: bool = True,
        lifecycle: LifecycleConfig | None = None,
        signing_key: bytes | None = None,
        data_dir: Path | None = None,
    ) -> None:
        """``tokens`` maps bearer tokens to user names (the admin token among them);
        ``controllers`` runs the built-in workload controllers in this process, with
        ``lifecycle`` the node lifecycle controller's timings; ``signing_key`` signs
        the server's ServiceAccount, node and proxy tokens (a fresh one when None)."""
        self.store = store
        self.cache = WatchCache(store)
        self.objects = Objects(store, self.cache)
        self.gc = GarbageCollector(self.objects, self.cache)
        from meshwork.control.access import Access
        from meshwork.control.api.nodeproxy import NodeProxy
        from meshwork.control.tokens import TokenIssuer

        self.access = Access(self.cache, tokens=tokens, issuer=TokenIssuer(signing_key))
        self.runner: Runner | None = None
        if controllers:
            from meshwork.control.controllers import builtin_controllers

            self.runner = Runner(self.objects, self.cache,
                                 builtin_controllers(self.cache, lifecycle, data_dir, self.access.node_token))
        # The server calls a node's agent with that node's own credential.
        self.node_proxy = NodeProxy(self.objects, self.access.node_token)
        from meshwork.control.push import PushServer

        self.push = PushServer(self.cache)
        from meshwork.control.scaletozero import ScaleToZero

        self.scale_to_zero = ScaleToZero(self.objects, self.cache)
        self.push.activator = self.scale_to_zero
        self._watches: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()

    async def start(self) -> None:
        await self.cache.start()
        await self.gc.start()
        await self.push.start()
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            await self._ensure_namespace(ns)
        from meshwork.control.bootstrap_policy import ensure_bootstrap_policy

        await ensure_bootstrap_policy(self.objects)
        if self.runner is not None:
            await self.runner.start()
            await self.scale_to_zero.start()  # the idle watch runs with the controllers

    async def _ensure_namespace(self, name: str) -> None:
        info = REGISTRY.for_group_kind("", "Namespace")
        assert info is not None
        if self.cache.get(f"{info.resource}//{name}") is None:
            await self.objects.create(info, None, {"metadata": {"name": name}})

    async def close(self) -> None:
        self.closing.set()
        await self.scale_to_zero.close()
        if self.runner is not None:
            await self.runner.close()
        await self.gc.close()
        await self.push.close()
        await self.cache.close()

    # -- entry -------------------------------------------------------------

    async def handle(self, req: Request) -> Response | StreamingResponse:
        try:
            if req.path in PUBLIC_PATHS:
                return await self._route(req)
            user = req.user = self.access.authenticate(req)
            self.access.authorize(req, user)
            if self.access.serves(req.path):
                return self.access.handle(req, user)
            token_request = _token_request(req.path)
            if token_request is not None:
                return self.access.token_request(req, user, *token_request)
            return await self._route(req)
        except ApiError as err:
            return self._error(err)
        except StoreFull as exc:
            return self._error(InsufficientStorage(f"the store is full: {exc}; writes are refused until space is freed"))
        except TimeoutError:
            return self._error(ApiError("timed out waiting for the store"))

    @staticmethod
    def _error(err: ApiError) -> Response:
        headers = [("Retry-After", str(err.retry_after))] if err.retry_after else []
        return Response(err.status, status_bytes(err), headers=headers)

    async def _route(self, req: Request) -> Response | StreamingResponse:
        if req.path in ("/healthz", "/livez"):
            return Response(200, b"ok", content_type="text/plain")
        if req.path == "/readyz":
            ready = self.cache.ready.is_set() and not self.closing.is_set()
            return Response(200 if ready else 503, b"ok" if ready else b"not ready", content_type="text/plain")
        if req.path == "/version":
            return _json(200, {"major": "1", "minor": "31", "gitVersion": f"v1.31.0-meshwork.{__version__}", "platform": "meshwork"})
        if req.path.startswith("/api/v1/nodes/") and "/proxy/" in req.path:
            node, _, rest = req.path[len("/api/v1/nodes/"):].partition("/proxy/")
            return await self.node_proxy.node(req, node, "/" + rest)
        if req.path.startswith("/apis/mesh.meshwork.io/v1/"):
            return await self.push.handle(req)
        target = parse_path(req.path)
        if isinstance(target, DiscoveryPath):
            if req.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{req.method} is not allowed on {req.path}")
            return _json(200, self._discovery(target, req.path))
        return await self._resource(req, target)

    # -- resources ---------------------------------------------------------

    async def _resource(self, req: Request, rp: ResourcePath) -> Response | StreamingResponse:
        method, query = req.method, req.query
        if rp.subresource in ("log", "exec"):
            if rp.info.kind != "Pod" or rp.name is None or rp.namespace is None:
                raise NotFound(f"the server could not find the requested resource: {req.path}")
            return await self.node_proxy.handle(req, rp.namespace, rp.name, rp.subresource)
        dry_run = _first(query, "dryRun") == "All"
        if rp.name is None:
            if method in ("GET", "HEAD"):
                if _flag(query, "watch"):
                    return self._watch(rp, query)
                return self._list(rp, query)
            if method == "POST":
                if rp.info.namespaced and rp.namespace is None:
                    raise MethodNotAllowed("create a namespaced object under /namespaces/{namespace}/")
                record, _ = await self.objects.create(rp.info, rp.namespace, self._body(req), dry_run=dry_run)
                return Response(201, _at_version(record.value, rp))
            if method == "DELETE":
                return await self._delete_collection(rp, query)
            raise MethodNotAllowed(f"{method} is not allowed on a collection")

        name = rp.name
        if method in ("GET", "HEAD"):
            item = self.objects.get(rp.info, rp.namespace, name)
            return Response(200, _converted(item, rp))
        if method == "PUT":
            record = await self.objects.update(
                rp.info, rp.namespace, name, self._body(req), subresource=rp.subresource, dry_run=dry_run
            )
            return Response(200, _at_version(record.value, rp))
        if method == "PATCH":
            ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
            patch_type = PATCH_TYPES.get(ctype)
            if patch_type is None:
                raise UnsupportedMediaType(
                    f"unsupported patch type {ctype!r}; use one of: {', '.join(PATCH_TYPES)}"
                )
            record = await self.objects.patch(
                rp.info, rp.namespace, name, self._body(req), patch_type,  # type: ignore[arg-type]
                subresource=rp.subresource, dry_run=dry_run,
            )
            return Response(200, _at_version(record.value, rp))
        if method == "DELETE":
            opts = self._delete_options(req)
            record, gone = await self.objects.delete(rp.info, rp.namespace, name, opts, dry_run=dry_run)
            # Kubernetes answers 200 with the object (202 when it only started terminating).
            return Response(200 if gone else 202, _at_version(record.value, rp))
        raise MethodNotAllowed(f"{method} is not allowed on {req.path}")

    @staticmethod
    def _body(req: Request) -> Any:
        ctype = (req.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", "") and not ctype.endswith("+json"):
            raise UnsupportedMediaType(f"unsupported content type {ctype!r}; send application/json")
        if not req.body:
            raise BadRequest("the request body is empty")
        if len(req.body) > strategy.MAX_OBJECT_BYTES:
            raise TooLarge(f"the object is larger than {strategy.MAX_OBJECT_BYTES} bytes (etcd's request limit)")
        return decode_json(req.body)

    def _delete_options(self, req: Request) -> DeleteOptions:
        body: dict[str, Any] = {}
        if req.body:
            decoded = decode_json(req.body)
            if not isinstance(decoded, dict):
                raise BadRequest("DeleteOptions must be a JSON object")
            body = decoded
        policy = body.get("propagationPolicy") or _first(req.query, "propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise BadRequest(f'unsupported propagationPolicy "{policy}": use Background, Foreground or Orphan')
        if body.get("orphanDependents") is True:
            policy = "Orphan"
        grace = body.get("gracePeriodSeconds", _first(req.query, "gracePeriodSeconds"))
        if grace is not None:
            try:
                grace = int(grace)
            except (TypeError, ValueError):
                raise BadRequest(f"invalid gracePeriodSeconds {grace!r}") from None
        pre = body.get("preconditions") or {}
        return DeleteOptions(policy, grace, pre.get("uid"), pre.get("resourceVersion"))  # type: ignore[arg-type]

    async def _delete_collection(self, rp: ResourcePath, query: dict[str, list[str]]) -> Response:
        labels, fields = self._selectors(query)
        items = self._matching(rp, labels, fields)
        deleted = []
        for item in items:
            meta = item.obj["metadata"]
            with contextlib.suppress(ApiError):
                record, _ = await self.objects.delete(rp.info, meta.get("namespace"), meta["name"])
                deleted.append(record.value)
        body = b'{"kind":"%sList","apiVersion":"%s","metadata":{},"items":[%s]}' % (
            rp.info.kind.encode(), rp.api_version.encode(), b",".join(deleted)
        )
        return Response(200, body)

    # -- list and watch ----------------------------------------------------

    @staticmethod
    def _selectors(query: dict[str, list[str]]) -> tuple[LabelSelector, FieldSelector]:
        return (
            parse_label_selector(_first(query, "labelSelector")),
            parse_field_selector(_first(query, "fieldSelector")),
        )

    def _matching(self, rp: ResourcePath, labels: LabelSelector, fields: FieldSelector) -> list[CachedObject]:
        namespace = rp.namespace if rp.info.namespaced else None
        name = fields.exact("metadata.name")
        if name is not None and (namespace is not None or not rp.info.namespaced):
            one = self.cache.get(rp.key(name))
            items = [one] if one else []
        else:
            items = self.cache.list(rp.info.resource, namespace)
        if labels.empty and fields.empty:
            return items
        return [
            i for i in items
            if labels.matches(i.obj.get("metadata", {}).get("labels")) and fields.matches(i.obj)
        ]

    def _list(self, rp: ResourcePath, query: dict[str, list[str]]) -> Response:
        labels, fields = self._selectors(query)
        revision = self.cache.revision
        items = self._matching(rp, labels, fields)
        if rp.version == rp.info.preferred_version:
            joined = b",".join(i.record.value for i in items)
        else:
            joined = b",".join(_converted(i, rp) for i in items)
        body = b'{"kind":"%sList","apiVersion":"%s","metadata":{"resourceVersion":"%d"},"items":[%s]}' % (
            rp.info.kind.encode(), rp.api_version.encode(), revision, joined
        )
        return Response(200, body)

    def _watch(self, rp: ResourcePath, query: dict[str, list[str]]) -> StreamingResponse:
        labels, fields = self._selectors(query)
        raw_rv = _first(query, "resourceVersion")
        try:
            from_rev = int(raw_rv) if raw_rv not in (None, "", "0") else None
        except ValueError:
            raise BadRequest(f"invalid resourceVersion {raw_rv!r}") from None
        timeout = _first(query, "timeoutSeconds")
        try:
            limit = float(timeout) if timeout else DEFAULT_WATCH_TIMEOUT
        except ValueError:
            raise BadRequest(f"invalid timeoutSeconds {timeout!r}") from None
        prefix = rp.prefix()
        if from_rev is not None and from_rev > self.cache.revision:
            from_rev = self.cache.revision  # a future revision: start from now
        if from_rev is None or self.cache.can_resume(from_rev):
            sub = self.cache.subscribe(prefix, from_rev)
            pump = None
        else:
            if from_rev < self.store.compacted_revision:
                raise Gone(f"too old resource version: {from_rev} ({self.store.compacted_revision})")
            # Older than the cache's ring: the store's own history serves it.
            sub = Subscription(prefix)
            pump = asyncio.ensure_future(self._pump_store(sub, prefix, from_rev))
        return StreamingResponse(200, self._stream(sub, pump, rp, labels, fields, limit))

    async def _pump_store(self, sub: Subscription, prefix: str, from_rev: int) -> None:
        """Feed a subscription from the store's watch (resumption older than the cache)."""
        try:
            async for event in self.store.watch(prefix, from_rev):
                if not sub.offer(CachedEvent(event.type, CachedObject(event.record))):
                    break
        except Gone:
            sub.overflowed = True
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    async def _stream(
        self,
        sub: Subscription,
        pump: asyncio.Future[None] | None,
        rp: ResourcePath,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: float,
    ) -> AsyncIterator[bytes]:
        """Watch events as newline-delimited JSON. Every event already queued goes
        out in one chunk (one write), and the time limit is a queued marker, so
        an idle watch costs nothing per event beyond its own bytes."""
        loop = asyncio.get_running_loop()
        timer = loop.call_later(limit, self._end_watch, sub)
        filtered = not (labels.empty and fields.empty)
        queue = sub.queue
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                lines: list[bytes] = []
                finished = False
                for event in batch:
                    if event is None or event is _WATCH_TIMEOUT:
                        if event is None and sub.overflowed:
                            err = Gone("the watch fell too far behind; list and watch again")
                            lines.append(b'{"type":"ERROR","object":%s}\n' % status_bytes(err))
                        finished = True
                        break
                    item = event.item
                    if filtered and not (
                        labels.matches(item.obj.get("metadata", {}).get("labels")) and fields.matches(item.obj)
                    ):
                        continue
                    lines.append(b'{"type":"%s","object":%s}\n' % (event.type.encode(), _converted(item, rp)))
                if lines:
                    yield b"".join(lines)
                if finished or sub.timed_out or self.closing.is_set():
                    return
        finally:
            timer.cancel()
            self.cache.unsubscribe(sub)
            if pump is not None:
                pump.cancel()

    @staticmethod
    def _end_watch(sub: Subscription) -> None:
        # A full queue means the stream is not waiting: it sees the flag after its batch.
        # (Dropping a queued event to make room would leave the client a gap.)
        sub.timed_out = True
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(_WATCH_TIMEOUT)  # type: ignore[arg-type]

    # -- discovery ---------------------------------------------------------

    def _discovery(self, target: DiscoveryPath, path: str) -> dict[str, Any]:
        kinds = REGISTRY.known_kinds()
        if target.group is None:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if target.group == "*":
            groups: dict[str, list[str]] = {}
            for info in kinds:
                if info.group:
                    groups.setdefault(info.group, [])
                    for v in info.versions:
                        if v not in groups[info.group]:
                            groups[info.group].append(v)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        if target.version is None:
            raise NotFound(f"the server could not find the requested resource ({path}): name a version")
        group_version = f"{target.group}/{target.version}" if target.group else target.version
        resources = REGISTRY.kinds_for(group_version)
        if not resources:
            raise NotFound(f"the server could not find the requested resource ({path})")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [self._resource_entry(i) for i in resources]
            + [
                {"name": f"{i.plural}/status", "singularName": "", "namespaced": i.namespaced, "kind": i.kind, "verbs": ["get", "patch", "update"]}
                for i in resources if i.has_status
            ],
        }

    @staticmethod
    def _resource_entry(info: KindInfo) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        return entry
