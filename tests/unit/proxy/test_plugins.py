"""ProxyPlugin loading and hooks (pure apart from loading real module files).

The pickers run over a real ``ClusterState`` (balancer and outlier detection)
built from a compiled snapshot; the clock is a number the test moves.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.lb import Endpoint
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.proxy import plan
from meshwork.proxy.mesh import ClusterState, MeshDecider
from meshwork.proxy.plugins import (
    FAILURES,
    Plugin,
    PluginRequest,
    PluginResponse,
    run_pick,
    run_request,
    run_response,
    selected,
)

HOOKS = """
calls = []
def on_request(request):
    calls.append(request.config.get("name"))
    if request.headers.get("x-deny"):
        return 451, "denied", {"x-why": "policy"}
    request.headers_to_add["x-seen-by"] = request.config.get("name", "")

def on_response(request, response):
    calls.append("response " + request.config.get("name"))
    response.headers_to_set["x-last"] = request.config.get("name")
    response.headers_to_add["x-" + request.config["name"]] = str(response.status)
"""
HEAD = b"HTTP/1.1 200 OK\r\nServer: app\r\nX-Drop: 1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"


def _plugin(name: str, module: str, priority: int = 0, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"module": module, "config": {"name": name}, "priority": priority,
                     "selector": {"matchLabels": labels or {}}}}  # fmt: skip


def _request(**headers: str) -> PluginRequest:
    return PluginRequest("GET", "/", "svc:80", headers, {})


def _module(tmp_path: Path, name: str, text: str) -> str:
    f = tmp_path / f"{name}.py"
    f.write_text(text)
    return str(f)


def _hook(name: str, on_response: Any = None, pick: Any = None) -> Plugin:
    return Plugin(f"ns/{name}", None, {"name": name}, 0, on_response, pick)


# --- on_request ------------------------------------------------------------------------------


def test_selectors_pick_by_labels_and_priority_orders_the_hooks(tmp_path: Path) -> None:
    f = _module(tmp_path, "hooks", HOOKS)
    chosen = selected([_plugin("low", f, 1), _plugin("high", f, 9), _plugin("elsewhere", f, 5, {"app": "x"})],
                      {"app": "web"})  # fmt: skip
    assert [p.name for p in chosen] == ["ns/high", "ns/low"]
    req = _request()
    assert run_request(chosen, req) is None
    assert req.headers_to_add == {"x-seen-by": "low"}  # both ran, in order; the last one set it


def test_a_hook_answers_and_a_failing_hook_answers_500(tmp_path: Path) -> None:
    f = _module(tmp_path, "hooks", HOOKS)
    reply = run_request(selected([_plugin("p", f)], {}), _request(**{"x-deny": "1"}))
    assert reply is not None and (reply.status, reply.body, reply.headers) == (451, b"denied", ((b"x-why", b"policy"),))
    broken = _module(tmp_path, "broken", "def on_request(request):\n    raise RuntimeError('boom')\n")
    before = FAILURES["ns/b on_request"]
    reply = run_request(selected([_plugin("b", broken)], {}), _request())
    assert reply is not None and reply.status == 500 and b"ns/b" in reply.body
    assert FAILURES["ns/b on_request"] == before + 1


@pytest.mark.parametrize("name, value", [("x-ok\r\nevil", "1"), ("x-a", "1\r\nx-evil: 2"), ("content-length", "0"),
                                         ("transfer-encoding", "chunked"), ("bad name", "1")])  # fmt: skip
def test_a_request_header_that_could_split_or_reframe_the_request_answers_500(name: str, value: str) -> None:
    def add(request: PluginRequest) -> None:
        request.headers_to_add[name] = value

    reply = run_request([Plugin("ns/bad", add, {})], _request())
    assert reply is not None and reply.status == 500 and b"ns/bad" in reply.body


def test_a_module_that_cannot_load_is_a_config_error_naming_the_plugin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ProxyPlugin ns/missing"):
        selected([_plugin("missing", str(tmp_path / "nope.py"))], {})


def test_selected_finds_all_three_hooks_and_leaves_absent_ones_none(tmp_path: Path) -> None:
    f = _module(tmp_path, "hooks", HOOKS)
    picker = _module(tmp_path, "picker", "def pick(request, endpoints):\n    return None\n")
    by_name = {p.name: p for p in selected([_plugin("h", f), _plugin("p", picker)], {})}
    h, p = by_name["ns/h"], by_name["ns/p"]
    assert h.on_request is not None and h.on_response is not None and h.pick is None
    assert p.on_request is None and p.on_response is None and p.pick is not None


# --- on_response -----------------------------------------------------------------------------


def test_response_hooks_run_in_reverse_priority_and_their_edits_follow_the_route(tmp_path: Path) -> None:
    f = _module(tmp_path, "hooks", HOOKS)
    chosen = selected([_plugin("low", f, 1), _plugin("high", f, 9)], {})
    decider_order = list(reversed(chosen))  # as MeshDecider runs them: the first on the request is last here
    route = plan.HeaderEdits(set=((b"x-last", b"route"), (b"x-route", b"1")), add=((b"x-high", b"route"),),
                             remove=(b"x-drop",))  # fmt: skip
    seen: list[PluginResponse] = []

    def spy(request: PluginRequest, response: PluginResponse) -> None:
        seen.append(response)

    edits = run_response([_hook("spy", spy), *decider_order], _request(), 200, HEAD, route)
    # The view: the upstream's fields with the route's edits, no hop-by-hop fields.
    assert seen[0].status == 200
    assert dict(seen[0].headers) == {"server": "app", "content-length": "2", "x-last": "route", "x-route": "1",
                                     "x-high": "route"}  # fmt: skip
    assert edits == plan.HeaderEdits(
        set=((b"x-route", b"1"), (b"x-last", b"high")),  # the high-priority hook ran last: its value wins
        add=((b"x-high", b"route"), (b"x-low", b"200"), (b"x-high", b"200")),
        remove=(b"x-drop",),
    )


def test_a_hook_removing_a_header_the_route_sets_removes_it_too() -> None:
    def strip(request: PluginRequest, response: PluginResponse) -> None:
        response.headers_to_remove.append("X-Route")

    route = plan.HeaderEdits(set=((b"x-route", b"1"),), add=((b"x-route", b"2"),))
    edits = run_response([_hook("strip", strip)], _request(), 200, HEAD, route)
    assert edits == plan.HeaderEdits(set=(), add=(), remove=(b"x-route",))


def test_no_edits_from_the_hooks_keeps_the_route_edits_as_they_are() -> None:
    route = plan.HeaderEdits(set=((b"x-route", b"1"),))
    assert run_response([_hook("idle", lambda rq, rs: None)], _request(), 200, HEAD, route) is route
    assert run_response([_hook("idle", lambda rq, rs: None)], _request(), 200, HEAD, None) is None


@pytest.mark.parametrize("edit", [
    lambda r: r.headers_to_set.update({"x-partial": "1"}) or 1 / 0,  # raises after editing
    lambda r: r.headers_to_set.update({"content-length": "0"}),  # would reframe the response
    lambda r: r.headers_to_add.update({"x-a": "1\r\nset-cookie: evil"}),  # would split the head
    lambda r: r.headers_to_remove.append("transfer-encoding"),
])  # fmt: skip
def test_a_failing_response_hook_is_skipped_and_counted_and_the_others_still_apply(edit: Any) -> None:
    def first(request: PluginRequest, response: PluginResponse) -> None:
        response.headers_to_set["x-first"] = "1"

    def bad(request: PluginRequest, response: PluginResponse) -> None:
        edit(response)

    def last(request: PluginRequest, response: PluginResponse) -> None:
        response.headers_to_add["x-last"] = "1"

    before = FAILURES["ns/bad on_response"]
    edits = run_response([_hook("first", first), _hook("bad", bad), _hook("last", last)], _request(), 502, HEAD)
    assert edits == plan.HeaderEdits(set=((b"x-first", b"1"),), add=((b"x-last", b"1"),))
    assert FAILURES["ns/bad on_response"] == before + 1


# --- the decider: zero cost without hooks, hooks wired when selected -------------------------

SNAPSHOT: dict[str, Any] = {
    "version": "1", "proxy": {"name": "client", "namespace": "default", "role": "sidecar", "labels": {}},
    "services": [{"name": "reviews", "namespace": "default", "clusterIP": "127.96.0.9",
                  "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
                  "endpoints": [{"ip": f"127.1.0.{i}", "ports": {"http": 9080}, "labels": {"version": f"v{i}"},
                                 "ready": True, "name": f"reviews-{i}"} for i in range(1, 6)]}],
    "destinationRules": [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                          "metadata": {"name": "reviews", "namespace": "default"},
                          "spec": {"host": "reviews", "trafficPolicy": {"outlierDetection": {
                              "consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "60s",
                              "maxEjectionPercent": 100}}}}],
}  # fmt: skip


def _raw(head: bytes) -> Request:
    got = RequestParser().receive_request(head)
    assert got is not None
    return got[0]


GET = _raw(b"GET http://reviews:9080/ HTTP/1.1\r\nHost: reviews:9080\r\nX-Pin: reviews-4\r\n\r\n")


def _decider(plugins: list[Plugin], now: list[float] | None = None) -> MeshDecider:
    clock = now or [0.0]
    return MeshDecider(compile_snapshot(snapshot_from_wire(SNAPSHOT)), rng=random.Random(7),
                       clock=lambda: clock[0], plugins=plugins)  # fmt: skip


def test_without_response_hooks_or_pickers_the_plan_is_the_plain_one() -> None:
    chosen = _decider([]).decide(GET, plan.Downstream("127.1.0.50"))
    assert type(chosen) is plan.Forward and chosen.on_response is None and type(chosen.cluster) is ClusterState
    only_request = _decider([Plugin("ns/r", lambda r: None, {})]).decide(GET, plan.Downstream("127.1.0.50"))
    assert type(only_request) is plan.Forward
    assert only_request.on_response is None and type(only_request.cluster) is ClusterState


def pin(request: PluginRequest, endpoints: tuple[Endpoint, ...]) -> Endpoint | None:
    return next((e for e in endpoints if e.name == request.headers.get("x-pin")), None)


def test_the_plan_calls_the_response_hooks_and_the_picker_chooses_the_endpoint() -> None:
    def tag(request: PluginRequest, response: PluginResponse) -> None:
        response.headers_to_set["x-tagged"] = f"{request.path} {response.status}"

    chosen = _decider([_hook("tag", tag), _hook("pin", pick=pin)]).decide(GET, plan.Downstream("127.1.0.50"))
    assert type(chosen) is plan.Forward and chosen.on_response is not None
    assert chosen.on_response(404, HEAD) == plan.HeaderEdits(set=((b"x-tagged", b"/ 404"),))
    for _ in range(5):
        ep = chosen.cluster.pick(frozenset())
        assert ep is not None and ep.host == "127.1.0.4"
        chosen.cluster.release(ep, 200)


def test_the_decider_runs_response_hooks_in_the_reverse_of_the_request_order(tmp_path: Path) -> None:
    f = _module(tmp_path, "hooks", HOOKS)
    plugins = selected([_plugin("low", f, 1), _plugin("high", f, 9)], {})
    chosen = _decider(plugins).decide(GET, plan.Downstream("127.1.0.50"))
    assert type(chosen) is plan.Forward and chosen.on_response is not None
    edits = chosen.on_response(200, HEAD)
    assert edits is not None and edits.set == ((b"x-last", b"high"),)
    assert [n for n, _ in edits.add] == [b"x-low", b"x-high"]
    assert chosen.request_headers is not None and (b"x-seen-by", b"low") in chosen.request_headers.set


def test_a_picker_failing_or_answering_a_stranger_falls_back_to_the_balancer() -> None:
    stranger = Endpoint("10.9.9.9", 80)
    for name, hook in (("raises", lambda rq, eps: 1 / 0), ("stranger", lambda rq, eps: stranger),
                       ("text", lambda rq, eps: "127.1.0.4:9080"), ("declines", lambda rq, eps: None)):  # fmt: skip
        before = FAILURES[f"ns/{name} pick"]
        chosen = _decider([_hook(name, pick=hook)]).decide(GET, plan.Downstream("127.1.0.50"))
        assert type(chosen) is plan.Forward
        picked = {chosen.cluster.pick(frozenset()) for _ in range(40)}
        assert len(picked) > 1 and all(ep is not None and ep.host.startswith("127.1.0.") for ep in picked)
        assert FAILURES[f"ns/{name} pick"] == before + (0 if name == "declines" else 40)


def test_pickers_in_priority_order_the_first_that_chooses_wins() -> None:
    first = _hook("first", pick=lambda rq, eps: None)
    second = _hook("second", pick=pin)
    third = _hook("third", pick=lambda rq, eps: eps[0])
    assert run_pick([first, second, third], _request(**{"x-pin": "reviews-3"}), tuple(
        Endpoint(f"127.1.0.{i}", 9080, name=f"reviews-{i}") for i in (1, 3))) == Endpoint("127.1.0.3", 9080, name="reviews-3")  # fmt: skip
    assert run_pick([first, second, third], _request(), (Endpoint("127.1.0.1", 9080),)) == Endpoint("127.1.0.1", 9080)


@settings(max_examples=200, deadline=None)
@given(
    failing=st.sets(st.integers(1, 5)),
    tried=st.sets(st.integers(1, 5)),
    answer=st.sampled_from(["first", "last", "none", "stranger", "raise"]),
)
def test_a_picker_is_never_offered_ejected_or_tried_endpoints(
    failing: set[int], tried: set[int], answer: str
) -> None:
    now = [100.0]
    offered: list[tuple[Endpoint, ...]] = []

    def record(request: PluginRequest, endpoints: tuple[Endpoint, ...]) -> object:
        offered.append(endpoints)
        if answer == "raise":
            raise RuntimeError("no")
        return {"first": endpoints[0], "last": endpoints[-1], "none": None, "stranger": Endpoint("10.0.0.1", 1)}[answer]

    decider = _decider([_hook("record", pick=record)], now)
    state = next(iter(decider.states.values()))
    by_ip = {e.host: e for e in state.endpoints.values()}
    for i in failing:  # one 5xx ejects (consecutive5xxErrors: 1)
        state.release(state.take(next(e for e in state.lb.endpoints if e.address == f"127.1.0.{i}")), 503)
    chosen = decider.decide(GET, plan.Downstream("127.1.0.50"))
    assert type(chosen) is plan.Forward
    exclude = frozenset(by_ip[f"127.1.0.{i}"] for i in tried)
    ep = chosen.cluster.pick(exclude)
    healthy = {f"127.1.0.{i}" for i in range(1, 6)} - {f"127.1.0.{i}" for i in failing}
    fresh = healthy - {f"127.1.0.{i}" for i in tried}
    if not fresh:  # nothing to offer: the balancer alone (a tried one again, or none at all)
        assert offered == []
        assert (ep is None) == (not healthy) and (ep is None or ep.host in healthy)
        return
    assert len(offered) == 1 and {e.address for e in offered[0]} == fresh
    assert ep is not None and ep.host in fresh
    if answer in ("first", "last"):
        assert ep.host == (offered[0][0] if answer == "first" else offered[0][-1]).address


def test_failures_are_exported_in_the_prometheus_format() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from meshwork.proxy.plugins import render_failures

    FAILURES['ns/odd"name on_request'] += 2
    try:
        families = {f.name: f for f in text_string_to_metric_families(render_failures())}
        samples = {
            (s.labels["plugin"], s.labels["hook"]): s.value
            for s in families["meshwork_proxy_plugin_failures"].samples
        }
        assert samples[('ns/odd"name', "on_request")] >= 2
        assert all(value == FAILURES[f"{plugin} {hook}"] for (plugin, hook), value in samples.items())
    finally:
        del FAILURES['ns/odd"name on_request']
