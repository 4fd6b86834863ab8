"""The ingress gateway the server creates at start, as Istio's installation does.

``istio-system/istio-ingressgateway``: a Deployment of the mesh proxy in its
gateway role, labelled ``istio: ingressgateway`` and ``app:
istio-ingressgateway`` so the usual Gateway selectors pick it, and a
LoadBalancer Service whose external address is where the gateway listens on
this machine (127.0.0.1 by default; Gateway server port 80 on host port
8080, 443 on 8443, as the Service's targetPorts say). Objects that exist are
left alone, so a user's edits survive a restart.
"""

from __future__ import annotations

from typing import Any

from meshwork.control.api.objects import Objects
from meshwork.errors import AlreadyExists
from meshwork.model.kinds import REGISTRY

NAMESPACE = "istio-system"
NAME = "istio-ingressgateway"
LABELS = {"app": NAME, "istio": "ingressgateway"}
DEFAULT_PORTS = ((80, 8080, "http2"), (443, 8443, "https"))
# Istio's name for the gateway's ServiceAccount: its mesh identity is
# spiffe://<trust-domain>/ns/istio-system/sa/istio-ingressgateway-service-account.
SERVICE_ACCOUNT = "istio-ingressgateway-service-account"


def parse_ports(text: str) -> tuple[tuple[int, int, str], ...]:
    """``80:8080,443:8443`` -> ((80, 8080, "http2"), (443, 8443, "https"))."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, _, listen = part.partition(":")
        if not service.isdigit() or not listen.isdigit():
            raise ValueError(f"{part!r}: give SERVICEPORT:HOSTPORT, e.g. 80:8080")
        port = int(service)
        out.append((port, int(listen), "https" if port == 443 else "http2" if port == 80 else f"tcp-{port}"))
    return tuple(out)


def manifests(host: str, ports: tuple[tuple[int, int, str], ...]) -> list[dict[str, Any]]:
    mapping = ",".join(f"{p}:{t}" for p, t, _ in ports)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": {**LABELS, "sidecar.istio.io/inject": "false"}},
                "spec": {"serviceAccountName": SERVICE_ACCOUNT, "containers": [{
                    "name": "istio-proxy", "image": "meshwork/proxyv2",
                    "args": ["--role", "gateway", "--listen-host", host, "--ports", mapping,
                             "--labels", ",".join(f"{k}={v}" for k, v in LABELS.items())],
                    "ports": [{"containerPort": t, "name": n, "protocol": "TCP"} for _, t, n in ports],
                    "env": [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}} for n, f in (
                        ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                        ("INSTANCE_IP", "status.podIP"))],
                }]},
            },
        },
    }  # fmt: skip
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"type": "LoadBalancer", "selector": dict(LABELS),
                 "ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for p, t, n in ports]},
    }  # fmt: skip
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": dict(LABELS)}}  # fmt: skip
    return [account, deployment, service]


async def ensure_ingress_gateway(objects: Objects, host: str, ports: tuple[tuple[int, int, str], ...]) -> None:
    """Create the gateway's namespace, Deployment and Service when missing; publish its address."""
    ns_info = REGISTRY.require("", "Namespace")
    try:
        await objects.create(ns_info, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    except AlreadyExists:
        pass
    for body in manifests(host, ports):
        group = body["apiVersion"].rpartition("/")[0]
        info = REGISTRY.require(group, body["kind"])
        try:
            await objects.create(info, NAMESPACE, body)
        except AlreadyExists:
            continue
        if body["kind"] == "Service":
            await objects.patch(info, NAMESPACE, NAME, {"status": {"loadBalancer": {"ingress": [{"ip": host}]}}},
                                "merge", subresource="status")  # fmt: skip
