"""``meshwork rollout`` and ``meshwork scale`` against a real server and its real controllers.

There is no node agent in the test server, so no pod becomes ready by itself:
the test plays the node, writing pods' status through the API. `rollout
status` runs as a subprocess whose lines are read as they come; the other
commands run in-process through click's runner against the same server.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner, Result

from meshwork.cli import cli
from support.server import Http, ServerProcess, running_server

pytestmark = pytest.mark.integration

DEPLOYS = "/apis/apps/v1/namespaces/{ns}/deployments"
RSS = "/apis/apps/v1/namespaces/{ns}/replicasets"
PODS = "/api/v1/namespaces/{ns}/pods"
CHANGE_CAUSE = "kubernetes.io/change-cause"
REVISION = "deployment.kubernetes.io/revision"
# Generous bounds so a broken build fails instead of hanging; never asserted as timings.
WAIT_S = 60.0
PROCESS_TIMEOUT_S = 120.0


@dataclass
class Env:
    server: ServerProcess
    api: Http
    home: Path

    def run(self, *args: str) -> Result:
        """One CLI command in-process, pointed at the test server."""
        argv = ["--data-dir", str(self.home), "--server", self.server.url]
        argv += ["--token", self.server.token, *args]
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    def spawn(self, *args: str) -> Spawned:
        """One CLI command as a subprocess whose stdout lines can be awaited."""
        env = {
            k: v for k, v in os.environ.items() if k not in ("MESHWORK_SERVER", "MESHWORK_TOKEN")
        }
        env["MESHWORK_HOME"] = str(self.home)
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshwork", "--server", self.server.url,
             "--token", self.server.token, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        return Spawned(proc)


class Spawned:
    """A running CLI process; its stdout lines arrive on a queue as they are printed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        self._pump = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._pump.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, expected: str) -> None:
        """Read lines until ``expected`` arrives (earlier ones are kept in ``seen``)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the process ended before {expected!r}; it printed {self.seen}"
                                     f" and on stderr: {self.stderr()}")  # fmt: skip
            self.seen.append(line)
            if line == expected:
                return
        raise AssertionError(f"{expected!r} never came; the process printed {self.seen}")

    def finish(self) -> int:
        code = self.proc.wait(PROCESS_TIMEOUT_S)
        self._pump.join(10)
        while (line := self.lines.get_nowait() if not self.lines.empty() else None) is not None:
            self.seen.append(line)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("rollout")) as srv:
        yield srv


@pytest.fixture
def env(server: ServerProcess, tmp_path: Path) -> Iterator[Env]:
    api = server.client()
    yield Env(server, api, tmp_path)
    api.close()


@pytest.fixture
def spawned() -> Iterator[list[Spawned]]:
    """Processes a test starts; every one is killed at teardown, even on failure."""
    procs: list[Spawned] = []
    yield procs
    for p in procs:
        p.kill()


def eventually(check: Callable[[], Any], what: str = "") -> Any:
    deadline = time.monotonic() + WAIT_S
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not reached: {what}; last: {last!r}")


def deployment(
    name: str, replicas: int, value: str = "a", *, strategy: str = "RollingUpdate", **spec: Any
) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                 "env": [{"name": "V", "value": value}]}  # fmt: skip
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {CHANGE_CAUSE: f"V={value}"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "strategy": {"type": strategy},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                 **spec},
    }  # fmt: skip


def create(env: Env, ns: str, body: dict[str, Any]) -> None:
    reply = env.api.post(DEPLOYS.format(ns=ns), body)
    assert reply.status == 201, reply.body


def change_template(env: Env, ns: str, name: str, value: str) -> None:
    """A new pod template (the V variable) and change-cause, as `kubectl apply` of an edit would.

    The controller writes the Deployment too (status, revision), so a 409 means: read again.
    """

    def put() -> bool:
        deploy = get_deploy(env, ns, name)
        deploy["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": value}]
        deploy["metadata"]["annotations"][CHANGE_CAUSE] = f"V={value}"
        reply = env.api.put(f"{DEPLOYS.format(ns=ns)}/{name}", deploy)
        assert reply.status in (200, 409), reply.body
        return reply.status == 200

    eventually(put, "the template change written")


def get_deploy(env: Env, ns: str, name: str) -> dict[str, Any]:
    return dict(env.api.get(f"{DEPLOYS.format(ns=ns)}/{name}").json)


def items(env: Env, path: str) -> list[dict[str, Any]]:
    return list(env.api.get(path).json["items"])


def replicasets(env: Env, ns: str) -> dict[str, dict[str, Any]]:
    """The namespace's ReplicaSets by revision."""
    return {rs["metadata"]["annotations"][REVISION]: rs for rs in items(env, RSS.format(ns=ns))}


def pods_of(env: Env, ns: str, rs: dict[str, Any]) -> list[dict[str, Any]]:
    uid = rs["metadata"]["uid"]
    return [p for p in items(env, PODS.format(ns=ns))
            if any(r["uid"] == uid for r in p["metadata"].get("ownerReferences") or ())
            and not p["metadata"].get("deletionTimestamp")]  # fmt: skip


def observed(env: Env, ns: str, name: str) -> dict[str, Any] | None:
    """The Deployment once its controller has seen its latest spec."""
    d = get_deploy(env, ns, name)
    status = d.get("status") or {}
    return d if status.get("observedGeneration") == d["metadata"]["generation"] else None


def make_ready(env: Env, ns: str, pod: dict[str, Any]) -> None:
    """The node's part: the pod runs and its one container is ready."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "image": "busybox",
                               "imageID": "", "started": True, "state": {"running": {"startedAt": now}}}],
    }  # fmt: skip
    path = f"{PODS.format(ns=ns)}/{pod['metadata']['name']}/status"
    reply = env.api.patch(path, {"status": status})
    assert reply.status == 200, reply.body


def waiting(name: str, text: str) -> str:
    return f'Waiting for deployment "{name}" rollout to finish: {text}...'


# -- rollout status ------------------------------------------------------------------------


def test_status_follows_a_rollout_until_the_pods_are_ready(
    env: Env, spawned: list[Spawned]
) -> None:
    ns = "ro-status"
    create(env, ns, deployment("web", 2))
    eventually(lambda: (d := observed(env, ns, "web")) and d["status"].get("updatedReplicas") == 2,
               "the first ReplicaSet's two pods are counted")  # fmt: skip
    status = env.spawn("rollout", "status", "deployment/web", "-n", ns)
    spawned.append(status)
    status.wait_for(waiting("web", "0 of 2 updated replicas are available"))
    first = replicasets(env, ns)["1"]
    pod_a, pod_b = pods_of(env, ns, first)
    make_ready(env, ns, pod_a)
    status.wait_for(waiting("web", "1 of 2 updated replicas are available"))
    make_ready(env, ns, pod_b)
    status.wait_for('deployment "web" successfully rolled out')
    assert status.finish() == 0

    # A template change rolls out one surge pod at a time (maxSurge 25% -> 1, maxUnavailable 0).
    change_template(env, ns, "web", "b")
    status = env.spawn("rollout", "status", "deploy", "web", "--namespace", ns, "--timeout", "5m")
    spawned.append(status)
    status.wait_for(waiting("web", "1 out of 2 new replicas have been updated"))
    second = eventually(lambda: replicasets(env, ns).get("2"), "revision 2")
    (new_a,) = eventually(lambda: pods_of(env, ns, second), "the surge pod")
    make_ready(env, ns, new_a)
    status.wait_for(waiting("web", "1 old replicas are pending termination"))
    new_b = eventually(
        lambda: [p for p in pods_of(env, ns, second) if p["metadata"]["name"] != new_a["metadata"]["name"]],
        "the second new pod")  # fmt: skip
    make_ready(env, ns, new_b[0])
    status.wait_for('deployment "web" successfully rolled out')
    assert status.finish() == 0
    # Each state is printed once, in the order it happened.
    assert len(status.seen) == len(set(status.seen))


def test_status_without_watch_prints_the_state_once(env: Env) -> None:
    ns = "ro-nowatch"
    create(env, ns, deployment("web", 1))
    eventually(lambda: (d := observed(env, ns, "web")) and d["status"].get("updatedReplicas") == 1,
               "the pod is counted")  # fmt: skip
    result = env.run("rollout", "status", "deployments.apps/web", "-n", ns, "--no-watch")
    assert result.exit_code == 0, result.output
    assert result.stdout == waiting("web", "0 of 1 updated replicas are available") + "\n"


def test_status_fails_when_the_progress_deadline_passes(env: Env, spawned: list[Spawned]) -> None:
    ns = "ro-deadline"
    create(env, ns, deployment("stuck", 1, progressDeadlineSeconds=1))
    status = env.spawn("rollout", "status", "deployment/stuck", "-n", ns)
    spawned.append(status)
    assert status.finish() == 1
    stderr = status.stderr()
    assert 'error: deployment "stuck" exceeded its progress deadline' in stderr
    assert "hint:" in stderr and "rollout undo deployment/stuck" in stderr


def test_status_gives_up_at_the_timeout(env: Env, spawned: list[Spawned]) -> None:
    ns = "ro-timeout"
    create(env, ns, deployment("slow", 1))
    eventually(lambda: (d := observed(env, ns, "slow")) and d["status"].get("updatedReplicas") == 1,
               "the pod is counted")  # fmt: skip
    status = env.spawn("rollout", "status", "deployment/slow", "-n", ns, "--timeout", "2s")
    spawned.append(status)
    assert status.finish() == 1
    assert status.seen == [waiting("slow", "0 of 1 updated replicas are available")]
    assert "error: timed out waiting for the condition" in status.stderr()


def test_status_refuses_what_is_not_a_deployment_and_a_missing_one(env: Env) -> None:
    result = env.run("rollout", "status", "pod/web")
    assert result.exit_code == 1
    assert 'error: no status viewer has been implemented for "pod"' in result.stderr
    result = env.run("rollout", "status", "deployment/nowhere", "-n", "ro-missing")
    assert result.exit_code == 1
    assert 'deployments.apps "nowhere" not found' in result.stderr


# -- history and undo ----------------------------------------------------------------------


def test_history_lists_revisions_and_undo_brings_revision_1_back(env: Env) -> None:
    ns = "ro-history"
    # Recreate: the old ReplicaSet goes to 0 before the new one scales up, with no
    # need for ready pods, so each revision's ReplicaSet is fully up in turn.
    create(env, ns, deployment("app", 2, "a", strategy="Recreate"))
    eventually(lambda: (rs := replicasets(env, ns).get("1")) and len(pods_of(env, ns, rs)) == 2,
               "revision 1's pods")  # fmt: skip
    change_template(env, ns, "app", "b")
    eventually(lambda: (r := replicasets(env, ns)).get("2") and r["2"]["spec"]["replicas"] == 2
               and r["1"]["spec"]["replicas"] == 0, "revision 2 up, revision 1 down")  # fmt: skip

    result = env.run("rollout", "history", "deployment/app", "-n", ns)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "deployment.apps/app\nREVISION  CHANGE-CAUSE\n1         V=a\n2         V=b\n"
    )
    result = env.run("rollout", "history", "deploy/app", "-n", ns, "--revision", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "deployment.apps/app with revision #1"
    assert lines[1] == "Pod Template:"
    assert any("pod-template-hash=" in line for line in lines)
    assert any(line.split() == ["Annotations:", f"{CHANGE_CAUSE}:", "V=a"] for line in lines)
    assert any(line.split() == ["V:", "a"] for line in lines), result.stdout
    result = env.run("rollout", "history", "deploy/app", "-n", ns, "--revision", "9")
    assert result.exit_code == 1
    assert "error: unable to find the specified revision" in result.stderr
    assert "hint: the revisions there are: 1, 2" in result.stderr

    result = env.run("rollout", "undo", "deployment", "app", "-n", ns, "--to-revision", "7")
    assert result.exit_code == 1
    assert "error: unable to find specified revision 7 in history" in result.stderr

    first_uid = replicasets(env, ns)["1"]["metadata"]["uid"]
    result = env.run("rollout", "undo", "deployments.apps/app", "-n", ns)
    assert result.exit_code == 0, result.output
    assert result.stdout == "deployment.apps/app rolled back\n"
    deploy = get_deploy(env, ns, "app")
    template = deploy["spec"]["template"]
    assert template["spec"]["containers"][0]["env"] == [{"name": "V", "value": "a"}]
    assert template["metadata"]["labels"] == {"app": "app"}  # no pod-template-hash
    assert deploy["metadata"]["annotations"][CHANGE_CAUSE] == "V=a"
    # The controller finds revision 1's ReplicaSet again, renumbers it 3 and scales it back up.
    back = eventually(lambda: (r := replicasets(env, ns)).get("3") and r["3"]["spec"]["replicas"] == 2
                      and r["3"], "revision 1's ReplicaSet scaled back up as revision 3")  # fmt: skip
    assert back["metadata"]["uid"] == first_uid
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    eventually(lambda: replicasets(env, ns)["2"]["spec"]["replicas"] == 0, "revision 2 scaled down")
    result = env.run("rollout", "history", "deployment/app", "-n", ns)
    assert result.stdout.splitlines()[2:] == ["2         V=b", "3         V=a"]

    # Undoing to the revision already running changes nothing.
    result = env.run("rollout", "undo", "deployment/app", "-n", ns, "--to-revision", "3")
    assert result.exit_code == 0, result.output
    assert "skipped rollback (current template already matches revision 3)" in result.stdout


def test_undo_with_no_earlier_revision_says_so(env: Env) -> None:
    ns = "ro-undo-none"
    create(env, ns, deployment("one", 1))
    eventually(lambda: replicasets(env, ns).get("1"), "revision 1")
    result = env.run("rollout", "undo", "deployment/one", "-n", ns)
    assert result.exit_code == 1
    assert 'error: no rollout history found for deployment "one"' in result.stderr


# -- restart, pause, resume ----------------------------------------------------------------


def test_restart_rolls_out_a_new_replicaset(env: Env) -> None:
    ns = "ro-restart"
    create(env, ns, deployment("web", 1, strategy="Recreate"))
    eventually(lambda: replicasets(env, ns).get("1"), "revision 1")
    result = env.run("rollout", "restart", "deployment/web", "-n", ns)
    assert result.exit_code == 0, result.output
    assert result.stdout == "deployment.apps/web restarted\n"
    stamp = get_deploy(env, ns, "web")["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None
    second = eventually(lambda: replicasets(env, ns).get("2"), "a new ReplicaSet")
    assert second["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": stamp
    }


def test_pause_holds_a_template_change_and_resume_rolls_it(env: Env) -> None:
    ns = "ro-pause"
    create(env, ns, deployment("web", 1, strategy="Recreate"))
    eventually(lambda: replicasets(env, ns).get("1"), "revision 1")
    result = env.run("rollout", "pause", "deployment/web", "-n", ns)
    assert (result.exit_code, result.stdout) == (0, "deployment.apps/web paused\n")
    result = env.run("rollout", "pause", "deploy/web", "-n", ns)
    assert result.exit_code == 1
    assert 'error: deployments.apps "web" is already paused' in result.stderr

    change_template(env, ns, "web", "b")
    # The controller has seen the new spec (it writes status after any ReplicaSet it
    # would create), and made no new ReplicaSet: the change waits.
    paused = eventually(lambda: observed(env, ns, "web"), "the paused spec observed")
    progressing = [c for c in paused["status"]["conditions"] if c["type"] == "Progressing"]
    assert progressing[0]["reason"] == "DeploymentPaused"
    assert list(replicasets(env, ns)) == ["1"]
    result = env.run("rollout", "restart", "deployment/web", "-n", ns)
    assert result.exit_code == 1
    assert "can't restart paused deployment (run rollout resume first)" in result.stderr

    result = env.run("rollout", "resume", "deployment/web", "-n", ns)
    assert (result.exit_code, result.stdout) == (0, "deployment.apps/web resumed\n")
    rs2 = eventually(lambda: replicasets(env, ns).get("2"), "the held change rolled out")
    assert rs2["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "V", "value": "b"}]
    result = env.run("rollout", "resume", "deployment/web", "-n", ns)
    assert result.exit_code == 1
    assert 'error: deployments.apps "web" is not paused' in result.stderr

    # A paused Deployment cannot be rolled back.
    assert env.run("rollout", "pause", "deployment/web", "-n", ns).exit_code == 0
    result = env.run("rollout", "undo", "deployment/web", "-n", ns)
    assert result.exit_code == 1
    assert "error: you cannot rollback a paused deployment" in result.stderr
    assert (
        get_deploy(env, ns, "web")["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
        == "b"
    )


# -- scale ---------------------------------------------------------------------------------


def test_scale_sets_replicas_and_honours_current_replicas(env: Env) -> None:
    ns = "ro-scale"
    create(env, ns, deployment("web", 1))
    result = env.run("scale", "deployment/web", "--replicas", "3", "-n", ns)
    assert (result.exit_code, result.stdout) == (0, "deployment.apps/web scaled\n")
    assert get_deploy(env, ns, "web")["spec"]["replicas"] == 3
    eventually(lambda: len(items(env, PODS.format(ns=ns))) == 3, "three pods")

    result = env.run("scale", "deploy/web", "--current-replicas", "2", "--replicas", "1", "-n", ns)
    assert result.exit_code == 1
    assert "error: Expected replicas to be 2, was 3" in result.stderr
    assert get_deploy(env, ns, "web")["spec"]["replicas"] == 3

    result = env.run(
        "scale", "deploy", "web", "--current-replicas", "3", "--replicas", "1", "-n", ns
    )
    assert (result.exit_code, result.stdout) == (0, "deployment.apps/web scaled\n")
    eventually(lambda: len(items(env, PODS.format(ns=ns))) == 1, "one pod left")


def test_scale_a_replicaset_and_refuse_what_cannot_scale(env: Env) -> None:
    ns = "ro-scale-rs"
    labels = {"app": "solo"}
    reply = env.api.post(RSS.format(ns=ns), {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "solo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "1"]}]}}},
    })  # fmt: skip
    assert reply.status == 201, reply.body
    result = env.run("scale", "rs/solo", "--replicas", "2", "-n", ns)
    assert (result.exit_code, result.stdout) == (0, "replicaset.apps/solo scaled\n")
    eventually(lambda: len(items(env, PODS.format(ns=ns))) == 2, "two pods")

    result = env.run("scale", "replicaset/absent", "--replicas", "2", "-n", ns)
    assert result.exit_code == 1
    assert 'replicasets.apps "absent" not found' in result.stderr
    result = env.run("scale", "configmap/x", "--replicas", "2", "-n", ns)
    assert result.exit_code == 2
    assert "cannot scale configmap" in result.stderr
