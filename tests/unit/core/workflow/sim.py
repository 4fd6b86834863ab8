"""A deterministic simulator for the engine: pods run in passes, their outcome from a rule.

Each pass applies the plan (status written, pods created or deleted); a created pod
is Running at the next pass and finishes the pass after, with what ``behave`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshwork.core.workflow.engine import Plan, PodRequest, advance
from meshwork.core.workflow.nodes import NodeOutputs, PodSeen
from meshwork.core.workflow.reconcile import status_of
from meshwork.model.argo_workflows import Workflow

CONFORMANCE = Path(__file__).resolve().parents[5] / "shared" / "conformance" / "argo-workflows" / "examples"


@dataclass
class Outcome:
    exit_code: int = 0
    result: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


Behave = Callable[[PodRequest, int], Outcome]  # (request, how many pods ran before) -> outcome


def load(name: str, **changes: Any) -> Workflow:
    raw = yaml.safe_load((CONFORMANCE / name).read_text())
    return workflow(raw, **changes)


def workflow(raw: dict[str, Any], **changes: Any) -> Workflow:
    raw = dict(raw)
    meta = dict(raw.get("metadata") or {})
    meta.setdefault("name", (meta.pop("generateName", None) or "wf-").rstrip("-") + "-x")
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", "0000-uid")
    raw["metadata"] = meta
    raw["spec"] = {**raw["spec"], **changes}
    return Workflow.model_validate(raw)


def echo(request: PodRequest, _n: int) -> Outcome:
    """Runs `echo`-like containers: the result is the joined args (as a shell echo prints)."""
    main = request.template.container or request.template.script
    assert main is not None
    argv = [*(main.command or []), *(main.args or [])]
    if argv[:2] == ["sh", "-c"] and "exit 1" in argv[2]:
        return Outcome(exit_code=1, result="intentional failure")
    text = " ".join(a for a in argv if a not in ("echo", "sh", "-c"))
    return Outcome(result=text)


@dataclass
class Sim:
    wf: Workflow
    behave: Behave = echo
    now: float = 1_000_000.0
    pods: dict[str, tuple[PodRequest, str, Outcome | None]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # node names in the order their pods started
    plans: list[Plan] = field(default_factory=list)
    max_running: int = 0

    def seen(self) -> dict[str, PodSeen]:
        out = {}
        for pid, (_req, phase, oc) in self.pods.items():
            if oc is None:
                out[pid] = PodSeen(phase)
            else:
                outs = NodeOutputs(oc.result, tuple(oc.parameters.items()), oc.exit_code)
                out[pid] = PodSeen(phase, oc.exit_code, None, False, outs)
        return out

    def step(self, lose_status: bool = False) -> Plan:
        """One pass; ``lose_status``: the status write is lost (a crash after the pods were created)."""
        plan = advance(self.wf, self.seen(), self.now)
        self.plans.append(plan)
        if not lose_status:
            self.wf = self.wf.model_copy(update={"status": status_of(self.wf, plan)})
        # pods progress: Pending -> Running -> done
        for pid, (req, phase, _oc) in list(self.pods.items()):
            if phase == "Pending":
                self.pods[pid] = (req, "Running", None)
            elif phase == "Running":
                out = self.behave(req, len(self.ran))
                self.pods[pid] = (req, "Succeeded" if out.exit_code == 0 else "Failed", out)
        for pid in plan.delete:
            req, phase, _ = self.pods[pid]
            if phase in ("Pending", "Running"):
                self.pods[pid] = (req, "Failed", Outcome(exit_code=137))
        for req in plan.create:
            existing = self.pods.get(req.node_id)
            assert existing is None or existing[1] == "Pending", f"{req.node_name} asked again after it ran"
            if req.node_id not in self.pods:
                self.pods[req.node_id] = (req, "Pending", None)
                self.ran.append(req.node_name)
        running = sum(1 for _r, ph, _o in self.pods.values() if ph in ("Pending", "Running"))
        self.max_running = max(self.max_running, running)
        self.now += 1.0
        if plan.wake_at is not None and not plan.create and running == 0:
            self.now = max(self.now, plan.wake_at)
        return plan

    def run(self, limit: int = 500) -> Plan:
        for _ in range(limit):
            plan = self.step()
            if plan.phase in ("Succeeded", "Failed", "Error") and plan.finished_at:
                return plan
        raise AssertionError(f"workflow did not finish in {limit} passes: {self.wf.status}")

    def node(self, display: str) -> dict[str, Any]:
        assert self.wf.status and self.wf.status.nodes
        for raw in self.wf.status.nodes.values():
            d = raw.model_dump(by_alias=True)
            if d["displayName"] == display:
                return d
        raise KeyError(display)
