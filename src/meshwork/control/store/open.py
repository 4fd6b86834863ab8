"""``open_store(url)``: the one place that turns a store URL into a backend.

URLs:

* ``sqlite:///path/to/db`` — the SQLite store at ``/path/to/db`` (the path is
  everything after ``sqlite://``, so three slashes mean an absolute path);
* ``memory://`` — the in-memory store (tests only: nothing is durable).

Options go in the query string (``sqlite:///var/db?compact_interval=10``)
or as keyword arguments (which win). Must not live here: any backend logic.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from meshwork.control.store.base import Store
from meshwork.control.store.memory import MemoryStore
from meshwork.control.store.sqlite import SQLiteStore

# Query-string options and how to parse each; anything else is an error.
_FLOAT_OPTIONS = ("compact_interval", "retention_seconds")
_INT_OPTIONS = ("retention_revisions", "quota_bytes", "watch_queue_size")
_BOOL_OPTIONS = ("check_integrity",)
_MEMORY_OPTIONS = (
    "compact_interval",
    "retention_seconds",
    "retention_revisions",
    "watch_queue_size",
)


def _parse_options(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        value: Any
        try:
            if name in _FLOAT_OPTIONS:
                value = None if raw in ("", "none", "off") else float(raw)
            elif name in _INT_OPTIONS:
                value = None if raw in ("", "none", "off") else int(raw)
            elif name in _BOOL_OPTIONS:
                if raw not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value = raw in ("true", "1")
            else:
                raise ValueError(f"unknown store option {name!r}")
        except ValueError as exc:
            raise ValueError(f"store option {name}={raw!r}: {exc}") from exc
        out[name] = value
    return out


def open_store(url: str, **options: Any) -> Store:
    """The store ``url`` names; raises ``ValueError`` for a URL it cannot open."""
    parts = urlsplit(url)
    opts = {**_parse_options(parts.query), **options}
    if parts.scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a memory store takes no path")
        unknown = set(opts) - set(_MEMORY_OPTIONS)
        if unknown:
            raise ValueError(f"{url!r}: option(s) {sorted(unknown)} do not apply to memory://")
        return MemoryStore(**opts)
    if parts.scheme == "sqlite":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: write sqlite:///path (the path follows three slashes)")
        path = unquote(parts.path)
        if not path or path == "/":
            raise ValueError(f"{url!r}: no database path")
        return SQLiteStore(path, **opts)
    raise ValueError(f"{url!r}: unknown store scheme (use sqlite:///path or memory://)")
