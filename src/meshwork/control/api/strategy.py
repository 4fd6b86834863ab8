"""What the API server decides about an object on create, update and delete. Pure.

Kubernetes calls these rules a kind's "strategy": which fields the server owns
(uid, creationTimestamp, generation, resourceVersion, status), when
``metadata.generation`` moves, and what a status update may touch. Nothing
here does I/O; ``objects.py`` applies the decisions to the store.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from meshwork.control.api.allocate import check_pod_cidrs
from meshwork.errors import FieldCause, ValidationError
from meshwork.model.base import KindInfo

# Kubernetes' generateName suffix: 5 characters from an alphabet without vowels
# or look-alikes (so generated names never spell words or confuse 0/O, 1/l).
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATE_NAME_SUFFIX = 5
# etcd's default request limit is 1.5 MiB; Kubernetes objects live within it.
MAX_OBJECT_BYTES = 1_572_864

FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"


def generated_name(prefix: str) -> str:
    suffix = "".join(secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(GENERATE_NAME_SUFFIX))
    return prefix + suffix


def tracks_generation(obj: dict[str, Any]) -> bool:
    """Objects with a ``spec`` carry ``metadata.generation``; ConfigMaps and the like do not."""
    return "spec" in obj


def prepare_create(info: KindInfo, obj: dict[str, Any], *, uid: str, now: str) -> dict[str, Any]:
    """Fill the server-owned fields of a new object.

    Takes ownership of ``obj`` (a fresh ``to_wire`` result) and changes it in
    place: a deep copy here would cost as much as validating the object.
    """
    meta = obj.setdefault("metadata", {})
    meta["uid"] = uid
    meta["creationTimestamp"] = now
    for owned in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        meta.pop(owned, None)
    if tracks_generation(obj):
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if info.group == "batch" and info.kind == "Job":
        _generate_job_selector(obj, uid)
        if "kueue.x-k8s.io/queue-name" in (meta.get("labels") or {}):
            obj.setdefault("spec", {})["suspend"] = True  # Kueue's webhook: a queued Job waits for admission
    if info.group == "" and info.kind == "Pod":
        _default_service_account(obj)
    # A Node keeps the status it is created with (upstream's node strategy): an
    # agent registers its capacity, addresses and Ready condition in one write.
    if info.has_status and not _is_node(info):
        obj.pop("status", None)
        initial = initial_status(info, obj)
        if initial is not None:
            obj["status"] = initial
    return obj


def initial_status(info: KindInfo, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The status a new object starts with, where upstream gives it one."""
    if info.group == "" and info.kind == "Pod":
        return {"phase": "Pending"}
    if info.group == "" and info.kind == "Namespace":
        return {"phase": "Active"}
    return None


def prepare_update(info: KindInfo, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Carry the server-owned fields of ``old`` into ``new`` for a main-resource update.

    The status of a kind with a status subresource is kept from ``old``
    (status is written only through ``/status``), and ``generation`` moves
    when and only when ``spec`` changed.
    """
    new = copy.deepcopy(new)
    meta, old_meta = new.setdefault("metadata", {}), old.get("metadata", {})
    for owned in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if owned in old_meta:
            meta[owned] = old_meta[owned]
        else:
            meta.pop(owned, None)
    meta.pop("selfLink", None)
    if info.has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if info.group == "" and info.kind == "Service":
        _keep_allocations(new, old)
    if _is_node(info):
        _keep_pod_cidr(new, old)
    if tracks_generation(new):
        generation = old_meta.get("generation", 1)
        meta["generation"] = generation + 1 if new.get("spec") != old.get("spec") else generation
    else:
        meta.pop("generation", None)
    return new


def prepare_status_update(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A ``/status`` write: everything from ``old`` except the new status (and RV precondition)."""
    result = copy.deepcopy(old)
    if "status" in new:
        result["status"] = new["status"]
    else:
        result.pop("status", None)
    rv = new.get("metadata", {}).get("resourceVersion")
    if rv is not None:
        result["metadata"]["resourceVersion"] = rv
    return result


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from resourceVersion: an update that changes nothing is not written."""
    meta_a = {k: v for k, v in a.get("metadata", {}).items() if k != "resourceVersion"}
    meta_b = {k: v for k, v in b.get("metadata", {}).items() if k != "resourceVersion"}
    if meta_a != meta_b:
        return False
    rest_a = {k: v for k, v in a.items() if k != "metadata"}
    rest_b = {k: v for k, v in b.items() if k != "metadata"}
    return rest_a == rest_b


def finalizers_of(obj: dict[str, Any]) -> list[str]:
    return list(obj.get("metadata", {}).get("finalizers") or [])


def owner_uids(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj.get("metadata", {}).get("ownerReferences") or [] if "uid" in ref]


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def deletion_complete(obj: dict[str, Any]) -> bool:
    """A terminating object with no finalizers left and no grace period running is gone.

    A pod stopping gracefully (grace > 0) stays, whatever its status updates
    say, until its node confirms with a zero-grace delete.
    """
    meta = obj.get("metadata", {})
    return (
        is_terminating(obj)
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def _keep_allocations(new: dict[str, Any], old: dict[str, Any]) -> None:
    """An update that leaves out a Service's allocated fields keeps them, as upstream does.

    ``clusterIP`` is immutable: a different value is refused.
    """
    new_spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    wanted = new_spec.get("clusterIP")
    if wanted and old_spec.get("clusterIP") and wanted != old_spec["clusterIP"] and new_spec.get("type") != "ExternalName":
        name = new.get("metadata", {}).get("name", "")
        raise ValidationError(
            f'Service "{name}" is invalid: spec.clusterIP: field is immutable',
            causes=[FieldCause("spec.clusterIP", "field is immutable", "FieldValueInvalid")],
            kind="Service",
            name=name,
        )
    for field in SERVICE_ALLOCATED:
        if field not in new_spec and field in old_spec:
            new_spec[field] = old_spec[field]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or []}
    if new_spec.get("type") in ("NodePort", "LoadBalancer"):
        for port in new_spec.get("ports") or []:
            previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
            if previous and not port.get("nodePort"):
                port["nodePort"] = previous


def _is_node(info: KindInfo) -> bool:
    return info.group == "" and info.kind == "Node"


def _keep_pod_cidr(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A Node's pod CIDR is set once: an update that leaves it out keeps it; one
    that changes it is refused, as upstream's ValidateNodeUpdate does."""
    new_spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    if not new_spec.get("podCIDR") and not new_spec.get("podCIDRs"):
        for field in ("podCIDR", "podCIDRs"):
            if field in old_spec:
                new_spec[field] = old_spec[field]
        return
    check_pod_cidrs(new)
    if old_spec.get("podCIDRs") and new_spec.get("podCIDRs") != old_spec["podCIDRs"]:
        name = new.get("metadata", {}).get("name", "")
        message = 'node updates may not change podCIDR except from "" to valid'
        raise ValidationError(
            f'Node "{name}" is invalid: spec.podCIDRs: Forbidden: {message}',
            causes=[FieldCause("spec.podCIDRs", message, "FieldValueForbidden")],
            kind="Node",
            name=name,
        )


# Job labels the API server adds to a Job's pod template (batch/v1, Kubernetes 1.27+;
# the unprefixed pair is kept for older clients, as upstream does).
JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_JOB_LABELS = ("controller-uid", "job-name")


def _generate_job_selector(job: dict[str, Any], uid: str) -> None:
    """Kubernetes' selector generation for a Job without ``manualSelector: true``.

    The template gets labels unique to this Job, and the selector selects the
    controller-uid one, so two Jobs' pods never overlap.
    """
    spec = job.setdefault("spec", {})
    if spec.get("manualSelector") is True:
        return
    name = job.get("metadata", {}).get("name", "")
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    for key, value in (
        (LEGACY_JOB_LABELS[0], uid),
        (JOB_CONTROLLER_UID, uid),
        (LEGACY_JOB_LABELS[1], name),
        (JOB_NAME, name),
    ):
        labels.setdefault(key, value)
    selector = spec.get("selector") or {}
    match = selector.setdefault("matchLabels", {})
    if match.setdefault(JOB_CONTROLLER_UID, uid) != uid:
        raise ValidationError(
            f'Job.batch "{name}" is invalid: spec.selector: `selector` not auto-generated',
            causes=[FieldCause("spec.selector", "`selector` not auto-generated")],
            kind="Job",
            name=name,
        )
    spec["selector"] = selector


def _default_service_account(pod: dict[str, Any]) -> None:
    """The ServiceAccount admission default: a pod runs as its namespace's ``default``."""
    spec = pod.setdefault("spec", {})
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = name
    spec["serviceAccount"] = name  # the deprecated alias, kept equal as upstream does
