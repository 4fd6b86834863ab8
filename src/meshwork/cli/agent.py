"""``meshwork agent``: run a node agent that joins a server and runs the pods bound to it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from meshwork.cli.context import reports_errors, session
from meshwork.errors import MeshworkError


@click.command("agent")
@click.option("--server", "server_url", default=None, metavar="URL",
              help="API server URL (default: the client config's).")  # fmt: skip
@click.option("--token", default=None, help="Join token (default: MESHWORK_TOKEN or the client config's).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the token from this file instead.")  # fmt: skip
@click.option("--name", default=None, help="Node name (default: this host's name).")
@click.option("--pod-cidr", default=None, metavar="CIDR",
              help="Pod IPs for this node, inside 127.0.0.0/8 (default: assigned by the server).")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the agent keeps pod state and logs (default: $MESHWORK_HOME).")  # fmt: skip
@click.option("--parent-pid", type=int, default=None, hidden=True)
@reports_errors
def agent_cmd(
    server_url: str | None,
    token: str | None,
    token_file: Path | None,
    name: str | None,
    pod_cidr: str | None,
    data_dir: Path | None,
    parent_pid: int | None,
) -> None:
    """Run a node agent in the foreground (SIGTERM stops its pods, then it)."""
    from meshwork.agent.node import run_agent
    from meshwork.cli.config import read_client_config
    from meshwork.cli.resolve import load_kinds

    load_kinds()
    sess = session()
    if token_file is not None:
        token = token_file.read_text().strip()
    if server_url is None or token is None:
        try:
            config = read_client_config(sess.data_dir)
        except Exception:
            config = None
        server_url = server_url or sess.server or (config.server if config else None)
        token = token or sess.token or os.environ.get("MESHWORK_TOKEN") or (config.token if config else None)
    if not server_url or not token:
        raise MeshworkError("the agent needs --server URL and --token (or a client config from `meshwork up`)")
    run_agent(server=server_url, token=token, name=name or socket.gethostname().split(".")[0].lower(),
              data_dir=(data_dir or sess.data_dir).expanduser(), pod_cidr=pod_cidr,
              parent_pid=parent_pid)  # fmt: skip
