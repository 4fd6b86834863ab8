"""setHeaderRoute and setMirrorRoute on the user's VirtualService, pure: Argo's route shapes,
placed first in managedRoutes order, replaced, and removed."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.rollout.canary import managed_routes_at
from meshwork.core.rollout.traffic import set_managed_routes
from meshwork.model.argo_rollouts import CanaryStep, SetHeaderRoute, SetMirrorRoute
from meshwork.model.istio_routing import VirtualService

PRIMARY = {"name": "primary", "route": [{"destination": {"host": "stable"}, "weight": 80},
                                        {"destination": {"host": "canary"}, "weight": 20}]}  # fmt: skip
OTHER = {"name": "other", "route": [{"destination": {"host": "elsewhere"}}]}


def vs(*routes: dict[str, Any]) -> VirtualService:
    return VirtualService.model_validate({"metadata": {"name": "v", "namespace": "default"},
                                          "spec": {"hosts": ["h"], "http": list(routes)}})  # fmt: skip


def http(v: VirtualService | None) -> list[dict[str, Any]]:
    assert v is not None
    return list(v.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]["http"])


def header(name: str, regex: str | None) -> SetHeaderRoute:
    match = [{"headerName": "agent", "headerValue": {"regex": regex}}] if regex else None
    return SetHeaderRoute.model_validate({"name": name, "match": match})


MIRROR = SetMirrorRoute.model_validate({"name": "m", "percentage": 50, "match": [
    {"method": {"exact": "POST"}, "path": {"prefix": "/color"}, "headers": {"x": {"exact": "1"}}}]})  # fmt: skip


def test_a_header_route_goes_first_and_sends_its_matches_to_the_canary() -> None:
    out = http(set_managed_routes(vs(PRIMARY), ["primary"], ["h1"], {"h1": header("h1", "firefox(.*)")},
                                  canary_service="canary"))  # fmt: skip
    assert out == [{"name": "h1", "match": [{"headers": {"agent": {"regex": "firefox(.*)"}}}],
                    "route": [{"destination": {"host": "canary"}, "weight": 100}]}, PRIMARY]  # fmt: skip


def test_a_mirror_route_copies_the_weighted_destinations_and_mirrors_to_the_canary() -> None:
    [mirror, primary] = http(set_managed_routes(vs(PRIMARY), ["primary"], ["m"], {"m": MIRROR},
                                                canary_service="canary"))  # fmt: skip
    assert primary == PRIMARY
    assert mirror == {"name": "m",
                      "match": [{"method": {"exact": "POST"}, "uri": {"prefix": "/color"},
                                 "headers": {"x": {"exact": "1"}}}],
                      "route": PRIMARY["route"], "mirror": {"host": "canary"},
                      "mirrorPercentage": {"value": 50.0}}  # fmt: skip


def test_subsets_name_the_canary_destination() -> None:
    routes = {"name": "primary", "route": [{"destination": {"host": "svc", "subset": "stable"}, "weight": 90},
                                           {"destination": {"host": "svc", "subset": "canary"}, "weight": 10}]}  # fmt: skip
    [h1, _] = http(set_managed_routes(vs(routes), None, ["h1"], {"h1": header("h1", "x")}, canary_service=None,
                                      canary_subset="canary"))  # fmt: skip
    assert h1["route"] == [{"destination": {"host": "svc", "subset": "canary"}, "weight": 100}]


@pytest.mark.parametrize("wanted", [["h2", "m", "h1"], ["m", "h1"], ["h1"], []])
def test_managed_routes_follow_the_managed_order_and_the_others_keep_theirs(wanted: list[str]) -> None:
    order = ["h1", "m", "h2"]
    steps: dict[str, SetHeaderRoute | SetMirrorRoute] = {
        n: (MIRROR.model_copy(update={"name": "m"}) if n == "m" else header(n, "r")) for n in wanted}
    once = set_managed_routes(vs(PRIMARY, OTHER), ["primary"], order, steps, canary_service="canary")
    first = http(once) if once is not None else http(vs(PRIMARY, OTHER))
    assert [r["name"] for r in first] == [n for n in order if n in wanted] + ["primary", "other"]
    # Applying the same again changes nothing; an empty wish removes every managed route.
    again = VirtualService.model_validate({"metadata": {"name": "v", "namespace": "default"},
                                           "spec": {"hosts": ["h"], "http": first}})  # fmt: skip
    assert set_managed_routes(again, ["primary"], order, steps, canary_service="canary") is None
    cleared = set_managed_routes(again, ["primary"], order, {}, canary_service="canary")
    assert [r["name"] for r in (http(cleared) if cleared is not None else first)] == ["primary", "other"]


def test_the_routes_in_force_at_each_step() -> None:
    steps = [CanaryStep.model_validate(s) for s in [
        {"setWeight": 20},
        {"setHeaderRoute": {"name": "h", "match": [{"headerName": "agent", "headerValue": {"regex": "firefox"}}]}},
        {"pause": {}},
        {"setHeaderRoute": {"name": "h", "match": [{"headerName": "agent", "headerValue": {"regex": "chrome"}}]}},
        {"setMirrorRoute": {"name": "m", "percentage": 10}},
        {"setHeaderRoute": {"name": "h"}},
        {"setMirrorRoute": {"name": "m"}},
    ]]  # fmt: skip

    def regex(i: int) -> str | None:
        route = managed_routes_at(steps, i).get("h")
        assert route is None or isinstance(route, SetHeaderRoute)
        return route.match[0].header_value.regex if route is not None and route.match else None

    assert [regex(i) for i in range(7)] == [None, "firefox", "firefox", "chrome", "chrome", None, None]
    # A step naming a route with no match removes it, for mirror routes as for header routes.
    assert "m" not in managed_routes_at(steps, 4) and "m" not in managed_routes_at(steps, 6)
