"""``describe`` output: kubectl's key/value layout, per-kind sections, and events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshwork.cli.describe import LAST_APPLIED, describe, events_about, smart_label

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-1",
        "namespace": "default",
        "uid": "u-1",
        "labels": {"app": "web", "pod-template-hash": "abc"},
        "annotations": {LAST_APPLIED: "{}", "note": "x" * 200},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-abc",
                "uid": "r",
                "controller": True,
            }
        ],
        "creationTimestamp": ago(600),
    },
    "spec": {
        "nodeName": "node-1",
        "containers": [
            {
                "name": "web",
                "image": "nginx",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "fast"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            }
        ],
    },
    "status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": "127.1.0.5",
        "podIPs": [{"ip": "127.1.0.5"}],
        "startTime": "2024-05-01T11:50:00Z",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "web",
                "ready": True,
                "restartCount": 1,
                "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
                "lastState": {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "OOMKilled",
                        "startedAt": ago(400),
                        "finishedAt": ago(300),
                    }
                },
            }
        ],
    },
}


def event(
    reason: str,
    message: str,
    *,
    count: int = 1,
    first: float = 60,
    last: float = 60,
    kind: str = "Pod",
    name: str = "web-1",
    etype: str = "Normal",
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}.{reason}", "namespace": "default"},
        "involvedObject": {"kind": kind, "name": name, "namespace": "default", "uid": "u-1"},
        "type": etype,
        "reason": reason,
        "message": message,
        "source": {"component": "meshwork-agent"},
        "count": count,
        "firstTimestamp": ago(first),
        "lastTimestamp": ago(last),
    }


def test_pod_describe_reads_like_kubectl() -> None:
    events = [
        event("Started", "Started container web", first=590, last=590),
        event("BackOff", "Back-off restarting", count=3, first=500, last=30, etype="Warning"),
    ]
    text = describe(POD, group="", kind="Pod", events=events, now=NOW)
    lines = text.splitlines()
    assert lines[:9] == [
        "Name:             web-1",
        "Namespace:        default",
        "Service Account:  default",
        "Node:             node-1/127.0.0.1",
        "Start Time:       Wed, 01 May 2024 11:50:00 +0000",
        "Labels:           app=web",
        "                  pod-template-hash=abc",
        "Annotations:      note: " + "x" * 137 + "...",
        "Status:           Running",
    ]
    assert "IP:               127.1.0.5" in lines
    # "IPs:" has no value, so it ends the aligned block (Go's tabwriter; kubectl looks the same).
    assert lines[lines.index("IPs:") + 1 :][:2] == [
        "  IP:           127.1.0.5",
        "Controlled By:  ReplicaSet/web-abc",
    ]
    assert LAST_APPLIED not in text
    container = lines[lines.index("Containers:") :]
    assert container[1] == "  web:"
    assert "    Image:          nginx" in container
    assert "    Port:           8080/TCP" in container
    assert "    State:          Running" in container
    assert "    Last State:     Terminated" in container
    assert "      Reason:       OOMKilled" in container
    assert "    Restart Count:  1" in container
    assert any(
        line.startswith("    Readiness:") and "http-get http://:8080/healthz" in line
        for line in container
    )
    assert "      MODE:  fast" in container
    events_block = lines[lines.index("Events:") :]
    assert events_block == [
        "Events:",
        "  Type     Reason   Age                  From            Message",
        "  ----     ------   ----                 ----            -------",
        "  Normal   Started  9m50s                meshwork-agent  Started container web",
        "  Warning  BackOff  30s (x3 over 8m20s)  meshwork-agent  Back-off restarting",
    ]


def test_no_events_and_no_events_section() -> None:
    cm = {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}}
    with_events = describe(cm, group="", kind="ConfigMap", events=[], now=NOW)
    assert with_events.splitlines()[-1] == "Events:  <none>"
    without = describe(cm, group="", kind="ConfigMap", events=None, now=NOW)
    assert "Events" not in without


def test_configmap_and_secret_sections() -> None:
    cm = {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"b": "two", "a": "one"}}
    lines = describe(cm, group="", kind="ConfigMap", events=None, now=NOW).splitlines()
    assert lines[4:12] == ["", "Data", "====", "a:", "----", "one", "", "b:"]
    secret = {
        "metadata": {"name": "s", "namespace": "default"},
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
    }
    text = describe(secret, group="", kind="Secret", events=None, now=NOW)
    assert "password:  6 bytes" in text.splitlines()
    assert "c2VjcmV0" not in text and "secret" not in text.replace("Secret", "")


def test_deployment_shows_replicas_strategy_and_template() -> None:
    dep = {
        "metadata": {
            "name": "web",
            "namespace": "default",
            "creationTimestamp": "2024-05-01T10:00:00Z",
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
        "status": {
            "replicas": 3,
            "updatedReplicas": 3,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}
            ],
        },
    }
    lines = describe(dep, group="apps", kind="Deployment", events=[], now=NOW).splitlines()
    assert (
        "Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable"
        in lines
    )
    assert "RollingUpdateStrategy:  0 max unavailable, 1 max surge" in lines
    assert "CreationTimestamp:      Wed, 01 May 2024 10:00:00 +0000" in lines
    template = lines[lines.index("Pod Template:") :]
    assert template[1:5] == [
        "  Labels:  app=web",
        "  Containers:",
        "   web:",
        "    Image:        nginx",
    ]
    assert "  Available  False   MinimumReplicasUnavailable" in lines


def test_service_ports_and_endpoints() -> None:
    svc = {
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "selector": {"app": "reviews"},
            "clusterIP": "127.2.0.7",
            "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
        },
    }
    endpoints = {
        "subsets": [
            {
                "addresses": [{"ip": "127.1.0.5"}, {"ip": "127.1.0.6"}],
                "ports": [{"name": "http", "port": 9080}],
            }
        ]
    }
    lines = describe(
        svc, group="", kind="Service", events=[], now=NOW, related={"endpoints": endpoints}
    ).splitlines()
    assert "Port:              http  9080/TCP" in lines
    assert "TargetPort:        9080/TCP" in lines
    assert "Endpoints:         127.1.0.5:9080,127.1.0.6:9080" in lines
    assert "IP:                127.2.0.7" in lines


def test_generic_describer_prints_every_field() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "reviews",
            "namespace": "default",
            "uid": "u",
            "resourceVersion": "7",
            "managedFields": [{"x": 1}],
        },
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}
            ],
        },
    }
    lines = describe(
        vs, group="networking.istio.io", kind="VirtualService", events=[], now=NOW
    ).splitlines()
    assert lines[:14] == [
        "Name:         reviews",
        "Namespace:    default",
        "Labels:       <none>",
        "Annotations:  <none>",
        "API Version:  networking.istio.io/v1",
        "Kind:         VirtualService",
        "Metadata:",
        "  Resource Version:  7",
        "  UID:               u",
        "Spec:",
        "  Hosts:",
        "    reviews",
        "  Http:",
        "    Route:",
    ]
    assert lines[14:18] == [
        "      Destination:",
        "        Host:    reviews",
        "        Subset:  v1",
        "      Weight:    100",
    ]
    assert not any("Managed" in line for line in lines)


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("creationTimestamp", "Creation Timestamp"),
        ("apiVersion", "API Version"),
        ("uid", "UID"),
        ("hosts", "Hosts"),
        ("targetURL", "Target URL"),
        ("http2MaxRequests", "http2MaxRequests"),
        ("x_y", "x_y"),
    ],
)
def test_smart_label(field: str, label: str) -> None:
    assert smart_label(field) == label


def test_events_about_matches_kind_name_and_uid() -> None:
    events = [
        event("A", "a"),
        event("B", "b", name="other"),
        event("C", "c", kind="Service"),
        {**event("D", "d"), "involvedObject": {"kind": "Pod", "name": "web-1", "uid": "old-uid"}},
    ]
    assert [e["reason"] for e in events_about(events, POD, "Pod")] == ["A"]
