"""``meshwork queue list``: the work waiting in and admitted by the batch queues.

One row per Job or Workflow labelled ``kueue.x-k8s.io/queue-name``: its
ClusterQueue and LocalQueue, whether it waits (with its place in the
ClusterQueue's admission order, from ``status.pendingWorkloadsStatus``), is
admitted (holding quota) or finished, its priority, declared expected
duration and age, then one line per ClusterQueue with its policy and usage.
``rows`` and ``queue_rows`` are pure so tests can check them without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from meshwork.cli.context import reports_errors, session
from meshwork.cli.humanize import human_duration
from meshwork.cli.workflow import _table, namespace_option
from meshwork.cli.workflow_view import now_utc
from meshwork.core.queue.policy import ANNOTATION_POLICY, DEFAULT_POLICY
from meshwork.core.queue.workload import (
    ANNOTATION_ADMITTED_BY,
    ANNOTATION_EXPECTED_DURATION,
    FINAL_WORKFLOW_PHASES,
    LABEL_PRIORITY_CLASS,
    LABEL_QUEUE,
    timestamp_seconds,
)
from meshwork.model.kinds import REGISTRY, KindInfo

HEAD = ("NAMESPACE", "KIND", "NAME", "LOCALQUEUE", "CLUSTERQUEUE", "STATE", "POSITION", "PRIORITY", "EXPECTED", "AGE")
QUEUE_HEAD = ("CLUSTERQUEUE", "POLICY", "STRATEGY", "PENDING", "ADMITTED", "USAGE")


def _kinds() -> tuple[KindInfo, KindInfo, KindInfo, KindInfo]:
    import meshwork.model.argo_workflows
    import meshwork.model.kueue  # noqa: F401

    return (REGISTRY.require("batch", "Job"), REGISTRY.require("argoproj.io", "Workflow"),
            REGISTRY.require("kueue.x-k8s.io", "LocalQueue"), REGISTRY.require("kueue.x-k8s.io", "ClusterQueue"))  # fmt: skip


def _finished(kind: str, obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    if kind == "Workflow":
        return status.get("phase") in FINAL_WORKFLOW_PHASES
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or ())


def _age(timestamp: str | None, now: float) -> str:
    start = timestamp_seconds(timestamp)
    return human_duration(max(0.0, now - start)) if start != float("inf") else "-"


def rows(items: Sequence[tuple[str, Mapping[str, Any]]], local_queues: Sequence[Mapping[str, Any]],
         cluster_queues: Sequence[Mapping[str, Any]], now: float) -> list[tuple[str, ...]]:  # fmt: skip
    """The table rows for ``(kind, object)`` pairs: waiting work first, in admission order."""
    target = {((lq.get("metadata") or {}).get("namespace", ""), (lq.get("metadata") or {}).get("name", "")):
              (lq.get("spec") or {}).get("clusterQueue", "") for lq in local_queues}  # fmt: skip
    position: dict[tuple[str, str], int] = {}
    for cq in cluster_queues:
        pending = ((cq.get("status") or {}).get("pendingWorkloadsStatus") or {}).get("clusterQueuePendingWorkload") or []
        for i, p in enumerate(pending):
            position[(p.get("namespace", ""), p.get("name", ""))] = i + 1
    out: list[tuple[tuple[int, int, str], tuple[str, ...]]] = []
    for kind, obj in items:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        lq = labels.get(LABEL_QUEUE, "")
        cq = target.get((ns, lq), "")
        admitted = annotations.get(ANNOTATION_ADMITTED_BY)
        pos = position.get((ns, f"{kind.lower()}-{name}"))
        if _finished(kind, obj):
            state, rank = "Finished", 2
        elif admitted:
            state, rank, cq = "Admitted", 1, admitted
        else:
            state, rank = ("Pending" if cq else "NoQueue"), 0
        spec = obj.get("spec") or {}
        pod = ((spec.get("template") or {}).get("spec") or {}) if kind == "Job" else {}
        priority = labels.get(LABEL_PRIORITY_CLASS) or pod.get("priorityClassName") or spec.get("podPriorityClassName") \
            or str(pod.get("priority", spec.get("podPriority", "")) or "")
        row = (ns, kind, name, lq, cq or "<none>", state, str(pos) if pos and state == "Pending" else "",
               priority or "-", annotations.get(ANNOTATION_EXPECTED_DURATION, "-"),
               _age(meta.get("creationTimestamp"), now))  # fmt: skip
        out.append(((rank, pos or 10**9, f"{ns}/{name}"), row))
    return [row for _, row in sorted(out)]


def queue_rows(cluster_queues: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row per ClusterQueue: policy, strategy, counts and usage against quota."""
    out: list[tuple[str, ...]] = []
    for cq in sorted(cluster_queues, key=lambda c: (c.get("metadata") or {}).get("name", "")):
        meta, spec, status = cq.get("metadata") or {}, cq.get("spec") or {}, cq.get("status") or {}
        quota = {(f.get("name"), r.get("name")): r.get("nominalQuota")
                 for g in spec.get("resourceGroups") or () for f in g.get("flavors") or () for r in f.get("resources") or ()}  # fmt: skip
        usage = ", ".join(f"{r.get('name')} {r.get('total', 0)}/{quota.get((f.get('name'), r.get('name')), '?')}"
                          for f in status.get("flavorsUsage") or () for r in f.get("resources") or ())  # fmt: skip
        out.append((meta.get("name", ""), (meta.get("annotations") or {}).get(ANNOTATION_POLICY, DEFAULT_POLICY),
                    spec.get("queueingStrategy", "BestEffortFIFO"), str(status.get("pendingWorkloads", 0)),
                    str(status.get("admittedWorkloads", 0)), usage or "-"))  # fmt: skip
    return out


@click.group("queue")
def queue_group() -> None:
    """Batch queues (Kueue's ClusterQueue and LocalQueue): what waits, what is admitted."""


@queue_group.command("list")
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("--finished/--no-finished", default=False, help="Also show finished work.")
@reports_errors
def list_cmd(namespace: str | None, all_namespaces: bool, finished: bool) -> None:
    """List queued Jobs and Workflows, waiting work first in admission order."""
    sess = session()
    ns = None if all_namespaces else sess.namespace(namespace)
    client = sess.client()
    jobs, workflows, lqs, cqs = _kinds()
    items: list[tuple[str, Mapping[str, Any]]] = []
    for kind, info in (("Job", jobs), ("Workflow", workflows)):
        items += [(kind, o) for o in client.list(info, ns, label_selector=LABEL_QUEUE)["items"]]
    cluster_queues = client.list(cqs, None)["items"]
    table = rows(items, client.list(lqs, ns)["items"], cluster_queues, now_utc())
    if not finished:
        table = [r for r in table if r[5] != "Finished"]
    if table:
        click.echo(_table(table, HEAD))
    else:
        click.echo("No queued work found")
    if cluster_queues:
        click.echo("")
        click.echo(_table(queue_rows(cluster_queues), QUEUE_HEAD))
