"""VirtualService ``tcp[]`` routes for traffic inside the mesh, at the node's ClusterIP proxy.

A pod's non-HTTP connection to a Service goes to its ClusterIP, served by
the agent's service proxy; a mesh VirtualService's ``tcp[]`` route (Istio's
TCP traffic shifting, without a gateway) decides which subset takes each
connection. The first test drives ``ServiceProxy`` in this process over real
sockets; the second runs a real server and agent with Istio's tcp-echo v1
and v2 and connects to the ClusterIP as a pod does (the connection leaves
from the loopback, not through the sidecar). It skips without
../shared/conformance.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshwork.agent.serviceproxy import ServiceProxy
from meshwork.model.core import Endpoints, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule
from meshwork.model.pod import Pod
from support.conformance import CONFORMANCE, absent_reason
from support.node import is_ready, running_node, wait_for
from support.tcpecho import V2, binomial_interval

pytestmark = pytest.mark.integration

TCP_ECHO = CONFORMANCE / "istio" / "tcp-echo" / "tcp-echo.yaml"
SUBSETS = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": "tcp-echo", "namespace": "default"},
           "spec": {"host": "tcp-echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                    {"name": "v2", "labels": {"version": "v2"}},
                                                    {"name": "v3", "labels": {"version": "v3"}}]}}  # fmt: skip
CONNECTIONS = 300  # per split measured end to end
FALSE_FAILURE = 1e-6  # chance that a correct 80/20 split falls outside the interval checked
V2_SHARE = 0.2


def mesh_vs(weights: dict[str, int], port: int = 9000) -> dict[str, Any]:
    """A mesh VirtualService (no ``gateways``) for tcp-echo with one weighted ``tcp`` route for ``port``."""
    route = [{"destination": {"host": "tcp-echo", "port": {"number": port}, "subset": s}, "weight": w}
             for s, w in weights.items()]  # fmt: skip
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "tcp-echo", "namespace": "default"},
            "spec": {"hosts": ["tcp-echo"], "tcp": [{"match": [{"port": port}], "route": route}]}}  # fmt: skip


def cluster_ip() -> str:
    """High in 127.96.0.0/16, where another meshwork's allocator (lowest first) does not reach."""
    return f"127.96.{random.randint(128, 254)}.{random.randint(1, 254)}"


# ---------------------------------------------------------------------------
# the proxy in this process, over real sockets
# ---------------------------------------------------------------------------


class Cache:
    def __init__(self) -> None:
        self.items: dict[str, Any] = {}


async def _name_server(ip: str, name: bytes) -> asyncio.Server:
    """Answers every connection with ``name``, ``:`` and what it was sent, after the client's half-close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(name + b":" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, ip, 0)


async def _ask(ip: str, port: int, payload: bytes = b"x") -> bytes:
    reader, writer = await asyncio.open_connection(ip, port)
    writer.write(payload)
    writer.write_eof()
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _names(answers: list[bytes]) -> Counter[str]:
    return Counter(a.split(b":", 1)[0].decode() for a in answers)


async def _in_process() -> None:
    ip, port = cluster_ip(), random.randint(20000, 29999)
    base = f"127.95.{random.randint(1, 254)}"
    pods = {"v1-a": ("v1", f"{base}.1"), "v1-b": ("v1", f"{base}.2"), "v2-a": ("v2", f"{base}.3")}
    servers = {name: await _name_server(pod_ip, name.encode()) for name, (_, pod_ip) in pods.items()}
    svcs, eps, vss, drs, pod_cache = Cache(), Cache(), Cache(), Cache(), Cache()
    svcs.items["default/tcp-echo"] = Service.model_validate({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "tcp", "port": port}]}})  # fmt: skip
    eps.items["default/tcp-echo"] = Endpoints.model_validate({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "tcp-echo", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": pod_ip, "targetRef": {"kind": "Pod", "name": name, "namespace": "default"}}],
                     "ports": [{"name": "tcp", "port": servers[name].sockets[0].getsockname()[1]}]}
                    for name, (_, pod_ip) in pods.items()]})  # fmt: skip
    for name, (version, _) in pods.items():
        pod_cache.items[f"default/{name}"] = Pod.model_validate({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "tcp-echo", "version": version}},
            "spec": {"containers": [{"name": "app", "image": "tcp-echo"}]}})  # fmt: skip
    drs.items["default/tcp-echo"] = DestinationRule.model_validate(SUBSETS)
    proxy = ServiceProxy(svcs, eps, virtual_services=vss, destination_rules=drs, pods=pod_cache,
                         rng=random.Random(7))  # fmt: skip

    def route(weights: dict[str, int] | None) -> None:
        if weights is None:
            vss.items.pop("default/tcp-echo", None)
        else:
            vss.items["default/tcp-echo"] = VirtualService.model_validate(mesh_vs(weights, port))

    try:
        await proxy.sync()
        # No VirtualService: round robin over every ready endpoint.
        assert _names([await _ask(ip, port) for _ in range(6)]) == {"v1-a": 2, "v1-b": 2, "v2-a": 2}

        route({"v1": 100})
        await proxy.sync()
        got = [await _ask(ip, port) for _ in range(6)]
        assert _names(got) == {"v1-a": 3, "v1-b": 3}, got  # the subset's endpoints, in turn

        # A connection open before the change stays with its upstream; new ones follow v2.
        spliced = proxy.connections
        reader, writer = await asyncio.open_connection(ip, port)
        writer.write(b"held")
        async with asyncio.timeout(10):
            while proxy.connections == spliced:  # its upstream is chosen and connected
                await asyncio.sleep(0.01)
        route({"v2": 100})
        await proxy.sync()
        assert _names([await _ask(ip, port) for _ in range(4)]) == {"v2-a": 4}
        writer.write_eof()
        assert (await reader.read()).split(b":") in ([b"v1-a", b"held"], [b"v1-b", b"held"])
        writer.close()

        # 80/20, a weighted choice per connection.
        route({"v1": 80, "v2": 20})
        await proxy.sync()
        names = _names([await _ask(ip, port) for _ in range(CONNECTIONS)])
        lo, hi = binomial_interval(CONNECTIONS, V2_SHARE, FALSE_FAILURE)
        assert set(names) == {"v1-a", "v1-b", "v2-a"} and lo <= names["v2-a"] <= hi, (names, lo, hi)

        # A subset with no pod: the connection is closed unanswered (Envoy: no healthy upstream).
        route({"v3": 100})
        await proxy.sync()
        assert await _ask(ip, port) == b""

        # The VirtualService goes: round robin over everyone again.
        route(None)
        await proxy.sync()
        assert proxy.table is None
        assert _names([await _ask(ip, port) for _ in range(6)]) == {"v1-a": 2, "v1-b": 2, "v2-a": 2}
    finally:
        proxy.close()
        for server in servers.values():
            server.close()


def test_the_cluster_ip_proxy_follows_mesh_tcp_routes_per_connection() -> None:
    asyncio.run(_in_process())


# ---------------------------------------------------------------------------
# end to end: a real server, its agent, tcp-echo v1 and v2
# ---------------------------------------------------------------------------


def _nc(ip: str, port: int) -> str:
    """``echo line | nc IP PORT`` from a process that does not use the sidecar (as a pod's raw TCP)."""
    try:
        with socket.create_connection((ip, port), timeout=10) as s:
            s.sendall(b"line\n")
            s.shutdown(socket.SHUT_WR)
            return s.makefile("rb").read().decode()
    except OSError as exc:
        return f"error: {exc}"


def _prefixes(ip: str, n: int) -> Counter[str]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _nc(ip, 9000), range(n)))
    return Counter(a.split(" ", 1)[0] if a.endswith(" line\n") else a for a in answers)


@pytest.mark.skipif(not TCP_ECHO.is_file(), reason=absent_reason(TCP_ECHO))
def test_tcp_traffic_shifting_inside_the_mesh_through_the_cluster_ip(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(TCP_ECHO.read_text()) if isinstance(d, dict)]
    svc = next(d for d in docs if d["kind"] == "Service")
    ip = svc["spec"]["clusterIP"] = cluster_ip()
    with running_node(tmp_path) as node:
        node.apply("/api/v1/namespaces/default/services", svc)
        node.apply("/apis/apps/v1/namespaces/default/deployments", next(d for d in docs if d["kind"] == "Deployment"))
        done = node.cli("apply", "-f", "-", stdin=V2)
        assert done.returncode == 0, done.stderr
        node.apply("/apis/networking.istio.io/v1/namespaces/default/destinationrules", SUBSETS)

        def both_ready() -> bool:
            ep = node.get("/api/v1/namespaces/default/endpoints/tcp-echo") or {}
            ready = [a for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
            return len(ready) == 2 and len([p for p in node.pods() if is_ready(p)]) == 2

        wait_for(both_ready, 60, "tcp-echo v1 and v2 ready")
        wait_for(lambda: set(_prefixes(ip, 8)) == {"hello", "two"}, 30, "round robin over v1 and v2")

        # All to v1 (the sample's v1 prefixes "hello", v2 "two").
        vss = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
        node.apply(vss, mesh_vs({"v1": 100}))
        wait_for(lambda: _prefixes(ip, 20) == {"hello": 20}, 30, "every connection to v1")
        assert _prefixes(ip, 40) == {"hello": 40}

        # 80/20, chosen per connection.
        reply = node.http.put(f"{vss}/tcp-echo", {**mesh_vs({"v1": 80, "v2": 20}),
                                                  "metadata": node.get(f"{vss}/tcp-echo")["metadata"]})  # type: ignore[index]  # fmt: skip
        assert reply.status == 200, reply.body
        wait_for(lambda: "two" in _prefixes(ip, 20), 30, "a first connection answered by v2")
        answers = _prefixes(ip, CONNECTIONS)
        lo, hi = binomial_interval(CONNECTIONS, V2_SHARE, FALSE_FAILURE)
        assert set(answers) == {"hello", "two"} and lo <= answers["two"] <= hi, (answers, lo, hi)

        # No VirtualService: round robin over both again (alternating, so 10 of each in 20).
        assert node.http.delete(f"{vss}/tcp-echo").status == 200
        wait_for(lambda: _prefixes(ip, 20) == {"hello": 10, "two": 10}, 30, "round robin over v1 and v2 again")
