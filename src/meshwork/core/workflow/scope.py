"""What ``{{...}}`` references mean for one node: inputs, items, sibling outputs.

What lives here: the scope (a flat map of reference name to text), the rules
for a template's inputs (argument, else default, else an error), expanding
``withItems``/``withParam``/``withSequence``, Go-duration parsing for retry
back-off, and the outputs a steps or DAG sibling publishes.

What must not: walking templates or deciding phases (``engine``), or I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from meshwork.core.workflow.expr import substitute
from meshwork.core.workflow.nodes import Json, Node, item_label
from meshwork.model.argo_templates import Sequence, Template

Scope = dict[str, str]
MAX_ITEMS = 10_000  # an expansion larger than this is refused rather than run
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScopeError(ValueError):
    """A reference, input or expansion that cannot be resolved: the node is an Error."""


def duration_seconds(text: str | int | None) -> float | None:
    """Argo's durations: a bare number is seconds, else a Go duration ("1m30s")."""
    if text is None or text == "":
        return None
    raw = str(text).strip()
    try:
        return float(raw)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(raw) or pos == 0:
        raise ScopeError(f"invalid duration {raw!r}")
    return total


def resolve_inputs(template: Template, arguments: Mapping[str, str]) -> list[tuple[str, str]]:
    """A template's input parameters: the caller's argument, else the default, else an error."""
    out: list[tuple[str, str]] = []
    for param in (template.inputs.parameters if template.inputs else None) or []:
        if param.name in arguments:
            value = arguments[param.name]
        elif param.value is not None:
            value = param.value
        elif param.default is not None:
            value = param.default
        else:
            raise ScopeError(f"inputs.parameters.{param.name} was not supplied")
        if param.enum and value not in param.enum:
            raise ScopeError(f"inputs.parameters.{param.name} value {value!r} is not one of {param.enum}")
        out.append((param.name, value))
    return out


def with_inputs(base: Scope, inputs: list[tuple[str, str]]) -> Scope:
    scope = dict(base)
    for name, value in inputs:
        scope[f"inputs.parameters.{name}"] = value
    return scope


def item_scope(base: Scope, item: Json) -> Scope:
    scope = dict(base)
    scope["item"] = item_label(item)
    if isinstance(item, dict):
        for key, value in item.items():
            scope[f"item.{key}"] = item_label(value)
    return scope


def _sequence(seq: Sequence, scope: Scope) -> list[Json]:
    def num(value: int | str | None) -> int | None:
        if value is None:
            return None
        try:
            return int(substitute(str(value), scope))
        except ValueError as exc:
            raise ScopeError(f"withSequence: {value!r} is not an integer") from exc

    count, start, end = num(seq.count), num(seq.start), num(seq.end)
    first = start or 0
    if count is not None:
        numbers = list(range(first, first + count))
    elif end is not None:
        step = 1 if end >= first else -1
        numbers = list(range(first, end + step, step))
    else:
        raise ScopeError("withSequence needs count or end")
    if len(numbers) > MAX_ITEMS:
        raise ScopeError(f"withSequence gives more than {MAX_ITEMS} items")
    if seq.format:
        try:
            return [seq.format % n for n in numbers]
        except (TypeError, ValueError) as exc:
            raise ScopeError(f"withSequence format {seq.format!r}: {exc}") from exc
    return [str(n) for n in numbers]


def expand(with_items: list[Json] | None, with_param: str | None, with_sequence: Sequence | None,
           scope: Scope) -> list[Json] | None:  # fmt: skip
    """The items a step or task runs over, or None when it is not expanded."""
    if with_items is not None:
        return [_substitute_json(item, scope) for item in with_items]
    if with_param is not None:
        text = substitute(with_param, scope)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScopeError(f"withParam value could not be parsed as a JSON list: {text.strip()[:200]}") from exc
        if not isinstance(items, list):
            raise ScopeError(f"withParam value is not a JSON list: {text.strip()[:200]}")
        if len(items) > MAX_ITEMS:
            raise ScopeError(f"withParam gives more than {MAX_ITEMS} items")
        return list(items)
    if with_sequence is not None:
        return _sequence(with_sequence, scope)
    return None


def _substitute_json(value: Json, scope: Scope) -> Json:
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [_substitute_json(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_json(v, scope) for k, v in value.items()}
    return value


def publish(scope: Scope, prefix: str, name: str, nodes: list[Node], expanded: bool) -> None:
    """Add ``{prefix}.{name}.outputs...``, ``.status`` and ``.exitCode`` for a finished sibling.

    An expanded step or task publishes its children's results as JSON lists, as Argo does.
    """
    key = f"{prefix}.{name}"
    if not nodes:
        return
    if not expanded:
        node = nodes[0]
        scope[f"{key}.status"] = node.phase
        scope[f"{key}.id"] = node.id
        if node.result is not None:
            scope[f"{key}.outputs.result"] = node.result
        if node.exit_code is not None:
            scope[f"{key}.exitCode"] = node.exit_code
        for pname, value in node.out_parameters:
            scope[f"{key}.outputs.parameters.{pname}"] = value
        for aname, where in node.out_artifacts:
            scope[f"{key}.outputs.artifacts.{aname}"] = where
        return
    results: list[Json] = [_json_or_text(n.result) for n in nodes if n.result is not None]
    scope[f"{key}.outputs.result"] = json.dumps(results, separators=(",", ":"))
    params = [{p: v for p, v in n.out_parameters} for n in nodes if n.out_parameters]
    scope[f"{key}.outputs.parameters"] = json.dumps(params, separators=(",", ":"))


def _json_or_text(text: str | None) -> Json:
    if text is None:
        return None
    try:
        value: Json = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict | list) else text


def resolve_template(template: Template, scope: Scope) -> Template:
    """The template with every ``{{...}}`` the scope knows replaced, and each input
    artifact's ``from`` as its caller passed it."""
    raw = template.model_dump(mode="json", by_alias=True, exclude_none=True)
    inputs = raw.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("artifacts"), list):
        for art in inputs["artifacts"]:
            ref = scope.get(f"inputs.artifacts.{art.get('name')}.from")
            if ref is not None and "from" not in art:
                art["from"] = ref
    resolved = _substitute_json(raw, scope)
    return Template.model_validate(resolved)
