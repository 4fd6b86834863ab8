"""What the queue sees of a Job or Workflow: a ``Workload``. Pure.

Kueue makes a Workload object per Job; meshwork keeps the same facts on the
Job or Workflow itself, so there is nothing more to store or collect:

* which queue: the label ``kueue.x-k8s.io/queue-name`` (a LocalQueue);
* admitted or not: the annotation ``meshwork.io/admitted-by`` (the
  ClusterQueue), with the flavor given to each resource in
  ``meshwork.io/admitted-flavors`` (``cpu=default,pods=default``); a Job is
  also unsuspended at admission (``spec.suspend: false``), as Kueue does;
* how much it asks for: the pod's requests (limits where a request is not
  written, as the API server defaults it) times the number of pods that run
  at once, plus ``pods``: a Job's ``min(parallelism, completions)`` (the
  gang: all of them or none); a Workflow's largest template pod times its
  ``spec.parallelism`` (1 when unset: a Workflow without a parallelism limit
  is admitted for one pod at a time of quota, as Kueue admits a plain pod);
* its priority: the Kueue label ``kueue.x-k8s.io/priority-class`` (a
  WorkloadPriorityClass), else the pods' ``priorityClassName`` (a
  PriorityClass), else their ``priority``, else 0;
* its expected duration, for shortest-job-first: the annotation
  ``meshwork.io/expected-duration`` (``30s``, ``5m``, ``1h30m`` or plain
  seconds);
* done or not: a Job with a Complete or Failed condition, a Workflow in a
  final phase, gives its quota back.

What must not live here: ordering, quota arithmetic, or I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from meshwork.core.reconcile.podtemplate import parse_time
from meshwork.model.argo_workflows import Workflow
from meshwork.model.base import ObjectMeta, Quantity
from meshwork.model.container import Container
from meshwork.model.corev1 import parse_quantity
from meshwork.model.workloads import Job

LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_PRIORITY_CLASS = "kueue.x-k8s.io/priority-class"
ANNOTATION_ADMITTED_BY = "meshwork.io/admitted-by"
ANNOTATION_FLAVORS = "meshwork.io/admitted-flavors"
ANNOTATION_EXPECTED_DURATION = "meshwork.io/expected-duration"
PODS = "pods"  # Kueue's name for the count of pods as a quota resource
FINAL_WORKFLOW_PHASES = frozenset({"Succeeded", "Failed", "Error"})

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration (``1h30m``, ``45s``, ``250ms``) or plain seconds; None if invalid."""
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                return None
            value += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos == 0 or pos != len(text):
            return None
    return value if value >= 0 and value != float("inf") else None


@dataclass(frozen=True, slots=True)
class Workload:
    """One Job or Workflow as the queue sees it."""

    kind: str  # "Job" | "Workflow"
    namespace: str
    name: str
    queue: str  # the LocalQueue
    arrival: float  # creationTimestamp as seconds
    sequence: int  # the store's creation revision: orders arrivals within one second
    requests: Mapping[str, Decimal] = field(default_factory=dict)
    priority: int = 0
    duration: float | None = None  # the declared expected duration
    admitted_by: str | None = None
    flavors: Mapping[str, str] = field(default_factory=dict)
    finished: bool = False
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def holds_quota(self) -> bool:
        return self.admitted_by is not None and not self.finished


def _container_requests(c: Container) -> dict[str, Decimal]:
    res = c.resources
    out = {k: parse_quantity(v) for k, v in ((res.limits if res else None) or {}).items()}
    out.update({k: parse_quantity(v) for k, v in ((res.requests if res else None) or {}).items()})
    return out


def pod_requests(containers: Iterable[Container], init_containers: Iterable[Container] = ()) -> dict[str, Decimal]:
    """One pod's requests: the sum of its containers, at least its largest init container."""
    total: dict[str, Decimal] = {}
    for c in containers:
        for k, v in _container_requests(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in init_containers:
        for k, v in _container_requests(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    return total


def _times(requests: Mapping[str, Decimal], pods: int) -> dict[str, Decimal]:
    out = {k: v * pods for k, v in requests.items()}
    out[PODS] = Decimal(pods)
    return out


def parse_flavors(text: str | None) -> dict[str, str]:
    """``cpu=default,pods=default`` -> {"cpu": "default", "pods": "default"}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        resource, sep, flavor = part.partition("=")
        if sep and resource.strip():
            out[resource.strip()] = flavor.strip()
    return out


def format_flavors(flavors: Mapping[str, str]) -> str:
    return ",".join(f"{r}={f}" for r, f in sorted(flavors.items()))


def timestamp_seconds(timestamp: str | None) -> float:
    """An RFC 3339 timestamp as seconds since the epoch; none (not created yet) is newest."""
    seconds = parse_time(timestamp)
    return float("inf") if seconds is None else seconds


def _priority(meta: ObjectMeta, class_name: str | None, explicit: int | None,
              workload_classes: Mapping[str, int], priority_classes: Mapping[str, int]) -> int:  # fmt: skip
    label = (meta.labels or {}).get(LABEL_PRIORITY_CLASS)
    if label is not None and label in workload_classes:
        return workload_classes[label]
    if class_name and class_name in priority_classes:
        return priority_classes[class_name]
    return explicit or 0


def _common(meta: ObjectMeta) -> dict[str, object]:
    annotations = meta.annotations or {}
    return {
        "namespace": meta.namespace or "default",
        "name": meta.name or "",
        "uid": meta.uid or "",
        "queue": (meta.labels or {}).get(LABEL_QUEUE, ""),
        "arrival": timestamp_seconds(meta.creation_timestamp),
        "duration": parse_duration(annotations.get(ANNOTATION_EXPECTED_DURATION)),
        "admitted_by": annotations.get(ANNOTATION_ADMITTED_BY),
        "flavors": parse_flavors(annotations.get(ANNOTATION_FLAVORS)),
    }


def job_workload(job: Job, sequence: int, workload_classes: Mapping[str, int] | None = None,
                 priority_classes: Mapping[str, int] | None = None) -> Workload:  # fmt: skip
    """The Job as a gang of ``min(parallelism, completions)`` pods."""
    spec = job.spec
    parallelism = 1 if spec.parallelism is None else spec.parallelism
    count = parallelism if spec.completions is None else min(parallelism, spec.completions)
    pod = spec.template.spec
    finished = any(
        c.type in ("Complete", "Failed") and c.status == "True"
        for c in (job.status.conditions if job.status else None) or ()
    )
    priority = _priority(job.metadata, pod.priority_class_name, pod.priority,
                         workload_classes or {}, priority_classes or {})  # fmt: skip
    return Workload(
        kind="Job", sequence=sequence, priority=priority, finished=finished,
        requests=_times(pod_requests(pod.containers, pod.init_containers or ()), count),
        **_common(job.metadata),  # type: ignore[arg-type]
    )  # fmt: skip


def workflow_workload(wf: Workflow, sequence: int, workload_classes: Mapping[str, int] | None = None,
                      priority_classes: Mapping[str, int] | None = None) -> Workload:  # fmt: skip
    """The Workflow as ``spec.parallelism`` (default 1) of its largest template pod."""
    largest: dict[str, Decimal] = {}
    for tmpl in wf.spec.templates or ():
        main = tmpl.container or tmpl.script
        if main is None:
            continue
        for k, v in pod_requests([main], tmpl.init_containers or ()).items():  # type: ignore[list-item]
            largest[k] = max(largest.get(k, Decimal(0)), v)
    phase = wf.status.phase if wf.status else None
    priority = _priority(wf.metadata, wf.spec.pod_priority_class_name, wf.spec.pod_priority,
                         workload_classes or {}, priority_classes or {})  # fmt: skip
    return Workload(
        kind="Workflow", sequence=sequence, priority=priority, finished=phase in FINAL_WORKFLOW_PHASES,
        requests=_times(largest, wf.spec.parallelism or 1),
        **_common(wf.metadata),  # type: ignore[arg-type]
    )  # fmt: skip


def waiting_for_admission(meta: ObjectMeta) -> str | None:
    """The LocalQueue an object waits in, or None when it is admitted or not queued."""
    queue = (meta.labels or {}).get(LABEL_QUEUE)
    if not queue or (meta.annotations or {}).get(ANNOTATION_ADMITTED_BY):
        return None
    return queue


def quantity_text(value: Decimal) -> Quantity:
    """A Decimal as the quantity written back in a status (an int when whole)."""
    if value == value.to_integral_value():
        return int(value)
    return str(value.normalize())
