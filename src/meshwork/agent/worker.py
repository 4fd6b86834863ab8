"""One pod on this node: its containers' processes, probes, restarts, status and stop.

A ``PodWorker`` is a single asyncio task. Each turn of its loop looks at
the pod and its containers and does what is due: start the next init
container, start (or restart after back-off) the app containers once every
sidecar is ready, run the probes that are due, write the status when it
changed, and, when the pod is being deleted, stop it in the safe order. The
decisions (restart policy and back-off, probe state, phase, conditions,
environment) come from ``meshwork.core``; this module only acts on them.

On a cold start's path: the injected proxy starts before the ServiceAccount
token is mounted (it does not use it), as the node's warm spare when there is
one (``agent.standby``), and says when it is ready (``agent.notify``: its
readiness probe then runs at once instead of at its next tick).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshwork.agent import runtime
from meshwork.agent.api import PODS, SERVICEACCOUNTS
from meshwork.agent.images import REASON_NOT_FOUND
from meshwork.agent.notify import NOTIFY_ENV, ReadyNotify
from meshwork.agent.runtime import Instance, Process
from meshwork.agent.standby import STANDBY_ARGV
from meshwork.core.inject import APP_IP_ENV, SIDECAR_NAME, app_ip
from meshwork.core.podenv import container_env, expand_command
from meshwork.core.podstatus import pod_conditions
from meshwork.core.probes import (
    KillContainer,
    ProbeResult,
    ProbeTracker,
    RunProbe,
    SetReady,
    SetStarted,
)
from meshwork.core.restart import (
    ContainerEvent,
    ContainerKind,
    RestartTracker,
    completed_phase,
    container_kind,
    format_pod,
    pod_phase,
    rfc3339,
    should_restart,
)
from meshwork.model.core import ConfigMap, Secret, Service
from meshwork.model.pod import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodPhase,
)

if TYPE_CHECKING:
    from meshwork.agent.node import Agent

log = logging.getLogger("meshwork.agent")

CONFIG_RETRY_S = 5.0  # a container waiting on a missing ConfigMap/Secret/image is retried this often
ENDPOINTS_DRAIN_MAX_S = 5.0  # longest wait for a terminating pod to leave every Endpoints
PROXY_PROPAGATION_S = 0.5  # then this long for proxies and clients to drop it
DEPENDS_ON = "meshwork.io/depends-on"  # pod annotation: Services that must be ready before the pod starts
REASON_DEPENDENCIES = "WaitingForDependencies"
DEPENDS_POLL_S = 0.5
PORT_CHECK_AFTER_S = 1.0  # a started container is checked once for a 0.0.0.0 listener after this
ADDRESS_IN_USE_TAIL = 8192  # bytes of a failed container's log searched for EADDRINUSE (a traceback's end)
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
KIND_ORDER: dict[ContainerKind, int] = {"init": 0, "sidecar": 0, "regular": 1}


@dataclass(slots=True)
class Run:
    """One container of the pod as the agent sees it."""

    spec: Container
    kind: ContainerKind
    proc: Process | None = None
    started_at: float | None = None
    ready: bool = False
    started: bool = False
    waiting: tuple[str, str | None] | None = ("ContainerCreating", None)
    terminated: ContainerStateTerminated | None = None
    succeeded: bool = False  # an init container that completed
    restart_at: float | None = None
    probes: ProbeTracker | None = None
    retry_at: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    logs: Any = None
    port_check_at: float | None = None
    notify: ReadyNotify | None = None  # the proxy's "I am ready" socket (agent.notify)

    @property
    def ports(self) -> list[int]:
        return [p.container_port for p in self.spec.ports or ()]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()


class PodWorker:
    def __init__(self, agent: Agent, pod: Pod) -> None:
        self.agent = agent
        self.pod = pod
        self.uid = pod.metadata.uid or ""
        self.ns = pod.metadata.namespace or "default"
        self.name = pod.metadata.name or ""
        self.dir = agent.pods_dir / self.uid
        self.log_dir = agent.logs_dir / f"{self.ns}_{self.name}_{self.uid}"
        self.ip: str | None = pod.status.pod_ip if pod.status else None
        self.tracker = RestartTracker(pod=format_pod(self.name, self.ns, self.uid),
                                      policy=pod.spec.restart_policy)  # fmt: skip
        self.runs: dict[str, Run] = {}
        for c in pod.spec.init_containers or ():
            self.runs[c.name] = Run(c, container_kind(c, init=True))
        for c in pod.spec.containers:
            self.runs[c.name] = Run(c, "regular")
        self.wake = asyncio.Event()
        self.phase: PodPhase = "Pending"
        self.start_time: str | None = pod.status.start_time if pod.status else None
        self.task: asyncio.Task[None] | None = None
        self._last_status: dict[str, Any] | None = None
        self._last_fingerprint: tuple[object, ...] | None = None
        self._unlink_after_report: list[tuple[Path, int]] = []  # exited instances, until reported
        self._status_dirty = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        self._probe_tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        # Once anything ran (or the dependencies were met), depends-on no longer holds the pod.
        statuses = (pod.status.container_statuses if pod.status else None) or []
        self._gate_passed = any((st.state and st.state.running) or st.restart_count for st in statuses)
        self.gone = False  # the Pod object no longer exists
        self.shutdown = False  # the agent is stopping: stop the pod but keep its object
        self.done = asyncio.Event()
        self._mount_problem: str | None = None  # the last FailedMount message reported
        self.token_dir: Path | None = None  # the mounted ServiceAccount token's dir, if any
        self._token_task: asyncio.Task[None] | None = None

    # -- inputs from the agent --------------------------------------------------

    def update(self, pod: Pod) -> None:
        self.pod = pod
        self.wake.set()

    def deleted(self) -> None:
        self.gone = True
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"pod {self.ns}/{self.name}")
        self._status_task = asyncio.create_task(self._status_writer(), name=f"status {self.name}")

    # -- the loop ------------------------------------------------------------

    async def _main(self) -> None:
        try:
            await self._setup()
            while True:
                if self.gone or self.shutdown or self.pod.metadata.deletion_timestamp:
                    await self._terminate()
                    return
                now = time.time()
                next_at = self._step(now)
                self._mark_dirty()
                self.wake.clear()
                timeout = None if next_at is None else max(0.0, next_at - time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s: worker failed", self.ns, self.name)
        finally:
            self.done.set()

    async def _setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.ip is None:
            self.ip = self.agent.allocate_ip(self.uid)
        else:
            self.agent.claim_ip(self.ip, self.uid)
        if self.start_time is None:
            self.start_time = rfc3339(time.time())
        self._restore_counts()
        for run in self.runs.values():
            inst = Instance.load(self._instance_path(run.spec.name))
            if inst is None:
                continue
            proc = runtime.adopt(inst)
            if proc is None:
                code = runtime.read_exit(inst.exit_file)
                self._instance_path(run.spec.name).unlink(missing_ok=True)
                if code is not None or inst.started_at:
                    self._record_exit(run, code if code is not None else runtime.EXIT_UNKNOWN,
                                      inst.started_at, time.time())  # fmt: skip
                continue
            log.info("pod %s/%s: re-adopted container %s (pid %d)", self.ns, self.name, run.spec.name, proc.pid)
            self._attach(run, proc, inst.started_at, adopted=True)
        self._write_volumes()
        # Beside the loop, not before it: the injected proxy does not use the token and starts now
        # (on a cold start's path); every other container waits for the mount (``_drive``).
        self._token_task = asyncio.create_task(self._mount_service_account_token(), name=f"token {self.name}")

    def _token_mounted(self) -> bool:
        return self._token_task is not None and self._token_task.done()

    async def _mount_service_account_token(self) -> None:
        """The ServiceAccount token volume (see ``agent.satoken``); retried until it works, as a FailedMount.
        The pod's loop looks again once it is done."""
        try:
            await self._mount_token()
        finally:
            self.wake.set()

    async def _mount_token(self) -> None:
        from meshwork.agent import satoken

        sa_name = self.pod.spec.service_account_name or "default"
        reported = False
        while not (self.gone or self.shutdown or self.pod.metadata.deletion_timestamp):
            try:
                sa = await self.agent.api.get(SERVICEACCOUNTS, self.ns, sa_name)
                if not satoken.wants_token(self.pod, sa):
                    return
                token = await satoken.request_token(self.agent.api, self.pod)
                root_ca = self.agent.sources.config_maps(self.ns).get("kube-root-ca.crt")
                ca = ((root_ca.data or {}).get("ca.crt", "") if root_ca is not None else "").encode()
                self.token_dir = satoken.write_mount(self.dir, self.ns, token, ca)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not reported:
                    self.event("Warning", "FailedMount", f'MountVolume.SetUp failed for volume "{satoken.VOLUME}" : '
                               f'failed to fetch token for ServiceAccount "{sa_name}": {exc}')  # fmt: skip
                    reported = True
                await asyncio.sleep(1.0)

    def _restore_counts(self) -> None:
        """restartCount and lastState survive an agent restart through the pod's status.

        A container the last report showed running or waiting to restart, and
        that has no process to re-adopt, starts again now, as after a reboot;
        one that finished for good under the restart policy stays finished.
        """
        status = self.pod.status
        if status is None:
            return
        now = time.time()
        for st in (status.init_container_statuses or []) + (status.container_statuses or []):
            run = self.runs.get(st.name)
            if run is None:
                continue
            last = st.last_state.terminated if st.last_state else None
            self.tracker.restore(st.name, st.restart_count, last, kind=run.kind)
            term = st.state.terminated if st.state else None
            if term is not None and not should_restart(self.pod.spec.restart_policy, term.exit_code, run.kind):
                run.terminated = term
                run.waiting = None
                run.succeeded = run.kind == "init" and term.exit_code == 0
            elif term is not None or (st.state is not None and st.state.running is not None) or last is not None:
                run.restart_at = now
                run.waiting = None

    def _instance_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    # -- what is due now --------------------------------------------------------

    def _step(self, now: float) -> float | None:
        """Start/restart/probe what is due; return when to look again (None: on a wake)."""
        wakeups: list[float] = []
        if self.phase in ("Succeeded", "Failed"):
            self._stop_leftovers()
            return None
        if not self._gate_passed:
            unmet = self._unmet_dependencies()
            if unmet:
                msg = ", ".join(f'Service "{d}"' for d in unmet)
                for run in self.runs.values():
                    run.waiting = (REASON_DEPENDENCIES, f"waiting for {msg} to have a ready endpoint ({DEPENDS_ON})")
                return now + DEPENDS_POLL_S
            self._gate_passed = True
        inits_done = True
        for run in self.runs.values():
            if run.kind == "regular":
                continue
            if run.kind == "init":
                if run.succeeded:
                    continue
                self._drive(run, now, wakeups)
                inits_done = False
                break
            # A native sidecar: started in order, the next waits for it to have started.
            self._drive(run, now, wakeups)
            if not (run.running and run.started):
                inits_done = False
                break
        sidecars_ready = all(r.running and r.ready for r in self.runs.values() if r.kind == "sidecar")
        if inits_done and sidecars_ready:
            for run in self.runs.values():
                if run.kind == "regular":
                    self._drive(run, now, wakeups)
        for run in self.runs.values():
            if run.port_check_at is not None and run.running:
                if run.port_check_at <= now:
                    run.port_check_at = None
                    self._check_wildcard(run)
                else:
                    wakeups.append(run.port_check_at)
            if run.probes is not None and run.running:
                for cmd in run.probes.due(now):
                    self._launch_probe(run, cmd)
                wake = run.probes.next_wakeup()
                if wake is not None:
                    wakeups.append(wake)
        phase = self._phase()
        if phase in ("Succeeded", "Failed") and self.phase not in ("Succeeded", "Failed"):
            self.phase = phase
            self._stop_leftovers()
        else:
            self.phase = phase
        return min(wakeups) if wakeups else None

    def _unmet_dependencies(self) -> list[str]:
        """Services named by ``meshwork.io/depends-on`` that have no ready endpoint yet."""
        raw = (self.pod.metadata.annotations or {}).get(DEPENDS_ON, "")
        unmet = []
        for item in (x.strip() for x in raw.split(",")):
            if not item:
                continue
            ns, _, name = item.rpartition("/")
            if not self.agent.sources.has_ready_endpoint(ns or self.ns, name):
                unmet.append(item)
        return unmet

    def _drive(self, run: Run, now: float, wakeups: list[float]) -> None:
        """Start ``run`` when it is not running and its policy says it may."""
        if run.running:
            return
        if run.spec.name != SIDECAR_NAME and not self._token_mounted():
            return  # the ServiceAccount token first; its task wakes the loop when done
        if run.retry_at is not None:
            if run.retry_at > now:
                wakeups.append(run.retry_at)
                return
            run.retry_at = None
        if run.started_at is None and run.terminated is None and run.restart_at is None:
            self._start(run, now)
        elif run.restart_at is None:
            return  # exited for good under the pod's restart policy
        elif run.restart_at > now:
            wakeups.append(run.restart_at)
            return
        else:
            self._start(run, now, restart=True)
        if run.retry_at is not None:  # it could not start: look again then
            wakeups.append(run.retry_at)

    def _phase(self) -> PodPhase:
        statuses = self._statuses()
        init, regular = statuses
        done = completed_phase(self.pod.spec, init, regular)
        if done is not None:
            return done
        return pod_phase(self.pod.spec, init, regular)

    # -- starting a container ---------------------------------------------------

    def _start(self, run: Run, now: float, *, restart: bool = False) -> None:
        c = run.spec
        missing = self._write_volumes()
        if missing is not None:  # upstream: the pod stays in ContainerCreating until its volumes mount
            if missing != self._mount_problem:
                self.event("Warning", "FailedMount", missing)
            self._mount_problem = missing
            run.waiting = ("ContainerCreating", None)
            run.retry_at = now + CONFIG_RETRY_S
            return
        self._mount_problem = None
        argv, problem = self._command(run)
        if problem is not None:
            reason, message = problem
            if run.waiting != (reason, message):
                self.event("Warning", "Failed", f"Error: {reason}: {message}" if reason != REASON_NOT_FOUND
                           else message)  # fmt: skip
            run.waiting = (reason, message)
            run.retry_at = now + CONFIG_RETRY_S
            return
        assert argv is not None
        out, err = self.dir / f"{c.name}.out", self.dir / f"{c.name}.err"
        cgroup_key = f"{self.uid}-{c.name}"
        procs = self.agent.limits_for(cgroup_key, c)
        env = run.env
        spare = None
        if c.name == SIDECAR_NAME and run.kind == "sidecar":
            notify = self._ready_notify(run)
            if notify is not None:
                env = {**env, NOTIFY_ENV: notify.name}
            if tuple(argv) == STANDBY_ARGV and not procs:  # a spare proxy, its imports done (agent.standby)
                spare = self.agent.standby.take(env)
        if spare is not None:
            spare.hand_over(env, run.cwd, out, err)
        else:
            runtime.make_fifo(out)
            runtime.make_fifo(err)
        count = self.tracker.restarted(c.name, now) if restart else self.tracker.restart_count(c.name)
        logs = self.agent.open_logs(self.log_dir / c.name, count, out, err)
        if not restart:
            self._report_unenforced(c)
        exit_file = self.dir / f"{c.name}.exit"
        try:
            if spare is not None:
                pid, exit_file = spare.pid, spare.exit_file
            else:
                pid = runtime.spawn(argv, env=env, cwd=run.cwd, out_fifo=out, err_fifo=err,
                                    exit_file=exit_file, cgroup_procs=procs,
                                    tag=f"{self.dir}/{c.name}")  # fmt: skip
        except OSError as exc:
            self.agent.close_logs(logs)
            run.waiting = ("RunContainerError", str(exc))
            run.retry_at = now + CONFIG_RETRY_S
            self.event("Warning", "Failed", f"Error: {exc}")
            return
        inst = Instance(container=c.name, pid=pid, start_ticks=0, started_at=now, restart_count=count,
                        exit_file=str(exit_file), cgroup_key=cgroup_key if procs else None)  # fmt: skip
        proc = runtime.start(self._instance_path(c.name), inst)
        run.logs = logs
        log.debug("pod %s/%s: container %s started (pid %d%s)", self.ns, self.name, c.name, pid,
                  ", a standby proxy" if spare is not None else "")  # fmt: skip
        self.event("Normal", "Created", f"Created container {c.name}")
        self.event("Normal", "Started", f"Started container {c.name}")
        self._attach(run, proc, now, adopted=False)

    def _ready_notify(self, run: Run) -> ReadyNotify | None:
        """The socket the injected proxy says "ready" on (it is probed at once), kept across restarts."""
        if run.notify is None:
            try:
                run.notify = ReadyNotify(functools.partial(self._notified, run))
            except OSError as exc:  # the probes alone find it Ready, as for any container
                log.debug("pod %s/%s: no notify socket for %s: %s", self.ns, self.name, run.spec.name, exc)
        return run.notify

    def _notified(self, run: Run) -> None:
        if run.probes is not None and run.running and not run.ready:
            run.probes.trigger("readiness", time.time())
            self.wake.set()

    def _report_unenforced(self, c: Container) -> None:
        """Say plainly, once per container, a limit this node cannot enforce (``describe`` shows it)."""
        limits = c.resources.limits or {}
        cg = self.agent.resources.cgroups
        gaps = []
        if "memory" in limits and not cg.enforces_memory:
            gaps.append(f"memory limit {limits['memory']} is kept by the agent's RSS watchdog, not by a cgroup")
        if "cpu" in limits and not cg.enforces_cpu:
            gaps.append(f"cpu limit {limits['cpu']} is not enforced")
        if gaps:
            self.event("Warning", "LimitsNotEnforced",
                       f"container {c.name}: {'; '.join(gaps)} ({cg.reason or 'no writable cgroup'})")  # fmt: skip

    def _attach(self, run: Run, proc: Process, started_at: float, *, adopted: bool) -> None:
        c = run.spec
        run.proc = proc
        run.started_at = started_at
        run.waiting = None
        run.terminated = None
        run.restart_at = None
        run.ready = False
        run.port_check_at = started_at + PORT_CHECK_AFTER_S if run.ports else None
        restarts = self.pod.spec.restart_policy != "Never" or run.kind == "sidecar"
        if run.kind == "init":
            run.probes = None
            run.started = False
        else:
            # A meshed app is probed at its own address, as Istio rewrites app probes to skip the
            # sidecar: they must not need mTLS, nor fail while the sidecar restarts.
            run.probes = ProbeTracker(c, pod_ip=self.address_of(c.name), started_at=started_at,
                                      restarts=restarts)  # fmt: skip
            run.started = run.probes.started
            run.ready = run.probes.ready
        if adopted:
            if not run.env:
                run.env, run.cwd = self._adopted_env(run)
            run.logs = self.agent.open_logs(self.log_dir / c.name, self.tracker.restart_count(c.name),
                                            self.dir / f"{c.name}.out", self.dir / f"{c.name}.err")  # fmt: skip
        proc.exited.add_done_callback(functools.partial(self._on_exit, run, proc))
        self.agent.watch_group(proc.pid, c, self, run)

    def _adopted_env(self, run: Run) -> tuple[dict[str, str], str]:
        try:
            env_raw = Path(f"/proc/{run.proc.pid if run.proc else 0}/environ").read_bytes()
            env = dict(kv.split("=", 1) for kv in env_raw.decode(errors="replace").split("\0") if "=" in kv)
        except OSError:
            env = {}
        return env, run.spec.working_dir or str(self.dir)

    def _command(self, run: Run) -> tuple[list[str] | None, tuple[str, str] | None]:
        """The argv to run and its env, or the waiting (reason, message) that stops it."""
        c = run.spec
        entry = None
        if not c.command:
            entry = self.agent.catalogue.lookup(c.image or "")
            if entry is None:
                return None, (REASON_NOT_FOUND, self.agent.catalogue.missing_message(c.image or ""))
        pod = self.pod
        address = self.address_of(c.name)  # status.podIP fieldRefs: a meshed app's own address
        if address and (pod.status is None or pod.status.pod_ip != address):
            from meshwork.model.pod import PodIP, PodStatus

            pod = pod.model_copy(deep=True)
            if pod.status is None:
                pod.status = PodStatus()
            pod.status.pod_ip = address
            pod.status.pod_ips = [PodIP(ip=address)]
            pod.status.host_ip = self.agent.host_ip
        built = container_env(pod, c, config_maps=self.agent.sources.config_maps(self.ns),
                              secrets=self.agent.sources.secrets(self.ns),
                              services=self.agent.sources.services(self.ns),
                              node_allocatable=self.agent.allocatable)  # fmt: skip
        for ev in built.events:
            self.event(ev.type, ev.reason, ev.message)
        if built.problems:
            return None, ("CreateContainerConfigError", built.problems[0])
        env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        if entry is not None:
            env.update(dict(entry.env))
        node_vars = self.agent.pod_env(self, c)
        env.update(node_vars)
        env.update(built.as_dict())
        self.agent.bind_rewrite(self, c, env)  # after the app's own env: its LD_PRELOAD is kept
        # The node's variables (POD_IP ...) are part of the container's env, so $(POD_IP) expands.
        command, args = expand_command(c, (*node_vars.items(), *built.env))
        if entry is not None:
            command = list(entry.command)
            if not c.args:
                args = list(entry.args)
        run.env = env
        run.cwd = c.working_dir or (entry.working_dir if entry and entry.working_dir else None) or str(
            self.dir / "root")  # fmt: skip
        if not Path(run.cwd).is_dir():
            return None, ("CreateContainerError", f'working directory "{run.cwd}" does not exist')
        return command + args, None

    # -- addresses: the pod IP, or a meshed app's own ---------------------------------

    @property
    def meshed(self) -> bool:
        """Whether the pod has the mesh proxy (injected as the ``istio-proxy`` container)."""
        return any(r.spec.name == SIDECAR_NAME for r in self.runs.values())

    @property
    def app_ip(self) -> str | None:
        """The address the app containers of a meshed pod listen on (``core.inject.app_ip``): the
        sidecar owns the pod IP and forwards to it. None: not meshed, or no such address."""
        if not self.ip:
            return None
        proxy = next((r for r in self.runs.values() if r.spec.name == SIDECAR_NAME), None)
        if proxy is None or (proxy.env and APP_IP_ENV not in proxy.env):
            return None  # not meshed, or a proxy started before capture (adopted): the app keeps the pod IP
        return app_ip(self.ip)

    def address_of(self, container: str) -> str:
        """Where ``container`` listens, as its ``POD_IP`` says and its probes reach it."""
        inner = self.app_ip if container != SIDECAR_NAME else None
        return inner or self.ip or ""

    # -- exits, probes ----------------------------------------------------------

    def _on_exit(self, run: Run, proc: Process, fut: asyncio.Future[int]) -> None:
        if run.proc is not proc:
            return
        code = fut.result()
        oom = self.agent.oom_killed(proc.pid, run.spec, f"{self.uid}-{run.spec.name}")
        self.agent.unwatch_group(proc.pid)
        # The instance file (with its exit file) goes once a status with this exit is
        # written: an agent restarted before that reads the exit from it instead of
        # taking the container for one still running, and starting it again.
        self._unlink_after_report.append((self._instance_path(run.spec.name), proc.pid))
        self.agent.close_logs(run.logs)
        run.logs = None
        run.proc = None
        self._record_exit(run, code, run.started_at or time.time(), time.time(), oom=oom)
        self.wake.set()

    def _check_wildcard(self, run: Run) -> None:
        """Warn about an app that took its port on every address instead of its pod IP."""
        from meshwork.agent.ports import wildcard_ports_of

        # A reading at most half a second old: taken after the app had time to bind.
        if run.proc is None or not set(run.ports) & self.agent.wildcard_ports(max_age=0.5):
            return  # the usual case: nobody listens on 0.0.0.0 at these ports; no /proc walk
        for port in wildcard_ports_of(run.proc.pid, run.ports):
            self.event("Warning", "WildcardBind",
                       f"container {run.spec.name} listens on 0.0.0.0:{port}, which takes port {port} on every "
                       f"pod IP of this node, so no other pod can use it: bind to $POD_IP ({self.address_of(run.spec.name)}) "
                       "instead")  # fmt: skip

    def _bind_conflict(self, run: Run) -> str | None:
        """Why a failed container could not listen: its port taken on every address."""
        from meshwork.agent.ports import taken_ports

        low = self._low_port(run)  # EACCES comes before EADDRINUSE: the kernel checks it first
        if low:
            return low
        taken = taken_ports(run.ports)
        if not taken:
            return self._captured_conflict(run)
        port = taken[0]
        holder = self.agent.wildcard_holder(port)
        who = f"pod {holder}" if holder else "a process on this machine"
        return (f"port {port} is taken on every address by {who}, which listens on 0.0.0.0:{port}; "
                f"pods share a port number only when each binds to its own $POD_IP")  # fmt: skip

    def _captured_conflict(self, run: Run) -> str | None:
        """Why a meshed app could not listen: the pod IP's ports are the sidecar's (inbound capture).

        Said only when the container's last output names the error (EADDRINUSE), since the
        sidecar's listeners are there whether or not the app tried to take them.
        """
        inner = self.app_ip
        if inner is None or run.spec.name == SIDECAR_NAME:
            return None
        tail = self._log_tail(run)
        if not any(text in tail for text in (b"Address already in use", b"EADDRINUSE", b"Errno 98")):
            return None
        return (f"address already in use: in a meshed pod the pod IP {self.ip} belongs to the sidecar, which "
                f"takes every app port there to check mTLS and policies; the app must listen on $POD_IP "
                f"({inner}), not on 0.0.0.0 or {self.ip}")  # fmt: skip

    def _log_tail(self, run: Run) -> bytes:
        """The end of the container's last log: where an app names why it could not listen."""
        log_file = self.log_dir / run.spec.name / f"{self.tracker.restart_count(run.spec.name)}.log"
        try:
            with open(log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - ADDRESS_IN_USE_TAIL))
                return f.read()
        except OSError:
            return b""

    def _low_port(self, run: Run) -> str | None:
        """Why an app could not listen: a port below 1024 while the agent lacks the privilege."""
        from meshwork.agent import binding

        start = binding.unprivileged_port_start()
        if not any(p < start for p in run.ports):
            return None  # the usual case: no low port, no log read
        return binding.low_port_problem(run.ports, self._log_tail(run), start=start,
                                        allowed=binding.agent_may_bind_low_ports(), uid=os.geteuid())  # fmt: skip

    def _record_exit(self, run: Run, code: int, started: float, finished: float, *, oom: bool = False) -> None:
        name = run.spec.name
        if oom:
            self.event("Warning", "OOMKilling", f"Memory cgroup out of memory: killed container {name}")
        message = self._bind_conflict(run) if code != 0 and run.ports and not self.stopping else None
        if message:
            self.event("Warning", "PortConflict", f"container {name}: {message}")
        decision = self.tracker.exited(name, code, started_at=started, finished_at=finished,
                                       now=time.time(), kind=run.kind, oom_killed=oom, message=message)  # fmt: skip
        run.probes = None
        run.ready = False
        run.started = False
        run.started_at = None
        if run.kind == "init" and code == 0:
            run.succeeded = True
        if self.stopping or self.phase in ("Succeeded", "Failed"):
            run.restart_at = None  # a finished pod's sidecars end with it, for good
        else:
            run.restart_at = decision.restart_at
        last = self.tracker.last_terminated(name)
        if run.restart_at is None:
            run.terminated = last
            run.waiting = None
        else:
            run.terminated = None
            run.waiting = (decision.waiting_reason or "ContainerCreating", decision.message) if (
                decision.waiting_reason) else None  # fmt: skip
            if decision.event is not None:
                self.event(decision.event.type, decision.event.reason, decision.event.message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._probe_tasks.add(task)
        task.add_done_callback(self._probe_tasks.discard)

    def _launch_probe(self, run: Run, cmd: RunProbe) -> None:
        from meshwork.agent.probing import run_probe

        proc = run.proc

        async def probe() -> None:
            result = await run_probe(cmd, env=run.env, cwd=run.cwd)
            self._probe_done(run, proc, result)

        task = asyncio.create_task(probe())
        self._probe_tasks.add(task)
        task.add_done_callback(self._probe_tasks.discard)

    def _probe_done(self, run: Run, proc: Process | None, result: ProbeResult) -> None:
        if run.proc is not proc or run.probes is None:
            return
        for decision in run.probes.record(result, time.time()):
            if isinstance(decision, SetReady):
                run.ready = decision.ready
                log.debug("pod %s/%s: container %s %s", self.ns, self.name, run.spec.name,
                          "ready" if decision.ready else "not ready")  # fmt: skip
            elif isinstance(decision, SetStarted):
                run.started = decision.started
            elif isinstance(decision, KillContainer):
                self.event("Normal", "Killing", decision.message)
                if proc is not None:
                    grace = float(self.pod.spec.termination_grace_period_seconds)
                    self._spawn(proc.stop(grace))
            elif isinstance(decision, ContainerEvent):
                self.event(decision.type, decision.reason, decision.message)
        self.wake.set()

    def _stop_leftovers(self) -> None:
        """A finished pod stops its sidecars (and anything else still running)."""
        for run in self.runs.values():
            if run.running and run.proc is not None and not run.proc.killed_by_agent:
                self._spawn(run.proc.stop(float(self.pod.spec.termination_grace_period_seconds)))

    # -- stopping the pod ------------------------------------------------------

    async def _terminate(self) -> None:
        self.stopping = True
        if self._token_task is not None:
            self._token_task.cancel()
        meta = self.pod.metadata
        grace = float(meta.deletion_grace_period_seconds if meta.deletion_grace_period_seconds is not None
                      else self.pod.spec.termination_grace_period_seconds)  # fmt: skip
        deadline = time.monotonic() + grace
        running = [r for r in self.runs.values() if r.running]
        if self.shutdown and self._status_task is not None:
            self._status_task.cancel()
        if running and not self.gone and not self.shutdown:
            for run in running:
                run.ready = False
            await self._leave_endpoints(min(ENDPOINTS_DRAIN_MAX_S, grace / 2))
        regular = [r for r in running if r.kind == "regular"]
        others = [r for r in running if r.kind != "regular"]
        for group in (regular, list(reversed(others))):
            if not group:
                continue
            if grace > 0:
                await asyncio.gather(*(self._pre_stop(r, deadline) for r in group))
            for r in group:
                self.event("Normal", "Killing", f"Stopping container {r.spec.name}")
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.gather(*(r.proc.stop(remaining) for r in group if r.proc is not None))
        for task in list(self._probe_tasks):
            task.cancel()
        if self.phase not in ("Succeeded", "Failed") and not self.shutdown:
            self.phase = self._phase()
            if self.phase not in ("Succeeded", "Failed"):
                self.phase = "Failed" if self.pod.spec.restart_policy == "Never" else "Succeeded" if all(
                    (r.terminated is not None and r.terminated.exit_code == 0)
                    for r in self.runs.values() if r.kind == "regular") else "Failed"  # fmt: skip
        if self.shutdown:
            return  # the node is going away: its pods' last report stands until it is back
        if not self.gone:
            await self._flush_status()
            await self.agent.api.confirm_pod_deleted(self.ns, self.name, self.uid)
        self.cleanup()

    async def _leave_endpoints(self, limit: float) -> None:
        """Wait until no Endpoints of the namespace lists this pod (bounded), then let proxies catch up."""
        if not self.ip:
            return
        deadline = time.monotonic() + limit
        await self._flush_status()
        # The agent's Endpoints informer follows the same watch the proxies do: no API polling.
        while time.monotonic() < deadline and self.agent.sources.lists_address(self.ns, self.ip):
            await asyncio.sleep(0.05)
        await asyncio.sleep(PROXY_PROPAGATION_S)

    async def _pre_stop(self, run: Run, deadline: float) -> None:
        hook = run.spec.lifecycle.pre_stop if run.spec.lifecycle else None
        if hook is None:
            return
        timeout = max(0.0, deadline - time.monotonic())
        try:
            if hook.sleep is not None:
                await asyncio.sleep(min(float(hook.sleep.seconds), timeout))
            elif hook.exec_ is not None:
                from meshwork.agent.probing import run_probe
                from meshwork.core.probes import ExecTarget

                cmd = RunProbe("liveness", "exec", ExecTarget(tuple(hook.exec_.command or ())), timeout)
                result = await run_probe(cmd, env=run.env, cwd=run.cwd)
                if not result.success:
                    self.event("Warning", "FailedPreStopHook",
                               f"PreStopHook failed: {result.message}")  # fmt: skip
            elif hook.http_get is not None:
                from meshwork.agent.probing import run_probe
                from meshwork.core.probes import http_request

                req = http_request(hook.http_get, run.spec, self.address_of(run.spec.name))
                cmd = RunProbe("liveness", "httpGet", req, timeout)
                result = await run_probe(cmd)
                if not result.success:
                    self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {result.message}")
        except Exception as exc:  # a broken hook never blocks the stop
            self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {exc}")

    def cleanup(self) -> None:
        if self._token_task is not None:
            self._token_task.cancel()
        for run in self.runs.values():
            if run.proc is not None:
                run.proc.close()
                self.agent.standby.forget(Path(run.proc.instance.exit_file))
            if run.notify is not None:
                run.notify.close()
                run.notify = None
            self.agent.drop_limits(f"{self.uid}-{run.spec.name}")
        self.agent.release_ip(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)
        if self._status_task is not None:
            self._status_task.cancel()

    # -- volumes ------------------------------------------------------------------

    def _write_volumes(self) -> str | None:
        """ConfigMap and Secret volumes as files under the pod's dir; mount paths under ``root/``.

        Rewritten before each container start, so a start sees the sources' current data.
        The FailedMount message for the first source that is missing and not optional, or None.
        """
        problem: str | None = None
        root = self.dir / "root"
        root.mkdir(exist_ok=True)
        vols = self.dir / "volumes"
        vols.mkdir(exist_ok=True)
        for vol in self.pod.spec.volumes or ():
            target = vols / vol.name
            target.mkdir(exist_ok=True)
            data: Mapping[str, bytes] | None = None
            mode = 0o644
            items = None
            if vol.config_map is not None:
                cm = self.agent.sources.config_maps(self.ns).get(vol.config_map.name or "")
                if cm is not None:
                    data = {k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()}
                    data.update({k: v.encode() for k, v in (cm.data or {}).items()})
                elif not vol.config_map.optional and problem is None:
                    problem = f'volume "{vol.name}" : configmap "{vol.config_map.name}" not found'
                mode, items = vol.config_map.default_mode, vol.config_map.items
            elif vol.secret is not None:
                sec = self.agent.sources.secrets(self.ns).get(vol.secret.secret_name or "")
                if sec is not None:
                    data = dict(sec.decoded())
                elif not vol.secret.optional and problem is None:
                    problem = f'volume "{vol.name}" : secret "{vol.secret.secret_name}" not found'
                mode, items = vol.secret.default_mode, vol.secret.items
            if data is None:
                continue
            chosen = [(i.key, i.path, i.mode) for i in items] if items else [(k, k, None) for k in data]
            for key, rel, item_mode in chosen:
                if key not in data:
                    continue
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data[key])
                os.chmod(tmp, item_mode if item_mode is not None else mode)
                os.replace(tmp, path)  # atomic for a reader, and works over a read-only file
        for c in list(self.pod.spec.init_containers or ()) + list(self.pod.spec.containers):
            for m in c.volume_mounts or ():
                link = root / m.mount_path.lstrip("/")
                if m.sub_path:
                    src = vols / m.name / m.sub_path
                else:
                    src = vols / m.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(src)
        return None if problem is None else f"MountVolume.SetUp failed for {problem}"

    # -- status ---------------------------------------------------------------------

    def _container_status(self, run: Run) -> ContainerStatus:
        name = run.spec.name
        last = self.tracker.last_terminated(name)
        if run.running and run.started_at is not None:
            state = ContainerState(running=ContainerStateRunning(started_at=rfc3339(run.started_at)))
        elif run.terminated is not None:
            state = ContainerState(terminated=run.terminated)
        elif run.waiting is not None:
            state = ContainerState(waiting=ContainerStateWaiting(reason=run.waiting[0], message=run.waiting[1]))
        else:
            state = ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
        cid = f"meshwork://{self.uid}/{name}/{run.proc.pid}" if run.running and run.proc else None
        return ContainerStatus(
            name=name, state=state,
            last_state=ContainerState(terminated=last) if last is not None and state.terminated is None
            else ContainerState(),
            ready=run.running and run.ready, restart_count=self.tracker.restart_count(name),
            image=run.spec.image or "", image_id="", container_id=cid,
            started=(run.running and run.started) if run.kind != "init" else None,
        )  # fmt: skip

    def _statuses(self) -> tuple[list[ContainerStatus], list[ContainerStatus]]:
        init = [self._container_status(r) for r in self.runs.values() if r.kind != "regular"]
        regular = [self._container_status(r) for r in self.runs.values() if r.kind == "regular"]
        return init, regular

    def status(self) -> dict[str, Any]:
        init, regular = self._statuses()
        previous = self.pod.status.conditions if self.pod.status else None
        conditions = pod_conditions(self.pod.spec, self.phase, init, regular,
                                    sandbox_ready=bool(self.ip) and self.phase not in ("Succeeded", "Failed"),
                                    previous=previous, now=rfc3339(time.time()))  # fmt: skip
        from meshwork.model.pod import PodIP, PodStatus

        host = self.agent.host_ip
        status = PodStatus(
            phase=self.phase, conditions=conditions, host_ip=host, host_ips=[PodIP(ip=host)],
            pod_ip=self.ip, pod_ips=[PodIP(ip=self.ip)] if self.ip else None, start_time=self.start_time,
            init_container_statuses=init or None, container_statuses=regular,
            qos_class=self.pod.status.qos_class if self.pod.status else None,
        )  # fmt: skip
        wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        for key in ("reason", "message", "nominatedNodeName"):
            wire.setdefault(key, None)
        return wire

    def _mark_dirty(self) -> None:
        self._status_dirty.set()

    async def _status_writer(self) -> None:
        """Write the status when it changed; one write in flight per pod, the newest wins."""
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            await self._flush_status()

    def _fingerprint(self) -> tuple[object, ...]:
        """What the status is made of, cheaply: unchanged means no status to build or send."""
        runs = tuple(
            (r.running, r.ready, r.started, r.waiting, id(r.terminated), r.started_at,
             self.tracker.restart_count(r.spec.name), id(self.tracker.last_terminated(r.spec.name)))
            for r in self.runs.values()
        )  # fmt: skip
        conds = tuple((c.type, c.status) for c in (self.pod.status.conditions or ())) if self.pod.status else ()
        return (self.phase, self.ip, runs, conds)

    async def _flush_status(self) -> None:
        reported, self._unlink_after_report = self._unlink_after_report, []
        fingerprint = self._fingerprint()
        if fingerprint == self._last_fingerprint:
            self._unlink_reported(reported)
            return
        wire = self.status()
        comparable = {k: v for k, v in wire.items() if k != "conditions"}
        comparable["conditions"] = [(c["type"], c["status"], c.get("reason")) for c in wire["conditions"]]
        if comparable == self._last_status:
            self._unlink_reported(reported)
            return
        try:
            updated = await self.agent.api.patch_status(PODS, self.ns, self.name, {"status": wire})
        except Exception as exc:  # the server is away or the pod is gone: the next change retries
            log.debug("pod %s/%s: status write failed: %s", self.ns, self.name, exc)
            self._unlink_after_report[:0] = reported
            await asyncio.sleep(0.5)
            self._status_dirty.set()
            return
        self._unlink_reported(reported)
        if log.isEnabledFor(logging.DEBUG):
            ready = [c["type"] for c in wire["conditions"] if c.get("status") == "True"]
            log.debug("pod %s/%s: status written: %s, %s", self.ns, self.name, self.phase, ", ".join(ready))
        self._last_status = comparable
        self._last_fingerprint = fingerprint
        del updated  # the watch brings the new object, in order with every other change

    def _unlink_reported(self, reported: list[tuple[Path, int]]) -> None:
        for path, pid in reported:
            inst = Instance.load(path)
            if inst is not None and inst.pid == pid:  # not a newer instance started since
                path.unlink(missing_ok=True)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.agent.record_event(self.pod, type_, reason, message)


# Imports used only for typing the sources.
__all__ = ["ConfigMap", "PodWorker", "Run", "Secret", "Service"]
