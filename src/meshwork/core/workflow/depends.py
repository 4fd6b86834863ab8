"""DAG tasks' dependencies: what a task waits for, and what its ``depends`` means.

What lives here: the tasks a ``depends`` expression or ``dependencies`` list
names, the expression itself (a ``dependencies`` list is ``A && B``), the value
of ``A`` (succeeded or skipped, as Argo's docs define it) and ``A.Failed``,
``A.AnySucceeded``... over the finished nodes, whether a failed task is
handled (so its DAG does not fail), and a dependency-first order of tasks.

What must not: running tasks (``engine``), or I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache

from meshwork.core.workflow.expr import ExprError
from meshwork.core.workflow.nodes import Node
from meshwork.model.argo_templates import DAGTask, WorkflowStep

_DEPENDS_REF = re.compile(r"([A-Za-z0-9][-A-Za-z0-9]*)(?:\.([A-Za-z]+))?")


def continues(call: WorkflowStep | DAGTask, phase: str) -> bool:
    on = call.continue_on
    if on is None:
        return False
    return bool(on.failed) if phase == "Failed" else bool(on.error)


def dependencies(task: DAGTask) -> list[str]:
    return list(_dependencies_of(task.depends, tuple(task.dependencies or ())))


@lru_cache(maxsize=4096)
def _dependencies_of(depends: str | None, dependencies: tuple[str, ...]) -> tuple[str, ...]:
    if depends:
        return tuple(sorted({m.group(1) for m in _DEPENDS_REF.finditer(depends)}))
    return dependencies


def depends_expression(task: DAGTask) -> str | None:
    if task.depends:
        return task.depends
    if task.dependencies:
        return " && ".join(task.dependencies)
    return None


def depends_value(ref: str, states: dict[str, list[Node]]) -> bool | None:
    """``A`` is A.Succeeded || A.Skipped || A.Daemoned; ``A.Result`` tests that result."""
    task, _, result = ref.partition(".")
    nodes = states.get(task)
    if nodes is None:
        return None
    head = nodes[0].phase if nodes else ""
    phases = [n.phase for n in nodes[1:]] or [head]
    if not result:
        return head in ("Succeeded", "Skipped")
    table = {"Succeeded": head == "Succeeded", "Failed": head == "Failed", "Errored": head == "Error",
             "Skipped": head == "Skipped", "Omitted": head == "Omitted", "Daemoned": False,
             "AnySucceeded": any(p == "Succeeded" for p in phases),
             "AllFailed": bool(phases) and all(p == "Failed" for p in phases),
             "AnyFailed": any(p == "Failed" for p in phases)}  # fmt: skip
    if result not in table:
        raise ExprError(f"unknown task result {result!r} in {ref!r}")
    return table[result]


def handled(task: DAGTask, phase: str, tasks: list[DAGTask]) -> bool:
    """A failed task does not fail its DAG when it continues on that failure or a
    dependent task's ``depends`` names that outcome."""
    if continues(task, phase):
        return True
    pattern = re.compile(rf"(?<![-A-Za-z0-9]){re.escape(task.name)}\.(Failed|Errored|AnyFailed|AllFailed)\b")
    return any(t.depends and pattern.search(t.depends) for t in tasks)


def topological(tasks: list[DAGTask]) -> list[DAGTask]:
    """Tasks in an order where each comes after what it depends on (declared order otherwise)."""
    by_name = {t.name: t for t in tasks}
    out: list[DAGTask] = []
    seen: set[str] = set()

    def visit(task: DAGTask, path: frozenset[str]) -> None:
        if task.name in seen or task.name in path:
            return
        for dep in dependencies(task):
            if dep in by_name:
                visit(by_name[dep], path | {task.name})
        seen.add(task.name)
        out.append(task)

    for task in tasks:
        visit(task, frozenset())
    return out
