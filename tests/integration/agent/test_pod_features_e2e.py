"""The node agent's pod features end to end, as Kubernetes documents them.

Each test runs a real ``meshwork server --agent`` and real pod processes:
environment and ``$(VAR)`` expansion, ConfigMap/Secret volumes, init
containers, native sidecars, probes, the image catalogue, graceful stop, and
two agents sharing one machine.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.node import Node, container_status, http_container, is_ready, running_node, wait_for
from support.server import sweep_processes

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"
SERVICES = "/api/v1/namespaces/default/services"
ENDPOINTS = "/api/v1/namespaces/default/endpoints"
EVENTS = "/api/v1/namespaces/default/events"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
SLEEP = "exec sleep 3600"
# Writes its environment and its first argument to files in the working dir, then sleeps.
DUMP_ENV = (
    "import os, sys, time\n"
    "open('args.txt', 'w').write(sys.argv[1] + '\\n')\n"
    "open('env.tmp', 'w').write(''.join(f'{k}={v}\\n' for k, v in os.environ.items()))\n"
    "os.rename('env.tmp', 'env.txt')\n"
    "time.sleep(3600)\n"
)


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": list(containers), **spec}}  # fmt: skip


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def pod_root(data_dir: Path, p: dict[str, Any], node: str = "node-1") -> Path:
    """The pod's default working directory on the node."""
    return data_dir / "nodes" / node / "pods" / p["metadata"]["uid"] / "root"


def running(node: Node, name: str, container: str | None = None) -> dict[str, Any] | None:
    p = node.pod(name)
    if p is None:
        return None
    st = container_status(p, container or p["spec"]["containers"][0]["name"])
    return p if st.get("state", {}).get("running") else None


def waiting(node: Node, name: str, container: str) -> dict[str, Any] | None:
    p = node.pod(name)
    return (container_status(p, container).get("state") or {}).get("waiting") if p else None


def events_for(node: Node, name: str) -> list[dict[str, Any]]:
    items = (node.get(EVENTS) or {"items": []})["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def read_env(path: Path) -> dict[str, str] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.endswith("\n"):
        return None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def phase(node: Node, name: str, want: str) -> dict[str, Any] | None:
    p = node.pod(name)
    return p if p and p.get("status", {}).get("phase") == want else None


def condition(p: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in p["status"]["conditions"] if c["type"] == kind)


# ---------------------------------------------------------------------------
# 1 + 2: the environment and ConfigMap / Secret volumes
# ---------------------------------------------------------------------------


def test_env_sources_expansion_and_configmap_secret_volumes(tmp_path: Path) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    with running_node(tmp_path) as node:
        node.apply(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                                "data": {"color": "blue", "size": "large", "app.conf": "port=8080\n"}})  # fmt: skip
        node.apply(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                             "data": {"password": b64("s3cret"), "user": b64("admin")}})  # fmt: skip
        field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
        app = dict(
            name="app", image="python", command=[sys.executable, "-c", DUMP_ENV],
            args=["$(GREETING) from $(MY_NAME)"],
            env=[
                {"name": "MY_NAME", **field("metadata.name")},
                {"name": "MY_NS", **field("metadata.namespace")},
                {"name": "MY_IP", **field("status.podIP")},
                {"name": "MY_NODE", **field("spec.nodeName")},
                {"name": "GREETING", "value": "hello $(MY_NAME) in $(MY_NS) $(UNDEFINED_VAR)"},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "ESCAPED", "value": "$$(MY_NAME)"},
            ],
            envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"},
                     {"secretRef": {"name": "creds"}, "prefix": "SEC_"}],
            volumeMounts=[{"name": "conf", "mountPath": "/etc/conf"},
                          {"name": "picked", "mountPath": "/etc/picked"},
                          {"name": "sec", "mountPath": "/etc/sec"}],
        )  # fmt: skip
        volumes = [
            {"name": "conf", "configMap": {"name": "settings", "defaultMode": 0o440}},
            {"name": "picked", "configMap": {"name": "settings",
                                             "items": [{"key": "size", "path": "sub/the-size", "mode": 0o600}]}},
            {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        ]  # fmt: skip
        node.apply(PODS, pod("envy", app, volumes=volumes))
        # A missing ConfigMap key holds the container in CreateContainerConfigError.
        missing = sh("app", SLEEP, env=[{"name": "X", "valueFrom": {
            "configMapKeyRef": {"name": "late", "key": "k"}}}])  # fmt: skip
        node.apply(PODS, pod("holdup", missing))
        # A volume of a ConfigMap that does not exist yet holds the pod in ContainerCreating.
        mounts = sh("app", SLEEP, volumeMounts=[{"name": "v", "mountPath": "/etc/later"}])
        node.apply(
            PODS, pod("mountwait", mounts, volumes=[{"name": "v", "configMap": {"name": "later"}}])
        )

        p = wait_for(lambda: running(node, "envy"), 30, "envy running")
        root = pod_root(tmp_path, p)
        env = wait_for(lambda: read_env(root / "env.txt"), 10, "env.txt written")
        ip = p["status"]["podIP"]
        assert env["MY_NAME"] == "envy"
        assert env["MY_NS"] == "default"
        assert env["MY_IP"] == ip and ip
        assert env["MY_NODE"] == "node-1"
        # $(VAR) of earlier variables expands; an unknown one stays as written; $$ escapes.
        assert env["GREETING"] == "hello envy in default $(UNDEFINED_VAR)"
        assert env["ESCAPED"] == "$(MY_NAME)"
        assert env["COLOR"] == "blue"
        assert env["PASSWORD"] == "s3cret"
        assert env["CM_color"] == "blue" and env["CM_size"] == "large"
        assert env["SEC_user"] == "admin" and env["SEC_password"] == "s3cret"
        assert "CM_app.conf" in env  # relaxed names allow '.'
        assert env["POD_IP"] == ip and env["HOSTNAME"] == "envy"
        args = wait_for(
            lambda: (root / "args.txt").is_file() and (root / "args.txt").read_text(),
            10,
            "args.txt",
        )
        assert args == "hello envy in default $(UNDEFINED_VAR) from envy\n"

        # Volumes: at <poddir>/root/<mountPath>, so `./etc/conf/<key>` from the working dir.
        def mode(path: Path) -> int:
            return path.stat().st_mode & 0o777

        conf = root / "etc/conf"
        assert (conf / "color").read_text() == "blue"
        assert (conf / "app.conf").read_text() == "port=8080\n"
        assert mode(conf / "color") == 0o440
        picked = root / "etc/picked"
        assert (picked / "sub/the-size").read_text() == "large"
        assert mode(picked / "sub/the-size") == 0o600
        assert not (picked / "color").exists()  # items: only the keys listed
        sec = root / "etc/sec"
        assert (sec / "password").read_text() == "s3cret"
        assert mode(sec / "password") == 0o400
        # The same files through the relative path a container would use.
        cat = subprocess.run(["cat", "./etc/conf/color", "./etc/sec/user"], cwd=root,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert cat.stdout == "blueadmin"

        w = wait_for(lambda: waiting(node, "holdup", "app"), 20, "holdup waiting")
        w = wait_for(lambda: (x := waiting(node, "holdup", "app")) and x.get("reason") ==
                     "CreateContainerConfigError" and x, 20, "CreateContainerConfigError")  # fmt: skip
        assert w["message"] == "couldn't find key k in ConfigMap default/late" or \
            w["message"] == 'configmap "late" not found', w  # fmt: skip
        node.apply(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"},
                                "data": {"other": "x"}})  # fmt: skip
        w = wait_for(lambda: (x := waiting(node, "holdup", "app")) and "couldn't find key" in
                     (x.get("message") or "") and x, 20, "the missing-key message")  # fmt: skip
        assert w["reason"] == "CreateContainerConfigError"
        assert w["message"] == "couldn't find key k in ConfigMap default/late"
        reply = node.http.patch(f"{CONFIGMAPS}/late", {"data": {"k": "now"}})
        assert reply.status == 200, reply.body
        wait_for(lambda: running(node, "holdup"), 30, "holdup running once the key exists")

        w = wait_for(lambda: waiting(node, "mountwait", "app"), 10, "mountwait waiting")
        assert w["reason"] == "ContainerCreating", w
        failed = wait_for(lambda: [e for e in events_for(node, "mountwait") if e["reason"] == "FailedMount"], 10,
                          "the FailedMount event")  # fmt: skip
        assert failed[0]["message"] == (
            'MountVolume.SetUp failed for volume "v" : configmap "later" not found'), failed  # fmt: skip
        node.apply(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
                                "data": {"k": "v1"}})  # fmt: skip
        p = wait_for(
            lambda: running(node, "mountwait"), 30, "mountwait running once the ConfigMap exists"
        )
        assert (pod_root(tmp_path, p) / "etc/later/k").read_text() == "v1"


# ---------------------------------------------------------------------------
# 3 + 4: init containers and native sidecars
# ---------------------------------------------------------------------------


def init_status(p: dict[str, Any], name: str) -> dict[str, Any]:
    for st in p.get("status", {}).get("initContainerStatuses") or []:
        if st["name"] == name:
            return dict(st)
    return {}


def init_shim(p: dict[str, Any], name: str) -> int | None:
    cid = init_status(p, name).get("containerID") or ""
    return int(cid.rsplit("/", 1)[-1]) if cid.startswith("meshwork://") else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_init_containers_in_order_and_native_sidecars(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        # Init containers, each to completion in order, before the app; a native
        # sidecar (restartPolicy Always) whose readiness gates the app.
        inits = [
            sh("first", "echo first >> order; sleep 0.5; echo first-done >> order"),
            sh("second", "echo second >> order"),
            sh("proxy", SLEEP, restartPolicy="Always",
               readinessProbe={"exec": {"command": ["test", "-f", "proxy-ready"]}, "periodSeconds": 1}),
        ]  # fmt: skip
        node.apply(
            PODS, pod("ordered", sh("app", "echo app >> order; " + SLEEP), initContainers=inits)
        )
        # A failing init container under restartPolicy Never fails the pod.
        node.apply(PODS, pod("badinit", sh("app", SLEEP), restartPolicy="Never",
                             initContainers=[sh("setup", "exit 3")]))  # fmt: skip
        # A Job-like pod: the main container's exit ends it, whatever the sidecar does.
        node.apply(PODS, pod("joblike", sh("main", "until [ -f go ]; do sleep 0.1; done; echo done"), restartPolicy="Never",
                             initContainers=[sh("helper", SLEEP, restartPolicy="Always")]))  # fmt: skip

        def sidecar_running() -> dict[str, Any] | None:
            p = node.pod("ordered")
            return p if p and (init_status(p, "proxy").get("state") or {}).get("running") else None

        p = wait_for(sidecar_running, 30, "the sidecar running")
        root = pod_root(tmp_path, p)
        assert (root / "order").read_text() == "first\nfirst-done\nsecond\n"
        assert init_status(p, "first")["state"]["terminated"]["reason"] == "Completed"
        assert init_status(p, "second")["state"]["terminated"]["exitCode"] == 0
        # The sidecar is not ready, so the app does not start.
        time.sleep(2)
        p = node.pod("ordered") or {}
        assert not init_status(p, "proxy")["ready"]
        assert not (container_status(p, "app").get("state") or {}).get("running"), p["status"]
        assert (root / "order").read_text() == "first\nfirst-done\nsecond\n"
        assert p["status"]["phase"] == "Pending"
        assert condition(p, "Initialized")["status"] == "True"  # a started sidecar counts
        (root / "proxy-ready").touch()
        p = wait_for(lambda: (q := node.pod("ordered")) and is_ready(q) and q, 30, "ordered Ready")
        assert (root / "order").read_text() == "first\nfirst-done\nsecond\napp\n"
        assert p["status"]["phase"] == "Running"
        assert condition(p, "PodScheduled")["status"] == "True"
        assert (
            init_status(p, "proxy")["ready"] is True and init_status(p, "proxy")["started"] is True
        )

        p = wait_for(lambda: phase(node, "badinit", "Failed"), 30, "badinit Failed")
        init = condition(p, "Initialized")
        assert init["status"] == "False" and init["reason"] == "ContainersNotInitialized", init
        assert init_status(p, "setup")["state"]["terminated"]["exitCode"] == 3
        assert init_status(p, "setup")["restartCount"] == 0
        assert (container_status(p, "app").get("state") or {}).get("waiting"), p["status"]
        assert condition(p, "Ready")["reason"] == "PodFailed"

        p = wait_for(lambda: running(node, "joblike"), 30, "joblike's main running")
        helper = init_shim(p, "helper")
        assert helper is not None and alive(helper)
        (pod_root(tmp_path, p) / "go").touch()
        p = wait_for(lambda: phase(node, "joblike", "Succeeded"), 30, "joblike Succeeded")
        assert container_status(p, "main")["state"]["terminated"]["exitCode"] == 0
        wait_for(lambda: not alive(helper), 15, "the sidecar process stopped")
        p = wait_for(lambda: (q := node.pod("joblike")) and init_status(q, "helper")["state"].get("terminated")
                     and q, 15, "the sidecar reported terminated")  # fmt: skip
        assert (condition(p, "Ready")["status"], condition(p, "Ready")["reason"]) == (
            "False",
            "PodCompleted",
        )
        assert (condition(p, "Initialized")["status"], condition(p, "Initialized").get("reason")) == (
            "True", "PodCompleted")  # fmt: skip
        assert init_status(p, "helper")["restartCount"] == 0  # stopped for good, not restarted


# ---------------------------------------------------------------------------
# 5: liveness, readiness and startup probes
# ---------------------------------------------------------------------------


def exec_probe(*command: str, **extra: Any) -> dict[str, Any]:
    return {"exec": {"command": list(command)}, "periodSeconds": 1, **extra}


def endpoint_ips(node: Node, name: str) -> tuple[list[str], list[str]]:
    ep = node.get(f"{ENDPOINTS}/{name}") or {}
    subsets = ep.get("subsets") or []
    return ([a["ip"] for s in subsets for a in s.get("addresses") or []],
            [a["ip"] for s in subsets for a in s.get("notReadyAddresses") or []])  # fmt: skip


def test_liveness_readiness_and_startup_probes(tmp_path: Path) -> None:
    with running_node(tmp_path) as node:
        node.apply(PODS, pod("doomed", sh("app", SLEEP, livenessProbe=exec_probe("false", failureThreshold=2)),
                             terminationGracePeriodSeconds=2))  # fmt: skip
        node.apply(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gated"},
                              "spec": {"selector": {"app": "gated"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
        gated = pod("gated", sh("app", SLEEP, readinessProbe=exec_probe("test", "-f", "ready")))
        gated["metadata"]["labels"] = {"app": "gated"}
        node.apply(PODS, gated)
        node.apply(PODS, pod("slowstart", sh("app", SLEEP,
                                             startupProbe=exec_probe("test", "-f", "started", failureThreshold=600),
                                             readinessProbe=exec_probe("true"))))  # fmt: skip

        # Readiness: running but not Ready, listed under notReadyAddresses only.
        p = wait_for(lambda: running(node, "gated"), 30, "gated running")
        ip = p["status"]["podIP"]
        wait_for(
            lambda: endpoint_ips(node, "gated") == ([], [ip]), 20, "gated in notReadyAddresses"
        )
        p = node.pod("gated") or {}
        assert not is_ready(p) and container_status(p, "app")["ready"] is False
        assert condition(p, "Ready")["reason"] == "ContainersNotReady"
        (pod_root(tmp_path, p) / "ready").touch()
        wait_for(lambda: (q := node.pod("gated")) and is_ready(q), 20, "gated Ready")
        wait_for(lambda: endpoint_ips(node, "gated") == ([ip], []), 20, "gated in addresses")
        # And out again when the probe fails again.
        (pod_root(tmp_path, p) / "ready").unlink()
        wait_for(lambda: (q := node.pod("gated")) and not is_ready(q), 20, "gated unready again")
        wait_for(
            lambda: endpoint_ips(node, "gated") == ([], [ip]), 20, "gated back in notReadyAddresses"
        )

        # Startup: until it passes, not started and not Ready, whatever readiness says.
        p = wait_for(lambda: running(node, "slowstart"), 30, "slowstart running")
        time.sleep(
            2
        )  # long enough for the readiness probe (period 1s) to have run, were it allowed
        p = node.pod("slowstart") or {}
        st = container_status(p, "app")
        assert st["started"] is False and st["ready"] is False and not is_ready(p), st
        (pod_root(tmp_path, p) / "started").touch()
        p = wait_for(
            lambda: (q := node.pod("slowstart")) and is_ready(q) and q, 20, "slowstart Ready"
        )
        assert container_status(p, "app")["started"] is True
        assert container_status(p, "app")["restartCount"] == 0

        # Liveness: killed and restarted, with Unhealthy and Killing events.
        def restarted() -> dict[str, Any] | None:
            q = node.pod("doomed")
            return q if q and container_status(q, "app").get("restartCount", 0) >= 1 else None

        p = wait_for(restarted, 40, "doomed restarted by its liveness probe")
        last = container_status(p, "app")["lastState"]["terminated"]
        assert last["exitCode"] == 143, last  # SIGTERM ended it within the grace period
        def both_events() -> list[dict[str, Any]] | None:
            evs = events_for(node, "doomed")
            return evs if {"Unhealthy", "Killing"} <= {e["reason"] for e in evs} else None

        evs = wait_for(both_events, 10, "the Unhealthy and Killing events")
        unhealthy = [e for e in evs if e["reason"] == "Unhealthy"]
        killing = [e for e in evs if e["reason"] == "Killing"]
        assert unhealthy and unhealthy[0]["type"] == "Warning"
        assert unhealthy[0]["message"].startswith("Liveness probe failed"), unhealthy[0]
        assert killing and "failed liveness probe, will be restarted" in killing[0]["message"], (
            killing
        )


# ---------------------------------------------------------------------------
# 6 + 7: the image catalogue, and graceful stop
# ---------------------------------------------------------------------------


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def test_unknown_image_then_catalogue_entry_and_graceful_stop(tmp_path: Path) -> None:
    trail, stubborn_trail = tmp_path / "graceful.log", tmp_path / "stubborn.log"
    with running_node(tmp_path) as node:
        node.apply(PODS, pod("custom", {"name": "tool", "image": "docker.io/myorg/tool:1.0"}))
        graceful = sh("app", f"trap 'echo term >> {trail}; exit 0' TERM; echo started >> {trail}; "
                             "while true; do sleep 0.1; done",
                      lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"echo prestop >> {trail}"]}}})  # fmt: skip
        node.apply(PODS, pod("graceful", graceful, terminationGracePeriodSeconds=10))
        stubborn = sh("app", f"trap '' TERM; trap 'echo exit >> {stubborn_trail}' EXIT; "
                             f"echo started >> {stubborn_trail}; while true; do sleep 0.1; done")  # fmt: skip
        node.apply(PODS, pod("stubborn", stubborn, terminationGracePeriodSeconds=2))

        # 6: not in the catalogue: a clear waiting reason that says how to add it.
        w = wait_for(lambda: (x := waiting(node, "custom", "tool")) and x.get("reason") == "ErrImageNeverPull"
                     and x, 20, "ErrImageNeverPull")  # fmt: skip
        assert "docker.io/myorg/tool:1.0" in w["message"]
        assert str(tmp_path / "images.yaml") in w["message"] and "command" in w["message"], w
        # Events are written apart from the status: the Failed event may land a moment later.
        wait_for(lambda: any(e["reason"] == "Failed" for e in events_for(node, "custom")), 10, "the Failed event")
        # Named without the docker.io/ prefix in the catalogue: still matches.
        (tmp_path / "images.yaml").write_text(
            'myorg/tool:1.0:\n  command: [sh, -c, "echo $TOOL_MODE > mode.txt; exec sleep 3600"]\n'
            "  env: {TOOL_MODE: local}\n"
        )
        p = wait_for(
            lambda: running(node, "custom"), 30, "custom running once the catalogue has it"
        )
        mode = pod_root(tmp_path, p) / "mode.txt"
        assert wait_for(lambda: lines(mode), 10, "mode.txt") == ["local"]

        # 7: preStop, then SIGTERM, then the object goes.
        wait_for(lambda: lines(trail) == ["started"], 30, "graceful started")
        wait_for(lambda: lines(stubborn_trail) == ["started"], 30, "stubborn started")
        stubborn_pod = node.pod("stubborn") or {}
        shim = int(container_status(stubborn_pod, "app")["containerID"].rsplit("/", 1)[-1])
        for name in ("graceful", "stubborn"):
            reply = node.http.delete(f"{PODS}/{name}")
            assert reply.status == 202, reply.body  # accepted: the pod stops gracefully
        wait_for(lambda: node.pod("graceful") is None, 30, "graceful gone")
        assert lines(trail) == ["started", "prestop", "term"]
        # Ignoring SIGTERM: SIGKILLed after the 2 s grace period (its EXIT trap never ran).
        wait_for(lambda: node.pod("stubborn") is None, 30, "stubborn gone")
        assert not alive(shim)
        assert lines(stubborn_trail) == ["started"]
        wait_for(lambda: "Killing" in [e["reason"] for e in events_for(node, "stubborn")], 10, "the Killing event")


# ---------------------------------------------------------------------------
# 8: two agents on one machine
# ---------------------------------------------------------------------------


def node_ready(node: Node, name: str) -> dict[str, Any] | None:
    obj = node.get(f"/api/v1/nodes/{name}")
    conds = (obj or {}).get("status", {}).get("conditions") or []
    return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else None


def test_two_agents_get_their_own_pod_ranges_and_share_a_deployment(tmp_path: Path) -> None:
    main, other = tmp_path / "main", tmp_path / "node-2"
    main.mkdir()
    other.mkdir()
    with running_node(main) as node:
        data = node.server.data_dir
        env = {**os.environ, "MESHWORK_HOME": str(other), "MESHWORK_LOG_LEVEL": "WARNING"}
        log = open(other / "agent.log", "w")
        agent = subprocess.Popen(
            [sys.executable, "-m", "meshwork", "agent", "--server", node.server.url,
             "--token-file", str(data / "token"), "--name", "node-2", "--data-dir", str(other)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            one = wait_for(lambda: node_ready(node, "node-1"), 30, "node-1 Ready")
            two = wait_for(lambda: node_ready(node, "node-2"), 30, "node-2 Ready")
            cidrs = {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in (one, two)}
            assert all(cidrs.values()), cidrs
            nets = {k: ipaddress.ip_network(v) for k, v in cidrs.items()}
            assert not nets["node-1"].overlaps(nets["node-2"]), cidrs

            spec = {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
                    "template": {"metadata": {"labels": {"app": "spread"}},
                                 "spec": {"containers": [http_container()]}}}  # fmt: skip
            node.apply(DEPLOYMENTS, {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "metadata": {"name": "spread"}, "spec": spec})  # fmt: skip

            def four_ready() -> list[dict[str, Any]] | None:
                pods = [p for p in node.pods(selector="app=spread") if is_ready(p)]
                return pods if len(pods) == 4 else None

            pods = wait_for(four_ready, 60, "4 ready pods")
            on = {p["spec"]["nodeName"] for p in pods}
            assert on == {"node-1", "node-2"}, on
            for p in pods:
                ip = ipaddress.ip_address(p["status"]["podIP"])
                assert ip in nets[p["spec"]["nodeName"]], (p["metadata"]["name"], ip, cidrs)
            # node-2's pods run under its own data dir.
            for p in pods:
                if p["spec"]["nodeName"] == "node-2":
                    assert (other / "nodes" / "node-2" / "pods" / p["metadata"]["uid"]).is_dir()
        finally:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)
            log.close()
            sweep_processes(other)
