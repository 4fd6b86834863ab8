"""HTTPMatchRequest semantics: each condition alone, blocks ORed, conditions ANDed (properties and examples)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from meshcases import get, istio, service, table

from meshwork.core.mesh.route import Request, match_route

SEGMENT = st.text(alphabet="abcXYZ019-_.", min_size=0, max_size=6)
PATHS = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


def routed(matches: list[dict[str, Any]] | None, req: Request, **vs_extra: Any) -> bool:
    """Whether ``req`` is routed by a VirtualService whose only route has these match blocks."""
    first: dict[str, Any] = {"route": [{"destination": {"host": "web", "port": {"number": 8080}}}]}
    if matches is not None:
        first["match"] = matches
    vs = istio("VirtualService", "web", {"hosts": ["web"], "http": [first], **vs_extra})
    t = table([vs], [service("web", port=8080)])
    decision = match_route(t, req, random.Random(0))
    return decision.action == "forward"


@given(prefix=PATHS, path=PATHS)
def test_a_prefix_match_accepts_exactly_the_paths_with_that_prefix(prefix: str, path: str) -> None:
    req = get("web", path + "?q=1", port=8080)
    assert routed([{"uri": {"prefix": prefix}}], req) == path.startswith(prefix)


@given(exact=PATHS, path=PATHS)
def test_an_exact_match_ignores_the_query_string(exact: str, path: str) -> None:
    req = get("web", path + "?a=b", port=8080)
    assert routed([{"uri": {"exact": exact}}], req) == (path == exact)


@given(a=PATHS, b=PATHS, path=PATHS)
def test_match_blocks_are_ored(a: str, b: str, path: str) -> None:
    req = get("web", path, port=8080)
    union = routed([{"uri": {"prefix": a}}, {"uri": {"exact": b}}], req)
    assert union == (routed([{"uri": {"prefix": a}}], req) or routed([{"uri": {"exact": b}}], req))


@given(prefix=PATHS, path=PATHS, value=st.sampled_from(["jason", "kim", ""]))
def test_conditions_in_one_block_are_anded(prefix: str, path: str, value: str) -> None:
    headers = {"end-user": value} if value else {}
    req = Request("GET", path, "web", headers, 8080)
    block = {"uri": {"prefix": prefix}, "headers": {"end-user": {"exact": "jason"}}}
    assert routed([block], req) == (path.startswith(prefix) and value == "jason")


def test_a_regex_must_match_the_whole_path() -> None:
    m = [{"uri": {"regex": "/api/v[0-9]+"}}]
    assert routed(m, get("web", "/api/v12", port=8080))
    assert not routed(m, get("web", "/api/v12/users", port=8080))
    assert not routed(m, get("web", "/x/api/v1", port=8080))


def test_ignore_uri_case_applies_to_prefix_and_exact() -> None:
    assert routed(
        [{"uri": {"prefix": "/Static"}, "ignoreUriCase": True}],
        get("web", "/sTATIC/a.css", port=8080),
    )
    assert routed(
        [{"uri": {"exact": "/Login"}, "ignoreUriCase": True}], get("web", "/LOGIN", port=8080)
    )
    assert not routed([{"uri": {"prefix": "/Static"}}], get("web", "/static/a.css", port=8080))


def test_header_matches_exact_prefix_regex_and_presence() -> None:
    def req(value: str | None) -> Request:
        return Request("GET", "/", "web", {"x-v": value} if value is not None else {}, 8080)

    assert routed([{"headers": {"X-V": {"exact": "abc"}}}], req("abc"))
    assert not routed([{"headers": {"x-v": {"exact": "abc"}}}], req("abcd"))
    assert routed([{"headers": {"x-v": {"prefix": "ab"}}}], req("abcd"))
    assert routed([{"headers": {"x-v": {"regex": "a.c"}}}], req("abc"))
    assert not routed([{"headers": {"x-v": {"regex": "a.c"}}}], req("abcd"))
    assert routed([{"headers": {"x-v": {}}}], req(""))
    assert not routed([{"headers": {"x-v": {}}}], req(None))


def test_without_headers_matches_absent_or_different_values() -> None:
    block = [{"withoutHeaders": {"x-canary": {"exact": "yes"}}}]
    assert routed(block, Request("GET", "/", "web", {}, 8080))
    assert routed(block, Request("GET", "/", "web", {"x-canary": "no"}, 8080))
    assert not routed(block, Request("GET", "/", "web", {"x-canary": "yes"}, 8080))
    present = [{"withoutHeaders": {"x-canary": {}}}]
    assert not routed(present, Request("GET", "/", "web", {"x-canary": "no"}, 8080))


def test_query_params_method_authority_and_scheme() -> None:
    assert routed(
        [{"queryParams": {"debug": {"exact": "1"}}}], get("web", "/a?x=2&debug=1", port=8080)
    )
    assert not routed(
        [{"queryParams": {"debug": {"exact": "1"}}}], get("web", "/a?debug=0", port=8080)
    )
    assert routed([{"queryParams": {"id": {"regex": "[0-9]+"}}}], get("web", "/?id=42", port=8080))
    assert routed([{"method": {"exact": "POST"}}], get("web", "/", port=8080, method="POST"))
    assert not routed([{"method": {"exact": "POST"}}], get("web", "/", port=8080))
    assert routed([{"authority": {"prefix": "web"}}], get("web:8080", "/", port=8080))
    assert routed([{"scheme": {"exact": "http"}}], get("web", "/", port=8080))


def test_port_and_source_labels_are_settled_for_the_proxy() -> None:
    req = get("web", "/", port=8080)
    assert routed([{"port": 8080}], req)
    assert not routed([{"port": 9090}], req)
    # the default proxy of meshcases is productpage v1
    assert routed([{"sourceLabels": {"app": "productpage"}}], req)
    assert not routed([{"sourceLabels": {"app": "reviews"}}], req)
    assert routed([{"sourceNamespace": "default"}], req)
    assert not routed([{"sourceNamespace": "other"}], req)


def test_no_route_matching_is_404_nr_and_explains_why() -> None:
    vs = istio(
        "VirtualService",
        "web",
        {
            "hosts": ["web"],
            "http": [
                {
                    "match": [{"uri": {"prefix": "/api"}}],
                    "route": [{"destination": {"host": "web"}}],
                }
            ],
        },
    )
    t = table([vs], [service("web", port=8080)])
    d = match_route(t, get("web", "/other", port=8080), random.Random(0), explain=True)
    assert (d.action, d.status, d.flags, d.body) == ("reply", 404, ("NR",), b"")
    assert d.misses == ("default/web.0: uri '/other' is not prefix '/api'",)


BLOCKS = st.fixed_dictionaries(
    {},
    optional={
        "uri": st.sampled_from([{"prefix": "/a"}, {"exact": "/a/b"}, {"regex": "/a.*"}]),
        "method": st.sampled_from([{"exact": "GET"}, {"prefix": "P"}]),
        "headers": st.sampled_from(
            [{"x-u": {"exact": "1"}}, {"x-u": {}}, {"x-v": {"prefix": "z"}}]
        ),
        "withoutHeaders": st.sampled_from([{"x-u": {"exact": "1"}}, {"x-v": {}}]),
        "queryParams": st.sampled_from([{"q": {"exact": "1"}}, {"q": {"regex": "[0-9]+"}}]),
    },
)
REQUESTS = st.builds(
    Request,
    method=st.sampled_from(["GET", "POST", "PUT"]),
    path=st.sampled_from(["/", "/a", "/a/b", "/a/b?q=1", "/b?q=22", "/a?q=x"]),
    authority=st.just("web"),
    headers=st.dictionaries(st.sampled_from(["x-u", "x-v"]), st.sampled_from(["1", "z9", ""])),
    port=st.just(8080),
)


@given(block=BLOCKS, req=REQUESTS)
def test_the_fast_matcher_and_the_explainer_agree(block: dict[str, Any], req: Request) -> None:
    from meshwork.core.mesh.compile_http import _block
    from meshwork.core.mesh.route import block_matches, block_miss
    from meshwork.model.istio_routing import HTTPMatchRequest

    compiled = _block(HTTPMatchRequest.model_validate(block))
    assert block_matches(compiled, req, req.query) == (block_miss(compiled, req) is None)


def test_plain_routes_share_one_decision_and_rewrites_do_not() -> None:
    from meshwork.core.mesh.route import request_port

    assert (request_port("reviews:9080"), request_port("reviews"), request_port("a", "https")) == (
        9080,
        80,
        443,
    )
    vs = istio(
        "VirtualService",
        "web",
        {
            "hosts": ["web"],
            "http": [
                {
                    "match": [{"uri": {"prefix": "/old"}}],
                    "rewrite": {"uri": "/new"},
                    "route": [{"destination": {"host": "web"}}],
                },
                {"route": [{"destination": {"host": "web"}}]},
            ],
        },
    )
    t = table([vs], [service("web", port=8080)])
    rng = random.Random(0)
    a = match_route(t, get("web", "/a", port=8080), rng)
    b = match_route(t, get("web", "/b?x=1", port=8080), rng)
    assert a is b and a.path is None and a.authority is None
    r1 = match_route(t, get("web", "/old/1", port=8080), rng)
    r2 = match_route(t, get("web", "/old/2", port=8080), rng)
    assert (r1.path, r2.path) == ("/new/1", "/new/2")
