"""Istio's sidecar injection policy and mutation, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.inject import SIDECAR_NAME, STATUS, app_ip, inject, wants_sidecar
from meshwork.model.pod import Pod


def _pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "1"]}], **spec}}  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "ns_labels", "expected"),
    [
        (_pod(), {}, False),
        (_pod(), {"istio-injection": "enabled"}, True),
        (_pod(), {"istio-injection": "disabled"}, False),
        (_pod(), {"istio.io/rev": "default"}, True),
        (_pod(labels={"sidecar.istio.io/inject": "false"}), {"istio-injection": "enabled"}, False),
        (_pod(annotations={"sidecar.istio.io/inject": "false"}), {"istio-injection": "enabled"}, False),
        (_pod(labels={"sidecar.istio.io/inject": "true"}), {}, True),
        (_pod(labels={"sidecar.istio.io/inject": "true"}, annotations={"sidecar.istio.io/inject": "false"}), {}, True),
        (_pod(hostNetwork=True), {"istio-injection": "enabled"}, False),
    ],
)
def test_the_injection_decision_follows_istio(pod: dict[str, Any], ns_labels: dict[str, str], expected: bool) -> None:
    assert wants_sidecar(pod, ns_labels) is expected


def test_the_injected_pod_is_valid_and_runs_the_proxy_first_as_a_native_sidecar() -> None:
    out = inject(_pod(labels={"app": "reviews", "version": "v2"}))
    model = Pod.model_validate({**out, "metadata": {**out["metadata"]}})
    first = (model.spec.init_containers or [])[0]
    assert first.name == SIDECAR_NAME and first.restart_policy == "Always"
    assert {e.name for e in first.env or []} >= {"POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"}
    assert out["metadata"]["labels"]["service.istio.io/canonical-name"] == "reviews"
    assert out["metadata"]["labels"]["service.istio.io/canonical-revision"] == "v2"
    assert json.loads(out["metadata"]["annotations"][STATUS])["initContainers"] == [SIDECAR_NAME]
    # Injected once: the result asks for no second sidecar.
    assert not wants_sidecar(out, {"istio-injection": "enabled"})


@given(st.dictionaries(st.sampled_from(["app", "version", "tier"]), st.text(min_size=1, max_size=5)))
def test_injection_never_changes_the_input_or_the_app_containers(labels: dict[str, str]) -> None:
    pod = _pod(labels=labels)
    snapshot = json.dumps(pod, sort_keys=True)
    out = inject(pod)
    assert json.dumps(pod, sort_keys=True) == snapshot
    assert out["spec"]["containers"] == pod["spec"]["containers"]


def _env(container: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


def test_the_proxy_learns_the_app_ports_as_istio_meta_pod_ports() -> None:
    pod = _pod()
    pod["spec"]["containers"] = [
        {"name": "app", "image": "busybox", "ports": [{"name": "http", "containerPort": 9080},
                                                      {"containerPort": 9443, "protocol": "TCP"}]},
        {"name": "dns", "image": "busybox", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
        {"name": "quiet", "image": "busybox"},
    ]  # fmt: skip
    out = inject(pod)
    sidecar = out["spec"]["initContainers"][0]
    assert json.loads(_env(sidecar, "ISTIO_META_POD_PORTS")) == [
        {"name": "http", "containerPort": 9080, "protocol": "TCP"},
        {"containerPort": 9443, "protocol": "TCP"},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    ]
    Pod.model_validate(out)  # a plain env value the API server accepts


def test_a_pod_without_ports_gets_an_empty_list() -> None:
    sidecar = inject(_pod())["spec"]["initContainers"][0]
    assert json.loads(_env(sidecar, "ISTIO_META_POD_PORTS")) == []


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ('{"accessLogFile": "/dev/stdout"}', "-"),
        ("accessLogFile: /var/log/proxy.json\nholdApplicationUntilProxyStarts: true", "/var/log/proxy.json"),
        ("not: [valid", None),
        ('{"concurrency": 2}', None),
    ],
)
def test_an_access_log_asked_for_in_proxy_config_reaches_the_sidecar(annotation: str, expected: str | None) -> None:
    out = inject(_pod(annotations={"proxy.istio.io/config": annotation}))
    env = {e["name"]: e.get("value") for e in out["spec"]["initContainers"][0]["env"]}
    assert env.get("MESHWORK_ACCESS_LOG") == expected


@pytest.mark.parametrize(("pod_ip", "expected"), [
    ("127.1.0.5", "127.129.0.5"),
    ("127.95.255.254", "127.223.255.254"),
    ("127.127.0.1", "127.255.0.1"),
    ("127.0.0.1", None),  # the host's
    ("127.128.0.1", None),  # already an app's address: pod ranges stay below 127.128
    ("127.200.0.1", None),
    ("10.1.0.5", None),
    ("::1", None),
    ("127.1.0", None),
    ("127.1.0.256", None),
    ("", None),
])  # fmt: skip
def test_a_meshed_apps_address_is_derived_from_its_pod_ip(pod_ip: str, expected: str | None) -> None:
    assert app_ip(pod_ip) == expected


@given(st.integers(1, 127), st.integers(0, 255), st.integers(0, 255))
def test_app_addresses_never_collide_with_pod_ips_or_each_other(a: int, b: int, c: int) -> None:
    pod_ip = f"127.{a}.{b}.{c}"
    got = app_ip(pod_ip)
    assert got is not None and got != pod_ip
    assert app_ip(got) is None  # never itself a pod IP that could be derived from
    assert got.split(".")[2:] == pod_ip.split(".")[2:] and int(got.split(".")[1]) == a + 128  # one to one
