"""A gateway's TLS, compiled: servers and their certificates, missing credentials, passthrough by SNI, redirects."""

from __future__ import annotations

import base64
import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meshcases import get, istio, service, snapshot

from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.gateway_tls import SniRoute, lookup_sni
from meshwork.core.mesh.route import match_route
from meshwork.core.mesh.snapshot import PortInfo, ProxyInfo
from meshwork.core.mesh.table import RoutingTable, TcpRoute

GATEWAY_PROXY = ProxyInfo(
    "istio-ingressgateway-1", "istio-system", {"istio": "ingressgateway"}, "gateway"
)
CERT, KEY, CA = (
    "-----BEGIN CERTIFICATE-----\nA\n",
    "-----BEGIN PRIVATE KEY-----\nB\n",
    "-----BEGIN CERTIFICATE-----\nC\n",
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


TLS_SECRET = {"tls.crt": b64(CERT), "tls.key": b64(KEY)}


def https(
    name: str, hosts: list[str], tls: dict[str, Any], port: int = 443, protocol: str = "HTTPS"
) -> dict[str, Any]:
    return {
        "port": {"number": port, "name": name, "protocol": protocol},
        "hosts": hosts,
        "tls": tls,
    }


def compiled(
    servers: list[dict[str, Any]], credentials: dict[str, dict[str, str]], *extra: Any
) -> RoutingTable:
    gw = istio(
        "Gateway", "mygateway", {"selector": {"istio": "ingressgateway"}, "servers": servers}
    )
    snap = snapshot([gw, *extra], [service("httpbin", port=8000, base=20)], GATEWAY_PROXY)
    return compile_snapshot(dataclasses.replace(snap, credentials=credentials))


def test_each_server_gets_its_secret_by_sni_as_in_the_multi_host_task() -> None:
    t = compiled(
        [
            https(
                "https-httpbin",
                ["httpbin.example.com"],
                {"mode": "SIMPLE", "credentialName": "httpbin-credential"},
            ),
            https(
                "https-hello",
                ["default/helloworld.example.com"],
                {"mode": "SIMPLE", "credentialName": "hello"},
            ),
        ],
        {"httpbin-credential": TLS_SECRET, "hello": {"cert": b64("HELLO"), "key": b64("HKEY")}},
    )
    port = t.gateway_tls[443]
    assert [(s.sni, s.mode, s.cert.cert_pem, s.cert.key_pem) for s in port.servers] == [
        (("httpbin.example.com",), "SIMPLE", CERT, KEY),
        (
            ("helloworld.example.com",),
            "SIMPLE",
            "HELLO",
            "HKEY",
        ),  # Istio's generic keys; ns/ prefix dropped
    ]
    assert port.skipped == () and not port.plaintext
    assert port.servers[0].cert.source == "secret istio-system/httpbin-credential"


@pytest.mark.parametrize(
    ("tls", "credentials", "reason"),
    [
        ({"mode": "SIMPLE", "credentialName": "gone"}, {}, "secret istio-system/gone not found"),
        ({"mode": "SIMPLE", "credentialName": "half"}, {"half": {"tls.crt": b64(CERT)}},
         "has neither (cert and key) nor (tls.crt and tls.key); found: tls.crt"),
        ({"mode": "MUTUAL", "credentialName": "c"}, {"c": TLS_SECRET}, "MUTUAL needs the client CA as ca.crt"),
        ({"mode": "SIMPLE", "credentialName": "bad"}, {"bad": {"tls.crt": "%%%", "tls.key": b64(KEY)}},
         "key 'tls.crt' is not base64"),
    ],
)  # fmt: skip
def test_a_server_without_a_usable_credential_is_left_out_with_the_reason(
    tls: dict[str, Any], credentials: dict[str, dict[str, str]], reason: str
) -> None:
    t = compiled(
        [https("broken", ["a.example.com"], tls),
         https("fine", ["b.example.com"], {"mode": "SIMPLE", "credentialName": "ok"})],
        {**credentials, "ok": TLS_SECRET},
    )  # fmt: skip
    port = t.gateway_tls[443]
    assert [s.sni for s in port.servers] == [("b.example.com",)]  # the other server is served
    assert len(port.skipped) == 1
    assert "default/mygateway servers[0] (broken) not served" in port.skipped[0]
    assert reason in port.skipped[0]


def test_mutual_takes_its_ca_from_the_secret_or_from_name_cacert() -> None:
    t = compiled(
        [https("one", ["a.example.com"], {"mode": "MUTUAL", "credentialName": "one"}),
         https("two", ["b.example.com"], {"mode": "MUTUAL", "credentialName": "kubernetes://two"})],
        {"one": {**TLS_SECRET, "ca.crt": b64(CA)}, "two": TLS_SECRET, "two-cacert": {"cacert": b64("CA2")}},
    )  # fmt: skip
    one, two = t.gateway_tls[443].servers
    assert (one.mode, one.cert.ca_pem) == ("MUTUAL", CA)
    assert two.cert.ca_pem == "CA2"
    assert two.cert.source == "secret istio-system/two (CA from secret istio-system/two-cacert)"


def test_file_paths_are_left_for_the_proxy_to_read_and_versions_carried() -> None:
    tls = {"mode": "SIMPLE", "serverCertificate": "/etc/certs/tls.crt", "privateKey": "/etc/certs/tls.key",
           "minProtocolVersion": "TLSV1_3"}  # fmt: skip
    (server,) = compiled([https("files", ["*"], tls)], {}).gateway_tls[443].servers
    assert (server.cert.cert_file, server.cert.key_file, server.cert.cert_pem) == (
        "/etc/certs/tls.crt", "/etc/certs/tls.key", None)  # fmt: skip
    assert server.sni == ("*",) and server.min_version == "TLSV1_3"


def test_a_plain_http_server_on_the_same_port_keeps_plaintext_open() -> None:
    t = compiled(
        [https("https", ["a.example.com"], {"mode": "SIMPLE", "credentialName": "ok"}, port=8443),
         {"port": {"number": 8443, "name": "http", "protocol": "HTTP"}, "hosts": ["b.example.com"]},
         {"port": {"number": 80, "name": "http2", "protocol": "HTTP"}, "hosts": ["c.example.com"]}],
        {"ok": TLS_SECRET},
    )  # fmt: skip
    assert t.gateway_tls[8443].plaintext
    assert 80 not in t.gateway_tls  # a plaintext-only port has no TLS side


def test_passthrough_routes_by_sni_within_the_server_hosts() -> None:
    vs = istio("VirtualService", "nginx", {
        "hosts": ["nginx.example.com"], "gateways": ["mygateway"],
        "tls": [{"match": [{"port": 443, "sniHosts": ["nginx.example.com"]}],
                 "route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]},
                {"match": [{"port": 9999, "sniHosts": ["other.example.com"]}],
                 "route": [{"destination": {"host": "httpbin"}}]}]})  # fmt: skip
    t = compiled([https("tls", ["*.example.com"], {"mode": "PASSTHROUGH"}, protocol="TLS")], {}, vs)
    port = t.gateway_tls[443]
    assert port.servers == ()
    (only,) = port.passthrough  # the route for port 9999 does not apply to this port
    assert only.sni == "nginx.example.com"
    route = lookup_sni(port.passthrough, "nginx.example.com")
    assert (
        route is not None
        and route.destinations[0].cluster == "outbound|8000||httpbin.default.svc.cluster.local"
    )
    assert route.destinations[0].cluster in t.clusters
    assert lookup_sni(port.passthrough, "else.example.com") is None
    assert 443 not in t.ports  # nothing terminates there: no HTTP routes


def test_https_redirect_answers_every_request_with_301_to_https() -> None:
    vs = istio("VirtualService", "httpbin", {
        "hosts": ["httpbin.example.com"], "gateways": ["mygateway"],
        "http": [{"route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]}]})  # fmt: skip
    redirect = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["httpbin.example.com"],
                "tls": {"httpsRedirect": True}}  # fmt: skip
    t = compiled([redirect], {}, vs)
    d = match_route(t, get("httpbin.example.com", "/status/200?x=1", port=80), random.Random(0))
    assert (d.action, d.status, d.location) == (
        "redirect",
        301,
        "https://httpbin.example.com/status/200?x=1",
    )
    assert 80 not in t.gateway_tls


def test_sidecars_compile_no_gateway_tls() -> None:
    gw = istio(
        "Gateway",
        "g",
        {"selector": {}, "servers": [https("h", ["*"], {"mode": "SIMPLE", "credentialName": "x"})]},
    )
    snap = snapshot([gw], [service("httpbin", ports=[PortInfo("http", 8000, 8080)])])
    assert (
        compile_snapshot(dataclasses.replace(snap, credentials={"x": TLS_SECRET})).gateway_tls == {}
    )


_labels = st.text("abc", min_size=1, max_size=3)


@given(
    st.lists(st.lists(_labels, min_size=1, max_size=3).map(".".join), max_size=5),
    st.lists(_labels, min_size=1, max_size=4).map(".".join),
)
def test_lookup_sni_prefers_exact_then_the_longest_wildcard_then_any(
    names: list[str], sni: str
) -> None:
    routes = [SniRoute(n, TcpRoute(n, "", ())) for n in names]
    routes += [SniRoute("*." + n, TcpRoute("*." + n, "", ())) for n in names]
    routes.append(SniRoute("*", TcpRoute("*", "", ())))
    found = lookup_sni(routes, sni)
    assert found is not None
    if sni in names:
        assert found.name == sni
    else:
        suffixes = [n for n in names if sni.endswith("." + n)]
        assert found.name == ("*." + max(suffixes, key=len) if suffixes else "*")
