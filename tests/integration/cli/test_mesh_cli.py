"""``meshwork apply`` convergence, ``proxy-status`` and ``proxy-config`` against a real server.

The commands run in-process through click's runner; the server is a real
subprocess and the proxies are ``support.fakeproxy.FakeProxy`` clients that
acknowledge (or refuse) the snapshots they are streamed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from meshwork.cli import cli
from support.fakeproxy import API, FakeProxy, sidecar_id
from support.server import Http, ServerProcess, running_server

pytestmark = pytest.mark.integration

CONVERGED = re.compile(r"^converged in \d+ ms \((\d+)/(\d+) proxies\)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("mesh-cli")) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Http]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def proxies(server: ServerProcess, api: Http) -> Iterator[Callable[..., FakeProxy]]:
    started: list[FakeProxy] = []

    def connect(ident: str, **kw: Any) -> FakeProxy:
        proxy = FakeProxy(server.host, server.port, server.token, ident, **kw)
        started.append(proxy)
        return proxy.start()

    yield connect
    for proxy in started:
        proxy.close()
    # The next test starts with no proxy connected.
    eventually(lambda: api.get(f"{API}/proxies").json["items"] == [])


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


def run(server: ServerProcess, *args: str) -> Result:
    env = {"MESHWORK_HOME": str(server.data_dir), "MESHWORK_SERVER": server.url, "MESHWORK_TOKEN": server.token}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def manifest(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def vs(name: str, ns: str, host: str, subset: str | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    if subset:
        dest["subset"] = subset
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [host], "http": [{"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": dest}]}]}}


def configmap(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"a": "b"}}


def test_apply_prints_nothing_extra_without_proxies(server: ServerProcess, tmp_path: Path) -> None:
    result = run(server, "apply", "-f", manifest(tmp_path / "vs.yaml", vs("quiet", "cli-quiet", "web")))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["virtualservice.networking.istio.io/quiet created"]


def test_apply_waits_for_every_proxy_and_says_how_long_it_took(
    server: ServerProcess, proxies: Callable[..., FakeProxy], tmp_path: Path
) -> None:
    ns = "cli-conv"
    a, b = proxies(sidecar_id("a", ns)), proxies(sidecar_id("b", "cli-conv-other"))
    a.next(), b.next()
    result = run(server, "apply", "-f", manifest(tmp_path / "vs.yaml", vs("reviews", ns, "reviews")))
    assert result.exit_code == 0, result.output
    found = CONVERGED.search(result.stdout)
    assert found and found.groups() == ("2", "2"), result.output
    # Each proxy had acknowledged the snapshot carrying the new VirtualService when apply returned.
    for proxy in (a, b):
        snap = proxy.next()
        assert "reviews" in {v["metadata"]["name"] for v in snap["virtualServices"]}

    # Kinds that no proxy sees are not waited for; neither is an apply with --no-wait.
    other = run(server, "apply", "-f", manifest(tmp_path / "cm.yaml", configmap("settings", ns)))
    assert other.exit_code == 0 and "converged" not in other.stdout
    skipped = run(server, "apply", "--no-wait", "-f", manifest(tmp_path / "vs2.yaml", vs("ratings", ns, "ratings")))
    assert skipped.exit_code == 0 and "converged" not in skipped.stdout


def test_a_nack_fails_apply_and_shows_in_proxy_status(
    server: ServerProcess, proxies: Callable[..., FakeProxy], tmp_path: Path
) -> None:
    ns = "cli-nack"

    def decide(snap: dict[str, Any]) -> str | None:
        bad = [v for v in snap["virtualServices"] if v["metadata"]["name"] == "broken"]
        return "subset v9 of reviews is not defined" if bad else None

    good = proxies(sidecar_id("good", ns))
    picky = proxies(sidecar_id("picky", ns), decide=decide)
    good.next(), picky.next()
    result = run(server, "apply", "-f", manifest(tmp_path / "bad.yaml", vs("broken", ns, "reviews", subset="v9")))
    assert result.exit_code == 1, result.output
    assert "not converged" in result.stderr and "(1/2 proxies)" in result.stderr
    assert f"picky.{ns} NACKed version" in result.stderr
    assert "subset v9 of reviews is not defined" in result.stderr

    status = run(server, "proxy-status")
    assert status.exit_code == 0, status.output
    header, *rows = status.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "CLUSTER", "STATUS"]
    (picky_row,) = [r for r in rows if r.startswith(f"picky.{ns}")]
    assert "STALE" in picky_row and "subset v9 of reviews is not defined" in picky_row
    (good_row,) = [r for r in rows if r.startswith(f"good.{ns}")]
    assert "SYNCED" in good_row


def test_proxy_config_shows_routes_clusters_endpoints_and_listeners(
    server: ServerProcess, api: Http, tmp_path: Path
) -> None:
    ns = "cli-pc"
    docs = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns, "labels": {"app": "client"}},
         "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": ns},
         "spec": {"ports": [{"name": "http", "port": 9080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews", "namespace": ns},
         "subsets": [{"addresses": [{"ip": "127.1.0.77"}], "ports": [{"name": "http", "port": 9080}]}]},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": ns},
         "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}},
        vs("reviews", ns, "reviews", subset="v1"),
    ]
    applied = run(server, "apply", "-f", manifest(tmp_path / "app.yaml", *docs))
    assert applied.exit_code == 0, applied.output
    fqdn = f"reviews.{ns}.svc.cluster.local"

    routes = run(server, "proxy-config", "routes", "client", "-n", ns)
    assert routes.exit_code == 0, routes.output
    (row,) = [r for r in routes.stdout.splitlines() if "/api*" in r and r.split()[1] == f"{fqdn}:9080"]
    assert f"outbound|9080|v1|{fqdn}" in row and row.split()[-1] == f"reviews.{ns}"

    clusters = run(server, "proxy-config", "clusters", "client", "-n", ns, "-o", "json")
    assert clusters.exit_code == 0, clusters.output
    rows = yaml.safe_load(clusters.stdout)
    assert {(r["fqdn"], r["port"], r["subset"]) for r in rows} >= {(fqdn, "9080", "-"), (fqdn, "9080", "v1")}

    endpoints = run(server, "proxy-config", "endpoints", "client", "-n", ns)
    assert any("127.1.0.77:9080" in r and f"outbound|9080||{fqdn}" in r for r in endpoints.stdout.splitlines())

    listeners = run(server, "proxy-config", "listeners", "client", "-n", ns)
    assert listeners.exit_code == 0 and "15001" in listeners.stdout and "15006" in listeners.stdout

    missing = run(server, "proxy-config", "routes", "nobody", "-n", ns)
    assert missing.exit_code == 1 and "NotFound" in missing.stderr
