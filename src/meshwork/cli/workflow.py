"""``meshwork submit`` and ``meshwork wf``: Argo Workflows from the command line.

What lives here: the click commands and their reads and writes. ``submit
FILE [--watch]`` creates the Workflows in FILE (``-p name=value`` overrides
their arguments) and, with ``--watch``, shows the node tree updating in place
until the workflow ends (its exit code: 0 when it Succeeded). ``wf
list|get|logs|delete|suspend|resume|stop|terminate|retry`` act as ``argo``'s
commands of the same names. What to print is decided in ``workflow_view``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.workflow_view import FINISHED, header, list_row, now_utc, retry_status, tree_rows
from meshwork.client import Client
from meshwork.errors import NotFound
from meshwork.model.kinds import REGISTRY, KindInfo

WATCH_POLL_S = 0.5  # how often --watch re-reads the workflow
RETRY_POD_WAIT_S = 30.0  # how long `wf retry` waits for the reset nodes' pods to go

namespace_option = click.option("-n", "--namespace", default=None, help="The namespace (default: the config's).")


def _info() -> KindInfo:
    import meshwork.model.argo_workflows  # noqa: F401  (registers the Argo kinds)

    return REGISTRY.require("argoproj.io", "Workflow")


def _table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def render(wf: dict[str, Any], now: float) -> str:
    """The text of ``wf get``: the header, then the node tree."""
    lines = [f"{label:<14}{value}" for label, value in header(wf, now)]
    rows = [(f"{icon} {step}", tmpl, pod, dur, msg) for icon, step, tmpl, pod, dur, msg in tree_rows(wf, now)]
    if rows:
        lines += ["", _table(rows, ("STEP", "TEMPLATE", "PODNAME", "DURATION", "MESSAGE"))]
    return "\n".join(lines)


def _documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def _with_parameters(body: dict[str, Any], parameters: tuple[str, ...]) -> dict[str, Any]:
    if not parameters:
        return body
    spec = body.setdefault("spec", {})
    args = spec.setdefault("arguments", {})
    params: list[dict[str, Any]] = args.setdefault("parameters", [])
    for item in parameters:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="-p")
        for p in params:
            if p.get("name") == name:
                p["value"] = value
                break
        else:
            params.append({"name": name, "value": value})
    return body


def watch(client: Client, namespace: str, name: str) -> dict[str, Any]:
    """Show the workflow's tree, updating in place, until it finishes; the last state."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    info = _info()
    console = Console()
    wf = client.get(info, namespace, name)
    if not console.is_terminal:  # no in-place updates into a pipe: the final tree only
        while not _finished(wf):
            time.sleep(WATCH_POLL_S)
            wf = client.get(info, namespace, name)
        click.echo(render(wf, now_utc()))
        return wf
    with Live(Text(render(wf, now_utc())), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            live.update(Text(render(wf, now_utc())))
            if _finished(wf):
                return wf
            time.sleep(WATCH_POLL_S)
            wf = client.get(info, namespace, name)


def _finished(wf: dict[str, Any]) -> bool:
    st = wf.get("status") or {}
    return st.get("phase") in FINISHED and bool(st.get("finishedAt"))


def from_reference(ref: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Workflow ``submit --from KIND/NAME`` creates (Argo's ``argo submit --from``).

    ``workflowtemplate/NAME`` and ``clusterworkflowtemplate/NAME`` run the
    template through ``workflowTemplateRef``; ``cronworkflow/NAME`` runs the
    CronWorkflow's ``workflowSpec`` now (``source`` is the CronWorkflow).
    """
    kind, _, name = ref.partition("/")
    kind = kind.lower()
    if not name:
        raise click.ClickException(f"--from {ref!r}: expected KIND/NAME")
    meta: dict[str, Any] = {"generateName": f"{name}-"}
    if kind in ("workflowtemplate", "workflowtemplates", "wftmpl", "clusterworkflowtemplate",
                "clusterworkflowtemplates", "cwft"):  # fmt: skip
        cluster = kind.startswith("cluster") or kind == "cwft"
        label = "workflows.argoproj.io/cluster-workflow-template" if cluster else "workflows.argoproj.io/workflow-template"
        meta["labels"] = {label: name}
        tref: dict[str, Any] = {"name": name, **({"clusterScope": True} if cluster else {})}
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": meta,
                "spec": {"workflowTemplateRef": tref}}  # fmt: skip
    if kind in ("cronworkflow", "cronworkflows", "cronwf", "cwf"):
        if source is None:
            raise click.ClickException(f"cronworkflow {name} not found")
        wmeta = (source.get("spec") or {}).get("workflowMetadata") or {}
        meta["labels"] = {**(wmeta.get("labels") or {}), "workflows.argoproj.io/cron-workflow": name}
        if wmeta.get("annotations"):
            meta["annotations"] = dict(wmeta["annotations"])
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": meta,
                "spec": dict((source.get("spec") or {}).get("workflowSpec") or {})}  # fmt: skip
    raise click.ClickException(f"--from {ref!r}: KIND must be workflowtemplate, clusterworkflowtemplate or cronworkflow")


@click.command("submit")
@click.argument("file", required=False)
@namespace_option
@click.option("-p", "--parameter", "parameters", multiple=True, help="Set an argument: -p NAME=VALUE.")
@click.option("-w", "--watch", "watch_", is_flag=True, help="Show the node tree until the workflow ends.")
@click.option("--from", "from_", default=None, metavar="KIND/NAME",
              help="Submit from a workflowtemplate, clusterworkflowtemplate or cronworkflow instead of a file.")
@reports_errors
def submit_cmd(file: str | None, namespace: str | None, parameters: tuple[str, ...], watch_: bool,
               from_: str | None) -> None:  # fmt: skip
    """Submit the Workflows in FILE (- for stdin), or one --from a template."""
    sess = session()
    client = sess.client()
    info = _info()
    created: list[tuple[str, str]] = []
    if (file is None) == (from_ is None):
        raise click.UsageError("give either FILE or --from KIND/NAME")
    if from_ is not None:
        source = None
        if from_.split("/", 1)[0].lower() in ("cronworkflow", "cronworkflows", "cronwf", "cwf"):
            source = client.get(REGISTRY.require("argoproj.io", "CronWorkflow"), sess.namespace(namespace),
                                from_.partition("/")[2])  # fmt: skip
        docs = [from_reference(from_, source)]
    else:
        assert file is not None
        docs = _documents(file)
    for doc in docs:
        if doc.get("kind") != "Workflow":
            error(f"skipping {doc.get('kind')!r}: submit takes Workflows")
            continue
        ns = namespace or (doc.get("metadata") or {}).get("namespace") or sess.namespace(None)
        out = client.create(info, ns, _with_parameters(doc, parameters))
        name = out["metadata"]["name"]
        created.append((ns, name))
        click.echo(f"workflow.argoproj.io/{name} submitted")
    if not created:
        raise click.ClickException(f"{file}: no Workflow in it")
    if watch_:
        code = 0
        for ns, name in created:
            final = watch(client, ns, name)
            code = code or (0 if (final.get("status") or {}).get("phase") == "Succeeded" else 1)
        raise SystemExit(code)


@click.group("wf")
def wf_group() -> None:
    """Argo Workflows: list, get, logs, delete, suspend, resume, stop, terminate, retry, resubmit."""


@wf_group.command("list")
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True)
@reports_errors
def list_cmd(namespace: str | None, all_namespaces: bool) -> None:
    """List workflows."""
    sess = session()
    ns = None if all_namespaces else sess.namespace(namespace)
    items = sess.client().list(_info(), ns)["items"]
    now = now_utc()
    items.sort(key=lambda w: w["metadata"].get("creationTimestamp", ""), reverse=True)
    rows = [list_row(w, now) for w in items]
    if not rows:
        click.echo("No workflows found")
        return
    click.echo(_table(rows, ("NAME", "STATUS", "AGE", "DURATION", "MESSAGE")))


@wf_group.command("get")
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json"]), default=None)
@reports_errors
def get_cmd(name: str, namespace: str | None, output: str | None) -> None:
    """Show a workflow's status and node tree."""
    sess = session()
    wf = sess.client().get(_info(), sess.namespace(namespace), name)
    if output == "yaml":
        click.echo(yaml.safe_dump(wf, sort_keys=False))
    elif output == "json":
        import json

        click.echo(json.dumps(wf, indent=2))
    else:
        click.echo(render(wf, now_utc()))


@wf_group.command("logs")
@click.argument("name")
@namespace_option
@reports_errors
def logs_cmd(name: str, namespace: str | None) -> None:
    """Print the logs of a workflow's pods, each line prefixed with its step."""
    sess = session()
    ns = sess.namespace(namespace)
    client = sess.client()
    wf = client.get(_info(), ns, name)
    nodes = ((wf.get("status") or {}).get("nodes") or {}).values()
    pods = sorted((n for n in nodes if n.get("type") == "Pod"), key=lambda n: (n.get("startedAt") or "", n["id"]))
    for node in pods:
        path = f"/api/v1/namespaces/{ns}/pods/{node['id']}/log"
        try:
            text = b"".join(client.stream("GET", path)).decode(errors="replace")
        except NotFound:
            continue
        for line in text.splitlines():
            click.echo(f"{node.get('displayName', node['id'])}: {line}")


@wf_group.command("delete")
@click.argument("names", nargs=-1, required=True)
@namespace_option
@reports_errors
def delete_cmd(names: tuple[str, ...], namespace: str | None) -> None:
    """Delete workflows (their pods go with them)."""
    sess = session()
    for name in names:
        sess.client().delete(_info(), sess.namespace(namespace), name, propagation_policy="Background")
        click.echo(f"Workflow '{name}' deleted")


def _patch_spec(name: str, namespace: str | None, patch: dict[str, Any], done: str) -> None:
    sess = session()
    sess.client().patch(_info(), sess.namespace(namespace), name, {"spec": patch})
    click.echo(f"workflow {name} {done}")


@wf_group.command("suspend")
@click.argument("name")
@namespace_option
@reports_errors
def suspend_cmd(name: str, namespace: str | None) -> None:
    """Start no new step until resumed (running steps finish)."""
    _patch_spec(name, namespace, {"suspend": True}, "suspended")


@wf_group.command("resume")
@click.argument("name")
@namespace_option
@reports_errors
def resume_cmd(name: str, namespace: str | None) -> None:
    """Resume a suspended workflow, and finish its waiting suspend steps."""
    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)
    info = _info()
    client.patch(info, ns, name, {"spec": {"suspend": None}})
    wf = client.get(info, ns, name)
    st = wf.get("status") or {}
    changed = False
    for node in (st.get("nodes") or {}).values():
        if node.get("type") == "Suspend" and node.get("phase") in ("Pending", "Running"):
            node["phase"] = "Succeeded"
            node["finishedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            changed = True
    if changed:
        client.update(info, ns, wf, subresource="status")
    click.echo(f"workflow {name} resumed")


@wf_group.command("stop")
@click.argument("name")
@namespace_option
@reports_errors
def stop_cmd(name: str, namespace: str | None) -> None:
    """Stop the workflow: running steps are killed, the exit handler still runs."""
    _patch_spec(name, namespace, {"shutdown": "Stop"}, "stopped")


@wf_group.command("terminate")
@click.argument("name")
@namespace_option
@reports_errors
def terminate_cmd(name: str, namespace: str | None) -> None:
    """Terminate the workflow: running steps are killed, no exit handler runs."""
    _patch_spec(name, namespace, {"shutdown": "Terminate"}, "terminated")


@wf_group.command("retry")
@click.argument("name")
@namespace_option
@click.option("-w", "--watch", "watch_", is_flag=True, help="Show the node tree until the workflow ends.")
@reports_errors
def retry_cmd(name: str, namespace: str | None, watch_: bool) -> None:
    """Run a finished workflow's failed steps again (succeeded steps are kept)."""
    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)
    info = _info()
    wf = client.get(info, ns, name)
    st = wf.get("status") or {}
    if st.get("phase") not in ("Failed", "Error"):
        raise click.ClickException(f"workflow {name} has not failed (phase {st.get('phase') or 'Pending'})")
    if (wf.get("spec") or {}).get("shutdown"):
        client.patch(info, ns, name, {"spec": {"shutdown": None}})
        wf = client.get(info, ns, name)
    status, pods = retry_status(wf.get("status") or {})
    pod_info = REGISTRY.require("", "Pod")
    for pod in pods:
        try:
            client.delete(pod_info, ns, pod, grace_period_seconds=0)
        except NotFound:
            pass
    deadline = time.monotonic() + RETRY_POD_WAIT_S
    while time.monotonic() < deadline:
        left = [p for p in pods if _exists(client, pod_info, ns, p)]
        if not left:
            break
        time.sleep(0.2)
    else:
        raise click.ClickException(f"pods {', '.join(left)} are still there after {RETRY_POD_WAIT_S:.0f}s")
    wf["status"] = status
    client.update(info, ns, wf, subresource="status")
    click.echo(f"workflow {name} retried ({len(pods)} pod(s) reset)")
    if watch_:
        final = watch(client, ns, name)
        raise SystemExit(0 if (final.get("status") or {}).get("phase") == "Succeeded" else 1)


def _exists(client: Client, info: KindInfo, ns: str, name: str) -> bool:
    try:
        client.get(info, ns, name)
    except NotFound:
        return False
    return True


# Labels and annotations a resubmitted workflow must not inherit: they describe the old run.
_RUN_LABELS = ("workflows.argoproj.io/completed", "workflows.argoproj.io/phase", "workflows.argoproj.io/resubmitted-from-workflow")
_RUN_ANNOTATIONS = ("meshwork.io/admitted-by", "meshwork.io/admitted-flavors")


def resubmit_body(wf: dict[str, Any]) -> dict[str, Any]:
    """The new Workflow ``wf resubmit`` creates: the same spec, a new name, no status
    (Argo's FormulateResubmitWorkflow without memoization)."""
    meta = wf.get("metadata") or {}
    name = meta.get("name", "")
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _RUN_LABELS}
    labels["workflows.argoproj.io/resubmitted-from-workflow"] = name
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _RUN_ANNOTATIONS}
    spec = dict(wf.get("spec") or {})
    spec.pop("shutdown", None)  # a stopped workflow's copy runs
    new_meta: dict[str, Any] = {"generateName": meta.get("generateName") or f"{name}-", "labels": labels}
    if annotations:
        new_meta["annotations"] = annotations
    return {"apiVersion": wf.get("apiVersion", "argoproj.io/v1alpha1"), "kind": "Workflow", "metadata": new_meta,
            "spec": spec}  # fmt: skip


@wf_group.command("resubmit")
@click.argument("name")
@namespace_option
@click.option("-w", "--watch", "watch_", is_flag=True, help="Show the node tree until the workflow ends.")
@reports_errors
def resubmit_cmd(name: str, namespace: str | None, watch_: bool) -> None:
    """Run a workflow again from the start, as a new workflow."""
    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)
    info = _info()
    out = client.create(info, ns, resubmit_body(client.get(info, ns, name)))
    new = out["metadata"]["name"]
    click.echo(f"workflow.argoproj.io/{new} submitted (resubmitted from {name})")
    if watch_:
        final = watch(client, ns, new)
        raise SystemExit(0 if (final.get("status") or {}).get("phase") == "Succeeded" else 1)
