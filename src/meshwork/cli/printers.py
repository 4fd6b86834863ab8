"""kubectl-shaped output, as pure functions from wire dicts to text.

What lives here: ages (``HumanDuration`` as apimachinery writes it), the
column layout of Go's ``text/tabwriter`` with kubectl's settings, tables with
the NAMESPACE / LABELS / ``kind/`` decorations kubectl adds, and the ``-o
yaml|json|name`` renderings. The per-kind columns are in ``columns``.

What must not live here: HTTP, click, the clock (``now`` is a parameter),
or any I/O beyond returning strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from meshwork.cli.columns import KindPrinter, printer_for
from meshwork.cli.humanize import NONE, UNKNOWN, format_labels, human_duration, parse_time, since
from meshwork.cli.wire import Cell

# kubectl's tabwriter for `get`: minwidth 6, padding 3, pad with spaces.
GET_MINWIDTH = 6
GET_PADDING = 3
# kubectl's tabwriter for `describe`: minwidth 0, padding 2.
DESCRIBE_MINWIDTH = 0
DESCRIBE_PADDING = 2

# -- tabwriter ------------------------------------------------------------------


def _cell_width(text: str) -> int:
    return len(text)


def tabwrite(
    lines: Sequence[Sequence[str]],
    *,
    minwidth: int,
    padding: int,
    remembered: list[int] | None = None,
) -> str:
    """Lay out tab-separated cells as Go's ``text/tabwriter`` does (space padding, no flags).

    Each line is a list of cells; every cell but the last of its line is
    tab-terminated and so belongs to a column. A column block is a run of
    consecutive lines that have a cell in that column; its width is the widest
    cell plus ``padding``, and at least ``minwidth``. The last cell of a line is
    never padded. ``remembered`` (kubectl's RememberWidths, used by ``get -w``)
    holds widths that only ever grow, shared across calls.
    """
    out: list[str] = []
    widths: list[int] = []

    def write_lines(start: int, end: int) -> None:
        for line in lines[start:end]:
            parts: list[str] = []
            for j, cell in enumerate(line):
                if j < len(widths) and j < len(line) - 1:
                    parts.append(cell + " " * max(0, widths[j] - _cell_width(cell)))
                else:
                    parts.append(cell)
            out.append("".join(parts))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            line = lines[this]
            if column >= len(line) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1:
                line = lines[this]
                if column >= len(line) - 1:
                    break
                width = max(width, _cell_width(line[column]) + padding)
                this += 1
            if remembered is not None:
                if column < len(remembered):
                    width = max(width, remembered[column])
                    remembered[column] = width
                else:
                    remembered.append(width)
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "".join(line + "\n" for line in out)


# -- tables -----------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    """Headers and rows of cells, ready for ``tabwrite``."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _cell_text(cell: Cell) -> str:
    """kubectl prints a nil cell as nothing and cuts a string at its first newline."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    text = str(cell)
    newline = text.find("\n")
    if newline >= 0:
        text = text[:newline] + "..."
    return text


def build_table(
    objects: Iterable[Mapping[str, Any]],
    *,
    group: str,
    kind: str,
    now: datetime,
    wide: bool = False,
    with_namespace: bool = False,
    show_labels: bool = False,
    kind_prefix: str | None = None,
    printer: KindPrinter | None = None,
) -> Table:
    """The table ``kubectl get`` prints for objects of one kind.

    ``kind_prefix`` (``pod``, ``deployment.apps``) is put before each name, as
    kubectl does when one command prints several kinds.
    """
    printer = printer or printer_for(group, kind, wide=wide)
    keep = [i for i, c in enumerate(printer.columns) if wide or not c.wide]
    headers = [printer.columns[i].name for i in keep]
    if with_namespace:
        headers.insert(0, "NAMESPACE")
    if show_labels:
        headers.append("LABELS")
    table = Table(headers)
    name_index = next((i for i, c in enumerate(printer.columns) if c.is_name), None)
    for obj in objects:
        cells = printer.cells(obj, now)
        if kind_prefix and name_index is not None:
            cells[name_index] = f"{kind_prefix}/{_cell_text(cells[name_index])}"
        row = [_cell_text(cells[i]) for i in keep]
        meta = obj.get("metadata") or {}
        if with_namespace:
            row.insert(0, str(meta.get("namespace") or ""))
        if show_labels:
            row.append(format_labels(meta.get("labels")))
        table.rows.append(row)
    return table


def render_table(table: Table, *, headers: bool = True, remembered: list[int] | None = None) -> str:
    """The table as kubectl lays it out: upper-case headers, columns aligned with spaces."""
    lines: list[list[str]] = [table.headers] if headers else []
    lines += table.rows
    return tabwrite(lines, minwidth=GET_MINWIDTH, padding=GET_PADDING, remembered=remembered)


def no_resources_message(namespace: str | None, *, all_namespaces: bool, namespaced: bool) -> str:
    """What kubectl says on stderr when a list comes back empty."""
    if all_namespaces or not namespaced or not namespace:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


# -- -o yaml | json | name ------------------------------------------------------


def as_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``kind: List`` wrapper kubectl prints around several objects."""
    return {
        "apiVersion": "v1",
        "items": list(items),
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


class _KubectlDumper(yaml.SafeDumper):
    """Block style, and multi-line strings as ``|`` literals, as kubectl writes YAML."""


_STR_TAG = "tag:yaml.org,2002:str"


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Literal blocks for multi-line strings; double quotes where a plain scalar would not do.

    go-yaml (which kubectl uses) quotes ``"8"``, ``"true"`` and timestamps
    with double quotes; PyYAML would pick single quotes.
    """
    if "\n" in value and not value.startswith(" "):
        return dumper.represent_scalar(_STR_TAG, value, style="|")
    analysis = dumper.analyze_scalar(value)
    plain_ok = (
        not analysis.empty
        and analysis.allow_block_plain
        and analysis.allow_flow_plain
        and dumper.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG  # type: ignore[no-untyped-call]
    )
    return dumper.represent_scalar(_STR_TAG, value, style=None if plain_ok else '"')


_KubectlDumper.add_representer(str, _str_representer)

YAML_LINE_WIDTH = 1 << 30  # never fold long strings: the output must round-trip exactly


def to_yaml(obj: Any) -> str:
    """YAML with sorted keys, as kubectl prints ``-o yaml``."""
    return yaml.dump(
        obj,
        Dumper=_KubectlDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=YAML_LINE_WIDTH,
    )


def to_json(obj: Any) -> str:
    """JSON indented by four spaces, as kubectl prints ``-o json``."""
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


def render_objects(items: Sequence[Mapping[str, Any]], output: str, *, single: bool) -> str:
    """``-o yaml`` / ``-o json``: one object alone when ``single``, else a ``List``."""
    doc: Any = items[0] if single and len(items) == 1 else as_list(items)
    if output == "yaml":
        return to_yaml(doc)
    if output == "json":
        return to_json(doc)
    raise ValueError(f"unknown output format {output!r}")


def render_names(items: Iterable[Mapping[str, Any]], label: str) -> str:
    """``-o name``: ``pod/web-1`` per line."""
    return "".join(f"{label}/{(o.get('metadata') or {}).get('name', '')}\n" for o in items)


__all__ = [
    "NONE",
    "UNKNOWN",
    "Table",
    "as_list",
    "build_table",
    "format_labels",
    "human_duration",
    "no_resources_message",
    "parse_time",
    "render_names",
    "render_objects",
    "render_table",
    "since",
    "tabwrite",
    "to_json",
    "to_yaml",
]
