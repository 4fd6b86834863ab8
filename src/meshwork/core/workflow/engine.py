"""The workflow engine: from a Workflow's spec, its persisted nodes and the pods
seen, the next step of the run.

What lives here: one level-triggered pass (``advance``) that walks the
templates from the entrypoint the way Argo's operator does (steps: groups one
after another, the steps of a group together; dag: each task once its
``depends`` can be decided; retries: one child per attempt, with back-off),
creating the nodes it reaches, moving each node through its phases, and
returning the pods to create or delete and when to look again.

The rules that make it safe to rerun at any time:

* a node in a final phase is never run again, and its pod is never recreated;
* a pod's name is its node's id, so creating it twice is refused by the
  store and a pod created before a crash is adopted, not run again;
* everything the pass needs is in ``status.nodes`` and the pods seen.

What must not: I/O, clocks (``now`` is given), building pod objects (``pods``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial

from meshwork.core.reconcile.podtemplate import parse_time, rfc3339
from meshwork.core.workflow.depends import (
    continues,
    dependencies,
    depends_expression,
    depends_value,
    handled,
    topological,
)
from meshwork.core.workflow.expr import ExprError, evaluate_bool, references, substitute
from meshwork.core.workflow.nodes import (
    FAILED,
    Node,
    PodSeen,
    item_label,
    node_id,
)
from meshwork.core.workflow.scope import (
    Scope,
    ScopeError,
    duration_seconds,
    expand,
    item_scope,
    publish,
    resolve_inputs,
    resolve_template,
    with_inputs,
)
from meshwork.model.argo_templates import DAGTask, RetryStrategy, Template, WorkflowStep
from meshwork.model.argo_workflows import Workflow

MSG_DEADLINE = "Step exceeded its deadline"
MSG_WF_DEADLINE = "Max duration limit exceeded"
MSG_POD_DEADLINE = "Pod was active on the node longer than the specified deadline"
MSG_NO_RETRIES = "No more retries left"
MSG_POD_DELETED = "pod deleted"
ARTIFACT_ARG = "artifact:"  # an input artifact among a call's arguments (parameters have no ':')
DEFAULT_RETRY_POLICY = "OnFailure"  # Argo's default retryPolicy


@dataclass(frozen=True, slots=True)
class PodRequest:
    """Create the pod of node ``node_id`` running ``template`` (its references resolved)."""

    node_id: str
    node_name: str
    template: Template
    deadline: float | None = None


@dataclass(slots=True)
class Plan:
    """What one pass decided."""

    nodes: dict[str, Node]
    phase: str
    message: str | None
    started_at: str | None
    finished_at: str | None
    create: list[PodRequest] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    wake_at: float | None = None

    @property
    def progress(self) -> str:
        pods = [n for n in self.nodes.values() if n.type == "Pod"]
        return f"{sum(1 for n in pods if n.phase == 'Succeeded')}/{len(pods)}"


def _retry_limit(strategy: RetryStrategy) -> int | None:
    if strategy.limit is None:
        return None
    try:
        return int(str(strategy.limit))
    except ValueError:
        return 0


class _Pass:
    def __init__(self, wf: Workflow, pods: dict[str, PodSeen], now: float) -> None:
        self.wf = wf
        self.name = wf.metadata.name or ""
        self.pods = pods
        self.now = now
        raw = (wf.status.nodes if wf.status else None) or {}
        self.nodes = {k: Node.from_wire(v.model_dump(mode="json", by_alias=True)) for k, v in raw.items()}
        self.templates = {t.name: t for t in wf.spec.templates or [] if t.name}
        self.create: list[PodRequest] = []
        self.delete: list[str] = []
        self.wake: list[float] = []
        self.linked: dict[str, set[str]] = {}  # parent id -> its children's ids (link() is O(1))
        self.active_pods = sum(1 for n in self.nodes.values() if n.type == "Pod" and not n.fulfilled)
        self.stopping: str | None = None  # a message: new work is not started, running pods stop
        self.suspended = bool(wf.spec.suspend)
        self.globals: Scope = {
            "workflow.name": self.name,
            "workflow.namespace": wf.metadata.namespace or "default",
            "workflow.uid": wf.metadata.uid or "",
            "workflow.serviceAccountName": wf.spec.service_account_name or "default",
        }
        for param in (wf.spec.arguments.parameters if wf.spec.arguments else None) or []:
            value = param.value if param.value is not None else param.default
            if value is not None:
                self.globals[f"workflow.parameters.{param.name}"] = value
        if wf.metadata.creation_timestamp:
            self.globals["workflow.creationTimestamp"] = wf.metadata.creation_timestamp
        scheduled = (wf.metadata.annotations or {}).get("workflows.argoproj.io/scheduled-time")
        if scheduled:  # set by the CronWorkflow that submitted it
            self.globals["workflow.scheduledTime"] = scheduled

    # -- nodes -------------------------------------------------------------

    def node(self, name: str, display: str, kind: str, boundary: str | None, template: str | None) -> Node:
        nid = node_id(self.name, name)
        found = self.nodes.get(nid)
        if found is not None:
            return found
        node = Node(id=nid, name=name, display_name=display, type=kind, boundary_id=boundary,
                    template_name=template, started_at=rfc3339(self.now))  # fmt: skip
        self.nodes[nid] = node
        return node

    def existing(self, name: str) -> Node | None:
        return self.nodes.get(node_id(self.name, name))

    def link(self, parent: Node | None, child: Node) -> None:
        if parent is None:
            return
        known = self.linked.get(parent.id)
        if known is None:
            known = self.linked[parent.id] = set(parent.children)
        if child.id not in known:
            known.add(child.id)
            parent.children.append(child.id)

    def can_start_pod(self) -> bool:
        if self.stopping is not None or self.suspended:
            return False
        limit = self.wf.spec.parallelism
        return limit is None or limit <= 0 or self.active_pods < limit

    def template(self, ref: str | None, inline: Template | None) -> Template:
        if inline is not None:
            return inline
        if ref is None or ref not in self.templates:
            raise ScopeError(f"template {ref!r} not found")
        return self.templates[ref]

    # -- running a template as a node --------------------------------------

    def execute(self, name: str, display: str, template: Template, arguments: dict[str, str],
                boundary: str | None, parent: Node | None, scope: Scope) -> Node | None:  # fmt: skip
        """Run ``template`` as node ``name``; None when it cannot start yet (parallelism)."""
        found = self.existing(name)
        if found is not None and found.fulfilled:
            return found
        strategy = template.retry_strategy
        if strategy is None and (template.container is not None or template.script is not None):
            strategy = self.wf.spec.retry_strategy
        if strategy is not None:
            return self.execute_retry(name, display, template, arguments, boundary, parent, scope, strategy)
        return self.execute_body(name, display, template, arguments, boundary, parent, scope)

    def execute_body(self, name: str, display: str, template: Template, arguments: dict[str, str],
                     boundary: str | None, parent: Node | None, scope: Scope) -> Node | None:  # fmt: skip
        found = self.existing(name)
        if found is not None and found.fulfilled:
            return found
        is_pod = template.container is not None or template.script is not None
        if found is None and is_pod and not self.can_start_pod():
            return None
        kind = ("Pod" if is_pod else "Steps" if template.steps is not None else "DAG" if template.dag is not None
                else "Suspend" if template.suspend is not None else "Pod")  # fmt: skip
        node = self.node(name, display, kind, boundary, template.name)
        if found is None and is_pod:
            self.active_pods += 1
        self.link(parent, node)
        try:
            inputs = resolve_inputs(template, arguments)
        except ScopeError as exc:
            node.finish("Error", self.now, str(exc))
            return node
        node.inputs = inputs
        inner = with_inputs(scope, inputs)
        for key, value in arguments.items():
            if key.startswith(ARTIFACT_ARG):
                inner[f"inputs.artifacts.{key[len(ARTIFACT_ARG):]}.from"] = value
        if is_pod:
            self.run_pod(node, template, inner)
        elif template.steps is not None:
            self.run_steps(node, template, inner)
        elif template.dag is not None:
            self.run_dag(node, template, inner)
        elif template.suspend is not None:
            self.run_suspend(node, template)
        else:
            node.finish("Error", self.now, f"template {template.name!r}: this template type is not supported")
        return node

    # -- pods ----------------------------------------------------------------

    def run_pod(self, node: Node, template: Template, scope: Scope) -> None:
        scope = {**scope, "pod.name": node.id, "node.name": node.name}
        seen = self.pods.get(node.id)
        deadline = duration_seconds(substitute(str(template.active_deadline_seconds), scope)) \
            if template.active_deadline_seconds is not None else None  # fmt: skip
        if self.stopping is not None:
            if seen is None or seen.phase not in ("Succeeded", "Failed"):
                if seen is not None:
                    self.delete.append(node.id)
                node.finish("Failed", self.now, self.stopping)
                self.active_pods -= 1
                return
        if seen is None:
            if node.phase == "Running":
                node.finish("Error", self.now, MSG_POD_DELETED)
                self.active_pods -= 1
                return
            if not any(r.node_id == node.id for r in self.create):
                self.create.append(PodRequest(node.id, node.name, resolve_template(template, scope), deadline))
            return
        if seen.phase == "Succeeded":
            self.pod_succeeded(node, template, seen)
            return
        if seen.phase == "Failed":
            code = seen.exit_code
            if seen.outputs is not None and seen.outputs.result is not None:
                node.result = seen.outputs.result
            node.exit_code = str(code) if code is not None else None
            msg = f"Error (exit code {code})" if code is not None else (seen.message or "pod failed")
            node.finish("Failed", self.now, msg)
            self.active_pods -= 1
            return
        if seen.cannot_start:
            self.delete.append(node.id)
            node.finish("Error", self.now, seen.message or "pod cannot start")
            self.active_pods -= 1
            return
        if seen.phase == "Running":
            node.phase = "Running"
        started = parse_time(node.started_at)
        if deadline is not None and started is not None:
            if self.now >= started + deadline:
                self.delete.append(node.id)
                node.finish("Failed", self.now, MSG_POD_DEADLINE)
                self.active_pods -= 1
            else:
                self.wake.append(started + deadline)

    def pod_succeeded(self, node: Node, template: Template, seen: PodSeen) -> None:
        outputs = seen.outputs
        produced = dict(outputs.parameters) if outputs else {}
        node.result = outputs.result if outputs else None
        node.exit_code = "0"
        params: list[tuple[str, str]] = []
        for param in (template.outputs.parameters if template.outputs else None) or []:
            value: str | None = param.value
            source = param.value_from
            if source is not None and source.path is not None:
                value = produced.get(param.name, source.default)
                if value is None:
                    self.active_pods -= 1
                    node.finish("Error", self.now, f"failed to get output parameter {param.name!r} from {source.path}")
                    return
            elif source is not None and source.default is not None and value is None:
                value = source.default
            if value is not None:
                params.append((param.name, value))
        node.out_parameters = params
        node.out_artifacts = [(a.name, f"{node.id}/artifacts/{a.name}")
                              for a in (template.outputs.artifacts if template.outputs else None) or [] if a.path]
        node.finish("Succeeded", self.now)
        self.active_pods -= 1

    # -- retries ---------------------------------------------------------------

    def execute_retry(self, name: str, display: str, template: Template, arguments: dict[str, str],
                      boundary: str | None, parent: Node | None, scope: Scope,
                      strategy: RetryStrategy, again: bool = True) -> Node | None:  # fmt: skip
        node = self.existing(name)
        if node is None:
            if (template.container is not None or template.script is not None) and not self.can_start_pod():
                return None
            node = self.node(name, display, "Retry", boundary, template.name)
        self.link(parent, node)
        node.phase = "Running" if node.phase == "Pending" else node.phase
        attempts = [self.nodes[c] for c in node.children if c in self.nodes]
        last = attempts[-1] if attempts else None
        if last is not None and last.fulfilled:
            if last.phase in ("Succeeded", "Skipped", "Omitted"):
                self.adopt(node, last)
                node.finish(last.phase, self.now, last.message)
                return node
            verdict = self.may_retry(strategy, attempts, last)
            if isinstance(verdict, str):
                self.adopt(node, last)
                node.finish(last.phase, self.now, verdict)
                return node
            if verdict > self.now:
                self.wake.append(verdict)
                node.message = f"Backoff for {int(verdict - self.now + 0.999)}s"
                return node
        count = len(attempts) if last is None or last.fulfilled else len(attempts) - 1
        attempt_scope = {**scope, "retries": str(count)}
        child = self.execute_body(f"{name}({count})", f"{display}({count})", template, arguments,
                                  node.id if template.steps or template.dag else boundary, node,
                                  attempt_scope)  # fmt: skip
        if child is not None and child.fulfilled and child.phase == "Succeeded":
            self.adopt(node, child)
            node.finish("Succeeded", self.now)
        elif child is not None and child.fulfilled and again:
            # The attempt failed in this pass: decide on the next one now, not a pass later.
            return self.execute_retry(name, display, template, arguments, boundary, parent, scope, strategy, False)
        node.message = None if child is not None and not child.fulfilled else node.message
        return node

    def adopt(self, node: Node, child: Node) -> None:
        node.result, node.out_parameters, node.exit_code = child.result, child.out_parameters, child.exit_code
        node.out_artifacts = child.out_artifacts

    def may_retry(self, strategy: RetryStrategy, attempts: list[Node], last: Node) -> float | str:
        """When the next attempt may start, or why there is none."""
        if self.stopping is not None:
            return self.stopping
        policy = strategy.retry_policy or DEFAULT_RETRY_POLICY
        if policy == "OnFailure" and last.phase != "Failed":
            return last.message or last.phase
        if policy in ("OnError", "OnTransientError") and last.phase != "Error":
            return last.message or last.phase
        limit = _retry_limit(strategy)
        if limit is not None and len(attempts) > limit:
            return MSG_NO_RETRIES
        backoff = strategy.backoff
        if backoff is None:
            return self.now
        try:
            base = duration_seconds(backoff.duration) or 0.0
            factor = float(str(backoff.factor)) if backoff.factor is not None else 1.0
            cap = duration_seconds(backoff.cap)
            max_duration = duration_seconds(backoff.max_duration)
        except (ScopeError, ValueError) as exc:
            return f"invalid retry backoff: {exc}"
        first = parse_time(attempts[0].started_at) or self.now
        if max_duration is not None and self.now - first >= max_duration:
            return f"{MSG_NO_RETRIES}: max duration limit exceeded"
        delay = base * factor ** (len(attempts) - 1)
        if cap is not None:
            delay = min(delay, cap)
        finished = parse_time(last.finished_at) or self.now
        return finished + delay

    # -- suspend ---------------------------------------------------------------

    def run_suspend(self, node: Node, template: Template) -> None:
        node.phase = "Running"
        assert template.suspend is not None
        wait = duration_seconds(template.suspend.duration) if template.suspend.duration else None
        started = parse_time(node.started_at) or self.now
        if wait is not None:
            if self.now >= started + wait:
                node.finish("Succeeded", self.now)
            else:
                self.wake.append(started + wait)
        if self.stopping is not None and not node.fulfilled:
            node.finish("Failed", self.now, self.stopping)

    # -- steps -----------------------------------------------------------------

    def run_steps(self, node: Node, template: Template, scope: Scope) -> None:
        node.phase = "Running"
        scope = dict(scope)
        for i, group in enumerate(template.steps or []):
            gname = f"{node.name}[{i}]"
            gnode = self.node(gname, f"[{i}]", "StepGroup", node.id, None)
            self.link(node, gnode)
            done, failure = self.run_group(gnode, group, scope, node.id, template.parallelism)
            if not done:
                gnode.phase = "Running"
                return
            if failure is not None:
                gnode.finish("Failed", self.now, failure)
                node.finish("Failed", self.now, failure)
                return
            gnode.finish("Succeeded", self.now)
            for step in group:
                children = [self.nodes[c] for c in gnode.children if c in self.nodes]
                mine = [c for c in children if c.display_name == step.name or c.display_name.startswith(f"{step.name}(")]
                expanded = any(c.display_name != step.name for c in mine)
                publish(scope, "steps", step.name or "", mine, expanded)
        self.finish_outputs(node, template, scope)

    def run_group(self, gnode: Node, group: list[WorkflowStep], scope: Scope, boundary: str,
                  parallelism: int | None) -> tuple[bool, str | None]:  # fmt: skip
        """Run one group's steps together: (all done?, why it failed)."""
        calls: list[tuple[WorkflowStep, str, str, Scope]] = []
        for step in group:
            base = f"{gnode.name}.{step.name}"
            try:
                items = expand(step.with_items, step.with_param, step.with_sequence, scope)
            except ScopeError as exc:
                err = self.node(base, step.name or "", "Skipped", boundary, step.template)
                self.link(gnode, err)
                err.finish("Error", self.now, str(exc))
                continue
            if items is None:
                calls.append((step, base, step.name or "", scope))
            else:
                for j, item in enumerate(items):
                    label = f"{step.name}({j}:{item_label(item)})"
                    calls.append((step, f"{gnode.name}.{label}", label, item_scope(scope, item)))
        active = sum(1 for c in gnode.children if c in self.nodes and not self.nodes[c].fulfilled)
        for step, name, display, inner in calls:
            found = self.existing(name)
            if found is not None and found.fulfilled:
                continue
            if found is None and parallelism and active >= parallelism:
                continue
            started = self.call(step, name, display, gnode, boundary, inner)
            if started is not None and found is None and not started.fulfilled:
                active += 1
        return self.group_state(gnode, [name for _, name, _, _ in calls], {name: s for s, name, _, _ in calls})

    def group_state(self, gnode: Node, names: list[str],
                    calls: dict[str, WorkflowStep | DAGTask]) -> tuple[bool, str | None]:  # fmt: skip
        failure: str | None = None
        for child_id in gnode.children:
            child = self.nodes.get(child_id)
            if child is not None and child.phase in FAILED and child.name not in calls:
                failure = failure or f"child '{child.id}' errored: {child.message}"
        for name in names:
            child = self.existing(name)
            if child is None or not child.fulfilled:
                return False, None
            if child.phase in FAILED and not continues(calls[name], child.phase):
                failure = failure or f"child '{child.id}' failed"
        return True, failure

    def call(self, step: WorkflowStep | DAGTask, name: str, display: str, parent: Node, boundary: str,
             scope: Scope) -> Node | None:  # fmt: skip
        """Run one step or task: its ``when``, then its template with its arguments."""
        found = self.existing(name)
        if found is None and step.when is not None:
            condition = substitute(step.when, scope)
            try:
                run = evaluate_bool(condition, None)
            except ExprError as exc:
                node = self.node(name, display, "Skipped", boundary, step.template)
                self.link(parent, node)
                node.finish("Error", self.now, f"invalid 'when' expression {condition!r}: {exc}")
                return node
            if not run:
                node = self.node(name, display, "Skipped", boundary, step.template)
                self.link(parent, node)
                node.finish("Skipped", self.now, f"when '{condition}' evaluated false")
                return node
        try:
            template = self.template(step.template, step.inline)
        except ScopeError as exc:
            node = self.node(name, display, "Skipped", boundary, step.template)
            self.link(parent, node)
            node.finish("Error", self.now, str(exc))
            return node
        arguments = {p.name: substitute(p.value if p.value is not None else (p.default or ""), scope)
                     for p in (step.arguments.parameters if step.arguments else None) or []}  # fmt: skip
        for art in (step.arguments.artifacts if step.arguments else None) or []:
            if art.from_:
                arguments[ARTIFACT_ARG + art.name] = substitute(art.from_, scope)
        if self.stopping is not None and found is None:
            return None
        return self.execute(name, display, template, arguments, boundary, parent, self.globals_with(scope))

    def globals_with(self, scope: Scope) -> Scope:
        """The scope a called template starts from: the workflow's globals only."""
        return dict(self.globals)

    # -- dag -------------------------------------------------------------------

    def run_dag(self, node: Node, template: Template, scope: Scope) -> None:
        node.phase = "Running"
        assert template.dag is not None
        tasks = {t.name: t for t in template.dag.tasks}
        scope = dict(scope)
        fail_fast = template.dag.fail_fast is not False
        failed_unhandled = False
        waiting = False
        active = sum(1 for c in node.children if c in self.nodes and not self.nodes[c].fulfilled)
        for task in topological(template.dag.tasks):
            tname = f"{node.name}.{task.name}"
            found = self.existing(tname)
            if found is None or not found.fulfilled:
                deps = dependencies(task)
                states = {d: self.task_nodes(node, d) for d in deps if d in tasks}
                if any(not ns or not ns[0].fulfilled for ns in states.values()):
                    waiting = True
                    continue
                expression = depends_expression(task)
                if expression and found is None:
                    try:
                        ok = evaluate_bool(expression, partial(depends_value, states=states))
                    except ExprError as exc:
                        bad = self.node(tname, task.name, "Skipped", node.id, task.template)
                        self.link(node, bad)
                        bad.finish("Error", self.now, f"invalid depends {expression!r}: {exc}")
                        continue
                    if not ok:
                        omitted = self.node(tname, task.name, "Skipped", node.id, task.template)
                        self.link(node, omitted)
                        omitted.finish("Omitted", self.now, "omitted: depends condition not met")
                        continue
                if found is None and ((fail_fast and failed_unhandled) or
                                      (template.parallelism and active >= template.parallelism)):  # fmt: skip
                    waiting = True
                    continue
                started = self.run_task(node, task, tname, scope)
                if started is None or not started.fulfilled:
                    waiting = True
                    if found is None and started is not None:
                        active += 1
            current = self.task_nodes(node, task.name)
            if current and current[0].fulfilled:
                head, kids = current[0], current[1:]
                expanded = head.type == "TaskGroup"
                publish(scope, "tasks", task.name, kids if expanded else [head], expanded)
                if head.phase in FAILED and not handled(task, head.phase, template.dag.tasks):
                    failed_unhandled = True
        if waiting:
            if not (failed_unhandled and fail_fast and self.nothing_active(node)):
                return
        if failed_unhandled:
            node.finish("Failed", self.now, "child failed")
            return
        self.finish_outputs(node, template, scope)

    def nothing_active(self, node: Node) -> bool:
        return all(self.nodes[c].fulfilled for c in node.children if c in self.nodes)

    def task_nodes(self, dag: Node, task: str) -> list[Node]:
        """A task's node, then (for an expanded task) its children."""
        head = self.existing(f"{dag.name}.{task}")
        if head is None:
            return []
        if head.type != "TaskGroup":
            return [head]
        return [head, *(self.nodes[c] for c in head.children if c in self.nodes)]

    def run_task(self, dag: Node, task: DAGTask, tname: str, scope: Scope) -> Node | None:
        try:
            items = expand(task.with_items, task.with_param, task.with_sequence, scope)
        except ScopeError as exc:
            err = self.node(tname, task.name, "Skipped", dag.id, task.template)
            self.link(dag, err)
            err.finish("Error", self.now, str(exc))
            return err
        if items is None:
            return self.call(task, tname, task.name, dag, dag.id, scope)
        group = self.node(tname, task.name, "TaskGroup", dag.id, task.template)
        self.link(dag, group)
        group.phase = "Running"
        names: list[str] = []
        for j, item in enumerate(items):
            label = f"{task.name}({j}:{item_label(item)})"
            names.append(f"{tname}({j}:{item_label(item)})")
            self.call(task, names[-1], label, group, dag.id, item_scope(scope, item))
        done, failure = self.group_state(group, names, dict.fromkeys(names, task))
        if done:
            group.finish("Failed" if failure else "Succeeded", self.now, failure)
        return group

    # -- outputs of steps and dag templates --------------------------------------

    def finish_outputs(self, node: Node, template: Template, scope: Scope) -> None:
        params: list[tuple[str, str]] = []
        for param in (template.outputs.parameters if template.outputs else None) or []:
            source = param.value_from
            value = param.value
            if source is not None and source.parameter is not None:
                value = substitute(source.parameter, scope)
                if references(value):
                    value = source.default
            if value is None and source is not None:
                value = source.default
            if value is None:
                node.finish("Error", self.now, f"could not resolve output parameter {param.name!r}")
                return
            params.append((param.name, value))
        node.out_parameters = params
        node.finish("Succeeded", self.now)


def advance(wf: Workflow, pods: dict[str, PodSeen], now: float) -> Plan:
    """One pass over ``wf``: the nodes as they now stand and what to do next.

    ``pods`` maps node id (the pod's name) to what is seen of that pod.
    """
    run = _Pass(wf, pods, now)
    status = wf.status
    phase = (status.phase if status else None) or ""
    started = (status.started_at if status else None) or rfc3339(now)
    if phase in ("Succeeded", "Failed", "Error"):
        return Plan(run.nodes, phase, status.message if status else None, started,
                    status.finished_at if status else None)  # fmt: skip
    shutdown = wf.spec.shutdown or ""
    if shutdown:
        run.stopping = f"Stopped with strategy '{shutdown}'"
    deadline = wf.spec.active_deadline_seconds
    start_time = parse_time(started) or now
    if deadline is not None:
        if now >= start_time + deadline:
            run.stopping = MSG_DEADLINE
        else:
            run.wake.append(start_time + deadline)
    entry = wf.spec.entrypoint or ""
    message: str | None = None
    try:
        main_tmpl = run.template(entry, None)
    except ScopeError as exc:
        return Plan(run.nodes, "Error", str(exc), started, rfc3339(now))
    args = {p.name: p.value or p.default or "" for p in (wf.spec.arguments.parameters if wf.spec.arguments else None) or []}
    main = run.execute(run.name, run.name, main_tmpl, args, None, None, dict(run.globals))
    if run.stopping is not None:
        _fail_unfinished(run, run.stopping)
        main = run.existing(run.name)
    if main is None or not main.fulfilled:
        return _plan(run, "Running", None, started, None)
    main_phase = main.phase if main.phase in FAILED else "Succeeded"
    message = main.message if main_phase != "Succeeded" else None
    exit_tmpl = wf.spec.on_exit
    if exit_tmpl and shutdown != "Terminate":
        deadline_hit = run.stopping == MSG_DEADLINE
        run.stopping = None  # Stop and a deadline still run the exit handler; Terminate does not
        failures = [{"displayName": n.display_name, "message": n.message or "", "templateName": n.template_name or "",
                     "phase": n.phase, "podName": n.id, "finishedAt": n.finished_at or ""}
                    for n in run.nodes.values() if n.type == "Pod" and n.phase in FAILED]  # fmt: skip
        run.globals.update({
            "workflow.status": main_phase,
            "workflow.failures": json.dumps(failures, separators=(",", ":")),
            "workflow.duration": str(int(now - start_time)),
        })  # fmt: skip
        try:
            handler = run.template(exit_tmpl, None)
        except ScopeError as exc:
            return _plan(run, "Error", str(exc), started, rfc3339(now))
        exit_node = run.execute(f"{run.name}.onExit", f"{run.name}.onExit", handler, {}, None, None, dict(run.globals))
        if exit_node is None or not exit_node.fulfilled:
            return _plan(run, "Running", None, started, None)
        if main_phase == "Succeeded" and exit_node.phase in FAILED:
            main_phase, message = exit_node.phase, exit_node.message
        if deadline_hit:
            run.stopping = MSG_DEADLINE
    if run.stopping == MSG_DEADLINE:
        message = MSG_WF_DEADLINE if main_phase != "Succeeded" else message
    elif run.stopping is not None and main_phase != "Succeeded":
        message = run.stopping
    return _plan(run, main_phase, message, started, rfc3339(now))


def _fail_unfinished(run: _Pass, message: str) -> None:
    """Stopping: once no pod of the run is active, every unfinished node fails."""
    if any(n.type == "Pod" and not n.fulfilled for n in run.nodes.values()):
        return
    for node in run.nodes.values():
        if not node.fulfilled:
            node.finish("Failed", run.now, message)


def _plan(run: _Pass, phase: str, message: str | None, started: str, finished: str | None) -> Plan:
    wake = min(run.wake) if run.wake else None
    return Plan(run.nodes, phase, message, started, finished, run.create, run.delete, wake)
