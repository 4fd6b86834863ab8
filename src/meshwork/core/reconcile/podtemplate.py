"""Pods and pod templates as the workload controllers see them.

What lives here: the ``pod-template-hash`` (a stable hash of a template), the
comparison of templates that ignores that label, building a Pod (or any
owned object's metadata) from a template, controller ownerReferences, and the
questions every controller asks of a pod: is it active, ready, available
(ready for ``minReadySeconds``), and when will it become available.

What must not: any controller's decisions (those live in ``replicaset`` and
``deployment``), I/O, or a clock: time is always the ``now`` parameter, in
seconds since the epoch, and timestamps on objects are RFC 3339 strings.

The hash: upstream (``controller.ComputeHash``) feeds a Go-specific dump of the
template to FNV-32a, appends ``collisionCount`` as 4 little-endian bytes, and
renders the decimal sum through the "safe encode" alphabet. We cannot
reproduce the Go dump, so we feed FNV-32a the canonical JSON of the template's
wire form (sorted keys, no spaces) instead; the rest is the same, so names
look like upstream's (``web-5d9f7c4b8``) and are stable across runs and
processes. Like upstream, a new model default changes every hash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from meshwork.model.base import ObjectMeta, OwnerReference, Resource
from meshwork.model.pod import Pod, PodTemplateSpec

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"  # apps.DefaultDeploymentUniqueLabelKey
# k8s.io/apimachinery/pkg/util/rand: consonants and digits that cannot spell words.
SAFE_ENCODE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV32_OFFSET = 0x811C9DC5  # FNV-1a 32-bit offset basis (FNV spec)
_FNV32_PRIME = 0x01000193  # FNV-1a 32-bit prime (FNV spec)
_UINT32 = 0xFFFFFFFF
# Availability starts strictly after minReadySeconds (upstream compares with Before),
# so a recheck is due this long after the boundary.
_JUST_AFTER = 0.001


# ---------------------------------------------------------------------------
# Hashing and comparing templates
# ---------------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``."""
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & _UINT32
    return h


def safe_encode(text: str) -> str:
    """Upstream ``rand.SafeEncodeString``: each byte mapped into the safe alphabet."""
    return "".join(SAFE_ENCODE_ALPHABET[b % len(SAFE_ENCODE_ALPHABET)] for b in text.encode())


def template_wire(template: PodTemplateSpec) -> dict[str, Any]:
    """The template's wire form (camelCase, defaults filled, unset fields left out)."""
    return template.model_dump(mode="json", by_alias=True, exclude_none=True)


def compute_hash(template: PodTemplateSpec, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of ``template`` (see the module docstring)."""
    data = json.dumps(template_wire(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & _UINT32).to_bytes(4, "little")
    return safe_encode(str(fnv32a(data)))


def _without_hash_label(template: PodTemplateSpec) -> dict[str, Any]:
    wire = template_wire(template)
    labels = wire.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
        if not labels:
            del wire["metadata"]["labels"]
    return wire


def templates_equal_ignoring_hash(a: PodTemplateSpec, b: PodTemplateSpec) -> bool:
    """Upstream ``EqualIgnoreHash``: equal once the pod-template-hash label is dropped."""
    return _without_hash_label(a) == _without_hash_label(b)


def with_label(labels: dict[str, str] | None, key: str, value: str) -> dict[str, str]:
    """A copy of ``labels`` with ``key=value`` added (``CloneAndAddLabel``)."""
    return {**(labels or {}), key: value}


# ---------------------------------------------------------------------------
# Ownership
# ---------------------------------------------------------------------------


def controller_ref(owner: Resource) -> OwnerReference:
    """``metav1.NewControllerRef``: the reference a controller puts on what it creates."""
    uid = owner.metadata.uid
    if not uid or not owner.metadata.name:
        raise ValueError(
            f"{owner.kind} has no name or uid yet: it must be stored before it owns objects"
        )
    return OwnerReference(
        api_version=owner.api_version,
        kind=owner.kind,
        name=owner.metadata.name,
        uid=uid,
        controller=True,
        block_owner_deletion=True,
    )


def controller_of(obj: Resource) -> OwnerReference | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj.metadata.owner_references or ():
        if ref.controller:
            return ref
    return None


def is_controlled_by(obj: Resource, owner: Resource) -> bool:
    """Whether ``owner`` is ``obj``'s controller (same uid, same namespace)."""
    ref = controller_of(obj)
    return (
        ref is not None
        and owner.metadata.uid is not None
        and ref.uid == owner.metadata.uid
        and obj.metadata.namespace == owner.metadata.namespace
    )


def pod_from_template(template: PodTemplateSpec, owner: Resource) -> Pod:
    """Upstream ``GetPodFromTemplate``: a Pod named by generateName ``<owner>-``.

    Labels, annotations and finalizers come from the template; the owner is
    the controller (``controller: true``, ``blockOwnerDeletion: true``).
    """
    meta = template.metadata
    return Pod(
        metadata=ObjectMeta(
            generate_name=f"{owner.metadata.name}-",
            namespace=owner.metadata.namespace,
            labels=dict(meta.labels) if meta.labels else None,
            annotations=dict(meta.annotations) if meta.annotations else None,
            finalizers=list(meta.finalizers) if meta.finalizers else None,
            owner_references=[controller_ref(owner)],
        ),
        spec=template.spec.model_copy(deep=True),
    )


# ---------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------


def rfc3339(now: float) -> str:
    """``now`` (epoch seconds) as the second-resolution RFC 3339 time Kubernetes writes."""
    return _rfc3339_second(int(now))


@lru_cache(maxsize=8)  # a burst of writes stamps the same few seconds: format each once
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """An RFC 3339 timestamp as epoch seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# ---------------------------------------------------------------------------
# Pod state
# ---------------------------------------------------------------------------


def is_terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def phase_of(pod: Pod) -> str:
    return (pod.status.phase if pod.status else None) or "Pending"


def is_active(pod: Pod) -> bool:
    """Upstream ``IsPodActive``: not Succeeded, not Failed, not being deleted."""
    return phase_of(pod) not in ("Succeeded", "Failed") and not is_terminating(pod)


def ready_since(pod: Pod) -> float | None:
    """When the pod's Ready condition last turned True (0.0 when unknown); None if not ready."""
    for cond in (pod.status.conditions if pod.status else None) or ():
        if cond.type == "Ready":
            if cond.status != "True":
                return None
            return parse_time(cond.last_transition_time) or 0.0
    return None


def is_ready(pod: Pod) -> bool:
    """Upstream ``IsPodReady``: the Ready condition is True."""
    return ready_since(pod) is not None


def available_after(pod: Pod, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until the pod counts as available: 0.0 when it already is; None when not ready.

    Upstream ``IsPodAvailable``: ready, and either minReadySeconds is 0 or the
    Ready condition turned True strictly more than minReadySeconds ago.
    """
    since = ready_since(pod)
    if since is None:
        return None
    if min_ready_seconds <= 0:
        return 0.0
    if since <= 0.0:  # Ready without a transition time never becomes "available for N s"
        return None
    due = since + min_ready_seconds
    return 0.0 if due < now else due - now + _JUST_AFTER


def is_available(pod: Pod, min_ready_seconds: int, now: float) -> bool:
    return available_after(pod, min_ready_seconds, now) == 0.0


def restart_count(pod: Pod) -> int:
    """The highest restartCount of the pod's containers (upstream ``maxContainerRestarts``)."""
    statuses = (pod.status.container_statuses if pod.status else None) or ()
    return max((s.restart_count for s in statuses), default=0)
