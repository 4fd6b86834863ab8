"""JSON Merge Patch (RFC 7386) and JSON Patch (RFC 6902), pure functions over JSON values.

Inputs are never mutated; the result is a new value. Errors are BadRequest
(a malformed patch) or Conflict-free ``PatchTestFailed`` mapped by the API to
422, as Kubernetes answers a failed ``test`` operation.
"""

from __future__ import annotations

import copy
from typing import Any

from meshwork.errors import BadRequest, ValidationError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 §2: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    # RFC 6901 §4: "~1" -> "/" first, then "~0" -> "~".
    return token.replace("~1", "/").replace("~0", "~")


def _parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise BadRequest(f"JSON pointer must be a string, got {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise BadRequest(f"JSON pointer {pointer!r} must start with '/'")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise BadRequest(f"invalid array index {token!r}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise BadRequest(f"array index {idx} out of range")
    return idx


def _parent(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, str]:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict):
            if token not in cur:
                raise BadRequest(f"path {pointer!r} does not exist")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, allow_end=False)]
        else:
            raise BadRequest(f"path {pointer!r} does not exist")
    return cur, tokens[-1]


def _get(doc: Any, pointer: str) -> Any:
    cur = doc
    for token in _parse_pointer(pointer):
        if isinstance(cur, dict):
            if token not in cur:
                raise BadRequest(f"path {pointer!r} does not exist")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, allow_end=False)]
        else:
            raise BadRequest(f"path {pointer!r} does not exist")
    return cur


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _parse_pointer(pointer)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise BadRequest(f"path {pointer!r} does not exist")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _parse_pointer(pointer)
    if not tokens:
        raise BadRequest("cannot remove the whole document")
    parent, last = _parent(doc, tokens, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise BadRequest(f"path {pointer!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False))
    raise BadRequest(f"path {pointer!r} does not exist")


def json_patch(target: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations in order; all or nothing."""
    if not isinstance(operations, list):
        raise BadRequest("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"operation {i}: must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"operation {i} ({kind}): missing 'value'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # RFC 6902 §4.3: the target location MUST exist
            doc, _ = _remove(doc, path) if _parse_pointer(path) else (doc, None)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise BadRequest(f"operation {i} ({kind}): missing 'from'")
            if kind == "move":
                if path.startswith(op["from"] + "/"):
                    raise BadRequest(f"operation {i}: cannot move a value into itself")
                doc, value = _remove(doc, op["from"])
            else:
                value = copy.deepcopy(_get(doc, op["from"]))
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise ValidationError(f"operation {i}: test failed at {path!r}")
        else:
            raise BadRequest(f"operation {i}: unknown op {kind!r}")
    return doc
