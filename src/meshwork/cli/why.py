"""``meshwork why FROM_POD URL``: what the mesh would do with that request, without sending it."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from meshwork.cli.commands import namespace_option
from meshwork.cli.context import reports_errors, session
from meshwork.errors import MeshworkError

__all__ = ["why_cmd"]


@click.command("why")
@click.argument("from_pod")
@click.argument("url")
@namespace_option
@click.option("-X", "--request", "method", default="GET", show_default=True, help="The method.")
@click.option("-H", "--header", "headers", multiple=True, metavar="NAME: VALUE", help="A request header.")
@click.option("--draw", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Pin weighted and percentage choices to this draw in [0, 1).")  # fmt: skip
@reports_errors
def why_cmd(from_pod: str, url: str, namespace: str | None, method: str, headers: tuple[str, ...],
            draw: float) -> None:  # fmt: skip
    """Explain how FROM_POD's proxy routes URL: route, cluster, policy, endpoints, retries, faults."""
    from meshwork.cli.mesh import compiled, snapshot_for
    from meshwork.core.mesh.route import Request, request_port
    from meshwork.core.mesh.why import explain

    sess = session()
    ns = sess.namespace(namespace)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.netloc:
        raise MeshworkError(f"{url!r}: give a URL such as http://reviews:9080/reviews/0")
    fields: dict[str, str] = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise MeshworkError(f"{h!r}: give headers as 'Name: value'")
        key = name.strip().lower()
        fields[key] = f"{fields[key]},{value.strip()}" if key in fields else value.strip()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    snap = snapshot_for(sess.client(), from_pod, ns)
    table = compiled(snap)
    if table is None:
        raise MeshworkError("this build has no mesh compiler (meshwork.core.mesh)")
    port = parts.port or request_port(parts.netloc, parts.scheme or "http")
    req = Request(method=method.upper(), path=path, authority=parts.netloc, headers=fields, port=port,
                  scheme=parts.scheme or "http")  # fmt: skip
    result = explain(table, req, draw)
    click.echo(f"from {from_pod}.{ns} (config version {snap.get('version', '?')})")
    for line in result.lines:
        click.echo(line)
    click.echo(f"verdict: {result.verdict}")
