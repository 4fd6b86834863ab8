"""Kubernetes-shaped request paths, parsed into what they address. Pure.

    /api/v1/{plural}[/{name}[/{sub}]]                         core, cluster-scoped or all namespaces
    /api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]         core, namespaced
    /apis/{group}/{version}/...                               the same shapes for a group
    /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version}   discovery
"""

from __future__ import annotations

from dataclasses import dataclass

from meshwork.errors import NotFound
from meshwork.model.base import REGISTRY, KindInfo

SUBRESOURCES = frozenset({"status", "finalize", "log", "exec"})


@dataclass(frozen=True, slots=True)
class ResourcePath:
    info: KindInfo
    version: str  # the version in the path (objects are converted to it on the way out)
    namespace: str | None  # None: cluster-scoped, or a list across all namespaces
    name: str | None = None
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.info.group}/{self.version}" if self.info.group else self.version

    def key(self, name: str | None = None) -> str:
        return object_key(self.info, self.namespace, name or self.name or "")

    def prefix(self) -> str:
        """Key prefix for list/watch: one namespace or all of them."""
        if self.info.namespaced and self.namespace is not None:
            return f"{self.info.resource}/{self.namespace}/"
        return f"{self.info.resource}/"


@dataclass(frozen=True, slots=True)
class DiscoveryPath:
    group: str | None  # None: /api; "": /api/v1; else the group
    version: str | None


def object_key(info: KindInfo, namespace: str | None, name: str) -> str:
    """The store key of one object (see the Store docstring for the layout)."""
    return f"{info.resource}/{namespace if info.namespaced else ''}/{name}"


def _not_found(path: str) -> NotFound:
    return NotFound(f"the server could not find the requested resource ({path})")


def parse_path(path: str) -> ResourcePath | DiscoveryPath:
    """What ``path`` addresses; NotFound for anything else."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _not_found(path)
    if parts[0] == "api":
        if len(parts) == 1:
            return DiscoveryPath(None, None)
        group, version, rest = "", parts[1], parts[2:]
        if version != "v1":
            raise _not_found(path)
    elif parts[0] == "apis":
        if len(parts) <= 3:
            return DiscoveryPath(parts[1] if len(parts) > 1 else "*", parts[2] if len(parts) > 2 else None)
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found(path)
    if not rest:
        return DiscoveryPath(group, version)

    namespace: str | None = None
    # /namespaces/{ns}/{plural}/... addresses namespaced objects, except the core
    # group's /namespaces/{name}/{status|finalize}, a Namespace's own subresource.
    if rest[0] == "namespaces" and len(rest) >= 3:
        if not (group == "" and len(rest) == 3 and rest[2] in SUBRESOURCES):
            namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    info = REGISTRY.for_resource(group, plural)
    if info is None or version not in info.versions:
        raise _not_found(path)
    if namespace is not None and not info.namespaced:
        raise _not_found(path)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if len(rest) > 3 or (sub is not None and sub not in SUBRESOURCES):
        raise _not_found(path)
    if info.namespaced and namespace is None and name is not None:
        raise _not_found(path)  # a namespaced object needs its namespace in the path
    return ResourcePath(info, version, namespace, name, sub)


def collection_path(info: KindInfo, namespace: str | None, version: str | None = None) -> str:
    version = version or info.preferred_version
    base = f"/apis/{info.group}/{version}" if info.group else f"/api/{version}"
    if info.namespaced and namespace is not None:
        return f"{base}/namespaces/{namespace}/{info.plural}"
    return f"{base}/{info.plural}"
