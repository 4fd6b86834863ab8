"""The mesh debugging commands, like istioctl's: ``proxy-status``, ``proxy-config``, and apply's convergence line.

What lives here: ``meshwork proxy-status`` (each connected proxy's sent and
acknowledged config versions and its last NACK), ``meshwork proxy-config
routes|clusters|endpoints|listeners POD`` (the parts of one proxy's current
snapshot that matter for each), and ``report_convergence``, which
``meshwork apply`` calls to wait until every proxy has acknowledged what it
applied and say how long that took.

What must not live here: deciding what a proxy sees (``meshwork.core.meshsnapshot``)
or how a proxy routes (``meshwork.core.mesh.compile``). ``routes``,
``clusters`` and ``endpoints`` print the compiled table; should the
compiler be missing or refuse the snapshot, they fall back to summaries of
the VirtualServices, DestinationRules and Services as received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import click

from meshwork.cli.commands import namespace_option
from meshwork.cli.context import error, reports_errors, session
from meshwork.cli.printers import tabwrite
from meshwork.client import Client
from meshwork.core.meshsnapshot import CLUSTER_DOMAIN, proxy_id, redact_credentials
from meshwork.errors import NotFound

API = "/apis/mesh.meshwork.io/v1"
# `meshwork apply` waits this long for proxies to acknowledge, unless told otherwise.
CONVERGENCE_TIMEOUT_S = 10.0
# The HTTP request waiting for convergence may take this much longer than the wait itself.
CONVERGENCE_SLACK_S = 10.0
# Kinds whose change can change what a proxy is sent (Services, what makes Endpoints,
# Istio configuration): applying only other kinds does not wait.
MESH_KINDS = frozenset({
    ("", "Service"), ("", "Endpoints"), ("", "Pod"),
    ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet"),
    ("argoproj.io", "Rollout"),
    ("networking.istio.io", "VirtualService"), ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"), ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "Sidecar"), ("networking.istio.io", "WorkloadEntry"),
    ("security.istio.io", "PeerAuthentication"), ("security.istio.io", "RequestAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
})
SIDECAR_OUTBOUND_PORT = 15001
SIDECAR_INBOUND_PORT = 15006


def _table(rows: Sequence[Sequence[str]]) -> str:
    return tabwrite([list(r) for r in rows], minwidth=0, padding=3).rstrip("\n")


# -- proxy-status ------------------------------------------------------------------------


def status_rows(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = [["NAME", "CLUSTER", "STATUS", "VERSION SENT", "VERSION ACKED", "NACK"]]
    for item in items:
        nack = item.get("nack") or {}
        message = f"version {nack.get('version')}: {nack.get('message')}" if nack else ""
        rows.append([
            f"{item.get('pod')}.{item.get('namespace')}", item.get("node") or "-", str(item.get("status")),
            item.get("sentVersion") or "-", item.get("ackedVersion") or "-", message,
        ])
    return rows


@click.command("proxy-status")
@click.argument("pod", required=False)
@namespace_option
@click.option("-o", "--output", type=click.Choice(["json"]), default=None)
@reports_errors
def proxy_status_cmd(pod: str | None, namespace: str | None, output: str | None) -> None:
    """Each connected proxy's config: sent and acknowledged versions, and its last NACK.

    SYNCED: it acknowledged the latest config sent; STALE: it has not (yet),
    or refused it (the NACK column says why); NOT SENT: nothing sent yet.
    """
    items = session().client().request("GET", f"{API}/proxies")["items"]
    if pod:
        ns = session().namespace(namespace)
        items = [i for i in items if i.get("pod") == pod and i.get("namespace") == ns]
        if not items:
            raise NotFound(f'no proxy of pod "{pod}" in namespace "{ns}" is connected')
    if output == "json":
        click.echo(json.dumps(items, indent=2))
    elif not items:
        error("No proxies are connected.")
    else:
        click.echo(_table(status_rows(items)))


# -- proxy-config --------------------------------------------------------------------------


def snapshot_for(client: Client, pod: str, namespace: str) -> dict[str, Any]:
    """The current snapshot of ``pod``'s proxy (connected or not)."""
    items = client.request("GET", f"{API}/proxies")["items"]
    ident = next((i["id"] for i in items if i.get("pod") == pod and i.get("namespace") == namespace), None)
    if ident is None:
        obj = client.request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}")
        ip = (obj.get("status") or {}).get("podIP") or "0.0.0.0"
        ident = proxy_id("sidecar", ip, pod, namespace)
    result: dict[str, Any] = client.request("GET", f"{API}/proxies/{quote(ident, safe='~')}/config", query={"once": "1"})
    return result


def _fqdn(host: str, namespace: str) -> str:
    """A VirtualService/DestinationRule host as a name: short names are in the object's namespace."""
    if "." in host or host.startswith("*"):
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def _host_matches(pattern: str, host: str) -> bool:
    return pattern == "*" or pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('name')}.{meta.get('namespace')}"


def _match_text(match: Mapping[str, Any]) -> str:
    parts = []
    uri = match.get("uri") or {}
    for how, sign in (("prefix", "*"), ("exact", ""), ("regex", "")):
        if how in uri:
            parts.append(f"{uri[how]}{sign}" if how != "regex" else f"~{uri[how]}")
    for header, cond in (match.get("headers") or {}).items():
        parts.append(f"{header}={next(iter(cond.values()), '')}" if cond else header)
    if match.get("method"):
        parts.append(f"method={next(iter(match['method'].values()), '')}")
    if match.get("port"):
        parts.append(f"port={match['port']}")
    return " ".join(parts) or "/*"


def _applies(vs: Mapping[str, Any], role: str, gateways: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a VirtualService binds to this proxy: `mesh` for sidecars, a selected Gateway for gateways."""
    spec = vs.get("spec") or {}
    bound = spec.get("gateways") or ["mesh"]
    if role == "sidecar":
        return "mesh" in bound
    ns = (vs.get("metadata") or {}).get("namespace")
    names = set()
    for gw in gateways:
        meta = gw.get("metadata") or {}
        names.update({f"{meta.get('namespace')}/{meta.get('name')}", f"{meta.get('name')}" if meta.get("namespace") == ns else ""})
    return any(b in names for b in bound)


def route_rows(snap: Mapping[str, Any]) -> list[dict[str, str]]:
    """Routes: each HTTP port's default route per Service, then each VirtualService http rule."""
    role = (snap.get("proxy") or {}).get("role", "sidecar")
    rows: list[dict[str, str]] = []
    bound = [vs for vs in snap.get("virtualServices") or () if _applies(vs, role, snap.get("gateways") or ())]
    claimed: set[str] = set()
    for vs in bound:
        ns = (vs.get("metadata") or {}).get("namespace", "default")
        hosts = [_fqdn(h, ns) for h in (vs.get("spec") or {}).get("hosts") or ()]
        claimed.update(hosts)
        for i, rule in enumerate((vs.get("spec") or {}).get("http") or ()):
            dests = [
                f"{(r.get('destination') or {}).get('host')}"
                + (f"|{r['destination']['subset']}" if (r.get("destination") or {}).get("subset") else "")
                + (f" {r['weight']}%" if r.get("weight") is not None else "")
                for r in rule.get("route") or ()
            ]
            for match in rule.get("match") or [{}]:
                rows.append({
                    "name": rule.get("name") or f"http.{i}", "domains": ",".join(hosts), "match": _match_text(match),
                    "destination": ", ".join(dests) or ("redirect" if rule.get("redirect") else "-"),
                    "virtualService": _name(vs),
                })
    if role == "sidecar":
        for svc in snap.get("services") or ():
            if svc["hostname"] in claimed:
                continue
            for port in svc.get("ports") or ():
                rows.append({"name": str(port["port"]), "domains": svc["hostname"], "match": "/*",
                             "destination": f"outbound|{port['port']}||{svc['hostname']}", "virtualService": ""})
    return rows


def _rules_for(snap: Mapping[str, Any], host: str) -> list[Mapping[str, Any]]:
    out = []
    for dr in snap.get("destinationRules") or ():
        ns = (dr.get("metadata") or {}).get("namespace", "default")
        if _host_matches(_fqdn(str((dr.get("spec") or {}).get("host", "")), ns), host):
            out.append(dr)
    return out


def cluster_rows(snap: Mapping[str, Any]) -> list[dict[str, str]]:
    """Outbound clusters: one per Service port, and one per DestinationRule subset of it."""
    rows: list[dict[str, str]] = []
    for svc in snap.get("services") or ():
        rules = _rules_for(snap, svc["hostname"])
        for port in svc.get("ports") or ():
            subsets = [("-", _name(rules[0]) if rules else "")] + [
                (str(s.get("name")), _name(dr)) for dr in rules for s in (dr.get("spec") or {}).get("subsets") or ()
            ]
            for subset, rule in subsets:
                rows.append({"fqdn": svc["hostname"], "port": str(port["port"]), "subset": subset,
                             "direction": "outbound", "type": "EDS", "destinationRule": rule})
    for se in snap.get("serviceEntries") or ():
        spec = se.get("spec") or {}
        kind = {"DNS": "STRICT_DNS", "DNS_ROUND_ROBIN": "LOGICAL_DNS", "NONE": "ORIGINAL_DST"}.get(spec.get("resolution") or "NONE", "EDS")
        for host in spec.get("hosts") or ():
            for port in spec.get("ports") or ():
                rows.append({"fqdn": host, "port": str(port.get("number")), "subset": "-", "direction": "outbound",
                             "type": kind, "destinationRule": ", ".join(_name(d) for d in _rules_for(snap, host))})
    return rows


def _subset_labels(snap: Mapping[str, Any], host: str) -> list[tuple[str, Mapping[str, str]]]:
    return [
        (str(s.get("name")), s.get("labels") or {})
        for dr in _rules_for(snap, host) for s in (dr.get("spec") or {}).get("subsets") or ()
    ]


def endpoint_rows(snap: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each endpoint of each Service port, in every cluster (subset) it belongs to."""
    rows: list[dict[str, str]] = []
    for svc in snap.get("services") or ():
        subsets = _subset_labels(snap, svc["hostname"])
        for port in svc.get("ports") or ():
            for ep in svc.get("endpoints") or ():
                number = (ep.get("ports") or {}).get(port.get("name") or "")
                if number is None:
                    continue
                status = "HEALTHY" if ep.get("ready", True) else "UNHEALTHY"
                clusters = [""] + [n for n, labels in subsets if all(ep["labels"].get(k) == v for k, v in labels.items())]
                for subset in clusters:
                    rows.append({"endpoint": f"{ep['ip']}:{number}", "status": status, "pod": f"{ep.get('pod') or '-'}",
                                 "cluster": f"outbound|{port['port']}|{subset}|{svc['hostname']}"})
    return rows


def _is_http(port: Mapping[str, Any]) -> bool:
    """Istio's protocol selection: appProtocol, else the port name's prefix."""
    proto = str(port.get("appProtocol") or port.get("name") or "").lower().split("-")[0]
    return proto in ("http", "http2", "grpc", "grpc-web", "h2c")


def listener_rows(snap: Mapping[str, Any]) -> list[dict[str, str]]:
    proxy = snap.get("proxy") or {}
    rows: list[dict[str, str]] = []
    if proxy.get("role") == "gateway":
        for gw in snap.get("gateways") or ():
            for server in (gw.get("spec") or {}).get("servers") or ():
                port = server.get("port") or {}
                rows.append({"address": "0.0.0.0", "port": str(port.get("number")),
                             "match": f"{port.get('protocol')} {','.join(server.get('hosts') or ())}",
                             "destination": f"Route: http.{port.get('number')}" if str(port.get("protocol")).upper() in ("HTTP", "HTTPS", "HTTP2", "GRPC") else f"Gateway: {_name(gw)}"})
        return rows
    ip = proxy.get("ip") or "0.0.0.0"
    rows.append({"address": ip, "port": str(SIDECAR_OUTBOUND_PORT), "match": "ALL", "destination": "outbound: routes by Host"})
    rows.append({"address": ip, "port": str(SIDECAR_INBOUND_PORT), "match": "ALL", "destination": "inbound: to the app"})
    for svc in snap.get("services") or ():
        for port in svc.get("ports") or ():
            http = _is_http(port)
            rows.append({"address": str(svc.get("clusterIP") or "-"), "port": str(port["port"]),
                         "match": "HTTP" if http else "TCP",
                         "destination": f"Route: {port['port']}" if http else f"Cluster: outbound|{port['port']}||{svc['hostname']}"})
    return rows


# -- from the data plane's compiled table, when the compiler is there -------------------------


def compiled(snap: Mapping[str, Any]) -> Any | None:
    """The proxy's routing table as the data plane compiles it, or None without the compiler."""
    try:
        from meshwork.core.mesh.compile import compile_snapshot
        from meshwork.core.mesh.snapshot import snapshot_from_wire
    except ImportError:
        return None
    return compile_snapshot(snapshot_from_wire(snap))


def _matcher_text(m: Any) -> str:
    texts = {"prefix": f"{m.value}*", "exact": str(m.value), "present": "*",
             "regex": f"~{m.pattern.pattern if m.pattern is not None else m.value}"}
    return texts.get(str(m.kind), str(m.value))


def _block_text(block: Any) -> str:
    parts = [_matcher_text(block.uri) if block.uri is not None else ""]
    parts += [f"{name}={_matcher_text(m)}" for name, m in block.headers]
    if block.method is not None:
        parts.append(f"method={_matcher_text(block.method)}")
    return " ".join(p for p in parts if p) or "/*"


def _vs_label(ref: str) -> str:
    """``namespace/name`` as istioctl prints it, ``name.namespace`` ("" for none)."""
    namespace, _, name = ref.partition("/")
    return f"{name}.{namespace}" if name else ""


def compiled_route_rows(table: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for port in sorted(table.ports):
        routes = table.ports[port]
        hosts = {id(vh): vh for vh in (*routes.exact.values(), *(vh for _, vh in routes.wildcards))}
        if routes.catch_all is not None:
            hosts[id(routes.catch_all)] = routes.catch_all
        for vh in sorted(hosts.values(), key=lambda v: v.name):
            for route in vh.routes:
                if route.redirect is not None:
                    dest = "redirect"
                elif route.direct_response is not None:
                    dest = f"direct {route.direct_response.status}"
                else:
                    dest = ", ".join(
                        d.cluster + (f" {d.weight}%" if len(route.destinations) > 1 else "") for d in route.destinations
                    )
                for block in route.matches or (None,):
                    rows.append({
                        "name": str(port), "domains": vh.name, "match": _block_text(block) if block else "/*",
                        "destination": dest or "-", "virtualService": _vs_label(route.virtual_service),
                    })
    return rows


def compiled_cluster_rows(table: Any) -> list[dict[str, str]]:
    return [
        {"fqdn": c.host, "port": str(c.port), "subset": c.subset or "-", "direction": "outbound", "type": "EDS",
         "destinationRule": _vs_label(c.destination_rule)}
        for c in sorted(table.clusters.values(), key=lambda c: (c.host, c.port, c.subset or ""))
    ]


def compiled_endpoint_rows(table: Any) -> list[dict[str, str]]:
    return [
        {"endpoint": ep.key, "status": "HEALTHY", "pod": ep.name or "-", "cluster": c.name}
        for c in sorted(table.clusters.values(), key=lambda c: c.name) for ep in c.endpoints
    ]


COMPILED: dict[str, Callable[[Any], list[dict[str, str]]]] = {
    "routes": compiled_route_rows, "clusters": compiled_cluster_rows, "endpoints": compiled_endpoint_rows,
}

SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any]], list[dict[str, str]]], list[tuple[str, str]]]] = {
    "routes": (route_rows, [("NAME", "name"), ("DOMAINS", "domains"), ("MATCH", "match"),
                            ("DESTINATION", "destination"), ("VIRTUAL SERVICE", "virtualService")]),
    "clusters": (cluster_rows, [("SERVICE FQDN", "fqdn"), ("PORT", "port"), ("SUBSET", "subset"),
                                ("DIRECTION", "direction"), ("TYPE", "type"), ("DESTINATION RULE", "destinationRule")]),
    "endpoints": (endpoint_rows, [("ENDPOINT", "endpoint"), ("STATUS", "status"), ("POD", "pod"), ("CLUSTER", "cluster")]),
    "listeners": (listener_rows, [("ADDRESSES", "address"), ("PORT", "port"), ("MATCH", "match"), ("DESTINATION", "destination")]),
}


@click.command("proxy-config")
@click.argument("section", type=click.Choice(sorted(SECTIONS)))
@click.argument("pod")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["json", "raw"]), default=None,
              help="json: the rows as JSON; raw: the whole snapshot the proxy receives.")
@reports_errors
def proxy_config_cmd(section: str, pod: str, namespace: str | None, output: str | None) -> None:
    """Show one proxy's config: `proxy-config routes|clusters|endpoints|listeners POD`.

    Computed from the snapshot the control plane sends that pod's proxy now.
    """
    # A gateway's credentials (Secrets' keys) are never printed, whatever the server sent.
    snap = redact_credentials(snapshot_for(session().client(), pod, session().namespace(namespace)))
    if output == "raw":
        click.echo(json.dumps(snap, indent=2))
        return
    build, columns = SECTIONS[section]
    rows: list[dict[str, str]] | None = None
    if section in COMPILED:
        try:
            table = compiled(snap)
        except Exception as exc:  # the compiler refused this config: show what was received
            error(f"warning: the data plane's compiler refused this snapshot ({exc}); showing the config as received")
            table = None
        if table is not None:
            rows = COMPILED[section](table)
    if rows is None:
        rows = build(snap)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(_table([[title for title, _ in columns]] + [[r[key] or "-" for _, key in columns] for r in rows]))


# -- convergence after apply ---------------------------------------------------------------


def mesh_relevant(kinds: Iterable[tuple[str, str]]) -> bool:
    return any(k in MESH_KINDS for k in kinds)


def report_convergence(
    client: Client, *, timeout: float, echo: Callable[[str], None], warn: Callable[[str], None]
) -> bool:
    """Wait until every connected proxy acknowledged config reflecting what was just applied.

    Prints ``converged in N ms (k/k proxies)``, or which proxies refused it (and
    why) or did not answer in time; nothing when no proxy is connected.
    False when some proxy did not converge.
    """
    start = time.monotonic()
    report = client.request(
        "GET", f"{API}/convergence", query={"timeoutSeconds": f"{timeout:g}"}
    )
    elapsed_ms = (time.monotonic() - start) * 1000
    total, done = int(report["total"]), int(report["converged"])
    if total == 0:
        return True
    if done == total:
        echo(f"converged in {elapsed_ms:.0f} ms ({done}/{total} proxies)")
        return True
    warn(f"not converged after {elapsed_ms:.0f} ms ({done}/{total} proxies):")
    for item in report["proxies"]:
        if item["converged"]:
            continue
        name = f"{item['pod']}.{item['namespace']}"
        if item.get("refused"):
            warn(f"  {name} NACKed version {item['nack']['version']}: {item['nack']['message']}")
        else:
            warn(f"  {name} did not acknowledge in time (sent {item.get('sentVersion') or '-'},"
                 f" acknowledged {item.get('ackedVersion') or '-'})")
    return False


def wait_after_apply(client: Client, kinds: Sequence[tuple[str, str]], timeout: float) -> bool:
    """``meshwork apply``'s convergence step for the kinds it changed; False when a proxy did not converge."""
    if not mesh_relevant(kinds):
        return True
    waiting = Client(client.server, client.token, timeout=timeout + CONVERGENCE_SLACK_S)
    try:
        return report_convergence(waiting, timeout=timeout, echo=click.echo, warn=error)
    except NotFound:
        return True  # a server without mesh config: nothing to wait for
