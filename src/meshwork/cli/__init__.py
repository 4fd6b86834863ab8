"""The ``meshwork`` command line: kubectl-like commands over the meshwork API.

What lives here: the top-level click group, its global options (``--data-dir``,
``--server``, ``--token``) and ``main()``, the console-script entry point.
Each command lives in ``commands`` (objects) or ``lifecycle`` (the server
process); formatting lives in ``printers``/``columns``/``describe``, HTTP in
``meshwork.client``.
"""

from __future__ import annotations

from pathlib import Path

import click

from meshwork import __version__
from meshwork.cli.agent import agent_cmd
from meshwork.cli.commands import apply_cmd, delete_cmd, describe_cmd, get_cmd, version_cmd
from meshwork.cli.config import data_dir
from meshwork.cli.context import Session
from meshwork.cli.lifecycle import down_cmd, server_cmd, up_cmd
from meshwork.cli.mesh import proxy_config_cmd, proxy_status_cmd
from meshwork.cli.podio import exec_cmd, logs_cmd
from meshwork.cli.proxy import proxy_cmd
from meshwork.cli.rollout import rollout_cmd
from meshwork.cli.scale import scale_cmd
from meshwork.cli.sidecar import sidecar_cmd
from meshwork.cli.topsvc import top_group
from meshwork.cli.why import why_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    "data_dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="MESHWORK_HOME",
    help="Where the server keeps state and the client config (default: ~/.meshwork).",
)
@click.option(
    "-s",
    "--server",
    default=None,
    help="API server URL (overrides MESHWORK_SERVER and the config).",
)
@click.option(
    "--token", default=None, help="Bearer token (overrides MESHWORK_TOKEN and the config)."
)
@click.version_option(__version__, prog_name="meshwork")
@click.pass_context
def cli(ctx: click.Context, data_dir_: Path | None, server: str | None, token: str | None) -> None:
    """meshwork: Kubernetes, Istio and Argo manifests, run as local processes behind a mesh."""
    ctx.obj = Session(data_dir(data_dir_), server=server, token=token)


for command in (
    server_cmd,
    agent_cmd,
    up_cmd,
    down_cmd,
    apply_cmd,
    get_cmd,
    describe_cmd,
    delete_cmd,
    rollout_cmd,
    logs_cmd,
    exec_cmd,
    top_group,
    scale_cmd,
    proxy_cmd,
    sidecar_cmd,
    version_cmd,
    proxy_status_cmd,
    proxy_config_cmd,
    why_cmd,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point (``meshwork = "meshwork.cli:main"``)."""
    cli(prog_name="meshwork")


__all__ = ["cli", "main"]
