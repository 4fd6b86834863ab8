"""A workflow's nodes: the persisted state machine of every step, task, retry and pod.

What lives here: ``Node`` (Argo's NodeStatus, with its wire names), node ids
and names as Argo forms them, the phases and their order, and the inputs the
engine reads about pods (``PodSeen``) and their outputs (``NodeOutputs``).

Each node moves Pending -> Running -> one of Succeeded, Failed, Error,
Skipped or Omitted, and never leaves a final phase: a persisted final node is
never run again, which is what makes a server restart safe.

What must not: deciding anything, or I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from meshwork.core.reconcile.podtemplate import rfc3339

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Error", "Skipped", "Omitted"]
NodeType = Literal["Pod", "Steps", "StepGroup", "DAG", "TaskGroup", "Retry", "Skipped", "Suspend"]

FINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Error", "Skipped", "Omitted"})
FAILED: frozenset[str] = frozenset({"Failed", "Error"})

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]


@lru_cache(maxsize=65536)
def node_id(workflow: str, name: str) -> str:
    """Argo's node id: the workflow name, then a 32-bit FNV-1a hash of the node name.

    The entrypoint node (whose name is the workflow's) has the workflow's name as id.
    """
    if name == workflow:
        return workflow
    h = 0x811C9DC5
    for byte in name.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow}-{h}"


@dataclass(frozen=True, slots=True)
class NodeOutputs:
    """What a finished pod produced: its stdout (``result``), its output parameters
    read from files, its exit code."""

    result: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class PodSeen:
    """A workflow pod as the engine sees it."""

    phase: str  # the pod's phase
    exit_code: int | None = None
    message: str | None = None  # why it cannot start (a waiting reason's message)
    cannot_start: bool = False  # image missing, bad spec: the node is an Error
    outputs: NodeOutputs | None = None


@dataclass(slots=True)
class Node:
    """One entry of ``status.nodes`` (Argo's NodeStatus)."""

    id: str
    name: str
    display_name: str
    type: str
    phase: str = "Pending"
    template_name: str | None = None
    boundary_id: str | None = None
    children: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None
    inputs: list[tuple[str, str]] = field(default_factory=list)
    result: str | None = None
    out_parameters: list[tuple[str, str]] = field(default_factory=list)
    exit_code: str | None = None
    out_artifacts: list[tuple[str, str]] = field(default_factory=list)  # name, where it is kept

    @property
    def fulfilled(self) -> bool:
        return self.phase in FINAL

    def finish(self, phase: str, now: float, message: str | None = None) -> None:
        self.phase = phase
        if self.finished_at is None:
            self.finished_at = rfc3339(now)
        if message is not None:
            self.message = message

    def to_wire(self) -> dict[str, Json]:
        out: dict[str, Json] = {"id": self.id, "name": self.name, "displayName": self.display_name,
                                "type": self.type, "phase": self.phase}  # fmt: skip
        if self.template_name:
            out["templateName"] = self.template_name
        if self.boundary_id:
            out["boundaryID"] = self.boundary_id
        if self.children:
            out["children"] = list(self.children)
        for key, value in (("startedAt", self.started_at), ("finishedAt", self.finished_at),
                           ("message", self.message)):  # fmt: skip
            if value is not None:
                out[key] = value
        if self.inputs:
            out["inputs"] = {"parameters": [{"name": n, "value": v} for n, v in self.inputs]}
        outputs: dict[str, Json] = {}
        if self.result is not None:
            outputs["result"] = self.result
        if self.out_parameters:
            outputs["parameters"] = [{"name": n, "value": v} for n, v in self.out_parameters]
        if self.out_artifacts:
            outputs["artifacts"] = [{"name": n, "path": p} for n, p in self.out_artifacts]
        if self.exit_code is not None:
            outputs["exitCode"] = self.exit_code
        if outputs:
            out["outputs"] = outputs
        return out

    @classmethod
    def from_wire(cls, raw: dict[str, Json]) -> Node:
        def text(key: str) -> str | None:
            value = raw.get(key)
            return value if isinstance(value, str) else None

        def pairs(section: Json, key: str = "parameters", value: str = "value") -> list[tuple[str, str]]:
            if not isinstance(section, dict) or not isinstance(section.get(key), list):
                return []
            params = section[key]
            assert isinstance(params, list)
            return [(str(p.get("name")), str(p.get(value, ""))) for p in params if isinstance(p, dict)]

        outputs = raw.get("outputs")
        outs = outputs if isinstance(outputs, dict) else {}
        children = raw.get("children")
        result = outs.get("result")
        exit_code = outs.get("exitCode")
        return cls(
            id=text("id") or "", name=text("name") or "", display_name=text("displayName") or "",
            type=text("type") or "Pod", phase=text("phase") or "Pending",
            template_name=text("templateName"), boundary_id=text("boundaryID"),
            children=[str(c) for c in children] if isinstance(children, list) else [],
            started_at=text("startedAt"), finished_at=text("finishedAt"), message=text("message"),
            inputs=pairs(raw.get("inputs")), result=result if isinstance(result, str) else None,
            out_parameters=pairs(outputs), out_artifacts=pairs(outputs, "artifacts", "path"), exit_code=str(exit_code) if exit_code is not None else None,
        )  # fmt: skip


def item_label(item: Json) -> str:
    """How an item shows in a node name: strings as written, the rest as compact JSON."""
    if isinstance(item, str):
        return item
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, float) and item.is_integer():
        return str(int(item))
    return json.dumps(item, separators=(",", ":"), sort_keys=True)
