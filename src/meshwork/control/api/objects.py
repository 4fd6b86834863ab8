"""Object operations: validate, apply the kind's strategy, write through the store.

Both the HTTP handlers and the server's own workers (garbage collector,
namespace cleanup) change objects through this one class, so every write
obeys the same rules. Reads come from the watch cache; every write waits for
its revision to reach the cache before it returns.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from meshwork.control.api import allocate, strategy
from meshwork.control.api.cache import CachedObject, WatchCache
from meshwork.control.api.paths import object_key
from meshwork.control.hostnet import busy_loopback_networks
from meshwork.control.hostnet import claim as claim_network
from meshwork.control.store import values
from meshwork.control.store.base import Record, Store
from meshwork.core import inject
from meshwork.core.patch import json_patch, merge_patch
from meshwork.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
)
from meshwork.model.base import REGISTRY, KindInfo, to_wire
from meshwork.model.codec import status_alone, validate_object, validate_status

PatchType = Literal["merge", "json"]
Propagation = Literal["Background", "Foreground", "Orphan"]

# A patch without a resourceVersion precondition is retried on conflict, as the
# Kubernetes API server does, this many times before answering 409.
PATCH_RETRIES = 5


_now_cache: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current UTC time at second precision, as Kubernetes timestamps are written."""
    global _now_cache
    second = int(time.time())
    if _now_cache[0] != second:
        _now_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _now_cache[1]


# The first hex digit of byte 8 with the RFC 4122 variant bits (10xx) set.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


class _UidSource:
    """Random (version 4) UUIDs from a buffer refilled 256 at a time.

    ``uuid.uuid4()`` makes one getrandom syscall per call, which costs more
    than anything else in a create on a VM; the bytes are the same kind.
    """

    BATCH = 256

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self) -> str:
        if self._pos >= len(self._buf):
            self._buf, self._pos = os.urandom(16 * self.BATCH), 0
        pos = self._pos
        self._pos += 16
        # RFC 4122 §4.4: version 4 in the high nibble of byte 6, variant 10 in byte 8.
        h = self._buf[pos : pos + 16].hex()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


new_uid = _UidSource()


def encode(obj: dict[str, Any]) -> bytes:
    return values.dumps(obj)


def _rv(obj: dict[str, Any]) -> int | None:
    raw = obj.get("metadata", {}).get("resourceVersion")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid resourceVersion {raw!r}") from None


def _display(info: KindInfo) -> str:
    """``pods`` or ``deployments.apps``, as Kubernetes names a resource in messages."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    propagation: Propagation = "Background"
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None


class Objects:
    def __init__(self, store: Store, cache: WatchCache) -> None:
        self.store = store
        self.cache = cache
        self._ns_lock = asyncio.Lock()
        self._alloc_lock = asyncio.Lock()

    # -- validation --------------------------------------------------------

    def validate(self, info: KindInfo, raw: Any, namespace: str | None, name: str | None) -> dict[str, Any]:
        """Check ``raw`` against the path it was sent to, validate and default it."""
        if not isinstance(raw, dict):
            raise BadRequest("the request body must be a JSON object")
        kind = raw.get("kind")
        if kind is not None and kind != info.kind:
            raise BadRequest(f"the kind in the body ({kind}) does not match the path ({info.kind})")
        api_version = raw.get("apiVersion")
        if api_version is not None and api_version not in info.api_versions():
            raise BadRequest(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({info.api_version})"
            )
        raw = {**raw, "apiVersion": api_version or info.api_version, "kind": info.kind}
        meta = dict(raw.get("metadata") or {})
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace or body_ns
        else:
            meta.pop("namespace", None)
        if name is not None:
            if meta.get("name") not in (None, name):
                raise BadRequest(
                    f"the name of the object ({meta.get('name')}) does not match the name on the "
                    f"URL ({name})"
                )
            meta["name"] = name
        raw["metadata"] = meta
        return to_wire(validate_object(raw))

    # -- reads -------------------------------------------------------------

    def get(self, info: KindInfo, namespace: str | None, name: str) -> CachedObject:
        item = self.cache.get(object_key(info, namespace, name))
        if item is None:
            raise NotFound(
                f'{_display(info)} "{name}" not found', kind=info.plural, name=name, group=info.group
            )
        return item

    # -- writes ------------------------------------------------------------

    async def _committed(self, record: Record) -> Record:
        await self.cache.wait_for(record.mod_revision)
        return record

    async def create(
        self, info: KindInfo, namespace: str | None, raw: Any, *, dry_run: bool = False
    ) -> tuple[Record, dict[str, Any]]:
        if not isinstance(raw, dict):
            raise BadRequest("the request body must be a JSON object")
        meta = raw.get("metadata") or {}
        if not meta.get("name") and meta.get("generateName"):
            raw = {**raw, "metadata": {**meta, "name": strategy.generated_name(meta["generateName"])}}
        if info.group == "" and info.kind == "Pod":
            raw = self._injected(raw, meta.get("namespace") or namespace)
        obj = self.validate(info, raw, namespace, None)
        namespace = obj["metadata"].get("namespace")
        if info.namespaced:
            if not namespace:
                raise BadRequest("a namespace is required for namespaced objects")
            await self._admit_namespace(namespace)
        obj = strategy.prepare_create(info, obj, uid=new_uid(), now=now_rfc3339())
        if info.group == "" and info.kind == "Service":
            async with self._alloc_lock:  # allocation and create together, so no two get one IP
                return await self._create_service(info, namespace, obj, dry_run=dry_run)
        if info.group == "" and info.kind == "Node":
            async with self._alloc_lock:  # the same for a node's pod CIDR
                held = allocate.node_cidrs(i.obj for i in self.cache.list(info.resource))
                for own in held:  # after a restart: ours again, so no other meshwork picks them
                    claim_network(own)
                if not (obj.get("spec") or {}).get("podCIDR") and not (obj.get("spec") or {}).get("podCIDRs"):
                    held += busy_loopback_networks()  # another meshwork on this machine: not its pods' range
                    while (picked := allocate.pick_pod_cidr(held)) is not None and not claim_network(picked):
                        held.append(picked)  # claimed by another meshwork starting at the same time
                allocate.assign_node_cidr(obj, held)
                return await self._store_new(info, namespace, obj, dry_run=dry_run)
        created = await self._store_new(info, namespace, obj, dry_run=dry_run)
        if info.group == "" and info.kind == "Namespace" and not dry_run:
            await self._default_service_account(obj["metadata"]["name"])
        return created

    def _injected(self, raw: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        """The pod with the mesh sidecar when Istio's injection policy says so (its webhook's job)."""
        ns_info = REGISTRY.for_group_kind("", "Namespace")
        assert ns_info is not None
        ns = self.cache.get(object_key(ns_info, None, namespace or "default"))
        labels = (ns.obj.get("metadata", {}).get("labels") or {}) if ns is not None else {}
        return inject.inject(raw) if inject.wants_sidecar(raw, labels) else raw

    async def _default_service_account(self, namespace: str) -> None:
        """Every namespace has a ``default`` ServiceAccount, as Kubernetes' controller makes."""
        sa_info = REGISTRY.for_group_kind("", "ServiceAccount")
        assert sa_info is not None
        try:
            await self.create(sa_info, namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        except AlreadyExists:
            pass

    async def _create_service(
        self, info: KindInfo, namespace: str | None, obj: dict[str, Any], *, dry_run: bool
    ) -> tuple[Record, dict[str, Any]]:
        used_ips, used_ports = allocate.taken(i.obj for i in self.cache.list(info.resource))
        allocate.assign_service(obj, used_ips, used_ports)
        return await self._store_new(info, namespace, obj, dry_run=dry_run)

    async def _store_new(
        self, info: KindInfo, namespace: str | None, obj: dict[str, Any], *, dry_run: bool
    ) -> tuple[Record, dict[str, Any]]:
        if dry_run:
            return Record(object_key(info, namespace, obj["metadata"]["name"]), encode(obj), 0, 0), obj
        key = object_key(info, namespace, obj["metadata"]["name"])
        try:
            record = await self.store.create(key, obj)
        except AlreadyExists:
            name = obj["metadata"]["name"]
            raise AlreadyExists(
                f'{_display(info)} "{name}" already exists', kind=info.plural, name=name, group=info.group
            ) from None
        return await self._committed(record), obj

    async def _admit_namespace(self, namespace: str) -> None:
        ns_info = REGISTRY.for_group_kind("", "Namespace")
        assert ns_info is not None
        existing = self.cache.get(object_key(ns_info, None, namespace))
        if existing is not None:
            if strategy.is_terminating(existing.obj):
                raise Forbidden(
                    f"unable to create new content in namespace {namespace} because it is being "
                    "terminated"
                )
            return
        # meshwork creates a missing namespace on first use (Kubernetes would
        # refuse with 404), so that manifests naming their namespace apply as-is.
        async with self._ns_lock:
            if self.cache.get(object_key(ns_info, None, namespace)) is None:
                try:
                    await self.create(ns_info, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                except AlreadyExists:
                    pass

    async def update(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        raw: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        status_validated: bool = False,
    ) -> Record:
        """Replace an object (or, with ``subresource="status"``, its status).

        ``status_validated``: the body's status is the wire form of a status
        model the server's own controllers built and validated; it is stored
        as it is instead of being validated a second time.
        """
        if not isinstance(raw, dict):
            raise BadRequest("the request body must be a JSON object")
        current = self.get(info, namespace, name)
        expected = _rv(raw)
        if subresource == "status":
            if not info.has_status:
                raise NotFound(f"{_display(info)} has no status subresource")
            new = self._status_write(info, raw, current.obj, namespace, name, validated=status_validated)
        else:
            new = self.validate(info, raw, namespace, name)
            new = strategy.prepare_update(info, new, current.obj)
        return await self._write(info, current, new, expected, dry_run=dry_run)

    def _status_write(
        self,
        info: KindInfo,
        raw: dict[str, Any],
        old: dict[str, Any],
        namespace: str | None,
        name: str,
        *,
        validated: bool = False,
    ) -> dict[str, Any]:
        """The object a ``/status`` write stores: the stored one with the new status.

        Only the status is validated when the kind allows it (the rest is the
        stored object, valid when written); otherwise, or when the status is
        invalid, the whole object is, which also words the error. A status
        that is ``validated`` already (a mapping dumped from a status model)
        is taken as it is, where the kind allows judging a status alone.
        """
        status = raw.get("status")
        if validated and isinstance(status, dict) and status_alone(info):
            wire: dict[str, Any] | None = status
        else:
            wire = validate_status(info, status)
        if wire is None:
            return self.validate(info, strategy.prepare_status_update(raw, old), namespace, name)
        new = {**old, "status": wire}
        # A fresh metadata dict: the store writes the new resourceVersion into it,
        # and the old one belongs to the cached object. Nothing else is changed.
        new["metadata"] = dict(old.get("metadata") or {})
        return new

    async def _write(
        self,
        info: KindInfo,
        current: CachedObject,
        new: dict[str, Any],
        expected: int | None,
        *,
        dry_run: bool = False,
    ) -> Record:
        if expected is not None and expected != current.revision:
            raise self._conflict(info, current)
        if strategy.same_object(new, current.obj):
            return current.record
        if dry_run:
            return Record(current.key, encode(new), current.record.create_revision, current.revision)
        if strategy.deletion_complete(new):
            # The last finalizer is gone and no grace period runs: deletion completes now.
            try:
                record = await self.store.delete(current.key, current.revision)
            except Conflict:
                raise self._conflict(info, current) from None
            return await self._committed(record)
        try:
            record = await self.store.update(current.key, new, current.revision)
        except Conflict:
            raise self._conflict(info, current) from None
        return await self._committed(record)

    def _conflict(self, info: KindInfo, current: CachedObject) -> Conflict:
        name = current.obj.get("metadata", {}).get("name", "")
        return Conflict(
            f'Operation cannot be fulfilled on {_display(info)} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            kind=info.plural,
            name=name,
            group=info.group,
        )

    async def patch(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: PatchType,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Record:
        explicit_rv = _rv(patch) if patch_type == "merge" and isinstance(patch, dict) else None
        for attempt in range(PATCH_RETRIES):
            current = self.get(info, namespace, name)
            base = current.obj
            patched = merge_patch(base, patch) if patch_type == "merge" else json_patch(base, patch)
            if not isinstance(patched, dict):
                raise BadRequest("the patched object must be a JSON object")
            precondition = explicit_rv
            if patch_type == "json" and _rv(patched) != current.revision:
                precondition = _rv(patched)  # the patch itself set a resourceVersion
            patched.setdefault("metadata", {})["resourceVersion"] = str(
                precondition if precondition is not None else current.revision
            )
            try:
                return await self.update(
                    info, namespace, name, patched, subresource=subresource, dry_run=dry_run
                )
            except Conflict:
                if precondition is not None or attempt == PATCH_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def delete(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        opts: DeleteOptions = DeleteOptions(),
        *,
        dry_run: bool = False,
    ) -> tuple[Record, bool]:
        """Delete an object. Returns its last record and whether it is gone now
        (False: it is terminating, waiting for finalizers).

        Without preconditions a delete that races another write is retried, as
        the Kubernetes API server does: the caller asked for the object gone,
        whatever its latest version says.
        """
        for attempt in range(PATCH_RETRIES):
            try:
                return await self._delete_once(info, namespace, name, opts, dry_run=dry_run)
            except Conflict:
                if opts.precondition_uid or opts.precondition_rv or attempt == PATCH_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _delete_once(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        opts: DeleteOptions,
        *,
        dry_run: bool,
    ) -> tuple[Record, bool]:
        current = self.get(info, namespace, name)
        meta = current.obj.get("metadata", {})
        if opts.precondition_uid is not None and opts.precondition_uid != meta.get("uid"):
            raise Conflict(
                f"Precondition failed: UID in precondition: {opts.precondition_uid}, UID in object "
                f"meta: {meta.get('uid')}",
                name=name,
            )
        if opts.precondition_rv is not None and opts.precondition_rv != meta.get("resourceVersion"):
            raise Conflict(
                f"Precondition failed: ResourceVersion in precondition: {opts.precondition_rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                name=name,
            )
        if dry_run:
            return current.record, True
        finalizers = strategy.finalizers_of(current.obj)
        if opts.propagation == "Foreground" and strategy.FOREGROUND_FINALIZER not in finalizers:
            finalizers.append(strategy.FOREGROUND_FINALIZER)
        elif opts.propagation == "Orphan" and strategy.ORPHAN_FINALIZER not in finalizers:
            finalizers.append(strategy.ORPHAN_FINALIZER)
        grace = self._graceful_period(info, current.obj, opts)
        is_namespace = info.kind == "Namespace" and info.group == ""
        if not finalizers and grace is None and not is_namespace:
            try:
                record = await self.store.delete(current.key, current.revision)
            except Conflict:
                raise self._conflict(info, current) from None
            return await self._committed(record), True
        terminating = strategy.is_terminating(current.obj)
        if terminating and finalizers == strategy.finalizers_of(current.obj):
            return current.record, False
        # Start (or extend) termination: deletionTimestamp set, finalizers pending.
        # Namespaces always terminate first: the server removes their content, then them.
        new = values.loads(current.record.value)
        new_meta = new["metadata"]
        if finalizers:
            new_meta["finalizers"] = finalizers
        new_meta["deletionTimestamp"] = meta.get("deletionTimestamp") or now_rfc3339()
        new_meta["deletionGracePeriodSeconds"] = grace or 0
        if is_namespace:
            new.setdefault("status", {})["phase"] = "Terminating"
        try:
            record = await self.store.update(current.key, new, current.revision)
        except Conflict:
            raise self._conflict(info, current) from None
        return await self._committed(record), False

    @staticmethod
    def _graceful_period(info: KindInfo, obj: dict[str, Any], opts: DeleteOptions) -> int | None:
        """Pods on a node stop gracefully: the node's agent confirms with a zero-grace delete."""
        if info.kind != "Pod" or info.group != "":
            return None
        if opts.grace_period == 0 or not (obj.get("spec") or {}).get("nodeName"):
            return None
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return None
        if opts.grace_period is not None:
            return opts.grace_period
        grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return int(grace) if grace else None

