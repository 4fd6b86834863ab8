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

What lives here: the loop, what is due (dependencies, start order, restarts,
probes), starting a container, recording its exit, the pod's addresses.
What must not: the container's view and its restore after an agent restart
(``agent.run``), its argv and env (``agent.launch``), volumes
(``agent.volumes``), the token mount (``agent.satoken``), why a port could
not be taken (``agent.diagnose``), the graceful stop (``agent.termination``),
building and writing the status (``agent.podstatus``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshwork.agent import runtime, satoken, termination
from meshwork.agent.diagnose import bind_conflict, wildcard_binds
from meshwork.agent.images import REASON_NOT_FOUND
from meshwork.agent.launch import container_command
from meshwork.agent.notify import NOTIFY_ENV, ReadyNotify
from meshwork.agent.podstatus import StatusWriter, container_statuses, fingerprint, pod_status
from meshwork.agent.run import Run, adopted_env, restore_runs
from meshwork.agent.runtime import Instance, Process
from meshwork.agent.standby import STANDBY_ARGV
from meshwork.agent.volumes import write_volumes
from meshwork.core.inject import APP_IP_ENV, SIDECAR_NAME, app_ip
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
)
from meshwork.model.core import ConfigMap, Secret, Service
from meshwork.model.pod import ContainerStatus, Pod, PodPhase

if TYPE_CHECKING:
    from meshwork.agent.node import Agent

log = logging.getLogger("meshwork.agent")

CONFIG_RETRY_S = 5.0  # a container waiting on a missing ConfigMap/Secret/image is retried this often
DEPENDS_ON = "meshwork.io/depends-on"  # pod annotation: Services that must be ready before the pod starts
REASON_DEPENDENCIES = "WaitingForDependencies"
DEPENDS_POLL_S = 0.5
PORT_CHECK_AFTER_S = 1.0  # a started container is checked once for a 0.0.0.0 listener after this
KIND_ORDER: dict[ContainerKind, int] = {"init": 0, "sidecar": 0, "regular": 1}


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
        self.status_writer = StatusWriter(agent.api, self.ns, self.name, build=self.status,
                                          fingerprint=self._fingerprint)  # fmt: skip
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
        self.status_writer.start()

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
                self.status_writer.mark_dirty()
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
        restore_runs(self.runs, self.tracker, self.pod.status, self.pod.spec.restart_policy, time.time())
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
        write_volumes(self.dir, self.pod, self.agent.sources)
        # Beside the loop, not before it: the injected proxy does not use the token and starts now
        # (on a cold start's path); every other container waits for the mount (``_drive``).
        self._token_task = asyncio.create_task(self._mount_service_account_token(), name=f"token {self.name}")

    def _token_mounted(self) -> bool:
        return self._token_task is not None and self._token_task.done()

    async def _mount_service_account_token(self) -> None:
        """The ServiceAccount token volume (``agent.satoken.mount_token``); the pod's loop looks again
        once it is done."""
        try:
            self.token_dir = await satoken.mount_token(
                self.agent.api, self.pod, self.dir, config_maps=lambda: self.agent.sources.config_maps(self.ns),
                stopped=lambda: bool(self.gone or self.shutdown or self.pod.metadata.deletion_timestamp),
                event=self.event)  # fmt: skip
        finally:
            self.wake.set()

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
                    for message in wildcard_binds(run, self.agent, self.address_of(run.spec.name)):
                        self.event("Warning", "WildcardBind", message)
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
        missing = write_volumes(self.dir, self.pod, self.agent.sources)
        if missing is not None:  # upstream: the pod stays in ContainerCreating until its volumes mount
            if missing != self._mount_problem:
                self.event("Warning", "FailedMount", missing)
            self._mount_problem = missing
            run.waiting = ("ContainerCreating", None)
            run.retry_at = now + CONFIG_RETRY_S
            return
        self._mount_problem = None
        argv, problem = container_command(self, run)
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
        unenforced = None if restart else self.agent.resources.unenforced(c)
        if unenforced is not None:  # said once per container (``describe`` shows it)
            self.event("Warning", "LimitsNotEnforced", unenforced)
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
                run.env, run.cwd = adopted_env(run, self.dir)
            run.logs = self.agent.open_logs(self.log_dir / c.name, self.tracker.restart_count(c.name),
                                            self.dir / f"{c.name}.out", self.dir / f"{c.name}.err")  # fmt: skip
        proc.exited.add_done_callback(functools.partial(self._on_exit, run, proc))
        self.agent.watch_group(proc.pid, c, self, run)

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
        self.status_writer.unlink_after_report(self._instance_path(run.spec.name), proc.pid)
        self.agent.close_logs(run.logs)
        run.logs = None
        run.proc = None
        self._record_exit(run, code, run.started_at or time.time(), time.time(), oom=oom)
        self.wake.set()

    def _record_exit(self, run: Run, code: int, started: float, finished: float, *, oom: bool = False) -> None:
        name = run.spec.name
        if oom:
            self.event("Warning", "OOMKilling", f"Memory cgroup out of memory: killed container {name}")
        message = None
        if code != 0 and run.ports and not self.stopping:  # why it could not listen (agent.diagnose)
            log_file = self.log_dir / name / f"{self.tracker.restart_count(name)}.log"
            message = bind_conflict(run, self.agent, log_file=log_file, pod_ip=self.ip, app_ip=self.app_ip)
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
        """Stop the pod in the safe order (``agent.termination``), report it, and confirm the deletion."""
        self.stopping = True
        if self._token_task is not None:
            self._token_task.cancel()
        grace = termination.grace_period(self.pod)
        deadline = time.monotonic() + grace
        running = [r for r in self.runs.values() if r.running]
        if self.shutdown:
            self.status_writer.cancel()
        if running and not self.gone and not self.shutdown:
            for run in running:
                run.ready = False
            if self.ip:
                await termination.leave_endpoints(self.agent.sources, self.ns, self.ip,
                                                  min(termination.ENDPOINTS_DRAIN_MAX_S, grace / 2),
                                                  self.status_writer.flush)  # fmt: skip
        await termination.stop_in_order(running, deadline, grace, event=self.event, address_of=self.address_of)
        for task in list(self._probe_tasks):
            task.cancel()
        if self.phase not in ("Succeeded", "Failed") and not self.shutdown:
            self.phase = termination.stopped_phase(self.pod, self._phase(), self.runs.values())
        if self.shutdown:
            return  # the node is going away: its pods' last report stands until it is back
        if not self.gone:
            await self.status_writer.flush()
            await self.agent.api.confirm_pod_deleted(self.ns, self.name, self.uid)
        self.cleanup()

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
        self.status_writer.cancel()

    # -- status (agent.podstatus) ---------------------------------------------------------

    def _statuses(self) -> tuple[list[ContainerStatus], list[ContainerStatus]]:
        return container_statuses(self.runs.values(), self.uid, self.tracker)

    def status(self) -> dict[str, Any]:
        """The pod's status in wire form, as the node writes it."""
        return pod_status(self.pod, self.phase, self._statuses(), pod_ip=self.ip, host_ip=self.agent.host_ip,
                          start_time=self.start_time, now=time.time())  # fmt: skip

    def _fingerprint(self) -> tuple[object, ...]:
        return fingerprint(self.pod, self.phase, self.ip, self.runs.values(), self.tracker)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.agent.record_event(self.pod, type_, reason, message)


# Imports used only for typing the sources.
__all__ = ["ConfigMap", "PodWorker", "Run", "Secret", "Service"]
