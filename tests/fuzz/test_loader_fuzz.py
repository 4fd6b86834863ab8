"""Fuzz: whatever text ``parse_text`` is given, it returns manifests or raises ManifestError.

Three generators: arbitrary text, byte-level mutations of real manifests
(upstream Istio files when present, built-in seeds otherwise), and
structural mutations that put random JSON values anywhere in a real
manifest, which drives the kinds' own validators with odd values.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshwork.model.istio_networking  # registers the networking kinds
import meshwork.model.istio_security  # noqa: F401  (registers the security kinds)
from meshwork.errors import ManifestError
from meshwork.model.base import Resource
from meshwork.model.loader import parse_text
from support.conformance import CONFORMANCE as SHARED_CONFORMANCE

CONFORMANCE = SHARED_CONFORMANCE
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BUILTIN_SEEDS = [
    """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}}]
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 80
    - destination: {host: reviews, subset: v3}
      weight: 20
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    fault: {delay: {fixedDelay: 7s, percentage: {value: 100.0}}}
    timeout: 0.5s
""",
    """apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: deny-get}
  spec:
    action: DENY
    rules:
    - to: [{operation: {methods: [GET], ports: ["8080"]}}]
      when: [{key: "request.headers[x-token]", notValues: [admin]}]
- apiVersion: security.istio.io/v1beta1
  kind: PeerAuthentication
  metadata: {name: p}
  spec:
    selector: {matchLabels: {app: httpbin}}
    portLevelMtls: {80: {mode: DISABLE}}
---
anchors: &a {x: 1}
merged: {<<: *a, y: 2}
""",
    '{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "r"}, '
    '"spec": {"host": "r", "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": "0s"}}}}}}',
]


def _seed_texts() -> list[str]:
    seeds = list(BUILTIN_SEEDS)
    if CONFORMANCE.is_dir():
        for path in sorted(CONFORMANCE.rglob("*.yaml")):
            text = path.read_text()
            if "istio.io/" in text and len(text) < 20_000:
                seeds.append(text)
    return seeds


SEEDS = _seed_texts()
SEED_DOCS = [d for text in SEEDS for d in yaml.safe_load_all(text) if isinstance(d, dict)]
YAML_BITS = [
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    "\t",
    "&a ",
    "*a",
    "!!int ",
    "!!binary ",
    "!foo ",
    "<<: ",
    "---\n",
    "...\n",
    '"',
    "'",
    "~",
    ".nan",
    "-.inf",
    "0x1F",
    "1:30",
    "? ",
    "|\n",
    ">-\n",
    "%YAML 1.1\n",
    "\n  ",
    "#",
    ",",
    "\\",
    "\x00",
    "\ufeff",
]

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        op = draw(st.sampled_from(["delete", "insert", "bit", "duplicate-line"]))
        if op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(min_value=1, max_value=20)) :]
        elif op == "insert":
            text = text[:pos] + draw(st.text(max_size=5)) + text[pos:]
        elif op == "bit":
            text = text[:pos] + draw(st.sampled_from(YAML_BITS)) + text[pos:]
        else:
            lines = text.splitlines(keepends=True) or [""]
            i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            text = "".join(lines[: i + 1] + lines[i:])
    return text


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


@st.composite
def tweaked_document(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(draw(st.sampled_from(SEED_DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for comp in path[:-1]:
            parent = parent[comp]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_json)
    return json.dumps(doc) if draw(st.booleans()) else yaml.safe_dump(doc)


def _check(text: str) -> None:
    try:
        manifests = parse_text(text, "fuzz.yaml")
    except ManifestError as exc:
        assert exc.causes, "a ManifestError must say why"
        for cause in exc.causes:
            assert cause.file == "fuzz.yaml"
            assert cause.line is None or cause.line >= 1
        return
    for manifest in manifests:
        assert isinstance(manifest.obj, Resource)
        assert manifest.line >= 1


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _check(text)


@FUZZ
@given(mutated_text())
def test_mutated_manifests(text: str) -> None:
    _check(text)


@FUZZ
@given(tweaked_document())
def test_odd_values_in_real_manifests(text: str) -> None:
    _check(text)


def test_seeds_are_valid_where_upstream_is() -> None:
    """The structural fuzzer starts from documents the loader accepts."""
    assert parse_text(BUILTIN_SEEDS[0], "seed.yaml")
    assert parse_text(BUILTIN_SEEDS[2], "seed.json")
