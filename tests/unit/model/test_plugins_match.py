"""ProxyPlugin ``spec.match`` (Istio WasmPlugin's TrafficSelector): defaults and validation errors."""

from __future__ import annotations

from typing import Any

import pytest

import meshwork.model.plugins  # noqa: F401  (registers the kind)
from meshwork.model.base import to_wire
from meshwork.model.codec import check_object


def _check(spec: dict[str, Any]) -> Any:
    raw = {"apiVersion": "meshwork.io/v1alpha1", "kind": "ProxyPlugin", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"module": "m", **spec}}  # fmt: skip
    return check_object(raw)


def test_no_match_stays_absent_and_a_selector_without_mode_is_client_and_server() -> None:
    plain = _check({})
    assert plain.obj is not None and "match" not in to_wire(plain.obj)["spec"]
    checked = _check({"match": [{"ports": [{"number": 8080}]}, {"mode": "SERVER"}, {"mode": "UNDEFINED"}]})
    assert checked.obj is not None, checked.problems
    assert to_wire(checked.obj)["spec"]["match"] == [
        {"mode": "CLIENT_AND_SERVER", "ports": [{"number": 8080}]}, {"mode": "SERVER"}, {"mode": "UNDEFINED"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("match", "field", "says"),
    [
        ([{"mode": "INBOUND"}], "spec.match[0].mode", '"CLIENT_AND_SERVER"'),
        ([{"mode": "UNDEFINED_MODE"}], "spec.match[0].mode", "unsupported"),
        ([{"mode": "SERVER"}, {"ports": [{"number": 0}]}], "spec.match[1].ports[0].number", "1..65535"),
        ([{"ports": [{"number": 65536}]}], "spec.match[0].ports[0].number", "1..65535"),
        ([{"ports": [{"number": 80}, {"number": 80}]}], "spec.match[0].ports[1].number", "twice"),
        ([{"ports": [{}]}], "spec.match[0].ports[0].number", "required"),
        ([{"ports": [{"number": "80"}]}], "spec.match[0].ports[0].number", ""),
        ([{"mode": "SERVER", "port": 80}], "spec.match[0].port", ""),
        ({"mode": "SERVER"}, "spec.match", ""),
    ],
)  # fmt: skip
def test_a_bad_selector_is_refused_naming_the_field(match: Any, field: str, says: str) -> None:
    checked = _check({"match": match})
    assert checked.obj is None
    assert [p.cause.field for p in checked.problems] == [field]
    assert says in checked.problems[0].cause.message
