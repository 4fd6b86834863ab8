"""ProxyPlugins by side and port (``spec.match``): which run outbound, which inbound, and the
inbound decider's plans with them (pure; the plugin modules are real files)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.mesh.compile import compile_snapshot
from meshwork.core.mesh.snapshot import snapshot_from_wire
from meshwork.proxy import plan
from meshwork.proxy.inbound import AppPort, InboundDecider, PluggedPortDecider, PortDecider
from meshwork.proxy.mesh import MeshDecider
from meshwork.proxy.plugins import (
    CLIENT,
    FAILURES,
    SERVER,
    Plugin,
    PluginChain,
    PluginRequest,
    PluginResponse,
    TrafficMatch,
    selected,
)

MODES = ("CLIENT", "SERVER", "CLIENT_AND_SERVER", "UNDEFINED")
HOOKS = """
def on_request(request):
    if request.headers.get("x-deny"):
        return 403, "no", {"x-by": request.config["name"]}
    request.headers_to_add["x-in-" + request.config["name"]] = request.path

def on_response(request, response):
    response.headers_to_set["x-out-" + request.config["name"]] = str(response.status)

def pick(request, endpoints):
    return endpoints[0]
"""
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _spec(name: str, module: str, match: Any = None, priority: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"module": module, "config": {"name": name}, "priority": priority}
    if match is not None:
        spec["match"] = match
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec}


@pytest.fixture
def hooks(tmp_path: Path) -> str:
    f = tmp_path / "side_hooks.py"
    f.write_text(HOOKS)
    return str(f)


def _raw(text: str) -> Request:
    parser = RequestParser()
    parser.receive_data(text.encode())
    event = parser.next_event()
    assert isinstance(event, Request)
    return event


# --- selection ---------------------------------------------------------------------------------


def test_no_match_is_the_client_side_only_and_a_mode_without_ports_is_every_port(hooks: str) -> None:
    plugins = selected([_spec("old", hooks), _spec("srv", hooks, [{"mode": "SERVER"}]),
                        _spec("both", hooks, [{}]), _spec("cli", hooks, [{"mode": "CLIENT"}])], {})  # fmt: skip
    by_side = {side: [p.name for p in PluginChain(plugins, side).at(9080).plugins] for side in (CLIENT, SERVER)}
    assert by_side == {CLIENT: ["ns/old", "ns/both", "ns/cli"], SERVER: ["ns/srv", "ns/both"]}


@given(
    selectors=st.lists(st.fixed_dictionaries({"mode": st.sampled_from(MODES)},
                                             optional={"ports": st.lists(st.integers(1, 6), max_size=3, unique=True)
                                                       .map(lambda ns: [{"number": n} for n in ns])}),
                       min_size=1, max_size=3),
    side=st.sampled_from((CLIENT, SERVER)),
    port=st.integers(1, 6),
)  # fmt: skip
def test_a_request_passes_when_any_selector_names_its_side_and_its_port_or_no_port(
    selectors: list[dict[str, Any]], side: Any, port: int
) -> None:
    modes = {CLIENT: {"CLIENT", "CLIENT_AND_SERVER", "UNDEFINED"}, SERVER: {"SERVER", "CLIENT_AND_SERVER", "UNDEFINED"}}
    expected = any(
        s["mode"] in modes[side] and (not s.get("ports") or port in [p["number"] for p in s["ports"]])
        for s in selectors
    )
    plugin = Plugin("ns/p", None, {}, match=tuple(
        TrafficMatch("CLIENT" in s["mode"] or s["mode"] == "UNDEFINED", "SERVER" in s["mode"] or s["mode"] == "UNDEFINED",
                     frozenset(p["number"] for p in s.get("ports") or [])) for s in selectors))  # fmt: skip
    assert plugin.runs(side, port) is expected
    assert (PluginChain([plugin], side).at(port).plugins == [plugin]) is expected


def test_a_match_the_model_would_refuse_is_a_config_error_naming_the_plugin(hooks: str) -> None:
    with pytest.raises(ValueError, match=r"ns/bad: spec.match\[0\].mode"):
        selected([_spec("bad", hooks, [{"mode": "INBOUND"}])], {})
    with pytest.raises(ValueError, match=r"ns/bad: spec.match\[0\].ports\[0\].number"):
        selected([_spec("bad", hooks, [{"ports": [{"number": 0}]}])], {})


def test_the_server_side_never_picks_and_runs_responses_in_reverse(hooks: str) -> None:
    plugins = selected([_spec("a", hooks, [{}], 2), _spec("b", hooks, [{}], 1)], {})
    client, server = PluginChain(plugins, CLIENT).at(80), PluginChain(plugins, SERVER).at(80)
    assert [p.name for p in client.pickers] == ["ns/a", "ns/b"] and server.pickers == []
    assert [p.name for p in server.responders] == ["ns/b", "ns/a"]


# --- the outbound side: by the request's service port -------------------------------------------

SNAPSHOT: dict[str, Any] = {
    "version": "1", "proxy": {"name": "client", "namespace": "default", "role": "sidecar", "labels": {}},
    "services": [{"name": name, "namespace": "default", "clusterIP": ip,
                  "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
                  "endpoints": [{"ip": "127.1.0.4", "ports": {"http": port}, "ready": True, "name": f"{name}-1"}]}
                 for name, ip, port in (("reviews", "127.96.0.9", 9080), ("ratings", "127.96.0.10", 8080))],
}  # fmt: skip


def test_the_outbound_side_runs_a_plugin_only_for_the_service_ports_it_names(hooks: str) -> None:
    plugins = selected([_spec("p", hooks, [{"mode": "CLIENT", "ports": [{"number": 9080}]}]),
                        _spec("inbound-only", hooks, [{"mode": "SERVER"}])], {})  # fmt: skip
    decider = MeshDecider(compile_snapshot(snapshot_from_wire(SNAPSHOT)), rng=random.Random(1), plugins=plugins)
    named = decider.decide(_raw("GET http://reviews:9080/ HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"), plan.Downstream(""))
    assert type(named) is plan.Forward and named.on_response is not None
    assert named.request_headers is not None and (b"x-in-p", b"/") in named.request_headers.set
    other = decider.decide(_raw("GET http://ratings:8080/ HTTP/1.1\r\nHost: ratings:8080\r\n\r\n"), plan.Downstream(""))
    assert type(other) is plan.Forward and other.on_response is None
    assert not any(n.startswith(b"x-in-") for n, _ in (other.request_headers.set if other.request_headers else ()))


# --- the inbound side ----------------------------------------------------------------------------

IP = "127.1.0.9"


def _inbound(plugins: list[Plugin], *ports: int) -> InboundDecider:
    return InboundDecider(IP, tuple(AppPort(p) for p in ports), plugins=plugins)


def _get(path: str = "/x", *headers: str) -> Request:
    return _raw(f"GET {path} HTTP/1.1\r\nHost: web:8080\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n")


def test_without_a_server_plugin_the_inbound_plans_are_the_plain_ones(hooks: str) -> None:
    plain = _inbound([], 8080)
    client_only = _inbound(selected([_spec("c", hooks), _spec("c2", hooks, [{"mode": "CLIENT"}])], {}), 8080)
    assert client_only.plugins is None
    other_port = _inbound(selected([_spec("s", hooks, [{"mode": "SERVER", "ports": [{"number": 9090}]}])], {}),
                          8080, 9090)  # fmt: skip
    assert type(other_port.at_port(8080)) is PortDecider and type(other_port.at_port(9090)) is PluggedPortDecider
    for decider, request in ((plain, _get()), (client_only, _get()),
                             (other_port, _get("/x", "x-meshwork-inbound-port: 8080"))):  # fmt: skip
        chosen = decider.decide(request, plan.Downstream(""))
        # The decider's own precomputed plan, nothing made for this request.
        assert chosen is decider.decide(request, plan.Downstream("")) and type(chosen) is plan.Forward
        assert chosen.on_response is None and chosen.request_headers == plan.HeaderEdits(
            remove=(b"x-meshwork-inbound-port",))
    assert type(client_only.at_port(8080)) is PortDecider


def test_a_server_plugin_adds_headers_for_the_app_tags_the_response_and_keeps_the_port_header_removed(
    hooks: str,
) -> None:
    decider = _inbound(selected([_spec("s", hooks, [{"mode": "SERVER"}])], {}), 8080)
    for chosen in (decider.decide(_get("/x"), plan.Downstream("")),
                   decider.at_port(8080).decide(_get("/x"), plan.Downstream(""))):  # fmt: skip
        assert type(chosen) is plan.Forward and chosen.request_headers is not None
        assert chosen.request_headers.set == ((b"x-in-s", b"/x"),)
        assert chosen.request_headers.remove == (b"x-meshwork-inbound-port",)
        assert chosen.cluster.name == "inbound|8080||" and chosen.on_response is not None
        assert chosen.on_response(201, HEAD) == plan.HeaderEdits(set=((b"x-out-s", b"201"),))


def test_a_server_plugin_answers_a_request_itself(hooks: str) -> None:
    decider = _inbound(selected([_spec("s", hooks, [{"mode": "CLIENT_AND_SERVER"}])], {}), 8080)
    chosen = decider.decide(_get("/x", "x-deny: 1"), plan.Downstream(""))
    assert type(chosen) is plan.DirectResponse
    assert (chosen.status, chosen.body, chosen.headers) == (403, b"no", ((b"x-by", b"s"),))


def test_the_decider_s_own_refusals_reach_no_plugin(hooks: str) -> None:
    decider = _inbound(selected([_spec("s", hooks, [{"mode": "SERVER"}])], {}), 8080, 9090)
    chosen = decider.decide(_get("/x", "x-deny: 1"), plan.Downstream(""))  # two ports, none named: 404
    assert type(chosen) is plan.DirectResponse and chosen.status == 404


def test_a_failing_inbound_hook_lets_the_request_through_without_its_headers_and_is_counted() -> None:
    def half_then_raise(request: PluginRequest) -> None:
        request.headers_to_add["x-half"] = "1"
        raise RuntimeError("bug")

    def bad_header(request: PluginRequest) -> None:
        request.headers_to_add["content-length"] = "0"

    def good(request: PluginRequest) -> None:
        request.headers_to_add["x-good"] = "1"

    def bad_reply(request: PluginRequest) -> Any:
        return "not a tuple"

    def tag(request: PluginRequest, response: PluginResponse) -> None:
        response.headers_to_set["x-tag"] = "1"

    server = (TrafficMatch(False, True),)
    plugins = [Plugin("ns/raise", half_then_raise, {}, match=server), Plugin("ns/bad", bad_header, {}, match=server),
               Plugin("ns/reply", bad_reply, {}, match=server), Plugin("ns/good", good, {}, 0, tag, match=server)]  # fmt: skip
    before = {k: FAILURES[f"ns/{k} on_request"] for k in ("raise", "bad", "reply")}
    chosen = _inbound(plugins, 8080).decide(_get(), plan.Downstream(""))
    assert type(chosen) is plan.Forward and chosen.request_headers is not None
    assert chosen.request_headers.set == ((b"x-good", b"1"),)
    assert {k: FAILURES[f"ns/{k} on_request"] - v for k, v in before.items()} == {"raise": 1, "bad": 1, "reply": 1}
