"""The condition language of AnalysisTemplate metrics, evaluated safely.

Argo Rollouts evaluates ``successCondition``/``failureCondition`` with
expr-lang: ``result[0] >= 0.95``, ``result == "ok" && len(result) > 0``,
``!isNaN(result)``, ``result.status == true``. This module accepts that
subset: literals (numbers, strings, ``true``/``false``/``nil``), the name
``result`` (and other names the caller binds), indexing, ``.field`` access,
``+ - * / %``, comparisons, ``&& || !`` (and ``and or not``), ``in``, and
the functions ``len``, ``isNaN``, ``isInf``, ``abs``, ``all``, ``any``
(``all(result, {# > 1})`` is not supported). The text is parsed with the
``ast`` module and walked node by node from a whitelist: nothing is ever
handed to ``eval``.

What must not live here: what a measurement is, or I/O.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Union

Value = Union[None, bool, int, float, str, list["Value"], dict[str, "Value"]]  # noqa: UP007
MAX_EXPR_CHARS = 2048  # a condition is a line of text; more is a mistake, not a condition


class ExprError(ValueError):
    """The condition cannot be parsed or evaluated (Argo reports the metric as Error)."""


_KEYWORDS = {"true": "True", "false": "False", "nil": "None"}
_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|&&|\|\||!=|![^=]|!$|[A-Za-z_][A-Za-z0-9_]*|.)', re.S)


def _translate(text: str) -> str:
    """expr-lang spelling to Python's: ``&&``→``and``, ``||``→``or``, ``!``→``not``, literals."""
    out: list[str] = []
    for tok in _TOKEN.findall(text):
        if tok == "&&":
            out.append(" and ")
        elif tok == "||":
            out.append(" or ")
        elif tok.startswith("!") and tok != "!=":
            out.append(" not " + tok[1:])
        elif tok in _KEYWORDS:
            out.append(_KEYWORDS[tok])
        else:
            out.append(tok)
    return "".join(out)


def _num(v: Value) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ExprError(f"expected a number, got {v!r}")
    return float(v)


def _len(v: Value) -> Value:
    if isinstance(v, str | list | dict):
        return len(v)
    raise ExprError(f"len() of {v!r}")


def _all(v: Value) -> Value:
    if not isinstance(v, list):
        raise ExprError(f"all() of {v!r}")
    return all(bool(x) for x in v)


def _any(v: Value) -> Value:
    if not isinstance(v, list):
        raise ExprError(f"any() of {v!r}")
    return any(bool(x) for x in v)


FUNCTIONS: dict[str, Callable[[Value], Value]] = {
    "len": _len,
    "isNaN": lambda v: isinstance(v, float) and math.isnan(v),
    "isInf": lambda v: isinstance(v, float) and math.isinf(v),
    "abs": lambda v: abs(_num(v)),
    "all": _all,
    "any": _any,
    "float": lambda v: float(v) if isinstance(v, str) else _num(v),
    "int": lambda v: int(float(v)) if isinstance(v, str) else int(_num(v)),
}

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Mod: operator.mod,
}  # fmt: skip
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}  # fmt: skip


def parse(text: str) -> ast.expr:
    """The condition's syntax tree; ExprError when it is not in the accepted subset."""
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"condition longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(_translate(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse {text!r}: {exc.msg}") from exc
    return tree.body


def evaluate(text: str, names: Mapping[str, Value]) -> Value:
    """The value of ``text`` with ``names`` bound (usually just ``result``)."""
    return _eval(parse(text), names)


def truth(text: str, names: Mapping[str, Value]) -> bool:
    """Evaluate a condition that must give a boolean, as Argo requires."""
    value = evaluate(text, names)
    if not isinstance(value, bool):
        raise ExprError(f"condition {text!r} gave {value!r}, not a boolean")
    return value


def _compare(op: ast.cmpop, left: Value, right: Value) -> bool:
    if isinstance(op, ast.In):
        return _contains(right, left)
    if isinstance(op, ast.NotIn):
        return not _contains(right, left)
    fn = _COMPARE.get(type(op))
    if fn is None:
        raise ExprError(f"operator {type(op).__name__} is not supported")
    if not isinstance(op, ast.Eq | ast.NotEq):
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if not numbers and not (isinstance(left, str) and isinstance(right, str)):
            raise ExprError(f"cannot order {left!r} and {right!r}")
    return fn(left, right)


def _contains(container: Value, item: Value) -> bool:
    if isinstance(container, list | dict):
        return item in container
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    raise ExprError(f"'in' needs a list, map or string, got {container!r}")


def _eval(node: ast.expr, names: Mapping[str, Value]) -> Value:
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, bool | int | float | str):
            return node.value
        raise ExprError(f"literal {node.value!r} is not supported")
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        raise ExprError(f"unknown name {node.id!r}")
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        for part in node.values:
            v = _eval(part, names)
            if not isinstance(v, bool):
                raise ExprError(f"{v!r} is not a boolean")
            if v != is_and:
                return v
        return is_and
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, names)
        if isinstance(node.op, ast.Not):
            if not isinstance(v, bool):
                raise ExprError(f"!{v!r}: not a boolean")
            return not v
        if isinstance(node.op, ast.USub):
            return -_num(v)
        if isinstance(node.op, ast.UAdd):
            return _num(v)
        raise ExprError("unsupported unary operator")
    if isinstance(node, ast.BinOp):
        fn = _BINARY.get(type(node.op))
        left, right = _eval(node.left, names), _eval(node.right, names)
        if fn is None:
            raise ExprError(f"operator {type(node.op).__name__} is not supported")
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return left + right
        try:
            return fn(_num(left), _num(right))
        except ZeroDivisionError:
            return math.nan if _num(left) == 0 else math.copysign(math.inf, _num(left))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, names)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        base, index = _eval(node.value, names), _eval(node.slice, names)
        if isinstance(base, list) and isinstance(index, int) and not isinstance(index, bool):
            if -len(base) <= index < len(base):
                return base[index]
            raise ExprError(f"index {index} out of range (len {len(base)})")
        if isinstance(base, dict) and isinstance(index, str):
            return base.get(index)
        raise ExprError(f"cannot index {base!r} with {index!r}")
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, names)
        if isinstance(base, dict):
            return base.get(node.attr)
        raise ExprError(f"{base!r} has no field {node.attr!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExprError("unsupported function call")
        if len(node.args) != 1:
            raise ExprError(f"{node.func.id}() takes one argument")
        return FUNCTIONS[node.func.id](_eval(node.args[0], names))
    if isinstance(node, ast.List):
        return [_eval(e, names) for e in node.elts]
    raise ExprError(f"{type(node).__name__} is not supported in a condition")
