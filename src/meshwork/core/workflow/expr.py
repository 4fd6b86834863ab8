"""Argo's small expression languages: ``{{...}}`` substitution, ``when`` conditions
and DAG ``depends`` expressions.

What lives here: a tokenizer and a recursive-descent parser for the subset of
govaluate that Argo's ``when`` fields use (``== != < <= > >= =~ !~ && || !``,
parentheses, quoted strings, numbers, ``true``/``false``), evaluated over a
resolver for bare names, and ``substitute`` for ``{{name}}`` references. No
``eval()``: the parser accepts this grammar only and raises ``ExprError`` on
anything else.

What must not: knowing what a name means (the resolver says), or I/O.

A bare word that the resolver does not know is a string, which is what an
Argo ``when`` such as ``heads == heads`` relies on after substitution.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Value = str | float | bool
Resolver = Callable[[str], Value | None]

_REF = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!()])
    | (?P<word>[^\s()<>=!&|'"]+)
    )""",
    re.VERBOSE,
)
MAX_EXPRESSION = 4096  # a `when` longer than this is a mistake, not a condition


class ExprError(ValueError):
    """An expression that does not parse or compares incomparable values."""


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace each ``{{name}}`` that ``scope`` knows; leave the others as written."""

    def one(m: re.Match[str]) -> str:
        value = scope.get(m.group(1))
        return m.group(0) if value is None else value

    return _REF.sub(one, text)


def references(text: str) -> list[str]:
    """The names ``text`` refers to with ``{{...}}``."""
    return [m.group(1) for m in _REF.finditer(text)]


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "str", "op", "word", "end"
    text: str


def _tokens(text: str) -> list[_Tok]:
    if len(text) > MAX_EXPRESSION:
        raise ExprError(f"expression longer than {MAX_EXPRESSION} characters")
    out: list[_Tok] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"cannot parse {text!r} at {stripped[pos:]!r}")
        kind = m.lastgroup or "word"
        out.append(_Tok(kind, m.group(kind)))
        pos = m.end()
    out.append(_Tok("end", ""))
    return out


def _literal(word: str) -> Value:
    if word == "true":
        return True
    if word == "false":
        return False
    try:
        return float(word)
    except ValueError:
        return word


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    """expr := or; or := and ('||' and)*; and := not ('&&' not)*;
    not := '!' not | cmp; cmp := atom (op atom)?; atom := '(' expr ')' | str | word."""

    def __init__(self, tokens: list[_Tok], resolve: Resolver) -> None:
        self.toks = tokens
        self.i = 0
        self.resolve = resolve

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Value:
        value = self.or_()
        if self.peek().kind != "end":
            raise ExprError(f"unexpected {self.peek().text!r}")
        return value

    def or_(self) -> Value:
        value = self.and_()
        while self.peek().text == "||" and self.peek().kind == "op":
            self.take()
            right = self.and_()
            value = _truth(value) or _truth(right)
        return value

    def and_(self) -> Value:
        value = self.not_()
        while self.peek().text == "&&" and self.peek().kind == "op":
            self.take()
            right = self.not_()
            value = _truth(value) and _truth(right)
        return value

    def not_(self) -> Value:
        if self.peek().kind == "op" and self.peek().text == "!":
            self.take()
            return not _truth(self.not_())
        return self.cmp()

    def cmp(self) -> Value:
        left = self.atom()
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("==", "!=", "<", "<=", ">", ">=", "=~", "!~"):
            self.take()
            return _compare(tok.text, left, self.atom())
        return left

    def atom(self) -> Value:
        tok = self.take()
        if tok.kind == "op" and tok.text == "(":
            value = self.or_()
            if self.take().text != ")":
                raise ExprError("missing ')'")
            return value
        if tok.kind == "str":
            return _unquote(tok.text)
        if tok.kind == "word":
            known = self.resolve(tok.text)
            return _literal(tok.text) if known is None else known
        raise ExprError(f"unexpected {tok.text or 'end of expression'!r}")


def _truth(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    raise ExprError(f"{value!r} is not a boolean")


def _compare(op: str, left: Value, right: Value) -> bool:
    if op in ("=~", "!~"):
        try:
            found = re.search(str(right), str(left)) is not None
        except re.error as exc:
            raise ExprError(f"bad regular expression {right!r}: {exc}") from exc
        return found if op == "=~" else not found
    if op in ("==", "!="):
        same = left == right if type(left) is type(right) else str(_text(left)) == str(_text(right))
        return same if op == "==" else not same
    if isinstance(left, float) and isinstance(right, float):
        a: float | str = left
        b: float | str = right
    elif isinstance(left, str) and isinstance(right, str):
        a, b = left, right
    else:
        raise ExprError(f"cannot order {left!r} and {right!r}")
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluate(text: str, resolve: Resolver | None = None) -> Value:
    """Evaluate ``text``; bare names go through ``resolve`` (unknown ones are strings)."""
    return _Parser(_tokens(text), resolve or (lambda _name: None)).parse()


def evaluate_bool(text: str, resolve: Resolver | None = None) -> bool:
    """Evaluate a condition that must come out true or false."""
    return _truth(evaluate(text, resolve))
