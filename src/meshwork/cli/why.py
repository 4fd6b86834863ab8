"""``meshwork why FROM_POD URL``: what the mesh would do with that request, without sending it.

``URL`` ``tcp://HOST:PORT`` explains a TCP connection instead (``core.mesh.why_tcp``): the
node's service proxy's ``tcp[]`` route decision and the destination sidecar's TCP
authorization, from the Services, Endpoints, Pods and Istio objects read through the API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

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
    """Explain how FROM_POD's proxy routes URL: route, cluster, policy, endpoints, retries, faults.

    With URL tcp://HOST:PORT (HOST a Service name, FQDN or ClusterIP) it explains
    one TCP connection instead: it leaves the pod for the ClusterIP, where the
    node's service proxy applies the mesh's tcp[] routes (the route, why earlier
    ones do not hold, the weights and the destination --draw picks, the
    endpoints), then the destination sidecar's TCP AuthorizationPolicy verdict.
    """
    from meshwork.cli.mesh import compiled, snapshot_for
    from meshwork.core.mesh.route import Request, request_port
    from meshwork.core.mesh.why import explain

    sess = session()
    ns = sess.namespace(namespace)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme == "tcp":
        _why_tcp(sess.client(), from_pod, ns, url, draw)
        return
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


def _items(client: Any, path: str) -> list[Any]:
    """Every object at a cluster-wide list path, validated into its model."""
    from meshwork.model.codec import validate_object

    return [validate_object(obj) for obj in client.request("GET", path).get("items") or ()]


def _why_tcp(client: Any, from_pod: str, ns: str, url: str, draw: float) -> None:
    """``meshwork why FROM_POD tcp://HOST:PORT``: the service proxy's route, then the destination's verdict."""
    from meshwork.core.mesh.why_tcp import explain_tcp

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise MeshworkError(f"{url!r}: {exc}") from exc
    if not parts.hostname or port is None:
        raise MeshworkError(f"{url!r}: give tcp://HOST:PORT, such as tcp://tcp-echo:9000")
    client.request("GET", f"/api/v1/namespaces/{quote(ns)}/pods/{quote(from_pod)}")  # a known pod (404 if not)
    services = _items(client, "/api/v1/services")
    endpoints = {f"{e.metadata.namespace or 'default'}/{e.metadata.name}": e for e in _items(client, "/api/v1/endpoints")}
    pods = _items(client, "/api/v1/pods")
    pod_labels = {(p.metadata.namespace or "default", p.metadata.name or ""): dict(p.metadata.labels or {}) for p in pods}
    vss = _items(client, "/apis/networking.istio.io/v1/virtualservices")
    drs = _items(client, "/apis/networking.istio.io/v1/destinationrules")
    result = explain_tcp(services, endpoints, pod_labels, vss, drs, host=parts.hostname, port=port,
                         namespace=ns, draw=draw)  # fmt: skip
    click.echo(f"from {from_pod}.{ns}")
    for line in result.lines:
        click.echo(line)
    if not result.connects:
        click.echo(f"verdict: {result.verdict}")
        return
    endpoint = result.endpoints[0]
    cluster = result.decision.cluster if result.decision is not None else None
    dest_ns = (cluster.host.split(".")[1] if cluster is not None and cluster.host.count(".") >= 2
               else result.service.metadata.namespace if result.service is not None else ns) or "default"  # fmt: skip
    allowed, lines = _tcp_authorization(client, endpoint, dest_ns)
    for line in lines:
        click.echo(line)
    click.echo(f"verdict: {'allowed' if allowed else 'denied'}")


def _tcp_authorization(client: Any, endpoint: Any, namespace: str) -> tuple[bool, list[str]]:
    """What the destination pod's sidecar does with a plaintext connection from the service proxy."""
    import json

    from meshwork.cli.mesh import snapshot_for
    from meshwork.core.inject import SIDECAR_NAME, app_ip, pod_ports
    from meshwork.core.mesh.why_tcp import SERVICE_PROXY_SOURCE_IP, explain_tcp_authorization
    from meshwork.proxy.guard import GuardRejected, compile_guard
    from meshwork.proxy.inbound import (
        PROXY_PORTS,
        opaque_ports,
        parse_pod_ports,
        services_from_snapshot,
    )
    from meshwork.proxy.meshtls import inbound_mtls
    from meshwork.proxy.tls import TlsMode

    port = int(endpoint.port)
    where = f"{endpoint.name or endpoint.address}.{namespace}"
    if not endpoint.name:
        return True, [f"endpoint {endpoint.key} is no pod: nothing stands before its app, allowed"]
    lines = [f"to endpoint {endpoint.key} ({where}; the first of the ready ones)"]
    try:
        pod = client.request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(endpoint.name)}")
    except MeshworkError as exc:
        return True, [*lines, f"authorization at {where}: cannot tell: {exc}"]
    containers = list((pod.get("spec") or {}).get("containers") or ()) + list((pod.get("spec") or {}).get("initContainers") or ())
    if not any(c.get("name") == SIDECAR_NAME for c in containers):
        return True, [*lines, f"{where} has no sidecar: the connection reaches its app, no AuthorizationPolicy is enforced"]
    pod_ip = str((pod.get("status") or {}).get("podIP") or endpoint.address)
    if app_ip(pod_ip) is None:
        return True, [*lines, f"{where}'s sidecar does not capture {pod_ip}'s ports (no app address): "
                              "the connection reaches its app, no AuthorizationPolicy is enforced"]  # fmt: skip
    try:
        dest = snapshot_for(client, endpoint.name, namespace)
        guard = compile_guard(dest)
    except GuardRejected as exc:
        return True, [*lines, f"authorization at {where}: its proxy refuses the policies: {exc}"]
    declared = parse_pod_ports(json.dumps(pod_ports(pod)))
    captured = ({p.port for p in declared} | set(services_from_snapshot(dest, pod_ip))) - PROXY_PORTS
    if port not in captured:
        return True, [*lines, f"port {port} is not captured by {where}'s sidecar (no container port or Service "
                              "names it): the connection reaches the app, no AuthorizationPolicy is enforced"]  # fmt: skip
    if port not in opaque_ports(dest, pod_ip, declared):
        return True, [*lines, f"port {port} speaks HTTP at {where}'s sidecar (no tcp- name or appProtocol): "
                              "it reads the bytes as HTTP and authorizes each request; ask with an http:// URL"]  # fmt: skip
    mtls, _ = inbound_mtls(dest, captured)
    if mtls.mode_for(port) is TlsMode.STRICT:
        return False, [*lines, f"mTLS STRICT for port {port} at {where}: its sidecar takes no plaintext TCP "
                               "(sidecars carry no TCP between them): the connection is refused"]  # fmt: skip
    allowed, more = explain_tcp_authorization(
        where, guard.authorizer if guard is not None else None, source_ip=SERVICE_PROXY_SOURCE_IP,
        destination_ip=pod_ip, destination_port=port)  # fmt: skip
    return allowed, [*lines, *more]
