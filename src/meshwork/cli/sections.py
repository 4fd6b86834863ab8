"""The building blocks of ``describe`` output, laid out as kubectl lays them out.

What lives here: a prefix writer (two spaces per level, cells separated by
tabs and aligned like kubectl's ``tabwriter(0, 8, 2, ' ', 0)``), the sections
several kinds share (header, labels, annotations, containers, pod templates,
conditions, events), and the generic describer's walk over every field.

What must not live here: HTTP, the clock (``now`` is a parameter), or any one
kind's layout (see ``describe``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from meshwork.cli.humanize import NONE, parse_time, since
from meshwork.cli.printers import DESCRIBE_MINWIDTH, DESCRIBE_PADDING, tabwrite
from meshwork.cli.wire import Obj, dig, num, seq, txt

ANNOTATION_MAX = 140
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# kubectl's generic describer turns these words into capitals instead of title case.
ACRONYMS = frozenset({"API", "URL", "UID", "OSB", "GUID"})


class Writer:
    """kubectl's PrefixWriter: lines indented two spaces per level; tabs separate cells."""

    def __init__(self) -> None:
        self._blocks: list[list[str]] = [[]]

    def line(self, level: int, text: str) -> None:
        self._blocks[-1].append("  " * level + text)

    def flush(self) -> None:
        """End a tabwriter block: later lines align among themselves only."""
        self._blocks.append([])

    def text(self) -> str:
        return "".join(
            tabwrite(
                [line.split("\t") for line in block],
                minwidth=DESCRIBE_MINWIDTH,
                padding=DESCRIBE_PADDING,
            )
            for block in self._blocks
        )


def describe_time(value: Any) -> str:
    """A timestamp as kubectl's describe prints it: ``Mon, 02 Jan 2006 15:04:05 +0000``."""
    when = parse_time(value)
    if when is None:
        return NONE
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S %z")


def multiline(w: Writer, level: int, title: str, pairs: Sequence[str]) -> None:
    if not pairs:
        w.line(level, f"{title}:\t{NONE}")
        return
    w.line(level, f"{title}:\t{pairs[0]}")
    for pair in pairs[1:]:
        w.line(level, f"\t{pair}")


def labels_section(w: Writer, level: int, title: str, labels: Any) -> None:
    items = labels if isinstance(labels, Mapping) else {}
    multiline(w, level, title, [f"{k}={items[k]}" for k in sorted(items)])


def annotations_section(w: Writer, level: int, annotations: Any) -> None:
    items = annotations if isinstance(annotations, Mapping) else {}
    pairs = []
    for key in sorted(items):
        if key == LAST_APPLIED:
            continue
        value = str(items[key])
        if len(value) > ANNOTATION_MAX:
            value = value[: ANNOTATION_MAX - 3] + "..."
        pairs.append(f"{key}: {value}")
    multiline(w, level, "Annotations", pairs)


def header(w: Writer, obj: Obj, *, created: bool = False) -> None:
    meta = obj.get("metadata") or {}
    w.line(0, f"Name:\t{txt(meta.get('name'))}")
    if meta.get("namespace"):
        w.line(0, f"Namespace:\t{txt(meta.get('namespace'))}")
    if created:
        w.line(0, f"CreationTimestamp:\t{describe_time(meta.get('creationTimestamp'))}")
    labels_section(w, 0, "Labels", meta.get("labels"))
    annotations_section(w, 0, meta.get("annotations"))


def controlled_by(w: Writer, obj: Obj) -> None:
    for ref in seq(dig(obj, "metadata", "ownerReferences")):
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            w.line(0, f"Controlled By:\t{txt(ref.get('kind'))}/{txt(ref.get('name'))}")
            return


def _ports(container: Obj) -> list[str]:
    out = []
    for p in seq(container.get("ports")):
        if isinstance(p, Mapping):
            out.append(f"{num(p.get('containerPort'))}/{txt(p.get('protocol')) or 'TCP'}")
    return out


def _state(w: Writer, level: int, title: str, state: Any) -> None:
    if not isinstance(state, Mapping) or not state:
        w.line(level, f"{title}:\tWaiting" if title == "State" else f"{title}:\t{NONE}")
        return
    if isinstance(state.get("running"), Mapping):
        w.line(level, f"{title}:\tRunning")
        w.line(level + 1, f"Started:\t{describe_time(dig(state, 'running', 'startedAt'))}")
    elif isinstance(state.get("waiting"), Mapping):
        w.line(level, f"{title}:\tWaiting")
        if dig(state, "waiting", "reason"):
            w.line(level + 1, f"Reason:\t{txt(dig(state, 'waiting', 'reason'))}")
        if dig(state, "waiting", "message"):
            w.line(level + 1, f"Message:\t{txt(dig(state, 'waiting', 'message'))}")
    elif isinstance(state.get("terminated"), Mapping):
        t = state["terminated"]
        w.line(level, f"{title}:\tTerminated")
        if t.get("reason"):
            w.line(level + 1, f"Reason:\t{txt(t.get('reason'))}")
        if t.get("message"):
            w.line(level + 1, f"Message:\t{txt(t.get('message'))}")
        w.line(level + 1, f"Exit Code:\t{num(t.get('exitCode'))}")
        if num(t.get("signal")):
            w.line(level + 1, f"Signal:\t{num(t.get('signal'))}")
        w.line(level + 1, f"Started:\t{describe_time(t.get('startedAt'))}")
        w.line(level + 1, f"Finished:\t{describe_time(t.get('finishedAt'))}")


def _env(w: Writer, level: int, container: Obj) -> None:
    env = [e for e in seq(container.get("env")) if isinstance(e, Mapping)]
    if not env:
        w.line(level, f"Environment:\t{NONE}")
        return
    w.line(level, "Environment:")
    for e in env:
        if "value" in e:
            w.line(level + 1, f"{txt(e.get('name'))}:\t{txt(e.get('value'))}")
        else:
            source = e.get("valueFrom") or {}
            ref = next(iter(source), "valueFrom")
            w.line(level + 1, f"{txt(e.get('name'))}:\t<set to the key from {ref}>")


def containers_section(
    w: Writer, level: int, title: str, containers: Any, statuses: Any = None
) -> None:
    """The ``Containers:`` block of a pod (``level`` 0) or a pod template (``level`` 1).

    As kubectl lays it out, names sit at level 1 and their fields at level 2
    either way; inside a template a name gets one more space.
    """
    items = [c for c in seq(containers) if isinstance(c, Mapping)]
    if not items:
        return
    by_name = {txt(s.get("name")): s for s in seq(statuses) if isinstance(s, Mapping)}
    w.line(level, f"{title}:")
    space = " " * level
    for c in items:
        w.line(1, f"{space}{txt(c.get('name'))}:")
        inner = 2
        status = by_name.get(txt(c.get("name")))
        if status is not None and status.get("containerID"):
            w.line(inner, f"Container ID:\t{txt(status.get('containerID'))}")
        w.line(inner, f"Image:\t{txt(c.get('image'))}")
        ports = _ports(c)
        multiline(w, inner, "Ports" if len(ports) > 1 else "Port", ports)
        for key, title_ in (("command", "Command"), ("args", "Args")):
            values = seq(c.get(key))
            if values:
                w.line(inner, f"{title_}:")
                for v in values:
                    w.line(inner + 1, str(v))
        if status is not None:
            _state(w, inner, "State", status.get("state"))
            if isinstance(status.get("lastState"), Mapping) and status["lastState"]:
                _state(w, inner, "Last State", status.get("lastState"))
            w.line(inner, f"Ready:\t{'True' if status.get('ready') is True else 'False'}")
            w.line(inner, f"Restart Count:\t{num(status.get('restartCount'))}")
        for probe, name in (("livenessProbe", "Liveness"), ("readinessProbe", "Readiness")):
            if isinstance(c.get(probe), Mapping):
                w.line(inner, f"{name}:\t{_probe(c[probe])}")
        _env(w, inner, c)


def _probe(probe: Obj) -> str:
    if isinstance(probe.get("httpGet"), Mapping):
        h = probe["httpGet"]
        action = f"http-get {txt(h.get('scheme')).lower() or 'http'}://:{h.get('port', '')}{txt(h.get('path'))}"
    elif isinstance(probe.get("tcpSocket"), Mapping):
        action = f"tcp-socket :{dig(probe, 'tcpSocket', 'port')}"
    elif isinstance(probe.get("exec"), Mapping):
        action = "exec [" + " ".join(str(a) for a in seq(dig(probe, "exec", "command"))) + "]"
    else:
        action = "unknown"
    return (
        f"{action} delay={num(probe.get('initialDelaySeconds'))}s "
        f"timeout={probe.get('timeoutSeconds', 1)}s period={probe.get('periodSeconds', 10)}s "
        f"#success={probe.get('successThreshold', 1)} #failure={probe.get('failureThreshold', 3)}"
    )


def conditions_section(w: Writer, obj: Obj, *, with_reason: bool) -> None:
    conds = [c for c in seq(dig(obj, "status", "conditions")) if isinstance(c, Mapping)]
    if not conds:
        return
    w.line(0, "Conditions:")
    if with_reason:
        w.line(1, "Type\tStatus\tReason")
        w.line(1, "----\t------\t------")
        for c in conds:
            w.line(1, f"{txt(c.get('type'))}\t{txt(c.get('status'))}\t{txt(c.get('reason'))}")
    else:
        w.line(1, "Type\tStatus")
        for c in conds:
            w.line(1, f"{txt(c.get('type'))}\t{txt(c.get('status'))}")


def pod_template_section(w: Writer, template: Any) -> None:
    w.line(0, "Pod Template:")
    labels_section(w, 1, "Labels", dig(template, "metadata", "labels"))
    if dig(template, "metadata", "annotations"):  # kubectl prints this line only when set
        annotations_section(w, 1, dig(template, "metadata", "annotations"))
    spec = dig(template, "spec") or {}
    if spec.get("serviceAccountName"):
        w.line(1, f"Service Account:\t{txt(spec.get('serviceAccountName'))}")
    containers_section(w, 1, "Init Containers", spec.get("initContainers"))
    containers_section(w, 1, "Containers", spec.get("containers"))


def events_section(w: Writer, events: Sequence[Obj], now: datetime) -> None:
    """``DescribeEvents``: oldest first, ``Age`` with ``(xN over T)`` for repeated events."""
    if not events:
        w.line(0, f"Events:\t{NONE}")
        return
    w.flush()

    def last_seen(e: Obj) -> datetime:
        t = parse_time(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"))
        return t or datetime.min.replace(tzinfo=UTC)

    w.line(0, "Events:")
    w.line(1, "Type\tReason\tAge\tFrom\tMessage")
    w.line(1, "----\t------\t----\t----\t-------")
    for e in sorted(events, key=last_seen):
        first = since(e.get("eventTime"), now)
        if not e.get("eventTime"):
            first = since(e.get("firstTimestamp"), now)
        count = num(e.get("count"))
        if isinstance(e.get("series"), Mapping):
            interval = f"{since(dig(e, 'series', 'lastObservedTime'), now)} (x{num(dig(e, 'series', 'count'))} over {first})"
        elif count > 1:
            interval = f"{since(e.get('lastTimestamp'), now)} (x{count} over {first})"
        else:
            interval = first
        source = txt(dig(e, "source", "component")) or txt(e.get("reportingController"))
        w.line(
            1,
            f"{txt(e.get('type'))}\t{txt(e.get('reason'))}\t{interval}\t{source}\t"
            f"{txt(e.get('message')).strip()}",
        )


def smart_label(field: str) -> str:
    """kubectl's ``smartLabelFor``: ``creationTimestamp`` -> ``Creation Timestamp``, ``apiVersion`` -> ``API Version``."""
    if not field or any(not (ch.isalpha() or ch == "-") for ch in field):
        return field
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z]|$)|[A-Z]?[a-z]+|[A-Z]+|-", field)
    words = []
    for part in parts:
        words.append(part.upper() if part.upper() in ACRONYMS else part[:1].upper() + part[1:])
    return " ".join(words)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unstructured_section(
    w: Writer, level: int, content: Mapping[str, Any], prefix: str, skip: frozenset[str]
) -> None:
    """``printUnstructuredContent``: every field, sorted, nested by indentation."""
    for field in sorted(content):
        value = content[field]
        path = f"{prefix}.{field}"
        if path in skip:
            continue
        if isinstance(value, Mapping):
            w.line(level, f"{smart_label(field)}:")
            unstructured_section(w, level + 1, value, path, skip)
        elif isinstance(value, list):
            w.line(level, f"{smart_label(field)}:")
            for child in value:
                if isinstance(child, Mapping):
                    unstructured_section(w, level + 1, child, path, skip)
                else:
                    w.line(level + 1, _scalar(child))
        else:
            w.line(level, f"{smart_label(field)}:\t{_scalar(value)}")


GENERIC_SKIP = frozenset(
    {
        ".metadata.managedFields",
        ".metadata.name",
        ".metadata.namespace",
        ".metadata.labels",
        ".metadata.annotations",
    }
)
