"""``kubectl describe``-shaped text for one object, as pure functions from wire dicts.

What lives here: one describer for each kind kubectl describes specially
(pods, workloads, services, config, nodes, namespaces), the generic
describer kubectl uses for everything else (every field, camelCase keys
turned into words), ``describe()`` which picks one and adds the events, and
``events_about`` which picks an object's events out of a list.

What must not live here: HTTP, or the clock (``now`` is a parameter). The
caller fetches the object, its events and any related objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from meshwork.cli.cells import format_endpoints, job_status
from meshwork.cli.humanize import NONE, format_labels, since
from meshwork.cli.podstatus import pod_status
from meshwork.cli.sections import (
    GENERIC_SKIP,
    LAST_APPLIED,
    Writer,
    annotations_section,
    conditions_section,
    containers_section,
    controlled_by,
    describe_time,
    events_section,
    header,
    labels_section,
    multiline,
    pod_template_section,
    smart_label,
    unstructured_section,
)
from meshwork.cli.wire import Obj, dig, format_selector, num, seq, txt


def _pod(w: Writer, pod: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod.get("metadata") or {}
    w.line(0, f"Name:\t{txt(meta.get('name'))}")
    w.line(0, f"Namespace:\t{txt(meta.get('namespace'))}")
    w.line(0, f"Service Account:\t{txt(spec.get('serviceAccountName')) or 'default'}")
    node = txt(spec.get("nodeName"))
    host_ip = txt(status.get("hostIP"))
    w.line(0, f"Node:\t{node + ('/' + host_ip if host_ip else '') if node else NONE}")
    if status.get("startTime"):
        w.line(0, f"Start Time:\t{describe_time(status.get('startTime'))}")
    labels_section(w, 0, "Labels", meta.get("labels"))
    annotations_section(w, 0, meta.get("annotations"))
    _, reason, _ = pod_status(pod, now)
    phase = txt(status.get("phase"))
    if meta.get("deletionTimestamp"):
        w.line(0, f"Status:\tTerminating (lasts {since(meta.get('deletionTimestamp'), now)})")
    else:
        w.line(0, f"Status:\t{phase or reason}")
    if status.get("reason"):
        w.line(0, f"Reason:\t{txt(status.get('reason'))}")
    if status.get("message"):
        w.line(0, f"Message:\t{txt(status.get('message'))}")
    w.line(0, f"IP:\t{txt(status.get('podIP'))}")
    ips = [txt(dig(i, "ip")) for i in seq(status.get("podIPs"))]
    if ips:
        w.line(0, "IPs:")
        for ip in ips:
            w.line(1, f"IP:\t{ip}")
    else:
        w.line(0, f"IPs:\t{NONE}")
    controlled_by(w, pod)
    containers_section(
        w, 0, "Init Containers", spec.get("initContainers"), status.get("initContainerStatuses")
    )
    containers_section(w, 0, "Containers", spec.get("containers"), status.get("containerStatuses"))
    conditions_section(w, pod, with_reason=False)
    w.line(0, f"Node-Selectors:\t{format_labels(spec.get('nodeSelector'))}")


def _replicas_line(obj: Obj) -> str:
    st = obj.get("status") or {}
    desired = dig(obj, "spec", "replicas")
    desired = desired if isinstance(desired, int) else 1
    unavailable = num(st.get("unavailableReplicas"))
    return (
        f"{desired} desired | {num(st.get('updatedReplicas'))} updated | "
        f"{num(st.get('replicas'))} total | {num(st.get('availableReplicas'))} available | "
        f"{unavailable} unavailable"
    )


def _deployment(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj, created=True)
    spec = obj.get("spec") or {}
    w.line(0, f"Selector:\t{format_selector(spec.get('selector'))}")
    w.line(0, f"Replicas:\t{_replicas_line(obj)}")
    strategy = spec.get("strategy") or {}
    kind = txt(strategy.get("type")) or "RollingUpdate"
    w.line(0, f"StrategyType:\t{kind}")
    w.line(0, f"MinReadySeconds:\t{num(spec.get('minReadySeconds'))}")
    if kind == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        w.line(
            0,
            f"RollingUpdateStrategy:\t{ru.get('maxUnavailable', '25%')} max unavailable, "
            f"{ru.get('maxSurge', '25%')} max surge",
        )
    pod_template_section(w, spec.get("template"))
    conditions_section(w, obj, with_reason=True)


def _replicaset(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    w.line(0, f"Selector:\t{format_selector(spec.get('selector'))}")
    controlled_by(w, obj)
    desired = spec.get("replicas") if isinstance(spec.get("replicas"), int) else 1
    w.line(0, f"Replicas:\t{num(st.get('replicas'))} current / {desired} desired")
    pod_template_section(w, spec.get("template"))
    conditions_section(w, obj, with_reason=True)


def _job(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    w.line(0, f"Selector:\t{format_selector(spec.get('selector'))}")
    controlled_by(w, obj)
    w.line(0, f"Parallelism:\t{spec.get('parallelism', 1)}")
    completions = spec.get("completions")
    w.line(0, f"Completions:\t{completions if isinstance(completions, int) else '<unset>'}")
    w.line(0, f"Completion Mode:\t{txt(spec.get('completionMode')) or 'NonIndexed'}")
    w.line(0, f"Suspend:\t{'true' if spec.get('suspend') is True else 'false'}")
    w.line(0, f"Backoff Limit:\t{spec.get('backoffLimit', 6)}")
    if st.get("startTime"):
        w.line(0, f"Start Time:\t{describe_time(st.get('startTime'))}")
    if st.get("completionTime"):
        w.line(0, f"Completed At:\t{describe_time(st.get('completionTime'))}")
    w.line(0, f"Status:\t{job_status(obj)}")
    w.line(
        0,
        f"Pods Statuses:\t{num(st.get('active'))} Active ({num(st.get('ready'))} Ready) / "
        f"{num(st.get('succeeded'))} Succeeded / {num(st.get('failed'))} Failed",
    )
    pod_template_section(w, spec.get("template"))


def _cronjob(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    w.line(0, f"Schedule:\t{txt(spec.get('schedule'))}")
    w.line(0, f"Concurrency Policy:\t{txt(spec.get('concurrencyPolicy')) or 'Allow'}")
    w.line(0, f"Suspend:\t{'True' if spec.get('suspend') is True else 'False'}")
    w.line(0, f"Successful Job History Limit:\t{spec.get('successfulJobsHistoryLimit', 3)}")
    w.line(0, f"Failed Job History Limit:\t{spec.get('failedJobsHistoryLimit', 1)}")
    deadline = spec.get("startingDeadlineSeconds")
    w.line(
        0, f"Starting Deadline Seconds:\t{f'{deadline}s' if deadline is not None else '<unset>'}"
    )
    job = dig(spec, "jobTemplate", "spec") or {}
    w.line(0, f"Parallelism:\t{job.get('parallelism', '<unset>')}")
    w.line(0, f"Completions:\t{job.get('completions', '<unset>')}")
    pod_template_section(w, job.get("template"))
    last = st.get("lastScheduleTime")
    w.line(0, f"Last Schedule Time:\t{describe_time(last) if last else '<unset>'}")
    active = [txt(dig(a, "name")) for a in seq(st.get("active"))]
    w.line(0, f"Active Jobs:\t{', '.join(active) if active else NONE}")


def _service(w: Writer, svc: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, svc)
    spec = svc.get("spec") or {}
    w.line(0, f"Selector:\t{format_labels(spec.get('selector'))}")
    w.line(0, f"Type:\t{txt(spec.get('type')) or 'ClusterIP'}")
    ips = [str(ip) for ip in seq(spec.get("clusterIPs"))] or (
        [txt(spec.get("clusterIP"))] if spec.get("clusterIP") else []
    )
    w.line(0, f"IP:\t{ips[0] if ips else NONE}")
    w.line(0, f"IPs:\t{','.join(ips) if ips else NONE}")
    endpoints = related.get("endpoints")
    for port in seq(spec.get("ports")):
        if not isinstance(port, Mapping):
            continue
        proto = txt(port.get("protocol")) or "TCP"
        name = txt(port.get("name")) or "<unset>"
        w.line(0, f"Port:\t{name}\t{num(port.get('port'))}/{proto}")
        target = port.get("targetPort", port.get("port"))
        w.line(0, f"TargetPort:\t{target}/{proto}")
        if isinstance(endpoints, Mapping):
            w.line(0, f"Endpoints:\t{_endpoints_for_port(endpoints, txt(port.get('name')))}")
    w.line(0, f"Session Affinity:\t{txt(spec.get('sessionAffinity')) or 'None'}")


def _endpoints_for_port(endpoints: Obj, port_name: str) -> str:
    """The addresses serving one named service port, as ``formatEndpoints`` with a port filter."""
    subsets = []
    for ss in seq(endpoints.get("subsets")):
        if not isinstance(ss, Mapping):
            continue
        ports = [p for p in seq(ss.get("ports")) if txt(dig(p, "name")) == port_name]
        subsets.append({**ss, "ports": ports} if ss.get("ports") else ss)
    text = format_endpoints({"subsets": subsets})
    return text or NONE


def _configmap(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((obj.get("data") or {}).items()):
        w.line(0, f"{key}:")
        w.line(0, "----")
        w.line(0, str(value))
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    for key, value in sorted((obj.get("binaryData") or {}).items()):
        w.line(0, f"{key}: {len(str(value)) * 3 // 4} bytes")
    w.line(0, "")


def _secret(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    w.line(0, "")
    w.line(0, f"Type:\t{txt(obj.get('type')) or 'Opaque'}")
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((obj.get("data") or {}).items()):
        # Values are base64: the decoded length, never the content (kubectl prints the same).
        raw = str(value).rstrip("=")
        w.line(0, f"{key}:\t{len(raw) * 3 // 4} bytes")


def _node(w: Writer, node: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, node, created=True)
    spec, st = node.get("spec") or {}, node.get("status") or {}
    taints = [
        f"{txt(t.get('key'))}{'=' + txt(t.get('value')) if t.get('value') else ''}:{txt(t.get('effect'))}"
        for t in seq(spec.get("taints"))
        if isinstance(t, Mapping)
    ]
    multiline(w, 0, "Taints", taints)
    w.line(0, f"Unschedulable:\t{'true' if spec.get('unschedulable') is True else 'false'}")
    conds = [c for c in seq(st.get("conditions")) if isinstance(c, Mapping)]
    if conds:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus\tLastHeartbeatTime\tReason\tMessage")
        w.line(1, "----\t------\t-----------------\t------\t-------")
        for c in conds:
            w.line(
                1,
                f"{txt(c.get('type'))}\t{txt(c.get('status'))}\t"
                f"{describe_time(c.get('lastHeartbeatTime'))}\t{txt(c.get('reason'))}\t"
                f"{txt(c.get('message'))}",
            )
    addresses = [a for a in seq(st.get("addresses")) if isinstance(a, Mapping)]
    if addresses:
        w.line(0, "Addresses:")
        for a in addresses:
            w.line(1, f"{txt(a.get('type'))}:\t{txt(a.get('address'))}")
    for title, key in (("Capacity", "capacity"), ("Allocatable", "allocatable")):
        values = st.get(key)
        if isinstance(values, Mapping) and values:
            w.line(0, f"{title}:")
            for name in sorted(values):
                w.line(1, f"{name}:\t{values[name]}")


def _namespace(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    header(w, obj)
    w.line(0, "")
    w.line(0, f"Status:\t{txt(dig(obj, 'status', 'phase')) or 'Active'}")


def _generic(w: Writer, obj: Obj, now: datetime, related: Mapping[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    w.line(0, f"Name:\t{txt(meta.get('name'))}")
    w.line(0, f"Namespace:\t{txt(meta.get('namespace'))}")
    labels_section(w, 0, "Labels", meta.get("labels"))
    annotations_section(w, 0, meta.get("annotations"))
    unstructured_section(w, 0, obj, "", GENERIC_SKIP)


Describer = Callable[[Writer, Obj, datetime, Mapping[str, Any]], None]

DESCRIBERS: dict[tuple[str, str], Describer] = {
    ("", "Pod"): _pod,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("", "Service"): _service,
    ("", "ConfigMap"): _configmap,
    ("", "Secret"): _secret,
    ("", "Node"): _node,
    ("", "Namespace"): _namespace,
}


def describe(
    obj: Obj,
    *,
    group: str,
    kind: str,
    events: Sequence[Obj] | None,
    now: datetime,
    related: Mapping[str, Any] | None = None,
) -> str:
    """The ``describe`` text of one object.

    ``events`` are the events about it (None: the kind has no events section);
    ``related`` holds objects some describers show (``endpoints`` for a Service).
    """
    w = Writer()
    DESCRIBERS.get((group, kind), _generic)(w, obj, now, related or {})
    if events is not None:
        events_section(w, events, now)
    return w.text()


def events_about(events: Sequence[Obj], obj: Obj, kind: str) -> list[Obj]:
    """The events whose ``involvedObject`` is ``obj`` (same kind and name, and uid when both have one)."""
    meta = obj.get("metadata") or {}
    out = []
    for e in events:
        ref = e.get("involvedObject") or {}
        if ref.get("kind") != kind or ref.get("name") != meta.get("name"):
            continue
        if meta.get("namespace") and ref.get("namespace") not in (None, "", meta.get("namespace")):
            continue
        if ref.get("uid") and meta.get("uid") and ref.get("uid") != meta.get("uid"):
            continue
        out.append(e)
    return out


__all__ = ["DESCRIBERS", "LAST_APPLIED", "describe", "events_about", "smart_label"]
