"""Core kinds (Namespace, Node, Service, Endpoints, ServiceAccount, ConfigMap, Secret, Event,
PriorityClass): defaulting, validation with exact error paths, registry entries, and the sweep
over every upstream conformance manifest of the kinds this part models."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import meshwork.model.autoscaling
import meshwork.model.rbac
import meshwork.model.workloads  # noqa: F401 - registers the kinds the sweep looks up
from meshwork.model.base import REGISTRY, Resource, to_wire
from meshwork.model.core import (
    CONFIG_MAX_BYTES,
    ConfigMap,
    Endpoints,
    Event,
    Namespace,
    Node,
    PriorityClass,
    Secret,
    Service,
    ServiceAccount,
)
from support.conformance import CONFORMANCE as SHARED_CONFORMANCE

CONFORMANCE = SHARED_CONFORMANCE
OUR_KINDS = {
    "Pod", "Namespace", "Node", "Service", "Endpoints", "ServiceAccount", "ConfigMap", "Secret",
    "Event", "Deployment", "ReplicaSet", "DaemonSet", "ControllerRevision", "Job", "CronJob",
    "PriorityClass", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "HorizontalPodAutoscaler",
}  # fmt: skip


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}}


def secret(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, **fields}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dig(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            data = data[part]
        elif part not in data:
            return None
        else:
            data = data[part]
    return data


NODE = {
    "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
    "spec": {"podCIDR": "127.1.0.0/16", "podCIDRs": ["127.1.0.0/16"], "unschedulable": False,
             "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
    "status": {
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                        "reason": "AgentReady"}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "h"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": "m", "systemUUID": "u", "bootID": "b", "kernelVersion": "6.1",
                     "osImage": "Debian", "containerRuntimeVersion": "meshwork://0.1",
                     "kubeletVersion": "v0.1.0", "operatingSystem": "linux", "architecture": "amd64"},
    },
}  # fmt: skip

# (case id, model, manifest, wire path, expected value; None = absent)
DEFAULTS = [
    ("svc type", Service, service(), ("spec", "type"), "ClusterIP"),
    ("svc affinity", Service, service(), ("spec", "sessionAffinity"), "None"),
    ("svc port protocol", Service, service(), ("spec", "ports", 0, "protocol"), "TCP"),
    ("svc targetPort", Service, service(), ("spec", "ports", 0, "targetPort"), 80),
    ("svc named targetPort kept", Service, service(ports=[{"port": 80, "targetPort": "http"}]),
     ("spec", "ports", 0, "targetPort"), "http"),
    ("svc internal policy", Service, service(), ("spec", "internalTrafficPolicy"), "Cluster"),
    ("svc no external policy for ClusterIP", Service, service(), ("spec", "externalTrafficPolicy"), None),
    ("svc NodePort external policy", Service, service(type="NodePort"), ("spec", "externalTrafficPolicy"), "Cluster"),
    ("svc LB node ports", Service, service(type="LoadBalancer"), ("spec", "allocateLoadBalancerNodePorts"), True),
    ("svc ClientIP timeout", Service, service(sessionAffinity="ClientIP"),
     ("spec", "sessionAffinityConfig"), {"clientIP": {"timeoutSeconds": 10800}}),
    ("svc None drops config", Service,
     service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}}), ("spec", "sessionAffinityConfig"), None),
    ("svc ExternalName no internal policy", Service,
     {**service(), "spec": {"type": "ExternalName", "externalName": "db.example.com"}},
     ("spec", "internalTrafficPolicy"), None),
    ("svc headless without ports", Service, {**service(), "spec": {"clusterIP": "None", "selector": {"a": "b"}}},
     ("spec", "clusterIP"), "None"),
    ("secret type", Secret, secret(), ("type",), "Opaque"),
    ("secret stringData merged", Secret, secret(data={"a": b64("old"), "b": b64("keep")}, stringData={"a": "new"}),
     ("data",), {"a": b64("new"), "b": b64("keep")}),
    ("secret stringData dropped", Secret, secret(stringData={"a": "x"}), ("stringData",), None),
    ("ns label", Namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}},
     ("metadata", "labels"), {"kubernetes.io/metadata.name": "foo"}),
    ("ns phase", Namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}},
     ("status", "phase"), "Active"),
    ("node allocatable", Node, NODE, ("status", "allocatable"), {"cpu": "4", "memory": "8Gi", "pods": "110"}),
    ("node daemon port", Node, NODE, ("status", "daemonEndpoints", "kubeletEndpoint", "Port"), 10250),
    ("node machineID", Node, NODE, ("status", "nodeInfo", "machineID"), "m"),
    ("endpoints protocol", Endpoints,
     {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}, "subsets": [
         {"addresses": [{"ip": "127.1.0.5", "nodeName": "n1",
                         "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
          "notReadyAddresses": [{"ip": "127.1.0.6"}], "ports": [{"name": "http", "port": 8080}]}]},
     ("subsets", 0, "ports", 0, "protocol"), "TCP"),
    ("pc preemption", PriorityClass,
     {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000},
     ("preemptionPolicy",), "PreemptLowerPriority"),
    ("pc system value", PriorityClass,
     {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "system-node-critical"},
      "value": 2000001000}, ("value",), 2000001000),
]


@pytest.mark.parametrize(("model", "manifest", "path", "expected"), [c[1:] for c in DEFAULTS],
                         ids=[c[0] for c in DEFAULTS])
def test_defaults(model: type[Resource], manifest: dict[str, Any], path: tuple[Any, ...], expected: Any) -> None:
    obj = model.model_validate(manifest)
    wire = to_wire(obj)
    assert dig(wire, path) == expected
    assert model.model_validate(wire) == obj


def test_secret_size_counts_decoded_bytes() -> None:
    # 900 KiB of payload is ~1.2 MiB of base64 text, and is still within the 1 MiB cap.
    payload = b64("x" * (900 * 1024))
    assert Secret.model_validate(secret(data={"blob": payload})).data == {"blob": payload}
    with pytest.raises(ValidationError):
        Secret.model_validate(secret(data={"blob": b64("x" * (CONFIG_MAX_BYTES + 1))}))


def test_secret_decoded() -> None:
    s = Secret.model_validate(secret(stringData={"password": "hunter2"}))
    assert s.decoded() == {"password": b"hunter2"}


# (case id, model, manifest, expected loc, message fragment)
INVALID = [
    ("svc unnamed second port", Service, service(ports=[{"port": 80, "name": "http"}, {"port": 81}]),
     ("spec", "ports", 1, "name"), "Required"),
    ("svc duplicate port names", Service,
     service(ports=[{"port": 80, "name": "http"}, {"port": 81, "name": "http"}]), ("spec", "ports", 1, "name"),
     "Duplicate"),
    ("svc duplicate port", Service, service(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]),
     ("spec", "ports", 1), "Duplicate"),
    ("svc no ports", Service, service(ports=[]), ("spec", "ports"), "Required"),
    ("svc port 0", Service, service(ports=[{"port": 0}]), ("spec", "ports", 0, "port"), "between 1 and 65535"),
    ("svc bad targetPort", Service, service(ports=[{"port": 80, "targetPort": 70000}]),
     ("spec", "ports", 0, "targetPort"), "65535"),
    ("svc port name case", Service, service(ports=[{"port": 80, "name": "HTTP"}]), ("spec", "ports", 0, "name"),
     "RFC 1123"),
    ("svc nodePort on ClusterIP", Service, service(ports=[{"port": 80, "nodePort": 30080}]),
     ("spec", "ports", 0, "nodePort"), "ClusterIP"),
    ("svc ExternalName without name", Service, {**service(), "spec": {"type": "ExternalName"}},
     ("spec", "externalName"), "RFC 1123"),
    ("svc external policy on ClusterIP", Service, service(externalTrafficPolicy="Local"),
     ("spec", "externalTrafficPolicy"), "externally-accessible"),
    ("svc affinity timeout", Service,
     service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 90000}}),
     ("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"), "86400"),
    ("svc bad type", Service, service(type="Internal"), ("spec", "type"), "ClusterIP"),
    ("svc strict int", Service, service(ports=[{"port": "80"}]), ("spec", "ports", 0, "port"), "integer"),
    ("secret bad base64", Secret, secret(data={"k": "not base64!"}), ("data", "k"), "base64"),
    ("secret bad key", Secret, secret(data={"a/b": b64("x")}), ("data", "a/b"), "config key"),
    ("secret bad stringData key", Secret, secret(stringData={"a b": "x"}), ("stringData", "a b"), "config key"),
    ("secret tls key", Secret, secret(type="kubernetes.io/tls", data={"tls.crt": b64("c")}), ("data", "tls.key"),
     "Required"),
    ("secret basic auth", Secret, secret(type="kubernetes.io/basic-auth", data={"x": b64("c")}), ("data",),
     "username"),
    ("secret sa token", Secret, secret(type="kubernetes.io/service-account-token"),
     ("metadata", "annotations", "kubernetes.io/service-account.name"), "Required"),
    ("secret too big", Secret, secret(stringData={"big": "x" * CONFIG_MAX_BYTES, "more": "x"}), (), "bytes"),
    ("cm key", ConfigMap, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"..": "x"}},
     ("data", ".."), "must not be"),
    ("cm overlap", ConfigMap, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                               "data": {"k": "x"}, "binaryData": {"k": b64("y")}}, ("binaryData", "k"), "duplicate"),
    ("cm number value", ConfigMap, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                                    "data": {"port": 8080}}, ("data", "port"), "string"),
    ("cm binary", ConfigMap, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                              "binaryData": {"k": "%%%"}}, ("binaryData", "k"), "base64"),
    ("node taint effect", Node, {**NODE, "spec": {"taints": [{"key": "k", "effect": "Never"}]}},
     ("spec", "taints", 0, "effect"), "NoSchedule"),
    ("node bad capacity", Node, {**NODE, "status": {"capacity": {"cpu": "four"}}}, ("status", "capacity"), "quantity"),
    ("ns status phase", Namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
                                    "status": {"phase": "Gone"}}, ("status", "phase"), "Active"),
    ("event needs object", Event, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}},
     ("involvedObject",), "required"),
    ("event type", Event, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
                           "involvedObject": {"kind": "Pod", "name": "p"}, "type": "Error"}, ("type",), "Warning"),
    ("pc too high", PriorityClass, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                    "metadata": {"name": "high"}, "value": 2_000_000_000}, ("value",), "1000000000"),
    ("pc no spec", PriorityClass, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                   "metadata": {"name": "x"}, "value": 1, "spec": {}}, ("spec",), "Extra"),
    ("sa unknown field", ServiceAccount, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"},
                                          "spec": {}}, ("spec",), "Extra"),
]


@pytest.mark.parametrize(("model", "manifest", "loc", "fragment"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid(model: type[Resource], manifest: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(manifest)
    errors = info.value.errors()
    locs = [e["loc"] for e in errors]
    assert loc in locs, errors
    err = errors[locs.index(loc)]
    assert fragment.lower() in (err["msg"] + str(err.get("ctx", ""))).lower(), err


def test_event_round_trips() -> None:
    manifest = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-1.17a", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "default",
                           "uid": "u", "fieldPath": "spec.containers{web}"},
        "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning",
        "source": {"component": "meshwork-agent", "host": "node-1"}, "count": 3,
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
        "reportingComponent": "meshwork-agent", "reportingInstance": "node-1",
    }  # fmt: skip
    assert to_wire(Event.model_validate(manifest)) == manifest


# (kind, group, versions, plural, short names, namespaced, has_status, name_rule)
REGISTRY_TABLE = [
    ("Namespace", "", ("v1",), "namespaces", ("ns",), False, True, "label"),
    ("Node", "", ("v1",), "nodes", ("no",), False, True, "subdomain"),
    ("Service", "", ("v1",), "services", ("svc",), True, True, "label"),
    ("Endpoints", "", ("v1",), "endpoints", ("ep",), True, False, "subdomain"),
    ("ServiceAccount", "", ("v1",), "serviceaccounts", ("sa",), True, False, "subdomain"),
    ("ConfigMap", "", ("v1",), "configmaps", ("cm",), True, False, "subdomain"),
    ("Secret", "", ("v1",), "secrets", (), True, False, "subdomain"),
    ("Event", "", ("v1",), "events", ("ev",), True, False, "subdomain"),
    ("PriorityClass", "scheduling.k8s.io", ("v1",), "priorityclasses", ("pc",), False, False, "subdomain"),
]


@pytest.mark.parametrize("row", REGISTRY_TABLE, ids=[r[0] for r in REGISTRY_TABLE])
def test_registry(row: tuple[Any, ...]) -> None:
    kind, group, versions, plural, short, namespaced, has_status, name_rule = row
    info = REGISTRY.for_group_kind(group, kind)
    assert info is not None
    assert (info.versions, info.plural, info.short_names) == (versions, plural, short)
    assert (info.namespaced, info.has_status, info.name_rule) == (namespaced, has_status, name_rule)
    assert info.model.__doc__ and "\n" not in info.model.__doc__.strip().splitlines()[0]
    for name in (plural, *short):
        assert info in REGISTRY.for_name(name)


# --- every upstream conformance manifest of our kinds validates ------------------------------


def conformance_docs() -> list[Any]:
    if not CONFORMANCE.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CONFORMANCE} is absent"))]
    params = []
    for path in sorted(CONFORMANCE.rglob("*.y*ml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not isinstance(doc, dict):
                continue
            items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            for sub, item in enumerate(items):
                if isinstance(item, dict) and item.get("kind") in OUR_KINDS:
                    rel = path.relative_to(CONFORMANCE)
                    params.append(pytest.param(item, id=f"{rel}#{index}.{sub}:{item['kind']}"))
    return params


@pytest.mark.parametrize("doc", conformance_docs())
def test_conformance_manifest_validates(doc: dict[str, Any]) -> None:
    info = REGISTRY.for_api_version(doc["apiVersion"], doc["kind"])
    assert info is not None, f"{doc['apiVersion']} {doc['kind']} is not registered"
    model = info.model.model_validate(doc)
    again = info.model.model_validate(to_wire(model))
    assert again == model


def test_conformance_sweep_found_the_documented_kinds() -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"{CONFORMANCE} is absent")
    kinds = {p.values[0]["kind"] for p in conformance_docs()}
    # the README's table lists these among the upstream documents
    assert {"Service", "Deployment", "ServiceAccount", "Pod", "ConfigMap", "Job", "CronJob",
            "ClusterRole", "ClusterRoleBinding"} <= kinds  # fmt: skip


def test_kiali_addon_is_fully_understood() -> None:
    path = CONFORMANCE / "istio/addons/kiali.yaml"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    deploy = REGISTRY.for_api_version("apps/v1", "Deployment")
    assert deploy is not None
    model = deploy.model.model_validate(by_kind["Deployment"])
    wire = to_wire(model)
    container = wire["spec"]["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["startupProbe"]["httpGet"]["port"] == "api-port"
    assert container["env"][0]["valueFrom"]["fieldRef"] == {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    assert wire["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 1}
    svc = Service.model_validate(by_kind["Service"])
    assert [p.target_port for p in svc.spec.ports or ()] == [20001, 9090]
    assert svc.metadata.annotations is None
