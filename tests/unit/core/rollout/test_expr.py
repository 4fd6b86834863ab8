"""The analysis condition language: expr-lang's spelling, evaluated without eval()."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.rollout.expr import ExprError, evaluate, truth


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        ("result[0] >= 0.95", [0.97], True),
        ("result[0] >= 0.95", [0.9], False),
        ("result >= 0.95 && result < 1", 0.96, True),
        ("result < 0.5 || result > 0.9", 0.7, False),
        ("!(result == 'ok')", "ok", False),
        ('result == "ok"', "ok", True),
        ("len(result) > 0 && result[0] != nil", [1], True),
        ("isNaN(result)", math.nan, True),
        ("result.status == true", {"status": True}, True),
        ("result['a'] + 1 == 3", {"a": 2}, True),
        ("result in ['x', 'y']", "y", True),
        ("not (result > 1) and result >= 0", 1, True),
        ("-result < 0", 2, True),
    ],
)
def test_conditions(text: str, result: object, expected: bool) -> None:
    assert truth(text, {"result": result}) is expected  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "result.__class__",
        "(lambda: 1)()",
        "[x for x in result]",
        "result[0] >=",
        "open('/etc/passwd')",
        "unknown > 1",
        "result > 'a'",
        "result[5] > 0",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ExprError):
        truth(text, {"result": [1.0]})


def test_non_boolean_condition_is_an_error() -> None:
    with pytest.raises(ExprError):
        truth("result[0]", {"result": [1.0]})
    assert evaluate("result[0] * 2", {"result": [1.5]}) == 3.0


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_comparisons_agree_with_python(a: float, b: float) -> None:
    assert truth("result[0] >= result[1]", {"result": [a, b]}) is (a >= b)
    assert truth("result[0] < result[1] || result[0] == result[1]", {"result": [a, b]}) is (a <= b)
