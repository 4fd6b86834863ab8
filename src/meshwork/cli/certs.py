"""``meshwork certs``: the mesh CA's certificates, and ``meshwork certs rotate-root``.

What lives here: the two commands and ``cert_rows``, the pure table of
certificates (kubectl's layout: upper-case headers, tabwriter columns).
What must not live here: the CA itself (``meshwork.control.ca``) or HTTP
details beyond one request per command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import click
import yaml

from meshwork.cli.context import reports_errors, session
from meshwork.cli.humanize import human_duration, parse_time
from meshwork.cli.printers import GET_MINWIDTH, GET_PADDING, tabwrite

API = "/apis/mesh.meshwork.io/v1"
# The rotation request may take this much longer than the wait for proxies it asks for.
ROTATION_SLACK_S = 30.0


def _expires_in(not_after: Any, now: datetime) -> str:
    when = parse_time(not_after)
    if when is None:
        return "<unknown>"
    left = (when - now).total_seconds()
    return "expired" if left <= 0 else human_duration(left)


def cert_rows(items: Iterable[Mapping[str, Any]], now: datetime, *, wide: bool = False) -> list[list[str]]:
    """The ``meshwork certs`` table: one row per certificate."""
    head = ["TYPE", "NAME", "SERIAL", "STATE", "NOT AFTER", "EXPIRES IN"]
    if wide:
        head += ["CHAIN", "PROXY", "IN BUNDLE UNTIL"]
    rows = [head]
    for item in items:
        row = [
            str(item.get("type")), str(item.get("name")), str(item.get("serial")), str(item.get("state")),
            str(item.get("notAfter")), _expires_in(item.get("notAfter"), now),
        ]
        if wide:
            row += [str(item.get("chain")), item.get("proxy") or "<none>", item.get("retireAt") or "<none>"]
        rows.append(row)
    return rows


@click.group("certs", invoke_without_command=True)
@click.option("-o", "--output", type=click.Choice(["wide", "json", "yaml"]), default=None)
@click.option("--type", "kind", type=click.Choice(["root", "intermediate", "workload"]), default=None,
              help="Only certificates of this type.")
@click.pass_context
@reports_errors
def certs_cmd(ctx: click.Context, output: str | None, kind: str | None) -> None:
    """List the mesh CA's certificates: roots, intermediates and issued workload certificates.

    STATE of a root or intermediate: Active (signs), Pending (trusted, about to
    sign), Retiring (trusted until IN BUNDLE UNTIL, see -o wide).
    """
    if ctx.invoked_subcommand is not None:
        return
    listing = session().client().request("GET", f"{API}/certificates")
    items = [i for i in listing.get("items") or [] if kind is None or i.get("type") == kind]
    if output == "json":
        click.echo(json.dumps({**listing, "items": items}, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump({**listing, "items": items}, sort_keys=False).rstrip("\n"))
    elif not items:
        click.echo("No certificates found.", err=True)
    else:
        rows = cert_rows(items, datetime.now(UTC), wide=output == "wide")
        click.echo(tabwrite(rows, minwidth=GET_MINWIDTH, padding=GET_PADDING).rstrip("\n"))


@certs_cmd.command("rotate-root")
@click.option("--overlap", default=None, metavar="DURATION",
              help="Keep the old root in the trust bundle this long after the new one takes over "
              "(default: until every certificate it signed has expired).")
@click.option("--timeout", default="30s", show_default=True, metavar="DURATION",
              help="How long to wait for every proxy to trust the new root before it starts signing.")
@reports_errors
def rotate_root_cmd(overlap: str | None, timeout: str) -> None:
    """Make a new root CA and move the mesh to it without an outage.

    The new root joins the trust bundle first; once the proxies have it, it
    signs every new certificate and proxies renew theirs at once; the old
    root stays trusted until its certificates have expired (or --overlap).
    """
    from meshwork.control.server import parse_duration

    try:
        body: dict[str, Any] = {"timeoutSeconds": parse_duration(timeout)}
        if overlap is not None:
            body["overlapSeconds"] = parse_duration(overlap)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    client = session().client()
    client.timeout = body["timeoutSeconds"] + ROTATION_SLACK_S
    result = client.request("POST", f"{API}/certificates/rotate-root", body=body)
    state = "signs now" if result.get("promoted") else "is trusted but not signing yet"
    click.echo(f"root rotated: new root {result.get('root')} {state} (caGeneration {result.get('caGeneration')})")
    retire = result.get("previousRootRetireAt")
    if retire:
        click.echo(f"the previous root {result.get('previousRoot')} stays in the trust bundle until {retire}")


__all__ = ["cert_rows", "certs_cmd", "rotate_root_cmd"]
