"""The one encoder of stored values, and the uids the API server gives new objects."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.control.api.objects import new_uid
from meshwork.control.store import values
from meshwork.control.store.watch import restamp_value, stamp_value

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@given(JSON)
def test_encoding_decodes_to_what_json_decodes(value: Any) -> None:
    encoded = values.dumps(value)
    assert json.loads(encoded) == value
    assert values.loads(encoded) == value
    assert values.loads(json.dumps(value).encode()) == json.loads(json.dumps(value))


@given(st.dictionaries(st.text(max_size=8), JSON, max_size=5))
def test_encoding_is_compact_and_keeps_key_order(obj: dict[str, Any]) -> None:
    encoded = values.dumps(obj)
    assert list(json.loads(encoded)) == list(obj)
    assert encoded == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() or any(
        isinstance(v, float) for v in _leaves(obj)
    )  # only float exponents may be spelled differently (1e-7 vs 1e-07)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(TypeError):
        values.dumps({"a": object()})


def test_stamping_sets_the_resource_version_and_leaves_the_object_alone() -> None:
    obj = {"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"é": "ü"}}, "data": {"k": "v"}}
    value = stamp_value(obj, 12)
    assert json.loads(value) == {**obj, "metadata": {**obj["metadata"], "resourceVersion": "12"}}
    assert "resourceVersion" not in obj["metadata"]
    assert json.loads(restamp_value(value, 13))["metadata"]["resourceVersion"] == "13"
    assert "é".encode() in value  # UTF-8 as it is, not \\u escapes


def test_uids_are_random_version_4_uuids() -> None:
    seen = {new_uid() for _ in range(3000)}
    assert len(seen) == 3000
    for text in seen:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    # Every hex digit appears in the random positions (no bits stuck).
    assert {c for text in seen for c in text.replace("-", "")} == set("0123456789abcdef")
