"""Shortcuts in validation must judge exactly as the long way does."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshwork.model  # noqa: F401  (registers the kinds)
from meshwork.model import codec
from meshwork.model.corev1 import parse_quantity

LEAF = st.none() | st.booleans() | st.integers(-3, 70000) | st.sampled_from(["web", "100m", "http", "", "A_b", "x" * 70])
ANY: st.SearchStrategy[Any] = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["name", "a", "app"]), c, max_size=3), max_leaves=12
)
POD = st.fixed_dictionaries(
    {"apiVersion": st.just("v1"), "kind": st.just("Pod"),
     "metadata": st.fixed_dictionaries({"name": st.sampled_from(["web", "Web", None])},
                                       optional={"labels": st.dictionaries(st.sampled_from(["app", "a/b", "-x"]), LEAF, max_size=2)}),
     "spec": st.fixed_dictionaries({"containers": st.lists(st.fixed_dictionaries(
         {"name": st.sampled_from(["app", "App", None])},
         optional={"image": LEAF, "ports": st.lists(st.fixed_dictionaries({"containerPort": LEAF}, optional={"name": LEAF}), max_size=2),
                   "resources": st.fixed_dictionaries({}, optional={"requests": st.dictionaries(st.just("cpu"), LEAF, max_size=1)}),
                   "env": ANY}), max_size=2)})},
    optional={"status": ANY},
)  # fmt: skip


def outcome(raw: dict[str, Any]) -> Any:
    checked = codec.check_object(raw)
    return checked.obj.model_dump(by_alias=True) if checked.obj is not None else [(p.path, p.cause) for p in checked.problems]


@settings(max_examples=400, deadline=None)
@given(POD)
def test_skipping_the_null_walk_changes_nothing(raw: dict[str, Any]) -> None:
    fast = outcome(raw)
    # The long way: always walk (as if the object might hold a null).
    original = codec._may_hold_null
    codec._may_hold_null = lambda value: True  # type: ignore[assignment]
    try:
        slow = outcome(raw)
    finally:
        codec._may_hold_null = original
    assert fast == slow


def test_the_null_check() -> None:
    assert codec._may_hold_null({"a": [1, {"b": None}]})
    assert codec._may_hold_null({"a": [1, {"b": "null"}]})  # a string that reads "null": walked, harmless
    assert not codec._may_hold_null({"a": [1, {"b": 2}], "c": "x"})
    assert codec._may_hold_null({"a": object()})  # not JSON data: walked
    # A YAML timestamp is not a null: no walk, and the strict model still refuses it.
    assert not codec._may_hold_null({"a": datetime.datetime(2026, 1, 1)})


def test_remembered_quantities_keep_their_types_apart() -> None:
    assert parse_quantity(1) == 1 and parse_quantity("1") == 1
    for bad in (True, False):
        try:
            parse_quantity(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken as a quantity")
