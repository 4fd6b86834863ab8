"""Container environment and $(VAR) expansion (meshwork.core.podenv)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.podenv import (
    container_env,
    env_name_error,
    expand,
    expand_command,
    mapping_for,
    service_env,
)
from meshwork.core.restart import ContainerEvent
from meshwork.model.core import ConfigMap, Secret, Service
from meshwork.model.pod import Pod

VARS = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": "",
        "BIG_MONEY": "$$$"}  # fmt: skip

# The cases of upstream's expansion tests (third_party/forked/golang/expansion), by meaning.
EXPANSIONS = [
    ("$(VAR_A)", "A"),
    ("___$(VAR_B)___", "___B___"),
    ("$(VAR_A)-$(VAR_A)", "A-A"),
    ("$(VAR_A)-1", "A-1"),
    ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
    ("$$(VAR_A)", "$(VAR_A)"),
    ("$$$$(VAR_A)", "$$(VAR_A)"),
    ("$$$$$(VAR_A)", "$$A"),
    ("f000-$$VAR_A", "f000-$VAR_A"),
    ("foo\\$(VAR_C)bar", "foo\\Cbar"),
    ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
    ("$(VAR_REF)", "$(VAR_A)"),  # no recursion
    ("$(VAR_EMPTY)", ""),
    ("$(VAR_DNE)", "$(VAR_DNE)"),
    ("$(VAR_A", "$(VAR_A"),  # incomplete
    ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),  # nested: the name is "VAR_A$(VAR_B"
    ("$VAR_A", "$VAR_A"),
    ("$", "$"),
    ("$$", "$"),
    ("$(", "$("),
    ("$()", "$()"),
    ("(", "("),
    ("$(VAR_A)$", "A$"),
    ("($(VAR_A))", "(A)"),
    ("$(BIG_MONEY)", "$$$"),
    ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("$$$$$$$(BIG_MONEY)", "$$$$$$"),
    ("", ""),
    ("no refs here", "no refs here"),
]


@pytest.mark.parametrize(("text", "expected"), EXPANSIONS)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, mapping_for(VARS)) == expected


@given(st.text(alphabet=st.sampled_from("$()AB_x\\"), max_size=30))
def test_expand_without_dollar_is_identity_and_never_raises(text: str) -> None:
    out = expand(text, mapping_for(VARS))
    if "$" not in text:
        assert out == text


@given(st.text(alphabet=st.sampled_from("abc()-_"), max_size=20))
def test_escaped_reference_always_survives_literally(name: str) -> None:
    name = name.replace(")", "")
    assert expand(f"$$({name})", mapping_for({name: "X"})) == f"$({name})"


# ---------------------------------------------------------------------------
# container_env
# ---------------------------------------------------------------------------


def pod(env: list[dict[str, Any]] | None = None, env_from: list[dict[str, Any]] | None = None,
        **container: Any) -> Pod:  # fmt: skip
    c: dict[str, Any] = {"name": "app", "image": "i", "env": env, "envFrom": env_from, **container}
    return Pod.model_validate({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                     "labels": {"app": "web", "tier": "front"}, "annotations": {"team": "a"}},
        "spec": {"containers": [{k: v for k, v in c.items() if v is not None}],
                 "nodeName": "node-1", "serviceAccountName": "web-sa"},
        "status": {"podIP": "127.1.0.7", "podIPs": [{"ip": "127.1.0.7"}], "hostIP": "127.0.0.1"},
    })  # fmt: skip


def build(p: Pod, **kw: Any) -> Any:
    return container_env(p, p.spec.containers[0], **kw)


def test_env_ordering_and_expansion_of_earlier_vars_only() -> None:
    p = pod(env=[
        {"name": "LATER_REF", "value": "x-$(LATE)"},
        {"name": "FIRST", "value": "one"},
        {"name": "SECOND", "value": "$(FIRST)-two"},
        {"name": "LATE", "value": "late"},
        {"name": "SELF", "value": "$(SELF)"},
        {"name": "EMPTY"},
        {"name": "FROM_CM", "value": "$(CM_KEY)"},
    ], env_from=[{"configMapRef": {"name": "cfg"}}])  # fmt: skip
    got = build(p, config_maps={"cfg": {"CM_KEY": "cm", "A_KEY": "a"}})
    assert got.problems == ()
    assert got.env == (("A_KEY", "a"), ("CM_KEY", "cm"), ("LATER_REF", "x-$(LATE)"), ("FIRST", "one"),
                       ("SECOND", "one-two"), ("LATE", "late"), ("SELF", "$(SELF)"), ("EMPTY", ""),
                       ("FROM_CM", "cm"))  # fmt: skip


def test_env_overrides_env_from_in_place() -> None:
    p = pod(env=[{"name": "K", "value": "from-env"}],
            env_from=[{"configMapRef": {"name": "a"}}, {"prefix": "S_", "secretRef": {"name": "s"}},
                      {"configMapRef": {"name": "b"}}])  # fmt: skip
    secret = Secret.model_validate({"metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}})
    got = build(
        p, config_maps={"a": {"K": "a", "X": "ax"}, "b": {"X": "bx"}}, secrets={"s": secret}
    )
    assert got.env == (("K", "from-env"), ("X", "bx"), ("S_pw", "hunter2"))


def test_field_refs() -> None:
    paths = ["metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['tier']",
             "metadata.labels['missing']", "metadata.annotations['team']", "spec.nodeName",
             "spec.serviceAccountName", "status.podIP", "status.podIPs", "status.hostIP",
             "status.hostIPs"]  # fmt: skip
    env = [
        {"name": f"V{i}", "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for i, path in enumerate(paths)
    ]
    got = build(pod(env=env))
    assert [v for _, v in got.env] == ["web-1", "shop", "u-1", "front", "", "a", "node-1", "web-sa",
                                       "127.1.0.7", "127.1.0.7", "127.0.0.1", "127.0.0.1"]  # fmt: skip
    override = build(pod(env=env[8:10]), pod_ips=["127.1.0.9", "fd00::9"])
    assert override.env == (("V8", "127.1.0.9"), ("V9", "127.1.0.9,fd00::9"))


def test_unsupported_field_path_is_a_problem() -> None:
    got = build(pod(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]))
    assert got.problems == ("unsupported fieldPath: spec.hostname",)


@pytest.mark.parametrize(
    ("resource", "divisor", "expected"),
    [("limits.cpu", None, "1"), ("limits.cpu", "1m", "250"), ("requests.cpu", "1m", "100"),
     ("requests.cpu", None, "1"), ("limits.memory", None, str(64 * 2**20)), ("limits.memory", "1Mi", "64"),
     ("requests.memory", "1Mi", "32"), ("limits.memory", "1M", "68")],
)  # fmt: skip
def test_resource_field_refs(resource: str, divisor: str | None, expected: str) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    p = pod(env=[{"name": "R", "valueFrom": {"resourceFieldRef": ref}}],
            resources={"limits": {"cpu": "250m", "memory": "64Mi"},
                       "requests": {"cpu": "100m", "memory": "32Mi"}})  # fmt: skip
    assert build(p).env == (("R", expected),)


def test_unset_limit_defaults_to_node_allocatable() -> None:
    p = pod(env=[{"name": "R", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}])
    assert build(p, node_allocatable={"cpu": "4"}).env == (("R", "4"),)


def test_missing_config_map_key_and_object_problems() -> None:
    env = [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}},
        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}},
        {"name": "D", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}},
        {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}}},
        {"name": "F", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": True}}},
        {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
    ]  # fmt: skip
    cm = ConfigMap.model_validate({"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    got = build(pod(env=env, env_from=[{"configMapRef": {"name": "absent"}},
                                       {"secretRef": {"name": "absent2", "optional": True}}]),
                config_maps={"cfg": cm}, secrets={"s": {"x": b"y"}})  # fmt: skip
    assert got.problems == (
        'configmap "absent" not found',
        "couldn't find key nope in ConfigMap shop/cfg",
        'configmap "gone" not found',
        "couldn't find key nope in Secret shop/s",
        'secret "gone" not found',
    )
    assert got.env == (("G", "v"),)


def test_invalid_env_from_keys_skipped_with_event() -> None:
    p = pod(env_from=[{"configMapRef": {"name": "cfg"}}])
    data = {"1badkey": "x", "2alsobad": "y", "good": "z", "with.dot": "w"}
    strict = build(p, config_maps={"cfg": data}, relaxed_names=False)
    assert strict.env == (("good", "z"), ("with.dot", "w"))
    assert strict.events == (ContainerEvent(
        "Warning", "InvalidEnvironmentVariableNames",
        "Keys [1badkey, 2alsobad] from the EnvFrom configMap shop/cfg were skipped since they are "
        "considered invalid environment variable names."),)  # fmt: skip
    relaxed = build(pod(env_from=[{"prefix": "A=", "configMapRef": {"name": "cfg"}}]),
                    config_maps={"cfg": {"k": "v"}})  # fmt: skip
    assert relaxed.env == () and "A=k" in relaxed.events[0].message


@pytest.mark.parametrize(("name", "strict_bad", "relaxed_bad"),
                         [("GOOD_1", False, False), ("1BAD", True, False), ("a.b-c", False, False),
                          ("..x", True, False), ("a=b", True, True), ("", True, True), ("sp ace", True, False),
                          ("tab\t", True, True)])  # fmt: skip
def test_env_name_rules(name: str, strict_bad: bool, relaxed_bad: bool) -> None:
    assert env_name_error(name, relaxed=False) is strict_bad
    assert env_name_error(name, relaxed=True) is relaxed_bad


def test_command_and_args_expansion() -> None:
    p = pod(env=[{"name": "PORT", "value": "8080"}],
            command=["serve", "--port=$(PORT)", "$$(PORT)"], args=["$(MISSING)", "$(REVIEWS_SERVICE_HOST)"])  # fmt: skip
    svc = service("reviews", "shop", "10.96.0.5", [{"port": 9080}])
    got = build(p, services=[svc])
    assert expand_command(p.spec.containers[0], got.env) == (["serve", "--port=8080", "$(PORT)"],
                                                              ["$(MISSING)", "10.96.0.5"])  # fmt: skip


# ---------------------------------------------------------------------------
# Service variables
# ---------------------------------------------------------------------------


def service(name: str, ns: str, ip: str | None, ports: list[dict[str, Any]]) -> Service:
    spec: dict[str, Any] = {"ports": ports, "selector": {"app": name}}
    if ip is not None:
        spec["clusterIP"] = ip
    return Service.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def test_service_variables_naming() -> None:
    svc = service("my-db", "shop", "10.0.0.11", [{"name": "sql", "port": 5432, "targetPort": 5432},
                                                 {"name": "metrics-udp", "port": 9000, "protocol": "UDP"}])  # fmt: skip
    assert service_env([svc], "shop", True) == [
        ("MY_DB_SERVICE_HOST", "10.0.0.11"),
        ("MY_DB_SERVICE_PORT", "5432"),
        ("MY_DB_SERVICE_PORT_SQL", "5432"),
        ("MY_DB_SERVICE_PORT_METRICS_UDP", "9000"),
        ("MY_DB_PORT", "tcp://10.0.0.11:5432"),
        ("MY_DB_PORT_5432_TCP", "tcp://10.0.0.11:5432"),
        ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
        ("MY_DB_PORT_5432_TCP_PORT", "5432"),
        ("MY_DB_PORT_5432_TCP_ADDR", "10.0.0.11"),
        ("MY_DB_PORT_9000_UDP", "udp://10.0.0.11:9000"),
        ("MY_DB_PORT_9000_UDP_PROTO", "udp"),
        ("MY_DB_PORT_9000_UDP_PORT", "9000"),
        ("MY_DB_PORT_9000_UDP_ADDR", "10.0.0.11"),
    ]


def test_service_links_scope() -> None:
    services = [
        service("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443}]),
        service("web", "shop", "10.0.0.2", [{"port": 80}]),
        service("other", "elsewhere", "10.0.0.3", [{"port": 80}]),
        service("headless", "shop", "None", [{"port": 80}]),
        service("unallocated", "shop", None, [{"port": 80}]),
    ]
    names = {k for k, _ in service_env(services, "shop", True)}
    assert "KUBERNETES_SERVICE_HOST" in names and "WEB_SERVICE_HOST" in names
    assert not any(re.match(r"(OTHER|HEADLESS|UNALLOCATED)_", k) for k in names)
    off = dict(service_env(services, "shop", False))
    assert off["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and off["KUBERNETES_SERVICE_PORT"] == "443"
    assert not any(k.startswith("WEB_") for k in off)


def test_enable_service_links_false_on_pod_and_env_wins() -> None:
    base = pod(
        env=[
            {"name": "WEB_SERVICE_HOST", "value": "mine"},
            {"name": "U", "value": "$(WEB_SERVICE_PORT)"},
        ]
    )
    svc = service("web", "shop", "10.0.0.2", [{"port": 80}])
    got = build(base, services=[svc]).as_dict()
    assert (
        got["WEB_SERVICE_HOST"] == "mine"
        and got["U"] == "80"
        and got["WEB_PORT"] == "tcp://10.0.0.2:80"
    )
    off = base.model_copy(
        update={"spec": base.spec.model_copy(update={"enable_service_links": False})}
    )
    assert "WEB_PORT" not in build(off, services=[svc]).as_dict()


def test_binary_config_map_data_and_secret_bytes() -> None:
    cm = ConfigMap.model_validate({"metadata": {"name": "c"},
                                   "binaryData": {"bin": base64.b64encode(b"raw").decode()}})  # fmt: skip
    got = build(pod(env_from=[{"configMapRef": {"name": "c"}}]), config_maps={"c": cm})
    assert got.env == (("bin", "raw"),)
