"""Sidecar injection: whether a new pod joins the mesh, and the pod it becomes. Pure.

What lives here: Istio's injection policy (``wants_sidecar``) and the
mutation its webhook makes (``inject``), done here when the API server
admits a pod. The decision, in Istio's order:

* a pod on the host network is never injected;
* the pod's ``sidecar.istio.io/inject`` label, else its annotation, says
  ``"true"`` or ``"false"``;
* otherwise the namespace: ``istio-injection=enabled`` (or an
  ``istio.io/rev`` label) injects, ``istio-injection=disabled`` does not;
* nothing said: not injected (Istio's default policy ``enabled`` needs the
  namespace opt-in too).

The injected proxy is a native sidecar (an init container with
``restartPolicy: Always``, as Istio does with native sidecars on), so the app
starts only once it is ready and a Job's pod ends whatever it does. It reads
its identity from the downward API as Istio's does (``POD_NAME``,
``POD_NAMESPACE``, ``INSTANCE_IP``, ``SERVICE_ACCOUNT``) and learns the app's ports from
``ISTIO_META_POD_PORTS`` (Istio's name: a JSON list of the app containers'
ports, taken when the pod is injected), which its inbound listener forwards
to; the node agent adds how to reach the control plane.

What must not: reading namespaces (passed in), I/O.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

SIDECAR_NAME = "istio-proxy"
SIDECAR_IMAGE = "meshwork/proxyv2"
INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
NAMESPACE_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15020
POD_PORTS_ENV = "ISTIO_META_POD_PORTS"
APP_IP_ENV = "MESHWORK_APP_IP"  # the istio-proxy container's: where its app listens (``app_ip``)
# Pod IPs come from 127.1.0.0/16 .. 127.95.0.0/16 (control.api.allocate); the app of a meshed pod
# listens on the same address with this bit of the second octet set: 127.129.0.0/16 and up.
_APP_BIT = 0x80


def app_ip(pod_ip: str) -> str | None:
    """The address a meshed pod's app listens on, derived from its pod IP with no state.

    Inbound capture without root (Istio redirects with iptables): the pod IP
    ``127.A.B.C`` belongs to the sidecar, which listens there on every app
    port and forwards to the app at ``127.(A+128).B.C``, so no client reaches
    the app around the sidecar's mTLS and policies. None when ``pod_ip`` is
    not an IPv4 loopback address with ``A`` in 1..127 (the pod then runs
    without capture: its app listens on the pod IP itself).
    """
    parts = pod_ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return None
    octets = [int(p) for p in parts]
    if octets[0] != 127 or not 0 < octets[1] < _APP_BIT:
        return None
    octets[1] |= _APP_BIT
    return ".".join(map(str, octets))


def _says(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("true", "enabled", "yes", "y", "on"):
        return True
    if text in ("false", "disabled", "no", "n", "off"):
        return False
    return None


def wants_sidecar(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """Istio's injection decision for ``pod`` (a wire dict) in a namespace with these labels."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    if any(c.get("name") == SIDECAR_NAME for c in containers):
        return False  # already there (injected before, or written by hand)
    meta = pod.get("metadata") or {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        said = _says(source.get(INJECT))
        if said is not None:
            return said
    said = _says(namespace_labels.get(NAMESPACE_LABEL))
    if said is not None:
        return said
    return REVISION_LABEL in namespace_labels


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def pod_ports(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The app containers' ports as Istio's injector lists them (``ContainerPort`` objects, protocol TCP by default)."""
    out: list[dict[str, Any]] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if not isinstance(port, Mapping) or not isinstance(port.get("containerPort"), int):
                continue
            entry: dict[str, Any] = {"name": port["name"]} if port.get("name") else {}
            entry["containerPort"] = port["containerPort"]
            entry["protocol"] = port.get("protocol") or "TCP"
            out.append(entry)
    return out


def sidecar_container(ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The istio-proxy container; ``ports`` (``pod_ports``) become its ``ISTIO_META_POD_PORTS``."""
    return {
        "name": SIDECAR_NAME,
        "image": SIDECAR_IMAGE,
        "restartPolicy": "Always",
        "ports": [{"name": "http-envoy-prom", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "POD_NAME", **_field("metadata.name")},
            {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
            {"name": "INSTANCE_IP", **_field("status.podIP")},
            {"name": "SERVICE_ACCOUNT", **_field("spec.serviceAccountName")},
            {"name": POD_PORTS_ENV, "value": json.dumps(ports or [], separators=(",", ":"))},
        ],
        # Ready once a first config applied (the proxy's /healthz/ready says so, as Istio's does).
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": ADMIN_PORT}, "periodSeconds": 1,
                           "failureThreshold": 30},
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
    }


PROXY_CONFIG = "proxy.istio.io/config"  # per-pod ProxyConfig overrides, JSON or YAML


def access_log_file(annotations: Mapping[str, str]) -> str | None:
    """The access log the pod asks for in ``proxy.istio.io/config`` (``accessLogFile``).

    ``/dev/stdout`` (Istio's usual value) becomes ``-``: the proxy's stdout, read with
    ``meshwork logs POD -c istio-proxy``. A value that does not parse is ignored.
    """
    raw = annotations.get(PROXY_CONFIG)
    if not raw:
        return None
    value: object = None
    try:
        value = json.loads(raw)
    except ValueError:
        for line in raw.splitlines():  # the YAML form Istio's docs write: "accessLogFile: /dev/stdout"
            key, sep, rest = line.partition(":")
            if sep and key.strip() == "accessLogFile":
                value = {"accessLogFile": rest.strip().strip("'\"")}
    path = value.get("accessLogFile") if isinstance(value, dict) else None
    if not isinstance(path, str) or not path:
        return None
    return "-" if path == "/dev/stdout" else path


def inject(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod with the sidecar added (a copy; ``pod`` is not changed)."""
    out = copy.deepcopy(dict(pod))
    spec = out.setdefault("spec", {})
    sidecar = sidecar_container(pod_ports(out))
    access_log = access_log_file((out.get("metadata") or {}).get("annotations") or {})
    if access_log:
        sidecar["env"].append({"name": "MESHWORK_ACCESS_LOG", "value": access_log})
    spec["initContainers"] = [sidecar, *(spec.get("initContainers") or [])]
    meta = out.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels.setdefault("security.istio.io/tlsMode", "istio")
    app = labels.get("app.kubernetes.io/name") or labels.get("app") or meta.get("name", "")
    labels.setdefault("service.istio.io/canonical-name", app)
    labels.setdefault("service.istio.io/canonical-revision",
                      labels.get("app.kubernetes.io/version") or labels.get("version") or "latest")  # fmt: skip
    annotations = meta.setdefault("annotations", {})
    annotations[STATUS] = json.dumps({"initContainers": [SIDECAR_NAME], "containers": [], "volumes": [],
                                      "imagePullSecrets": None, "revision": "default"},
                                     separators=(",", ":"))  # fmt: skip
    return out
