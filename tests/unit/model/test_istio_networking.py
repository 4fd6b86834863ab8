"""The networking.istio.io kinds: field sets, Istio's validation rules, and upstream manifests."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

import meshwork.model.istio_networking  # registers the networking kinds
import meshwork.model.istio_security  # noqa: F401  (registers the security kinds)
from meshwork.errors import ManifestError
from meshwork.model.base import REGISTRY, Registry, to_wire
from meshwork.model.codec import check_object
from meshwork.model.istio import duration_nanos
from meshwork.model.loader import parse_text
from support.conformance import CONFORMANCE as SHARED_CONFORMANCE

CONFORMANCE = SHARED_CONFORMANCE


def istio_registry() -> Registry:
    """Only the Istio kinds: other documents in an upstream file are then plainly "unsupported"."""
    registry = Registry()
    for info in REGISTRY.known_kinds():
        if info.group.endswith("istio.io"):
            registry.register(info)
    return registry


def problems(kind: str, spec: Any, **metadata: Any) -> list[tuple[str, str]]:
    raw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "x", **metadata},
        "spec": spec,
    }
    return [(p.cause.field, p.cause.message) for p in check_object(raw).problems]


def load_one(text: str) -> Any:
    (manifest,) = parse_text(textwrap.dedent(text), "t.yaml")
    return manifest.obj


def route(host: str = "a", **extra: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": host}}], **extra}


# ---------------------------------------------------------------------------
# Every upstream field, with its upstream wire name, survives a round trip
# ---------------------------------------------------------------------------

VIRTUAL_SERVICE_ALL = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: all, namespace: prod}
spec:
  hosts: [reviews.prod.svc.cluster.local, "*.example.com"]
  gateways: [prod/edge]
  exportTo: [".", other]
  http:
  - name: main
    match:
    - name: m1
      uri: {prefix: /api}
      scheme: {exact: https}
      method: {regex: "GET|HEAD"}
      authority: {exact: example.com}
      headers: {x-user: {exact: jason}, "@request.auth.claims.group": {exact: admin}}
      queryParams: {debug: {exact: "1"}}
      withoutHeaders: {x-skip: {prefix: y}}
      ignoreUriCase: true
      port: 8080
      sourceLabels: {app: web}
      sourceNamespace: frontend
      gateways: [mesh]
      statPrefix: api
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 75
      headers:
        request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
        response: {set: {x-d: "3"}, remove: [x-e]}
    - destination: {host: reviews, subset: v2}
      weight: 25
    rewrite: {authority: internal, uriRegexRewrite: {match: "^/api(.*)", rewrite: "/v2\\\\1"}}
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,503", retryRemoteLocalities: true, retryIgnorePreviousHosts: true, backoff: 25ms}
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 0.1}}
      abort: {httpStatus: 503, percentage: {value: 1.5}}
    mirror: {host: shadow, subset: v1}
    mirrorPercentage: {value: 50.0}
    mirrors:
    - destination: {host: shadow2}
      percentage: {value: 10}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.example"}]
      allowOrigin: ["https://old.example"]
      allowMethods: [GET, POST]
      allowHeaders: [content-type, "*"]
      exposeHeaders: [x-custom]
      maxAge: 24h
      allowCredentials: false
      unmatchedPreflights: IGNORE
    headers:
      request: {remove: [x-debug]}
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, port: 8443, scheme: https, redirectCode: 308}
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /here, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: ok}}
  - match: [{uri: {exact: /bin}}]
    directResponse: {status: 503, body: {bytes: aGVsbG8=}}
  - match: [{uri: {prefix: /shop}}]
    delegate: {name: shop, namespace: shop}
  - route: [{destination: {host: reviews}}]
    mirror: {host: shadow}
    mirrorPercent: 5
  tls:
  - match:
    - sniHosts: [reviews.prod.svc.cluster.local]
      destinationSubnets: [10.0.0.0/8]
      port: 443
      sourceLabels: {app: web}
      gateways: [mesh]
      sourceNamespace: frontend
    route:
    - destination: {host: reviews}
      weight: 100
  tcp:
  - match:
    - port: 27017
      destinationSubnets: [10.1.0.0/16]
      sourceLabels: {app: db}
      gateways: [mesh]
      sourceNamespace: frontend
      sourceSubnet: 10.2.0.0/16
    route:
    - destination: {host: mongo, port: {number: 27017}}
status:
  observedGeneration: 3
  conditions: [{type: Reconciled, status: "True"}]
"""

DESTINATION_RULE_ALL = """
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: all}
spec:
  host: reviews.prod.svc.cluster.local
  exportTo: ["."]
  workloadSelector: {matchLabels: {app: web}}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, path: /, ttl: 0s}
        ringHash: {minimumRingSize: 1024}
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        failoverPriority: [topology.kubernetes.io/region]
        enabled: true
      warmupDurationSecs: 60s
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 9, time: 7200s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 0s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 100
        maxRequestsPerConnection: 1
        maxRetries: 3
        idleTimeout: 1h
        h2UpgradePolicy: UPGRADE
        useClientProtocol: false
        maxConcurrentStreams: 100
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 3
      consecutiveGatewayErrors: 5
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 30
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/cert.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      subjectAltNames: [reviews.example.com]
      sni: reviews.example.com
      insecureSkipVerify: false
      caCrl: /etc/certs/crl.pem
    portLevelSettings:
    - port: {number: 80}
      loadBalancer:
        simple: LEAST_REQUEST
        warmup: {duration: 30s, minimumPercent: 10, aggression: 1.5}
      connectionPool: {tcp: {maxConnections: 10}}
      outlierDetection: {consecutive5xxErrors: 2}
      tls: {mode: ISTIO_MUTUAL}
    proxyProtocol: {version: V2}
    retryBudget: {percent: 20, minRetryConcurrency: 3}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tunnel: {protocol: CONNECT, targetHost: egress.example.com, targetPort: 8443}
      loadBalancer:
        consistentHash: {useSourceIp: true}
        localityLbSetting:
          failover: [{from: us-east, to: eu-west}]
  - name: v3
    trafficPolicy:
      loadBalancer: {consistentHash: {httpQueryParameterName: user, minimumRingSize: 64}}
"""

GATEWAY_ALL = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, protocol: HTTP, name: http}
    hosts: ["prod/*.example.com", "./www.example.com"]
    tls: {httpsRedirect: true}
    name: plain
  - port: {number: 443, protocol: HTTPS, name: https}
    bind: 0.0.0.0
    hosts: ["*"]
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/server.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/crl.pem
      subjectAltNames: [client.example.com]
      verifyCertificateSpki: [abc]
      verifyCertificateHash: [def]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
  - port: {number: 8443, protocol: HTTPS, name: https-multi}
    hosts: [api.example.com]
    tls:
      mode: SIMPLE
      credentialNames: [rsa-cert, ecdsa-cert]
  - port: {number: 9443, protocol: HTTPS, name: https-files}
    hosts: [files.example.com]
    tls:
      mode: SIMPLE
      tlsCertificates: [{serverCertificate: /a.pem, privateKey: /a.key, caCertificates: /ca.pem}]
  - port: {number: 15443, protocol: TLS, name: tls}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
"""

SERVICE_ENTRY_ALL = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.1]
  ports:
  - {number: 443, protocol: TLS, name: tls, targetPort: 8443}
  location: MESH_EXTERNAL
  resolution: DNS
  endpoints:
  - address: api-1.example.com
    ports: {tls: 9443}
    labels: {zone: a}
    network: net1
    locality: us-west/zone1
    weight: 10
    serviceAccount: api
  exportTo: ["*"]
  subjectAltNames: [spiffe://cluster.local/ns/api/sa/api]
"""

WORKLOAD_ENTRY_ALL = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1}
spec:
  address: 10.0.0.5
  ports: {http: 8080}
  labels: {app: ratings}
  network: vm-net
  locality: us-west/zone1
  weight: 5
  serviceAccount: ratings
"""

SIDECAR_ALL = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 0.0.0.0
    captureMode: IPTABLES
    defaultEndpoint: 127.0.0.1:8080
    connectionPool: {http: {http1MaxPendingRequests: 10}}
  egress:
  - port: {number: 3306, protocol: MYSQL, name: mysql}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["*/mysql.example.com"]
  - hosts: ["./*", "istio-system/*"]
  inboundConnectionPool: {tcp: {maxConnections: 100}}
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.example.com, subset: v1, port: {number: 443}}
"""

ALL = [
    VIRTUAL_SERVICE_ALL,
    DESTINATION_RULE_ALL,
    GATEWAY_ALL,
    SERVICE_ENTRY_ALL,
    WORKLOAD_ENTRY_ALL,
    SIDECAR_ALL,
]


@pytest.mark.parametrize(
    "text",
    ALL,
    ids=[
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "Sidecar",
    ],
)
def test_every_upstream_field_round_trips(text: str) -> None:
    """Every field upstream defines is accepted under its upstream name and nothing is added."""
    source = yaml.safe_load(text)
    obj = load_one(text)
    expected = {**source, "apiVersion": "networking.istio.io/v1"}
    assert to_wire(obj) == expected


def test_mirror_percent_accepts_both_spellings() -> None:
    for key in ("mirrorPercent", "mirror_percent"):
        spec = {"hosts": ["a"], "http": [{**route(), "mirror": {"host": "b"}, key: 50}]}
        assert problems("VirtualService", spec) == []


def test_no_istio_defaults_are_filled_in() -> None:
    obj = load_one("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: r}
        spec: {host: r}
    """)
    assert to_wire(obj)["spec"] == {"host": "r"}


# ---------------------------------------------------------------------------
# Istio's validation rules
# ---------------------------------------------------------------------------

VS_INVALID = [
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 0},
                        {"destination": {"host": "b"}, "weight": 0},
                    ]
                }
            ],
        },
        ("spec.http[0].route", "total destination weight = 0"),
        id="weights-all-zero",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": -1}]}]},
        ("spec.http[0].route[0].weight", "weight -1 < 0"),
        id="negative-weight",
    ),
    pytest.param(
        {"hosts": ["*"], "http": [route()]},
        (
            "spec.hosts[0]",
            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        ),
        id="star-host-mesh",
    ),
    pytest.param(
        {"hosts": ["a", "a"], "http": [route()]},
        ("spec.hosts[1]", "duplicate hosts in virtual service: a & a"),
        id="duplicate-host",
    ),
    pytest.param(
        {"hosts": ["*.foo.com", "bar.foo.com"], "http": [route()]},
        ("spec.hosts[1]", "duplicate hosts in virtual service: *.foo.com & bar.foo.com"),
        id="overlapping-host",
    ),
    pytest.param(
        {"hosts": ["a_b"], "http": [route()]},
        ("spec.hosts[0]", 'domain name "a_b" invalid (label "a_b" invalid)'),
        id="bad-host",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{}]},
        ("spec.http[0].route", "HTTP route, redirect or direct_response is required"),
        id="no-action",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{**route(), "redirect": {"uri": "/x"}}]},
        ("spec.http[0].redirect", "HTTP route cannot contain both route and redirect"),
        id="route-and-redirect",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"redirect": {}}]},
        ("spec.http[0].redirect", "redirect must specify URI, authority, scheme, or port"),
        id="empty-redirect",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"redirect": {"uri": "/", "redirectCode": 200}}]},
        ("spec.http[0].redirect.redirectCode", "200 is not a valid redirect code, must be 3xx"),
        id="redirect-code",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"directResponse": {"status": 99}}]},
        ("spec.http[0].directResponse.status", "HTTP status 99 is not in range 200-599"),
        id="direct-status",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(timeout="5")]},
        (
            "spec.http[0].timeout",
            'invalid duration "5": expected a number with a unit (ns, us, ms, s, m, h), e.g. "5s", "0.5s", "1m"',
        ),
        id="duration-syntax",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(timeout="0.5ms")]},
        ("spec.http[0].timeout", "duration must be greater than 1ms"),
        id="duration-min",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(timeout="1500us")]},
        ("spec.http[0].timeout", "only durations to ms precision are supported"),
        id="duration-precision",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(retries={"attempts": 0, "perTryTimeout": "1s"})]},
        (
            "spec.http[0].retries",
            "http retry policy configured when attempts are set to 0 (disabled)",
        ),
        id="retry-zero",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(retries={"attempts": 2, "retryOn": "5xx,sometimes"})]},
        ("spec.http[0].retries.retryOn", '"sometimes" is not a valid retryOn policy'),
        id="retry-on",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(fault={})]},
        ("spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay"),
        id="empty-fault",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(fault={"abort": {"httpStatus": 700}})]},
        ("spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599"),
        id="abort-status",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [route(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}})],
        },
        (
            "spec.http[0].fault.delay.percentage.value",
            "percentage 101.0 is neither 0.0, nor in range [0.0001, 100.0]",
        ),
        id="fault-percentage",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(fault={"delay": {"percentage": {"value": 1}}})]},
        (
            "spec.http[0].fault.delay.fixedDelay",
            "exactly one of fixedDelay or exponentialDelay is required",
        ),
        id="delay-needs-duration",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(mirrorPercentage={"value": 150})]},
        (
            "spec.http[0].mirrorPercentage.value",
            "mirror_percentage must be in range 0..100 (it has 150.0)",
        ),
        id="mirror-percentage",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(corsPolicy={"allowMethods": ["get"]})]},
        ("spec.http[0].corsPolicy.allowMethods[0]", '"get" is not a supported HTTP method'),
        id="cors-method",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(corsPolicy={"maxAge": "1500ms"})]},
        (
            "spec.http[0].corsPolicy.maxAge",
            "max_age duration is accurate only to seconds precision",
        ),
        id="cors-max-age",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                route(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}})
            ],
        },
        ("spec.http[0].rewrite", "rewrite may only contain one of URI or UriRegexRewrite"),
        id="rewrite-both",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route(headers={"response": {"set": {"host": "x"}}})]},
        (
            "spec.http[0].headers.response.set[host]",
            'invalid header "host": cannot set Host header',
        ),
        id="response-host",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                route(rewrite={"authority": "x"}, headers={"request": {"set": {":authority": "y"}}})
            ],
        },
        (
            "spec.http[0].headers.request.set[:authority]",
            'authority header cannot be set multiple times: have "x", attempting to set "y"',
        ),
        id="authority-twice",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"match": [{"uri": {"exact": "/", "prefix": "/"}}], **route()}]},
        ("spec.http[0].match[0].uri", "only one of exact, prefix or regex may be set"),
        id="string-match-oneof",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"match": [{"uri": {"regex": "(?=x)"}}], **route()}]},
        (
            "spec.http[0].match[0].uri.regex",
            '"regex": lookaround and backreferences are not RE2 syntax',
        ),
        id="re2-only",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [{"match": [{"headers": {"bad header": {"exact": "1"}}}], **route()}],
        },
        (
            "spec.http[0].match[0].headers[bad header]",
            "header name bad header is not a valid header name",
        ),
        id="header-name",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                {"match": [{"headers": {"@request.auth.claims.g": {"exact": "1"}}}], **route()}
            ],
        },
        (
            "spec.http[0].match[0].headers[@request.auth.claims.g]",
            "JWT claim based routing (key: @request.auth.claims.g) is only supported for gateway, found no gateways: []",
        ),
        id="jwt-claim-needs-gateway",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"match": [{"port": 70000}], **route()}]},
        ("spec.http[0].match[0].port", "port number 70000 must be in the range 1..65535"),
        id="match-port",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route("*")]},
        ("spec.http[0].route[0].destination.host", "invalid destination host *"),
        id="destination-star",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "subset": "V_1"}}]}]},
        ("spec.http[0].route[0].destination.subset", "subset name is invalid: V_1"),
        id="subset-name",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "port": {}}}]}]},
        (
            "spec.http[0].route[0].destination.port.number",
            "port number 0 must be in the range 1..65535",
        ),
        id="port-selector-empty",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [{"match": [{"uri": {"prefix": "/"}}], "delegate": {"name": "d"}, **route()}],
        },
        ("spec.http[0].route", "root HTTP route  must not specify route"),
        id="root-route",
    ),
    pytest.param(
        {"http": [{"match": [{"uri": {"regex": "/.*"}}], **route()}]},
        ("spec.http[0].match[0].uri", "uri match does not support regex match for delegating"),
        id="delegate-regex",
    ),
    pytest.param(
        {"gateways": ["g"], "http": [route()]},
        ("spec.gateways", "delegate virtual service must have no gateways specified"),
        id="delegate-gateways",
    ),
    pytest.param(
        {"hosts": ["a"], "gateways": ["ns/Bad_Name"], "http": [route()]},
        ("spec.gateways[0]", 'invalid value for gateway name: "Bad_Name"'),
        id="gateway-name",
    ),
    pytest.param(
        {"hosts": ["a"], "tcp": [{"match": [{"port": 1}]}]},
        ("spec.tcp[0].route", "TCP route is required"),
        id="tcp-route",
    ),
    pytest.param(
        {"hosts": ["a"], "tcp": [{"match": [{"destinationSubnets": ["10.0.0.0/99"]}], **route()}]},
        (
            "spec.tcp[0].match[0].destinationSubnets[0]",
            'invalid IP address or CIDR range: "10.0.0.0/99"',
        ),
        id="tcp-subnet",
    ),
    pytest.param(
        {"hosts": ["a"], "tls": [route()]},
        ("spec.tls[0].match", "TLS route must have at least one match condition"),
        id="tls-match",
    ),
    pytest.param(
        {"hosts": ["a"], "tls": [{"match": [{"sniHosts": []}], **route()}]},
        ("spec.tls[0].match[0].sniHosts", "TLS match must have at least one SNI host"),
        id="tls-sni",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route()], "exportTo": ["*", "."]},
        (
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource",
        ),
        id="export-to",
    ),
    pytest.param(
        {"hosts": ["a"], "http": [route()], "exportTo": ["~"]},
        ("spec.exportTo", "exportTo ~ (none) is not allowed for Istio configuration objects"),
        id="export-to-none",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), VS_INVALID)
def test_virtual_service_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("VirtualService", spec)


VS_VALID = [
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 80},
                        {"destination": {"host": "b"}, "weight": 30},
                    ]
                }
            ],
        },
        id="weights-are-relative",
    ),
    pytest.param(
        {
            "hosts": ["a"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "a"}, "weight": 100},
                        {"destination": {"host": "b"}, "weight": 0},
                    ]
                }
            ],
        },
        id="zero-weight-canary",
    ),
    pytest.param({"hosts": ["*"], "gateways": ["g"], "http": [route()]}, id="star-host-on-gateway"),
    pytest.param({"hosts": ["10.0.0.1"], "http": [route()]}, id="ip-host"),
    pytest.param(
        {
            "hosts": ["a"],
            "gateways": ["g"],
            "http": [
                {"match": [{"headers": {"@request.auth.claims.g": {"exact": "1"}}}], **route()}
            ],
        },
        id="jwt-claim-on-gateway",
    ),
    pytest.param(
        {"http": [{"match": [{"uri": {"prefix": "/a"}}], **route()}]}, id="delegate-without-hosts"
    ),
    pytest.param({"hosts": ["ext-svc"], "gateways": ["ext-host-gwy"]}, id="no-routes-accepted"),
    pytest.param({"hosts": ["a"], "http": [route(timeout="1h30m15.5s")]}, id="compound-duration"),
    pytest.param(
        {"hosts": ["a"], "http": [{"directResponse": {"status": 404}}]}, id="direct-response-only"
    ),
    pytest.param(
        {
            "hosts": ["a.local"],
            "gateways": ["g"],
            "tls": [{"match": [{"sniHosts": ["b.example.com"], "port": 443}], **route()}],
        },
        id="sni-outside-hosts",
    ),
]


@pytest.mark.parametrize("spec", VS_VALID)
def test_virtual_service_accepts(spec: dict[str, Any]) -> None:
    assert problems("VirtualService", spec) == []


DR_INVALID = [
    pytest.param({}, ("spec.host", "required value"), id="host-required"),
    pytest.param(
        {"host": "a", "subsets": [{"name": "v1"}, {"name": "v1"}]},
        ("spec.subsets[1].name", "duplicate subset names: v1"),
        id="duplicate-subsets",
    ),
    pytest.param(
        {"host": "a", "subsets": [{"name": "v1", "labels": {"version": "v 1"}}]},
        (
            "spec.subsets[0].labels[version]",
            "invalid label value \"v 1\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ),
        id="subset-labels",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {}},
        ("spec.trafficPolicy", "traffic policy must have at least one field"),
        id="empty-policy",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}},
        (
            "spec.trafficPolicy.loadBalancer.simple",
            'unsupported value "FASTEST": supported values: "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"',
        ),
        id="simple-lb",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}
            },
        },
        ("spec.trafficPolicy.loadBalancer", "only one of simple or consistentHash may be set"),
        id="lb-oneof",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"maglev": {"tableSize": 1000}}}},
        },
        (
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "tableSize must be a prime number for maglev",
        ),
        id="maglev-prime",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"connectionPool": {}}},
        ("spec.trafficPolicy.connectionPool", "connection pool must have at least one field"),
        id="empty-pool",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"connectionPool": {"http": {"maxRetries": -1}}}},
        ("spec.trafficPolicy.connectionPool.http.maxRetries", "max retries must be non-negative"),
        id="negative-retries",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "10"}}}},
        (
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            'invalid duration "10": expected a number with a unit (ns, us, ms, s, m, h), e.g. "5s", "0.5s", "1m"',
        ),
        id="connect-timeout",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}},
        (
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 101 is not in range 0..100",
        ),
        id="ejection-percent",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"outlierDetection": {"consecutiveLocalOriginFailures": 2}}},
        (
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        ),
        id="local-origin",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}},
        ("spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
        id="mutual-needs-cert",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {
                "tls": {"mode": "SIMPLE", "insecureSkipVerify": True, "subjectAltNames": []}
            },
        },
        (
            "spec.trafficPolicy.tls",
            "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
        ),
        id="skip-verify",
    ),
    pytest.param(
        {"host": "10.0.0.1"},
        (
            "spec.host",
            'domain name "10.0.0.1" invalid (top level domain "1" cannot be all-numeric)',
        ),
        id="numeric-tld",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {
                "tls": {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca"}
            },
        },
        (
            "spec.trafficPolicy.tls",
            "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
        ),
        id="credential-and-files",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}}]}},
        (
            "spec.trafficPolicy.portLevelSettings[0]",
            "port traffic policy must have at least one field",
        ),
        id="empty-port-policy",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {
                "tunnel": {"targetHost": "a.b", "targetPort": 1},
                "proxyProtocol": {},
            },
        },
        ("spec.trafficPolicy.tunnel", "tunnel and proxyProtocol must not be set together"),
        id="tunnel-and-proxy",
    ),
    pytest.param(
        {
            "host": "a",
            "trafficPolicy": {
                "loadBalancer": {
                    "localityLbSetting": {"distribute": [{"from": "a", "to": {"b": 50}}]}
                }
            },
        },
        (
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            "total weight of destinations must be 100",
        ),
        id="locality-weights",
    ),
    pytest.param(
        {"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 2**31}}}},
        (
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "must be less than or equal to 2147483647",
        ),
        id="int32-range",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), DR_INVALID)
def test_destination_rule_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("DestinationRule", spec)


def test_destination_rule_selector_limits_export() -> None:
    spec = {"host": "a", "workloadSelector": {"matchLabels": {"app": "x"}}, "exportTo": ["*"]}
    assert (
        "spec.exportTo",
        "destination rule with workload selector cannot have exportTo beyond current namespace",
    ) in problems("DestinationRule", spec)
    assert problems("DestinationRule", {**spec, "exportTo": ["prod"]}, namespace="prod") == []


GW_INVALID = [
    pytest.param(
        {"servers": []}, ("spec.servers", "gateway must have at least one server"), id="no-servers"
    ),
    pytest.param(
        {"servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "http"}}]},
        ("spec.servers[0].hosts", "server config must contain at least one host"),
        id="no-hosts",
    ),
    pytest.param(
        {"servers": [{"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*"]}]},
        ("spec.servers[0].port.name", "required value"),
        id="port-name-required",
    ),
    pytest.param(
        {"servers": [{"port": {"number": 80, "protocol": "SMTP", "name": "x"}, "hosts": ["*"]}]},
        (
            "spec.servers[0].port.protocol",
            'invalid protocol "SMTP", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS, HTTPS, UDP',
        ),
        id="protocol",
    ),
    pytest.param(
        {"servers": [{"port": {"number": 443, "protocol": "HTTPS", "name": "x"}, "hosts": ["*"]}]},
        ("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols"),
        id="https-needs-tls",
    ),
    pytest.param(
        {
            "servers": [
                {
                    "port": {"number": 443, "protocol": "HTTPS", "name": "x"},
                    "hosts": ["*"],
                    "tls": {"mode": "SIMPLE"},
                }
            ]
        },
        ("spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate"),
        id="simple-needs-cert",
    ),
    pytest.param(
        {
            "servers": [
                {
                    "port": {"number": 443, "protocol": "HTTPS", "name": "x"},
                    "hosts": ["*"],
                    "tls": {"mode": "MUTUAL", "serverCertificate": "a", "privateKey": "b"},
                }
            ]
        },
        ("spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle"),
        id="mutual-needs-ca",
    ),
    pytest.param(
        {
            "servers": [
                {
                    "port": {"number": 443, "protocol": "HTTPS", "name": "x"},
                    "hosts": ["*"],
                    "tls": {"mode": "ISTIO_MUTUAL", "credentialName": "c"},
                }
            ]
        },
        (
            "spec.servers[0].tls.credentialName",
            "ISTIO_MUTUAL TLS cannot have associated credentialName",
        ),
        id="istio-mutual",
    ),
    pytest.param(
        {
            "servers": [
                {
                    "port": {"number": 80, "protocol": "HTTP", "name": "x"},
                    "hosts": ["*"],
                    "tls": {"mode": "SIMPLE", "credentialName": "c"},
                }
            ]
        },
        ("spec.servers[0].tls", "server cannot have TLS settings for plain text HTTP ports"),
        id="http-with-tls",
    ),
    pytest.param(
        {
            "servers": [
                {"port": {"number": 80, "protocol": "HTTP", "name": "x"}, "hosts": ["*"]},
                {"port": {"number": 81, "protocol": "HTTP", "name": "x"}, "hosts": ["*"]},
            ]
        },
        ("spec.servers[1].port.name", "port names in servers must be unique: duplicate name x"),
        id="duplicate-port-name",
    ),
    pytest.param(
        {
            "servers": [
                {
                    "port": {"number": 80, "protocol": "HTTP", "name": "x", "targetPort": 8080},
                    "hosts": ["*"],
                }
            ]
        },
        ("spec.servers[0].port.targetPort", "targetPort has no impact on Gateways"),
        id="target-port",
    ),
    pytest.param(
        {
            "servers": [
                {"port": {"number": 80, "protocol": "HTTP", "name": "x"}, "hosts": ["Bad_NS/a.com"]}
            ]
        },
        ("spec.servers[0].hosts[0]", 'invalid namespace value "Bad_NS" in host "Bad_NS/a.com"'),
        id="host-namespace",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), GW_INVALID)
def test_gateway_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("Gateway", spec)


def test_gateway_name_is_a_dns_label() -> None:
    spec = {"servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "x"}, "hosts": ["*"]}]}
    assert problems("Gateway", spec) == []
    fields = [f for f, _ in problems("Gateway", spec, name="a.b")]
    assert fields == ["metadata.name"]


SE_INVALID = [
    pytest.param(
        {"hosts": []}, ("spec.hosts", "service entry must have at least one host"), id="no-hosts"
    ),
    pytest.param({"hosts": ["*"]}, ("spec.hosts[0]", "invalid host *"), id="star"),
    pytest.param(
        {"hosts": ["a.com"], "addresses": ["10.0.0.0/8"], "resolution": "DNS"},
        ("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types"),
        id="cidr-dns",
    ),
    pytest.param(
        {
            "hosts": ["a.com"],
            "ports": [{"number": 80, "name": "http"}, {"number": 80, "name": "web"}],
        },
        ("spec.ports[1].number", "service entry port 80 already defined"),
        id="duplicate-port",
    ),
    pytest.param(
        {
            "hosts": ["a.com"],
            "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http"}],
            "endpoints": [{"address": "a.com"}],
        },
        ("spec.endpoints[0].address", 'endpoint address "a.com" is not a valid IP address'),
        id="static-needs-ip",
    ),
    pytest.param(
        {
            "hosts": ["a.com"],
            "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http"}],
            "endpoints": [{"address": "1.2.3.4", "ports": {"web": 80}}],
        },
        ("spec.endpoints[0].ports[web]", "endpoint port 80 is not defined by the service entry"),
        id="endpoint-port-name",
    ),
    pytest.param(
        {"hosts": ["a.com"], "endpoints": [{"address": "1.2.3.4"}]},
        ("spec.endpoints", "no endpoints should be provided for resolution type none"),
        id="none-with-endpoints",
    ),
    pytest.param(
        {"hosts": ["a.com"], "endpoints": [], "workloadSelector": {"labels": {"a": "b"}}},
        (
            "spec.workloadSelector",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        ),
        id="selector-and-endpoints",
    ),
    pytest.param(
        {
            "hosts": ["a.com", "b.com"],
            "resolution": "DNS",
            "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}],
        },
        ("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports"),
        id="multi-host-tcp",
    ),
    pytest.param(
        {"hosts": ["a.com"], "resolution": "MAGIC"},
        (
            "spec.resolution",
            'unsupported value "MAGIC": supported values: "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"',
        ),
        id="resolution",
    ),
    pytest.param(
        {"hosts": ["a.com"], "exportTo": ["~", "a"]},
        ("spec.exportTo", "cannot export service entry to no one (~) and someone"),
        id="export-none-and-some",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), SE_INVALID)
def test_service_entry_rules(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in problems("ServiceEntry", spec)


def test_service_entry_hosts_required() -> None:
    assert problems("ServiceEntry", {}) == [("spec.hosts", "required value")]


def test_workload_entry_and_sidecar_rules() -> None:
    assert ("spec.address", "address is required") in problems("WorkloadEntry", {})
    assert (
        "spec.address",
        'endpoint address "bad_host" is not a valid FQDN or an IP address',
    ) in problems("WorkloadEntry", {"address": "bad_host"})
    assert ("spec", "sidecar: empty configuration provided") in problems("Sidecar", {})
    bad_egress = {"egress": [{"hosts": ["mysql.example.com"]}]}
    assert (
        "spec.egress[0].hosts[0]",
        'sidecar: host must be of form namespace/dnsName, got "mysql.example.com"',
    ) in problems("Sidecar", bad_egress)
    proxy = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "e.com"}}}
    assert (
        "spec.outboundTrafficPolicy.egressProxy",
        "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
    ) in problems("Sidecar", proxy)


def test_spec_is_required() -> None:
    raw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}}
    assert [(p.cause.field, p.cause.message) for p in check_object(raw).problems] == [
        ("spec", "required value")
    ]


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("5s", 5 * 10**9),
        ("0.5s", 5 * 10**8),
        ("1m", 60 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("250ms", 25 * 10**7),
        ("1.000340012s", 1_000_340_012),
        ("2us", 2000),
        ("3µs", 3000),
        ("-1s", -(10**9)),
        (".5s", 5 * 10**8),
    ],
)
def test_duration_syntax(text: str, nanos: int) -> None:
    assert duration_nanos(text) == nanos


@pytest.mark.parametrize("text", ["", "5", "s", "1 s", "1d", "1.2.3s", "5S", "+", "1s2", "00:01"])
def test_duration_refuses(text: str) -> None:
    assert duration_nanos(text) is None


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "plural"),
    [
        ("vs", "VirtualService", "virtualservices"),
        ("dr", "DestinationRule", "destinationrules"),
        ("gw", "Gateway", "gateways"),
        ("se", "ServiceEntry", "serviceentries"),
        ("we", "WorkloadEntry", "workloadentries"),
        ("sidecar", "Sidecar", "sidecars"),
    ],
)
def test_registered(name: str, kind: str, plural: str) -> None:
    (info,) = [i for i in REGISTRY.for_name(name) if i.group == "networking.istio.io"]
    assert (info.kind, info.plural, info.versions, info.api_version) == (
        kind,
        plural,
        ("v1", "v1beta1", "v1alpha3"),
        "networking.istio.io/v1",
    )
    assert REGISTRY.for_api_version("networking.istio.io/v1alpha3", kind) is info
    assert REGISTRY.for_resource("networking.istio.io", plural) is info


# ---------------------------------------------------------------------------
# Upstream manifests
# ---------------------------------------------------------------------------

# Documents per kind in ../shared/conformance (its README's table).
UPSTREAM_COUNTS = {
    "VirtualService": 38,
    "DestinationRule": 21,
    "Gateway": 12,
    "ServiceEntry": 6,
    "AuthorizationPolicy": 24,
    "PeerAuthentication": 7,
    "RequestAuthentication": 3,
}


def _upstream_files() -> list[Path]:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"{CONFORMANCE} is not present on this machine")
    return [
        p
        for p in sorted(CONFORMANCE.rglob("*"))
        if p.suffix in (".yaml", ".yml") and "istio.io/" in p.read_text()
    ]


def test_every_upstream_istio_document_validates() -> None:
    """Whole upstream files, as written: only their non-Istio documents may be refused."""
    registry = istio_registry()
    counts: Counter[str] = Counter()
    for path in _upstream_files():
        text = path.read_text()
        try:
            parse_text(text, str(path), registry=registry)
        except ManifestError as exc:
            real = [
                c.render() for c in exc.causes if "meshwork does not support kind" not in c.message
            ]
            assert real == [], f"{path}: Istio documents refused"
            unsupported = [c for c in exc.causes if c.field in ("kind", "apiVersion")]
            assert all("istio.io" not in c.message for c in unsupported)
        docs = [
            d
            for d in yaml.safe_load_all(text)
            if isinstance(d, dict) and "istio.io" in str(d.get("apiVersion"))
        ]
        counts.update(d["kind"] for d in docs)
    assert counts >= Counter(UPSTREAM_COUNTS), counts


def test_upstream_documents_round_trip_unchanged() -> None:
    """What upstream wrote is what we store (bar the apiVersion): no defaults, no renames."""
    registry = istio_registry()
    checked = 0
    for path in _upstream_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or "istio.io" not in str(doc.get("apiVersion")):
                continue
            (manifest,) = parse_text(yaml.safe_dump(doc), str(path), registry=registry)
            wire = to_wire(manifest.obj)
            info = registry.for_api_version(doc["apiVersion"], doc["kind"])
            assert info is not None
            assert wire["apiVersion"] == info.api_version
            assert {**wire, "apiVersion": doc["apiVersion"]} == _stringify_keys(doc), path
            checked += 1
    assert checked >= sum(UPSTREAM_COUNTS.values())


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_keys(v) for v in value]
    return value
