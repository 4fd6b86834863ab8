"""One object in, one typed Resource out: strict JSON decoding and kind-generic validation.

What lives here: ``decode_json`` (strict JSON: no duplicate fields, no
NaN/Infinity, bounded nesting) and ``validate_object`` / ``check_object``,
which look an object's apiVersion+kind up in the registry, validate it with
the kind's model, check ``metadata`` the way Kubernetes' ``ValidateObjectMeta``
does, and translate pydantic's errors into Kubernetes ``StatusCause``-shaped
``FieldCause``s with Kubernetes field paths and plain messages
(``spec.template.spec.containers[0].ports[0].containerPort: expected
integer, got "http"``). The API server and the CLI's loader both use it, so
an object is judged the same way wherever it enters.

What must not: knowledge of any particular kind (every kind comes from the
registry), file or network I/O, and line numbers (``loader`` maps the paths
here onto lines).

How the paths are made: pydantic reports a location as a tuple of wire names,
list indices, map keys and (for a union type) the name of the union member.
``_describe`` walks that tuple along the model's type annotations, so it knows
which strings are fields (``.name``), which are map keys (``[key]``) and which
are union tags (dropped, because they are not in the document).

Models report semantic errors by raising pydantic ``ValidationError`` (or
``ValueError``) from a validator; a ``ctx["reason"]`` on the error, when
present, is used as the cause's reason (default ``FieldValueInvalid``).
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import pydantic_core
from pydantic import BaseModel, ValidationError

from meshwork.errors import BadRequest, FieldCause
from meshwork.errors import ValidationError as InvalidObject
from meshwork.model.base import (
    REGISTRY,
    KindInfo,
    NameRule,
    Registry,
    Resource,
    dns1123_label_error,
    dns1123_subdomain_error,
)

MAX_NESTING_DEPTH = (
    100  # real manifests nest ~30 levels; keeps recursive walkers far below Python's limit
)
VALUE_PREVIEW_MAX = 64  # characters of a rejected value quoted in a message

INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
UNKNOWN = "FieldValueUnknown"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
REASONS = frozenset(
    {INVALID, REQUIRED, UNKNOWN, NOT_SUPPORTED, DUPLICATE, FORBIDDEN, TOO_LONG, TOO_MANY}
)

JsonPath = tuple[str | int, ...]

# pydantic error type -> the JSON type it expected
_EXPECTED = {
    "int_type": "integer", "int_parsing": "integer", "int_from_float": "integer",
    "string_type": "string", "string_unicode": "string", "bool_type": "boolean",
    "bool_parsing": "boolean", "float_type": "number", "float_parsing": "number",
    "dict_type": "object", "model_type": "object", "model_attributes_type": "object",
    "dataclass_type": "object", "list_type": "array", "tuple_type": "array",
    "set_type": "array", "none_required": "null",
}  # fmt: skip
_BOUNDS = {
    "greater_than_equal": ("ge", "must be greater than or equal to {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be less than or equal to {}"),
    "less_than": ("lt", "must be less than {}"),
    "multiple_of": ("multiple_of", "must be a multiple of {}"),
}
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an object is invalid, with where it is in the submitted document."""

    path: JsonPath
    cause: FieldCause
    at_key: bool = False  # about the key itself (an unknown field), not its value


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of ``check_object``: the object, or the problems that stop it."""

    obj: Resource | None
    problems: tuple[Problem, ...]
    kind: str | None = None
    group: str | None = None
    name: str | None = None

    @property
    def causes(self) -> list[FieldCause]:
        return [p.cause for p in self.problems]


# ---------------------------------------------------------------------------
# Strict JSON
# ---------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside ``json.loads`` hooks; turned into BadRequest at the boundary."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; the Python loop below runs only for a duplicate
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f'duplicate field "{key}"')
            seen.add(key)
    return result


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"number {text} is out of range")
    return value


def loads_strict(text: str) -> Any:
    """Parse JSON text strictly; errors are ``BadRequest`` with the line in ``causes``.

    Refused: duplicate object keys, NaN/Infinity, numbers that overflow a
    double, unpaired UTF-16 surrogates, nesting deeper than MAX_NESTING_DEPTH.
    """
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float
        )
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise BadRequest(
            message, causes=[FieldCause("", message, INVALID, line=exc.lineno)]
        ) from exc
    except _Refused as exc:
        raise BadRequest(
            f"invalid JSON: {exc}", causes=[FieldCause("", f"invalid JSON: {exc}")]
        ) from exc
    except RecursionError as exc:
        message = f"invalid JSON: nested deeper than {MAX_NESTING_DEPTH} levels"
        raise BadRequest(message, causes=[FieldCause("", message)]) from exc
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise BadRequest(
            f"invalid JSON: {exc}", causes=[FieldCause("", f"invalid JSON: {exc}")]
        ) from exc
    # The walk below is the slow part of decoding; skip it when the text cannot
    # hold what it looks for: a surrogate needs a \uD8xx-\uDFxx escape (UTF-8
    # text itself cannot carry one), and nesting cannot exceed the bracket count.
    brackets = text.count("{") + text.count("[")
    might_nest = brackets > MAX_NESTING_DEPTH
    problem = _shape_problem(value) if might_nest or _SURROGATE_ESCAPE.search(text) else None
    if problem:
        raise BadRequest(
            f"invalid JSON: {problem}", causes=[FieldCause("", f"invalid JSON: {problem}")]
        )
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _shape_problem(value: Any) -> str | None:
    """Nesting deeper than the limit, or a string with an unpaired surrogate."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING_DEPTH:
            return f"nested deeper than {MAX_NESTING_DEPTH} levels"
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return "string contains an unpaired UTF-16 surrogate"
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, depth))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def decode_json(data: bytes) -> Any:
    """Decode a request body: UTF-8, then strict JSON (see ``loads_strict``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"request body is not valid UTF-8 (byte {exc.start})"
        raise BadRequest(message, causes=[FieldCause("", message)]) from exc
    return loads_strict(text)


# ---------------------------------------------------------------------------
# Paths and messages
# ---------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from an optional; a real union stays a union."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _field_types(model: type[BaseModel]) -> dict[str, Any]:
    """Wire name (and Python name) -> annotation, for every field of ``model``."""
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        found[name] = info.annotation
        for alias in (info.alias, info.serialization_alias):
            if alias:
                found[alias] = info.annotation
        choices = getattr(info.validation_alias, "choices", None)
        for choice in choices or (
            [info.validation_alias] if isinstance(info.validation_alias, str) else []
        ):
            if isinstance(choice, str):
                found[choice] = info.annotation
    return found


def _describe(root: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[JsonPath, str, Any, bool]:
    """Document path, Kubernetes field path, leaf type and "went through a union" for ``loc``."""
    tp: Any = root
    path: list[str | int] = []
    text = ""
    via_union = False
    for comp in loc:
        tp = _unwrap(tp)
        if _is_union(tp):  # pydantic names the union member: not part of the document
            via_union = True
            tp = None
            continue
        origin = typing.get_origin(tp)
        if isinstance(comp, int):
            path.append(comp)
            text += f"[{comp}]"
            args = typing.get_args(tp)
            tp = args[0] if origin in (list, tuple, set, frozenset) and args else None
        elif comp == "[key]":  # pydantic: the error is about a map key itself
            tp = None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            path.append(comp)
            text += f".{comp}" if text else comp
            tp = _field_types(tp).get(comp)
        elif origin is dict or (tp is None and not _plain_name(comp)):
            path.append(comp)
            text += f"[{comp}]"
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else None
        else:
            path.append(comp)
            text += f".{comp}" if text else comp
            tp = None
    return tuple(path), text, _unwrap(tp) if tp is not None else None, via_union


def _plain_name(comp: str) -> bool:
    return comp.isidentifier()


def render_path(path: JsonPath) -> str:
    """A Kubernetes field path for a document path when no schema is known."""
    text = ""
    for comp in path:
        if isinstance(comp, int):
            text += f"[{comp}]"
        elif _plain_name(comp):
            text += f".{comp}" if text else comp
        else:
            text += f"[{comp}]"
    return text


def preview(value: Any) -> str:
    """A short JSON-like rendering of a rejected value for a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str):
        text = value if len(value) <= VALUE_PREVIEW_MAX else value[:VALUE_PREVIEW_MAX] + "..."
        return json.dumps(text, ensure_ascii=False)
    return str(value)


def _supported(leaf: Any, ctx: Mapping[str, Any]) -> list[str]:
    if typing.get_origin(leaf) is Literal:
        return [json.dumps(v) if isinstance(v, str) else str(v) for v in typing.get_args(leaf)]
    expected = str(ctx.get("expected", ""))
    return [json.dumps(m) for m in _QUOTED.findall(expected)] or [expected]


def _message(error: Mapping[str, Any], leaf: Any) -> tuple[str, str]:
    """Plain message and Kubernetes reason for one pydantic error."""
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required value", REQUIRED
    if kind == "extra_forbidden":
        return f'unknown field "{error["loc"][-1]}"', UNKNOWN
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {preview(value)}", INVALID
    if kind in ("literal_error", "enum"):
        values = ", ".join(_supported(leaf, ctx))
        return f"unsupported value {preview(value)}: supported values: {values}", NOT_SUPPORTED
    if kind in _BOUNDS:
        key, template = _BOUNDS[kind]
        return template.format(ctx.get(key)), INVALID
    if kind in ("string_too_long", "too_long"):
        unit = "characters" if kind == "string_too_long" else "items"
        reason = TOO_LONG if kind == "string_too_long" else TOO_MANY
        return f"must have at most {ctx.get('max_length')} {unit}", reason
    if kind in ("string_too_short", "too_short"):
        unit = "characters" if kind == "string_too_short" else "items"
        return f"must have at least {ctx.get('min_length')} {unit}", INVALID
    if kind == "string_pattern_mismatch":
        return f"must match the regular expression {ctx.get('pattern')!r}", INVALID
    if kind == "finite_number":
        return "must be a finite number", INVALID
    message = str(ctx.get("message") or error.get("msg") or kind)
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    reason = str(ctx.get("reason", INVALID))
    return message, reason if reason in REASONS else INVALID


def _problems_from(model: type[BaseModel], exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    unions: dict[tuple[JsonPath, str], list[tuple[Mapping[str, Any], Any]]] = {}
    for error in exc.errors(include_url=False):
        path, text, leaf, via_union = _describe(model, tuple(error["loc"]))
        if via_union:
            unions.setdefault((path, text), []).append((error, leaf))
            continue
        message, reason = _message(error, leaf)
        problems.append(
            Problem(path, FieldCause(text, message, reason), error["type"] == "extra_forbidden")
        )
    for (path, text), errors in unions.items():
        specific = [(e, leaf) for e, leaf in errors if e["type"] not in _EXPECTED]
        if specific:  # a member accepted the type but not the value: that is the real error
            for union_error, leaf in specific:
                message, reason = _message(union_error, leaf)
                problems.append(Problem(path, FieldCause(text, message, reason)))
            continue
        names = list(dict.fromkeys(_EXPECTED[e["type"]] for e, _ in errors))
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        problems.append(
            Problem(
                path,
                FieldCause(text, f"expected {expected}, got {preview(errors[0][0].get('input'))}"),
            )
        )
    return _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[JsonPath, str]] = set()
    unique: list[Problem] = []
    for problem in problems:
        key = (problem.path, problem.cause.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return unique


def invalid_message(
    kind: str | None, group: str | None, name: str | None, causes: list[FieldCause]
) -> str:
    """Kubernetes' wording: ``Deployment.apps "web" is invalid: spec.replicas: ...``."""
    what = f"{kind}.{group}" if kind and group else kind or "object"
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    detail = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return f'{what} "{name or ""}" is invalid: {detail}'


# ---------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------


def _without_nulls(value: Any) -> Any:
    """Drop null-valued fields: in Kubernetes' typed decoding ``null`` means "not set"."""
    # Exact type checks: an ABC isinstance per value costs more than the rest of this walk.
    kind = type(value)
    if kind is dict or (kind is not list and kind is not str and isinstance(value, Mapping)):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if kind is list:
        return [_without_nulls(v) for v in value]
    return value


def _may_hold_null(value: Any) -> bool:
    """False when ``value`` certainly holds no null: its JSON encoding (in Rust,
    a third of the cost of the ``_without_nulls`` walk it spares) has no ``null``."""
    try:
        return b"null" in pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError:
        return True  # not plain JSON data (YAML timestamps, say): walk it


def _path_segment_error(name: str) -> str | None:
    """Kubernetes ``ValidatePathSegmentName``."""
    if name in (".", ".."):
        return f"may not be {name!r}"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain {bad!r}"
    return None


def name_error(rule: NameRule, name: str) -> str | None:
    """Why ``name`` breaks the kind's naming rule, or None."""
    if rule == "label":
        return dns1123_label_error(name)
    if rule == "path":
        return _path_segment_error(name)
    return dns1123_subdomain_error(name)


def _metadata_problems(
    info: KindInfo, raw: Mapping[str, Any], reported: set[JsonPath]
) -> list[Problem]:
    """Kubernetes ``ValidateObjectMeta``: name (or generateName) and namespace."""
    meta = raw.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        return []
    problems: list[Problem] = []
    name, generate = meta.get("name"), meta.get("generateName")
    if ("metadata", "name") not in reported:
        if not name and not generate:
            problems.append(
                Problem(
                    ("metadata", "name"),
                    FieldCause("metadata.name", "name or generateName is required", REQUIRED),
                )
            )
        elif isinstance(name, str) and name and (err := name_error(info.name_rule, name)):
            problems.append(
                Problem(
                    ("metadata", "name"),
                    FieldCause("metadata.name", f"invalid value {preview(name)}: {err}"),
                )
            )
    if (
        not name
        and isinstance(generate, str)
        and generate
        and ("metadata", "generateName") not in reported
    ):
        prefix = generate.rstrip("-") or generate  # upstream masks trailing dashes of the prefix
        if err := name_error(info.name_rule, prefix):
            problems.append(
                Problem(
                    ("metadata", "generateName"),
                    FieldCause(
                        "metadata.generateName", f"invalid value {preview(generate)}: {err}"
                    ),
                )
            )
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace and ("metadata", "namespace") not in reported:
        if err := dns1123_label_error(namespace):
            problems.append(
                Problem(
                    ("metadata", "namespace"),
                    FieldCause("metadata.namespace", f"invalid value {preview(namespace)}: {err}"),
                )
            )
    return problems


def _lookup(
    raw: Mapping[str, Any], registry: Registry
) -> tuple[KindInfo | None, list[Problem], str]:
    """The kind's registration, or the problems with apiVersion/kind and a summary."""
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    problems: list[Problem] = []
    for field, value in (("apiVersion", api_version), ("kind", kind)):
        if value is None or value == "":
            problems.append(Problem((field,), FieldCause(field, "required value", REQUIRED)))
        elif not isinstance(value, str):
            problems.append(
                Problem((field,), FieldCause(field, f"expected string, got {preview(value)}"))
            )
    if problems:
        return None, problems, "; ".join(f"{p.cause.field}: {p.cause.message}" for p in problems)
    assert isinstance(api_version, str) and isinstance(kind, str)
    info = registry.for_api_version(api_version, kind)
    if info is not None:
        return info, [], ""
    message = f'meshwork does not support kind "{kind}" in apiVersion "{api_version}"'
    elsewhere = [i for i in registry.known_kinds() if i.kind == kind]
    if elsewhere:
        versions = ", ".join(v for i in elsewhere for v in i.api_versions())
        message += f" (supported apiVersions for this kind: {versions})"
        return (
            None,
            [Problem(("apiVersion",), FieldCause("apiVersion", message, NOT_SUPPORTED))],
            message,
        )
    return None, [Problem(("kind",), FieldCause("kind", message, NOT_SUPPORTED))], message


def check_object(raw: Mapping[str, Any], *, registry: Registry = REGISTRY) -> Checked:
    """Validate ``raw`` (decoded JSON/YAML) and return the object or every problem found.

    On success the object carries the kind's preferred apiVersion (objects are
    stored at the preferred version) and, for a cluster-scoped kind, no
    namespace (the API server clears it, as Kubernetes' ``BeforeCreate`` does).
    """
    if not isinstance(raw, Mapping):
        cause = FieldCause("", f"expected object, got {preview(raw)}")
        return Checked(None, (Problem((), cause),))
    meta = raw.get("metadata")
    name = (
        meta.get("name")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str)
        else None
    )
    kind = raw.get("kind") if isinstance(raw.get("kind"), str) else None
    info, problems, _ = _lookup(raw, registry)
    if info is None:
        return Checked(None, tuple(problems), kind, None, name)
    try:
        obj: Resource | None = info.model.model_validate(
            _without_nulls(raw) if _may_hold_null(raw) else raw, by_alias=True, by_name=False
        )
    except ValidationError as exc:
        problems = _problems_from(info.model, exc)
        obj = None
    except RecursionError:
        message = f"nested deeper than {MAX_NESTING_DEPTH} levels"
        problems = [Problem((), FieldCause("", message))]
        obj = None
    reported = {p.path for p in problems}
    problems += _metadata_problems(info, raw, reported)
    if problems or obj is None:
        return Checked(None, tuple(problems), info.kind, info.group, name)
    update: dict[str, Any] = {}
    if obj.api_version != info.api_version:
        update["api_version"] = info.api_version
    if not info.namespaced and obj.metadata.namespace:
        update["metadata"] = obj.metadata.model_copy(update={"namespace": None})
    if update:  # a copy only when something changes: most objects arrive as stored
        obj = obj.model_copy(update=update)
    return Checked(obj, (), info.kind, info.group, name)


def validate_object(raw: Mapping[str, Any], *, registry: Registry = REGISTRY) -> Resource:
    """Validate ``raw`` and return the typed object, or raise ``ValidationError`` (422).

    The error's message reads like Kubernetes' (``Deployment.apps "web" is
    invalid: spec.replicas: expected integer, got "3"``) and its ``causes``
    carry one ``FieldCause`` per problem.
    """
    checked = check_object(raw, registry=registry)
    if checked.obj is not None:
        return checked.obj
    causes = checked.causes
    if checked.group is None and any(c.field in ("apiVersion", "kind") for c in causes):
        _, _, summary = _lookup(raw, registry) if isinstance(raw, Mapping) else (None, [], "")
        message = summary or invalid_message(checked.kind, None, checked.name, causes)
    else:
        message = invalid_message(checked.kind, checked.group, checked.name, causes)
    raise InvalidObject(
        message, causes=causes, kind=checked.kind, name=checked.name, group=checked.group
    )


_STATUS_MODELS: dict[type[Resource], type[BaseModel] | None] = {}


def _status_model(info: KindInfo) -> type[BaseModel] | None:
    """The model of the kind's ``status`` when a status write may be validated alone."""
    model = info.model
    if model in _STATUS_MODELS:
        return _STATUS_MODELS[model]
    found = _find_status_model(model)
    _STATUS_MODELS[model] = found
    return found


def _find_status_model(model: type[Resource]) -> type[BaseModel] | None:
    alone = model.status_validated_alone
    if alone is None:
        alone = not model.__pydantic_decorators__.model_validators
    field = model.model_fields.get("status")
    if not alone or field is None:
        return None
    tp = _unwrap(field.annotation)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def status_alone(info: KindInfo) -> bool:
    """Whether the kind's ``status`` may be validated (and so trusted) on its own."""
    return _status_model(info) is not None


def validate_status(info: KindInfo, status: Any) -> dict[str, Any] | None:
    """The wire form of a ``/status`` write's new ``status``, validated on its own.

    None when it cannot be judged alone (the kind's model checks status with
    other fields, or the status is invalid): the caller then validates the
    whole object, which also words the problems. The rest of the object is
    the stored one, valid when it was written.
    """
    model = _status_model(info)
    if model is None or not isinstance(status, Mapping):
        return None
    try:
        checked = model.model_validate(_without_nulls(status), by_alias=True, by_name=False)
    except (ValidationError, RecursionError):
        return None
    wire: dict[str, Any] = checked.model_dump(mode="json", by_alias=True, exclude_none=True)
    return wire
