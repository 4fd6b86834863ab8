"""The node agent: registers its Node, heartbeats, and runs the pods bound to it.

It keeps a ``PodWorker`` per pod bound to the node (a list, then a watch
filtered on ``spec.nodeName``), caches the ConfigMaps, Secrets and Services
that container environments and volumes read, hands out pod IPs from the
node's ``podCIDR``, and on start re-adopts the containers a previous agent
left running. On SIGTERM it stops every pod gracefully and exits; when it
dies (or its parent server dies) the pods keep running for the next agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshwork.agent import runtime
from meshwork.agent.api import (
    CONFIGMAPS,
    DESTINATIONRULES,
    ENDPOINTS,
    EVENTS,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    VIRTUALSERVICES,
    AgentApi,
)
from meshwork.agent.binding import build_shim, preload, python_path, rewrite_enabled
from meshwork.agent.images import Catalogue
from meshwork.agent.serviceproxy import ServiceProxy
from meshwork.agent.worker import PodWorker, Run
from meshwork.client import Client
from meshwork.core.inject import APP_IP_ENV, OUTBOUND_PORT, SIDECAR_NAME
from meshwork.core.restart import rfc3339
from meshwork.errors import Gone, MeshworkError
from meshwork.model.base import Quantity
from meshwork.model.core import ConfigMap, Endpoints, Secret, Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule
from meshwork.model.kinds import KindInfo
from meshwork.model.pod import Container, Pod

log = logging.getLogger("meshwork.agent")

HEARTBEAT_S = 10.0  # kubelet nodeStatusUpdateFrequency (MESHWORK_NODE_STATUS_UPDATE_FREQUENCY overrides)
DEFAULT_POD_CIDR = "127.1.0.0/16"
AGENT_VERSION = "meshwork-agent"
RETRY_S = 1.0
LISTEN_CACHE_S = 1.0


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


class Informer:
    """A list+watch cache of one kind, all namespaces, as typed models."""

    def __init__(self, api: AgentApi, info: KindInfo, model: type[Any]) -> None:
        self.api, self.info, self.model = api, info, model
        self.items: dict[str, Any] = {}  # ns/name -> model
        self.synced = asyncio.Event()
        self.changes = 0  # grows with every list and event, so readers can tell nothing changed

    def in_namespace(self, ns: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        prefix = ns + "/"
        for key, obj in self.items.items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = obj
        return out

    async def run(self) -> None:
        while True:
            try:
                listed = await self.api.list(self.info)
                fresh: dict[str, Any] = {}
                for raw in listed.get("items", []):
                    meta = raw["metadata"]
                    fresh[f"{meta.get('namespace', '')}/{meta['name']}"] = self.model.model_validate(raw)
                self.items = fresh
                self.changes += 1
                self.synced.set()
                rv = listed.get("metadata", {}).get("resourceVersion")
                async for event in self.api.watch(self.info, resource_version=rv):
                    raw = event["object"]
                    meta = raw["metadata"]
                    key = f"{meta.get('namespace', '')}/{meta['name']}"
                    if event["type"] == "DELETED":
                        self.items.pop(key, None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.items[key] = self.model.model_validate(raw)
                    self.changes += 1
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except Exception as exc:
                log.debug("%s informer: %s; retrying", self.info.resource, exc)
                await asyncio.sleep(RETRY_S)


class Sources:
    """ConfigMaps, Secrets and Services by namespace, for environments and volumes."""

    def __init__(self, api: AgentApi) -> None:
        self.cms = Informer(api, CONFIGMAPS, ConfigMap)
        self.secs = Informer(api, SECRETS, Secret)
        self.svcs = Informer(api, SERVICES, Service)
        self.eps = Informer(api, ENDPOINTS, Endpoints)
        # For the service proxy's mesh tcp routes (all pods: their labels pick DestinationRule subsets).
        self.vss = Informer(api, VIRTUALSERVICES, VirtualService)
        self.drs = Informer(api, DESTINATIONRULES, DestinationRule)
        self.all_pods = Informer(api, PODS, Pod)

    def config_maps(self, ns: str) -> dict[str, ConfigMap]:
        return self.cms.in_namespace(ns)

    def secrets(self, ns: str) -> dict[str, Secret]:
        return self.secs.in_namespace(ns)

    def services(self, ns: str) -> list[Service]:
        out = list(self.svcs.in_namespace(ns).values())
        if ns != "default":
            out += [s for n, s in self.svcs.in_namespace("default").items() if n == "kubernetes"]
        return out

    def has_ready_endpoint(self, ns: str, name: str) -> bool:
        ep: Endpoints | None = self.eps.items.get(f"{ns}/{name}")
        return ep is not None and any(s.addresses for s in ep.subsets or ())

    def lists_address(self, ns: str, ip: str) -> bool:
        """Whether any Endpoints of ``ns`` still lists ``ip`` as a ready address."""
        return any(a.ip == ip for ep in self.eps.in_namespace(ns).values()
                   for s in ep.subsets or () for a in s.addresses or ())  # fmt: skip

    def informers(self) -> list[Informer]:
        return [self.cms, self.secs, self.svcs, self.eps]


class Agent:
    def __init__(
        self,
        client: Client,
        *,
        name: str,
        data_dir: Path,
        pod_cidr: str | None = None,
        host_ip: str = "127.0.0.1",
        parent_pid: int | None = None,
        max_pods: int = 250,
        port: int = 0,
    ) -> None:
        self.api = AgentApi(client)
        self.name = name
        self.dir = data_dir / "nodes" / name
        self.pods_dir = self.dir / "pods"
        self.logs_dir = self.dir / "logs"
        self.token_file = self.dir / "proxy-token"
        self.catalogue = Catalogue(data_dir)
        self.sources = Sources(self.api)
        self.requested_cidr = pod_cidr
        self.network = ipaddress.ip_network(pod_cidr or DEFAULT_POD_CIDR)
        self.host_ip = host_ip
        self.parent_pid = parent_pid
        self.max_pods = max_pods
        self.workers: dict[str, PodWorker] = {}
        self.ips: dict[str, str] = {}  # pod uid -> ip
        self._listen_cache: tuple[float, set[str], set[int]] | None = None
        self._next_ip = 1
        cpus = os.cpu_count() or 1
        self.capacity: dict[str, Quantity] = {
            "cpu": str(cpus), "memory": f"{memory_bytes() // 1024}Ki", "pods": str(max_pods),
        }  # fmt: skip
        self.allocatable: dict[str, Quantity] = dict(self.capacity)
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._event_tasks: set[asyncio.Task[None]] = set()
        from meshwork.agent.resources import Resources

        self.resources = Resources(self.dir)
        from meshwork.agent.standby import StandbyPool

        self.standby = StandbyPool(self.dir / "standby")  # a warm spare proxy for the next meshed pod
        from meshwork.agent.serve import AgentEndpoint

        self.endpoint = AgentEndpoint(self, client.token or "")
        self.port = port
        self.lib_dir = data_dir / "lib"
        self.bind_shim: Path | None = None  # built on start (binding.build_shim); None: apps bind as they ask

    # -- pod IPs -----------------------------------------------------------------

    def allocate_ip(self, uid: str) -> str:
        if uid in self.ips:
            return self.ips[uid]
        # Another meshwork (a second data dir on this machine) may hand out the same range:
        # an address someone already listens on is skipped.
        used = set(self.ips.values()) | self._listening()[0]
        hosts = self.network.num_addresses - 2
        for _ in range(hosts):
            candidate = str(self.network.network_address + self._next_ip)
            self._next_ip = self._next_ip % hosts + 1
            if candidate not in used:
                self.ips[uid] = candidate
                return candidate
        raise MeshworkError(f"node {self.name}: no free pod IP left in {self.network}")

    def _listening(self, max_age: float = LISTEN_CACHE_S) -> tuple[set[str], set[int]]:
        """(addresses with a listener, ports listened on at 0.0.0.0), read at most once a second.

        Reading /proc/net/tcp costs milliseconds on a busy machine; a burst of
        pod starts shares one read.
        """
        from meshwork.agent.ports import busy_addresses, wildcard_listeners

        now = time.monotonic()
        if self._listen_cache is None or now - self._listen_cache[0] > max_age:
            self._listen_cache = (now, busy_addresses(), set(wildcard_listeners()))
        return self._listen_cache[1], self._listen_cache[2]

    def wildcard_ports(self, max_age: float = LISTEN_CACHE_S) -> set[int]:
        return self._listening(max_age)[1]

    def claim_ip(self, ip: str, uid: str) -> None:
        self.ips[uid] = ip

    def release_ip(self, uid: str) -> None:
        self.ips.pop(uid, None)

    # -- what workers ask of the node ---------------------------------------------------

    def pod_env(self, worker: PodWorker, container: Container) -> dict[str, str]:
        """The DESIGN.md networking variables; in a meshed pod, the proxy variables too.

        The app of a pod with the mesh proxy sends its outbound HTTP through it
        (``HTTP_PROXY=http://$POD_IP:15001``), so ``http://reviews:9080/`` works
        from any proxy-aware client; the proxy itself learns how to reach the
        control plane. Inbound capture: the app's ``POD_IP`` is its own address
        (``core.inject.app_ip``) and the proxy, which keeps the pod IP and takes
        the app's ports on it, learns that address as ``MESHWORK_APP_IP``.
        """
        ip = worker.ip or ""
        inner = worker.app_ip
        env = {"POD_IP": worker.address_of(container.name), "HOSTNAME": worker.name}
        env["PATH"] = python_path(os.environ.get("PATH", os.defpath), os.path.dirname(sys.executable))
        if container.name == SIDECAR_NAME:
            env.update({"MESHWORK_SERVER": self.api.client.server, "MESHWORK_TOKEN_FILE": str(self.token_file)})
            if inner is not None:
                env[APP_IP_ENV] = inner
            # Node-wide tracing: OpenTelemetry's standard variables, from the agent's own environment.
            env.update({k: v for k, v in os.environ.items() if k.startswith("OTEL_EXPORTER_OTLP_")})
        if worker.token_dir is not None and container.name != SIDECAR_NAME:
            from meshwork.agent.satoken import ENV_DIR

            env.update({ENV_DIR: str(worker.token_dir), "MESHWORK_SERVER": self.api.client.server})
        if container.name != SIDECAR_NAME and worker.meshed:
            proxy = f"http://{ip}:{OUTBOUND_PORT}"
            no_proxy = ",".join(["localhost", "127.0.0.1", "::1", ip, *([inner] if inner else [])])
            env.update({"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": no_proxy, "no_proxy": no_proxy})
        return env

    def bind_rewrite(self, worker: PodWorker, container: Container, env: dict[str, str]) -> None:
        """Preload the bind shim into an app container's ``env``: its binds on 0.0.0.0 (and
        dual-stack ``::``) land on its ``$POD_IP``. Not the sidecar's, nor a pod's that opts out
        with ``meshwork.io/bind-rewrite: "false"``."""
        address = worker.address_of(container.name)
        if (self.bind_shim is None or container.name == SIDECAR_NAME or not address
                or not rewrite_enabled(worker.pod.metadata.annotations)):  # fmt: skip
            return
        preload(env, self.bind_shim, address)

    async def _build_bind_shim(self) -> None:
        built = await asyncio.to_thread(build_shim, self.lib_dir)
        self.bind_shim = built.path
        if built.path is None:
            log.warning("node %s: apps run without the bind shim (%s): an app that listens on 0.0.0.0 takes "
                        "its port on every pod IP of this machine", self.name, built.problem)  # fmt: skip

    def open_logs(self, directory: Path, restart: int, out: Path, err: Path) -> Any:
        return self.resources.open_logs(directory, restart, out, err)

    def close_logs(self, logs: Any) -> None:
        self.resources.close_logs(logs)

    def limits_for(self, key: str, container: Container) -> list[str]:
        return self.resources.limits_for(key, container)

    def drop_limits(self, key: str) -> None:
        self.resources.drop_limits(key)

    def oom_killed(self, pgid: int, container: Container, key: str) -> bool:
        return self.resources.oom_killed(pgid, key)

    def watch_group(self, pgid: int, container: Container, worker: PodWorker, run: Run) -> None:
        self.resources.watch_group(pgid, container, worker, run)

    def unwatch_group(self, pgid: int) -> None:
        self.resources.unwatch_group(pgid)

    def wildcard_holder(self, port: int) -> str | None:
        """``namespace/name`` of the pod on this node listening on 0.0.0.0:``port``, if any."""
        from meshwork.agent.ports import wildcard_ports_of

        for worker in self.workers.values():
            for run in worker.runs.values():
                if run.running and run.proc is not None and wildcard_ports_of(run.proc.pid, [port]):
                    return f"{worker.ns}/{worker.name}"
        return None

    def record_event(self, pod: Pod, type_: str, reason: str, message: str) -> None:
        meta = pod.metadata
        now = rfc3339(time.time())
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.name}.{os.urandom(8).hex()}", "namespace": meta.namespace},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": meta.name,
                               "namespace": meta.namespace, "uid": meta.uid},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.name,
        }  # fmt: skip

        async def send() -> None:
            with contextlib.suppress(Exception):
                await self.api.create(EVENTS, meta.namespace, body)

        task = asyncio.create_task(send())
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    # -- the node object -------------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        now = rfc3339(time.time())
        return {
            "capacity": {k: str(v) for k, v in self.capacity.items()},
            "allocatable": {k: str(v) for k, v in self.allocatable.items()},
            "addresses": [{"type": "InternalIP", "address": self.host_ip},
                          {"type": "Hostname", "address": socket.gethostname()}],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "meshwork agent is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": self._ready_since,
            }],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.endpoint.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                "osImage": "", "containerRuntimeVersion": "meshwork-process://1",
                "kubeletVersion": AGENT_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": os.uname().machine,
            },
        }  # fmt: skip

    async def register(self) -> None:
        self._ready_since = rfc3339(time.time())
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {
                "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    os.uname().machine, os.uname().machine)}},
            "spec": {},
        }  # fmt: skip
        if self.requested_cidr:
            body["spec"] = {"podCIDR": self.requested_cidr, "podCIDRs": [self.requested_cidr]}
        while not self.stop.is_set():
            try:
                node = await self.api.get(NODES, None, self.name)
                if node is None:
                    node = await self.api.create(NODES, None, body) or await self.api.get(NODES, None, self.name)
                assert node is not None
                cidr = (node.get("spec") or {}).get("podCIDR")
                if cidr:
                    self.network = ipaddress.ip_network(cidr)
                await self.api.patch_status(NODES, None, self.name, {"status": self._node_status()})
                return
            except Exception as exc:
                log.warning("node %s: cannot register yet (%s); retrying", self.name, exc)
                await asyncio.sleep(RETRY_S)

    async def _heartbeat(self) -> None:
        period = float(os.environ.get("MESHWORK_NODE_STATUS_UPDATE_FREQUENCY") or HEARTBEAT_S)
        while True:
            await asyncio.sleep(period)
            try:
                await self.api.patch_status(NODES, None, self.name, {"status": self._node_status()})
            except Exception as exc:
                log.warning("node %s: heartbeat failed: %s", self.name, exc)

    # -- pods ---------------------------------------------------------------------------------

    def _on_pod(self, raw: dict[str, Any], deleted: bool = False) -> None:
        uid = raw["metadata"].get("uid", "")
        worker = self.workers.get(uid)
        if deleted:
            if worker is not None:
                worker.deleted()
            return
        pod = Pod.model_validate(raw)
        if worker is None:
            if pod.status is not None and pod.status.phase in ("Succeeded", "Failed") and not os.path.isdir(
                    self.pods_dir / uid):  # fmt: skip
                if pod.metadata.deletion_timestamp:
                    self._spawn(self.api.confirm_pod_deleted(pod.metadata.namespace or "", pod.metadata.name or "",
                                                             uid))  # fmt: skip
                return  # finished before this agent started: nothing to run
            log.debug("node %s: pod %s/%s arrived", self.name, pod.metadata.namespace, pod.metadata.name)
            worker = PodWorker(self, pod)
            if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                worker.phase = pod.status.phase
            self.workers[uid] = worker
            worker.start()
            self._spawn(self._reap(worker))
        else:
            worker.update(pod)

    async def _reap(self, worker: PodWorker) -> None:
        await worker.done.wait()
        if not worker.shutdown:
            self.workers.pop(worker.uid, None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        first = True
        while True:
            try:
                listed = await self.api.list(PODS, field_selector=selector)
                seen = set()
                for raw in listed.get("items", []):
                    seen.add(raw["metadata"].get("uid", ""))
                    self._on_pod(raw)
                for uid, worker in list(self.workers.items()):
                    if uid not in seen:
                        worker.deleted()
                if first:
                    self._sweep_orphans(seen)
                    first = False
                rv = listed.get("metadata", {}).get("resourceVersion")
                async for event in self.api.watch(PODS, resource_version=rv, field_selector=selector):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(event["object"])
                    elif event["type"] == "DELETED":
                        self._on_pod(event["object"], deleted=True)
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except Exception as exc:
                log.warning("node %s: pod watch: %s; retrying", self.name, exc)
                await asyncio.sleep(RETRY_S)

    def _sweep_orphans(self, known: set[str]) -> None:
        """Stop what a previous agent left for pods that no longer exist."""
        if not self.pods_dir.is_dir():
            return
        for entry in self.pods_dir.iterdir():
            if entry.name in known:
                continue
            for state in entry.glob("*.json"):
                inst = runtime.Instance.load(state)
                if inst is not None and runtime.proc_start_time(inst.pid) == inst.start_ticks:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(inst.pid, signal.SIGKILL)
            shutil.rmtree(entry, ignore_errors=True)

    async def _credentials(self) -> None:
        """Trade the join token for this node's own credential (user ``system:node:<name>``)
        and its proxies' (``system:meshwork:proxy:<name>``), as a kubelet bootstraps its
        client certificate; the meshed pods' proxies read theirs from ``proxy-token`` (0600)."""
        path = f"/apis/mesh.meshwork.io/v1/nodes/{self.name}/credentials"
        while True:
            try:
                creds = await asyncio.to_thread(self.api.client.request, "POST", path, body={})
                break
            except Exception as exc:
                if self.stop.is_set():
                    raise
                log.warning("node %s: cannot get the node's credentials yet (%s); retrying", self.name, exc)
                await asyncio.sleep(RETRY_S)
        self.api.client.token = creds["token"]
        self.endpoint.token = creds["token"]  # the server calls this agent with the node's credential
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(creds["proxyToken"])

    async def _watch_parent(self) -> None:
        """A local agent exits with its server, leaving the pods for the next one."""
        assert self.parent_pid is not None
        while True:
            await asyncio.sleep(0.5)
            if os.getppid() != self.parent_pid:
                log.warning("node %s: the server is gone; leaving the pods running for the next agent", self.name)
                os._exit(0)

    async def run(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.standby.sweep()
        await self._credentials()
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        if self.parent_pid is not None:
            self._tasks.append(asyncio.create_task(self._watch_parent()))
        await self.endpoint.start(self.host_ip, self.port)
        await self.register()
        for informer in self.sources.informers():
            self._tasks.append(asyncio.create_task(informer.run()))
        for informer in (self.sources.vss, self.sources.drs, self.sources.all_pods):  # not waited for
            self._tasks.append(asyncio.create_task(informer.run()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self.sources.informers())), 30)
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        await self._build_bind_shim()
        self._tasks.append(asyncio.create_task(self._pods()))
        self._tasks.append(asyncio.create_task(self.resources.run()))
        # ClusterIPs, as kube-proxy serves them, following the mesh's tcp[] routes.
        proxy = ServiceProxy(self.sources.svcs, self.sources.eps, virtual_services=self.sources.vss,
                             destination_rules=self.sources.drs, pods=self.sources.all_pods)  # fmt: skip
        self._tasks.append(asyncio.create_task(proxy.run()))
        print(f"meshwork agent {self.name} running pods in {self.network}", flush=True)
        await self.stop.wait()
        log.info("node %s: stopping every pod", self.name)
        for task in self._tasks:
            task.cancel()
        for worker in list(self.workers.values()):
            worker.shutdown = True
            worker.wake.set()
        await asyncio.gather(*(w.done.wait() for w in list(self.workers.values())))
        await self.standby.close()
        self.resources.close()
        proxy.close()
        await self.endpoint.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._event_tasks, return_exceptions=True), 2)


def run_agent(
    *,
    server: str,
    token: str,
    name: str,
    data_dir: Path,
    pod_cidr: str | None,
    parent_pid: int | None,
) -> None:
    logging.basicConfig(level=os.environ.get("MESHWORK_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    agent = Agent(Client(server, token), name=name, data_dir=data_dir, pod_cidr=pod_cidr, parent_pid=parent_pid)
    try:
        import uvloop
    except ImportError:
        asyncio.run(agent.run())
    else:
        uvloop.run(agent.run())


__all__ = ["Agent", "Mapping", "run_agent"]
