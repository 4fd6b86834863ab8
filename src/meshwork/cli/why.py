"""``meshwork why FROM_POD URL``: what the mesh would do with that request, without sending it."""

from __future__ import annotations

from typing import Any
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
    verdict = result.verdict
    if result.decision is not None and result.decision.cluster is not None:
        allowed, lines = _authorization(sess.client(), snap, result.decision.cluster, req)
        for line in lines:
            click.echo(line)
        if not allowed:
            verdict = "denied"
        for line in _rate_limits(sess.client(), snap, result.decision, req):
            click.echo(line)
    click.echo(f"verdict: {verdict}")


def _rate_limits(client: Any, snap: dict[str, Any], decision: Any, req: Any) -> list[str]:
    """The LocalRateLimits the destination's sidecar applies to this request (proxy.ratelimit)."""
    from meshwork.cli.mesh import snapshot_for
    from meshwork.core.ratelimit import Facts, explain, selected_limits

    cluster = decision.cluster
    if not cluster.endpoints or not cluster.endpoints[0].name:
        return []
    endpoint = cluster.endpoints[0]
    namespace = cluster.host.split(".")[1] if cluster.host.count(".") >= 2 else str(snap.get("proxy", {}).get("namespace"))
    try:
        dest = snapshot_for(client, endpoint.name, namespace)
        labels = dict((dest.get("proxy") or {}).get("labels") or {})
        limits = selected_limits(list(dest.get("localRateLimits") or ()), labels)
    except (MeshworkError, ValueError) as exc:
        return [f"rate limits at {endpoint.name}.{namespace}: cannot tell: {exc}"]
    source = snap.get("proxy") or {}
    meshed = endpoint.labels.get("security.istio.io/tlsMode") == "istio"
    principal = (f"{dest.get('domain') or 'cluster.local'}/ns/{source.get('namespace')}/sa/"
                 f"{source.get('serviceAccount') or 'default'}") if meshed else None  # fmt: skip
    from meshwork.proxy.sidecar import workload_of

    facts = Facts(route=f"inbound|{endpoint.port}||{cluster.host}", principal=principal,
                  workload=f"{source.get('namespace')}/{workload_of(str(source.get('pod') or ''))}",
                  ip=str(source.get("ip") or "") or None, headers={**req.headers, "host": req.authority})  # fmt: skip
    return explain(f"{endpoint.name}.{namespace}", limits, facts)


def _authorization(client: Any, snap: dict[str, Any], cluster: Any, req: Any) -> tuple[bool, list[str]]:
    """What the destination's sidecar decides: its guard (proxy.guard) over this request, as it would see it."""
    from meshwork.cli.mesh import snapshot_for
    from meshwork.core.mesh.why import explain_authorization
    from meshwork.core.security.attributes import RequestAttributes
    from meshwork.core.security.pathnorm import PathRejected, normalize_target
    from meshwork.proxy.guard import GuardRejected, compile_guard

    if not cluster.endpoints or not cluster.endpoints[0].name:
        return True, []
    endpoint = cluster.endpoints[0]
    namespace = cluster.host.split(".")[1] if cluster.host.count(".") >= 2 else str(snap.get("proxy", {}).get("namespace"))
    where = f"{endpoint.name}.{namespace}"
    try:
        dest = snapshot_for(client, endpoint.name, namespace)
        guard = compile_guard(dest)
    except GuardRejected as exc:
        return True, [f"authorization at {where}: its proxy refuses the policies: {exc}"]
    except MeshworkError:
        return True, []
    if guard is None:
        return True, [f"authorization at {where}: no AuthorizationPolicy or RequestAuthentication applies"]
    normal = normalize_target(req.path, guard.options)
    if isinstance(normal, PathRejected):
        return False, [f"path {req.path!r} refused by {where}'s proxy: {normal.status} {normal.reason}"]
    source = snap.get("proxy") or {}
    meshed = endpoint.labels.get("security.istio.io/tlsMode") == "istio"
    principal = (f"{dest.get('domain') or 'cluster.local'}/ns/{source.get('namespace')}/sa/"
                 f"{source.get('serviceAccount') or 'default'}") if meshed else None  # fmt: skip
    headers = {**req.headers, "host": req.authority}
    claims: dict[str, Any] = {}
    request_principal = None
    if guard.authn is not None:
        import time

        authn = guard.authn.authenticate(headers, normal.query, now=time.time())
        if not authn.ok:
            return False, [f"authentication at {where}: 401 {authn.error}"]
        request_principal, claims = authn.principal, dict(authn.claims)
    attrs = RequestAttributes(
        method=req.method, host=req.authority, path=normal.path, headers=headers,
        source_ip=str(source.get("ip") or "") or None, source_principal=principal,
        request_principal=request_principal, claims=claims, destination_ip=endpoint.address,
        destination_port=endpoint.port,
    )  # fmt: skip
    return explain_authorization(where, guard.authorizer, attrs)
