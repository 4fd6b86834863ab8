"""What ``meshwork submit --watch`` and ``meshwork wf get|list`` print: pure formatting.

What lives here: the header and the node tree of one workflow (as ``argo get``
shows them: a status icon, the step's display name, its template, its pod,
duration and message), the rows of ``wf list``, and ``retry_status`` (which
nodes ``wf retry`` resets). Step groups and task groups are not lines of
their own: their children hang from the step or DAG above them.

What must not: HTTP or terminal I/O (``workflow``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meshwork.core.reconcile.podtemplate import parse_time

ICONS = {"Succeeded": "✔", "Failed": "✖", "Error": "⚠", "Running": "●", "Pending": "◷",
         "Skipped": "○", "Omitted": "○"}  # fmt: skip
FINISHED = ("Succeeded", "Failed", "Error")
_HIDDEN = ("StepGroup", "TaskGroup")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60}m"


def duration(obj: dict[str, Any], now: float) -> str:
    start = parse_time(obj.get("startedAt"))
    end = parse_time(obj.get("finishedAt"))
    return human_duration((end or now) - start) if start is not None else ""


def header(wf: dict[str, Any], now: float) -> list[tuple[str, str]]:
    meta, st = wf.get("metadata") or {}, wf.get("status") or {}
    rows = [("Name:", meta.get("name", "")), ("Namespace:", meta.get("namespace", "")),
            ("Status:", st.get("phase") or "Pending")]  # fmt: skip
    if st.get("message"):
        rows.append(("Message:", st["message"]))
    for label, key in (("Created:", None), ("Started:", "startedAt"), ("Finished:", "finishedAt")):
        value = meta.get("creationTimestamp") if key is None else st.get(key)
        if value:
            rows.append((label, value))
    if st.get("startedAt"):
        rows.append(("Duration:", duration(st, now)))
    if st.get("progress"):
        rows.append(("Progress:", st["progress"]))
    return rows


def tree_rows(wf: dict[str, Any], now: float) -> list[tuple[str, str, str, str, str, str]]:
    """(status icon, STEP with its tree prefix, TEMPLATE, PODNAME, DURATION, MESSAGE) per node."""
    st = wf.get("status") or {}
    nodes: dict[str, dict[str, Any]] = st.get("nodes") or {}
    name = (wf.get("metadata") or {}).get("name", "")
    roots = [n for n in (name, *(i for i, v in nodes.items() if v.get("name") == f"{name}.onExit")) if n in nodes]
    rows: list[tuple[str, str, str, str, str, str]] = []

    def visible_children(node: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for cid in node.get("children") or []:
            child = nodes.get(cid)
            if child is None:
                continue
            if child.get("type") in _HIDDEN:
                out.extend(visible_children(child))
            else:
                out.append(child)
        return out

    def walk(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─" if last else "├─")
        phase = node.get("phase") or "Pending"
        pod = node.get("id", "") if node.get("type") == "Pod" else ""
        rows.append((ICONS.get(phase, "?"), f"{prefix}{branch}{node.get('displayName', '')}",
                     node.get("templateName") or "", pod, duration(node, now), node.get("message") or ""))  # fmt: skip
        kids = visible_children(node)
        inner = prefix + ("" if top else ("  " if last else "│ "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in roots:
        walk(nodes[root], "", True, True)
    return rows


def list_row(wf: dict[str, Any], now: float) -> tuple[str, str, str, str, str]:
    """NAME, STATUS, AGE, DURATION, MESSAGE."""
    meta, st = wf.get("metadata") or {}, wf.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    age = human_duration(now - created) if created is not None else ""
    phase = st.get("phase") or "Pending"
    if phase == "Running" and (wf.get("spec") or {}).get("suspend"):
        phase = "Running (Suspended)"
    return meta.get("name", ""), phase, age, duration(st, now), st.get("message") or ""


def retry_status(status: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The status ``wf retry`` writes, and the pods of the nodes it resets.

    Every node that did not succeed or was not skipped is forgotten, so the
    engine walks to it and runs it again; succeeded and skipped nodes are kept
    (a failed step's succeeded siblings are not run again).
    """
    nodes: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (status.get("nodes") or {}).items()}
    keep = ("Succeeded", "Skipped")
    drop = {nid for nid, node in nodes.items() if node.get("phase") not in keep}
    pods = [nid for nid in drop if nodes[nid].get("type") == "Pod"]
    kept = {nid: node for nid, node in nodes.items() if nid not in drop}
    for node in kept.values():
        node["children"] = [c for c in node.get("children") or [] if c not in drop]
        if not node["children"]:
            node.pop("children")
    new = {k: v for k, v in status.items() if k not in ("finishedAt", "message", "nodes")}
    new["phase"] = "Running"
    new["nodes"] = kept
    return new, sorted(pods)


def now_utc() -> float:
    return datetime.now(UTC).timestamp()
