"""ProxyPlugins: Python modules run inside the proxy for each request (meshwork.io/v1alpha1).

What lives here: choosing the plugins that select this proxy (``selected``),
loading their modules once (a module name, or a path to a ``.py`` file),
and ``run_request``, which calls each plugin's ``on_request`` in priority
order. A hook may answer the request itself (return ``(status, body)`` or
``(status, body, headers)``) or add headers for the upstream
(``request.headers_to_add``). A plugin that fails to load makes the config
a NACK; a hook that raises answers 500 with the plugin named, and never
takes the proxy down.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

_LOADED: dict[tuple[str, str], ModuleType] = {}


@dataclass(slots=True)
class PluginRequest:
    """What a hook sees of a request (header names lower-case)."""

    method: str
    path: str
    authority: str
    headers: Mapping[str, str]
    config: Mapping[str, Any]
    headers_to_add: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str  # namespace/name of the ProxyPlugin
    on_request: Callable[[PluginRequest], Any] | None
    config: Mapping[str, Any]
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    plugin: str


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _load(module: str) -> ModuleType:
    if module.endswith(".py"):
        with open(module, "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=8).hexdigest()
        key = (module, digest)
        found = _LOADED.get(key)
        if found is None:
            spec = importlib.util.spec_from_file_location(f"meshwork_plugin_{digest}", module)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load plugin file {module}")
            found = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(found)
            _LOADED[key] = found
        return found
    return importlib.import_module(module)


def selected(raw_plugins: list[dict[str, Any]], labels: Mapping[str, str]) -> list[Plugin]:
    """The plugins of the snapshot whose selector picks this proxy, loaded, highest priority first."""
    out: list[Plugin] = []
    for obj in raw_plugins:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if not _matches(spec.get("selector"), labels):
            continue
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        try:
            module = _load(str(spec["module"]))
        except Exception as exc:  # a NACK names the plugin and why
            raise ValueError(f"ProxyPlugin {name}: cannot load {spec.get('module')!r}: {exc}") from exc
        hook = getattr(module, "on_request", None)
        out.append(Plugin(name, hook if callable(hook) else None, dict(spec.get("config") or {}),
                          int(spec.get("priority") or 0)))  # fmt: skip
    return sorted(out, key=lambda p: -p.priority)


def run_request(plugins: list[Plugin], request: PluginRequest) -> Reply | None:
    """Run the hooks in order; the first that answers ends the request."""
    for plugin in plugins:
        if plugin.on_request is None:
            continue
        request.config = plugin.config
        try:
            answer = plugin.on_request(request)
        except Exception as exc:
            return Reply(500, f"plugin {plugin.name} failed: {type(exc).__name__}\n".encode(), (), plugin.name)
        if answer is None:
            continue
        status, body, *rest = answer
        headers = tuple((str(k).encode(), str(v).encode()) for k, v in (rest[0] if rest else {}).items())
        data = body.encode() if isinstance(body, str) else bytes(body)
        return Reply(int(status), data, headers, plugin.name)
    return None
