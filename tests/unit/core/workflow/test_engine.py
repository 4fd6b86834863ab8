"""The engine over the conformance examples and hand-made workflows, pods simulated."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.reconcile.podtemplate import parse_time
from meshwork.core.workflow.engine import PodRequest, advance
from meshwork.core.workflow.nodes import node_id

from .sim import Outcome, Sim, echo, load, workflow


def wf(templates: list[dict[str, Any]], entrypoint: str = "main", **spec: Any) -> Any:
    return workflow({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                     "spec": {"entrypoint": entrypoint, "templates": templates, **spec}})  # fmt: skip


def echo_tmpl(name: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputs": {"parameters": [{"name": "m", "default": "x"}]},
            "container": {"image": "busybox", "command": ["echo", "{{inputs.parameters.m}}"]}, **extra}  # fmt: skip


def test_hello_world_is_one_pod_named_after_the_workflow() -> None:
    sim = Sim(load("hello-world.yaml"))
    plan = sim.run()
    assert plan.phase == "Succeeded" and sim.ran == ["hello-world-x"]
    assert sim.node("hello-world-x")["outputs"]["result"] == "hello world"


def test_steps_run_group_after_group_with_argo_node_names() -> None:
    sim = Sim(load("steps.yaml"))
    assert sim.run().phase == "Succeeded"
    assert sim.ran[0] == "steps-x[0].hello1"
    assert set(sim.ran[1:]) == {"steps-x[1].hello2a", "steps-x[1].hello2b"}
    assert sim.node("hello2a")["id"] == node_id("steps-x", "steps-x[1].hello2a")
    assert parse_time(sim.node("hello2a")["startedAt"]) >= parse_time(sim.node("hello1")["finishedAt"])  # type: ignore[operator]


def test_dag_diamond() -> None:
    sim = Sim(load("dag-diamond.yaml"))
    assert sim.run().phase == "Succeeded"
    order = [n.rsplit(".", 1)[-1] for n in sim.ran]
    assert order[0] == "A" and set(order[1:3]) == {"B", "C"} and order[3] == "D"


@pytest.mark.parametrize("side", ["heads", "tails"])
def test_coinflip_runs_the_side_that_came_up(side: str) -> None:
    def behave(req: PodRequest, n: int) -> Outcome:
        return Outcome(result=side) if req.node_name.endswith("flip-coin") else echo(req, n)

    sim = Sim(load("coinflip.yaml"), behave)
    assert sim.run().phase == "Succeeded"
    other = "tails" if side == "heads" else "heads"
    assert sim.node(side)["phase"] == "Succeeded"
    assert sim.node(other)["phase"] == "Skipped"
    assert sim.node(other)["message"] == f"when '{side} == {other}' evaluated false"


def test_continue_on_failed_keeps_going() -> None:
    sim = Sim(load("continue-on-fail.yaml"))
    assert sim.run().phase == "Succeeded"
    assert sim.node("C")["phase"] == "Failed" and sim.node("D")["phase"] == "Succeeded"
    assert sim.max_running == 1  # spec.parallelism: 1


def test_dag_depends_failed_runs_and_unmet_depends_is_omitted() -> None:
    sim = Sim(load("dag-continue-on-fail.yaml"))
    plan = sim.run()
    assert plan.phase == "Failed"  # E failed and nothing handles it
    assert sim.node("D")["phase"] == "Succeeded"  # "B.Failed && C"
    assert sim.node("G")["phase"] == "Omitted"  # "E && F" with E failed


def test_exit_handler_sees_the_workflow_status() -> None:
    sim = Sim(load("exit-handlers.yaml"))
    assert sim.run().phase == "Failed"
    assert sim.node("cry")["phase"] == "Succeeded" and sim.node("celebrate")["phase"] == "Skipped"
    assert "exit-handlers-x Failed" in sim.node("notify")["outputs"]["result"]


def test_exit_handler_failure_fails_a_succeeded_workflow() -> None:
    w = wf([echo_tmpl("main"), {"name": "bye", "container": {"image": "busybox", "command": ["sh", "-c", "exit 1"]}}],
           onExit="bye")
    sim = Sim(w, lambda req, n: Outcome(exit_code=1) if "onExit" in req.node_name else Outcome(result="x"))
    assert sim.run().phase == "Failed"


@pytest.mark.parametrize(("written", "want"), [({"hello-param": "hello world"}, "hello world"), ({}, "Foobar")])
def test_output_parameter_from_a_file_or_its_default(written: dict[str, str], want: str) -> None:
    def behave(req: PodRequest, n: int) -> Outcome:
        return Outcome(parameters=written) if "generate" in req.node_name else echo(req, n)

    sim = Sim(load("output-parameter.yaml"), behave)
    assert sim.run().phase == "Succeeded"
    assert sim.node("consume-parameter")["outputs"]["result"] == want


def test_workflow_parallelism_limits_running_pods() -> None:
    sim = Sim(load("parallelism-limit.yaml"))
    assert sim.run().phase == "Succeeded"
    assert len(sim.ran) == 10 and sim.max_running == 2


def test_template_parallelism_limits_a_steps_group() -> None:
    w = wf([{"name": "main", "parallelism": 3, "steps": [[{"name": "s", "template": "echo", "withSequence": {"count": "7"},
            "arguments": {"parameters": [{"name": "m", "value": "{{item}}"}]}}]]}, echo_tmpl()])  # fmt: skip
    sim = Sim(w)
    assert sim.run().phase == "Succeeded"
    assert len(sim.ran) == 7 and sim.max_running == 3


def test_retry_succeeds_on_the_second_try_after_the_backoff() -> None:
    def behave(req: PodRequest, n: int) -> Outcome:
        return Outcome(exit_code=1) if req.node_name.endswith("(0)") else Outcome(result="ok")

    sim = Sim(load("retry-backoff.yaml"), behave)
    assert sim.run().phase == "Succeeded"
    assert sim.ran == ["retry-backoff-x(0)", "retry-backoff-x(1)"]
    first, second = sim.node("retry-backoff-x(0)"), sim.node("retry-backoff-x(1)")
    assert parse_time(second["startedAt"]) >= parse_time(first["finishedAt"]) + 1  # type: ignore[operator]
    assert sim.node("retry-backoff-x")["type"] == "Retry"


def test_retry_limit_counts_retries_not_attempts() -> None:
    sim = Sim(load("retry-on-error.yaml"), lambda req, n: Outcome(exit_code=2))
    plan = sim.run()
    assert plan.phase == "Failed" and len(sim.ran) == 3  # limit 2: the first try and two retries
    assert sim.node("retry-on-error-x")["message"] == "No more retries left"


def test_on_failure_policy_does_not_retry_an_error() -> None:
    w = wf([{"name": "main", "retryStrategy": {"limit": 3},
             "container": {"image": "nope", "command": ["x"]}}])  # fmt: skip
    sim = Sim(w)
    sim.step()  # creates the pod
    from meshwork.core.workflow.nodes import PodSeen

    plan = advance(sim.wf, {node_id("w", "w(0)"): PodSeen("Pending", None, "image missing", True)}, sim.now)
    assert plan.nodes[node_id("w", "w(0)")].phase == "Error"
    assert plan.phase == "Error" and not plan.create


def test_with_param_expands_a_json_list_from_an_earlier_step() -> None:
    w = wf([{"name": "main", "steps": [[{"name": "gen", "template": "echo"}],
            [{"name": "use", "template": "echo", "withParam": "{{steps.gen.outputs.result}}",
              "arguments": {"parameters": [{"name": "m", "value": "{{item.n}}"}]}}]]}, echo_tmpl()])  # fmt: skip

    def behave(req: PodRequest, n: int) -> Outcome:
        return Outcome(result='[{"n": "a"}, {"n": "b"}]') if req.node_name.endswith(".gen") else echo(req, n)

    sim = Sim(w, behave)
    assert sim.run().phase == "Succeeded"
    assert sorted(sim.ran[1:]) == ['w[1].use(0:{"n":"a"})', 'w[1].use(1:{"n":"b"})']
    assert sim.node('use(1:{"n":"b"})')["outputs"]["result"] == "b"


def test_workflow_active_deadline_stops_it() -> None:
    w = wf([echo_tmpl("main")], activeDeadlineSeconds=5)
    sim = Sim(w, lambda req, n: Outcome(result="never"))
    sim.step()
    sim.step()  # running
    sim.now += 10
    sim.pods = {k: (r, "Running", None) for k, (r, _p, _o) in sim.pods.items()}
    plan = advance(sim.wf, sim.seen(), sim.now)
    assert plan.delete == ["w"] and plan.phase == "Failed" and plan.message == "Max duration limit exceeded"


@pytest.mark.parametrize(("how", "exit_runs"), [("Terminate", False), ("Stop", True)])
def test_terminate_and_stop_kill_running_pods(how: str, exit_runs: bool) -> None:
    sim = Sim(wf([echo_tmpl("main"), echo_tmpl("bye")], onExit="bye"))
    sim.step()
    sim.step()  # the pod runs
    sim.wf = sim.wf.model_copy(update={"spec": sim.wf.spec.model_copy(update={"shutdown": how})})
    plan = advance(sim.wf, sim.seen(), sim.now)
    assert plan.delete == ["w"]
    assert [r.node_name for r in plan.create] == (["w.onExit"] if exit_runs else [])
    if not exit_runs:
        assert plan.phase == "Failed" and plan.message == f"Stopped with strategy '{how}'"


def test_suspended_workflow_starts_nothing() -> None:
    sim = Sim(load("steps.yaml", suspend=True))
    for _ in range(3):
        sim.step()
    assert sim.ran == [] and sim.plans[-1].phase == "Running"


def test_a_lost_status_write_never_runs_a_node_twice() -> None:
    sim = Sim(load("dag-diamond-steps.yaml"))
    for i in range(200):
        plan = sim.step(lose_status=i % 3 == 1)
        if plan.phase == "Succeeded" and plan.finished_at:
            break
    assert plan.phase == "Succeeded"
    assert len(sim.ran) == len(set(sim.ran)) == 12


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    n = draw(st.integers(1, 9))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        tasks.append((f"t{i}", [f"t{d}" for d in deps]))
    return tasks


@settings(max_examples=60, deadline=None)
@given(dags(), st.sets(st.integers(0, 8)), st.booleans())
def test_dag_never_starts_a_task_before_its_dependencies_finish(tasks: list[tuple[str, list[str]]],
                                                                failing: set[int], use_depends: bool) -> None:  # fmt: skip
    spec = []
    for name, deps in tasks:
        task: dict[str, Any] = {"name": name, "template": "echo"}
        if deps and use_depends:
            task["depends"] = " && ".join(f"({d}.Succeeded || {d}.Failed)" for d in deps)
        elif deps:
            task["dependencies"] = deps
        spec.append(task)
    w = wf([{"name": "main", "dag": {"tasks": spec, "failFast": False}}, echo_tmpl()])
    bad = {f"w.t{i}" for i in failing}
    sim = Sim(w, lambda req, n: Outcome(exit_code=1 if req.node_name in bad else 0))
    sim.run()
    nodes = {n["displayName"]: n for n in (v.model_dump(by_alias=True) for v in sim.wf.status.nodes.values())}  # type: ignore[union-attr]
    for name, deps in tasks:
        node = nodes.get(name)
        if node is None or node["phase"] == "Omitted" or f"w.{name}" not in sim.ran:
            continue
        for dep in deps:
            assert nodes[dep]["phase"] in ("Succeeded", "Failed")
            assert parse_time(node["startedAt"]) >= parse_time(nodes[dep]["finishedAt"])  # type: ignore[operator]
    assert len(sim.ran) == len(set(sim.ran))
    if use_depends:  # every outcome is accepted: everything runs
        assert len(sim.ran) == len(tasks)
