"""A pod's READY, STATUS and RESTARTS, table-driven against kubectl's ``printPod`` rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshwork.cli.podstatus import pod_status
from meshwork.cli.printers import build_table

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def running(ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ago(100)}},
        **extra,
    }


def pod(status: dict[str, Any], spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": ago(300), **meta},
        "spec": spec or {"containers": [{"name": "app"}]},
        "status": status,
    }


SIDECAR_SPEC = {
    "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
    "containers": [{"name": "app"}],
}
TWO_INITS = {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod({"phase": "Running", "containerStatuses": [running()]}), ("1/1", "Running", "0")),
        (pod({"phase": "Pending"}), ("0/1", "Pending", "0")),
        (
            pod(
                {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "app",
                            "ready": False,
                            "restartCount": 5,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}},
                        }
                    ],
                }
            ),
            ("0/1", "CrashLoopBackOff", "5 (30s ago)"),
        ),
        (
            pod(
                {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "a", "state": {"running": {}}},
                        {"name": "b", "state": {"waiting": {"reason": "PodInitializing"}}},
                    ],
                },
                TWO_INITS,
            ),
            ("0/1", "Init:0/2", "0"),
        ),
        (
            pod(
                {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "a", "state": {"terminated": {"exitCode": 0}}},
                        {"name": "b", "state": {"waiting": {"reason": "ErrImagePull"}}},
                    ],
                },
                TWO_INITS,
            ),
            ("0/1", "Init:ErrImagePull", "0"),
        ),
        (
            pod(
                {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "a", "restartCount": 2, "state": {"terminated": {"exitCode": 1}}}
                    ],
                },
                TWO_INITS,
            ),
            ("0/1", "Init:ExitCode:1", "2"),
        ),
        (
            pod(
                {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}
                    ],
                },
                TWO_INITS,
            ),
            ("0/1", "Init:Signal:9", "0"),
        ),
        (
            pod(
                {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {
                            "name": "app",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        }
                    ],
                }
            ),
            ("0/1", "Completed", "0"),
        ),
        (
            pod(
                {
                    "phase": "Failed",
                    "containerStatuses": [
                        {"name": "app", "state": {"terminated": {"exitCode": 2}}}
                    ],
                }
            ),
            ("0/1", "ExitCode:2", "0"),
        ),
        (
            pod({"phase": "Running", "containerStatuses": [running()]}, deletionTimestamp=ago(1)),
            ("1/1", "Terminating", "0"),
        ),
        (
            pod(
                {"phase": "Running", "reason": "NodeLost", "containerStatuses": [running()]},
                deletionTimestamp=ago(1),
            ),
            ("1/1", "Unknown", "0"),
        ),
        (
            pod(
                {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {
                            "name": "app",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        }
                    ],
                },
                deletionTimestamp=ago(1),
            ),
            ("0/1", "Completed", "0"),
        ),
        (
            pod({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
            ("0/1", "Evicted", "0"),
        ),
        (
            pod(
                {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
                    ],
                }
            ),
            ("0/1", "SchedulingGated", "0"),
        ),
        (
            pod(
                {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "a",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        },
                        running(),
                    ],
                },
                {"containers": [{"name": "app"}, {"name": "a"}]},
            ),
            ("1/2", "Running", "0"),
        ),
        (
            pod(
                {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "a",
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        },
                        running(),
                    ],
                },
                {"containers": [{"name": "app"}, {"name": "a"}]},
            ),
            ("1/2", "NotReady", "0"),
        ),
        (
            pod(
                {
                    "phase": "Running",
                    "initContainerStatuses": [
                        {
                            "name": "proxy",
                            "started": True,
                            "ready": True,
                            "restartCount": 1,
                            "state": {"running": {}},
                        }
                    ],
                    "containerStatuses": [running(restarts=2)],
                },
                SIDECAR_SPEC,
            ),
            ("2/2", "Running", "3"),
        ),
    ],
)
def test_pod_ready_status_restarts_follow_kubectl(
    obj: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    assert pod_status(obj, NOW) == expected


def test_pod_row_wide_shows_ip_and_node() -> None:
    obj = pod(
        {"phase": "Running", "podIP": "127.1.0.5", "containerStatuses": [running()]},
        {"containers": [{"name": "app"}], "nodeName": "node-1"},
    )
    table = build_table([obj], group="", kind="Pod", now=NOW, wide=True)
    assert table.headers == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    assert table.rows == [
        ["p", "1/1", "Running", "0", "5m", "127.1.0.5", "node-1", "<none>", "<none>"]
    ]
    narrow = build_table([obj], group="", kind="Pod", now=NOW)
    assert narrow.headers == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
