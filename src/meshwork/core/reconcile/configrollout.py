"""The config-rollout decision: a changed ConfigMap or Secret rolls the workloads that read it. Pure.

What lives here: which ConfigMaps and Secrets a pod template references
(``references``: env ``valueFrom`` configMapKeyRef/secretKeyRef, ``envFrom``,
configMap/secret volumes and the configMap/secret sources of projected
volumes, in init containers too), a stable digest of one object's data
(``data_digest``: ``data``, ``binaryData`` and ``stringData`` with sorted
keys; labels, annotations and resourceVersion do not count; a missing object
digests as ``absent``), and ``reconcile_config_rollout`` for one Deployment
or DaemonSet.

What must not: I/O, a clock, or the rollout itself. Rolling the pods is a
change of the pod template (the ``meshwork.io/config-hash`` annotation), so
the Deployment or DaemonSet controller replaces the pods with the workload's
own strategy (maxSurge/maxUnavailable, paused, OnDelete).

The rule. Two annotations, both written only here:

* ``meshwork.io/config-hashes`` on the workload's metadata: the record, a
  JSON object from ``ConfigMap/<name>`` or ``Secret/<name>`` to the digest of
  that object as last seen. A metadata change, so writing it never rolls.
* ``meshwork.io/config-hash`` on the pod template: the digest of the whole
  record, written only when a referenced object changed. A template change,
  so writing it rolls the pods exactly once.

Per reconcile, with ``before`` from the record and ``now`` from the store:

1. No record (a new workload, or one from before this controller): record
   the current digests and leave the template alone. Creating a Deployment
   therefore never causes a second rollout, whichever of this controller and
   the Deployment controller runs first: the baseline is not in the template
   (the Deployment controller may already have made the first ReplicaSet from
   it; both wake on the same event and read an asynchronous cache).
2. ``before`` and ``now`` are both digests of data and differ: the object
   changed. Record ``now``, set the template annotation, and record a Normal
   ``ConfigChanged`` event naming the objects ("ConfigMap default/app-config
   changed: rolling the pods").
3. ``now`` is absent (the object was deleted): keep ``before``. The running
   pods keep what they read, and new pods could not start without the object;
   if it comes back with other data, that is a change (2).
4. ``before`` is absent (first seen missing) and the object now exists: a
   change (2) when every reference to it is ``optional`` (the pods started
   without it); otherwise just record it (the pods could not start and
   pick it up when they do).
5. A name newly referenced (the user edited the template, which rolls the
   pods anyway): record it without rolling. A name no longer referenced:
   drop it from the record.

Opt-out: ``meshwork.io/rollout-on-config-change: "false"`` on the workload's
metadata makes this controller leave the workload entirely alone (no record
is kept, so a change made while opted out rolls once after opting back in).

A Secret's digest (a truncated SHA-256, as the ``checksum/config`` annotation
Helm charts use) tells a reader of the Deployment only whether the data equals
a guess, never the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from meshwork.core.reconcile import ObjectRef, Outcome, RecordEvent, UpdateObject
from meshwork.model.core import ConfigMap, Secret
from meshwork.model.pod import PodSpec
from meshwork.model.workloads import DaemonSet, Deployment

CONFIG_HASH_ANNOTATION = "meshwork.io/config-hash"  # on the pod template: changing it rolls
CONFIG_RECORD_ANNOTATION = "meshwork.io/config-hashes"  # on the workload: the per-object record
OPT_OUT_ANNOTATION = "meshwork.io/rollout-on-config-change"  # "false" disables this controller
ABSENT = "absent"  # the digest of a missing object (never a hex digest)
DIGEST_HEX_CHARS = 16  # 64 bits: an accidental collision among one object's versions is negligible
REASON = "ConfigChanged"

SourceKind = Literal["ConfigMap", "Secret"]
Workload = Deployment | DaemonSet


@dataclass(frozen=True, slots=True, order=True)
class SourceRef:
    """A ConfigMap or Secret in the workload's namespace."""

    kind: SourceKind
    name: str

    @property
    def label(self) -> str:
        """The record's key: ``ConfigMap/<name>`` or ``Secret/<name>``."""
        return f"{self.kind}/{self.name}"


def references(spec: PodSpec) -> dict[SourceRef, bool]:
    """Every ConfigMap and Secret ``spec`` reads, each with whether it is optional
    (True only when every reference to it says ``optional: true``)."""
    found: dict[SourceRef, bool] = {}

    def add(kind: SourceKind, name: str | None, optional: bool | None) -> None:
        if name:
            ref = SourceRef(kind, name)
            found[ref] = found.get(ref, True) and bool(optional)

    for container in spec.all_containers():
        for env in container.env or ():
            source = env.value_from
            if source is None:
                continue
            if source.config_map_key_ref is not None:
                add("ConfigMap", source.config_map_key_ref.name, source.config_map_key_ref.optional)
            if source.secret_key_ref is not None:
                add("Secret", source.secret_key_ref.name, source.secret_key_ref.optional)
        for env_from in container.env_from or ():
            if env_from.config_map_ref is not None:
                add("ConfigMap", env_from.config_map_ref.name, env_from.config_map_ref.optional)
            if env_from.secret_ref is not None:
                add("Secret", env_from.secret_ref.name, env_from.secret_ref.optional)
    for volume in spec.volumes or ():
        if volume.config_map is not None:
            add("ConfigMap", volume.config_map.name, volume.config_map.optional)
        if volume.secret is not None:
            add("Secret", volume.secret.secret_name, volume.secret.optional)
        if volume.projected is not None:
            for projection in volume.projected.sources or ():
                if projection.config_map is not None:
                    add("ConfigMap", projection.config_map.name, projection.config_map.optional)
                if projection.secret is not None:
                    add("Secret", projection.secret.name, projection.secret.optional)
    return found


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX_CHARS]


def data_digest(obj: ConfigMap | Secret | None) -> str:
    """The digest of an object's data: independent of key order, of labels,
    annotations and resourceVersion; ``ABSENT`` for a missing object. An empty
    field and a missing one are the same data."""
    if obj is None:
        return ABSENT
    if isinstance(obj, ConfigMap):
        payload = {"data": obj.data or {}, "binaryData": obj.binary_data or {}}
    else:
        # stringData is merged into data when a Secret is written; count it
        # anyway, so an object built by hand digests as it will once stored.
        payload = {"data": obj.data or {}, "stringData": obj.string_data or {}}
    return _digest(payload)


def combined_digest(record: Mapping[str, str]) -> str:
    """The template annotation's value: a digest of the whole record."""
    return _digest(dict(record))


def parse_record(text: str | None) -> dict[str, str] | None:
    """The record annotation as a mapping; None when absent or not one we wrote."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value


def format_record(record: Mapping[str, str]) -> str:
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"))


def opted_out(workload: Workload) -> bool:
    value = (workload.metadata.annotations or {}).get(OPT_OUT_ANNOTATION)
    return value is not None and value.strip().lower() == "false"


def next_record(
    refs: Mapping[SourceRef, bool], current: Mapping[str, str], stored: Mapping[str, str] | None
) -> tuple[dict[str, str], list[SourceRef]]:
    """The record to keep and the references whose change rolls the pods (rules 1-5)."""
    if stored is None:
        return dict(current), []
    record: dict[str, str] = {}
    changed: list[SourceRef] = []
    for ref in sorted(refs):
        key, now, before = ref.label, current[ref.label], stored.get(ref.label)
        if before is None or now == before:
            record[key] = now  # newly referenced (rule 5), or unchanged
        elif now == ABSENT:
            record[key] = before  # deleted: the pods keep what they read (rule 3)
        elif before == ABSENT and not refs[ref]:
            record[key] = now  # a required object appeared: the pods were waiting (rule 4)
        else:
            record[key] = now
            changed.append(ref)
    return record, changed


def _ref(workload: Workload) -> ObjectRef:
    meta = workload.metadata
    return ObjectRef("apps", workload.kind, meta.namespace, meta.name or "", meta.uid)


def reconcile_config_rollout(workload: Workload, sources: Mapping[SourceRef, ConfigMap | Secret | None]) -> Outcome:
    """Keep ``workload``'s record of its ConfigMaps and Secrets, and roll its pods
    when one of them changed (the module docstring states the rule).

    ``sources`` maps each reference of the template (``references``) to the
    object in the store, or None when there is none; a missing entry counts as
    None.
    """
    meta = workload.metadata
    if meta.deletion_timestamp is not None or opted_out(workload):
        return Outcome()
    template = workload.spec.template
    refs = references(template.spec)
    current = {ref.label: data_digest(sources.get(ref)) for ref in refs}
    annotations = dict(meta.annotations or {})
    stored = parse_record(annotations.get(CONFIG_RECORD_ANNOTATION))
    record, changed = next_record(refs, current, stored)
    if not changed and record == stored:
        return Outcome()
    annotations[CONFIG_RECORD_ANNOTATION] = format_record(record)
    updated = workload.model_copy(deep=True)
    updated.metadata.annotations = annotations
    if not changed:
        return Outcome((UpdateObject(updated),))
    pod_meta = updated.spec.template.metadata
    pod_meta.annotations = {**(pod_meta.annotations or {}), CONFIG_HASH_ANNOTATION: combined_digest(record)}
    names = ", ".join(f"{ref.kind} {meta.namespace}/{ref.name}" for ref in changed)
    event = RecordEvent(_ref(workload), "Normal", REASON, f"{names} changed: rolling the pods")
    return Outcome((UpdateObject(updated), event))
