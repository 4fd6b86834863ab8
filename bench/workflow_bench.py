"""Workflow benchmark: a DAG of trivial steps, end to end on a real server and agent.

The DAG has ``--tasks`` tasks in layers of ``--width``; each task depends on
one task of the layer before (chains side by side), and runs ``true``. The
workflow runs with ``parallelism`` = width. Reported:

* end-to-end time, submit → workflow Succeeded (the status' finishedAt seen here);
* the reference: the same number of pods' commands spawned directly by this
  bench, ``width`` at a time, through the same executor
  (``python -m meshwork.examples.argoexec -- true``): the floor with no
  orchestrator;
* orchestration overhead per task = (end-to-end - reference) / tasks: the wall
  time the orchestrator adds for each task (aim ≤ 50 ms); and the same
  difference per layer (tasks / width layers run one after another), the
  latency one task's completion takes to start its successor.

Run: ``.venv/bin/python -m bench.workflow_bench`` (``--tasks 200`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.agent_bench import running_server, wait_for

WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/default/workflows"


def dag(tasks: int, width: int) -> dict[str, Any]:
    spec = []
    for i in range(tasks):
        task: dict[str, Any] = {"name": f"t{i}", "template": "noop"}
        if i >= width:
            task["depends"] = f"t{i - width}"
        spec.append(task)
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "bench"},
            "spec": {"entrypoint": "main", "parallelism": width, "templates": [
                {"name": "main", "dag": {"tasks": spec}},
                {"name": "noop", "container": {"image": "busybox", "command": ["true"]}}]}}  # fmt: skip


def direct(tasks: int, width: int) -> float:
    """The same executor runs, ``width`` at a time, with no orchestrator."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MESHWORK_ARTIFACTS": tmp}
        argv = [sys.executable, "-m", "meshwork.examples.argoexec", "--image", "busybox", "--", "true"]

        def one(i: int) -> None:
            subprocess.run(argv, env={**env, "MESHWORK_NODE_ID": f"n{i}"}, check=True, stdout=subprocess.DEVNULL)

        start = time.monotonic()
        with ThreadPoolExecutor(width) as pool:
            list(pool.map(one, range(tasks)))
        return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800.0)
    opts = parser.parse_args()
    reference = direct(opts.tasks, opts.width)
    with running_server("bench-wf-") as (_server, api):
        start = time.monotonic()
        status, body = api.call("POST", WORKFLOWS, dag(opts.tasks, opts.width))
        assert status == 201, body

        def done() -> dict[str, Any] | None:
            _, wf = api.call("GET", f"{WORKFLOWS}/bench")
            st = (wf or {}).get("status") or {}
            return st if st.get("phase") in ("Succeeded", "Failed", "Error") and st.get("finishedAt") else None

        st = wait_for(done, opts.timeout, "the workflow to finish")
        total = time.monotonic() - start
    per_task = (total - reference) / opts.tasks
    per_layer = (total - reference) / (opts.tasks / opts.width)
    print(f"workflow: {opts.tasks} tasks, {opts.width} wide: {st['phase']} in {total:.1f} s "
          f"({st.get('progress')})")  # fmt: skip
    print(f"reference (the same executor spawned directly, {opts.width} at a time): {reference:.1f} s")
    print(f"orchestration overhead per task: {per_task * 1000:.0f} ms (aim ≤ 50 ms); "
          f"per layer (a task's end to its successor's end): {per_layer * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
