"""codec: strict JSON decoding and kind-generic validation, with test-only kinds in a private registry."""

from __future__ import annotations

import json
from typing import Any, Literal, Self

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import model_validator

from meshwork.errors import BadRequest, FieldCause
from meshwork.errors import ValidationError as InvalidObject
from meshwork.model.base import IntOrString, KindInfo, Model, Registry, Resource
from meshwork.model.codec import (
    MAX_NESTING_DEPTH,
    check_object,
    decode_json,
    invalid_message,
    loads_strict,
    validate_object,
)
from meshwork.model.istio import Problems

# ---------------------------------------------------------------------------
# Test-only kinds
# ---------------------------------------------------------------------------


class Port(Model):
    container_port: int
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    target: IntOrString | None = None


class Container(Model):
    name: str
    ports: list[Port] | None = None
    env: dict[str, str] | None = None


class TemplateSpec(Model):
    containers: list[Container]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        problems = Problems("TemplateSpec")
        seen: set[str] = set()
        for i, container in enumerate(self.containers):
            if container.name in seen:
                problems.add(
                    ("containers", i, "name"),
                    f'duplicate name "{container.name}"',
                    container.name,
                    "FieldValueDuplicate",
                )
            seen.add(container.name)
        problems.raise_if_any()
        return self


class Template(Model):
    spec: TemplateSpec


class WidgetSpec(Model):
    replicas: int = 1
    template: Template | None = None

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.replicas < 0:
            raise ValueError("must be greater than or equal to 0")
        return self


class Widget(Resource):
    api_version: str = "example.com/v2"
    kind: str = "Widget"
    spec: WidgetSpec


class Gadget(Resource):
    """Cluster-scoped, core group (apiVersion "v1")."""

    api_version: str = "v1"
    kind: str = "Gadget"


def _registry() -> Registry:
    registry = Registry()
    registry.register(
        KindInfo(
            group="example.com",
            versions=("v2", "v1"),
            kind="Widget",
            plural="widgets",
            singular="widget",
            model=Widget,
            name_rule="label",
        )
    )
    registry.register(
        KindInfo(
            group="",
            versions=("v1",),
            kind="Gadget",
            plural="gadgets",
            singular="gadget",
            model=Gadget,
            namespaced=False,
        )
    )
    return registry


REGISTRY = _registry()


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v2",
        "kind": "Widget",
        "metadata": {"name": "web"},
        "spec": spec,
    }


def pod_template(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": list(containers)}}


def causes_of(raw: dict[str, Any]) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidObject) as info:
        validate_object(raw, registry=REGISTRY)
    return [(c.field, c.message, c.reason) for c in info.value.causes]


# ---------------------------------------------------------------------------
# Field causes: paths, messages, reasons
# ---------------------------------------------------------------------------

CASES = [
    pytest.param(
        widget(replicas="3"),
        ("spec.replicas", 'expected integer, got "3"', "FieldValueInvalid"),
        id="int-from-string",
    ),
    pytest.param(
        widget(template=pod_template({"name": "a", "ports": [{"containerPort": "http"}]})),
        (
            "spec.template.spec.containers[0].ports[0].containerPort",
            'expected integer, got "http"',
            "FieldValueInvalid",
        ),
        id="deep-path",
    ),
    pytest.param(
        widget(template=pod_template({"name": 5})),
        ("spec.template.spec.containers[0].name", "expected string, got 5", "FieldValueInvalid"),
        id="string-from-int",
    ),
    pytest.param(
        widget(template=pod_template({"ports": []})),
        ("spec.template.spec.containers[0].name", "required value", "FieldValueRequired"),
        id="missing",
    ),
    pytest.param(
        widget(foo=1), ("spec.foo", 'unknown field "foo"', "FieldValueUnknown"), id="unknown-field"
    ),
    pytest.param(
        widget(
            template=pod_template(
                {"name": "a", "ports": [{"containerPort": 80, "protocol": "Foo"}]}
            )
        ),
        (
            "spec.template.spec.containers[0].ports[0].protocol",
            'unsupported value "Foo": supported values: "TCP", "UDP", "SCTP"',
            "FieldValueNotSupported",
        ),
        id="enum",
    ),
    pytest.param(
        widget(template=pod_template({"name": "a"}, {"name": "a"})),
        ("spec.template.spec.containers[1].name", 'duplicate name "a"', "FieldValueDuplicate"),
        id="duplicate-from-validator",
    ),
    pytest.param(
        widget(
            template=pod_template({"name": "a", "ports": [{"containerPort": 1, "target": 1.5}]})
        ),
        (
            "spec.template.spec.containers[0].ports[0].target",
            "expected integer or string, got 1.5",
            "FieldValueInvalid",
        ),
        id="int-or-string",
    ),
    pytest.param(
        widget(template=pod_template({"name": "a", "env": {"A.B": 5}})),
        (
            "spec.template.spec.containers[0].env[A.B]",
            "expected string, got 5",
            "FieldValueInvalid",
        ),
        id="map-value",
    ),
    pytest.param(
        widget(replicas=-1),
        ("spec", "must be greater than or equal to 0", "FieldValueInvalid"),
        id="plain-value-error",
    ),
    pytest.param(
        widget(replicas=True),
        ("spec.replicas", "expected integer, got true", "FieldValueInvalid"),
        id="bool-is-not-int",
    ),
    pytest.param(
        widget(template=[1]),
        ("spec.template", "expected object, got array", "FieldValueInvalid"),
        id="object-from-array",
    ),
    pytest.param(
        {**widget(), "spec": {"template": {"spec": {"container_s": []}}}},
        ("spec.template.spec.container_s", 'unknown field "container_s"', "FieldValueUnknown"),
        id="unknown-nested",
    ),
    pytest.param(
        widget(template=pod_template({"name": "a", "ports": [{"container_port": 80}]})),
        (
            "spec.template.spec.containers[0].ports[0].container_port",
            'unknown field "container_port"',
            "FieldValueUnknown",
        ),
        id="python-names-are-not-wire-names",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_field_causes(raw: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert expected in causes_of(raw)


def test_message_is_kubernetes_like() -> None:
    with pytest.raises(InvalidObject) as info:
        validate_object(widget(replicas="3"), registry=REGISTRY)
    assert (
        info.value.message
        == 'Widget.example.com "web" is invalid: spec.replicas: expected integer, got "3"'
    )
    assert (info.value.status, info.value.kind, info.value.name, info.value.group) == (
        422,
        "Widget",
        "web",
        "example.com",
    )


def test_several_causes_are_listed_in_brackets() -> None:
    with pytest.raises(InvalidObject) as info:
        validate_object(widget(replicas="3", foo=1), registry=REGISTRY)
    assert info.value.message == (
        'Widget.example.com "web" is invalid: [spec.replicas: expected integer, got "3", spec.foo: unknown field "foo"]'
    )


def test_core_group_has_no_suffix() -> None:
    assert (
        invalid_message("Pod", "", "p", [FieldCause("spec", "required value")])
        == 'Pod "p" is invalid: spec: required value'
    )


# ---------------------------------------------------------------------------
# apiVersion and kind
# ---------------------------------------------------------------------------


def test_unknown_kind_names_kind() -> None:
    raw = {"apiVersion": "example.com/v2", "kind": "Sprocket", "metadata": {"name": "x"}}
    with pytest.raises(InvalidObject) as info:
        validate_object(raw, registry=REGISTRY)
    assert (
        info.value.message
        == 'meshwork does not support kind "Sprocket" in apiVersion "example.com/v2"'
    )
    assert [(c.field, c.reason) for c in info.value.causes] == [("kind", "FieldValueNotSupported")]


def test_known_kind_in_unknown_version_lists_versions() -> None:
    raw = {"apiVersion": "example.com/v9", "kind": "Widget", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(InvalidObject) as info:
        validate_object(raw, registry=REGISTRY)
    assert info.value.message == (
        'meshwork does not support kind "Widget" in apiVersion "example.com/v9" '
        "(supported apiVersions for this kind: example.com/v2, example.com/v1)"
    )
    assert info.value.causes[0].field == "apiVersion"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"kind": "Widget"}, [("apiVersion", "required value")]),
        ({"apiVersion": "example.com/v2"}, [("kind", "required value")]),
        ({"apiVersion": 2, "kind": "Widget"}, [("apiVersion", "expected string, got 2")]),
        ({}, [("apiVersion", "required value"), ("kind", "required value")]),
    ],
)
def test_missing_api_version_or_kind(raw: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert [(f, m) for f, m, _ in causes_of(raw)] == expected


def test_older_served_version_is_stored_at_preferred() -> None:
    obj = validate_object({**widget(), "apiVersion": "example.com/v1"}, registry=REGISTRY)
    assert obj.api_version == "example.com/v2"
    assert isinstance(obj, Widget)


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, ("metadata.name", "name or generateName is required", "FieldValueRequired")),
        ({"name": ""}, ("metadata.name", "name or generateName is required", "FieldValueRequired")),
        (
            {"name": "a.b"},
            (
                "metadata.name",
                "invalid value \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                "FieldValueInvalid",
            ),
        ),
        (
            {"name": "x" * 64},
            (
                "metadata.name",
                f'invalid value "{"x" * 64}": must be no more than 63 characters',
                "FieldValueInvalid",
            ),
        ),
        (
            {"name": "web", "namespace": "Team_A"},
            (
                "metadata.namespace",
                "invalid value \"Team_A\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                "FieldValueInvalid",
            ),
        ),
        (
            {"generateName": "Web-"},
            (
                "metadata.generateName",
                "invalid value \"Web-\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                "FieldValueInvalid",
            ),
        ),
        ({"name": 7}, ("metadata.name", "expected string, got 7", "FieldValueInvalid")),
    ],
)
def test_metadata_checks(metadata: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert expected in causes_of({**widget(), "metadata": metadata})


def test_generate_name_stands_in_for_name() -> None:
    obj = validate_object({**widget(), "metadata": {"generateName": "web-"}}, registry=REGISTRY)
    assert obj.metadata.generate_name == "web-"


def test_cluster_scoped_kind_drops_namespace() -> None:
    obj = validate_object(
        {"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": "default"}},
        registry=REGISTRY,
    )
    assert obj.metadata.namespace is None


def test_core_group_kind_message() -> None:
    with pytest.raises(InvalidObject) as info:
        validate_object(
            {"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": 1},
            registry=REGISTRY,
        )
    assert info.value.message == 'Gadget "g" is invalid: spec: unknown field "spec"'


def test_nulls_mean_unset() -> None:
    obj = validate_object(widget(replicas=None, template=None), registry=REGISTRY)
    assert isinstance(obj, Widget)
    assert obj.spec.replicas == 1 and obj.spec.template is None


def test_not_a_mapping() -> None:
    checked = check_object([1, 2], registry=REGISTRY)  # type: ignore[arg-type]
    assert checked.obj is None
    assert checked.causes == [FieldCause("", "expected object, got array")]


def test_problems_keep_document_paths() -> None:
    checked = check_object(
        widget(
            template=pod_template(
                {"name": "a", "ports": [{"containerPort": 1, "target": 1.5, "x": 1}]}
            )
        ),
        registry=REGISTRY,
    )
    paths = {(p.path, p.at_key) for p in checked.problems}
    port = ("spec", "template", "spec", "containers", 0, "ports", 0)
    assert paths == {((*port, "target"), False), ((*port, "x"), True)}


# ---------------------------------------------------------------------------
# Strict JSON
# ---------------------------------------------------------------------------

BAD_JSON = [
    pytest.param(b'{"a": 1, "a": 2}', 'invalid JSON: duplicate field "a"', id="duplicate-key"),
    pytest.param(
        b'{"a": {"b": 1, "b": 1}}', 'invalid JSON: duplicate field "b"', id="nested-duplicate"
    ),
    pytest.param(b'{"a": NaN}', "invalid JSON: NaN is not valid JSON", id="nan"),
    pytest.param(b'{"a": -Infinity}', "invalid JSON: -Infinity is not valid JSON", id="infinity"),
    pytest.param(b'{"a": 1e400}', "invalid JSON: number 1e400 is out of range", id="overflow"),
    pytest.param(
        b'{"a":\n  }', "invalid JSON at line 2, column 3: Expecting value", id="syntax-position"
    ),
    pytest.param(
        b'{"a": 1} x', "invalid JSON at line 1, column 10: Extra data", id="trailing-data"
    ),
    pytest.param(
        b'"\\ud800"',
        "invalid JSON: string contains an unpaired UTF-16 surrogate",
        id="lone-surrogate",
    ),
    pytest.param(b"\xff{}", "request body is not valid UTF-8 (byte 0)", id="not-utf8"),
    pytest.param(
        b"[" * 5000 + b"]" * 5000,
        f"invalid JSON: nested deeper than {MAX_NESTING_DEPTH} levels",
        id="deep-recursion",
    ),
    pytest.param(
        b"[" * 150 + b"]" * 150,
        f"invalid JSON: nested deeper than {MAX_NESTING_DEPTH} levels",
        id="deep",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_JSON)
def test_decode_json_refuses(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_json(data)
    assert info.value.message == message
    assert info.value.status == 400


def test_syntax_error_carries_line() -> None:
    with pytest.raises(BadRequest) as info:
        loads_strict('{\n"a": 1,\n}')
    assert info.value.causes[0].line == 3


def test_decode_json_accepts() -> None:
    assert decode_json(b'{"a": [1, 2.5, "x", true, null, {"b": {}}]}') == {
        "a": [1, 2.5, "x", True, None, {"b": {}}]
    }


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(_json_values)
def test_decode_json_round_trips(value: Any) -> None:
    assert decode_json(json.dumps(value).encode()) == value


@given(st.binary(max_size=200))
def test_decode_json_only_raises_bad_request(data: bytes) -> None:
    try:
        decode_json(data)
    except BadRequest:
        pass
