"""Lifecycle guarantees end to end: depends-on gating, and the 0.0.0.0 port collision told plainly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from support.node import container_status, http_container, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"


def _pod(name: str, containers: list[dict[str, Any]], labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers}}


def test_depends_on_holds_a_pod_until_the_service_has_a_ready_endpoint(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                              "spec": {"selector": {"app": "db"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
        sleeper = {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}
        node.apply(PODS, _pod("client", [sleeper], annotations={"meshwork.io/depends-on": "db"}))

        def waiting() -> dict[str, Any] | None:
            p = node.pod("client")
            st = container_status(p, "app") if p else {}
            return (st.get("state") or {}).get("waiting")

        held = wait_for(lambda: (w := waiting()) and w.get("reason") == "WaitingForDependencies" and w, 30,
                        "the client held for its dependency")  # fmt: skip
        assert 'Service "db"' in held["message"]
        # The dependency comes up (and becomes ready): the held pod starts.
        node.apply(PODS, _pod("db", [http_container()], labels={"app": "db"}))
        wait_for(lambda: (p := node.pod("db")) and is_ready(p), 30, "db ready")
        started = wait_for(lambda: (p := node.pod("client")) and is_ready(p) and p, 30, "the client started")
        assert container_status(started, "app")["state"].get("running")


WILDCARD = (
    "import http.server\n"
    "http.server.HTTPServer(('0.0.0.0', 18080), http.server.BaseHTTPRequestHandler).serve_forever()\n"
)


NO_SHIM = {"meshwork.io/bind-rewrite": "false"}  # the app binds as it asks, as with no C compiler


def test_a_pod_that_binds_0_0_0_0_is_named_and_the_blocked_pod_says_why(tmp_path: Path) -> None:
    greedy = {"name": "web", "image": "python", "command": [sys.executable, "-c", WILDCARD],
              "ports": [{"containerPort": 18080}]}  # fmt: skip
    with running_node(tmp_path) as node:
        node.apply(PODS, _pod("greedy", [greedy], annotations=NO_SHIM))
        wait_for(lambda: (p := node.pod("greedy")) and is_ready(p), 30, "greedy running")

        def events(reason: str) -> list[dict[str, Any]]:
            items = (node.get("/api/v1/namespaces/default/events") or {}).get("items", [])
            return [e for e in items if e["reason"] == reason]

        warned = wait_for(lambda: events("WildcardBind"), 30, "a WildcardBind warning")
        assert warned[0]["involvedObject"]["name"] == "greedy"
        assert "0.0.0.0:18080" in warned[0]["message"] and "bind to $POD_IP" in warned[0]["message"]

        node.apply(PODS, _pod("blocked", [{**greedy, "name": "web"}], annotations=NO_SHIM))

        def told() -> str | None:
            p = node.pod("blocked")
            st = container_status(p, "web") if p else {}
            term = (st.get("lastState") or {}).get("terminated") or (st.get("state") or {}).get("terminated")
            return (term or {}).get("message")

        message = wait_for(told, 30, "the blocked pod's exit message")
        assert "port 18080 is taken on every address by pod default/greedy" in message
        assert events("PortConflict")
