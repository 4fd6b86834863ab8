"""``meshwork up`` prints where each applied Gateway serves, as the ingress gateway listens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshwork.cli import apply as apply_mod
from meshwork.cli.lifecycle import gateway_urls
from meshwork.cli.resolve import load_kinds
from meshwork.control.ingress import LABELS

BOOKINFO = Path(__file__).resolve().parents[3] / "examples" / "bookinfo"


def ingress(ports: dict[int, int], ip: str | None = "127.0.0.1", selector: dict[str, str] = LABELS) -> dict[str, Any]:
    return {
        "spec": {"selector": dict(selector), "ports": [{"port": p, "targetPort": t} for p, t in ports.items()]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}} if ip else {},
    }  # fmt: skip


def bookinfo() -> list[apply_mod.Desired]:
    load_kinds()
    return apply_mod.plan(apply_mod.load([str(BOOKINFO)]), "default")


def test_a_gateway_port_the_service_maps_is_served_on_its_target_port() -> None:
    # bookinfo-gateway's server port is 8080; mapped explicitly, it is served where the mapping says.
    urls = gateway_urls(bookinfo(), ingress({80: 18080, 8080: 18081}))
    assert urls == ["http://127.0.0.1:18081/productpage    (Gateway bookinfo-gateway, port 8080)"]


def test_an_unmapped_gateway_port_is_served_on_itself_and_the_path_is_the_first_uri_match() -> None:
    urls = gateway_urls(bookinfo(), ingress({80: 8080, 443: 8443}, ip="127.0.0.9"))
    assert urls == ["http://127.0.0.9:8080/productpage    (Gateway bookinfo-gateway, port 8080)"]


def test_nothing_for_a_gateway_that_selects_another_gateway_workload_or_without_gateways() -> None:
    assert gateway_urls(bookinfo(), ingress({80: 8080}, selector={"istio": "eastwestgateway"})) == []
    no_gateway = [d for d in bookinfo() if d.info.kind != "Gateway"]
    assert gateway_urls(no_gateway, ingress({80: 8080})) == []
