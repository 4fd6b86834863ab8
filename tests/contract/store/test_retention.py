"""The pure helpers the backends share: retention policy, prefix ranges, value stamping.

(Pure code, kept beside the store contract it serves.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.control.store.watch import Retention, prefix_bounds, restamp_value, stamp_value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retention_keeps_at_least_the_newest_revisions() -> None:
    r = Retention(keep_seconds=0, keep_revisions=100)
    assert r.compactable(50) == 0
    assert r.compactable(100) == 0
    assert r.compactable(250) == 150


def test_retention_keeps_the_time_window() -> None:
    clock = Clock()
    r = Retention(keep_seconds=300, keep_revisions=10, clock=clock)
    r.observe(100)  # t=1000
    clock.now += 60
    r.observe(400)  # t=1060
    clock.now += 200
    assert r.compactable(1000) == 0  # nothing is 300 s old yet
    clock.now += 40  # t=1300: revision 100 existed 300 s ago
    assert r.compactable(1000) == 100
    clock.now += 60  # t=1360: so did 400
    assert r.compactable(1000) == 400
    assert r.compactable(1000) == 400  # asking again forgets nothing it still needs
    # Whichever keeps more wins: the count keeps the newest 10.
    assert r.compactable(405) == 395


def test_retention_refuses_negative_windows() -> None:
    with pytest.raises(ValueError):
        Retention(keep_seconds=-1)
    with pytest.raises(ValueError):
        Retention(keep_revisions=-1)


keys = st.text(alphabet=st.sampled_from("ab/-.0zé\ud7ff\ue000\U0010ffff"), max_size=8)


@given(prefix=keys, key=keys)
def test_prefix_bounds_select_exactly_the_prefixed_keys(prefix: str, key: str) -> None:
    low, high = prefix_bounds(prefix)
    inside = low <= key and (high is None or key < high)
    # The same order as SQLite's BINARY collation over UTF-8.
    k, lo = key.encode(), low.encode()
    inside_bytes = lo <= k and (high is None or k < high.encode())
    assert inside == key.startswith(prefix) == inside_bytes


def test_stamp_value_is_compact_and_leaves_the_input_alone() -> None:
    obj: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {"name": "a", "resourceVersion": "3"},
        "spec": {"x": "é"},
    }
    value = stamp_value(obj, 7)
    assert (
        value
        == '{"kind":"Pod","metadata":{"name":"a","resourceVersion":"7"},"spec":{"x":"é"}}'.encode()
    )
    assert obj["metadata"]["resourceVersion"] == "3"
    assert json.loads(restamp_value(value, 9))["metadata"]["resourceVersion"] == "9"
    with pytest.raises(TypeError):
        stamp_value({"metadata": []}, 1)
