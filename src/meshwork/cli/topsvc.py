"""``meshwork top services``: each service's golden signals, from its sidecars' Istio metrics.

What lives here: the ``top`` command group (``top services`` here; ``top
nodes`` / ``top pods`` are handed to ``cli.podio``'s command unchanged) and
the table it shows. The scrape and the arithmetic (counter increases,
``histogram_quantile``) are ``meshwork.telemetry.meshstats``, shared with the
Rollout controller's ``meshwork`` analysis provider.
"""

from __future__ import annotations

import math
import time

import click

from meshwork.cli.commands import namespace_option
from meshwork.cli.context import reports_errors, session
from meshwork.telemetry.meshstats import (
    ServiceStats,
    Window,
    histogram_quantile,
    increase,
    meshed_pods,
    parse_metrics,
    scrape_all,
    service_stats,
)

__all__ = [
    "ServiceStats",
    "Window",
    "histogram_quantile",
    "increase",
    "meshed_pods",
    "parse_metrics",
    "service_stats",
    "top_group",
]

REFRESH_SECONDS = 2.0


def _ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.1f}ms" if v < 10 else f"{v:.0f}ms"


def rows(stats: list[ServiceStats]) -> list[tuple[str, ...]]:
    """The table, header first."""
    out: list[tuple[str, ...]] = [("SERVICE", "NAMESPACE", "RPS", "SUCCESS", "P50", "P90", "P99")]
    for s in stats:
        name = s.name if s.name != "unknown" else s.service
        success = "-" if math.isnan(s.success) else f"{100 * s.success:.1f}%"
        out.append((name, s.namespace, f"{s.rps:.1f}", success, _ms(s.p50), _ms(s.p90), _ms(s.p99)))
    return out


def _text(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


NO_MESH = ("No meshed pods in namespace {ns}: no running pod has an istio-proxy sidecar.\n"
           "Enable sidecar injection by labelling the namespace istio-injection=enabled\n"
           "(metadata.labels of its Namespace manifest, then `meshwork apply -f` it), and recreate its pods.")


@click.command("services")
@namespace_option
@click.option("-w", "--watch", is_flag=True, help="Refresh every 2 s, over a sliding minute.")
@click.option("--interval", type=click.FloatRange(0.1, 60.0), default=REFRESH_SECONDS, show_default=True,
              help="Seconds between the two scrapes (and between refreshes with -w).")
@reports_errors
def services_cmd(namespace: str | None, watch: bool, interval: float) -> None:
    """Requests/s, success rate and p50/p90/p99 latency per service, from the sidecars' metrics."""
    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)

    def pods() -> list[tuple[str, str]]:
        return meshed_pods(client.request("GET", f"/api/v1/namespaces/{ns}/pods").get("items") or [])

    meshed = pods()
    if not meshed:
        click.echo(NO_MESH.format(ns=ns), err=True)
        raise SystemExit(1)
    window = Window()
    window.add(time.monotonic(), scrape_all(meshed))
    if not watch:
        time.sleep(interval)
        window.add(time.monotonic(), scrape_all(meshed))
        _, stats = window.stats()
        if not stats:
            click.echo(f"No metrics from the {len(meshed)} meshed pods in namespace {ns} yet.", err=True)
            return
        click.echo(_text(rows(stats)))
        return
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        seconds, stats = window.stats()
        table = rows(stats)
        t = Table(title=f"{ns}: {len(meshed)} meshed pods, last {seconds:.0f}s", box=None)
        for col in table[0]:
            t.add_column(col, justify="left" if col in ("SERVICE", "NAMESPACE") else "right")
        for r in table[1:]:
            t.add_row(*r)
        return t

    with Live(render(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                meshed = pods() or meshed
                window.add(time.monotonic(), scrape_all(meshed))
                live.update(render(), refresh=True)
        except KeyboardInterrupt:
            pass


_SERVICES = ("services", "service", "svc")
_RESOURCES = ("nodes", "node", "no", "pods", "pod", "po")  # cli.podio's top


class _TopGroup(click.Group):
    """``top services`` here; any other ``top WHAT`` goes to the nodes/pods command as it was."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        from meshwork.cli.podio import top_cmd

        what = next((a for i, a in enumerate(args) if not a.startswith("-")
                     and (i == 0 or args[i - 1] not in ("-n", "--namespace"))), "")  # fmt: skip
        if what in _SERVICES:
            rest = list(args)
            rest.remove(what)
            return "services", services_cmd, rest
        if what and what not in _RESOURCES:
            ctx.fail(f"unknown resource {what!r}: top shows nodes, pods or services")
        return what or "pods", top_cmd, list(args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["nodes", "pods", "services"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SERVICES:
            return services_cmd
        if cmd_name in _RESOURCES:
            from meshwork.cli.podio import top_cmd

            return top_cmd
        return None


@click.group("top", cls=_TopGroup, context_settings={"ignore_unknown_options": True})
def top_group() -> None:
    """Resource use (nodes, pods) or traffic (services) at a glance."""
