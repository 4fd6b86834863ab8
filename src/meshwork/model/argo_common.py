"""What the Argo kind modules (argo_analysis, argo_rollouts, argo_templates,
argo_workflows) share: the API group, kind registration, Go durations,
``{{...}}`` detection, and ``WRITTEN_VALIDATOR``/``WRITTEN_SERIALIZER``.

The rule these helpers carry: Argo's CRDs default nothing server-side (the
controllers apply their defaults when they read an object), so an Argo
object's wire form is what the user wrote. Our own Argo fields default to
``None`` for that reason. Embedded Kubernetes types (pod templates, Job
specs, containers, volumes) come from ``meshwork.model.pod`` and friends,
which fill Kubernetes defaults; annotated with the two markers here they
still validate and default in Python, so a controller reading
``spec.template`` sees a defaulted pod template, but they serialize with
only the fields that were written.

What must not live here: any kind, or I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    WrapSerializer,
    WrapValidator,
)

from meshwork.model.base import REGISTRY, KindInfo, Resource
from meshwork.model.corev1 import Loc
from meshwork.model.pod import PodTemplateSpec
from meshwork.model.workloads import JobSpec

ARGO_GROUP = "argoproj.io"
ARGO_VERSION = "v1alpha1"
ARGO_API_VERSION = f"{ARGO_GROUP}/{ARGO_VERSION}"

Errors = list[tuple[Loc, str, Any]]


def mark_written(value: object, raw: object) -> None:
    """Make each model's ``model_fields_set`` exactly the keys written in ``raw``.

    Our Kubernetes models fill upstream defaults, some in validators, which
    pydantic then counts as "set"; this resets the record to what was written.
    """
    if isinstance(value, BaseModel) and isinstance(raw, dict):
        written: set[str] = set()
        for name, info in type(value).model_fields.items():
            key = info.alias if info.alias in raw else name
            if key in raw:
                written.add(name)
                mark_written(getattr(value, name), raw[key])
        object.__setattr__(value, "__pydantic_fields_set__", written)
    elif isinstance(value, list) and isinstance(raw, list):
        for item, raw_item in zip(value, raw, strict=False):
            mark_written(item, raw_item)
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, item in value.items():
            if key in raw:
                mark_written(item, raw[key])


def _validate_written(raw: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    value = handler(raw)
    mark_written(value, raw)
    return value


def _dump_written(value: Any, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
    if not isinstance(value, BaseModel):
        return handler(value)
    return value.model_dump(mode=info.mode, by_alias=bool(info.by_alias), exclude_unset=True,
                            exclude_none=info.exclude_none)  # fmt: skip


# Annotate an embedded Kubernetes type with both: Python sees it defaulted, the wire as written.
WRITTEN_VALIDATOR = WrapValidator(_validate_written)
WRITTEN_SERIALIZER = WrapSerializer(_dump_written)
WrittenPodTemplate = Annotated[PodTemplateSpec, WRITTEN_VALIDATOR, WRITTEN_SERIALIZER]
WrittenJobSpec = Annotated[JobSpec, WRITTEN_VALIDATOR, WRITTEN_SERIALIZER]

_GO_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                    "m": 60.0, "h": 3600.0}  # fmt: skip


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``"1h30m"``, ``"-1.5s"``, ``"0"``).

    Raises ValueError where Go returns an error: empty, no unit, unknown unit.
    """
    body, sign = text, 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _GO_DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _GO_UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def templated(value: str) -> bool:
    """Whether ``value`` holds an Argo ``{{...}}`` expression, resolved only at run time."""
    return "{{" in value


def duration_errors(value: str | None, loc: Loc, what: str) -> Errors:
    """Argo's "invalid <what> string: ..." for a Go duration; templated values pass."""
    if value is None or templated(value):
        return []
    try:
        parse_go_duration(value)
    except ValueError as exc:
        return [(loc, f"invalid {what} string: {exc}", value)]
    return []


def set_fields(obj: BaseModel, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are set (not None) on ``obj``: for one-of checks."""
    return [n for n in names if getattr(obj, n) is not None]


def negative_errors(obj: BaseModel, names: tuple[str, ...]) -> Errors:
    """Upstream's ValidateNonnegativeField for each named int field that is set."""
    errors: Errors = []
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 0:
            field = type(obj).model_fields[name].alias or name
            errors.append(((field,), "must be greater than or equal to 0", value))
    return errors


def register_argo_kind(model: type[Resource], plural: str, short: tuple[str, ...], *,
                       namespaced: bool = True, has_status: bool = True) -> None:  # fmt: skip
    """Register an argoproj.io/v1alpha1 kind; the default of its ``kind`` field names it."""
    kind = model.model_fields["kind"].default
    REGISTRY.register(KindInfo(
        group=ARGO_GROUP, versions=(ARGO_VERSION,), kind=kind, plural=plural, singular=kind.lower(),
        model=model, namespaced=namespaced, short_names=short, has_status=has_status,
    ))  # fmt: skip
