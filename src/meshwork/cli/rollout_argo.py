"""``meshwork rollout get|promote|abort|retry|terminate|set image`` and ``status``/``undo`` for Argo Rollouts.

What lives here: the subcommands that act on a Rollout the way
``kubectl argo rollouts`` does — promote removes the pause (``--full``
skips the remaining steps), abort and retry flip ``status.abort``, set image
changes a container's image — and a text view of a Rollout (strategy, step,
weights, ReplicaSets, AnalysisRuns), which ``get --watch`` redraws in place
with rich. The patches go to the status subresource, as Argo's plugin sends them.

What must not: the controller's rules (``meshwork.core.rollout``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import click

from meshwork.cli.context import reports_errors, session
from meshwork.cli.rollout import namespace_option, rollout_cmd
from meshwork.client import Client
from meshwork.model.kinds import REGISTRY

ROLLOUTS = REGISTRY.require("argoproj.io", "Rollout")
REFRESH_S = 1.0
_PREFIXES = ("rollout/", "rollouts/", "ro/", "rollouts.argoproj.io/")


def rollout_name(args: tuple[str, ...]) -> str | None:
    """The Rollout named in ``rollout/NAME``, ``ro NAME`` ...; None for anything else."""
    if len(args) == 2 and args[0] in ("rollout", "rollouts", "ro"):
        return args[1]
    if len(args) == 1:
        for prefix in _PREFIXES:
            if args[0].startswith(prefix):
                return args[0][len(prefix):]
    return None


def _name(args: tuple[str, ...]) -> str:
    return rollout_name(args) or (args[0] if len(args) == 1 else "")


def _items(client: Client, path: str) -> list[dict[str, Any]]:
    return list((client.request("GET", path) or {}).get("items") or [])


def render(ro: dict[str, Any], rss: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    """The Rollout as ``kubectl argo rollouts get`` lays it out (text)."""
    spec, st = ro.get("spec") or {}, ro.get("status") or {}
    strategy = "Canary" if (spec.get("strategy") or {}).get("canary") is not None else "BlueGreen"
    lines = [f"Name:            {ro['metadata']['name']}",
             f"Namespace:       {ro['metadata'].get('namespace', '')}",
             f"Status:          {st.get('phase', 'Progressing')}" + (f" ({st['message']})" if st.get("message") else ""),
             f"Strategy:        {strategy}"]  # fmt: skip
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
    if strategy == "Canary":
        if steps:
            lines.append(f"  Step:          {st.get('currentStepIndex', 0)}/{len(steps)}")
        weights = (st.get("canary") or {}).get("weights") or {}
        lines.append(f"  SetWeight:     {(weights.get('canary') or {}).get('weight', 0)}")
        lines.append(f"  ActualWeight:  {(weights.get('canary') or {}).get('weight', 0)}")
    else:
        bg = st.get("blueGreen") or {}
        lines.append(f"  Active:        {bg.get('activeSelector', '-')}   Preview: {bg.get('previewSelector', '-')}")
    lines.append(f"Replicas:        desired {spec.get('replicas', 1)}  current {st.get('replicas', 0)}  "
                 f"updated {st.get('updatedReplicas', 0)}  ready {st.get('readyReplicas', 0)}  "
                 f"available {st.get('availableReplicas', 0)}")  # fmt: skip
    lines.append("")
    lines.append("NAME                                   KIND         STATUS        INFO")
    stable, current = st.get("stableRS"), st.get("currentPodHash")
    for rs in sorted(rss, key=lambda r: r["metadata"]["name"]):
        h = (rs["metadata"].get("labels") or {}).get("rollouts-pod-template-hash")
        tags = [t for t, on in (("stable", h == stable), ("canary" if strategy == "Canary" else "preview",
                                                          h == current and h != stable)) if on]  # fmt: skip
        replicas = rs["spec"].get("replicas", 0)
        state = "ScaledDown" if replicas == 0 else "Healthy"
        lines.append(f"{rs['metadata']['name']:<38} ReplicaSet   {state:<13} {replicas} pods {','.join(tags)}")
    for run in sorted(runs, key=lambda r: r["metadata"]["name"]):
        rst = run.get("status") or {}
        summary = rst.get("runSummary") or {}
        info = " ".join(f"{k} {v}" for k, v in summary.items() if k != "count")
        lines.append(f"{run['metadata']['name']:<38} AnalysisRun  {rst.get('phase', 'Pending'):<13} {info}")
    return "\n".join(lines)


def _snapshot(client: Client, ns: str, name: str) -> str:
    ro = client.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}")
    uid = ro["metadata"].get("uid")

    def owned(obj: dict[str, Any]) -> bool:
        return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])

    rss = [r for r in _items(client, f"/apis/apps/v1/namespaces/{ns}/replicasets") if owned(r)]
    runs = [r for r in _items(client, f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/analysisruns") if owned(r)]
    return render(ro, rss, runs)


@rollout_cmd.command("get")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option("-w", "--watch", is_flag=True, help="Redraw in place as the Rollout progresses.")
@reports_errors
def get_cmd(args: tuple[str, ...], namespace: str | None, watch: bool) -> None:
    """Show a Rollout: step, weights, ReplicaSets and AnalysisRuns (`rollout get rollout/NAME`)."""
    sess = session()
    client, ns, name = sess.client(), sess.namespace(namespace), _name(args)
    if not watch:
        click.echo(_snapshot(client, ns, name))
        return
    from rich.live import Live
    from rich.text import Text

    with Live(Text(_snapshot(client, ns, name)), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(REFRESH_S)
                live.update(Text(_snapshot(client, ns, name)), refresh=True)
        except KeyboardInterrupt:
            pass


def _patch_status(args: tuple[str, ...], namespace: str | None, patch: dict[str, Any], done: str) -> None:
    sess = session()
    name = _name(args)
    sess.client().patch(ROLLOUTS, sess.namespace(namespace), name, {"status": patch}, subresource="status")
    click.echo(f"rollout '{name}' {done}")


@rollout_cmd.command("promote")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option("--full", is_flag=True, help="Skip the remaining steps, analysis and pauses.")
@reports_errors
def promote_cmd(args: tuple[str, ...], namespace: str | None, full: bool) -> None:
    """Resume a paused Rollout (the next step), or with --full go straight to the end."""
    patch: dict[str, Any] = {"pauseConditions": None}
    if full:
        patch["promoteFull"] = True
    _patch_status(args, namespace, patch, "fully promoted" if full else "promoted")


@rollout_cmd.command("abort")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
def abort_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """Send all traffic back to stable and scale the canary down."""
    _patch_status(args, namespace, {"abort": True}, "aborted")


@rollout_cmd.command("retry")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
def retry_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """Start an aborted Rollout's steps again."""
    _patch_status(args, namespace, {"abort": False, "currentStepIndex": 0}, "retried")


@rollout_cmd.command("terminate")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
def terminate_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """End the Rollout's running AnalysisRuns and Experiments (``spec.terminate``), as
    ``kubectl argo rollouts terminate`` does: an Experiment with no duration ends this way."""
    sess = session()
    client, ns, name = sess.client(), sess.namespace(namespace), _name(args)
    ro = client.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}")
    uid = (ro.get("metadata") or {}).get("uid")
    ended = []
    for plural in ("analysisruns", "experiments"):
        base = f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/{plural}"
        for obj in _items(client, base):
            meta = obj.get("metadata") or {}
            mine = any(r.get("uid") == uid for r in meta.get("ownerReferences") or ())
            phase = (obj.get("status") or {}).get("phase")
            if not mine or (obj.get("spec") or {}).get("terminate") or phase in ("Successful", "Failed", "Error"):
                continue
            client.request("PATCH", f"{base}/{meta['name']}", body={"spec": {"terminate": True}},
                           content_type="application/merge-patch+json")
            ended.append(meta["name"])
    click.echo(f"rollout '{name}' terminated {', '.join(ended) if ended else 'nothing (none running)'}")


@rollout_cmd.group("set")
def set_group() -> None:
    """Change a Rollout's template."""


@set_group.command("image")
@click.argument("name")
@click.argument("images", nargs=-1, required=True)
@namespace_option
@reports_errors
def set_image_cmd(name: str, images: tuple[str, ...], namespace: str | None) -> None:
    """`rollout set image NAME CONTAINER=IMAGE ...` (`*=IMAGE` for every container)."""
    sess = session()
    client, ns = sess.client(), sess.namespace(namespace)
    ro = client.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}")
    wanted = dict(pair.split("=", 1) for pair in images if "=" in pair)
    for c in ((ro.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        c["image"] = wanted.get(c["name"], wanted.get("*", c.get("image")))
    client.request("PUT", f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}", body=ro)
    click.echo(f'rollout "{name}" image updated')


ROLLOUT_REVISION = "rollout.argoproj.io/revision"
ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {}).get(ROLLOUT_REVISION, ""))
    except ValueError:
        return 0


def undo_template(ro: dict[str, Any], rss: list[dict[str, Any]], to_revision: int) -> dict[str, Any]:
    """The pod template ``rollout undo`` puts back: revision ``to_revision``'s, or (0) the one before the
    current; its ReplicaSet's hash label left out, as Argo's plugin does."""
    uid = ro["metadata"].get("uid")
    mine = sorted(((_revision(rs), rs) for rs in rss if any(o.get("uid") == uid and o.get("controller")
                   for o in rs["metadata"].get("ownerReferences") or ())), key=lambda p: p[0])  # fmt: skip
    current = (ro.get("status") or {}).get("currentPodHash")
    name = ro["metadata"]["name"]
    if to_revision:
        found = [rs for rev, rs in mine if rev == to_revision]
        if not found:
            raise click.ClickException(f"unable to find specified revision {to_revision} in history of rollout {name!r}")
        source = found[0]
    else:
        older = [rs for _, rs in mine if (rs["metadata"].get("labels") or {}).get(ROLLOUT_HASH_LABEL) != current]
        if not older:
            raise click.ClickException(f"no rollout history found for rollout {name!r}")
        source = older[-1]
    template = copy.deepcopy(source["spec"]["template"])
    labels = {k: v for k, v in ((template.get("metadata") or {}).get("labels") or {}).items() if k != ROLLOUT_HASH_LABEL}
    template.setdefault("metadata", {})["labels"] = labels
    return dict(template)


def undo(client: Client, ns: str, name: str, to_revision: int) -> None:
    """``kubectl argo rollouts undo``: the Rollout's template back to an earlier revision's."""
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}"
    ro = client.request("GET", path)
    if (ro.get("spec") or {}).get("workloadRef"):
        raise click.ClickException(f"rollout {name!r} takes its template from a workloadRef: undo its Deployment")
    rss = _items(client, f"/apis/apps/v1/namespaces/{ns}/replicasets")
    ro["spec"]["template"] = undo_template(ro, rss, to_revision)
    client.request("PUT", path, body=ro)
    click.echo(f"rollout '{name}' undo")


def follow_status(client: Client, ns: str, name: str, *, watch: bool, timeout: float) -> None:
    """``rollout status`` for a Rollout: print each new state; exit 0 when Healthy, 1 when Degraded.

    Like Argo's plugin, a Paused Rollout ends the wait (exit 0) without --watch.
    """
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = ""
    while True:
        ro = client.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}")
        st = ro.get("status") or {}
        phase, message = st.get("phase") or "Progressing", st.get("message") or ""
        line = f"{phase} - {message}" if message else phase
        if line != last:
            click.echo(line)
            last = line
        if phase == "Healthy" or (phase == "Paused" and not watch):
            return
        if phase == "Degraded":
            raise SystemExit(1)
        if deadline is not None and time.monotonic() > deadline:
            click.echo("Error: timed out waiting for the rollout", err=True)
            raise SystemExit(1)
        time.sleep(REFRESH_S)
