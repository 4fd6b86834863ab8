"""Service ClusterIPs served by the node agent's service proxy (kube-proxy's job).

The first tests drive ``ServiceProxy`` in this process over real sockets, with
the informer caches given as plain dicts; the others run a real server and
agent with real pods and reach them through the ClusterIP.

Every Service here asks for a ClusterIP of its own, picked at random high in
127.96.0.0/16, so that another meshwork running on this machine (whose
allocator hands out the lowest free addresses) never holds the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import itertools
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshwork.agent.serviceproxy import ServiceProxy, backends, listeners_wanted
from meshwork.model.core import Endpoints, Service
from support.conformance import CONFORMANCE, absent_reason
from support.node import Node, http_container, is_ready, running_node, wait_for

pytestmark = pytest.mark.integration

SERVICES = "/api/v1/namespaces/default/services"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
TCP_ECHO = CONFORMANCE / "istio" / "tcp-echo" / "tcp-echo.yaml"


def cluster_ip() -> str:
    return f"127.96.{random.randint(128, 254)}.{random.randint(1, 254)}"


def service(
    name: str, ip: str, *ports: dict[str, Any], selector: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "selector": selector or {"app": name}, "ports": list(ports)}}  # fmt: skip


def endpoints(
    name: str, ips: list[str], *ports: dict[str, Any], not_ready: Sequence[str] = ()
) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                         "ports": list(ports)}]}  # fmt: skip


def refused(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect((ip, port))
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:  # accepted, then reset before connect() returned
            return False
    return False


def closed_at_once(ip: str, port: int) -> bool:
    """The connection is accepted, then closed (reset or EOF) before any byte comes back."""
    try:  # a refused connect raises: the listener must still be there
        with socket.create_connection((ip, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def get_body(ip: str, port: int) -> str:
    """One HTTP request on a new connection, no proxy whatever the environment says."""
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# what a Service port leads to (pure)
# ---------------------------------------------------------------------------


def test_backends_match_the_port_by_name_and_skip_not_ready_addresses() -> None:
    svc = Service.model_validate(service("web", "127.96.200.1", {"name": "http", "port": 80, "targetPort": 8080},
                                         {"name": "admin", "port": 81, "targetPort": 9090}))  # fmt: skip
    eps = Endpoints.model_validate(endpoints("web", ["127.1.0.2", "127.1.0.3"], {"name": "http", "port": 8080},
                                             {"name": "admin", "port": 9090}, not_ready=["127.1.0.4"]))  # fmt: skip
    ports = svc.spec.ports or []
    assert backends(ports[0], eps) == (("127.1.0.2", 8080), ("127.1.0.3", 8080))
    assert backends(ports[1], eps) == (("127.1.0.2", 9090), ("127.1.0.3", 9090))
    assert backends(ports[0], None) == ()


def test_only_services_with_a_cluster_ip_and_tcp_ports_are_listened_for() -> None:
    svcs = {
        "default/web": Service.model_validate(service("web", "127.96.200.1", {"port": 80})),
        "default/headless": Service.model_validate(service("headless", "None", {"port": 80})),
        "default/dns": Service.model_validate(service("dns", "127.96.200.2", {"name": "a", "port": 53, "protocol": "UDP"},
                                                      {"name": "b", "port": 53})),
        "default/ext": Service.model_validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                                               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    }  # fmt: skip
    eps = {"default/web": Endpoints.model_validate(endpoints("web", ["127.1.0.2"], {"port": 8080}))}
    assert listeners_wanted(svcs, eps) == {
        ("127.96.200.1", 80): ("default/web", (("127.1.0.2", 8080),)),
        ("127.96.200.2", 53): ("default/dns", ()),
    }


# ---------------------------------------------------------------------------
# the proxy in this process, over real sockets
# ---------------------------------------------------------------------------


class Cache:
    def __init__(self) -> None:
        self.items: dict[str, Any] = {}


async def _name_server(name: bytes) -> asyncio.Server:
    """Answers every connection with ``name`` and whatever it was sent, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close
        writer.write(name + b":" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _ask(ip: str, port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(ip, port)
    writer.write(payload)
    writer.write_eof()
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _in_process() -> None:
    ip, port = cluster_ip(), random.randint(20000, 29999)
    a, b = await _name_server(b"a"), await _name_server(b"b")
    port_a, port_b = (s.sockets[0].getsockname()[1] for s in (a, b))
    dead = _free_port()  # nothing listens here: its connect is refused
    svcs, eps = Cache(), Cache()
    svcs.items["default/web"] = Service.model_validate(
        service("web", ip, {"port": port, "targetPort": 1})
    )
    eps.items["default/web"] = Endpoints.model_validate({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": p}]} for p in (port_a, dead, port_b)],
    })  # fmt: skip
    proxy = ServiceProxy(svcs, eps)
    loop = asyncio.get_running_loop()
    try:
        await proxy.sync()
        # Round robin over a, dead, b: the refused endpoint passes its turn to the next one.
        got = [await _ask(ip, port, f"{i}".encode()) for i in range(6)]
        assert got == [b"a:0", b"b:1", b"b:2", b"a:3", b"b:4", b"b:5"]
        # A large payload passes whole both ways (backpressure, half-close).
        big = os.urandom(3 * 1024 * 1024)
        assert await _ask(ip, port, big) in (b"a:" + big, b"b:" + big)

        # No ready endpoint: the connection is accepted and closed at once.
        eps.items["default/web"] = Endpoints.model_validate(endpoints("web", [], {"port": port_a}))
        await proxy.sync()
        assert await _ask(ip, port, b"x") == b""
        # The endpoint list is updated in place: the same listener serves the new one.
        eps.items["default/web"] = Endpoints.model_validate(
            endpoints("web", ["127.0.0.1"], {"port": port_b})
        )
        await proxy.sync()
        assert await _ask(ip, port, b"y") == b"b:y"

        # A second proxy (another agent on this machine) cannot bind the ClusterIP and carries on.
        other = ServiceProxy(svcs, eps)
        await other.sync()
        assert other.listeners[(ip, port)].server is None
        other.close()

        # The Service goes: so does its listener.
        del svcs.items["default/web"]
        await proxy.sync()
        assert not proxy.listeners
        assert await loop.run_in_executor(None, refused, ip, port)
    finally:
        proxy.close()
        a.close()
        b.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_proxy_round_robins_skips_refused_endpoints_and_follows_the_informers(
    loop: str,
) -> None:
    # The agent runs on uvloop when it is installed; the two loops differ in when reading starts.
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(_in_process())
    else:
        asyncio.run(_in_process())


# ---------------------------------------------------------------------------
# end to end: a real server, its agent and pods
# ---------------------------------------------------------------------------


def deployment(name: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}  # fmt: skip


def ready_ips(node: Node, name: str) -> list[str]:
    ep = node.get(f"/api/v1/namespaces/default/endpoints/{name}") or {}
    return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]


def meshwork(node: Node, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWORK_SERVER": node.server.url, "MESHWORK_TOKEN": node.server.token}
    return subprocess.run([sys.executable, "-m", "meshwork", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


# Run inside the client pod by `meshwork exec`: GET / from the Service its env names.
CLIENT_GET = (
    "import http.client, os\n"
    "c = http.client.HTTPConnection(os.environ['WEB_SERVICE_HOST'], int(os.environ['WEB_SERVICE_PORT']), timeout=10)\n"
    "c.request('GET', '/'); print(c.getresponse().read().decode())\n"
)


@contextlib.contextmanager
def node_with_web(tmp_path: Path) -> Iterator[tuple[Node, str, int]]:
    ip, port = cluster_ip(), 8000
    with running_node(tmp_path) as node:
        node.apply(SERVICES, service("web", ip, {"port": port, "targetPort": 8080}))
        node.apply(DEPLOYMENTS, deployment("web", 2, http_container()))
        wait_for(lambda: len(ready_ips(node, "web")) == 2, 60, "two ready web endpoints")
        yield node, ip, port


def test_a_cluster_ip_reaches_every_ready_pod_from_the_host_and_from_a_pod(tmp_path: Path) -> None:
    with node_with_web(tmp_path) as (node, ip, port):
        names = {p["metadata"]["name"] for p in node.pods(selector="app=web")}

        # From this process: round robin over both pods, each connection to the next.
        def both() -> list[str] | None:
            try:
                bodies = [get_body(ip, port) for _ in range(4)]
            except OSError:  # not listening yet, or no endpoint known yet
                return None
            return bodies if set(bodies) == names else None

        bodies = wait_for(both, 30, "both pods through the ClusterIP")
        assert all(x != y for x, y in itertools.pairwise(bodies)), bodies

        # From a pod, through the service variables the agent gave it.
        node.apply(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
                          "spec": {"containers": [{"name": "app", "image": "busybox",
                                                   "command": ["sleep", "infinity"]}]}})  # fmt: skip
        wait_for(lambda: (p := node.pod("client")) and is_ready(p), 30, "the client pod running")
        env = meshwork(
            node, "exec", "client", "--", "sh", "-c", 'echo "$WEB_SERVICE_HOST:$WEB_SERVICE_PORT"'
        )
        assert env.stdout.strip() == f"{ip}:{port}", env.stderr
        seen = set()
        for _ in range(4):
            ran = meshwork(
                node, "exec", "client", "--", "sh", "-c", f'{sys.executable} -c "$0"', CLIENT_GET
            )
            assert ran.returncode == 0, ran.stderr
            seen.add(ran.stdout.strip())
        assert seen == names

        # No ready endpoint: the ClusterIP still accepts, and closes at once.
        reply = node.http.patch(f"{DEPLOYMENTS}/web", {"spec": {"replicas": 0}})
        assert reply.status == 200, reply.body
        wait_for(lambda: not ready_ips(node, "web"), 60, "no ready web endpoint")
        wait_for(
            lambda: closed_at_once(ip, port), 10, "a connection to the ClusterIP closed at once"
        )
        assert not refused(ip, port)  # the listener stays while the Service does

        # The Service goes: the address is free again.
        assert node.http.delete(f"{SERVICES}/web").status == 200
        wait_for(lambda: refused(ip, port), 10, "the ClusterIP listener gone")
        with socket.socket() as s:  # SO_REUSEADDR passes over TIME_WAIT, never over a listener
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen()


@pytest.mark.skipif(not TCP_ECHO.is_file(), reason=absent_reason())
def test_istio_tcp_echo_sample_through_its_cluster_ip(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(TCP_ECHO.read_text()) if isinstance(d, dict)]
    svc = next(d for d in docs if d["kind"] == "Service")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    ip = svc["spec"]["clusterIP"] = cluster_ip()
    with running_node(tmp_path) as node:
        node.apply(SERVICES, svc)
        node.apply(DEPLOYMENTS, dep)
        wait_for(lambda: len(ready_ips(node, "tcp-echo")) == 1, 60, "a ready tcp-echo endpoint")
        for port in (9000, 9001):  # the Service's two ports; 9002 is left out of it on purpose

            def echo(port: int = port) -> bytes | None:
                try:
                    with socket.create_connection((ip, port), timeout=5) as s:
                        s.sendall(b"world\n")
                        s.shutdown(socket.SHUT_WR)
                        return s.makefile("rb").read()
                except OSError as exc:
                    assert exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET), exc
                    return None

            assert wait_for(echo, 30, f"tcp-echo on {ip}:{port}") == b"hello world\n"
        assert refused(ip, 9002)
