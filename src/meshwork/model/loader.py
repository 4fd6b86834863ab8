"""Manifest files in, validated objects out, with every error pointing at file:line.

What lives here: ``parse_text`` (one file's text: multi-document YAML or a
JSON object, ``kind: List`` flattened item by item as kubectl does) and
``load_manifests`` (files, directories walked recursively for ``.yaml``,
``.yml`` and ``.json`` in sorted order, and ``-`` for stdin). Every object is
validated with ``codec.check_object``; a problem's document path is mapped to
the line of the YAML node it names (a missing field: its parent mapping; an
unknown field: the key). Nothing is returned unless everything is valid:
``ManifestError`` carries every cause across every file, so a caller applies
all of a multi-document file or none of it.

How YAML becomes data: PyYAML *composes* the text into nodes (libyaml when
available, which also caps nesting at 1000 levels), and ``_Builder`` turns the
nodes into JSON-shaped values itself, recording each path's line. That is
where the safety rules live: only the YAML core tags (no Python objects),
duplicate keys refused with both lines, aliases bounded (no "billion laughs"),
no recursive aliases, no NaN/Infinity, scalar keys turned into strings as
``sigs.k8s.io/yaml`` does (``8080:`` becomes ``"8080"``), timestamps kept as
the text written, ``1:30`` kept as a string (kubectl's YAML has no base-60).

What must not: applying anything, talking to the API server, or knowledge of
any particular kind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from meshwork.errors import BadRequest, FieldCause, ManifestError
from meshwork.model.base import REGISTRY, Registry, Resource
from meshwork.model.codec import (
    MAX_NESTING_DEPTH,
    JsonPath,
    check_object,
    loads_strict,
    preview,
    render_path,
)

MAX_FILE_BYTES = (
    32 * 1024 * 1024
)  # far above any real manifest set; bounds a mistaken `-f` of a huge file
MAX_YAML_NODES = 500_000  # values built per document, aliases expanded (go-yaml refuses "excessive aliasing" too)
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")  # what kubectl picks up from a directory
STDIN = "-"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_INFINITIES = (float("inf"), float("-inf"))


@dataclass(frozen=True, slots=True)
class Manifest:
    """One validated object and where it came from."""

    obj: Resource  # validated, defaulted, at its kind's preferred apiVersion
    file: str  # path as given, or "-" for stdin
    line: int  # 1-based line where the object starts


class _Bad(ManifestError):
    """A document or file cannot be read at all; caught and collected within this module."""


@dataclass(slots=True)
class _Lines:
    """Line of each path's value node and, for mapping entries, of its key."""

    values: dict[JsonPath, int] = field(default_factory=dict)
    keys: dict[JsonPath, int] = field(default_factory=dict)

    def value_line(self, path: JsonPath, default: int) -> int:
        """The line of ``path``, or of its nearest ancestor that is in the document."""
        for end in range(len(path), -1, -1):
            line = self.values.get(path[:end])
            if line is not None:
                return line
        return default

    def key_line(self, path: JsonPath, default: int) -> int:
        return self.keys.get(path) or self.value_line(path, default)


class _Builder:
    """Turns composed YAML nodes into JSON-shaped Python values, recording lines."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = _Lines()
        self.nodes = 0
        self._active: set[int] = set()
        self._scalars = SafeConstructor()

    def fail(self, node: Node, path: JsonPath, message: str) -> _Bad:
        where = render_path(path)
        return _Bad(
            [FieldCause(where, message, "FieldValueInvalid", self.file, node.start_mark.line + 1)]
        )

    def build(self, node: Node, path: JsonPath = (), depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise self.fail(
                node,
                path,
                f"document too large: more than {MAX_YAML_NODES} values (aliases expanded)",
            )
        if depth > MAX_NESTING_DEPTH:
            raise self.fail(node, path, f"nested deeper than {MAX_NESTING_DEPTH} levels")
        self.lines.values.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            raise self.fail(node, path, "recursive YAML alias")
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    raise self.fail(node, path, f"unsupported YAML tag {preview(node.tag)}")
                return [
                    self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)
                ]
            if isinstance(node, MappingNode):
                if node.tag != _TAG + "map":
                    raise self.fail(node, path, f"unsupported YAML tag {preview(node.tag)}")
                return self._mapping(node, path, depth)
            raise self.fail(
                node, path, "unsupported YAML node"
            )  # pragma: no cover - composer yields only these
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, path: JsonPath, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: dict[str, int] = {}
        merges = [value for key, value in node.value if key.tag == _TAG + "merge"]
        for merge in merges:  # YAML merge keys: explicit keys win, earlier merges win
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.fail(
                        merge,
                        path,
                        "a merge key (<<) must refer to a mapping or a list of mappings",
                    )
                for key, value in self.build(source, path, depth).items():
                    result.setdefault(key, value)
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            key = self._key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in explicit:
                raise _Bad(
                    [
                        FieldCause(
                            render_path((*path, key)),
                            f'duplicate key "{key}" (first defined on line {explicit[key]})',
                            "FieldValueDuplicate",
                            self.file,
                            line,
                        )
                    ]
                )
            explicit[key] = line
            self.lines.keys[(*path, key)] = line
            self.lines.values[(*path, key)] = value_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result

    def _key(self, node: Node, path: JsonPath) -> str:
        """Scalar keys become strings, as sigs.k8s.io/yaml converts them for JSON."""
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path, "mapping keys must be scalars (strings or numbers)")
        value = self._scalar(node, path)
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        return str(value)

    def _scalar(self, node: ScalarNode, path: JsonPath) -> Any:
        tag = node.tag.removeprefix(_TAG)
        if tag in ("str", "timestamp", "merge") or node.tag == "!":
            return node.value
        if tag == "binary":
            return "".join(node.value.split())  # the base64 text, as go-yaml passes it to JSON
        if tag in ("int", "float") and ":" in node.value:
            return node.value  # YAML 1.1 base-60; kubectl's YAML reads it as a string
        try:
            if tag == "null":
                return None
            if tag == "bool":
                return self._scalars.construct_yaml_bool(node)
            if tag == "int":
                return self._scalars.construct_yaml_int(node)
            if tag == "float":
                value = self._scalars.construct_yaml_float(node)
                if value != value or value in _INFINITIES:
                    raise self.fail(
                        node,
                        path,
                        f"{preview(node.value)} is not a number JSON can hold (no NaN or Infinity)",
                    )
                return value
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            raise self.fail(node, path, f"cannot read {preview(node.value)} as !!{tag}") from exc
        raise self.fail(node, path, f"unsupported YAML tag {preview(node.tag)}")


@dataclass(slots=True)
class _Document:
    value: Any
    lines: _Lines
    line: int


def _yaml_error(exc: yaml.YAMLError, file: str, text: str) -> FieldCause:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context else problem
        return FieldCause(
            "", f"YAML syntax error: {detail}", "FieldValueInvalid", file, mark.line + 1
        )
    position = getattr(exc, "position", None)
    if isinstance(position, int):  # a ReaderError: a character YAML does not allow
        line = text.count("\n", 0, position) + 1
        return FieldCause(
            "", f"YAML syntax error: {getattr(exc, 'reason', exc)}", "FieldValueInvalid", file, line
        )
    return FieldCause("", f"YAML syntax error: {exc}", "FieldValueInvalid", file)


def _compose(text: str, file: str) -> Iterator[_Document]:
    """Each non-empty YAML document of ``text``, built; raises ``_Bad`` on the first bad one."""
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
                continue  # an empty or null document is skipped, as kubectl does
            builder = _Builder(file)
            yield _Document(builder.build(node), builder.lines, node.start_mark.line + 1)
    except yaml.YAMLError as exc:
        raise _Bad([_yaml_error(exc, file, text)]) from exc
    except RecursionError as exc:  # the pure-Python composer on very deep input
        raise _Bad(
            [
                FieldCause(
                    "",
                    f"nested deeper than {MAX_NESTING_DEPTH} levels",
                    "FieldValueInvalid",
                    file,
                    1,
                )
            ]
        ) from exc


def _json_document(text: str, file: str) -> list[_Document]:
    """A JSON file (or stdin starting with ``{``): values from strict JSON, lines from YAML."""
    lines = _Lines()
    start = text.count("\n", 0, len(text) - len(text.lstrip())) + 1
    try:  # JSON is (nearly) YAML: compose a tab-free copy to learn lines and catch duplicates
        documents = list(_compose(text.replace("\t", " "), file))
        if len(documents) == 1:
            lines, start = documents[0].lines, documents[0].line
    except _Bad as exc:
        if any(c.reason == "FieldValueDuplicate" for c in exc.causes):
            raise
    try:
        value = loads_strict(text)
    except BadRequest as exc:
        line = exc.causes[0].line if exc.causes else None
        raise _Bad([FieldCause("", exc.message, "FieldValueInvalid", file, line or start)]) from exc
    return [_Document(value, lines, start)]


def _is_list(value: Any, registry: Registry) -> bool:
    """A ``List`` (or ``DeploymentList`` ...) that kubectl applies item by item."""
    if not isinstance(value, dict) or "items" not in value:
        return False
    kind, api_version = value.get("kind"), value.get("apiVersion")
    if not isinstance(kind, str) or not kind.endswith("List"):
        return False
    return not isinstance(api_version, str) or registry.for_api_version(api_version, kind) is None


def _objects(
    doc: _Document, file: str, registry: Registry, prefix: JsonPath = ()
) -> Iterator[tuple[Any, JsonPath, int]]:
    """The objects of one document: itself, or the items of a ``List`` (recursively)."""
    value = doc.value
    for comp in prefix:
        value = value[comp]
    line = doc.lines.value_line(prefix, doc.line)
    if _is_list(value, registry) and len(prefix) < MAX_NESTING_DEPTH:
        items = value["items"]
        if not isinstance(items, list):
            where = render_path((*prefix, "items"))
            raise _Bad(
                [
                    FieldCause(
                        where,
                        "expected array of objects",
                        "FieldValueInvalid",
                        file,
                        doc.lines.value_line((*prefix, "items"), line),
                    )
                ]
            )
        for i in range(len(items)):
            yield from _objects(doc, file, registry, (*prefix, "items", i))
        return
    yield value, prefix, line


def _check_document(
    doc: _Document, file: str, registry: Registry
) -> tuple[list[Manifest], list[FieldCause]]:
    manifests: list[Manifest] = []
    causes: list[FieldCause] = []
    for value, prefix, line in _objects(doc, file, registry):
        found: list[FieldCause] = []
        if not isinstance(value, dict):
            what = "a list" if isinstance(value, list) else f"a {type(value).__name__} value"
            where = render_path(prefix)
            causes.append(
                FieldCause(
                    where,
                    f"a manifest must be a mapping (an object), found {what}",
                    "FieldValueInvalid",
                    file,
                    line,
                )
            )
            continue
        checked = check_object(value, registry=registry)
        for problem in checked.problems:
            full = (*prefix, *problem.path)
            at = (
                doc.lines.key_line(full, line)
                if problem.at_key
                else doc.lines.value_line(full, line)
            )
            cause = problem.cause
            found.append(FieldCause(cause.field, cause.message, cause.reason, file, at))
        causes += sorted(found, key=lambda c: c.line or 0)  # stable: same line keeps field order
        if checked.obj is not None:
            manifests.append(Manifest(checked.obj, file, line))
    return manifests, causes


def _parse(text: str, file: str, registry: Registry) -> tuple[list[Manifest], list[FieldCause]]:
    try:
        if text.lstrip().startswith("{"):
            documents = _json_document(text, file)
        else:
            documents = list(_compose(text, file))
    except _Bad as exc:
        return [], exc.causes
    manifests: list[Manifest] = []
    causes: list[FieldCause] = []
    for doc in documents:
        try:
            found, problems = _check_document(doc, file, registry)
        except _Bad as exc:
            found, problems = [], exc.causes
        manifests += found
        causes += problems
    return manifests, causes


def parse_text(text: str, file: str, *, registry: Registry = REGISTRY) -> list[Manifest]:
    """Every object in ``text`` (named ``file`` in messages), or ``ManifestError`` with every cause."""
    manifests, causes = _parse(text, file, registry)
    if causes:
        raise ManifestError(causes)
    return manifests


def _file_cause(path: str, message: str, line: int | None = None) -> FieldCause:
    return FieldCause("", message, "FieldValueInvalid", path, line)


def _manifest_files(path: str, causes: list[FieldCause]) -> list[str]:
    """``path`` itself, or the manifest files under the directory ``path``, sorted."""
    if not os.path.isdir(path):
        return [path]

    def unreadable(exc: OSError) -> None:
        causes.append(_file_cause(exc.filename or path, exc.strerror or str(exc)))

    found: list[str] = []
    for root, dirs, files in os.walk(path, onerror=unreadable):
        dirs.sort()
        found += [os.path.join(root, f) for f in files if f.endswith(MANIFEST_SUFFIXES)]
    return sorted(found)


def _read(path: str) -> str:
    """The text of ``path``; raises ``_Bad`` when it cannot be read as UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Bad([_file_cause(path, exc.strerror or str(exc))]) from exc
    if len(data) > MAX_FILE_BYTES:
        raise _Bad([_file_cause(path, f"file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Bad(
            [_file_cause(path, f"file is not valid UTF-8 (byte {exc.start})", line)]
        ) from exc


def _read_stream(stream: TextIO) -> str:
    """All of stdin; raises ``_Bad`` when it cannot be read."""
    try:
        text = stream.read(MAX_FILE_BYTES + 1)
    except UnicodeDecodeError as exc:
        raise _Bad([_file_cause(STDIN, f"input is not valid UTF-8 (byte {exc.start})")]) from exc
    except OSError as exc:
        raise _Bad([_file_cause(STDIN, exc.strerror or str(exc))]) from exc
    if len(text) > MAX_FILE_BYTES:
        raise _Bad([_file_cause(STDIN, f"input is larger than {MAX_FILE_BYTES} characters")])
    return text.removeprefix("\ufeff")


def load_manifests(
    paths: Sequence[str], *, stdin: TextIO | None = None, registry: Registry = REGISTRY
) -> list[Manifest]:
    """Every object in ``paths`` (files, directories, ``-`` for stdin), in order.

    Validates everything first; raises one ``ManifestError`` carrying every
    cause from every file when anything is invalid, so nothing is applied
    from a set of files with an error anywhere in it.
    """
    manifests: list[Manifest] = []
    causes: list[FieldCause] = []
    for given in paths:
        if given == STDIN:
            sources: list[tuple[str, Callable[[], str]]] = [
                (STDIN, partial(_read_stream, stdin or sys.stdin))
            ]
        elif not os.path.exists(given):
            causes.append(_file_cause(given, "no such file or directory"))
            continue
        else:
            sources = [(path, partial(_read, path)) for path in _manifest_files(given, causes)]
        for name, read in sources:
            try:
                text = read()
            except _Bad as exc:
                causes += exc.causes
                continue
            found, problems = _parse(text, name, registry)
            manifests += found
            causes += problems
    if causes:
        raise ManifestError(causes)
    return manifests


__all__ = ["Manifest", "load_manifests", "parse_text"]
