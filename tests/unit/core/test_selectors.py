"""Label and field selectors: table-driven cases plus properties."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.selectors import (
    parse_field_selector,
    parse_label_selector,
    selector_from_spec,
)
from meshwork.errors import BadRequest

LABELS = {"app": "web", "tier": "front", "version": "v1"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=api", True),
        ("missing!=x", True),  # != matches objects without the key
        ("tier in (front,back)", True),
        ("tier in (back)", False),
        ("tier notin (back)", True),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("app=web,version=v1", True),
        ("app=web,version=v2", False),
        ("app = web , tier in ( front , back )", True),
    ],
)
def test_label_selector_matches(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize("bad", ["app in (a", "app=web)", "a b=c", ",", "=x", "app=we b"])
def test_bad_label_selectors_are_refused(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_label_selector(bad)


def test_selector_from_spec_matches_like_its_string_form() -> None:
    spec = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    sel = selector_from_spec(spec)
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "legacy": "1"})
    with pytest.raises(BadRequest):
        selector_from_spec({"matchExpressions": [{"key": "a", "operator": "Near"}]})


_names = st.sampled_from(["a", "b", "c"])
_values = st.sampled_from(["x", "y", "z"])


@given(st.dictionaries(_names, _values), _names, _values)
def test_equality_and_inequality_partition_every_object(labels, key, value) -> None:
    eq = parse_label_selector(f"{key}={value}").matches(labels)
    ne = parse_label_selector(f"{key}!={value}").matches(labels)
    assert eq != ne


@given(st.dictionaries(_names, _values), _names, st.sets(_values, min_size=1))
def test_in_and_notin_partition_every_object(labels, key, values) -> None:
    vals = ",".join(sorted(values))
    assert parse_label_selector(f"{key} in ({vals})").matches(labels) != parse_label_selector(
        f"{key} notin ({vals})"
    ).matches(labels)


POD = {"metadata": {"name": "p1", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=p1", True),
        ("metadata.name==p1", True),
        ("metadata.name!=p1", False),
        ("spec.nodeName=n1,status.phase=Running", True),
        ("spec.nodeName=", False),
        ("status.phase!=Pending", True),
    ],
)
def test_field_selector(selector: str, expected: bool) -> None:
    assert parse_field_selector(selector).matches(POD) is expected


def test_unsupported_field_is_named() -> None:
    with pytest.raises(BadRequest, match=r"spec\.replicas"):
        parse_field_selector("spec.replicas=3")


def test_unset_field_matches_empty_value() -> None:
    assert parse_field_selector("spec.nodeName=").matches({"spec": {}})
