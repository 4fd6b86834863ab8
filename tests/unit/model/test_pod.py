"""Pod, PodSpec, containers and volumes: upstream defaulting, validation with exact error paths,
quantity parsing, and the round-trip property validate(to_wire(x)) == x."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meshwork.model.base import REGISTRY, to_wire
from meshwork.model.pod import (
    Pod,
    PodSpec,
    default_pull_policy,
    iana_svc_name_error,
    parse_quantity,
)


def pod(spec: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    """A minimal valid Pod manifest; ``container`` fields are merged into its one container."""
    c = {"name": "app", "image": "nginx:1.25", **container}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [c], **(spec or {})},
    }


def dig(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def error_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        Pod.model_validate(manifest)
    return info.value.errors()


C0 = ("spec", "containers", 0)

# (case id, manifest, wire path, expected value)
DEFAULTS = [
    ("restartPolicy", pod(), ("spec", "restartPolicy"), "Always"),
    ("dnsPolicy", pod(), ("spec", "dnsPolicy"), "ClusterFirst"),
    ("schedulerName", pod(), ("spec", "schedulerName"), "default-scheduler"),
    ("grace", pod(), ("spec", "terminationGracePeriodSeconds"), 30),
    ("securityContext", pod(), ("spec", "securityContext"), {}),
    ("enableServiceLinks", pod(), ("spec", "enableServiceLinks"), True),
    ("resources {}", pod(), (*C0, "resources"), {}),
    ("termination path", pod(), (*C0, "terminationMessagePath"), "/dev/termination-log"),
    ("termination policy", pod(), (*C0, "terminationMessagePolicy"), "File"),
    ("pull tag", pod(), (*C0, "imagePullPolicy"), "IfNotPresent"),
    ("pull latest", pod(image="nginx:latest"), (*C0, "imagePullPolicy"), "Always"),
    ("pull untagged", pod(image="nginx"), (*C0, "imagePullPolicy"), "Always"),
    ("pull explicit kept", pod(image="nginx", imagePullPolicy="Never"), (*C0, "imagePullPolicy"), "Never"),
    ("port protocol", pod(ports=[{"containerPort": 80}]), (*C0, "ports", 0, "protocol"), "TCP"),
    (
        "probe timing",
        pod(readinessProbe={"tcpSocket": {"port": 80}}),
        (*C0, "readinessProbe"),
        {"tcpSocket": {"port": 80}, "timeoutSeconds": 1, "periodSeconds": 10,
         "successThreshold": 1, "failureThreshold": 3},
    ),
    (
        "httpGet scheme and path",
        pod(livenessProbe={"httpGet": {"port": "http"}}),
        (*C0, "livenessProbe", "httpGet"),
        {"path": "/", "port": "http", "scheme": "HTTP"},
    ),
    ("grpc service", pod(livenessProbe={"grpc": {"port": 9000}}), (*C0, "livenessProbe", "grpc"),
     {"port": 9000, "service": ""}),
    (
        "requests from limits",
        pod(resources={"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}),
        (*C0, "resources", "requests"),
        {"cpu": "500m", "memory": "1Gi"},
    ),
    (
        "host network ports",
        pod({"hostNetwork": True}, ports=[{"containerPort": 8080}]),
        (*C0, "ports", 0, "hostPort"),
        8080,
    ),
    ("serviceAccount alias", pod({"serviceAccount": "sa"}), ("spec", "serviceAccountName"), "sa"),
    ("serviceAccountName alias", pod({"serviceAccountName": "sa"}), ("spec", "serviceAccount"), "sa"),
    ("volume emptyDir", pod({"volumes": [{"name": "v"}]}), ("spec", "volumes", 0), {"name": "v", "emptyDir": {}}),
    (
        "configMap mode",
        pod({"volumes": [{"name": "v", "configMap": {"name": "cm"}}]}),
        ("spec", "volumes", 0, "configMap"),
        {"name": "cm", "defaultMode": 420},
    ),
    (
        "secret mode",
        pod({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
        ("spec", "volumes", 0, "secret", "defaultMode"),
        420,
    ),
    (
        "hostPath type",
        pod({"volumes": [{"name": "v", "hostPath": {"path": "/tmp"}}]}),
        ("spec", "volumes", 0, "hostPath", "type"),
        "",
    ),
    (
        "projected token",
        pod({"volumes": [{"name": "v", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "istio-ca"}}]}}]}),
        ("spec", "volumes", 0, "projected"),
        {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 3600,
                                              "path": "token"}}], "defaultMode": 420},
    ),
    (
        "fieldRef apiVersion",
        pod(env=[{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]),
        (*C0, "env", 0, "valueFrom", "fieldRef"),
        {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    ),
]


@pytest.mark.parametrize(("manifest", "path", "expected"), [c[1:] for c in DEFAULTS],
                         ids=[c[0] for c in DEFAULTS])
def test_defaults_fill_like_the_api_server(manifest: dict[str, Any], path: tuple[Any, ...], expected: Any) -> None:
    model = Pod.model_validate(manifest)
    wire = to_wire(model)
    assert dig(wire, path) == expected
    assert Pod.model_validate(wire) == model


def test_requests_are_not_copied_for_a_bare_pod_spec() -> None:
    spec = PodSpec.model_validate({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]})
    assert spec.containers[0].resources.requests is None
    assert spec.enable_service_links is None


def test_pod_built_from_a_template_spec_leaves_the_template_alone() -> None:
    spec = PodSpec.model_validate({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]})
    before = spec.model_dump()
    p = Pod(spec=spec)
    assert p.spec.containers[0].resources.requests == {"cpu": "1"}
    assert spec.model_dump() == before


def test_stays_unset_when_upstream_has_no_default() -> None:
    wire = to_wire(Pod.model_validate(pod()))
    for key in ("nodeName", "hostNetwork", "priority", "priorityClassName", "affinity", "status"):
        assert key not in wire["spec"] and key not in wire


# (case id, manifest, expected loc, expected message fragment)
INVALID = [
    ("no containers", {**pod(), "spec": {"containers": []}}, ("spec", "containers"), "Required"),
    ("spec missing", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, ("spec",), "required"),
    ("wrong apiVersion", {**pod(), "apiVersion": "v2"}, ("apiVersion",), "v1"),
    ("wrong kind", {**pod(), "kind": "Pods"}, ("kind",), "Pod"),
    ("unknown field", pod(imagePolicy="x"), (*C0, "imagePolicy"), "Extra inputs"),
    ("string port", pod(ports=[{"containerPort": "80"}]), (*C0, "ports", 0, "containerPort"), "integer"),
    ("port 0", pod(ports=[{"containerPort": 0}]), (*C0, "ports", 0, "containerPort"), "between 1 and 65535"),
    ("port 65536", pod(ports=[{"containerPort": 65536}]), (*C0, "ports", 0, "containerPort"), "65535"),
    ("hostPort", pod(ports=[{"containerPort": 1, "hostPort": 70000}]), (*C0, "ports", 0, "hostPort"), "65535"),
    ("port name", pod(ports=[{"containerPort": 80, "name": "HTTP"}]), (*C0, "ports", 0, "name"), "lowercase"),
    ("dup port name", pod(ports=[{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]),
     (*C0, "ports", 1, "name"), "Duplicate"),
    ("bad protocol", pod(ports=[{"containerPort": 80, "protocol": "tcp"}]), (*C0, "ports", 0, "protocol"), "TCP"),
    ("container name", pod(name="Web_1"), (*C0, "name"), "RFC 1123"),
    (
        "duplicate names",
        {**pod(), "spec": {"containers": [{"name": "a"}, {"name": "a"}]}},
        ("spec", "containers", 1, "name"),
        "Duplicate",
    ),
    (
        "init and app share a name",
        pod({"initContainers": [{"name": "app"}]}),
        ("spec", "containers", 0, "name"),
        "Duplicate",
    ),
    ("two handlers", pod(livenessProbe={"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}),
     (*C0, "livenessProbe"), "more than 1 handler"),
    ("no handler", pod(readinessProbe={"periodSeconds": 5}), (*C0, "readinessProbe"), "must specify a handler"),
    ("liveness success", pod(livenessProbe={"tcpSocket": {"port": 1}, "successThreshold": 2}),
     (*C0, "livenessProbe", "successThreshold"), "must be 1"),
    ("readiness grace", pod(readinessProbe={"tcpSocket": {"port": 1}, "terminationGracePeriodSeconds": 5}),
     (*C0, "readinessProbe", "terminationGracePeriodSeconds"), "readinessProbes"),
    ("period 0", pod(readinessProbe={"tcpSocket": {"port": 1}, "periodSeconds": 0}),
     (*C0, "readinessProbe", "periodSeconds"), "greater than 0"),
    ("probe port name", pod(readinessProbe={"httpGet": {"port": "web_port"}}),
     (*C0, "readinessProbe", "httpGet", "port"), "lowercase"),
    ("bad scheme", pod(readinessProbe={"httpGet": {"port": 80, "scheme": "ftp"}}),
     (*C0, "readinessProbe", "httpGet", "scheme"), "HTTP"),
    ("empty hook", pod(lifecycle={"preStop": {}}), (*C0, "lifecycle", "preStop"), "must specify a handler"),
    ("volume mount not found", pod(volumeMounts=[{"name": "data", "mountPath": "/d"}]),
     (*C0, "volumeMounts", 0, "name"), "Not found"),
    ("dup volume", pod({"volumes": [{"name": "v"}, {"name": "v"}]}), ("spec", "volumes", 1, "name"), "Duplicate"),
    ("two volume sources", pod({"volumes": [{"name": "v", "emptyDir": {}, "secret": {}}]}),
     ("spec", "volumes", 0), "more than 1 volume type"),
    ("legacy volume type", pod({"volumes": [{"name": "v", "gitRepo": {"repository": "x"}}]}),
     ("spec", "volumes", 0, "gitRepo"), "Extra inputs"),
    ("bad quantity", pod(resources={"limits": {"cpu": "1.5.3"}}), (*C0, "resources", "limits"), "quantity"),
    ("negative quantity", pod(resources={"requests": {"cpu": "-1"}}), (*C0, "resources", "requests"), "greater"),
    ("request over limit", pod(resources={"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}),
     (*C0, "resources", "requests", "cpu"), "less than or equal"),
    ("value and valueFrom", pod(env=[{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "a"}}}]),
     (*C0, "env", 0), "valueFrom"),
    ("two env sources", pod(env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "a"},
                                                               "secretKeyRef": {"key": "k"}}}]),
     (*C0, "env", 0, "valueFrom"), "exactly one"),
    ("envFrom empty", pod(envFrom=[{"prefix": "X_"}]), (*C0, "envFrom", 0), "configMapRef"),
    ("sidecar policy on app", pod(restartPolicy="Always"), (*C0, "restartPolicy"), "non-init"),
    ("init probe", pod({"initContainers": [{"name": "i", "readinessProbe": {"tcpSocket": {"port": 1}}}]}),
     ("spec", "initContainers", 0, "readinessProbe"), "restartPolicy=Always"),
    ("toleration", pod({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
     ("spec", "tolerations", 0), "must be empty"),
    ("toleration seconds", pod({"tolerations": [{"key": "k", "tolerationSeconds": 5}]}),
     ("spec", "tolerations", 0), "NoExecute"),
    ("selector In without values", pod({"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone", "labelSelector": {
            "matchExpressions": [{"key": "app", "operator": "In"}]}}]}}}),
     ("spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", 0,
      "labelSelector", "matchExpressions", 0), "values"),
    ("restartPolicy", pod({"restartPolicy": "Sometimes"}), ("spec", "restartPolicy"), "Always"),
    ("hostname", pod({"hostname": "Host_1"}), ("spec", "hostname"), "RFC 1123"),
    ("token expiry", pod({"volumes": [{"name": "v", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t", "expirationSeconds": 60}}]}}]}),
     ("spec", "volumes", 0, "projected", "sources", 0, "serviceAccountToken", "expirationSeconds"), "600"),
    ("bad label", {**pod(), "metadata": {"name": "p", "labels": {"app": "a b"}}}, ("metadata", "labels"), "label"),
]


@pytest.mark.parametrize(("manifest", "loc", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_pods_fail_at_the_field(manifest: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    errors = error_of(manifest)
    locs = [e["loc"] for e in errors]
    assert loc in locs, errors
    err = errors[locs.index(loc)]
    assert fragment.lower() in (err["msg"] + str(err.get("ctx", ""))).lower(), err


def test_repeated_container_port_is_only_a_warning_upstream() -> None:
    manifest = pod(ports=[{"containerPort": 80}, {"containerPort": 80}])
    assert len(to_wire(Pod.model_validate(manifest))["spec"]["containers"][0]["ports"]) == 2


def test_native_sidecar_init_container_may_have_probes() -> None:
    manifest = pod({"initContainers": [{"name": "proxy", "restartPolicy": "Always",
                                        "readinessProbe": {"tcpSocket": {"port": 15021}}}]})
    wire = to_wire(Pod.model_validate(manifest))
    assert wire["spec"]["initContainers"][0]["restartPolicy"] == "Always"


def test_full_field_set_round_trips() -> None:
    manifest = pod(
        {
            "nodeSelector": {"disk": "ssd"},
            "nodeName": "n1",
            "priorityClassName": "high",
            "priority": 1000,
            "automountServiceAccountToken": False,
            "activeDeadlineSeconds": 60,
            "hostname": "h",
            "subdomain": "s",
            "shareProcessNamespace": True,
            "imagePullSecrets": [{"name": "reg"}],
            "overhead": {"cpu": "250m"},
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000, "runAsNonRoot": True,
                                "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]},
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                           "whenUnsatisfiable": "DoNotSchedule",
                                           "labelSelector": {"matchLabels": {"app": "a"}}}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchFields": [
                            {"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}]}}],
                },
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                       "labelSelector": {"matchLabels": {"a": "b"}}}}]},
            },
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "p", "mode": 0o400}]}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                                         "divisor": "1m"}}]}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            ],
        },
        command=["/bin/server"],
        args=["--port", "8080"],
        workingDir="/srv",
        ports=[{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}],
        env=[
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "D", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
        ],
        envFrom=[{"configMapRef": {"name": "c"}}, {"prefix": "S_", "secretRef": {"name": "s"}}],
        resources={"requests": {"cpu": 0.5, "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "128Mi"}},
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True, "subPath": "x"}],
        livenessProbe={"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [
            {"name": "Custom-Header", "value": "Awesome"}]}, "initialDelaySeconds": 3,
            "periodSeconds": 3, "terminationGracePeriodSeconds": 10},
        readinessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}},
        startupProbe={"tcpSocket": {"port": 8080}, "failureThreshold": 30},
        lifecycle={"postStart": {"exec": {"command": ["echo"]}}, "preStop": {"sleep": {"seconds": 5}}},
        securityContext={"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                         "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        stdin=True,
        tty=True,
    )
    model = Pod.model_validate(manifest)
    wire = to_wire(model)
    assert Pod.model_validate(wire) == model
    # every field written is still there, with the same value, after defaulting
    assert_subset(manifest, wire)


def assert_subset(written: Any, wire: Any, path: str = "") -> None:
    if isinstance(written, dict):
        for key, value in written.items():
            assert key in wire, f"{path}.{key} lost"
            assert_subset(value, wire[key], f"{path}.{key}")
    elif isinstance(written, list):
        assert len(written) == len(wire), path
        for i, (a, b) in enumerate(zip(written, wire, strict=True)):
            assert_subset(a, b, f"{path}[{i}]")
    else:
        assert written == wire, path


def test_status_round_trips() -> None:
    status = {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.1.0.5",
        "podIPs": [{"ip": "127.1.0.5"}],
        "startTime": "2024-01-01T00:00:00Z",
        "qosClass": "Burstable",
        "nominatedNodeName": "n1",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:01Z"}],
        "initContainerStatuses": [{"name": "init", "ready": False, "restartCount": 0, "image": "busybox",
                                   "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{
            "name": "app", "ready": True, "started": True, "restartCount": 2, "image": "nginx:1.25",
            "imageID": "sha256:abc", "containerID": "meshwork://1234",
            "state": {"running": {"startedAt": "2024-01-01T00:00:02Z"}},
            "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled",
                                         "finishedAt": "2024-01-01T00:00:01Z", "containerID": "meshwork://1"}},
        }],
    }
    manifest = {**pod(), "status": status}
    model = Pod.model_validate(manifest)
    assert to_wire(model)["status"] == status
    assert model.status is not None and model.status.container_statuses is not None
    assert model.status.container_statuses[0].last_state is not None


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("500m", Decimal("0.5")), ("1", Decimal(1)), (2, Decimal(2)), (0.25, Decimal("0.25")),
     ("1Gi", Decimal(2**30)), ("64Mi", Decimal(64 * 2**20)), ("1k", Decimal(1000)), ("1e3", Decimal(1000)),
     ("1.5", Decimal("1.5")), (".5", Decimal("0.5")), ("100u", Decimal("0.0001")), ("1E", Decimal(10**18))],
)
def test_parse_quantity(quantity: Any, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


@pytest.mark.parametrize("bad", ["", "1.5.3", "1ki", "1 Gi", "m", "1GiB", "0x10", "--1"])
def test_parse_quantity_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(bad)


@pytest.mark.parametrize(
    ("image", "policy"),
    [("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
     ("localhost:5000/app", "Always"), ("localhost:5000/app:v1", "IfNotPresent"),
     ("app@sha256:" + "a" * 64, "IfNotPresent"), (None, "Always")],
)
def test_default_pull_policy(image: str | None, policy: str) -> None:
    assert default_pull_policy(image) == policy


@pytest.mark.parametrize(
    ("name", "ok"),
    [("http", True), ("http-metrics", True), ("h2c", True), ("a" * 15, True), ("a" * 16, False),
     ("8080", False), ("http--x", False), ("-http", False), ("HTTP", False), ("http_1", False)],
)
def test_iana_port_names(name: str, ok: bool) -> None:
    assert (iana_svc_name_error(name) is None) is ok


def test_registered() -> None:
    info = REGISTRY.for_api_version("v1", "Pod")
    assert info is not None and info.model is Pod
    assert info.plural == "pods" and "po" in info.short_names and info.namespaced
    assert info.has_status and info.name_rule == "subdomain"
    assert REGISTRY.for_name("po") == [info]


# --- property: defaulting is idempotent ------------------------------------------------------

labels = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
images = st.sampled_from(["nginx", "nginx:latest", "busybox:1.36", "localhost:5000/a", "a@sha256:" + "0" * 64])
quantities = st.one_of(st.integers(0, 64), st.sampled_from(["100m", "1", "0.5", "64Mi", "1Gi", "2k"]))
probes = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"tcpSocket": st.fixed_dictionaries({"port": st.integers(1, 65535)})},
        optional={"periodSeconds": st.integers(1, 60), "timeoutSeconds": st.integers(1, 10),
                  "initialDelaySeconds": st.integers(0, 30), "failureThreshold": st.integers(1, 5)},
    ),
    st.fixed_dictionaries(
        {"httpGet": st.fixed_dictionaries({"port": st.one_of(st.integers(1, 65535), st.just("http"))},
                                          optional={"path": st.sampled_from(["/", "/healthz"]),
                                                    "scheme": st.sampled_from(["HTTP", "HTTPS"])})},
    ),
)


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": draw(images)}
    ports = draw(st.lists(st.integers(1, 65535), unique=True, max_size=3))
    if ports:
        c["ports"] = [{"containerPort": p, **({"name": "http"} if i == 0 else {})} for i, p in enumerate(ports)]
    probe = draw(probes)
    if probe is not None:
        c["readinessProbe"] = probe
    if draw(st.booleans()):
        c["resources"] = {"limits": draw(st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities))}
    if draw(st.booleans()):
        c["env"] = [{"name": f"V{i}", "value": v} for i, v in enumerate(draw(st.lists(st.text(max_size=5), max_size=3)))]
    if draw(st.booleans()):
        c["imagePullPolicy"] = draw(st.sampled_from(["Always", "IfNotPresent", "Never"]))
    return c


@st.composite
def pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(labels, min_size=1, max_size=3, unique=True))
    spec: dict[str, Any] = {"containers": [draw(containers(n)) for n in names]}
    optional = {
        "restartPolicy": st.sampled_from(["Always", "OnFailure", "Never"]),
        "terminationGracePeriodSeconds": st.integers(0, 120),
        "hostNetwork": st.booleans(),
        "nodeSelector": st.dictionaries(labels, labels, max_size=2),
        "serviceAccountName": labels,
        "priority": st.integers(-10, 10),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    return spec


@settings(max_examples=60, deadline=None)
@given(spec=pod_specs(), name=labels)
def test_pod_defaults_are_idempotent(spec: dict[str, Any], name: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    original = copy.deepcopy(manifest)
    model = Pod.model_validate(manifest)
    assert manifest == original  # validation never mutates the input
    wire = to_wire(model)
    again = Pod.model_validate(wire)
    assert again == model
    assert to_wire(again) == wire
