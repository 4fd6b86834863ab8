"""What `meshwork wf` prints and which nodes `wf retry` resets."""

from __future__ import annotations

from typing import Any

from meshwork.cli.workflow_view import list_row, retry_status, tree_rows


def _node(nid: str, name: str, display: str, kind: str, phase: str, children: list[str] | None = None,
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"id": nid, "name": name, "displayName": display, "type": kind, "phase": phase,
            "children": children or [], "startedAt": "2026-01-01T00:00:00Z", **extra}  # fmt: skip


def _wf(phase: str = "Failed") -> dict[str, Any]:
    nodes = {
        "w": _node("w", "w", "w", "Steps", phase, ["g0", "g1"], templateName="main"),
        "g0": _node("g0", "w[0]", "[0]", "StepGroup", "Succeeded", ["a"]),
        "a": _node("a", "w[0].a", "a", "Pod", "Succeeded", finishedAt="2026-01-01T00:00:03Z"),
        "g1": _node("g1", "w[1]", "[1]", "StepGroup", "Failed", ["b", "c"]),
        "b": _node("b", "w[1].b", "b", "Pod", "Failed", message="Error (exit code 1)"),
        "c": _node("c", "w[1].c", "c", "Skipped", "Skipped"),
    }
    return {"metadata": {"name": "w", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {}, "status": {"phase": phase, "startedAt": "2026-01-01T00:00:00Z",
                                   "finishedAt": "2026-01-01T00:00:05Z", "message": "child failed", "nodes": nodes}}  # fmt: skip


def test_tree_hides_step_groups_and_draws_branches() -> None:
    rows = tree_rows(_wf(), now=0)
    assert [(icon, step) for icon, step, *_ in rows] == [("✖", "w"), ("✔", "├─a"), ("✖", "├─b"), ("○", "└─c")]
    assert rows[1][3] == "a" and rows[1][4] == "3s"  # pod name, duration
    assert rows[2][5] == "Error (exit code 1)"


def test_list_row() -> None:
    assert list_row(_wf(), now=1767225610.0) == ("w", "Failed", "10s", "5s", "child failed")


def test_retry_forgets_what_did_not_succeed_and_keeps_the_rest() -> None:
    status, pods = retry_status(_wf()["status"])
    assert pods == ["b"]
    assert set(status["nodes"]) == {"g0", "a", "c"}
    assert status["phase"] == "Running" and "finishedAt" not in status and "message" not in status
