"""The object commands: ``apply``, ``get``, ``describe``, ``delete``, ``version``.

What lives here: click options and the glue from options to the logic in
``apply``, ``get``, ``describe`` and ``client``. Every command reports errors
through ``context.reports_errors`` (stderr, a hint, exit 1).

What must not live here: formatting rules or HTTP details.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from meshwork import __version__
from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.describe import describe, events_about
from meshwork.cli.get import GetOptions, run_get, run_watch, with_type
from meshwork.cli.resolve import Target, kind_label, load_kinds, parse_targets
from meshwork.client import Client, ServerUnreachable
from meshwork.errors import ApiError, BadRequest, MeshworkError, NotFound

OUTPUT_FORMATS = ("wide", "yaml", "json", "name")
# `delete --wait` gives up after this long by default (kubectl waits for the
# object's grace period; ours are 30 s by default, plus finalizers).
DELETE_WAIT_DEFAULT_S = 120.0
DELETE_POLL_MAX_S = 1.0

namespace_option = click.option(
    "-n", "--namespace", default=None, help="The namespace (default: the config's, else `default`)."
)
file_option = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    metavar="PATH",
    help="A manifest file, a directory (read recursively), or - for stdin. Repeatable.",
)


@click.command("apply")
@file_option
@namespace_option
@click.option("--no-wait", is_flag=True, help="Do not wait for the mesh's proxies to take the new config.")
@click.option("--convergence-timeout", type=float, default=10.0, show_default=True, metavar="SECONDS",
              help="How long to wait for every proxy to acknowledge the new config.")
@reports_errors
def apply_cmd(files: tuple[str, ...], namespace: str | None, no_wait: bool, convergence_timeout: float) -> None:
    """Create or update the objects in manifests, like `kubectl apply`.

    Every manifest is validated before anything is sent; any error stops the
    whole apply. Each object then prints `kind/name created|configured|unchanged`.
    When mesh config changed and proxies are connected, it then waits until
    each has acknowledged it: `converged in 14 ms (7/7 proxies)`, or which
    proxies refused it and why (exit status 1).
    """
    if not files:
        raise click.UsageError("must specify one of -f and -k (give -f PATH, or -f - for stdin)")
    load_kinds()
    sess = session()
    from meshwork.cli import apply as apply_mod  # loads the models: only apply needs them

    manifests = apply_mod.load(files)
    desired = apply_mod.plan(manifests, sess.namespace(namespace))
    changed: list[apply_mod.Desired] = []
    failures = apply_mod.apply_all(sess.client(), desired, echo=click.echo, error=error, changed=changed)
    if not no_wait and changed:
        from meshwork.cli import mesh

        if not mesh.wait_after_apply(sess.client(), [(d.info.group, d.info.kind) for d in changed], convergence_timeout):
            failures += 1
    if failures:
        raise SystemExit(1)


@click.command("get")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="List across every namespace.")
@click.option("-l", "--selector", default=None, help="Label selector, e.g. app=web,tier!=db.")
@click.option("--field-selector", default=None, help="Field selector, e.g. status.phase=Running.")
@click.option("-o", "--output", type=click.Choice(OUTPUT_FORMATS), default=None)
@click.option("-w", "--watch", is_flag=True, help="After listing, print changes as they happen.")
@click.option("--show-labels", is_flag=True, help="Add a LABELS column.")
@reports_errors
def get_cmd(
    args: tuple[str, ...],
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    field_selector: str | None,
    output: str | None,
    watch: bool,
    show_labels: bool,
) -> None:
    """Show objects: `get KIND[,KIND...] [NAME...]`, `get KIND/NAME`, or `get all`."""
    load_kinds()
    targets = parse_targets(args)
    spec = args[0].lower()
    opts = GetOptions(
        namespace=session().namespace(namespace),
        all_namespaces=all_namespaces,
        label_selector=selector,
        field_selector=field_selector,
        output=output,
        show_labels=show_labels,
        with_kind=len(targets) > 1 or "," in spec or spec == "all",
    )
    client = session().client()
    if watch:
        if len(targets) != 1:
            raise BadRequest(
                "watch is only supported on individual resources and resource collections"
            )
        status = run_watch(client, targets[0], opts, click.echo, error)
    else:
        status = run_get(client, targets, opts, click.echo, error)
    if status:
        raise SystemExit(status)


def _related(client: Client, target: Target, obj: dict[str, Any]) -> dict[str, Any]:
    """Objects a describer shows besides the object itself (a Service's Endpoints)."""
    if (target.info.group, target.info.kind) != ("", "Service"):
        return {}
    from meshwork.model.kinds import REGISTRY

    ep = REGISTRY.for_group_kind("", "Endpoints")
    meta = obj.get("metadata") or {}
    if ep is None:
        return {}
    try:
        return {"endpoints": client.get(ep, meta.get("namespace"), meta.get("name", ""))}
    except NotFound:
        return {"endpoints": {}}


def _events_for(client: Client, obj: dict[str, Any], kind: str) -> list[Mapping[str, Any]] | None:
    from meshwork.model.kinds import REGISTRY

    info = REGISTRY.for_group_kind("", "Event")
    if info is None:
        return None
    namespace = (obj.get("metadata") or {}).get("namespace") or None
    try:
        listed = client.list(info, namespace)
    except ServerUnreachable:
        raise
    except ApiError:
        return []
    return events_about([e for e in listed.get("items") or [] if isinstance(e, dict)], obj, kind)


@click.command("describe")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option(
    "-l", "--selector", default=None, help="Describe every object matching this label selector."
)
@reports_errors
def describe_cmd(args: tuple[str, ...], namespace: str | None, selector: str | None) -> None:
    """Show one object in detail, with its events: `describe KIND NAME` or `describe KIND/NAME`."""
    load_kinds()
    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)
    texts: list[str] = []
    failures = 0
    for target in parse_targets(args):
        info = target.info
        obj_ns = ns if info.namespaced else None
        if target.names:
            objs = []
            for name in target.names:
                try:
                    objs.append(with_type(client.get(info, obj_ns, name), info))
                except NotFound as exc:
                    failures += 1
                    error(f"Error from server (NotFound): {exc.message}")
        else:
            listed = client.list(info, obj_ns, label_selector=selector)
            objs = [with_type(o, info) for o in listed.get("items") or [] if isinstance(o, dict)]
        now = datetime.now(UTC)
        for obj in objs:
            texts.append(
                describe(
                    obj,
                    group=info.group,
                    kind=info.kind,
                    events=_events_for(client, obj, info.kind),
                    now=now,
                    related=_related(client, target, obj),
                )
            )
    if texts:
        click.echo("\n\n".join(t.rstrip("\n") for t in texts))
    elif not failures:
        error(f"No resources found in {ns} namespace.")
    if failures:
        raise SystemExit(1)


def _wait_deleted(
    client: Client, pending: list[tuple[Target, str | None, str, str | None]], timeout: float
) -> list[str]:
    """Poll until each (kind, namespace, name, uid) is gone or replaced; the labels still there."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    left = list(pending)
    while left:
        still = []
        for target, ns, name, uid in left:
            try:
                obj = client.get(target.info, ns, name)
            except NotFound:
                continue
            if uid and (obj.get("metadata") or {}).get("uid") not in (None, uid):
                continue  # deleted and created again under the same name
            still.append((target, ns, name, uid))
        left = still
        if not left:
            break
        if time.monotonic() >= deadline:
            return [f"{t.info.plural}/{name}" for t, _, name, _ in left]
        time.sleep(delay)
        delay = min(delay * 1.5, DELETE_POLL_MAX_S)
    return []


@click.command("delete")
@click.argument("args", nargs=-1)
@file_option
@namespace_option
@click.option(
    "--all", "all_", is_flag=True, help="Delete every object of the kind in the namespace."
)
@click.option(
    "-l", "--selector", default=None, help="Delete the objects matching this label selector."
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until the objects are gone."
)
@click.option(
    "--timeout",
    type=float,
    default=DELETE_WAIT_DEFAULT_S,
    show_default=True,
    help="Seconds to wait.",
)
@click.option("--ignore-not-found", is_flag=True, help="Treat a missing object as deleted.")
@click.option(
    "--cascade",
    type=click.Choice(["background", "foreground", "orphan"]),
    default="background",
    show_default=True,
    help="What happens to dependents (propagationPolicy).",
)
@click.option("--grace-period", type=int, default=None, help="Seconds the pods get to stop.")
@reports_errors
def delete_cmd(
    args: tuple[str, ...],
    files: tuple[str, ...],
    namespace: str | None,
    all_: bool,
    selector: str | None,
    wait: bool,
    timeout: float,
    ignore_not_found: bool,
    cascade: str,
    grace_period: int | None,
) -> None:
    """Delete objects: `delete -f PATH`, `delete KIND NAME...`, `delete KIND --all`."""
    load_kinds()
    sess = session()
    ns = sess.namespace(namespace)
    work: list[tuple[Target, str | None, str, str]] = []  # target, namespace, name, source
    if files:
        if args:
            raise click.UsageError("give either -f PATH or KIND NAME, not both")
        from meshwork.cli import apply as apply_mod

        for d in apply_mod.plan(apply_mod.load(files), ns):
            work.append(
                (Target(d.info, (d.name,)), d.namespace, d.name, d.source.rsplit(":", 1)[0])
            )
    else:
        if not args:
            raise click.UsageError("you must specify the type of resource to delete, or -f PATH")
        client = sess.client()
        for target in parse_targets(args):
            target_ns = ns if target.info.namespaced else None
            if target.names:
                if all_ or selector:
                    raise click.UsageError(
                        "names cannot be given together with --all or --selector"
                    )
                work += [(target, target_ns, n, "") for n in target.names]
            elif all_ or selector:
                listed = client.list(target.info, target_ns, label_selector=selector)
                for item in listed.get("items") or []:
                    work.append((target, target_ns, item["metadata"]["name"], ""))
            else:
                raise click.UsageError(
                    "resource(s) were provided, but no name was specified; use --all to delete every one"
                )
    client = sess.client()
    policy = cascade.capitalize()
    pending: list[tuple[Target, str | None, str, str | None]] = []
    failures = 0
    for target, target_ns, name, source in work:
        try:
            result = client.delete(
                target.info,
                target_ns,
                name,
                propagation_policy=policy,
                grace_period_seconds=grace_period,
            )
        except NotFound as exc:
            if not ignore_not_found:
                failures += 1
                where = f'error when deleting "{source}": ' if source else ""
                error(f"Error from server (NotFound): {where}{exc.message}")
            continue
        except ServerUnreachable:
            raise
        except ApiError as exc:
            failures += 1
            error(f"Error from server ({exc.reason}): {exc.message}")
            continue
        click.echo(f'{kind_label(target.info)} "{name}" deleted')
        uid = ((result or {}).get("metadata") or {}).get("uid")
        pending.append((target, target_ns, name, uid if isinstance(uid, str) else None))
    if not work and not files:
        error(f"No resources found in {ns} namespace." if not all_ else "No resources found")
    if wait and pending:
        left = _wait_deleted(client, pending, timeout)
        for label in left:
            failures += 1
            error(f"error: timed out waiting for {label} to be deleted (it may have finalizers)")
    if failures:
        raise SystemExit(1)


@click.command("version")
@reports_errors
def version_cmd() -> None:
    """Print the client version and, if the server answers, the server's."""
    from meshwork import _accel

    click.echo(f"Client Version: v{__version__}")
    hot_path = f"Proxy Hot Path: {'compiled (mypyc)' if _accel.active() else 'pure Python'}"
    try:
        info = session().client().version()
    except (ServerUnreachable, MeshworkError) as exc:
        reason = (
            f"cannot reach the meshwork server at {exc.server}"
            if isinstance(exc, ServerUnreachable)
            else str(exc)
        )
        error(f"Server Version: unknown ({reason}; start it with `meshwork up -d`)")
        click.echo(hot_path)
        return
    click.echo(f"Server Version: {info.get('gitVersion', 'unknown')}")
    click.echo(hot_path)
