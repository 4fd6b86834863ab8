"""Compiling snapshots: the conformance manifests, host resolution, gateways, DestinationRule choice and merge."""

from __future__ import annotations

import random
from collections import Counter

from meshcases import bookinfo_services, get, istio, manifests, service, table

from meshwork.core.mesh.route import Request, match_route
from meshwork.core.mesh.snapshot import PortInfo, ProxyInfo
from meshwork.core.mesh.table import DEFAULT_RETRY

BOOKINFO_DR = "bookinfo/networking/destination-rule-all.yaml"
REVIEWS = "reviews.default.svc.cluster.local"


def clusters_hit(t, req: Request, n: int = 400, seed: int = 7) -> Counter[str]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return Counter(match_route(t, req, rng).cluster.name for _ in range(n))  # type: ignore[union-attr]


def test_jason_goes_to_reviews_v2_and_everyone_else_to_v3() -> None:
    t = table(
        manifests(BOOKINFO_DR, "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"),
        bookinfo_services(),
    )
    rng = random.Random(0)
    jason = match_route(t, get("reviews:9080", "/reviews/0", end_user="jason"), rng)
    other = match_route(t, get("reviews:9080", "/reviews/0", end_user="kim"), rng)
    assert jason.cluster is not None and other.cluster is not None
    assert jason.cluster.name == f"outbound|9080|v2|{REVIEWS}"
    assert [e.labels["version"] for e in jason.cluster.endpoints] == ["v2"]
    assert other.cluster.name == f"outbound|9080|v3|{REVIEWS}"
    assert jason.retry == DEFAULT_RETRY  # no retries field: Istio's default policy


def test_weighted_manifests_split_as_written() -> None:
    t = table(
        manifests(BOOKINFO_DR, "bookinfo/networking/virtual-service-reviews-80-20.yaml"),
        bookinfo_services(),
    )
    route = t.ports[9080].lookup("reviews").routes[0]  # type: ignore[union-attr]
    assert [(d.subset, d.weight) for d in route.destinations] == [("v1", 80), ("v2", 20)]
    t = table(
        manifests(BOOKINFO_DR, "bookinfo/networking/virtual-service-reviews-v2-v3.yaml"),
        bookinfo_services(),
    )
    hits = clusters_hit(t, get("reviews", "/"), n=2000)
    assert set(hits) == {f"outbound|9080|v2|{REVIEWS}", f"outbound|9080|v3|{REVIEWS}"}
    assert abs(hits[f"outbound|9080|v2|{REVIEWS}"] / 2000 - 0.5) <= 0.03


def test_ratings_abort_and_delay_for_jason_only() -> None:
    t = table(
        manifests(BOOKINFO_DR, "bookinfo/networking/virtual-service-ratings-test-abort.yaml"),
        bookinfo_services(),
    )
    rng = random.Random(0)
    d = match_route(t, get("ratings:9080", "/ratings/0", end_user="jason"), rng)
    assert (d.action, d.status, d.flags, d.body) == ("reply", 500, ("FI",), b"fault filter abort")
    assert match_route(t, get("ratings:9080", "/ratings/0"), rng).action == "forward"
    t = table(
        manifests(BOOKINFO_DR, "bookinfo/networking/virtual-service-ratings-test-delay.yaml"),
        bookinfo_services(),
    )
    d = match_route(t, get("ratings", "/ratings/0", end_user="jason"), rng)
    assert (d.action, d.delay, d.flags) == ("forward", 7.0, ("DI",))
    assert match_route(t, get("ratings", "/ratings/0"), rng).delay == 0.0


def test_details_fault_file_aborts_every_request_with_555() -> None:
    t = table(manifests("bookinfo/networking/fault-injection-details-v1.yaml"), bookinfo_services())
    rng = random.Random(3)
    statuses = {match_route(t, get("details", "/details/1"), rng).status for _ in range(50)}
    assert statuses == {555}


def test_bookinfo_gateway_routes_the_listed_paths_to_productpage() -> None:
    gw_proxy = ProxyInfo(
        "istio-ingressgateway-1", "istio-system", {"istio": "ingressgateway"}, "gateway"
    )
    objs = manifests("bookinfo/networking/bookinfo-gateway.yaml")
    t = table(objs, bookinfo_services(), gw_proxy)
    assert sorted(t.ports) == [8080]
    rng = random.Random(0)
    for path in ("/productpage", "/static/x.css", "/login", "/api/v1/products/1"):
        d = match_route(t, get("localhost:8080", path, port=8080), rng)
        assert (
            d.cluster is not None
            and d.cluster.name == "outbound|9080||productpage.default.svc.cluster.local"
        )
    d = match_route(t, get("localhost:8080", "/admin", port=8080), rng)
    assert (d.status, d.flags) == (404, ("NR",))
    # a sidecar sees no gateway-bound route: productpage keeps its default route
    sidecar = table(objs, bookinfo_services())
    assert sidecar.ports[9080].lookup("productpage").routes[0].name == "default"  # type: ignore[union-attr]
    # a gateway whose labels the selector does not match opens nothing
    other = ProxyInfo("gw", "istio-system", {"istio": "egressgateway"}, "gateway")
    assert table(objs, bookinfo_services(), other).ports == {}


def test_egress_service_entry_with_port_rewrite_and_tls_port_policy() -> None:
    t = table(manifests("bookinfo/networking/egress-rule-google-apis.yaml"))
    d = match_route(t, get("www.googleapis.com", "/books", port=80), random.Random(0))
    assert d.cluster is not None
    assert d.cluster.name == "outbound|443||www.googleapis.com"
    assert d.cluster.tls_mode == "SIMPLE"  # portLevelSettings for 443
    assert [e.key for e in d.cluster.endpoints] == ["www.googleapis.com:443"]  # DNS resolution
    assert t.clusters["outbound|80||www.googleapis.com"].tls_mode is None
    # portLevelSettings replace the whole policy: the top-level ROUND_ROBIN does not reach 443
    assert t.clusters["outbound|80||www.googleapis.com"].lb.policy == "ROUND_ROBIN"
    assert d.cluster.lb.policy == "LEAST_REQUEST"


def test_service_entry_endpoints_take_their_named_ports() -> None:
    t = table(manifests("testdata/config/rule-weighted-route.yaml"))
    v1 = t.clusters["outbound|80|v1|c-weighted.extsvc.com"]
    assert [e.key for e in v1.endpoints] == ["127.0.0.2:7072"]
    hits = clusters_hit(t, get("c-weighted.extsvc.com", "/", port=80), n=4000)
    assert abs(hits["outbound|80|v1|c-weighted.extsvc.com"] / 4000 - 0.75) <= 0.03


def test_names_a_client_may_use() -> None:
    t = table([], [service("reviews"), service("mail", ns="other", base=20)])
    routes = t.ports[9080]
    for name in ("reviews", "reviews.default", "reviews.default.svc", REVIEWS, "REVIEWS.default"):
        assert routes.lookup(name.lower()) is not None, name
    assert routes.lookup("mail") is None  # short names only within the namespace
    assert routes.lookup("mail.other") is not None
    d = match_route(t, get("Reviews:9080", "/"), random.Random(0))
    assert d.cluster is not None and d.cluster.host == REVIEWS


def test_short_hosts_resolve_in_the_virtual_services_namespace() -> None:
    vs = istio(
        "VirtualService",
        "mail",
        {
            "hosts": ["mail"],
            "http": [
                {"route": [{"destination": {"host": "mail", "subset": "v2"}}], "timeout": "3s"}
            ],
        },
        ns="other",
    )
    dr = istio(
        "DestinationRule",
        "mail",
        {"host": "mail", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]},
        ns="other",
    )
    t = table([vs, dr], [service("mail", ns="other", versions=("v1", "v2"))])
    d = match_route(t, get("mail.other", "/"), random.Random(0))
    assert (
        d.cluster is not None and d.cluster.name == "outbound|9080|v2|mail.other.svc.cluster.local"
    )
    assert d.timeout == 3.0


def test_wildcard_virtual_service_hosts_cover_service_entry_hosts() -> None:
    se = istio(
        "ServiceEntry",
        "ext",
        {
            "hosts": ["api.example.com"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "DNS",
        },
    )
    vs = istio(
        "VirtualService",
        "ext",
        {
            "hosts": ["*.example.com"],
            "http": [{"route": [{"destination": {"host": "api.example.com"}}], "timeout": "1s"}],
        },
    )
    t = table([se, vs])
    d = match_route(t, get("api.example.com", "/", port=80), random.Random(0))
    assert d.timeout == 1.0 and d.cluster is not None and d.cluster.host == "api.example.com"


def test_destination_rule_choice_prefers_the_proxy_namespace_then_exact_hosts() -> None:
    def dr(name: str, host: str, ns: str, lb: str) -> object:
        return istio(
            "DestinationRule",
            name,
            {"host": host, "trafficPolicy": {"loadBalancer": {"simple": lb}}},
            ns=ns,
        )

    svc = service("reviews")
    root = dr("root", "*.svc.cluster.local", "istio-system", "RANDOM")
    own = dr("own", REVIEWS, "default", "ROUND_ROBIN")
    t = table([root], [svc])
    assert t.clusters[f"outbound|9080||{REVIEWS}"].lb.policy == "RANDOM"
    t = table([root, own], [svc])
    assert t.clusters[f"outbound|9080||{REVIEWS}"].lb.policy == "ROUND_ROBIN"
    assert t.clusters[f"outbound|9080||{REVIEWS}"].destination_rule == "default/own"


def test_subset_policy_overrides_top_level_and_port_level_settings() -> None:
    dr = istio(
        "DestinationRule",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {
                "loadBalancer": {"simple": "RANDOM"},
                "connectionPool": {"tcp": {"maxConnections": 7}},
                "outlierDetection": {"consecutive5xxErrors": 3},
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {
                        "loadBalancer": {"simple": "ROUND_ROBIN"},
                        "portLevelSettings": [
                            {
                                "port": {"number": 9080},
                                "connectionPool": {"http": {"http1MaxPendingRequests": 1}},
                            }
                        ],
                    },
                },
            ],
        },
    )
    t = table([dr], [service("reviews", versions=("v1", "v2"))])
    v1 = t.clusters[f"outbound|9080|v1|{REVIEWS}"]
    assert (v1.lb.policy, v1.pool.max_connections) == ("RANDOM", 7)
    assert v1.outlier is not None and v1.outlier.consecutive_5xx == 3
    v2 = t.clusters[f"outbound|9080|v2|{REVIEWS}"]
    # the subset's port entry replaces all four policies (Istio MergeTrafficPolicy)
    assert v2.pool.max_pending == 1 and v2.lb.policy == "LEAST_REQUEST" and v2.outlier is None
    assert [e.labels["version"] for e in v2.endpoints] == ["v2"]


def test_export_to_hides_resources_from_other_namespaces() -> None:
    vs = istio(
        "VirtualService",
        "reviews",
        {
            "hosts": ["reviews.default.svc.cluster.local"],
            "exportTo": ["."],
            "http": [
                {
                    "route": [{"destination": {"host": "reviews.default.svc.cluster.local"}}],
                    "timeout": "2s",
                }
            ],
        },
    )
    here = table([vs], [service("reviews")])
    away = table([vs], [service("reviews")], ProxyInfo("x", "other", {}))
    assert match_route(here, get("reviews.default", "/"), random.Random(0)).timeout == 2.0
    assert match_route(away, get("reviews.default", "/"), random.Random(0)).timeout is None


def test_default_route_and_unknown_hosts() -> None:
    t = table(
        [], [service("reviews", ports=(PortInfo("http", 9080, 9080), PortInfo("grpc", 9090, 9090)))]
    )
    d = match_route(t, get("reviews:9090", "/", port=9090), random.Random(0))
    assert d.cluster is not None and d.cluster.name == f"outbound|9090||{REVIEWS}"
    assert d.cluster.protocol == "grpc" and d.retry == DEFAULT_RETRY
    passthrough = match_route(t, get("example.org", "/", port=80), random.Random(0))
    assert passthrough.passthrough and passthrough.action == "forward"


def test_a_route_to_an_undefined_subset_is_503_nc() -> None:
    vs = istio(
        "VirtualService",
        "reviews",
        {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}],
        },
    )
    d = match_route(table([vs], [service("reviews")]), get("reviews", "/"), random.Random(0))
    assert (d.status, d.flags) == (503, ("NC",))


def test_not_ready_endpoints_are_left_out() -> None:
    from dataclasses import replace

    svc = service("reviews", versions=("v1", "v2"))
    svc = replace(svc, endpoints=(svc.endpoints[0], replace(svc.endpoints[1], ready=False)))
    t = table([], [svc])
    assert len(t.clusters[f"outbound|9080||{REVIEWS}"].endpoints) == 1


def test_oldest_virtual_service_wins_a_shared_host() -> None:
    def vs(name: str, created: str, timeout: str) -> object:
        return istio(
            "VirtualService",
            name,
            {
                "hosts": ["reviews"],
                "http": [{"route": [{"destination": {"host": "reviews"}}], "timeout": timeout}],
            },
            created=created,
        )

    t = table(
        [vs("b", "2024-01-02T00:00:00Z", "2s"), vs("a", "2024-01-01T00:00:00Z", "1s")],
        [service("reviews")],
    )
    assert match_route(t, get("reviews", "/"), random.Random(0)).timeout == 1.0


def test_tcp_echo_gateway_splits_80_20_and_sidecars_route_tcp_to_the_service() -> None:
    from meshwork.core.mesh.route import match_tcp

    tcp_echo = service(
        "tcp-echo",
        port=9000,
        versions=("v1", "v2"),
        ports=(PortInfo("tcp", 9000, 9000), PortInfo("tcp-other", 9001, 9001)),
    )
    all_v1 = manifests("tcp-echo/tcp-echo-all-v1.yaml")
    split = [o for o in all_v1 if o.kind != "VirtualService"] + manifests(
        "tcp-echo/tcp-echo-20-v2.yaml"
    )
    gw = ProxyInfo("ingress-1", "istio-system", {"istio": "ingressgateway"}, "gateway")
    t = table(split, [tcp_echo], gw)
    rng = random.Random(11)
    hits = Counter(match_tcp(t, 31400, "", rng).cluster.subset for _ in range(4000))  # type: ignore[union-attr]
    assert abs(hits["v2"] / 4000 - 0.2) <= 0.03 and set(hits) == {"v1", "v2"}
    assert match_tcp(t, 31401, "", rng).flags == ("NR",)
    sidecar = table(all_v1, [tcp_echo])
    d = match_tcp(sidecar, 9001, "tcp-echo", rng)
    assert (
        d.cluster is not None
        and d.cluster.name == "outbound|9001||tcp-echo.default.svc.cluster.local"
    )
    assert d.cluster.protocol == "tcp"
