"""The ``meshwork`` CLI end to end: a real server process, real sockets, real files.

`up`/`down`/`get -w` run as subprocesses (they manage processes and signals);
the other commands run in-process through click's runner against the same
real server, which keeps the suite fast.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

pytest.importorskip(
    "meshwork.control.server", reason="the API server (meshwork.control.server) does not import yet"
)
pytest.importorskip(
    "meshwork.model.loader", reason="the manifest loader (meshwork.model.loader) does not exist yet"
)

from click.testing import CliRunner, Result

from meshwork.cli import cli
from meshwork.cli.daemon import group_alive, process_alive, read_pid, stop_process
from meshwork.client import Client

pytestmark = pytest.mark.integration

# Generous bounds so a broken build fails instead of hanging; never asserted as timings.
PROCESS_TIMEOUT_S = 120
LINE_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHWORK_SERVER", "MESHWORK_TOKEN")}
    env["MESHWORK_HOME"] = str(home)
    return env


def meshwork(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshwork", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )


@dataclass
class Cluster:
    home: Path
    port: int
    env: dict[str, str]
    pid: int

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return CliRunner().invoke(
            cli, list(args), input=input, env={**self.env, **(env or {})}, catch_exceptions=False
        )

    def client(self) -> Client:
        return Client.from_config(self.home)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("meshwork-home")
    port = free_port()
    env = clean_env(home)
    up = meshwork(env, "up", "-d", "--port", str(port))
    pid = read_pid(home)
    try:
        assert up.returncode == 0, up.stderr
        assert pid is not None and process_alive(pid)
        yield Cluster(home, port, env, pid)
        down = meshwork(env, "down")
        assert down.returncode == 0, down.stderr
        assert f"meshwork server (pid {pid}) stopped" in down.stdout
        assert not group_alive(pid)
    finally:
        if pid is not None:
            stop_process(pid, timeout=5)


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def configmap(
    name: str, data: dict[str, str], labels: dict[str, str] | None = None, **meta: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    },
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}
                ]
            },
        },
    },
}


# -- up ----------------------------------------------------------------------------------


def test_up_wrote_a_private_config_pointing_at_the_server(cluster: Cluster) -> None:
    config = cluster.home / "config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f"http://127.0.0.1:{cluster.port}" in config.read_text()
    assert (cluster.home / "server.log").exists()
    assert cluster.client().ready()


def test_up_again_finds_the_running_server(cluster: Cluster) -> None:
    again = meshwork(cluster.env, "up", "-d", "--port", str(cluster.port))
    assert again.returncode == 0, again.stderr
    assert f"already running (pid {cluster.pid})" in again.stderr
    assert read_pid(cluster.home) == cluster.pid


# -- apply --------------------------------------------------------------------------------


def test_apply_creates_then_leaves_alone_then_configures(cluster: Cluster, tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(
        app / "config.yaml", configmap("app-config", {"mode": "fast"}, {"app": "web", "tier": "fe"})
    )
    write(app / "nested" / "web.yaml", SERVICE, DEPLOYMENT)

    first = cluster.run("apply", "-f", str(app))
    assert first.exit_code == 0, first.stderr
    # A Service is mesh config: when the ingress gateway's proxy is already connected, apply
    # also reports its convergence ("converged in N ms (1/1 proxies)"), tested elsewhere.
    assert sorted(line for line in first.stdout.splitlines() if not line.startswith("converged in ")) == [
        "configmap/app-config created",
        "deployment.apps/web created",
        "service/web created",
    ]

    second = cluster.run("apply", "-f", str(app))
    assert second.exit_code == 0, second.stderr
    assert sorted(second.stdout.splitlines()) == [
        "configmap/app-config unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]

    write(app / "config.yaml", configmap("app-config", {"mode": "slow"}, {"app": "web"}))
    third = cluster.run("apply", "-f", str(app))
    assert third.exit_code == 0, third.stderr
    assert "configmap/app-config configured" in third.stdout.splitlines()
    assert "service/web unchanged" in third.stdout.splitlines()
    live = json.loads(cluster.run("get", "configmap", "app-config", "-o", "json").stdout)
    assert live["data"] == {"mode": "slow"}
    assert live["metadata"]["labels"] == {"app": "web"}  # the removed label is gone


def test_apply_validates_everything_before_sending_anything(
    cluster: Cluster, tmp_path: Path
) -> None:
    write(tmp_path / "good.yaml", configmap("never-created", {"a": "b"}))
    bad = dict(DEPLOYMENT, metadata={"name": "bad"}, spec={**DEPLOYMENT["spec"], "replicaz": 3})  # type: ignore[dict-item]
    write(tmp_path / "bad.yaml", bad)
    result = cluster.run("apply", "-f", str(tmp_path))
    assert result.exit_code == 1
    assert "bad.yaml:" in result.stderr and "replicaz" in result.stderr
    missing = cluster.run("get", "configmap", "never-created")
    assert missing.exit_code == 1
    assert 'Error from server (NotFound): configmaps "never-created" not found' in missing.stderr


def test_apply_reads_stdin_and_honours_the_namespace(cluster: Cluster) -> None:
    doc = yaml.safe_dump(configmap("from-stdin", {"k": "v"}))
    result = cluster.run("apply", "-f", "-", "-n", "kube-public", input=doc)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "configmap/from-stdin created"
    got = cluster.run("get", "cm", "from-stdin", "-n", "kube-public", "-o", "name")
    assert got.stdout.strip() == "configmap/from-stdin"


# -- get ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    path = write(
        tmp_path_factory.mktemp("get") / "objs.yaml",
        configmap("alpha", {"a": "1"}, {"team": "x"}),
        configmap("beta", {"a": "1", "b": "2"}, {"team": "y"}),
        configmap("gamma", {}, namespace="kube-system"),
    )
    result = cluster.run("apply", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    return cluster


def test_get_prints_a_kubectl_table(listed: Cluster) -> None:
    result = listed.run("get", "configmaps", "-l", "team")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["alpha", "1"], ["beta", "2"]]
    assert lines[0].index("DATA") == lines[1].index("1") == len("alpha") + 3


def test_get_by_name_selector_and_formats(listed: Cluster) -> None:
    one = yaml.safe_load(listed.run("get", "cm", "alpha", "-o", "yaml").stdout)
    assert (one["kind"], one["metadata"]["name"]) == ("ConfigMap", "alpha")
    both = json.loads(listed.run("get", "configmap", "alpha", "beta", "-o", "json").stdout)
    assert both["kind"] == "List" and [i["metadata"]["name"] for i in both["items"]] == [
        "alpha",
        "beta",
    ]
    assert listed.run("get", "cm", "-l", "team=y", "-o", "name").stdout == "configmap/beta\n"
    assert listed.run("get", "configmap/alpha", "-o", "name").stdout == "configmap/alpha\n"


def test_get_all_namespaces_and_labels(listed: Cluster) -> None:
    result = listed.run("get", "cm", "-A", "--show-labels")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE", "LABELS"]
    assert any(line.split()[:2] == ["kube-system", "gamma"] for line in lines)
    assert any(
        line.split()[:2] == ["default", "alpha"] and line.endswith("team=x") for line in lines
    )


def test_get_several_kinds_prefixes_names(listed: Cluster) -> None:
    result = listed.run("get", "svc,cm", "-l", "team=x")
    assert result.exit_code == 0, result.stderr
    assert "configmap/alpha" in result.stdout


def test_get_missing_empty_and_unknown(listed: Cluster) -> None:
    missing = listed.run("get", "cm", "nope")
    assert missing.exit_code == 1 and "(NotFound)" in missing.stderr
    empty = listed.run("get", "cm", "-n", "nothing-here")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert empty.stderr.strip() == "No resources found in nothing-here namespace."
    unknown = listed.run("get", "widgets")
    assert unknown.exit_code == 1 and 'doesn\'t have a resource type "widgets"' in unknown.stderr


def test_get_watch_prints_rows_as_changes_arrive(listed: Cluster) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshwork", "get", "cm", "-w", "-l", "watched=yes"],
        env=listed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()

    def pump(stream: IO[str], q: queue.Queue[str]) -> None:
        for line in stream:
            q.put(line)
        q.put("<end of output>\n")

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        # The list came back empty: the watch is established from that list's revision.
        assert "No resources found" in err.get(timeout=LINE_TIMEOUT_S)
        doc = yaml.safe_dump(configmap("watched", {"x": "1"}, {"watched": "yes"}))
        assert listed.run("apply", "-f", "-", input=doc).exit_code == 0
        assert out.get(timeout=LINE_TIMEOUT_S).split() == ["NAME", "DATA", "AGE"]
        assert out.get(timeout=LINE_TIMEOUT_S).split()[:2] == ["watched", "1"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=PROCESS_TIMEOUT_S)
        for t in threads:
            t.join(timeout=LINE_TIMEOUT_S)


# -- describe, delete, version -----------------------------------------------------------------


def test_describe_shows_sections_and_events(listed: Cluster) -> None:
    result = listed.run("describe", "configmap", "beta")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Name:", "beta"]
    assert lines[1].split() == ["Namespace:", "default"]
    assert lines[2].split() == ["Labels:", "team=y"]
    assert "Data" in lines and "====" in lines
    assert lines[-1].startswith("Events:")
    assert lines[0].index("beta") == lines[1].index("default")
    missing = listed.run("describe", "cm", "nope")
    assert missing.exit_code == 1 and "(NotFound)" in missing.stderr


def test_delete_by_name_waits_and_reports(cluster: Cluster) -> None:
    doc = yaml.safe_dump(configmap("short-lived", {"k": "v"}))
    assert cluster.run("apply", "-f", "-", input=doc).exit_code == 0
    deleted = cluster.run("delete", "configmap", "short-lived")
    assert deleted.exit_code == 0, deleted.stderr
    assert deleted.stdout.strip() == 'configmap "short-lived" deleted'
    assert cluster.run("get", "cm", "short-lived").exit_code == 1
    again = cluster.run("delete", "cm", "short-lived")
    assert again.exit_code == 1 and "(NotFound)" in again.stderr
    assert cluster.run("delete", "cm", "short-lived", "--ignore-not-found").exit_code == 0


def test_delete_from_a_file(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", configmap("by-file-1", {}), configmap("by-file-2", {}))
    assert cluster.run("apply", "-f", str(path)).exit_code == 0
    result = cluster.run("delete", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        'configmap "by-file-1" deleted',
        'configmap "by-file-2" deleted',
    ]


def test_version_reports_both_sides(cluster: Cluster) -> None:
    result = cluster.run("version")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("Client Version: v")
    assert result.stdout.splitlines()[1].startswith("Server Version: ")
    assert result.stdout.splitlines()[2] in ("Proxy Hot Path: compiled (mypyc)", "Proxy Hot Path: pure Python")


def test_a_wrong_token_is_refused_with_a_hint(cluster: Cluster) -> None:
    result = cluster.run("get", "pods", env={"MESHWORK_TOKEN": "wrong"})
    assert result.exit_code == 1
    assert "Error from server (Unauthorized)" in result.stderr
    assert "MESHWORK_TOKEN" in result.stderr


# -- without a server -----------------------------------------------------------------------


def test_unreachable_server_says_how_to_start_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**clean_env(tmp_path), "MESHWORK_SERVER": f"http://127.0.0.1:{port}"}
    result = CliRunner().invoke(cli, ["get", "pods"], env=env)
    assert result.exit_code == 1
    assert f"cannot reach the meshwork server at http://127.0.0.1:{port}" in result.stderr
    assert "meshwork up -d" in result.stderr


def test_down_when_nothing_runs(tmp_path: Path) -> None:
    result = meshwork(clean_env(tmp_path), "down")
    assert result.returncode == 0
    assert "no meshwork server is running" in result.stdout


def test_up_with_an_invalid_manifest_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(
        tmp_path / "bad.yaml",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}},
    )
    result = meshwork(
        clean_env(home), "up", "-d", "--port", str(free_port()), "-f", str(tmp_path / "bad.yaml")
    )
    assert result.returncode == 1
    assert "bad.yaml:" in result.stderr
    assert read_pid(home) is None


def test_up_in_the_foreground_streams_the_log_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    write(tmp_path / "cm.yaml", configmap("fg", {"a": "b"}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshwork",
            "up",
            "--port",
            str(port),
            "-f",
            str(tmp_path / "cm.yaml"),
        ],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)  # end of output: fail at once instead of waiting for lines that cannot come

    def next_line() -> str:
        line = out.get(timeout=LINE_TIMEOUT_S)
        if line is None:
            assert proc.stderr is not None
            pytest.fail(f"`meshwork up` exited early ({proc.wait()}): {proc.stderr.read()}")
        return line

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    server_pid = None
    try:
        seen: list[str] = []
        while "configmap/fg created\n" not in seen:
            seen.append(next_line())
        while not any("meshwork server listening on" in line for line in seen):
            seen.append(next_line())
        server_pid = read_pid(home)
        assert server_pid is not None and process_alive(server_pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PROCESS_TIMEOUT_S) == 0
        assert proc.stderr is not None
        assert "meshwork server stopped" in proc.stderr.read()
        assert not group_alive(server_pid)
        assert read_pid(home) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server_pid is not None:
            stop_process(server_pid, timeout=5)
        reader.join(timeout=LINE_TIMEOUT_S)
