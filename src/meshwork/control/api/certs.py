"""The CA's HTTP face and its timekeeping: signing, listing, rotating, publishing, warning.

What lives here: ``CertificateService``, mounted by the push server under
``/apis/mesh.meshwork.io/v1/``:

* ``POST proxies/{id}/certificate`` with ``{"csr": "<PEM>"}``: sign the
  proxy's key for the identity the server knows it by (its Pod's
  ServiceAccount, ``default`` when unset), never what the CSR asks for.
  200 ``{"certificateChain", "trustBundle", "identity", "notBefore",
  "notAfter", "serialNumber", "caGeneration"}``; 400 for a bad CSR; 404 when
  no Pod backs the proxy id.
* ``GET certificates``: every CA and workload certificate (``meshwork certs``).
* ``POST certificates/rotate-root`` with ``{"overlapSeconds": S | null,
  "timeoutSeconds": T}``: a new root joins the trust bundle; once every
  connected proxy acknowledged a snapshot carrying it (or ``T`` ran out) it
  takes over signing and ``caGeneration`` moves, so proxies fetch new
  certificates from it while peers still trust the old one.

The trust bundle and the generation are published in the ConfigMap
``istio-system/istio-ca-root-cert`` (key ``root-cert.pem``, as Istio names
it; generation in an annotation). The push server follows that object like
any other, so a CA change becomes a new snapshot version for every proxy.

Timekeeping: at start and every ``CHECK_INTERVAL_S`` (sooner when a
retiring root is due to leave the bundle) the CA retires old roots,
replaces intermediates that are due, and warns (a Warning Event and a log
line) about any CA certificate within 30 days of expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshwork.control import pki
from meshwork.control.api.objects import Objects
from meshwork.control.ca import CertificateAuthority, rfc3339
from meshwork.core import meshsnapshot as ms
from meshwork.core.security.identity import SpiffeId
from meshwork.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
)
from meshwork.httpd import Request, Response
from meshwork.model.codec import decode_json
from meshwork.model.kinds import REGISTRY

if TYPE_CHECKING:
    from meshwork.control.push import PushServer

log = logging.getLogger("meshwork.ca")

# Where the bundle is published (Istio's ConfigMap name and key; one copy, in the mesh root namespace).
BUNDLE_NAMESPACE = "istio-system"
BUNDLE_CONFIGMAP = "istio-ca-root-cert"
BUNDLE_KEY = "root-cert.pem"
GENERATION_ANNOTATION = "mesh.meshwork.io/ca-generation"
# How often the CA checks for due rotations and near expiries (certificates live for months or years).
CHECK_INTERVAL_S = 3600.0
# A warning about one certificate is repeated at most this often (kubelet re-emits similar events daily).
WARN_REPEAT_S = 86400.0
# rotate-root waits at most this long for proxies to trust the new root before it signs (default and cap).
DEFAULT_ROTATION_WAIT_S = 30.0
MAX_ROTATION_WAIT_S = 300.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateService:
    def __init__(self, ca: CertificateAuthority, objects: Objects, push: PushServer,
                 *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.ca = ca
        self._objects = objects
        self._push = push
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one rotation or maintenance at a time
        self._warned: dict[str, float] = {}

    async def start(self) -> None:
        """Publish the bundle, finish a rotation a restart interrupted, warn, and keep checking."""
        await self.publish()
        if self.ca.pending is not None:
            await self._promote(DEFAULT_ROTATION_WAIT_S)
        await self.maintain()
        self._task = asyncio.create_task(self._loop(), name="ca-maintenance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- publishing --------------------------------------------------------------------------

    async def publish(self) -> int:
        """Write the bundle ConfigMap when it differs; the store revision that holds it."""
        info = REGISTRY.require("", "ConfigMap")
        data = {BUNDLE_KEY: self.ca.trust_bundle()}
        annotations = {GENERATION_ANNOTATION: str(self.ca.generation)}
        for _ in range(5):
            current = self._objects.cache.get(f"{info.resource}/{BUNDLE_NAMESPACE}/{BUNDLE_CONFIGMAP}")
            if current is not None:
                held = (current.obj.get("metadata") or {}).get("annotations") or {}
                if current.obj.get("data") == data and held.get(GENERATION_ANNOTATION) == str(self.ca.generation):
                    return current.record.mod_revision
            meta: dict[str, Any] = {"name": BUNDLE_CONFIGMAP, "namespace": BUNDLE_NAMESPACE,
                                    "annotations": annotations, "labels": {"app.kubernetes.io/managed-by": "meshwork-ca"}}
            body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data, "metadata": meta}
            try:
                if current is None:
                    record, _ = await self._objects.create(info, BUNDLE_NAMESPACE, body)
                else:
                    meta["resourceVersion"] = current.obj["metadata"]["resourceVersion"]
                    record = await self._objects.update(info, BUNDLE_NAMESPACE, BUNDLE_CONFIGMAP, body)
                return record.mod_revision
            except (AlreadyExists, Conflict):
                continue  # someone wrote it meanwhile: look again
        raise Conflict(f"could not publish {BUNDLE_NAMESPACE}/{BUNDLE_CONFIGMAP}: it keeps changing")

    # -- rotation and maintenance ------------------------------------------------------------

    async def rotate_root(self, overlap: dt.timedelta | None, wait: float) -> dict[str, Any]:
        async with self._lock:
            old = self.ca.active
            if old.external is not None:
                raise BadRequest(f"the root is the one given with --ca-cert ({old.external['cert']}): to rotate it, "
                                 "restart the server with the new root's --ca-cert and --ca-key (both stay trusted "
                                 "during the overlap)")
            self.ca.begin_root_rotation(self._clock(), overlap)
            log.info("root rotation: a new root joined the trust bundle; waiting for proxies to trust it")
            promoted = await self._promote(wait)
            return {
                "kind": "RootRotation", "apiVersion": "mesh.meshwork.io/v1",
                "caGeneration": self.ca.generation, "promoted": promoted,
                "root": pki.serial_hex(self.ca.active.roots[0]),
                "previousRoot": pki.serial_hex(old.roots[0]),
                "previousRootRetireAt": rfc3339(old.retire_at) if old.retire_at else None,
                "trustBundle": self.ca.trust_bundle(),
            }

    async def _promote(self, wait: float) -> bool:
        """Publish the bundle with the pending root, wait for the proxies to apply it, then let it sign."""
        revision = await self.publish()
        report = await self._push.wait_converged(revision, wait)
        behind = [p["id"] for p in report["proxies"] if not p["converged"]]
        if behind:
            log.warning("root rotation: %d proxies did not acknowledge the new trust bundle in %.0fs (%s); "
                        "promoting the new root anyway", len(behind), wait, ", ".join(behind[:5]))
        promoted = self.ca.promote(self._clock())
        await self.publish()
        if promoted:
            log.info("root rotation: the new root signs now (caGeneration %d); the old root leaves the bundle at %s",
                     self.ca.generation, self.ca.next_retirement())
            self._wake.set()
        return promoted

    async def maintain(self) -> None:
        now = self._clock()
        changes = self.ca.maintain(now)
        for change in changes:
            log.info("CA: %s", change)
        if self.ca.pending is not None:
            await self._promote(DEFAULT_ROTATION_WAIT_S)
        elif changes:
            await self.publish()
        await self._warn(now)

    async def _loop(self) -> None:
        while True:
            wait = CHECK_INTERVAL_S
            due = self.ca.next_retirement()
            if due is not None:
                wait = min(wait, max((due - self._clock()).total_seconds(), 0.0) + 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                async with self._lock:
                    await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("CA maintenance failed; retrying at the next check")

    async def _warn(self, now: dt.datetime) -> None:
        certs = [(what, cert) for what, cert, chain in self.ca.ca_certificates() if chain.state != "retiring"]
        for warning in pki.expiry_warnings(certs, now):
            last = self._warned.get(warning.serial)
            if last is not None and time.monotonic() - last < WARN_REPEAT_S:
                continue
            self._warned[warning.serial] = time.monotonic()
            log.warning("%s", warning.message)
            await self._event("Warning", "CACertificateExpiring", warning.message)

    async def _event(self, type_: str, reason: str, message: str) -> None:
        info = REGISTRY.require("", "Event")
        cm = self._objects.cache.get(f"configmaps/{BUNDLE_NAMESPACE}/{BUNDLE_CONFIGMAP}")
        now = rfc3339(self._clock())
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{BUNDLE_CONFIGMAP}.{os.urandom(8).hex()}", "namespace": BUNDLE_NAMESPACE},
            "involvedObject": {"kind": "ConfigMap", "apiVersion": "v1", "name": BUNDLE_CONFIGMAP,
                               "namespace": BUNDLE_NAMESPACE,
                               "uid": (cm.obj["metadata"].get("uid") if cm is not None else None) or ""},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "meshwork-ca"}, "reportingComponent": "meshwork-ca",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self._objects.create(info, BUNDLE_NAMESPACE, body)
        except Exception:  # an event is best effort; the log line above already said it
            log.exception("could not record the CA event")

    # -- HTTP --------------------------------------------------------------------------------

    async def handle(self, req: Request, parts: list[str]) -> Response:
        """``parts``: the path under the API prefix, split on ``/``."""
        if len(parts) == 3 and parts[0] == "proxies" and parts[2] == "certificate":
            _only(req, "POST")
            return _json(200, self.certificate(parts[1], _body(req), req.user))
        if parts == ["certificates"]:
            _only(req, "GET")
            return _json(200, self.listing())
        if parts == ["certificates", "rotate-root"]:
            _only(req, "POST")
            body = _body(req) if req.body else {}
            overlap, wait = body.get("overlapSeconds"), body.get("timeoutSeconds", DEFAULT_ROTATION_WAIT_S)
            if overlap is not None and (not isinstance(overlap, int | float) or overlap < 0):
                raise BadRequest("overlapSeconds must be a non-negative number of seconds, or null")
            if not isinstance(wait, int | float) or wait < 0:
                raise BadRequest("timeoutSeconds must be a non-negative number of seconds")
            result = await self.rotate_root(
                dt.timedelta(seconds=overlap) if overlap is not None else None, min(float(wait), MAX_ROTATION_WAIT_S))
            return _json(200, result)
        raise NotFound(f"the server could not find the requested resource ({req.path})")

    def certificate(self, ident: str, body: dict[str, Any], caller: object = None) -> dict[str, Any]:
        """Sign a proxy's CSR for the identity of the Pod behind ``ident``.

        A node's proxies (``system:meshwork:proxy:<node>``) and the node itself
        get certificates only for pods bound to that node, at the pod's own IP,
        as Kubernetes' NodeRestriction limits what a kubelet may ask for: one
        node's credentials cannot borrow another workload's identity.
        """
        try:
            parsed = ms.parse_proxy_id(ident)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        pod = self._objects.cache.get(f"pods/{parsed.namespace}/{parsed.pod}")
        if pod is None:
            raise NotFound(f'proxy {ident!r}: no pod "{parsed.pod}" in namespace "{parsed.namespace}"',
                           kind="pods", name=parsed.pod)
        spec = pod.obj.get("spec") or {}
        node = _node_of(caller)
        if node is not None:
            if spec.get("nodeName") != node:
                raise Forbidden(f'proxy {ident!r}: pod "{parsed.pod}" is not bound to node "{node}"; '
                                "a node's proxies get certificates only for that node's pods")
            pod_ip = (pod.obj.get("status") or {}).get("podIP")
            if pod_ip and parsed.ip != pod_ip:
                raise Forbidden(f"proxy {ident!r}: the pod's IP is {pod_ip}, not {parsed.ip}")
        account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        identity = SpiffeId(self.ca.trust_domain, parsed.namespace, account)
        try:
            signed = self.ca.sign(body.get("csr"), identity, ident, self._clock())  # type: ignore[arg-type]
        except pki.CsrError as exc:
            raise BadRequest(str(exc)) from None
        log.info("issued certificate %s for %s (proxy %s, until %s)", pki.serial_hex(signed.leaf), identity.uri,
                 ident, rfc3339(signed.leaf.not_valid_after_utc))
        return {
            "certificateChain": signed.chain_pem, "trustBundle": signed.trust_bundle, "identity": identity.uri,
            "notBefore": rfc3339(signed.leaf.not_valid_before_utc),
            "notAfter": rfc3339(signed.leaf.not_valid_after_utc),
            "serialNumber": pki.serial_hex(signed.leaf), "caGeneration": signed.generation,
        }

    def listing(self) -> dict[str, Any]:
        return {
            "kind": "CertificateList", "apiVersion": "mesh.meshwork.io/v1",
            "trustDomain": self.ca.trust_domain, "caGeneration": self.ca.generation,
            "workloadCertTTLSeconds": self.ca.workload_ttl.total_seconds(),
            "items": self.ca.listing(self._clock()),
        }


_NODE_USERS = ("system:meshwork:proxy:", "system:node:")


def _node_of(caller: object) -> str | None:
    """The node a node or node-proxy credential speaks for; None for anyone else (an admin, a user)."""
    name = getattr(caller, "name", None)
    if isinstance(name, str):
        for prefix in _NODE_USERS:
            if name.startswith(prefix):
                return name[len(prefix):]
    return None


def _only(req: Request, method: str) -> None:
    if req.method != method:
        raise MethodNotAllowed(f"{req.method} is not allowed on {req.path}; use {method}")


def _body(req: Request) -> dict[str, Any]:
    try:
        body = decode_json(req.body) if req.body else None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())
