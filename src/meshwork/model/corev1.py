"""Shared building blocks of the core/v1 kinds: references, selectors, quantities, and field-error helpers.

What lives here: ``LocalObjectReference``/``ObjectReference``,
``LabelSelector`` and node selectors, quantity parsing, port and IANA
service-name checks, and ``fail_at``, which every kind module uses to raise
an error that names the exact wire path of the bad field.

What must not: any kind, any default, or selector *evaluation*.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Self

from pydantic import ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from meshwork.model.base import IntOrString, Model, Quantity

Loc = tuple[str | int, ...]

PORT_MIN, PORT_MAX = 1, 65535  # TCP/UDP port range (upstream validation.IsValidPortNum)
IANA_SVC_NAME_MAX = 15  # RFC 6335 §5.1: service names are at most 15 characters

_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_QUANTITY = re.compile(
    r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_QUANTITY_SUFFIX = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
    "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip


# ---------------------------------------------------------------------------
# Helpers shared by every kind module
# ---------------------------------------------------------------------------


def fail_at(title: str, errors: Sequence[tuple[Loc, str, Any]]) -> None:
    """Raise one ValidationError whose entries carry ``loc`` relative to the model raising it.

    Raised inside a validator, pydantic prefixes the outer path, so the final
    error reads ``spec.template.spec.containers.1.name``.
    """
    if not errors:
        return
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{message}", {"message": msg}),
            loc=loc,
            input=value,
        )
        for loc, msg, value in errors
    ]
    raise ValidationError.from_exception_data(title, details)


# Quantities and port names recur across objects ("100m", "64Mi", "http"): answers kept.
VALUE_CHECK_CACHE = 4096


@functools.lru_cache(maxsize=VALUE_CHECK_CACHE, typed=True)  # typed: True is not 1 here
def parse_quantity(value: Quantity) -> Decimal:
    """The numeric value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"1Gi"`` -> 2**30)."""
    if isinstance(value, bool):
        raise ValueError(f"quantity {value!r} must be a number or a string")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(
            f"quantity {value!r} must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, suffix = match.group(1), match.group(2) or ""
    sign = -1 if value.startswith("-") else 1
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"quantity {value!r} is not a number") from exc
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return sign * base * (Decimal(10) ** int(suffix[1:]))
    return sign * base * _QUANTITY_SUFFIX[suffix]


@functools.lru_cache(maxsize=VALUE_CHECK_CACHE)
def iana_svc_name_error(name: str) -> str | None:
    """Why ``name`` is not an IANA service name (a named port), or None."""
    if len(name) > IANA_SVC_NAME_MAX:
        return f"must be no more than {IANA_SVC_NAME_MAX} characters"
    if not _IANA_SVC_NAME.match(name):
        return "must contain only lowercase alphanumeric characters or '-'"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if not any(c.isalpha() for c in name):
        return "must contain at least one letter (a-z)"
    return None


def port_error(port: IntOrString, *, allow_name: bool = True) -> str | None:
    """Why ``port`` is neither a number in 1-65535 nor (if allowed) an IANA port name."""
    if isinstance(port, int):
        if not PORT_MIN <= port <= PORT_MAX:
            return f"must be between {PORT_MIN} and {PORT_MAX}, inclusive"
        return None
    if not allow_name:
        return "must be a number"
    return iana_svc_name_error(port)


def check_quantities(resources: dict[str, Quantity] | None) -> dict[str, Quantity] | None:
    """Refuse a resource list holding a malformed or negative quantity."""
    for name, value in (resources or {}).items():
        try:
            parsed = parse_quantity(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if parsed < 0:
            raise ValueError(f"{name}: must be greater than or equal to 0")
    return resources


def exactly_one(obj: Model, names: Iterable[str], what: str) -> None:
    """Upstream's "may not specify more than 1 handler type" / "must specify a handler type"."""
    present = [n for n in names if getattr(obj, n) is not None]
    if len(present) > 1:
        raise ValueError(f"may not specify more than 1 {what} type")
    if not present:
        raise ValueError(f"must specify a {what} type")


class LocalObjectReference(Model):
    """A reference to an object by name in the same namespace."""

    name: str | None = None


class ObjectReference(Model):
    """A reference to any object (core/v1 ObjectReference)."""

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


def wire_name(name: str) -> str:
    """The camelCase wire name of a snake_case attribute (``period_seconds`` -> ``periodSeconds``)."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def attr_name(wire: str) -> str:
    """The snake_case attribute of a camelCase wire name (``livenessProbe`` -> ``liveness_probe``)."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), wire)


# ---------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------


class LabelSelectorRequirement(Model):
    """One ``matchExpressions`` entry: key, operator, values."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError("values: must be specified when `operator` is 'In' or 'NotIn'")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(
                "values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        return self


class LabelSelector(Model):
    """A label query (metav1.LabelSelector); an empty selector matches everything."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class NodeSelectorRequirement(Model):
    """A node label or field requirement; ``Gt``/``Lt`` take one integer value."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None


class NodeSelectorTerm(Model):
    """Requirements ANDed together; terms of a NodeSelector are ORed."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None


class NodeSelector(Model):
    """A list of ORed node selector terms."""

    node_selector_terms: list[NodeSelectorTerm]
