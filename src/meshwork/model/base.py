"""The base of the typed resource model: conventions, ObjectMeta, and the kind registry.

Rules for every model in ``meshwork.model``:

* Field names are the upstream ones. Python attributes are snake_case, and the
  wire name comes from the camelCase alias generator. Where upstream does not
  camel-case regularly (``clusterIP``, ``podIP``, ``from``), give an explicit
  ``Field(alias=...)``.
* ``extra="forbid"`` and ``strict=True``: an unknown field or a wrong type is an
  error, never coerced (``containerPort: "80"`` is refused, as
  ``kubectl apply --validate=strict`` refuses it).
* A field with an upstream default carries that default, so that
  ``to_wire(obj)`` shows the defaults filled in. A field without one defaults
  to ``None`` and is left out of the wire form.
* Defaults that depend on other fields (``targetPort`` = ``port``) are set in a
  ``model_validator(mode="after")`` on the model that owns them.
* This package does no I/O. It imports only the stdlib, pydantic and
  ``meshwork.errors``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# The kind registry lives in kinds.py (no pydantic); re-exported here for the models.
from meshwork.model.kinds import REGISTRY as REGISTRY
from meshwork.model.kinds import KindInfo as KindInfo
from meshwork.model.kinds import NameRule as NameRule
from meshwork.model.kinds import Registry as Registry
from meshwork.model.kinds import api_version_of as api_version_of
from meshwork.model.kinds import split_api_version as split_api_version

# Kubernetes' "int or string" (targetPort, maxSurge) and quantities ("500m", 0.5, 2).
IntOrString = int | str
Quantity = int | float | str


class Model(BaseModel):
    """Base of every wire model: strict, closed, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        alias_generator=to_camel,
        validate_assignment=False,
        # Build validators on first use, not at import: the CLI starts fast and
        # pays only for the kinds it touches.
        defer_build=True,
    )


class OpenModel(Model):
    """For the few upstream fields that are free-form objects (preserve unknown fields)."""

    model_config = ConfigDict(extra="allow")


# DNS-1123 (RFC 1123) names, as Kubernetes validates them.
DNS1123_LABEL_MAX = 63  # RFC 1123 label length
DNS1123_SUBDOMAIN_MAX = 253  # RFC 1123 name length
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Label keys: optional DNS subdomain prefix, then a "qualified name" of at most 63 characters.
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_MAX = 63  # Kubernetes: label values are at most 63 characters
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes: total annotation size limit
# The name and label checks below are pure functions of one string, and the
# same few names, label keys and values recur across thousands of objects:
# each remembers this many answers instead of running its regexes again.
NAME_CHECK_CACHE = 4096


@functools.lru_cache(maxsize=NAME_CHECK_CACHE)
def dns1123_label_error(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 label, or None when it is one."""
    if len(value) > DNS1123_LABEL_MAX:
        return f"must be no more than {DNS1123_LABEL_MAX} characters"
    if not _DNS1123_LABEL.match(value):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=NAME_CHECK_CACHE)
def dns1123_subdomain_error(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 subdomain, or None when it is one."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return None


@functools.lru_cache(maxsize=NAME_CHECK_CACHE)
def qualified_name_error(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key, or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix:
        return "a qualified name must have at most one '/'"
    if key.endswith("/") or key.startswith("/"):
        return "prefix and name must be non-empty"
    if prefix:
        err = dns1123_subdomain_error(prefix)
        if err:
            return f"prefix part {err}"
    if not name or len(name) > DNS1123_LABEL_MAX or not _QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', must start and "
            f"end with an alphanumeric character, and be at most {DNS1123_LABEL_MAX} characters"
        )
    return None


@functools.lru_cache(maxsize=NAME_CHECK_CACHE)
def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if len(value) > LABEL_VALUE_MAX:
        return f"must be no more than {LABEL_VALUE_MAX} characters"
    if not _LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ManagedFieldsEntry(OpenModel):
    """Accepted and kept as written; meshwork does not track field managers."""


class ObjectMeta(Model):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[ManagedFieldsEntry] | None = None
    self_link: str | None = None

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (labels or {}).items():
            err = qualified_name_error(key)
            if err:
                raise ValueError(f"invalid label key {key!r}: {err}")
            err = label_value_error(value)
            if err:
                raise ValueError(f"invalid label value {value!r} for key {key!r}: {err}")
        return labels

    @field_validator("annotations")
    @classmethod
    def _check_annotations(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        total = 0
        for key, value in (annotations or {}).items():
            err = qualified_name_error(key)
            if err:
                raise ValueError(f"invalid annotation key {key!r}: {err}")
            total += len(key) + len(value)
        if total > ANNOTATIONS_MAX_BYTES:
            raise ValueError(f"annotations may not exceed {ANNOTATIONS_MAX_BYTES} bytes in total")
        return annotations


class Resource(Model):
    """A top-level object: apiVersion, kind, metadata, and (per kind) spec and status."""

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    # Filled by ``register``: the KindInfo this model is stored under.
    info: ClassVar[KindInfo]
    # Whether a ``/status`` write may validate the new status on its own (as
    # upstream's status strategies do) instead of the whole object: true when
    # the kind's own model validators never read or write ``status``. None
    # means "when the model has no model validators of its own".
    status_validated_alone: ClassVar[bool | None] = None


def to_wire(obj: Resource) -> dict[str, Any]:
    """The JSON-ready dict of ``obj``: camelCase names, defaults filled, unset fields left out."""
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
