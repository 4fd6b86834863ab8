"""``when`` conditions, ``depends`` expressions and ``{{...}}`` substitution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.workflow.expr import ExprError, evaluate, evaluate_bool, references, substitute


@pytest.mark.parametrize(("text", "want"), [
    ("heads == heads", True),
    ("heads == tails", False),
    ("Failed != Succeeded", True),
    ("'a b' == \"a b\"", True),
    ("5 > 3", True),
    ("10 > 9", True),  # numbers compare as numbers, not as text
    ("10 < 9", False),
    ("2.5 <= 2.5", True),
    ("1 == 1.0", True),
    ("abc < abd", True),
    ("true", True),
    ("!false", True),
    ("true && false", False),
    ("true || false && false", True),  # && binds tighter than ||
    ("(true || false) && false", False),
    ("!(1 == 2) && 3 >= 3", True),
    ("tails =~ '^t'", True),
    ("tails !~ 'h.*'", True),
    ("hello-world == hello-world", True),
])  # fmt: skip
def test_when_conditions(text: str, want: bool) -> None:
    assert evaluate_bool(text) is want


@pytest.mark.parametrize("text", ["", "a ==", "(true", "true)", "1 < abc", "a && b", "x =~ '('", "== 1"])
def test_bad_conditions_are_expr_errors(text: str) -> None:
    with pytest.raises(ExprError):
        evaluate_bool(text)


def test_names_resolve_through_the_resolver() -> None:
    values = {"A": True, "A.Failed": False, "B.Succeeded": True}
    assert evaluate_bool("A && B.Succeeded", values.get) is True
    assert evaluate_bool("A.Failed || !B.Succeeded", values.get) is False


def test_substitute_replaces_known_references_only() -> None:
    scope = {"inputs.parameters.message": "hi", "item": "3"}
    assert substitute("echo {{inputs.parameters.message}}{{ item }}", scope) == "echo hi3"
    assert substitute("{{steps.later.outputs.result}}", scope) == "{{steps.later.outputs.result}}"
    assert references("a {{x.y}} b {{ z }}") == ["x.y", "z"]


@given(st.text(max_size=60))
def test_any_text_either_evaluates_or_is_an_expr_error(text: str) -> None:
    try:
        evaluate(text)
    except ExprError:
        pass


# (text, value) pairs built together: the oracle is the construction itself.
leaves = st.sampled_from([("true", True), ("false", False), ("1 < 2", True), ("b == a", False)])


def _combine(inner: st.SearchStrategy[tuple[str, bool]]) -> st.SearchStrategy[tuple[str, bool]]:
    return st.one_of(
        st.tuples(inner, inner).map(lambda t: (f"({t[0][0]} && {t[1][0]})", t[0][1] and t[1][1])),
        st.tuples(inner, inner).map(lambda t: (f"({t[0][0]} || {t[1][0]})", t[0][1] or t[1][1])),
        inner.map(lambda t: (f"!({t[0]})", not t[1])),
    )


@given(st.recursive(leaves, _combine, max_leaves=12))
def test_boolean_algebra(case: tuple[str, bool]) -> None:
    text, value = case
    assert evaluate_bool(text) is value
