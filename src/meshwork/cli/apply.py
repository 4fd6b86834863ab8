"""``meshwork apply``: create what is new, update what changed, leave the rest alone.

What lives here: the desired wire object for a manifest (the fields the
manifest sets, namespace resolved, the last applied configuration recorded in
``kubectl.kubernetes.io/last-applied-configuration`` as kubectl does), the
three-way merge kubectl apply performs (fields dropped from the manifest
since the last apply are removed; fields the server or controllers added are
kept; lists are replaced whole, as a JSON merge patch does), and the loop
that creates or updates each object with optimistic concurrency.

What must not live here: printing decisions beyond the one-line result per
object, and any parsing of manifests (``meshwork.model.loader`` does that).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meshwork.cli.resolve import kind_label
from meshwork.client import Client, version_for
from meshwork.errors import AlreadyExists, ApiError, Conflict
from meshwork.model.base import KindInfo, Resource, to_wire
from meshwork.model.loader import Manifest, load_manifests

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# An update that keeps losing the optimistic-concurrency race is retried this
# many times (re-read, re-merge, re-write) before the conflict is reported;
# kubectl's apply retries a conflicting patch 5 times too.
APPLY_CONFLICT_RETRIES = 5
# Metadata the server owns: never sent from a manifest, never compared.
SERVER_OWNED_METADATA = frozenset(
    {
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)

Outcome = Literal["created", "configured", "unchanged"]


@dataclass(frozen=True, slots=True)
class Desired:
    """One object to apply: its kind, namespace and wire form (last-applied annotation included)."""

    info: KindInfo
    namespace: str | None
    obj: dict[str, Any]
    source: str  # file:line, for messages

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def label(self) -> str:
        return f"{kind_label(self.info)}/{self.name}"


def load(paths: Sequence[str]) -> list[Manifest]:
    """Read and validate every manifest under ``paths`` (``-`` is stdin); raises ``ManifestError``."""
    return load_manifests(list(paths), stdin=sys.stdin)


def desired_object(
    obj: Resource, default_namespace: str
) -> tuple[KindInfo, str | None, dict[str, Any]]:
    """The wire form to apply for ``obj``, with its kind and namespace.

    Only the fields the manifest sets are sent and recorded, as kubectl records
    the configuration it was given: a field the user leaves out stays the
    server's (or a controller's, such as an autoscaler's ``replicas``), and
    the server fills in the defaults on create. Lists are the exception: they
    replace the live list whole, so they carry the model's defaults (a
    container port's ``protocol: TCP``) to compare equal to what the server stored. The namespace is the
    manifest's own, else ``default_namespace``; a cluster-scoped kind has
    none. The returned dict carries the last-applied annotation (the same
    dict, without that annotation, as compact JSON).
    """
    info = type(obj).info
    wire = with_defaulted_lists(
        obj.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True),
        to_wire(obj),
    )
    wire.setdefault("apiVersion", obj.api_version)
    wire.setdefault("kind", obj.kind)
    wire.pop("status", None)
    meta: dict[str, Any] = dict(wire.get("metadata") or {})
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    namespace: str | None = None
    if info.namespaced:
        namespace = meta.get("namespace") or default_namespace
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    wire["metadata"] = meta
    recorded = json.dumps(wire, separators=(",", ":"), sort_keys=True)
    meta["annotations"] = {**annotations, LAST_APPLIED: recorded + "\n"}
    return info, namespace, wire


def with_defaulted_lists(given: dict[str, Any], defaulted: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with every list taken from ``defaulted`` (the same object, defaults filled)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        full = defaulted.get(key)
        if isinstance(value, dict) and isinstance(full, Mapping):
            out[key] = with_defaulted_lists(value, full)
        elif isinstance(value, list) and isinstance(full, list):
            out[key] = copy.deepcopy(full)
        else:
            out[key] = value
    return out


def last_applied(live: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration recorded by the previous apply, or ``{}``."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def three_way_merge(
    live: Mapping[str, Any], desired: Mapping[str, Any], previous: Mapping[str, Any]
) -> dict[str, Any]:
    """What the object should become: ``live`` with ``desired`` laid over it.

    A key the previous apply set and ``desired`` no longer has is removed; a
    key neither of them ever had (a server default, a controller's annotation,
    ``status``) is kept. Mappings merge recursively; lists and scalars from
    ``desired`` replace the live value.
    """
    out = copy.deepcopy(dict(live))
    for key in previous:
        if key not in desired:
            out.pop(key, None)
    for key, want in desired.items():
        have = out.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            before = previous.get(key)
            out[key] = three_way_merge(have, want, before if isinstance(before, Mapping) else {})
        else:
            out[key] = copy.deepcopy(want)
    return out


def apply_one(client: Client, d: Desired) -> Outcome:
    """Create ``d`` or bring the live object in line with it."""
    try:
        client.create(d.info, d.namespace, d.obj)
        return "created"
    except AlreadyExists:
        pass
    previous_err: Conflict | None = None
    for _ in range(APPLY_CONFLICT_RETRIES):
        live = client.get(d.info, d.namespace, d.name, version=version_for(d.info, d.obj))
        merged = three_way_merge(live, d.obj, last_applied(live))
        if merged == live:
            return "unchanged"
        try:
            client.update(d.info, d.namespace, merged)
            return "configured"
        except AlreadyExists:
            raise
        except Conflict as err:
            previous_err = err
    assert previous_err is not None
    raise previous_err


def plan(manifests: Sequence[Manifest], default_namespace: str) -> list[Desired]:
    """The objects to apply, in file order."""
    out = []
    for m in manifests:
        info, namespace, wire = desired_object(m.obj, default_namespace)
        out.append(Desired(info, namespace, wire, f"{m.file}:{m.line}"))
    return out


def describe_error(err: ApiError, *, action: str, source: str) -> str:
    """kubectl's ``Error from server (Reason): error when creating "file": message``."""
    file = source.rsplit(":", 1)[0]
    file = "STDIN" if file == "-" else file
    return f'Error from server ({err.reason}): error when {action} "{file}": {err.message}'


def apply_all(
    client: Client,
    desired: Sequence[Desired],
    *,
    echo: Callable[[str], None],
    error: Callable[[str], None],
    changed: list[Desired] | None = None,
) -> int:
    """Apply each object; echo ``kind/name created|configured|unchanged``; return how many failed.

    A failure is reported and the rest are still applied, as kubectl does.
    ``ServerUnreachable`` is not caught: nothing more can succeed. ``changed``
    collects the objects created or configured.
    """
    from meshwork.client import ServerUnreachable

    failures = 0
    for d in desired:
        try:
            outcome = apply_one(client, d)
            if changed is not None and outcome != "unchanged":
                changed.append(d)
            echo(f"{d.label} {outcome}")
        except ServerUnreachable:
            raise
        except ApiError as err:
            failures += 1
            error(describe_error(err, action="applying", source=d.source))
    return failures
