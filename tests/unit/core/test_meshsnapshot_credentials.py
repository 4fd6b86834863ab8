"""Gateway credentials in snapshots: only the Secrets a gateway's Gateways name, from its own namespace."""

from __future__ import annotations

from typing import Any

from meshwork.core import meshsnapshot as ms
from meshwork.core.mesh.snapshot import snapshot_from_wire


def secret(name: str, ns: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "7"}, "data": data}  # fmt: skip


def gateway_obj(name: str, credential: str) -> dict[str, Any]:
    server = {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
              "tls": {"mode": "MUTUAL", "credentialName": credential}}  # fmt: skip
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]}}  # fmt: skip


def proxy(role: ms.Role, ns: str, labels: dict[str, str]) -> ms.Proxy:
    return ms.Proxy(
        ms.proxy_id(role, "127.1.0.3", "p-0", ns),
        role,
        ns,
        "p-0",
        "127.1.0.3",
        tuple(sorted(labels.items())),
    )


SECRETS = [
    secret("httpbin-credential", "istio-system", **{"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}),
    secret("httpbin-credential-cacert", "istio-system", **{"ca.crt": "Q0E="}),
    secret("httpbin-credential", "default", **{"tls.crt": "T1RIRVI=", "tls.key": "T1RIRVI="}),
    secret("unrelated", "istio-system", password="aHVudGVyMg=="),
]
INGRESS = {"istio": "ingressgateway"}


def test_a_gateway_gets_the_named_secrets_of_its_own_namespace_only() -> None:
    index = ms.build_index(
        [], [], [], gateways=[gateway_obj("g", "kubernetes://httpbin-credential")], secrets=SECRETS
    )
    snap = index.snapshot(proxy("gateway", "istio-system", INGRESS), "1")
    assert snap["credentials"] == {
        "httpbin-credential": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"},
        "httpbin-credential-cacert": {"ca.crt": "Q0E="},
    }
    # The data plane reads them.
    assert snapshot_from_wire(snap).credentials["httpbin-credential"]["tls.key"] == "S0VZ"


def test_sidecars_and_unselected_gateways_get_no_secrets() -> None:
    index = ms.build_index(
        [], [], [], gateways=[gateway_obj("g", "httpbin-credential")], secrets=SECRETS
    )
    for who in (
        proxy("sidecar", "istio-system", INGRESS),
        proxy("gateway", "istio-system", {"istio": "other"}),
    ):
        assert "credentials" not in index.snapshot(who, "1")
        assert b"S0VZ" not in index.body(index.key_for(who)).raw


def test_redaction_keeps_the_key_names_only() -> None:
    index = ms.build_index(
        [], [], [], gateways=[gateway_obj("g", "httpbin-credential")], secrets=SECRETS
    )
    snap = index.snapshot(proxy("gateway", "istio-system", INGRESS), "1")
    shown = ms.redact_credentials(snap)
    assert shown["credentials"]["httpbin-credential"] == {
        "tls.crt": "<redacted>",
        "tls.key": "<redacted>",
    }
    assert "S0VZ" not in str(shown)
    assert (
        snap["credentials"]["httpbin-credential"]["tls.key"] == "S0VZ"
    )  # the original is untouched
    assert ms.redact_credentials({"version": "1"}) == {"version": "1"}
