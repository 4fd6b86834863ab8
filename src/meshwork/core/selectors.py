"""Kubernetes label and field selectors: parse once, then match many times.

Pure: no I/O. The grammar is the one ``kubectl get -l`` accepts:

    selector    := requirement ("," requirement)*
    requirement := key ("=" | "==" | "!=") value
                 | key ("in" | "notin") "(" value ("," value)* ")"
                 | key | "!" key
    field selector := path ("=" | "==" | "!=") value ("," ...)*

Matching follows upstream: ``!=`` and ``notin`` also match objects that lack
the key; an empty selector matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meshwork.errors import BadRequest

Operator = Literal["=", "!=", "in", "notin", "exists", "!exists"]

# Keys and values as Kubernetes allows them in selectors (validated loosely here;
# a key or value with characters outside this set can never match a stored label).
_TOKEN = re.compile(r"[A-Za-z0-9_./-]*")
_SET_OP = re.compile(r"\s+(in|notin)\s*\(", re.IGNORECASE)

# Field selectors meshwork supports: the ones the API server indexes for every
# kind, plus those the orchestrator needs (Kubernetes supports these for pods).
FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "status.phase": ("status", "phase"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "type": ("type",),
}


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as upstream does.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"unable to parse requirement: unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise BadRequest(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return parts


def _check_token(token: str, what: str, text: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise BadRequest(f"unable to parse requirement: invalid {what} {token!r} in {text!r}")
    return token


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query value; raises BadRequest with the offending part."""
    if not text or not text.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise BadRequest(f"unable to parse requirement: empty requirement in {text!r}")
        set_op = _SET_OP.search(part)
        if set_op:
            key = _check_token(part[: set_op.start()].strip(), "key", text)
            if not part.endswith(")"):
                raise BadRequest(f"unable to parse requirement: missing ')' in {part!r}")
            inner = part[set_op.end() : -1]
            values = frozenset(_check_token(v.strip(), "value", text) for v in inner.split(","))
            op: Operator = "in" if set_op.group(1).lower() == "in" else "notin"
            if not key:
                raise BadRequest(f"unable to parse requirement: missing key in {part!r}")
            reqs.append(Requirement(key, op, values))
            continue
        for symbol, opname in (("!=", "!="), ("==", "="), ("=", "=")):
            if symbol in part:
                key, _, value = part.partition(symbol)
                key, value = key.strip(), value.strip()
                if not key:
                    raise BadRequest(f"unable to parse requirement: missing key in {part!r}")
                _check_token(key, "key", text)
                _check_token(value, "value", text)
                reqs.append(Requirement(key, opname, frozenset({value})))  # type: ignore[arg-type]
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_token(part[1:].strip(), "key", text), "!exists"))
            else:
                reqs.append(Requirement(_check_token(part, "key", text), "exists"))
    return LabelSelector(tuple(reqs))


def selector_from_spec(spec: Mapping[str, Any] | None) -> LabelSelector:
    """A ``LabelSelector`` from its object form (matchLabels + matchExpressions).

    A nil selector matches nothing in upstream controllers; callers decide that.
    """
    reqs: list[Requirement] = []
    if not spec:
        return LabelSelector()
    for key, value in (spec.get("matchLabels") or {}).items():
        reqs.append(Requirement(key, "=", frozenset({value})))
    ops: dict[str, Operator] = {
        "In": "in",
        "NotIn": "notin",
        "Exists": "exists",
        "DoesNotExist": "!exists",
    }
    for expr in spec.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise BadRequest(f"invalid label selector operator {expr.get('operator')!r}")
        reqs.append(Requirement(expr["key"], op, frozenset(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: tuple[str, ...]
    value: str
    negate: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        cur: Any = obj
        for part in self.path:
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        actual = "" if cur is None else str(cur)
        return (actual != self.value) if self.negate else (actual == self.value)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def exact(self, field: str) -> str | None:
        """The value a ``field=value`` requirement pins, for fast lookups by name."""
        path = FIELD_PATHS.get(field)
        for r in self.requirements:
            if r.path == path and not r.negate:
                return r.value
        return None


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse a ``fieldSelector``; an unsupported field is a BadRequest naming it."""
    if not text or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        for symbol, negate in (("!=", True), ("==", False), ("=", False)):
            if symbol in part:
                field, _, value = part.partition(symbol)
                field = field.strip()
                if field not in FIELD_PATHS:
                    supported = ", ".join(sorted(FIELD_PATHS))
                    raise BadRequest(
                        f'field label not supported: "{field}" (supported: {supported})'
                    )
                reqs.append(FieldRequirement(FIELD_PATHS[field], value.strip(), negate))
                break
        else:
            raise BadRequest(f"invalid field selector: {part!r} is not field=value or field!=value")
    return FieldSelector(tuple(reqs))
