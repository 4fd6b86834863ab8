"""``meshwork scale``: set ``spec.replicas`` of a Deployment, ReplicaSet or other scalable kind.

What lives here: the click command and its read-check-write loop. The write
is a PUT carrying the resourceVersion that was read, so a precondition
(``--current-replicas``, ``--resource-version``) checked on that read holds at
the moment of the write; a 409 means someone else wrote in between, and the
object is read and checked again.

What must not live here: the precondition rules (``rollout_view``).
"""

from __future__ import annotations

from typing import Any

import click

from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.resolve import Target, kind_label, load_kinds, parse_targets
from meshwork.cli.rollout import namespace_option, reports_rollout_errors
from meshwork.cli.rollout_view import check_scale_preconditions
from meshwork.client import Client
from meshwork.errors import Conflict, NotFound

# Kinds whose spec.replicas `scale` may set (meshwork serves no scale subresource;
# these are the kinds with one upstream).
SCALABLE: frozenset[tuple[str, str]] = frozenset({
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("", "ReplicationController"),
    ("argoproj.io", "Rollout"),
})  # fmt: skip
# Another writer racing us on the same object is rare; give up after this many 409s.
CONFLICT_RETRIES = 5


def scale_one(
    client: Client,
    target: Target,
    namespace: str | None,
    name: str,
    replicas: int,
    current_replicas: int | None,
    resource_version: str | None,
) -> None:
    """Read, check the preconditions, write ``spec.replicas``; again on a 409."""
    for attempt in range(CONFLICT_RETRIES):
        obj: dict[str, Any] = client.get(target.info, namespace, name)
        check_scale_preconditions(obj, current_replicas, resource_version)
        spec = obj.get("spec")
        obj["spec"] = {**(spec if isinstance(spec, dict) else {}), "replicas": replicas}
        try:
            client.update(target.info, namespace, obj)
            return
        except Conflict:
            if resource_version or attempt == CONFLICT_RETRIES - 1:
                raise


@click.command("scale")
@click.argument("args", nargs=-1, required=True)
@namespace_option
@click.option("--replicas", type=int, required=True, help="The new number of replicas.")
@click.option(
    "--current-replicas",
    type=int,
    default=-1,
    help="Scale only if spec.replicas is this now (-1: no condition).",
)
@click.option(
    "--resource-version",
    default="",
    help="Scale only if the object's resourceVersion is this now.",
)
@reports_errors
@reports_rollout_errors
def scale_cmd(
    args: tuple[str, ...],
    namespace: str | None,
    replicas: int,
    current_replicas: int,
    resource_version: str,
) -> None:
    """Set the replica count: `scale deployment/NAME --replicas N` (also replicaset/NAME)."""
    if replicas < 0:
        raise click.BadParameter(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0",
            param_hint="--replicas",
        )
    load_kinds()
    sess = session()
    ns = sess.namespace(namespace)
    work: list[tuple[Target, str]] = []
    for target in parse_targets(args):
        info = target.info
        if (info.group, info.kind) not in SCALABLE:
            raise click.UsageError(
                f"cannot scale {kind_label(info)}: scale works on deployments, replicasets, "
                "statefulsets and rollouts"
            )
        if not target.names:
            raise click.UsageError(f"give the name to scale: `{info.kind.lower()}/NAME`")
        work += [(target, name) for name in target.names]
    if len(work) > 1 and resource_version:
        raise click.UsageError("--resource-version applies to one object; name only one")
    client = sess.client()
    failures = 0
    for target, name in work:
        obj_ns = ns if target.info.namespaced else None
        try:
            scale_one(
                client,
                target,
                obj_ns,
                name,
                replicas,
                current_replicas if current_replicas >= 0 else None,
                resource_version or None,
            )
        except NotFound as exc:
            failures += 1
            error(f"Error from server (NotFound): {exc.message}")
            continue
        click.echo(f"{kind_label(target.info)}/{name} scaled")
    if failures:
        raise SystemExit(1)
