"""loader: manifest files to validated objects, every error as file:line: field: message."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

import meshwork.model.istio_networking  # registers the networking kinds
import meshwork.model.istio_security  # noqa: F401  (registers the security kinds)
from meshwork.errors import ManifestError
from meshwork.model import loader
from meshwork.model.base import REGISTRY, KindInfo, Model, Registry, Resource, to_wire
from meshwork.model.loader import Manifest, load_manifests, parse_text

# ---------------------------------------------------------------------------
# A test-only workload kind next to the real Istio kinds
# ---------------------------------------------------------------------------


class Port(Model):
    container_port: int


class Container(Model):
    name: str
    ports: list[Port] | None = None


class PodSpec(Model):
    containers: list[Container]


class PodTemplate(Model):
    spec: PodSpec


class AppSpec(Model):
    replicas: int = 1
    template: PodTemplate
    note: str | None = None
    flag: bool | None = None


class App(Resource):
    api_version: str = "example.com/v1"
    kind: str = "App"
    spec: AppSpec


def _registry() -> Registry:
    registry = Registry()
    for info in REGISTRY.known_kinds():
        if info.group.endswith("istio.io"):
            registry.register(info)
    registry.register(
        KindInfo(
            group="example.com",
            versions=("v1",),
            kind="App",
            plural="apps",
            singular="app",
            model=App,
        )
    )
    return registry


REG = _registry()


def parse(text: str, file: str = "app.yaml") -> list[Manifest]:
    return parse_text(textwrap.dedent(text).lstrip("\n"), file, registry=REG)


def errors(text: str, file: str = "app.yaml") -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse(text, file)
    return [c.render() for c in info.value.causes]


def same(actual: list[str], expected: list[str]) -> bool:
    """Equal, except that an expected text ending in ``*`` need only be a prefix
    (YAML parsers word syntax errors differently; the file:line part is exact)."""
    if len(actual) != len(expected):
        return False
    return all(
        a.startswith(e[:-1]) if e.endswith("*") else a == e
        for a, e in zip(actual, expected, strict=True)
    )


APP = """
apiVersion: example.com/v1
kind: App
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: web
        ports:
        - containerPort: 8080
"""

# ---------------------------------------------------------------------------
# Exact error texts
# ---------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        APP.replace("containerPort: 8080", "containerPort: http"),
        [
            'app.yaml:12: spec.template.spec.containers[0].ports[0].containerPort: expected integer, got "http"'
        ],
        id="wrong-type-deep",
    ),
    pytest.param(
        APP.replace("replicas: 2", "replicas: '2'"),
        ['app.yaml:6: spec.replicas: expected integer, got "2"'],
        id="quoted-number",
    ),
    pytest.param(
        APP.replace("  replicas: 2\n", "  replicas: 2\n  replica: 3\n"),
        ['app.yaml:7: spec.replica: unknown field "replica"'],
        id="unknown-field-at-key",
    ),
    pytest.param(
        APP.replace("      - name: web\n", "      - ports: []\n").replace(
            "        ports:\n        - containerPort: 8080\n", ""
        ),
        ["app.yaml:10: spec.template.spec.containers[0].name: required value"],
        id="missing-field-at-parent",
    ),
    pytest.param(
        APP.replace(
            "  template:\n    spec:\n      containers:\n      - name: web\n        ports:\n        - containerPort: 8080\n",
            "",
        ),
        ["app.yaml:6: spec.template: required value"],
        id="missing-top-field",
    ),
    pytest.param(
        APP.replace("  name: web\n", "  name: web\n  name: api\n"),
        ['app.yaml:5: metadata.name: duplicate key "name" (first defined on line 4)'],
        id="duplicate-key",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  replicas: [2"),
        ["app.yaml:7: YAML syntax error: while parsing a flow sequence: *"],
        id="yaml-syntax",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "\treplicas: 2"),
        ["app.yaml:6: YAML syntax error: while scanning for the next token: *"],
        id="tab-indent",
    ),
    pytest.param(
        "- a\n- b\n",
        ["app.yaml:1: a manifest must be a mapping (an object), found a list"],
        id="not-a-mapping",
    ),
    pytest.param(
        "just text\n",
        ["app.yaml:1: a manifest must be a mapping (an object), found a str value"],
        id="scalar-document",
    ),
    pytest.param(
        APP.replace("kind: App", "kind: Ap"),
        ['app.yaml:2: kind: meshwork does not support kind "Ap" in apiVersion "example.com/v1"'],
        id="unknown-kind",
    ),
    pytest.param(
        "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n",
        [
            'app.yaml:1: apiVersion: meshwork does not support kind "Gateway" in apiVersion "networking.istio.io/v2" '
            "(supported apiVersions for this kind: networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)"
        ],
        id="unknown-version",
    ),
    pytest.param(
        APP.replace("apiVersion: example.com/v1\n", ""),
        ["app.yaml:1: apiVersion: required value"],
        id="no-api-version",
    ),
    pytest.param(
        APP.replace("  name: web\n", "  labels: {a: b}\n"),
        ["app.yaml:4: metadata.name: name or generateName is required"],
        id="no-name",
    ),
    pytest.param(
        APP.replace("name: web\nspec", "name: Web_1\nspec"),
        [
            "app.yaml:4: metadata.name: invalid value \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ],
        id="bad-name",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  note: !!python/object:os.system 1"),
        ['app.yaml:6: spec.note: unsupported YAML tag "tag:yaml.org,2002:python/object:os.system"'],
        id="python-tag",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  note: !secret x"),
        ['app.yaml:6: spec.note: unsupported YAML tag "!secret"'],
        id="local-tag",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  note: !!int abc"),
        ['app.yaml:6: spec.note: cannot read "abc" as !!int'],
        id="bad-explicit-int",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  replicas: .nan"),
        ['app.yaml:6: spec.replicas: ".nan" is not a number JSON can hold (no NaN or Infinity)'],
        id="nan",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  replicas: -.inf"),
        ['app.yaml:6: spec.replicas: "-.inf" is not a number JSON can hold (no NaN or Infinity)'],
        id="infinity",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  note: &n [a, *n]"),
        ["app.yaml:6: spec.note[1]: recursive YAML alias"],
        id="recursive-alias",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  ? [a]\n  : 1"),
        ["app.yaml:6: spec: mapping keys must be scalars (strings or numbers)"],
        id="complex-key",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  <<: 5"),
        ["app.yaml:6: spec: a merge key (<<) must refer to a mapping or a list of mappings"],
        id="bad-merge",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  replicas: 1:30"),
        ['app.yaml:6: spec.replicas: expected integer, got "1:30"'],
        id="no-base-60",
    ),
    pytest.param(
        APP.replace("  replicas: 2", "  note: 2024-01-02\n  flag: yes\n  replicas: 0x10"),
        [],
        id="yaml11-scalars",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_error_texts(text: str, expected: list[str]) -> None:
    if not expected:
        (manifest,) = parse(text)
        assert isinstance(manifest.obj, App)
        assert (manifest.obj.spec.note, manifest.obj.spec.flag, manifest.obj.spec.replicas) == (
            "2024-01-02",
            True,
            16,
        )
        return
    assert same(errors(text), expected), errors(text)


def test_causes_are_in_line_order_and_complete() -> None:
    text = (
        APP.replace("replicas: 2", "replicas: x")
        .replace("containerPort: 8080", "containerPort: y")
        .replace("  name: web\nspec", "  name: web\n  colour: red\nspec")
    )
    assert errors(text) == [
        'app.yaml:5: metadata.colour: unknown field "colour"',
        'app.yaml:7: spec.replicas: expected integer, got "x"',
        'app.yaml:13: spec.template.spec.containers[0].ports[0].containerPort: expected integer, got "y"',
    ]


def test_istio_rule_error_points_at_the_field() -> None:
    text = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: r}
        spec:
          host: reviews
          subsets:
          - name: v1
          - name: v1
    """
    assert errors(text) == ["app.yaml:8: spec.subsets[1].name: duplicate subset names: v1"]


# ---------------------------------------------------------------------------
# Documents, lists, lines
# ---------------------------------------------------------------------------


def test_multi_document_with_markers_and_empty_documents() -> None:
    text = (
        "---\n# nothing here\n---\n"
        + APP.lstrip("\n")
        + "...\n---\n\n---\n"
        + APP.lstrip("\n").replace("name: web\nspec", "name: api\nspec")
        + "---\n~\n"
    )
    manifests = parse_text(text, "m.yaml", registry=REG)
    assert [(m.obj.metadata.name, m.file, m.line) for m in manifests] == [
        ("web", "m.yaml", 4),
        ("api", "m.yaml", 20),
    ]


def test_one_bad_document_rejects_the_whole_file() -> None:
    text = APP.lstrip("\n") + "---\n" + APP.lstrip("\n").replace("replicas: 2", "replicas: two")
    with pytest.raises(ManifestError) as info:
        parse_text(text, "m.yaml", registry=REG)
    assert [c.render() for c in info.value.causes] == [
        'm.yaml:19: spec.replicas: expected integer, got "two"'
    ]


def test_list_items_are_applied_one_by_one() -> None:
    text = """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: networking.istio.io/v1alpha3
          kind: Gateway
          metadata: {name: edge}
          spec:
            servers:
            - port: {number: 80, protocol: HTTP, name: http}
              hosts: ["*"]
        - apiVersion: security.istio.io/v1beta1
          kind: PeerAuthentication
          metadata: {name: default, namespace: foo}
          spec: {mtls: {mode: STRICT}}
    """
    manifests = parse(text)
    assert [(m.obj.kind, m.obj.api_version, m.line) for m in manifests] == [
        ("Gateway", "networking.istio.io/v1", 4),
        ("PeerAuthentication", "security.istio.io/v1", 11),
    ]


def test_list_item_errors_name_the_item_line() -> None:
    text = """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: ok}
          spec: {}
        - apiVersion: security.istio.io/v1
          kind: PeerAuthentication
          metadata: {name: bad}
          spec: {mtls: {mode: strict}}
        - 7
    """
    assert errors(text) == [
        'app.yaml:11: spec.mtls.mode: unsupported value "strict": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT"',
        "app.yaml:12: items[2]: a manifest must be a mapping (an object), found a int value",
    ]


def test_list_items_must_be_a_list() -> None:
    assert errors("apiVersion: v1\nkind: List\nitems: {a: 1}\n") == [
        "app.yaml:3: items: expected array of objects"
    ]


def test_empty_list_is_nothing() -> None:
    assert parse("apiVersion: v1\nkind: List\nitems: []\n") == []


def test_integer_keys_become_strings() -> None:
    text = """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: p}
        spec:
          selector: {matchLabels: {app: a}}
          portLevelMtls:
            8080: {mode: STRICT}
    """
    (manifest,) = parse(text)
    assert to_wire(manifest.obj)["spec"]["portLevelMtls"] == {"8080": {"mode": "STRICT"}}


def test_anchors_and_merge_keys() -> None:
    text = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: r}
        spec:
          host: reviews
          trafficPolicy:
            connectionPool: &pool
              tcp: {maxConnections: 10}
          subsets:
          - name: v1
            labels: &labels {version: v1, app: reviews}
            trafficPolicy: {connectionPool: *pool}
          - name: v2
            labels:
              <<: *labels
              version: v2
    """
    (manifest,) = parse(text)
    wire = to_wire(manifest.obj)["spec"]
    assert wire["subsets"][0]["trafficPolicy"] == {
        "connectionPool": {"tcp": {"maxConnections": 10}}
    }
    assert wire["subsets"][1]["labels"] == {"version": "v2", "app": "reviews"}


def test_alias_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    (cause,) = errors("\n".join(lines) + "\n")
    assert (
        f"document too large: more than {loader.MAX_YAML_NODES} values (aliases expanded)" in cause
    )


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * 500 + "]" * 500 + "\n"
    (cause,) = errors(text)
    assert cause.endswith("nested deeper than 100 levels")


def test_binary_and_timestamps_are_kept_as_text() -> None:
    (manifest,) = parse(APP.replace("  replicas: 2", "  note: !!binary |\n    aGVs\n    bG8="))
    assert isinstance(manifest.obj, App)
    assert manifest.obj.spec.note == "aGVsbG8="


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------

JSON_APP = """{
  "apiVersion": "networking.istio.io/v1",
  "kind": "Gateway",
  "metadata": {"name": "g"},
\t"spec": {"servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*"]}]}
}
"""


def test_json_document() -> None:
    (manifest,) = parse_text(JSON_APP, "g.json", registry=REG)
    assert (manifest.obj.kind, manifest.line) == ("Gateway", 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            JSON_APP.replace('"name": "http"', '"name": 80'),
            ["g.json:5: spec.servers[0].port.name: expected string, got 80"],
            id="type",
        ),
        pytest.param(
            JSON_APP.replace('"kind": "Gateway",', '"kind": "Gateway",\n  "kind": "Gateway",'),
            ['g.json:4: kind: duplicate key "kind" (first defined on line 3)'],
            id="duplicate",
        ),
        pytest.param(
            JSON_APP.replace('"hosts": ["*"]', '"hosts": ["*",]'),
            ["g.json:5: invalid JSON at line 5, column 98: Expecting value"],
            id="syntax",
        ),
        pytest.param(
            JSON_APP.replace("80,", "NaN,"),
            ["g.json:1: invalid JSON: NaN is not valid JSON"],
            id="nan",
        ),
    ],
)
def test_json_errors(text: str, expected: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        parse_text(text, "g.json", registry=REG)
    assert [c.render() for c in info.value.causes] == expected


# ---------------------------------------------------------------------------
# Files, directories, stdin
# ---------------------------------------------------------------------------

GATEWAY = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  servers: [{{port: {{number: 80, protocol: HTTP, name: http}}, hosts: ['*']}}]\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_directories_are_walked_recursively_in_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", GATEWAY.format(name="b"))
    write(tmp_path / "a" / "z.yml", GATEWAY.format(name="az"))
    write(tmp_path / "a" / "notes.txt", "not: a manifest")
    write(
        tmp_path / "c.json",
        '{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "c"}, "spec": {"servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*"]}]}}',
    )
    manifests = load_manifests([str(tmp_path)], registry=REG)
    assert [
        (m.obj.metadata.name, Path(m.file).relative_to(tmp_path).as_posix()) for m in manifests
    ] == [
        ("az", "a/z.yml"),
        ("b", "b.yaml"),
        ("c", "c.json"),
    ]


def test_files_keep_the_path_as_given_and_stdin_is_dash(tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", GATEWAY.format(name="g"))
    stdin = io.StringIO(GATEWAY.format(name="from-stdin"))
    manifests = load_manifests([str(path), "-"], stdin=stdin, registry=REG)
    assert [(m.obj.metadata.name, m.file, m.line) for m in manifests] == [
        ("g", str(path), 1),
        ("from-stdin", "-", 1),
    ]


def test_every_cause_from_every_file(tmp_path: Path) -> None:
    good = write(tmp_path / "1-good.yaml", GATEWAY.format(name="good"))
    bad = write(
        tmp_path / "2-bad.yaml", GATEWAY.format(name="bad").replace("number: 80", "number: eighty")
    )
    worse = write(tmp_path / "3-worse.yaml", "a: [\n")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ManifestError) as info:
        load_manifests(
            [str(good), str(tmp_path / "2-bad.yaml"), str(worse), str(missing)], registry=REG
        )
    assert same(
        [c.render() for c in info.value.causes],
        [
            f'{bad}:5: spec.servers[0].port.number: expected integer, got "eighty"',
            f"{worse}:2: YAML syntax error: while parsing a flow node: *",
            f"{missing}: no such file or directory",
        ],
    )


def test_encoding(tmp_path: Path) -> None:
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + GATEWAY.format(name="bom").encode())
    assert [m.obj.metadata.name for m in load_manifests([str(bom)], registry=REG)] == ["bom"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"apiVersion: v1\nkind: Gateway\n# caf\xe9\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([str(latin)], registry=REG)
    assert [c.render() for c in info.value.causes] == [
        f"{latin}:3: file is not valid UTF-8 (byte 34)"
    ]


def test_file_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 16)
    path = write(tmp_path / "big.yaml", GATEWAY.format(name="big"))
    with pytest.raises(ManifestError) as info:
        load_manifests([str(path)], registry=REG)
    assert [c.render() for c in info.value.causes] == [f"{path}: file is larger than 16 bytes"]


def test_default_registry_is_the_global_one() -> None:
    (manifest,) = parse_text(GATEWAY.format(name="g"), "g.yaml")
    assert manifest.obj.kind == "Gateway"


def test_stdin_that_is_not_utf8_is_a_manifest_error() -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"kind: \xff\n"), encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifests(["-"], stdin=stdin, registry=REG)
    assert [c.render() for c in info.value.causes] == ["-: input is not valid UTF-8 (byte 6)"]


def test_stdin_byte_order_mark_is_dropped() -> None:
    stdin = io.StringIO("\ufeff" + GATEWAY.format(name="bom"))
    assert [m.obj.metadata.name for m in load_manifests(["-"], stdin=stdin, registry=REG)] == [
        "bom"
    ]
