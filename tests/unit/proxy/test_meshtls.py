"""proxy.meshtls's pure parts: the inbound listener mode per PeerAuthentication, DestinationRule tls merging."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.proxy.meshtls import destination_tls, inbound_mtls
from meshwork.proxy.tls import TlsMode


def _pa(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def _raw(*policies: dict[str, Any]) -> dict[str, Any]:
    return {"proxy": {"namespace": "bar", "labels": {"app": "httpbin"}}, "peerAuthentications": list(policies)}


WORKLOAD_STRICT_80_DISABLE = _pa("bar", "httpbin", {"selector": {"matchLabels": {"app": "httpbin"}},
                                                    "mtls": {"mode": "STRICT"}, "portLevelMtls": {80: {"mode": "DISABLE"}}})  # fmt: skip


@pytest.mark.parametrize(("policies", "mode", "refused", "accepted"), [
    ((), TlsMode.PERMISSIVE, set(), {80, 8080, 9999}),
    ((_pa("istio-system", "default", {"mtls": {"mode": "STRICT"}}),), TlsMode.STRICT, set(), set()),
    ((_pa("bar", "default", {"mtls": {"mode": "DISABLE"}}),), TlsMode.DISABLE, set(), set()),
    # Ports that differ: PERMISSIVE listener; STRICT ports (and unnamed ones, the workload being STRICT) refused.
    ((WORKLOAD_STRICT_80_DISABLE,), TlsMode.PERMISSIVE, {8080, 9999}, {80}),
    ((_pa("bar", "httpbin", {"selector": {"matchLabels": {"app": "httpbin"}},
                             "portLevelMtls": {8080: {"mode": "STRICT"}}}),), TlsMode.PERMISSIVE, {8080}, {80, 9999}),
])  # fmt: skip
def test_inbound_mode_follows_peer_authentication(policies: tuple[dict[str, Any], ...], mode: TlsMode,
                                                  refused: set[int], accepted: set[int]) -> None:  # fmt: skip
    got, _ = inbound_mtls(_raw(*policies), [80, 8080])
    assert got.mode is mode
    if mode is TlsMode.PERMISSIVE and got.mixed:
        assert {p for p in refused | accepted if got.refuses_plaintext(p)} == refused


def test_destination_tls_merges_top_port_level_and_subset() -> None:
    rule = {"spec": {"host": "web", "trafficPolicy": {
        "tls": {"mode": "ISTIO_MUTUAL"},
        "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "web.example"}}]},
        "subsets": [{"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"tls": {"mode": "DISABLE"}}}]}}  # fmt: skip
    assert destination_tls(rule, None, 80) == {"mode": "ISTIO_MUTUAL"}
    assert destination_tls(rule, None, 443) == {"mode": "SIMPLE", "sni": "web.example"}
    assert destination_tls(rule, "v2", 80) == {"mode": "DISABLE"}
    assert destination_tls(rule, "v1", 80) == {"mode": "ISTIO_MUTUAL"}
    assert destination_tls(None, None, 80) is None


@pytest.mark.parametrize(("policies", "expected"), [
    ((), {80: TlsMode.PERMISSIVE, 8080: TlsMode.PERMISSIVE}),
    ((_pa("bar", "default", {"mtls": {"mode": "STRICT"}}),), {80: TlsMode.STRICT, 8080: TlsMode.STRICT}),
    ((_pa("bar", "default", {"mtls": {"mode": "DISABLE"}}),), {80: TlsMode.DISABLE, 8080: TlsMode.DISABLE}),
    ((WORKLOAD_STRICT_80_DISABLE,), {80: TlsMode.PERMISSIVE, 8080: TlsMode.STRICT, 9999: TlsMode.STRICT}),
])  # fmt: skip
def test_a_capture_listener_takes_its_own_ports_mode(policies: tuple[dict[str, Any], ...],
                                                      expected: dict[int, TlsMode]) -> None:  # fmt: skip
    got, _ = inbound_mtls(_raw(*policies), [80, 8080])
    assert {port: got.mode_for(port) for port in expected} == expected
