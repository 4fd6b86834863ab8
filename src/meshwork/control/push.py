"""Mesh config to proxies: per-proxy snapshots, streamed on change, acknowledged or refused.

What lives here: ``PushServer``, mounted in the API server under
``/apis/mesh.meshwork.io/v1/``:

* ``GET proxies/{id}/config?version=V`` streams newline-delimited JSON
  snapshots: the current one at once unless the proxy already holds it, then
  a new one each time something the proxy can see changes. ``?once=1``
  answers the current snapshot and ends (``meshwork proxy-config``; it works
  for any pod, connected or not).
* ``POST proxies/{id}/ack`` with ``{"version": V, "error": null | "why"}``:
  ACK or NACK, as Envoy's xDS DiscoveryRequest carries ``error_detail``.
* ``GET proxies``: each connected proxy's sent and acknowledged versions and
  last NACK (``meshwork proxy-status``).
* ``GET convergence?after=R[&timeoutSeconds=T]``: whether every connected
  proxy has acknowledged config that reflects the store at revision R or
  later; with a timeout, the answer waits until they all have, or one
  refused it, or the time ran out (``meshwork apply``'s convergence line).
* ``POST proxies/{id}/certificate``, ``GET certificates``, ``POST
  certificates/rotate-root``: the CA's endpoints, answered by
  ``meshwork.control.api.certs`` when the server runs a CA (``certs``).

A gateway's snapshot carries the Secrets its Gateways name (``credentials``,
followed like the Gateways: a Secret's change refreshes gateway proxies only);
``?once=1`` shows them redacted.

Every snapshot also carries the CA's ``trustBundle`` and ``caGeneration``,
read from the ConfigMap the CA publishes (``istio-system/istio-ca-root-cert``),
and ``meshConfig``: the parts of Istio's mesh config proxies need, read from
ConfigMap ``istio-system/istio`` (key ``mesh``, plus meshwork's own key
``meshwork``; see ``core.security.meshconfig``). A change to either is a new
snapshot for every proxy. A mesh config that is not YAML goes out as
``meshConfig.error``: every proxy NACKs it, keeping its last good config.

How a change reaches a proxy: the watch cache calls ``_on_event``
synchronously for every write. Events about Services, Endpoints, the pods
behind endpoints or behind proxies, VirtualServices, DestinationRules,
ServiceEntries and Gateways mark what they touch dirty and schedule a flush;
others only move ``current_through`` on. A flush runs at once after a quiet
spell and at most every ``DEBOUNCE_S`` during a burst (Istio waits 100 ms
for quiet; we want p99 <= 50 ms from apply to effect). It recomputes the
dirty entries, rebuilds the ``MeshIndex`` and, for each proxy whose
namespace the changed objects were or are visible in, the snapshot body for
its visibility key (once per key, shared). A proxy whose body and metadata
did not change gets nothing. A new snapshot's version is the store revision
it was built from, so versions only grow, also across server restarts.

The decisions (ids, visibility, snapshot contents) are in
``meshwork.core.meshsnapshot``; this module holds state and moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from meshwork.control.api.cache import CachedEvent, WatchCache
from meshwork.control.api.objects import now_rfc3339
from meshwork.control.jwks import JwksCache
from meshwork.core import meshsnapshot as ms
from meshwork.core.scaletozero import idle_period
from meshwork.core.scaletozero import snapshot_body as scale_to_zero_body
from meshwork.core.security.meshconfig import SOURCE as MESH_CONFIG_SOURCE
from meshwork.core.security.meshconfig import proxy_mesh_config
from meshwork.errors import BadRequest, MethodNotAllowed, NotFound
from meshwork.httpd import Request, Response, StreamingResponse
from meshwork.model.codec import decode_json

if TYPE_CHECKING:
    from meshwork.control.api.certs import CertificateService
    from meshwork.control.scaletozero import ScaleToZero

log = logging.getLogger(__name__)

PREFIX = "/apis/mesh.meshwork.io/v1/"
# Bursts of changes are pushed at most this often (Istio's PILOT_DEBOUNCE_AFTER is
# 100 ms; the aim is p99 <= 50 ms from apply to effect).
DEBOUNCE_S = 0.010
# The longest a convergence request may wait (meshwork apply's default is 10 s).
MAX_CONVERGENCE_WAIT_S = 300.0
# A NACK message longer than this is cut (Envoy's error_detail is free text; keep the table sane).
MAX_NACK_MESSAGE = 4096

# Store key prefixes (the resource part of ``<resource>/<namespace>/<name>``) of what snapshots read.
SERVICES = "services"
ENDPOINTS = "endpoints"
PODS = "pods"
# Secrets: a gateway's snapshot carries those its Gateways name as credentialName (``credentials``).
SECRETS = "secrets"
CREDENTIALS = "credentials"
# Deployments that may scale to zero (core.scaletozero): proxies hold requests for their Services.
DEPLOYMENTS = "deployments.apps"
SCALE_TO_ZERO = "scaleToZero"
CONFIG_RESOURCES = {
    "virtualservices.networking.istio.io": "virtualServices",
    "destinationrules.networking.istio.io": "destinationRules",
    "serviceentries.networking.istio.io": "serviceEntries",
    "gateways.networking.istio.io": "gateways",
    "proxyplugins.meshwork.io": "proxyPlugins",
    "localratelimits.meshwork.io": "localRateLimits",
    "peerauthentications.security.istio.io": "peerAuthentications",
    "requestauthentications.security.istio.io": "requestAuthentications",
    "authorizationpolicies.security.istio.io": "authorizationPolicies",
}

# The CA's published trust bundle (Istio's ConfigMap name and key) and generation annotation.
CA_BUNDLE_KEY = "configmaps/istio-system/istio-ca-root-cert"
CA_BUNDLE_DATA = "root-cert.pem"
CA_GENERATION_ANNOTATION = "mesh.meshwork.io/ca-generation"
# Istio's mesh config: ConfigMap ``istio`` in the root namespace, key ``mesh``; meshwork's own key beside it.
MESH_CONFIG_KEY = "configmaps/istio-system/istio"
MESH_CONFIG_DATA = "mesh"
MESHWORK_CONFIG_DATA = "meshwork"

NsName = tuple[str, str]


def _split_key(key: str) -> tuple[str, NsName]:
    resource, namespace, name = key.split("/", 2)
    return resource, (namespace, name)


@dataclass(eq=False)
class _Stream:
    """One open config stream: the newest snapshot not yet written, and a wake-up."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: bytes | None = None
    ended: bool = False

    def push(self, data: bytes) -> None:
        self.pending = data  # an unsent older snapshot is superseded, never queued
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()


@dataclass(eq=False)
class ProxyState:
    proxy: ms.Proxy
    key: ms.VisibilityKey
    connected_since: str
    labels: dict[str, str]  # stand-in labels for a proxy without a Pod
    digest: str | None = None
    sent_version: str | None = None
    acked_version: str | None = None
    nack_version: str | None = None
    nack_message: str | None = None
    streams: set[_Stream] = field(default_factory=set)

    @property
    def sync_status(self) -> str:
        """istioctl proxy-status' words: SYNCED, STALE (sent, not acknowledged), NOT SENT."""
        if self.sent_version is None:
            return "NOT SENT"
        return "SYNCED" if self.acked_version == self.sent_version else "STALE"

    def wire(self) -> dict[str, Any]:
        p = self.proxy
        nack = None
        if self.nack_message is not None:
            nack = {"version": self.nack_version, "message": self.nack_message}
        return {
            "id": p.id, "role": p.role, "pod": p.pod, "namespace": p.namespace, "node": p.node, "ip": p.ip,
            "connectedSince": self.connected_since, "streams": len(self.streams),
            "sentVersion": self.sent_version, "ackedVersion": self.acked_version,
            "status": self.sync_status, "nack": nack,
        }


def _digest(proxy: ms.Proxy, body: ms.Body, mesh: dict[str, Any]) -> str:
    return f"{body.digest}:{proxy!r}:{mesh.get('caGeneration')}:{hash(mesh.get('trustBundle'))}:{_config_key(mesh)}"


def _config_key(mesh: dict[str, Any]) -> str:
    """The meshConfig as text (small: a few fields), so that a change to it is a change of digest."""
    return json.dumps(mesh.get("meshConfig"), sort_keys=True, default=str)


def _mesh_config(cache: WatchCache) -> dict[str, Any]:
    """``meshConfig`` from ConfigMap ``istio-system/istio`` (empty when there is none)."""
    item = cache.get(MESH_CONFIG_KEY)
    if item is None:
        return {}
    data = item.obj.get("data") or {}
    docs: dict[str, Any] = {}
    for key in (MESH_CONFIG_DATA, MESHWORK_CONFIG_DATA):
        text = data.get(key)
        if not text:
            continue
        try:
            docs[key] = yaml.safe_load(str(text))
        except yaml.YAMLError as exc:
            reason = f"{MESH_CONFIG_SOURCE} key {key!r} is not valid YAML: {exc}".replace("\n", " ")
            log.warning("mesh config: %s", reason)
            return {"error": reason}
    return proxy_mesh_config(docs.get(MESH_CONFIG_DATA), docs.get(MESHWORK_CONFIG_DATA))


def _mesh(cache: WatchCache) -> dict[str, Any]:
    """What every proxy's snapshot carries alike: the CA's bundle and the mesh config."""
    return {**_mesh_security(cache), "meshConfig": _mesh_config(cache)}


def _mesh_security(cache: WatchCache) -> dict[str, Any]:
    """``trustBundle`` and ``caGeneration`` from the CA's ConfigMap (empty when no CA published one)."""
    item = cache.get(CA_BUNDLE_KEY)
    if item is None:
        return {}
    annotations = (item.obj.get("metadata") or {}).get("annotations") or {}
    try:
        generation = int(annotations.get(CA_GENERATION_ANNOTATION) or 0)
    except ValueError:
        generation = 0
    return {"trustBundle": str((item.obj.get("data") or {}).get(CA_BUNDLE_DATA) or ""), "caGeneration": generation}


class PushServer:
    """The per-proxy snapshot state and its HTTP endpoints (see the module docstring)."""

    def __init__(self, cache: WatchCache, *, debounce: float = DEBOUNCE_S) -> None:
        self._cache = cache
        self._debounce = debounce
        self._entries: dict[str, dict[NsName, ms.Entry]] = {kind: {} for kind in ("services", CREDENTIALS, SCALE_TO_ZERO, *CONFIG_RESOURCES.values())}
        self._pods_of_service: dict[NsName, set[NsName]] = {}
        self._services_of_pod: dict[NsName, set[NsName]] = {}
        self._proxies: dict[str, ProxyState] = {}
        self._proxies_of_pod: dict[NsName, set[str]] = {}
        self._dirty: set[tuple[str, NsName]] = set()  # (kind, key): "services" or a config kind
        self._dirty_pods: set[NsName] = set()  # pods behind proxies
        self._index = ms.MeshIndex()
        self.current_through = 0  # every proxy's snapshot reflects the store up to here
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._last_flush = 0.0
        self._changed = asyncio.Event()  # pulsed on every ACK, NACK, flush and (dis)connect
        self.flushes = 0
        self._mesh: dict[str, Any] = {}  # trustBundle, caGeneration: the same for every proxy
        self._mesh_dirty = False
        self.certs: CertificateService | None = None  # the CA's endpoints, when the server runs one
        self.activator: ScaleToZero | None = None  # services/{name}/activate (control.scaletozero)
        self.jwks = JwksCache(self._jwks_changed)  # RequestAuthentications' jwksUri documents
        self._jwks_dirty = False

    async def start(self) -> None:
        """Build every entry from the cache and follow its changes."""
        for item in self._cache.list(SERVICES):
            self._dirty.add(("services", _split_key(item.key)[1]))
        for resource, kind in (*CONFIG_RESOURCES.items(), (SECRETS, CREDENTIALS), (DEPLOYMENTS, SCALE_TO_ZERO)):
            for item in self._cache.list(resource):
                self._dirty.add((kind, _split_key(item.key)[1]))
        self._mesh = _mesh(self._cache)
        self._cache.add_listener(self._on_event)
        self.jwks.start()
        self._flush()

    async def close(self) -> None:
        await self.jwks.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for state in self._proxies.values():
            for stream in state.streams:
                stream.end()

    # -- following the cache ---------------------------------------------------------------

    def _on_event(self, event: CachedEvent) -> None:
        resource, ident = _split_key(event.key)
        relevant = True
        if resource == SERVICES or resource == ENDPOINTS:
            self._dirty.add(("services", ident))
            if resource == SERVICES:  # which Services a scale-to-zero Deployment backs may change
                self._dirty.update((SCALE_TO_ZERO, k) for k in self._entries[SCALE_TO_ZERO] if k[0] == ident[0])
        elif resource == DEPLOYMENTS and (ident in self._entries[SCALE_TO_ZERO] or idle_period(event.item.obj) is not None):
            self._dirty.add((SCALE_TO_ZERO, ident))
        elif resource in CONFIG_RESOURCES:
            self._dirty.add((CONFIG_RESOURCES[resource], ident))
        elif event.key in (CA_BUNDLE_KEY, MESH_CONFIG_KEY):
            self._mesh_dirty = True
        elif resource == SECRETS:  # perhaps a gateway's credential: only gateways are refreshed
            self._dirty.add((CREDENTIALS, ident))
        elif resource == PODS:
            services = self._services_of_pod.get(ident)
            if services:
                self._dirty.update(("services", s) for s in services)
            if ident in self._proxies_of_pod:
                self._dirty_pods.add(ident)
            relevant = bool(services) or ident in self._proxies_of_pod
        else:
            relevant = False
        if relevant:
            self._schedule()
        elif self._flush_handle is None:
            self.current_through = event.revision

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self._debounce - time.monotonic()
        if wait <= 0:
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_later(wait, self._flush)

    def _flush_now(self) -> None:
        """Apply pending changes before answering (a new stream, a one-off snapshot)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        self._last_flush = time.monotonic()
        revision = self._cache.revision
        try:
            everywhere, namespaces, gateways_changed = self._apply_dirty()
            if self._mesh_dirty:
                self._mesh_dirty = False
                mesh = _mesh(self._cache)
                everywhere = everywhere or mesh != self._mesh
                self._mesh = mesh
            for state in list(self._proxies.values()):
                pod_changed = (state.proxy.namespace, state.proxy.pod) in self._dirty_pods
                if pod_changed:
                    state.proxy = self._proxy(state.proxy.id, state.labels)
                if not (everywhere or pod_changed or state.proxy.namespace in namespaces
                        or (gateways_changed and state.proxy.role == "gateway")):
                    continue
                self._refresh(state, revision)
            self._dirty_pods.clear()
        except Exception:
            log.exception("mesh config: computing snapshots failed")
        self.current_through = revision
        self.flushes += 1
        self._pulse()

    def _apply_dirty(self) -> tuple[bool, set[str], bool]:
        """Recompute dirty entries; (visible everywhere?, namespaces touched, gateways changed?)."""
        everywhere, namespaces, gateways_changed = False, set[str](), False
        if self._jwks_dirty:  # new keys for a jwksUri: the index is rebuilt with them
            self._jwks_dirty, everywhere = False, True
        elif not self._dirty:
            return everywhere, namespaces, gateways_changed
        dirty, self._dirty = self._dirty, set()
        for kind, ident in dirty:
            table = self._entries[kind]
            old = table.get(ident)
            new = self._service_entry(ident) if kind == "services" else self._config_entry(kind, ident)
            if new is None:
                table.pop(ident, None)
            else:
                table[ident] = new
            if old == new:
                continue
            if kind in ("gateways", CREDENTIALS):
                gateways_changed = True
                continue
            for e in (old, new):
                if e is None:
                    continue
                if not e.export_to or "*" in e.export_to:
                    everywhere = True
                namespaces.update(e.namespace if n == "." else n for n in e.export_to)

        def ordered(kind: str) -> list[ms.Entry]:
            table = self._entries[kind]
            return [table[k] for k in sorted(table)]

        self._index = self._new_index(ordered)
        return everywhere, namespaces, gateways_changed

    def _new_index(self, ordered: Callable[[str], list[ms.Entry]]) -> ms.MeshIndex:
        request_authns = ordered("requestAuthentications")
        self.jwks.want(ms.jwks_uris(e.body for e in request_authns))
        return ms.MeshIndex(
            ordered("services"), ordered("virtualServices"), ordered("destinationRules"),
            ordered("serviceEntries"), ordered("gateways"), ordered("proxyPlugins"),
            ordered("peerAuthentications"), request_authns, ordered("authorizationPolicies"),
            self.jwks.documents(), ordered(CREDENTIALS), local_rate_limits=ordered("localRateLimits"),
            scale_to_zero=ordered(SCALE_TO_ZERO),
        )

    def _jwks_changed(self) -> None:
        """A jwksUri's keys changed: every proxy that names it gets them (a rebuilt index, a flush)."""
        self._jwks_dirty = True
        self._schedule()

    def _service_entry(self, ident: NsName) -> ms.Entry | None:
        ns, name = ident
        svc = self._cache.get(f"{SERVICES}/{ns}/{name}")
        eps_item = self._cache.get(f"{ENDPOINTS}/{ns}/{name}")
        eps = eps_item.obj if eps_item is not None else None
        for pod in self._pods_of_service.pop(ident, set()):
            users = self._services_of_pod.get(pod)
            if users is not None:
                users.discard(ident)
                if not users:
                    del self._services_of_pod[pod]
        if svc is None:
            return None
        pods = ms.pods_of(eps)
        self._pods_of_service[ident] = pods
        pod_objs: dict[NsName, Any] = {}
        for p in pods:
            self._services_of_pod.setdefault(p, set()).add(ident)
            item = self._cache.get(f"{PODS}/{p[0]}/{p[1]}")
            if item is not None:
                pod_objs[p] = item.obj
        base = ms.entry(svc.obj)
        return ms.Entry(base.namespace, base.name, base.export_to, ms.service_view(svc.obj, eps, pod_objs))

    def _config_entry(self, kind: str, ident: NsName) -> ms.Entry | None:
        if kind == CREDENTIALS:
            secret = self._cache.get(f"{SECRETS}/{ident[0]}/{ident[1]}")
            return ms.credential_entry(secret.obj) if secret is not None else None
        if kind == SCALE_TO_ZERO:
            deployment = self._cache.get(f"{DEPLOYMENTS}/{ident[0]}/{ident[1]}")
            body = None
            if deployment is not None:
                services = (item.obj for item in self._cache.list(SERVICES) if item.key.startswith(f"{SERVICES}/{ident[0]}/"))
                body = scale_to_zero_body(deployment.obj, services)
            return ms.Entry(ident[0], ident[1], ("*",), body) if body is not None else None
        resource = next(r for r, k in CONFIG_RESOURCES.items() if k == kind)
        item = self._cache.get(f"{resource}/{ident[0]}/{ident[1]}")
        return ms.entry(item.obj) if item is not None else None

    def _proxy(self, ident: str, labels: dict[str, str]) -> ms.Proxy:
        parsed = ms.parse_proxy_id(ident)
        pod = self._cache.get(f"{PODS}/{parsed.namespace}/{parsed.pod}")
        return ms.proxy_from_pod(ident, pod.obj if pod is not None else None, labels)

    def _refresh(self, state: ProxyState, revision: int) -> None:
        """Send ``state`` a new snapshot, built at store ``revision``, if what it sees changed."""
        state.key = self._index.key_for(state.proxy)
        body = self._index.body(state.key)
        digest = _digest(state.proxy, body, self._mesh)
        if digest == state.digest:
            return
        state.digest = digest
        state.sent_version = str(revision)
        data = ms.snapshot_bytes(state.proxy, state.sent_version, body, revision, self._mesh) + b"\n"
        for stream in state.streams:
            stream.push(data)

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- HTTP ---------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response | StreamingResponse:
        """Answer a request under ``PREFIX`` (authenticated by the API server)."""
        rest = req.path[len(PREFIX):].strip("/")
        parts = rest.split("/")
        if parts == ["proxies"]:
            self._only(req, "GET")
            return _json(200, self.status())
        if parts == ["convergence"]:
            self._only(req, "GET")
            return _json(200, await self._convergence(req))
        if parts[0] == "certificates" or (len(parts) == 3 and parts[0] == "proxies" and parts[2] == "certificate"):
            if self.certs is None:
                raise NotFound("this server runs no certificate authority")
            return await self.certs.handle(req, parts)
        if len(parts) == 5 and parts[0] == "namespaces" and parts[2] == "services" and parts[4] == "activate":
            if self.activator is None:
                raise NotFound("this server does not scale workloads to zero")
            return await self.activator.handle(req, parts[1], parts[3])
        if len(parts) == 3 and parts[0] == "proxies" and parts[2] in ("config", "ack"):
            ident = parts[1]
            try:
                ms.parse_proxy_id(ident)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            if parts[2] == "ack":
                self._only(req, "POST")
                return _json(200, self._ack(ident, req))
            self._only(req, "GET")
            return self._config(ident, req)
        raise NotFound(f"the server could not find the requested resource ({req.path})")

    @staticmethod
    def _only(req: Request, method: str) -> None:
        if req.method != method and not (method == "GET" and req.method == "HEAD"):
            raise MethodNotAllowed(f"{req.method} is not allowed on {req.path}")

    def status(self) -> dict[str, Any]:
        items = sorted(self._proxies.values(), key=lambda s: (s.proxy.namespace, s.proxy.pod, s.proxy.id))
        return {"kind": "ProxyStatusList", "apiVersion": "mesh.meshwork.io/v1",
                "metadata": {"resourceVersion": str(self.current_through)},
                "items": [s.wire() for s in items]}

    def _config(self, ident: str, req: Request) -> Response | StreamingResponse:
        labels = _labels(req.query)
        self._flush_now()
        if (req.query.get("once") or [""])[0].lower() in ("1", "true"):
            state = self._proxies.get(ident)
            proxy = state.proxy if state is not None else self._proxy(ident, labels)
            body = self._index.body(self._index.key_for(proxy))
            version = state.sent_version if state is not None and state.sent_version else str(self.current_through)
            data = ms.snapshot_bytes(proxy, version, body, int(version), self._mesh)
            if "credentials" in body.doc:  # a one-off read is for people: key material stays on the stream
                data = json.dumps(ms.redact_credentials(json.loads(data)), separators=(",", ":")).encode()
            return Response(200, data)
        held = (req.query.get("version") or [""])[0]
        state = self._proxies.get(ident)
        if state is None:
            proxy = self._proxy(ident, labels)
            state = ProxyState(proxy, self._index.key_for(proxy), now_rfc3339(), labels)
            self._proxies[ident] = state
            self._proxies_of_pod.setdefault((proxy.namespace, proxy.pod), set()).add(ident)
            # Flushed just now: the index and the proxy's pod are current through here.
            self._refresh(state, self.current_through)
        stream = _Stream()
        state.streams.add(stream)
        if held != state.sent_version:
            body = self._index.body(state.key)
            version = state.sent_version or str(self.current_through)
            stream.push(ms.snapshot_bytes(state.proxy, version, body, int(version), self._mesh) + b"\n")
        self._pulse()
        return StreamingResponse(200, self._stream(ident, state, stream), content_type="application/x-ndjson")

    async def _stream(self, ident: str, state: ProxyState, stream: _Stream) -> AsyncIterator[bytes]:
        try:
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                data, stream.pending = stream.pending, None
                if data is not None:
                    yield data
                if stream.ended:
                    return
        finally:
            state.streams.discard(stream)
            if not state.streams and self._proxies.get(ident) is state:
                del self._proxies[ident]
                owners = self._proxies_of_pod.get((state.proxy.namespace, state.proxy.pod))
                if owners is not None:
                    owners.discard(ident)
                    if not owners:
                        del self._proxies_of_pod[(state.proxy.namespace, state.proxy.pod)]
            self._pulse()

    def _ack(self, ident: str, req: Request) -> dict[str, Any]:
        state = self._proxies.get(ident)
        if state is None:
            raise NotFound(f"proxy {ident!r} is not connected: open its config stream first")
        body = decode_json(req.body) if req.body else None
        if not isinstance(body, dict) or not isinstance(body.get("version"), str):
            raise BadRequest('an ACK is {"version": "<version applied>", "error": null}, a NACK names the error')
        version, error = body["version"], body.get("error")
        if error is not None and not isinstance(error, str):
            raise BadRequest("error must be a string or null")
        if error:
            state.nack_version, state.nack_message = version, error[:MAX_NACK_MESSAGE]
            log.warning("proxy %s refused config version %s: %s", ident, version, state.nack_message)
        else:
            state.acked_version = version
            if state.nack_version is not None and _older_or_same(state.nack_version, version):
                state.nack_version = state.nack_message = None
        self._pulse()
        return {"id": ident, "status": state.sync_status, "sentVersion": state.sent_version}

    # -- convergence --------------------------------------------------------------------

    def convergence(self, after: int) -> dict[str, Any]:
        """Which connected proxies run config reflecting store revision ``after`` or later."""
        items = []
        for state in sorted(self._proxies.values(), key=lambda s: (s.proxy.namespace, s.proxy.pod, s.proxy.id)):
            done = (
                self.current_through >= after
                and state.sent_version is not None
                and state.acked_version == state.sent_version
            )
            refused = state.nack_message is not None and state.nack_version == state.sent_version
            items.append({**state.wire(), "converged": done, "refused": refused})
        return {
            "kind": "Convergence", "apiVersion": "mesh.meshwork.io/v1",
            "after": str(after), "currentThrough": str(self.current_through),
            "total": len(items), "converged": sum(1 for i in items if i["converged"]),
            "proxies": items,
        }

    async def _convergence(self, req: Request) -> dict[str, Any]:
        raw_after = (req.query.get("after") or [""])[0]
        raw_timeout = (req.query.get("timeoutSeconds") or ["0"])[0]
        try:
            after = int(raw_after) if raw_after else self._cache.revision
            timeout = min(float(raw_timeout), MAX_CONVERGENCE_WAIT_S)
        except ValueError:
            raise BadRequest("after is a store resourceVersion and timeoutSeconds a number") from None
        return await self.wait_converged(after, timeout)

    async def wait_converged(self, after: int, timeout: float) -> dict[str, Any]:
        """The convergence report for ``after`` once every connected proxy converged or refused, or at ``timeout``."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            report = self.convergence(after)
            pending = [p for p in report["proxies"] if not p["converged"] and not p["refused"]]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                return report
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def proxies(self) -> Iterable[ProxyState]:
        return self._proxies.values()


def _older_or_same(a: str, b: str) -> bool:
    try:
        return int(a) <= int(b)
    except ValueError:
        return a == b


def _labels(query: dict[str, list[str]]) -> dict[str, str]:
    """``labels=k=v,k2=v2``: a pod-less proxy's labels (Envoy's node metadata LABELS)."""
    out: dict[str, str] = {}
    for part in (query.get("labels") or [""])[0].split(","):
        key, eq, value = part.partition("=")
        if key.strip() and eq:
            out[key.strip()] = value.strip()
    return out


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())
