"""One proxy's mesh config snapshot, computed from Services, Endpoints, Pods and Istio objects. Pure.

What lives here:

* the proxy identity: Istio's proxy id ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``
  (``router~...`` for gateways), parsed and built (``parse_proxy_id``, ``proxy_id``), and
  ``Proxy``, the proxy's metadata (from its Pod when it has one);
* visibility, as Istio decides it: a VirtualService, DestinationRule or
  ServiceEntry is seen by proxies in the namespaces its ``exportTo`` names
  (absent: ``*``, everywhere; ``.``: its own namespace; ``~``: nowhere), a
  Service by the namespaces its ``networking.istio.io/exportTo`` annotation
  names; a gateway proxy sees the Gateway objects whose ``selector`` labels
  are a subset of its own labels (in any namespace, Istio's default);
* ``service_view``: one Service as proxies see it, with the endpoints of its
  ready addresses, each carrying its pod's labels, service account and node
  (not-ready addresses are left out, as istiod leaves them out by default);
* gateway credentials: the Secrets a gateway's Gateways name in
  ``credentialName`` (and ``<name>-cacert``), from the gateway's own
  namespace, go in that gateway's snapshot only (``credentials``), never in
  a sidecar's; ``redact_credentials`` is what may be shown of them;
* ``MeshIndex``: every visible-able object of one moment, and the snapshot
  body for a *visibility key* computed once and shared by every proxy with
  that key (every sidecar of a namespace sees the same thing), already
  serialised, so a snapshot per proxy costs one small header.

What must not live here: clocks, the cache, sockets. The shell
(``meshwork.control.push``) decides when to rebuild and whom to send to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["sidecar", "gateway"]

# Kubernetes' default cluster domain; a Service's hostname is <name>.<ns>.svc.<domain>.
CLUSTER_DOMAIN = "cluster.local"
# The annotation Istio reads for a Service's visibility (Services have no spec.exportTo).
SERVICE_EXPORT_TO = "networking.istio.io/exportTo"
# Istio's proxy id prefixes: "sidecar" for sidecars, "router" for gateways.
_ROLE_PREFIX: dict[str, Role] = {"sidecar": "sidecar", "router": "gateway"}
_PREFIX_OF: dict[Role, str] = {"sidecar": "sidecar", "gateway": "router"}

# The keys of a snapshot body, in the order they are written.
CONFIG_KINDS = (
    "virtualServices", "destinationRules", "serviceEntries", "gateways", "proxyPlugins",
    "peerAuthentications", "requestAuthentications", "authorizationPolicies", "localRateLimits",
)
# Istio's root namespace: its security policies apply to every workload of the mesh.
ROOT_NAMESPACE = "istio-system"

Wire = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProxyId:
    role: Role
    ip: str
    pod: str
    namespace: str


def parse_proxy_id(text: str) -> ProxyId:
    """Split Istio's ``<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>``; ValueError when it is not one."""
    parts = text.split("~")
    if len(parts) != 4:
        raise ValueError(f"proxy id {text!r} is not <type>~<ip>~<pod>.<namespace>~<namespace>.svc.{CLUSTER_DOMAIN}")
    kind, ip, pod_ns, domain = parts
    role = _ROLE_PREFIX.get(kind)
    if role is None:
        raise ValueError(f"proxy id {text!r}: the type must be sidecar or router, not {kind!r}")
    namespace = domain.split(".", 1)[0]
    pod = pod_ns.removesuffix("." + namespace)
    if not namespace or not pod or pod == pod_ns or not ip:
        raise ValueError(f"proxy id {text!r}: expected <pod>.<namespace> after the IP, and the namespace after that")
    return ProxyId(role, ip, pod, namespace)


def proxy_id(role: Role, ip: str, pod: str, namespace: str) -> str:
    """The id a proxy for ``pod`` presents (the inverse of ``parse_proxy_id``)."""
    return f"{_PREFIX_OF[role]}~{ip}~{pod}.{namespace}~{namespace}.svc.{CLUSTER_DOMAIN}"


@dataclass(frozen=True, slots=True)
class Proxy:
    """What the control plane knows about one proxy: its id and its workload's metadata."""

    id: str
    role: Role
    namespace: str
    pod: str
    ip: str
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str = "default"
    node: str = ""

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.pod,  # the reader in core/mesh/snapshot.py calls the pod "name"
            "namespace": self.namespace,
            "pod": self.pod,
            "labels": self.label_map,
            "serviceAccount": self.service_account,
            "ip": self.ip,
            "role": self.role,
            "node": self.node,
        }


def proxy_from_pod(ident: str, pod: Wire | None, labels: Mapping[str, str] | None = None) -> Proxy:
    """The proxy ``ident`` with its Pod's labels, service account, IP and node.

    Without a Pod (a gateway run outside the orchestrator), ``labels`` stands
    in for the pod's, as the node metadata an Envoy presents does for istiod.
    """
    parsed = parse_proxy_id(ident)
    if pod is None:
        return Proxy(ident, parsed.role, parsed.namespace, parsed.pod, parsed.ip, tuple(sorted((labels or {}).items())))
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return Proxy(
        ident,
        parsed.role,
        parsed.namespace,
        parsed.pod,
        str(status.get("podIP") or parsed.ip),
        tuple(sorted((meta.get("labels") or {}).items())),
        str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        str(spec.get("nodeName") or ""),
    )


# -- visibility -----------------------------------------------------------------------------


def exported_to(export_to: Sequence[str] | None, owner_namespace: str, proxy_namespace: str) -> bool:
    """Whether an object in ``owner_namespace`` with ``export_to`` is visible in ``proxy_namespace``."""
    if not export_to:
        return True  # Istio's default*ExportTo: "*"
    for entry in export_to:
        if entry == "*":
            return True
        if entry == "." and owner_namespace == proxy_namespace:
            return True
        if entry == proxy_namespace:
            return True
    return False


def object_export_to(obj: Wire) -> tuple[str, ...]:
    """An Istio object's ``spec.exportTo``, or a Service's exportTo annotation (comma-separated)."""
    if obj.get("kind") == "Service":
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(SERVICE_EXPORT_TO)
        if not isinstance(raw, str):
            return ()
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return tuple(str(e) for e in ((obj.get("spec") or {}).get("exportTo") or ()))


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Istio's ``labels.Instance.SubsetOf``: every selector label is on the workload (empty selects all)."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# -- one Service as proxies see it -------------------------------------------------------------


def _pod_ready(pod: Wire) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def service_hostname(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def service_view(service: Wire, endpoints: Wire | None, pods: Mapping[tuple[str, str], Wire]) -> dict[str, Any]:
    """One Service with its ready endpoints, as it appears in a snapshot.

    ``pods`` maps (namespace, name) to Pod wire dicts; an address whose pod is
    unknown (a selector-less Service's hand-written Endpoints) has no labels.
    An address in several subsets (pods resolving a named targetPort
    differently) is one endpoint with the ports of all of them.
    """
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    ports = [
        {
            "name": p.get("name") or "",
            "port": p.get("port"),
            "targetPort": p.get("targetPort", p.get("port")),
            "protocol": p.get("protocol") or "TCP",
            "appProtocol": p.get("appProtocol"),
        }
        for p in spec.get("ports") or ()
    ]
    by_ip: dict[str, dict[str, Any]] = {}
    for subset in (endpoints or {}).get("subsets") or ():
        subset_ports = {str(p.get("name") or ""): p.get("port") for p in subset.get("ports") or ()}
        for address in subset.get("addresses") or ():
            ip = str(address.get("ip"))
            entry = by_ip.get(ip)
            if entry is None:
                entry = by_ip[ip] = _endpoint(address, namespace, pods)
            entry["ports"].update(subset_ports)
    return {
        "name": name,
        "namespace": namespace,
        "hostname": service_hostname(name, namespace),
        "clusterIP": spec.get("clusterIP"),
        "ports": ports,
        "labels": dict(meta.get("labels") or {}),
        "endpoints": [by_ip[ip] for ip in sorted(by_ip)],
    }


def _endpoint(address: Wire, namespace: str, pods: Mapping[tuple[str, str], Wire]) -> dict[str, Any]:
    ref = address.get("targetRef") or {}
    pod = None
    if ref.get("kind", "Pod") == "Pod" and ref.get("name"):
        pod = pods.get((str(ref.get("namespace") or namespace), str(ref["name"])))
    pod_meta = (pod or {}).get("metadata") or {}
    pod_spec = (pod or {}).get("spec") or {}
    return {
        "ip": str(address.get("ip")),
        "ports": {},
        "labels": dict(pod_meta.get("labels") or {}),
        "pod": ref.get("name"),
        "name": ref.get("name") or "",
        "namespace": ref.get("namespace") or namespace,
        # An address in `addresses` is ready for traffic; a pod listed there only
        # through publishNotReadyAddresses says here that it is not Ready itself.
        "ready": _pod_ready(pod) if pod is not None else True,
        "node": address.get("nodeName") or pod_spec.get("nodeName"),
        "serviceAccount": pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or ("default" if pod else None),
    }


def pods_of(endpoints: Wire | None) -> set[tuple[str, str]]:
    """(namespace, name) of every pod a ready address of ``endpoints`` names."""
    namespace = str(((endpoints or {}).get("metadata") or {}).get("namespace") or "default")
    out: set[tuple[str, str]] = set()
    for subset in (endpoints or {}).get("subsets") or ():
        for address in subset.get("addresses") or ():
            ref = address.get("targetRef") or {}
            if ref.get("name") and ref.get("kind", "Pod") == "Pod":
                out.add((str(ref.get("namespace") or namespace), str(ref["name"])))
    return out


# -- the index ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One object of a snapshot: where it lives, where it is exported, and its snapshot form."""

    namespace: str
    name: str
    export_to: tuple[str, ...]
    body: Mapping[str, Any]

    def visible_in(self, namespace: str) -> bool:
        return exported_to(self.export_to, self.namespace, namespace)


# Annotations that repeat the object (kubectl's record of the last apply): not sent to proxies.
_DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def config_body(obj: Wire) -> dict[str, Any]:
    """An Istio object as a snapshot carries it: apiVersion, kind, identifying metadata, spec."""
    meta = obj.get("metadata") or {}
    slim: dict[str, Any] = {
        k: meta[k] for k in ("name", "namespace", "labels", "resourceVersion", "generation") if k in meta
    }
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROPPED_ANNOTATIONS}
    if annotations:
        slim["annotations"] = annotations
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": slim, "spec": obj.get("spec") or {}}


def entry(obj: Wire, body: Mapping[str, Any] | None = None) -> Entry:
    """An Entry for a wire object (``body``: its snapshot form, by default ``config_body(obj)``)."""
    meta = obj.get("metadata") or {}
    return Entry(
        str(meta.get("namespace") or "default"),
        str(meta.get("name")),
        object_export_to(obj),
        body if body is not None else config_body(obj),
    )


# (proxy namespace, the (namespace, name) of each Gateway selected; empty for sidecars)
VisibilityKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Body:
    """The shared part of a snapshot for one visibility key, and its serialised form."""

    doc: Mapping[str, Any]
    raw: bytes  # the JSON object's members without the braces: `"services":[...],...`
    digest: str


@dataclass
class MeshIndex:
    """Everything a snapshot is made of at one moment, sorted by (namespace, name).

    ``services`` hold ``service_view`` bodies; the config kinds hold wire
    objects. Bodies are memoised per visibility key for this index's lifetime;
    build a new index (reusing unchanged entries) when anything changes.
    """

    services: Sequence[Entry] = ()
    virtual_services: Sequence[Entry] = ()
    destination_rules: Sequence[Entry] = ()
    service_entries: Sequence[Entry] = ()
    gateways: Sequence[Entry] = ()
    # meshwork's ProxyPlugins: those of the proxy's own namespace; the proxy applies their selectors.
    proxy_plugins: Sequence[Entry] = ()
    # Security policies. PeerAuthentications go to every proxy: a client decides
    # whether to speak mTLS from the server's mode (Istio's auto mTLS). The other
    # two go to the proxies of their namespace and, from the root namespace, to all.
    peer_authentications: Sequence[Entry] = ()
    request_authentications: Sequence[Entry] = ()
    authorization_policies: Sequence[Entry] = ()
    jwks: Mapping[str, str] = field(default_factory=dict)  # jwksUri -> the control plane's last good document
    # Secrets as gateway credentials (``credential_entry``); only a gateway gets those its Gateways name.
    credentials: Sequence[Entry] = ()
    # meshwork's LocalRateLimits: those of the proxy's own namespace; the proxy applies their selectors.
    local_rate_limits: Sequence[Entry] = ()
    # Deployments that scale to zero (``core.scaletozero.snapshot_body``): the Services proxies activate.
    scale_to_zero: Sequence[Entry] = ()
    _bodies: dict[VisibilityKey, Body] = field(default_factory=dict, repr=False)

    def key_for(self, proxy: Proxy) -> VisibilityKey:
        """What decides what ``proxy`` sees: its namespace, and for a gateway the Gateways it runs."""
        if proxy.role != "gateway":
            return (proxy.namespace, ())
        labels = proxy.label_map
        chosen = tuple(
            (g.namespace, g.name) for g in self.gateways if selects((g.body.get("spec") or {}).get("selector"), labels)
        )
        return (proxy.namespace, chosen)

    def body(self, key: VisibilityKey) -> Body:
        """The snapshot body for ``key``, computed once."""
        found = self._bodies.get(key)
        if found is None:
            found = self._bodies[key] = self._compute(key)
        return found

    def _compute(self, key: VisibilityKey) -> Body:
        namespace, gateway_keys = key
        chosen = set(gateway_keys)
        doc: dict[str, Any] = {
            "domain": CLUSTER_DOMAIN,
            "services": [e.body for e in self.services if e.visible_in(namespace)],
            "virtualServices": [e.body for e in self.virtual_services if e.visible_in(namespace)],
            "destinationRules": [e.body for e in self.destination_rules if e.visible_in(namespace)],
            "serviceEntries": [e.body for e in self.service_entries if e.visible_in(namespace)],
            "gateways": [e.body for e in self.gateways if (e.namespace, e.name) in chosen],
        }
        plugins = [e.body for e in self.proxy_plugins if e.namespace == namespace]
        if plugins:  # only then, so snapshots without plugins stay as they were
            doc["proxyPlugins"] = plugins
        limits = [e.body for e in self.local_rate_limits if e.namespace == namespace]
        if limits:
            doc["localRateLimits"] = limits
        idle = [e.body for e in self.scale_to_zero if e.visible_in(namespace)]
        if idle:
            doc["scaleToZero"] = idle
        own = (namespace, ROOT_NAMESPACE)
        security = {
            "peerAuthentications": [e.body for e in self.peer_authentications],
            "requestAuthentications": [e.body for e in self.request_authentications if e.namespace in own],
            "authorizationPolicies": [e.body for e in self.authorization_policies if e.namespace in own],
        }
        doc.update({k: v for k, v in security.items() if v})  # absent when empty, like proxyPlugins
        uris = sorted(jwks_uris(security["requestAuthentications"]))
        if uris:
            doc["jwks"] = {u: self.jwks[u] for u in uris if u in self.jwks}
        if gateway_keys:
            creds = gateway_credentials(doc["gateways"], namespace, self.credentials)
            if creds:
                doc["credentials"] = creds
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()[1:-1]
        return Body(doc, raw, hashlib.blake2b(raw, digest_size=16).hexdigest())

    def snapshot(self, proxy: Proxy, version: str) -> dict[str, Any]:
        """The snapshot document for ``proxy`` (as ``snapshot_bytes`` would encode it)."""
        return {"version": version, "proxy": proxy.wire(), **self.body(self.key_for(proxy)).doc}


def snapshot_bytes(
    proxy: Proxy, version: str, body: Body, revision: int | None = None, mesh: Mapping[str, Any] | None = None
) -> bytes:
    """One snapshot as compact JSON, sharing the body's serialised bytes.

    ``revision`` is the store revision it was built from (for convergence reports);
    ``mesh`` holds the members every proxy gets alike (``trustBundle``, ``caGeneration``, ``meshConfig``).
    """
    head: dict[str, Any] = {"version": version, "proxy": proxy.wire(), **(mesh or {})}
    if revision is not None:
        head["revision"] = str(revision)
    encoded = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    return encoded[:-1] + b"," + body.raw + b"}"


def jwks_uris(request_authentications: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ``jwksUri`` of every jwtRule of these RequestAuthentications (wire objects)."""
    found: set[str] = set()
    for ra in request_authentications:
        for rule in (ra.get("spec") or {}).get("jwtRules") or ():
            uri = rule.get("jwksUri") if isinstance(rule, Mapping) else None
            if isinstance(uri, str) and uri and not rule.get("jwks"):
                found.add(uri)
    return found


# -- gateway credentials (Secrets named by Gateway servers' credentialName) ------------------------

# Istio: the client CA of a MUTUAL server may live in a second Secret named "<credentialName>-cacert".
CA_SECRET_SUFFIX = "-cacert"
CREDENTIAL_PREFIX = "kubernetes://"


def credential_entry(secret: Wire) -> Entry:
    """A Secret as the index holds it: its ``data`` (base64 values) and nothing else."""
    meta = secret.get("metadata") or {}
    data = {str(k): str(v) for k, v in (secret.get("data") or {}).items()}
    return Entry(str(meta.get("namespace") or "default"), str(meta.get("name")), ("~",), {"data": data})


def credential_names(gateways: Iterable[Mapping[str, Any]]) -> set[str]:
    """The Secret names these Gateways' servers refer to, with their ``-cacert`` companions."""
    names: set[str] = set()
    for gw in gateways:
        for server in (gw.get("spec") or {}).get("servers") or ():
            tls = server.get("tls") or {} if isinstance(server, Mapping) else {}
            for name in [tls.get("credentialName"), *(tls.get("credentialNames") or ())]:
                if isinstance(name, str) and name:
                    name = name.removeprefix(CREDENTIAL_PREFIX)
                    names.update((name, name + CA_SECRET_SUFFIX))
    return names


def gateway_credentials(
    gateways: Iterable[Mapping[str, Any]], namespace: str, secrets: Iterable[Entry]
) -> dict[str, dict[str, str]]:
    """``{name: data}`` of the Secrets in the gateway proxy's ``namespace`` its Gateways name (Istio
    reads a gateway's credentials from the gateway workload's own namespace)."""
    wanted = credential_names(gateways)
    return {e.name: dict(e.body["data"]) for e in secrets if e.namespace == namespace and e.name in wanted}


REDACTED = "<redacted>"


def redact_credentials(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``snapshot`` with each credential's values replaced by ``<redacted>`` (keys kept): what may be shown."""
    creds = snapshot.get("credentials")
    if not isinstance(creds, Mapping):
        return dict(snapshot)
    shown = {name: dict.fromkeys(data, REDACTED) for name, data in creds.items() if isinstance(data, Mapping)}
    return {**snapshot, "credentials": shown}


def build_index(
    services: Iterable[Wire],
    endpoints: Iterable[Wire],
    pods: Iterable[Wire],
    virtual_services: Iterable[Wire] = (),
    destination_rules: Iterable[Wire] = (),
    service_entries: Iterable[Wire] = (),
    gateways: Iterable[Wire] = (),
    proxy_plugins: Iterable[Wire] = (),
    peer_authentications: Iterable[Wire] = (),
    request_authentications: Iterable[Wire] = (),
    authorization_policies: Iterable[Wire] = (),
    jwks: Mapping[str, str] | None = None,
    secrets: Iterable[Wire] = (),
    local_rate_limits: Iterable[Wire] = (),
) -> MeshIndex:
    """A MeshIndex from wire objects (everything recomputed; the push server reuses entries instead)."""
    pod_map = {
        (str((p.get("metadata") or {}).get("namespace") or "default"), str((p.get("metadata") or {}).get("name"))): p
        for p in pods
    }
    eps = {
        (str((e.get("metadata") or {}).get("namespace") or "default"), str((e.get("metadata") or {}).get("name"))): e
        for e in endpoints
    }

    def sort(entries: Iterable[Entry]) -> list[Entry]:
        return sorted(entries, key=lambda e: (e.namespace, e.name))

    svc_entries = []
    for svc in services:
        e = entry(svc)
        svc_entries.append(Entry(e.namespace, e.name, e.export_to, service_view(svc, eps.get((e.namespace, e.name)), pod_map)))
    return MeshIndex(
        sort(svc_entries),
        sort(entry(o) for o in virtual_services),
        sort(entry(o) for o in destination_rules),
        sort(entry(o) for o in service_entries),
        sort(entry(o) for o in gateways),
        sort(entry(o) for o in proxy_plugins),
        sort(entry(o) for o in peer_authentications),
        sort(entry(o) for o in request_authentications),
        sort(entry(o) for o in authorization_policies),
        dict(jwks or {}),
        sort(credential_entry(o) for o in secrets),
        local_rate_limits=sort(entry(o) for o in local_rate_limits),
    )
