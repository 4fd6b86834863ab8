"""Every upstream manifest in ../shared/conformance applies through the real API server,
and reading it back returns what was written, with upstream defaults filled in."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshwork.client import Client
from meshwork.errors import AlreadyExists
from meshwork.model.base import to_wire
from meshwork.model.loader import load_manifests
from support.server import ServerProcess, running_server

pytestmark = pytest.mark.integration

SERVER_OWNED_META = {"uid", "resourceVersion", "generation", "creationTimestamp"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("conformance"), "--no-controllers") as srv:
        yield srv


def _subset(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` lacks or differs from something in ``expected``."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            else:
                out.extend(_subset(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        return [m for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for m in _subset(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def test_every_conformance_manifest_applies_and_reads_back(server: ServerProcess, conformance_dir: Path) -> None:
    client = Client(server.url, server.token)
    applied = 0
    problems: list[str] = []
    for path in _files(conformance_dir):
        for manifest in load_manifests([str(path)]):
            info = type(manifest.obj).info
            desired = to_wire(manifest.obj)
            ns = desired["metadata"].get("namespace") or "default" if info.namespaced else None
            name = desired["metadata"].get("name")
            if name is None:  # generateName (Argo Workflows): the server names it
                created = client.create(info, ns, desired)
            else:
                try:
                    created = client.create(info, ns, desired)
                except AlreadyExists:  # the same name in another file: update it, as apply would
                    current = client.get(info, ns, name)
                    body = copy.deepcopy(desired)
                    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    created = client.update(info, ns, body)
            served = client.get(info, ns, created["metadata"]["name"])
            assert SERVER_OWNED_META - {"generation"} <= set(served["metadata"]), served["metadata"]
            expected = copy.deepcopy(desired)
            if name is None:
                expected["metadata"].pop("generateName")
            diff = _subset({k: v for k, v in expected.items() if k != "status"}, served)
            if diff:
                problems.append(f"{path.relative_to(conformance_dir)} {info.kind}/{name}: {diff[:3]}")
            applied += 1
    assert not problems, "\n".join(problems)
    assert applied >= 200, applied


def test_upstream_defaults_are_filled_in(server: ServerProcess, conformance_dir: Path) -> None:
    client = Client(server.url, server.token)
    (manifest,) = load_manifests([str(conformance_dir / "kubernetes-website/examples/controllers/nginx-deployment.yaml")])
    info = type(manifest.obj).info
    try:
        client.create(info, "defaults", to_wire(manifest.obj))
    except AlreadyExists:
        pass
    served = client.get(info, "defaults", "nginx-deployment")
    spec = served["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst"
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["schedulerName"] == "default-scheduler"
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"][0]["protocol"] == "TCP"
    assert container["terminationMessagePath"] == "/dev/termination-log"
