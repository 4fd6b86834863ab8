"""Table-driven tests of the kubectl-shaped output: ages, tabwriter layout, per-kind cells."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from meshwork.cli.cells import format_endpoints, hpa_targets, service_external_ip, service_ports
from meshwork.cli.columns import PRINTERS, crd_cell, printer_for
from meshwork.cli.humanize import format_labels, human_duration, since
from meshwork.cli.printers import (
    Table,
    build_table,
    no_resources_message,
    render_names,
    render_objects,
    render_table,
    tabwrite,
)
from meshwork.cli.wire import format_selector

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- ages ----------------------------------------------------------------------------

MIN, HOUR, DAY, YEAR = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-2, "<invalid>"),
        (-1.5, "0s"),
        (-1, "0s"),
        (0, "0s"),
        (1, "1s"),
        (5.9, "5s"),
        (119, "119s"),
        (2 * MIN, "2m"),
        (2 * MIN + 1, "2m1s"),
        (3 * MIN + 12, "3m12s"),
        (9 * MIN + 59, "9m59s"),
        (10 * MIN, "10m"),
        (10 * MIN + 59, "10m"),
        (179 * MIN + 59, "179m"),
        (3 * HOUR, "3h"),
        (3 * HOUR + MIN, "3h1m"),
        (7 * HOUR + 59 * MIN, "7h59m"),
        (8 * HOUR, "8h"),
        (47 * HOUR + 59 * MIN, "47h"),
        (2 * DAY, "2d"),
        (2 * DAY + HOUR, "2d1h"),
        (7 * DAY + 23 * HOUR, "7d23h"),
        (8 * DAY, "8d"),
        (729 * DAY, "729d"),
        (2 * YEAR, "2y"),
        (2 * YEAR + DAY, "2y1d"),
        (7 * YEAR + 364 * DAY, "7y364d"),
        (8 * YEAR, "8y"),
        (30 * YEAR + 100 * DAY, "30y"),
    ],
)
def test_human_duration_matches_apimachinery(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


UNIT = {"s": 1, "m": MIN, "h": HOUR, "d": DAY, "y": YEAR}


@given(st.integers(min_value=0, max_value=50 * YEAR))
def test_human_duration_is_a_truncation_of_the_duration(seconds: int) -> None:
    text = human_duration(seconds)
    parts = re.fullmatch(r"((\d+)([smhdy]))((\d+)([smhdy]))?", text)
    assert parts is not None, text
    value = int(parts[2]) * UNIT[parts[3]] + (int(parts[5]) * UNIT[parts[6]] if parts[4] else 0)
    last = UNIT[parts[6] or parts[3]]
    assert value <= seconds < value + last


def test_since_reads_rfc3339_and_reports_unknown() -> None:
    assert since(ago(75), NOW) == "75s"
    assert since("2024-05-01T11:59:00.123456Z", NOW) == "59s"
    assert since("2024-05-01T13:00:00+01:00", NOW) == "0s"
    assert since(None, NOW) == "<unknown>"
    assert since("not a time", NOW) == "<unknown>"


# -- tabwriter ----------------------------------------------------------------------


def test_table_is_laid_out_like_kubectl() -> None:
    text = render_table(
        Table(
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            [
                ["web-1", "1/1", "Running", "0", "5s"],
                ["api", "0/1", "CrashLoopBackOff", "7 (3m ago)", "2d"],
            ],
        )
    )
    assert text == (
        "NAME    READY   STATUS             RESTARTS     AGE\n"
        "web-1   1/1     Running            0            5s\n"
        "api     0/1     CrashLoopBackOff   7 (3m ago)   2d\n"
    )


def test_tabwriter_minimum_width_applies_to_narrow_columns() -> None:
    assert (
        tabwrite([["A", "B", "C"], ["x", "y", "z"]], minwidth=6, padding=3)
        == "A     B     C\nx     y     z\n"
    )


def test_tabwriter_column_blocks_end_at_a_line_without_that_column() -> None:
    lines = [
        ["Name:", "web"],
        ["Labels:", "app=web"],
        ["", "tier=fe"],
        ["Containers:"],
        ["  web:"],
        ["    Image:", "nginx"],
        ["    Restart Count:", "0"],
    ]
    assert tabwrite(lines, minwidth=0, padding=2) == (
        "Name:    web\n"
        "Labels:  app=web\n"
        "         tier=fe\n"
        "Containers:\n"
        "  web:\n"
        "    Image:          nginx\n"
        "    Restart Count:  0\n"
    )


def test_remembered_widths_only_grow_across_calls() -> None:
    widths: list[int] = []
    first = tabwrite(
        [["NAME", "AGE"], ["a-much-longer-name", "1s"]], minwidth=6, padding=3, remembered=widths
    )
    second = tabwrite([["b", "2s"]], minwidth=6, padding=3, remembered=widths)
    assert first.splitlines()[1].index("1s") == second.index("2s") == len("a-much-longer-name") + 3


cell = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(
    st.integers(min_value=1, max_value=6).flatmap(
        lambda n: st.lists(st.lists(cell, min_size=n, max_size=n), min_size=1, max_size=8)
    )
)
def test_tabwriter_aligns_every_column_and_keeps_every_cell(rows: list[list[str]]) -> None:
    text = render_table(Table(rows[0], rows[1:]))
    lines = text.splitlines()
    assert [line.split() for line in lines] == rows
    starts = None
    for line, row in zip(lines, rows, strict=True):
        pos, offsets = 0, []
        for c in row:
            pos = line.index(c, pos)
            offsets.append(pos)
            pos += len(c)
        assert starts is None or offsets == starts
        starts = offsets


# -- other kinds ------------------------------------------------------------------------


def meta(name: str = "web", age: float = 300, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(age), **extra}


def row(kind: str, obj: dict[str, Any], group: str = "", wide: bool = False) -> list[str]:
    return build_table([obj], group=group, kind=kind, now=NOW, wide=wide).rows[0]


def test_deployment_replicaset_rows() -> None:
    spec = {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx"},
                    {"name": "log", "image": "busybox"},
                ]
            }
        },
    }
    dep = {
        "metadata": meta(),
        "spec": spec,
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert row("Deployment", dep, "apps") == ["web", "2/3", "3", "2", "5m"]
    assert row("Deployment", dep, "apps", wide=True)[5:] == ["web,log", "nginx,busybox", "app=web"]
    rs = {"metadata": meta("web-abc"), "spec": spec, "status": {"replicas": 3, "readyReplicas": 1}}
    assert row("ReplicaSet", rs, "apps") == ["web-abc", "3", "3", "1", "5m"]
    assert (
        row("Deployment", {"metadata": meta(), "spec": {}}, "apps")[1] == "0/1"
    )  # replicas defaults to 1


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        (
            {
                "conditions": [{"type": "Complete", "status": "True"}],
                "succeeded": 1,
                "startTime": ago(100),
                "completionTime": ago(40),
            },
            {},
            ["Complete", "1/1", "60s"],
        ),
        ({"active": 1, "startTime": ago(30)}, {"completions": 3}, ["Running", "0/3", "30s"]),
        (
            {"conditions": [{"type": "Failed", "status": "True"}]},
            {"parallelism": 2},
            ["Failed", "0/1 of 2", ""],
        ),
        ({"conditions": [{"type": "Suspended", "status": "True"}]}, {}, ["Suspended", "0/1", ""]),
        (
            {
                "conditions": [
                    {"type": "Complete", "status": "False"},
                    {"type": "FailureTarget", "status": "True"},
                ]
            },
            {},
            ["FailureTarget", "0/1", ""],
        ),
    ],
)
def test_job_status_completions_duration(
    status: dict[str, Any], spec: dict[str, Any], expected: list[str]
) -> None:
    assert (
        row("Job", {"metadata": meta("job"), "spec": spec, "status": status}, "batch")[1:4]
        == expected
    )


def test_cronjob_row() -> None:
    obj = {
        "metadata": meta("nightly"),
        "spec": {"schedule": "0 3 * * *", "suspend": False},
        "status": {"active": [{"name": "j"}], "lastScheduleTime": ago(3600)},
    }
    assert row("CronJob", obj, "batch") == [
        "nightly",
        "0 3 * * *",
        "<none>",
        "False",
        "1",
        "60m",
        "5m",
    ]
    unset = {"metadata": meta("n"), "spec": {"schedule": "@hourly", "timeZone": "Etc/UTC"}}
    assert row("CronJob", unset, "batch")[2:6] == ["Etc/UTC", "<unset>", "0", "<none>"]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([{"port": 80, "protocol": "TCP"}, {"port": 443}], "80/TCP,443/TCP"),
        ([{"port": 53, "protocol": "UDP"}], "53/UDP"),
        ([{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "80:30080/TCP"),
        ([], "<none>"),
        (None, "<none>"),
    ],
)
def test_service_ports(ports: Any, expected: str) -> None:
    assert service_ports(ports) == expected


@pytest.mark.parametrize(
    ("spec", "status", "wide", "expected"),
    [
        ({"type": "ClusterIP"}, {}, False, "<none>"),
        ({"type": "ClusterIP", "externalIPs": ["1.2.3.4"]}, {}, False, "1.2.3.4"),
        ({"type": "LoadBalancer"}, {}, False, "<pending>"),
        (
            {"type": "LoadBalancer"},
            {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}, {"hostname": "lb.example"}]}},
            True,
            "10.0.0.9,lb.example",
        ),
        (
            {"type": "LoadBalancer"},
            {"loadBalancer": {"ingress": [{"hostname": "a-very-long-load-balancer.example"}]}},
            False,
            "a-very-long-l...",
        ),
        ({"type": "ExternalName", "externalName": "db.example"}, {}, False, "db.example"),
    ],
)
def test_service_external_ip(
    spec: dict[str, Any], status: dict[str, Any], wide: bool, expected: str
) -> None:
    assert service_external_ip({"spec": spec, "status": status}, wide) == expected


def test_service_row() -> None:
    svc = {
        "metadata": meta("reviews"),
        "spec": {
            "clusterIP": "127.2.0.7",
            "ports": [{"port": 9080, "protocol": "TCP"}],
            "selector": {"app": "reviews"},
        },
    }
    assert row("Service", svc) == ["reviews", "ClusterIP", "127.2.0.7", "<none>", "9080/TCP", "5m"]
    assert row("Service", svc, wide=True)[-1] == "app=reviews"
    headless = {"metadata": meta("h"), "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}}
    assert row("Service", headless)[2:5] == ["None", "<none>", "<none>"]


def test_endpoints_show_three_then_a_count() -> None:
    ep = {
        "subsets": [
            {"addresses": [{"ip": f"127.1.0.{i}"} for i in range(1, 6)], "ports": [{"port": 9080}]}
        ]
    }
    assert format_endpoints(ep) == "127.1.0.1:9080,127.1.0.2:9080,127.1.0.3:9080 + 2 more..."
    assert format_endpoints({"subsets": [{"addresses": [{"ip": "127.1.0.1"}]}]}) == "127.1.0.1"
    assert format_endpoints({}) == "<none>"


def test_node_namespace_configmap_secret_event_rows() -> None:
    node = {
        "metadata": {
            "name": "node-1",
            "creationTimestamp": ago(90),
            "labels": {"node-role.kubernetes.io/control-plane": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v0.1.0"},
        },
    }
    assert row("Node", node) == [
        "node-1",
        "Ready,SchedulingDisabled",
        "control-plane",
        "90s",
        "v0.1.0",
    ]
    assert row("Node", {"metadata": {"name": "n"}})[1:3] == ["Unknown", "<none>"]
    assert row("Namespace", {"metadata": meta("prod"), "status": {"phase": "Active"}}) == [
        "prod",
        "Active",
        "5m",
    ]
    assert row(
        "ConfigMap",
        {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
    ) == ["cfg", "3", "5m"]
    assert row("Secret", {"metadata": meta("s"), "type": "Opaque", "data": {"k": "dg=="}}) == [
        "s",
        "Opaque",
        "1",
        "5m",
    ]
    event = {
        "metadata": meta("e"),
        "type": "Warning",
        "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "name": "web-1"},
        "message": "Back-off restarting\n",
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(20),
        "count": 4,
    }
    assert row("Event", event) == ["20s", "Warning", "BackOff", "pod/web-1", "Back-off restarting"]


def test_hpa_targets() -> None:
    hpa = {
        "spec": {
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"},
                    },
                },
                {
                    "type": "Pods",
                    "pods": {"metric": {"name": "qps"}, "target": {"averageValue": "10"}},
                },
            ]
        },
        "status": {
            "currentMetrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": 40}},
                }
            ]
        },
    }
    assert hpa_targets(hpa) == "cpu: 40%/80%, memory: <unknown>/100Mi + 1 more..."
    assert hpa_targets({"spec": {}}) == "<none>"


def test_custom_resources_print_their_crd_columns() -> None:
    vs = {
        "metadata": meta("reviews"),
        "spec": {"hosts": ["reviews"], "gateways": ["bookinfo-gateway", "mesh"]},
    }
    assert PRINTERS[("networking.istio.io", "VirtualService")].columns[1].name == "GATEWAYS"
    assert row("VirtualService", vs, "networking.istio.io") == [
        "reviews",
        '["bookinfo-gateway","mesh"]',
        '["reviews"]',
        "5m",
    ]
    assert (
        row(
            "VirtualService",
            {"metadata": meta("r"), "spec": {"hosts": ["r"]}},
            "networking.istio.io",
        )[1]
        == ""
    )
    dr = {"metadata": meta("reviews"), "spec": {"host": "reviews"}}
    assert row("DestinationRule", dr, "networking.istio.io") == ["reviews", "reviews", "5m"]
    ro = {
        "metadata": meta("ro"),
        "spec": {"replicas": 5},
        "status": {"replicas": 5, "updatedReplicas": 2, "availableReplicas": 4},
    }
    assert row("Rollout", ro, "argoproj.io") == ["ro", "5", "5", "2", "4", "5m"]
    wf = {"metadata": meta("wf"), "status": {"phase": "Running", "startedAt": ago(42)}}
    assert row("Workflow", wf, "argoproj.io") == ["wf", "Running", "42s"]
    assert crd_cell({"a": 1}) == '{"a":1}'
    assert crd_cell(2.0) == "2"


def test_unknown_kinds_print_name_and_age() -> None:
    assert printer_for("example.com", "Widget").columns[0].name == "NAME"
    assert row("Widget", {"metadata": meta("w", age=7200)}, "example.com") == ["w", "120m"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"tier": "fe", "app": "web"}}, "app=web,tier=fe"),
        (
            {
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ]
            },
            "canary,env in (dev,prod)".replace("canary", "!canary"),
        ),
        (
            {
                "matchExpressions": [
                    {"key": "x", "operator": "NotIn", "values": ["a"]},
                    {"key": "y", "operator": "Exists"},
                ]
            },
            "x notin (a),y",
        ),
        ({}, "<none>"),
        (None, "<none>"),
    ],
)
def test_format_selector(selector: Any, expected: str) -> None:
    assert format_selector(selector) == expected


def test_format_labels() -> None:
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({}) == "<none>"


# -- decorations and other formats ---------------------------------------------------------


def test_all_namespaces_labels_and_kind_prefix() -> None:
    objs = [
        {
            "metadata": {**meta("cfg", namespace="prod"), "labels": {"app": "web", "tier": "fe"}},
            "data": {},
        },
        {"metadata": meta("x")},
    ]
    table = build_table(
        objs,
        group="",
        kind="ConfigMap",
        now=NOW,
        with_namespace=True,
        show_labels=True,
        kind_prefix="configmap",
    )
    assert table.headers == ["NAMESPACE", "NAME", "DATA", "AGE", "LABELS"]
    assert table.rows == [
        ["prod", "configmap/cfg", "0", "5m", "app=web,tier=fe"],
        ["default", "configmap/x", "0", "5m", "<none>"],
    ]


def test_yaml_and_json_outputs() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {"script": "echo hi\necho bye\n"},
    }
    one = render_objects([cm], "yaml", single=True)
    assert one.startswith(
        "apiVersion: v1\ndata:\n  script: |\n    echo hi\n    echo bye\nkind: ConfigMap\n"
    )
    assert yaml.safe_load(one) == cm
    many = yaml.safe_load(render_objects([cm, cm], "yaml", single=False))
    assert many == {
        "apiVersion": "v1",
        "items": [cm, cm],
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }
    text = render_objects([cm], "json", single=False)
    assert json.loads(text)["kind"] == "List"
    assert text.startswith('{\n    "apiVersion": "v1",\n    "items": [')
    assert render_names([cm], "configmap") == "configmap/cfg\n"


def test_no_resources_messages() -> None:
    assert (
        no_resources_message("default", all_namespaces=False, namespaced=True)
        == "No resources found in default namespace."
    )
    assert (
        no_resources_message("default", all_namespaces=True, namespaced=True)
        == "No resources found"
    )
    assert (
        no_resources_message("default", all_namespaces=False, namespaced=False)
        == "No resources found"
    )


def test_multiline_cells_are_cut_like_kubectl() -> None:
    event = {
        "metadata": meta("e"),
        "type": "Normal",
        "reason": "X",
        "involvedObject": {"kind": "Pod", "name": "p"},
        "message": "first line\nsecond",
        "lastTimestamp": ago(1),
    }
    assert row("Event", event)[-1] == "first line..."
