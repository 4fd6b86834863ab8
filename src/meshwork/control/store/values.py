"""Stored values as bytes: compact JSON out, JSON back in, one encoder for every writer.

Every object the store keeps, every watch event and every API response body
is the compact JSON these functions produce, so the bytes a create stores are
the bytes its response and its watch events carry, encoded once.

Both run in pydantic-core (Rust, already a dependency): several times faster
than ``json`` on objects the size of a Pod, and the writer thread holds the
GIL for less of each commit. The output is the same JSON as
``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)`` decodes to;
only the spelling of some float exponents differs (``1e-7``, not ``1e-07``).

``loads`` is for bytes this server wrote (stored values). Request bodies go
through ``meshwork.model.codec.decode_json``, which also refuses duplicate
fields, NaN and deep nesting.

Must not live here: anything about what the objects mean.
"""

from __future__ import annotations

from typing import Any

import pydantic_core


def dumps(obj: Any) -> bytes:
    """Compact JSON of a JSON-ready value (dicts keep their key order)."""
    try:
        return pydantic_core.to_json(obj)
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(f"not JSON-serialisable: {exc}") from None


def loads(data: bytes | str) -> Any:
    """Decode JSON this server encoded."""
    return pydantic_core.from_json(data)
