"""Table cells for the built-in kinds other than pods, as kubectl's printers compute them.

What lives here: one function per kind from a wire dict and ``now`` to the
cells of its row (wide columns included; the caller drops them), and the
shared formatters kubectl uses for them (service ports and external IPs,
endpoints, HPA targets). No I/O; ``now`` is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from meshwork.cli.humanize import NONE, format_labels, human_duration, parse_time, since
from meshwork.cli.wire import (
    Cell,
    Obj,
    condition_true,
    containers_cells,
    dig,
    format_selector,
    num,
    obj_age,
    obj_name,
    or_none,
    seq,
    txt,
)

# Service EXTERNAL-IP for a LoadBalancer is cut to this many characters unless -o wide (kubectl).
LOAD_BALANCER_WIDTH = 16
# Lists in a cell (endpoints, HPA targets) show this many items, then "+ N more...".
ENDPOINTS_SHOWN = 3
HPA_METRICS_SHOWN = 2


# -- workloads ----------------------------------------------------------------------


def _replicas(obj: Obj) -> int:
    """``spec.replicas`` with the upstream default of 1."""
    value = dig(obj, "spec", "replicas")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def deployment_cells(obj: Obj, now: datetime) -> list[Cell]:
    names, images = containers_cells(dig(obj, "spec", "template", "spec"))
    st = obj.get("status") or {}
    return [
        obj_name(obj),
        f"{num(st.get('readyReplicas'))}/{_replicas(obj)}",
        num(st.get("updatedReplicas")),
        num(st.get("availableReplicas")),
        obj_age(obj, now),
        names,
        images,
        format_selector(dig(obj, "spec", "selector")),
    ]


def replicaset_cells(obj: Obj, now: datetime) -> list[Cell]:
    names, images = containers_cells(dig(obj, "spec", "template", "spec"))
    st = obj.get("status") or {}
    return [
        obj_name(obj),
        _replicas(obj),
        num(st.get("replicas")),
        num(st.get("readyReplicas")),
        obj_age(obj, now),
        names,
        images,
        format_selector(dig(obj, "spec", "selector")),
    ]


def daemonset_cells(obj: Obj, now: datetime) -> list[Cell]:
    names, images = containers_cells(dig(obj, "spec", "template", "spec"))
    st = obj.get("status") or {}
    return [
        obj_name(obj),
        num(st.get("desiredNumberScheduled")),
        num(st.get("currentNumberScheduled")),
        num(st.get("numberReady")),
        num(st.get("updatedNumberScheduled")),
        num(st.get("numberAvailable")),
        format_labels(dig(obj, "spec", "template", "spec", "nodeSelector")),
        obj_age(obj, now),
        names,
        images,
        format_selector(dig(obj, "spec", "selector")),
    ]


def job_status(obj: Obj) -> str:
    """The STATUS column of a Job, in kubectl's order of precedence."""
    if condition_true(obj, "Complete"):
        return "Complete"
    if condition_true(obj, "Failed"):
        return "Failed"
    if dig(obj, "metadata", "deletionTimestamp") is not None:
        return "Terminating"
    for kind in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if condition_true(obj, kind):
            return kind
    return "Running"


def job_cells(obj: Obj, now: datetime) -> list[Cell]:
    succeeded = num(dig(obj, "status", "succeeded"))
    completions = dig(obj, "spec", "completions")
    parallelism = num(dig(obj, "spec", "parallelism"))
    if isinstance(completions, int):
        done = f"{succeeded}/{completions}"
    elif parallelism > 1:
        done = f"{succeeded}/1 of {parallelism}"
    else:
        done = f"{succeeded}/1"
    start = parse_time(dig(obj, "status", "startTime"))
    end = parse_time(dig(obj, "status", "completionTime"))
    took = ""
    if start is not None:
        took = human_duration(((end or now) - start).total_seconds())
    names, images = containers_cells(dig(obj, "spec", "template", "spec"))
    return [
        obj_name(obj),
        job_status(obj),
        done,
        took,
        obj_age(obj, now),
        names,
        images,
        format_selector(dig(obj, "spec", "selector")),
    ]


def cronjob_cells(obj: Obj, now: datetime) -> list[Cell]:
    suspend = dig(obj, "spec", "suspend")
    last = dig(obj, "status", "lastScheduleTime")
    job = dig(obj, "spec", "jobTemplate", "spec")
    names, images = containers_cells(dig(job, "template", "spec"))
    return [
        obj_name(obj),
        txt(dig(obj, "spec", "schedule")),
        or_none(txt(dig(obj, "spec", "timeZone"))),
        "<unset>" if not isinstance(suspend, bool) else ("True" if suspend else "False"),
        len(seq(dig(obj, "status", "active"))),
        since(last, now) if last else NONE,
        obj_age(obj, now),
        names,
        images,
        format_selector(dig(job, "selector")),
    ]


# -- services and discovery ---------------------------------------------------------


def service_ports(ports: Any) -> str:
    """``makePortString``: ``80/TCP,443:30443/TCP``, or ``<none>``."""
    pieces = []
    for port in seq(ports):
        if not isinstance(port, Mapping):
            continue
        proto = txt(port.get("protocol")) or "TCP"
        node_port = num(port.get("nodePort"))
        if node_port > 0:
            pieces.append(f"{num(port.get('port'))}:{node_port}/{proto}")
        else:
            pieces.append(f"{num(port.get('port'))}/{proto}")
    return ",".join(pieces) or NONE


def service_external_ip(svc: Obj, wide: bool) -> str:
    """``getServiceExternalIP``."""
    kind = txt(dig(svc, "spec", "type")) or "ClusterIP"
    external = [str(ip) for ip in seq(dig(svc, "spec", "externalIPs"))]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        found = set()
        for ing in seq(dig(svc, "status", "loadBalancer", "ingress")):
            at = txt(dig(ing, "ip")) or txt(dig(ing, "hostname"))
            if at:
                found.add(at)
        lb = ",".join(sorted(found))
        if not wide and len(lb) > LOAD_BALANCER_WIDTH:
            lb = lb[: LOAD_BALANCER_WIDTH - 3] + "..."
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + external)
        return lb or "<pending>"
    if kind == "ExternalName":
        return txt(dig(svc, "spec", "externalName"))
    return "<unknown>"


def service_cells_for(wide: bool) -> Callable[[Obj, datetime], list[Cell]]:
    def cells(svc: Obj, now: datetime) -> list[Cell]:
        ips = seq(dig(svc, "spec", "clusterIPs"))
        cluster_ip = str(ips[0]) if ips else txt(dig(svc, "spec", "clusterIP"))
        return [
            obj_name(svc),
            txt(dig(svc, "spec", "type")) or "ClusterIP",
            or_none(cluster_ip),
            service_external_ip(svc, wide),
            service_ports(dig(svc, "spec", "ports")),
            obj_age(svc, now),
            format_labels(dig(svc, "spec", "selector")),
        ]

    return cells


def format_endpoints(endpoints: Obj) -> str:
    """``formatEndpoints``: the first three ``ip:port``, then ``+ N more...``."""
    subsets = seq(endpoints.get("subsets"))
    if not subsets:
        return NONE
    shown: list[str] = []
    count = 0
    more = False
    for ss in subsets:
        addresses = [a for a in seq(dig(ss, "addresses")) if isinstance(a, Mapping)]
        ports = [p for p in seq(dig(ss, "ports")) if isinstance(p, Mapping)]
        pairs = (
            [(a, None) for a in addresses]
            if not ports
            else [(a, p) for p in ports for a in addresses]
        )
        for addr, port in pairs:
            count += 1
            if len(shown) == ENDPOINTS_SHOWN:
                more = True
                continue
            ip = txt(addr.get("ip"))
            if port is None:
                shown.append(ip)
            else:
                host = f"[{ip}]" if ":" in ip else ip
                shown.append(f"{host}:{num(port.get('port'))}")
    text = ",".join(shown)
    return f"{text} + {count - ENDPOINTS_SHOWN} more..." if more else text


# -- cluster, config, events ----------------------------------------------------------


def node_cells(node: Obj, now: datetime) -> list[Cell]:
    ready = next(
        (
            c
            for c in seq(dig(node, "status", "conditions"))
            if isinstance(c, Mapping) and c.get("type") == "Ready"
        ),
        None,
    )
    status = (
        ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    )
    if dig(node, "spec", "unschedulable") is True:
        status.append("SchedulingDisabled")
    roles = set()
    for key, value in (dig(node, "metadata", "labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key[len("node-role.kubernetes.io/") :]:
            roles.add(key[len("node-role.kubernetes.io/") :])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)

    def address(kind: str) -> str:
        for a in seq(dig(node, "status", "addresses")):
            if isinstance(a, Mapping) and a.get("type") == kind:
                return txt(a.get("address"))
        return NONE

    info = dig(node, "status", "nodeInfo") or {}
    return [
        obj_name(node),
        ",".join(status),
        ",".join(sorted(roles)) or NONE,
        obj_age(node, now),
        txt(dig(info, "kubeletVersion")),
        address("InternalIP"),
        address("ExternalIP"),
        txt(dig(info, "osImage")) or "<unknown>",
        txt(dig(info, "kernelVersion")) or "<unknown>",
        txt(dig(info, "containerRuntimeVersion")) or "<unknown>",
    ]


def event_last_seen(event: Obj, now: datetime) -> str:
    """LAST SEEN of an event: lastTimestamp, else firstTimestamp, else eventTime; a series wins."""
    first = event.get("firstTimestamp") or event.get("eventTime")
    last = event.get("lastTimestamp") or first
    series_last = dig(event, "series", "lastObservedTime")
    if series_last:
        last = series_last
    return since(last, now)


def event_cells(event: Obj, now: datetime) -> list[Cell]:
    involved = event.get("involvedObject") or {}
    kind = txt(dig(involved, "kind")).lower()
    name = txt(dig(involved, "name"))
    return [
        event_last_seen(event, now),
        txt(event.get("type")),
        txt(event.get("reason")),
        f"{kind}/{name}" if name else kind,
        txt(event.get("message")).strip(),
    ]


def role_binding_cells(obj: Obj, now: datetime) -> list[Cell]:
    users, groups, sas = [], [], []
    for s in seq(obj.get("subjects")):
        kind, name = txt(dig(s, "kind")), txt(dig(s, "name"))
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            sas.append(f"{txt(dig(s, 'namespace'))}/{name}")
    role = f"{txt(dig(obj, 'roleRef', 'kind'))}/{txt(dig(obj, 'roleRef', 'name'))}"
    return [
        obj_name(obj),
        role,
        obj_age(obj, now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(sas),
    ]


def created_at(obj: Obj, now: datetime) -> list[Cell]:
    when = parse_time(dig(obj, "metadata", "creationTimestamp"))
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""
    return [obj_name(obj), stamp]


def hpa_targets(obj: Obj) -> str:
    """``formatHPAMetrics`` for autoscaling/v2: ``cpu: 40%/80%``, two shown, then ``+ N more...``."""
    specs = [s for s in seq(dig(obj, "spec", "metrics")) if isinstance(s, Mapping)]
    statuses = seq(dig(obj, "status", "currentMetrics"))
    if not specs:
        return NONE
    shown: list[str] = []
    for i, spec in enumerate(specs):
        status = statuses[i] if i < len(statuses) and isinstance(statuses[i], Mapping) else {}
        kind = txt(spec.get("type"))
        source = {
            "Resource": "resource",
            "ContainerResource": "containerResource",
            "Pods": "pods",
            "Object": "object",
            "External": "external",
        }.get(kind)
        if source is None:
            text = "<unknown type>"
        else:
            target = dig(spec, source, "target") or {}
            current = dig(status, source, "current") or {}
            if source in ("resource", "containerResource") and "averageValue" not in target:
                cur = current.get("averageUtilization")
                tgt = target.get("averageUtilization")
                text = (
                    f"{txt(dig(spec, source, 'name'))}: "
                    + (f"{cur}%" if isinstance(cur, int) else "<unknown>")
                    + "/"
                    + (f"{tgt}%" if isinstance(tgt, int) else "<auto>")
                )
            else:
                field = "averageValue" if "averageValue" in target or source == "pods" else "value"
                cur_text = str(current[field]) if field in current else "<unknown>"
                text = f"{cur_text}/{target.get(field, '')}"
                if source in ("resource", "containerResource"):
                    text = f"{txt(dig(spec, source, 'name'))}: {text}"
                elif source in ("object", "external") and field == "averageValue":
                    text += " (avg)"
        shown.append(text)
    if len(shown) > HPA_METRICS_SHOWN:
        return f"{', '.join(shown[:HPA_METRICS_SHOWN])} + {len(shown) - HPA_METRICS_SHOWN} more..."
    return ", ".join(shown)


def hpa_cells(obj: Obj, now: datetime) -> list[Cell]:
    ref = dig(obj, "spec", "scaleTargetRef") or {}
    min_replicas = dig(obj, "spec", "minReplicas")
    return [
        obj_name(obj),
        f"{txt(dig(ref, 'kind'))}/{txt(dig(ref, 'name'))}",
        hpa_targets(obj),
        str(min_replicas) if isinstance(min_replicas, int) else "<unset>",
        num(dig(obj, "spec", "maxReplicas")),
        num(dig(obj, "status", "currentReplicas")),
        obj_age(obj, now),
    ]
