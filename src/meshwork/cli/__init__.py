"""The ``meshwork`` command line: kubectl-like commands over the meshwork API.

What lives here: the top-level click group, its global options (``--data-dir``,
``--server``, ``--token``) and ``main()``, the console-script entry point.
Each command lives in ``commands`` (objects) or ``lifecycle`` (the server
process); formatting lives in ``printers``/``columns``/``describe``, HTTP in
``meshwork.client``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from meshwork import __version__

# Each command's module is imported only when that command runs (or for --help):
# `meshwork sidecar` and `meshwork proxy` stay small, and `get` starts fast. So is the
# session (config file, YAML, HTTP client): an injected sidecar starts on a pod's cold path.
COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("lifecycle", "server_cmd"),
    "agent": ("agent", "agent_cmd"),
    "up": ("lifecycle", "up_cmd"),
    "down": ("lifecycle", "down_cmd"),
    "apply": ("commands", "apply_cmd"),
    "get": ("commands", "get_cmd"),
    "describe": ("commands", "describe_cmd"),
    "delete": ("commands", "delete_cmd"),
    "rollout": ("rollout", "rollout_cmd"),
    "logs": ("podio", "logs_cmd"),
    "exec": ("podio", "exec_cmd"),
    "top": ("topsvc", "top_group"),
    "scale": ("scale", "scale_cmd"),
    "recommend": ("recommend", "recommend_cmd"),
    "proxy": ("proxy", "proxy_cmd"),
    "sidecar": ("sidecar", "sidecar_cmd"),
    "version": ("commands", "version_cmd"),
    "proxy-status": ("mesh", "proxy_status_cmd"),
    "proxy-config": ("mesh", "proxy_config_cmd"),
    "why": ("why", "why_cmd"),
    "auth": ("auth", "auth_group"),
    "create": ("auth", "create_group"),
    "certs": ("certs", "certs_cmd"),
    "submit": ("workflow", "submit_cmd"),
    "wf": ("workflow", "wf_group"),
    "queue": ("queue", "queue_group"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(f"meshwork.cli.{target[0]}")
        command = getattr(module, target[1])
        assert isinstance(command, click.Command)
        return command


# Commands that never talk to the API as a client: no session (config file, YAML, HTTP client).
_NO_SESSION = frozenset(("proxy", "sidecar"))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    if ctx.invoked_subcommand in _NO_SESSION:
        return  # they read no client config: their processes stay small (RSS, start time)
    from meshwork.cli.config import data_dir
    from meshwork.cli.context import Session

    ctx.obj = Session(data_dir(data_dir_), server=server, token=token)


def main() -> None:
    """Console-script entry point (``meshwork = "meshwork.cli:main"``)."""
    cli(prog_name="meshwork")


__all__ = ["cli", "main"]
