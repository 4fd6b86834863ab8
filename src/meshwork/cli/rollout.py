"""``meshwork rollout``: status, history, undo, restart, pause and resume of a Deployment.

What lives here: the click group and its subcommands, the watch loop of
``rollout status`` (follow the one Deployment, print each new state, stop on
success, failure, deletion or ``--timeout``), and the reads and patches the
other subcommands send. What to print and which patch to send is decided in
``rollout_view``.

What must not live here: kubectl's rules themselves (``rollout_view``) or HTTP
details (``meshwork.client``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import click

from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.resolve import kind_label, load_kinds, parse_targets
from meshwork.cli.rollout_view import (
    REVISION_ANNOTATION,
    HintedError,
    RolloutError,
    deployment_status,
    history_table,
    owned_by,
    parse_duration,
    restart_patch,
    revision_template,
    rollback_patch,
    rollback_source,
    template_text,
)
from meshwork.cli.wire import dig
from meshwork.client import Client
from meshwork.errors import Gone
from meshwork.model.kinds import REGISTRY, KindInfo

P = ParamSpec("P")
R = TypeVar("R")
Echo = Callable[[str], None]

# A watch the server ends at once, again and again, must not become a busy loop.
REWATCH_PAUSE_S = 1.0

namespace_option = click.option(
    "-n", "--namespace", default=None, help="The namespace (default: the config's, else `default`)."
)


def reports_rollout_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a ``HintedError`` as kubectl does (``error: ...``), then its hint; exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except HintedError as err:
            error(f"error: {err}")
            if err.hint:
                error(f"hint: {err.hint}")
            raise SystemExit(1) from None

    return wrapper


def resource_label(info: KindInfo) -> str:
    """``deployments.apps``: the resource name kubectl puts in its per-object errors."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


def deployment_names(args: tuple[str, ...], what: str, *, single: bool) -> list[str]:
    """The Deployment names in ``deployment NAME``, ``deploy/NAME``, ``deployments.apps/NAME``..."""
    load_kinds()
    targets = parse_targets(args)
    names: list[str] = []
    for target in targets:
        if (target.info.group, target.info.kind) != ("apps", "Deployment"):
            raise RolloutError(
                f'no {what} has been implemented for "{kind_label(target.info)}"',
                hint="rollout works on deployments: give deployment/NAME",
            )
        if not target.names:
            raise click.UsageError(
                "give the deployment's name: `deployment/NAME` or `deployment NAME`"
            )
        names += target.names
    if single and len(names) != 1:
        raise click.UsageError(
            f"rollout {what.split()[0]} works on one deployment at a time ({len(names)} given)"
        )
    return names


def owned_replicasets(client: Client, deploy: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets ``deploy`` controls (by controller ownerReference, as upstream finds them)."""
    namespace = dig(deploy, "metadata", "namespace")
    match = dig(deploy, "spec", "selector", "matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items())) or None
    listed = client.list(REGISTRY.require("apps", "ReplicaSet"), namespace, label_selector=selector)
    return [rs for rs in listed.get("items") or [] if isinstance(rs, dict) and owned_by(rs, deploy)]


@click.group("rollout")
def rollout_cmd() -> None:
    """Manage the rollout of a Deployment: status, history, undo, restart, pause, resume."""


# -- status -------------------------------------------------------------------------------


@contextlib.contextmanager
def _spinner(label: str) -> Iterator[None]:
    """A spinner on stderr while waiting, when both streams are terminals; else nothing.

    The states themselves go to stdout as lines, so scripts read the same thing.
    """
    if not (sys.stderr.isatty() and sys.stdout.isatty()):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(f"watching {label}... (Ctrl-C stops waiting)"):
        yield


def follow_status(
    client: Client,
    namespace: str,
    name: str,
    *,
    revision: int,
    timeout: float,
    watch: bool,
    out: Echo,
) -> None:
    """Print the rollout's state, then each new one, until it is done; raise when it cannot be.

    ``timeout`` 0 waits forever. A line is printed when the state it describes
    changes (kubectl prints one per watch event, repeats included).
    """
    info = REGISTRY.require("apps", "Deployment")
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last: str | None = None

    def show(obj: dict[str, Any]) -> bool:
        nonlocal last
        state = deployment_status(obj, revision)
        if state.message != last:
            out(state.message)
            last = state.message
        return state.done

    obj = client.get(info, namespace, name)
    if show(obj) or not watch:
        return
    version = str(dig(obj, "metadata", "resourceVersion") or "")
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RolloutError(
                "timed out waiting for the condition",
                hint=f"the rollout is still going; `meshwork describe deployment/{name}` "
                f"shows its ReplicaSets and events, or wait longer with --timeout",
            )
        got_any = False
        try:
            for event in client.watch(
                info,
                namespace,
                resource_version=version or None,
                field_selector=f"metadata.name={name}",
                timeout_seconds=None if left is None else max(1, math.ceil(left)),
            ):
                got_any = True
                obj = event["object"]
                version = str(dig(obj, "metadata", "resourceVersion") or version)
                if event["type"] == "BOOKMARK":
                    continue
                if event["type"] == "DELETED":
                    raise RolloutError(
                        "object has been deleted",
                        hint=f"deployment/{name} was deleted while its rollout was being watched",
                    )
                if show(obj):
                    return
        except Gone:
            obj = client.get(info, namespace, name)  # our revision was compacted: start over
            version = str(dig(obj, "metadata", "resourceVersion") or "")
            if show(obj):
                return
            continue
        if not got_any and deadline is None:
            time.sleep(REWATCH_PAUSE_S)


@rollout_cmd.command("status")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Watch until the rollout finishes; with --no-watch, print the state once.",
)
@click.option(
    "--timeout",
    default="0s",
    show_default=True,
    help="How long to wait before giving up (30s, 5m, 1h); 0 waits forever.",
)
@click.option("--revision", type=int, default=0, help="Check this revision is the one rolling out.")
@reports_errors
@reports_rollout_errors
def status_cmd(
    args: tuple[str, ...], namespace: str | None, watch: bool, timeout: str, revision: int
) -> None:
    """Wait for a Deployment's rollout to finish: `rollout status deployment/NAME`.

    Exits 0 once every replica runs the new template and is available; 1 when
    the Deployment exceeds its progress deadline, or on --timeout.
    """
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    if revision < 0:
        raise click.BadParameter(f"must be a positive integer: {revision}", param_hint="--revision")
    from meshwork.cli import rollout_argo

    argo = rollout_argo.rollout_name(args)
    if argo is not None:
        sess = session()
        rollout_argo.follow_status(sess.client(), sess.namespace(namespace), argo, watch=watch, timeout=seconds)
        return
    (name,) = deployment_names(args, "status viewer", single=True)
    sess = session()
    with _spinner(f"deployment/{name}"):
        follow_status(
            sess.client(),
            sess.namespace(namespace),
            name,
            revision=revision,
            timeout=seconds,
            watch=watch,
            out=click.echo,
        )


# -- history, undo -------------------------------------------------------------------------


@rollout_cmd.command("history")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option("--revision", type=int, default=0, help="Show the pod template of this revision.")
@reports_errors
@reports_rollout_errors
def history_cmd(args: tuple[str, ...], namespace: str | None, revision: int) -> None:
    """List a Deployment's revisions and their change-cause: `rollout history deployment/NAME`."""
    if revision < 0:
        raise click.BadParameter(f"must be a positive integer: {revision}", param_hint="--revision")
    (name,) = deployment_names(args, "history viewer", single=True)
    sess = session()
    client = sess.client()
    info = REGISTRY.require("apps", "Deployment")
    deploy = client.get(info, sess.namespace(namespace), name)
    replicasets = owned_replicasets(client, deploy)
    label = f"{kind_label(info)}/{name}"
    if revision > 0:
        template = revision_template(replicasets, revision)
        click.echo(f"{label} with revision #{revision}\n{template_text(template)}")
        return
    click.echo(f"{label}\n{history_table(replicasets)}")


@rollout_cmd.command("undo")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option(
    "--to-revision",
    type=int,
    default=0,
    help="The revision to go back to (default: the one before the current).",
)
@reports_errors
@reports_rollout_errors
def undo_cmd(args: tuple[str, ...], namespace: str | None, to_revision: int) -> None:
    """Go back to an earlier revision's pod template: `rollout undo deployment/NAME` (or `rollout/NAME`)."""
    from meshwork.cli import rollout_argo

    argo = rollout_argo.rollout_name(args)
    if argo is not None:
        sess = session()
        rollout_argo.undo(sess.client(), sess.namespace(namespace), argo, to_revision)
        return
    (name,) = deployment_names(args, "rollbacker", single=True)
    sess = session()
    client = sess.client()
    info = REGISTRY.require("apps", "Deployment")
    ns = sess.namespace(namespace)
    deploy = client.get(info, ns, name)
    source = rollback_source(owned_replicasets(client, deploy), to_revision, name)
    if dig(deploy, "spec", "paused"):
        raise RolloutError(
            "you cannot rollback a paused deployment; resume it first with "
            f"'meshwork rollout resume deployment/{name}' and try again"
        )
    patch = rollback_patch(deploy, source)
    label = f"{kind_label(info)}/{name}"
    if patch is None:
        rev = (dig(source, "metadata", "annotations") or {}).get(REVISION_ANNOTATION)
        click.echo(f"{label} skipped rollback (current template already matches revision {rev})")
        return
    client.patch(info, ns, name, patch, patch_type="json")
    click.echo(f"{label} rolled back")


# -- restart, pause, resume ----------------------------------------------------------------


def _each_deployment(
    args: tuple[str, ...],
    namespace: str | None,
    what: str,
    act: Callable[[Client, str, dict[str, Any]], str],
) -> None:
    """Run ``act`` on each named Deployment; print ``deployment.apps/NAME <what it says>``.

    A Deployment that refuses is reported as kubectl does (``error: deployments.apps
    "NAME" ...``) and the others still go ahead; the exit status is 1 if any refused.
    """
    names = deployment_names(args, what, single=False)
    sess = session()
    client = sess.client()
    info = REGISTRY.require("apps", "Deployment")
    ns = sess.namespace(namespace)
    failed = False
    for name in names:
        deploy = client.get(info, ns, name)
        try:
            done = act(client, ns, deploy)
        except RolloutError as err:
            failed = True
            error(f'error: {resource_label(info)} "{name}" {err}')
            if err.hint:
                error(f"hint: {err.hint}")
            continue
        click.echo(f"{kind_label(info)}/{name} {done}")
    if failed:
        raise SystemExit(1)


def _restart(client: Client, ns: str, deploy: dict[str, Any]) -> str:
    name = str(dig(deploy, "metadata", "name"))
    if dig(deploy, "spec", "paused"):
        raise RolloutError(
            "can't restart paused deployment (run rollout resume first)",
            hint=f"`meshwork rollout resume deployment/{name}`, then restart it",
        )
    client.patch(REGISTRY.require("apps", "Deployment"), ns, name, restart_patch(datetime.now().astimezone()))
    return "restarted"


def _pause(client: Client, ns: str, deploy: dict[str, Any]) -> str:
    name = str(dig(deploy, "metadata", "name"))
    if dig(deploy, "spec", "paused"):
        raise RolloutError(
            "is already paused", hint=f"`meshwork rollout resume deployment/{name}` resumes it"
        )
    client.patch(REGISTRY.require("apps", "Deployment"), ns, name, {"spec": {"paused": True}})
    return "paused"


def _resume(client: Client, ns: str, deploy: dict[str, Any]) -> str:
    name = str(dig(deploy, "metadata", "name"))
    if not dig(deploy, "spec", "paused"):
        raise RolloutError(
            "is not paused", hint=f"`meshwork rollout pause deployment/{name}` pauses it"
        )
    client.patch(REGISTRY.require("apps", "Deployment"), ns, name, {"spec": {"paused": False}})
    return "resumed"


@rollout_cmd.command("restart")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
@reports_rollout_errors
def restart_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """Replace every pod with a new one: `rollout restart deployment/NAME`.

    Stamps the pod template with kubectl.kubernetes.io/restartedAt, so the
    Deployment rolls out a new ReplicaSet under its usual strategy.
    """
    _each_deployment(args, namespace, "restarter", _restart)


@rollout_cmd.command("pause")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
@reports_rollout_errors
def pause_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """Stop rolling out template changes (scaling still works): `rollout pause deployment/NAME`."""
    _each_deployment(args, namespace, "pauser", _pause)


@rollout_cmd.command("resume")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@reports_errors
@reports_rollout_errors
def resume_cmd(args: tuple[str, ...], namespace: str | None) -> None:
    """Roll out the template changes made while paused: `rollout resume deployment/NAME`."""
    _each_deployment(args, namespace, "resumer", _resume)


# Argo Rollouts' subcommands (get, promote, abort, retry, set image) register on the group.
from meshwork.cli import rollout_argo as _rollout_argo  # noqa: E402, F401
