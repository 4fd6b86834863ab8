"""What a container runs: its argv, environment and working directory.

What lives here: ``container_command``, which turns a container of a pod
into what ``agent.runtime.spawn`` needs, as the kubelet's runtime would:

* the command: ``command``/``args`` with ``$(VAR)`` expanded against the
  container's env, or, for a container with only an ``image``, the image
  catalogue's entry (``agent.images``; an image with no entry is an
  ErrImageNeverPull-like waiting reason, not a crash);
* the environment, in order: a few of the agent's own variables (PATH,
  HOME, locale ...), the catalogue entry's, the node's (``POD_IP``, the
  proxy variables of a meshed pod: ``Agent.pod_env``), the container's own
  (``env``/``envFrom`` with its ConfigMap, Secret, fieldRef and
  resourceFieldRef sources: ``core.podenv``), then the bind shim's preload
  (``agent.binding``), which keeps an ``LD_PRELOAD`` the app set;
* the working dir: ``workingDir``, else the entry's, else the pod's root.

A missing source is the waiting (reason, message) that holds the container
(CreateContainerConfigError, CreateContainerError), as upstream reports it.

What must not live here: spawning and adopting processes (``agent.runtime``),
when a container starts (``agent.worker``), env semantics (``core.podenv``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from meshwork.agent.images import REASON_NOT_FOUND
from meshwork.core.podenv import container_env, expand_command
from meshwork.model.pod import PodIP, PodStatus

if TYPE_CHECKING:
    from meshwork.agent.run import Run
    from meshwork.agent.worker import PodWorker

__all__ = ["BASE_ENV_KEYS", "container_command"]

# The agent's own variables every container gets (a process-based runtime has no image env to give it).
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")


def container_command(worker: PodWorker, run: Run) -> tuple[list[str] | None, tuple[str, str] | None]:
    """The argv to run (``run.env`` and ``run.cwd`` set), or the waiting (reason, message) that stops it."""
    agent, c = worker.agent, run.spec
    entry = None
    if not c.command:
        entry = agent.catalogue.lookup(c.image or "")
        if entry is None:
            return None, (REASON_NOT_FOUND, agent.catalogue.missing_message(c.image or ""))
    pod = worker.pod
    address = worker.address_of(c.name)  # status.podIP fieldRefs: a meshed app's own address
    if address and (pod.status is None or pod.status.pod_ip != address):
        pod = pod.model_copy(deep=True)
        if pod.status is None:
            pod.status = PodStatus()
        pod.status.pod_ip = address
        pod.status.pod_ips = [PodIP(ip=address)]
        pod.status.host_ip = agent.host_ip
    built = container_env(pod, c, config_maps=agent.sources.config_maps(worker.ns),
                          secrets=agent.sources.secrets(worker.ns), services=agent.sources.services(worker.ns),
                          node_allocatable=agent.allocatable)  # fmt: skip
    for ev in built.events:
        worker.event(ev.type, ev.reason, ev.message)
    if built.problems:
        return None, ("CreateContainerConfigError", built.problems[0])
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    if entry is not None:
        env.update(dict(entry.env))
    node_vars = agent.pod_env(worker, c)
    env.update(node_vars)
    env.update(built.as_dict())
    agent.bind_rewrite(worker, c, env)  # after the app's own env: its LD_PRELOAD is kept
    # The node's variables (POD_IP ...) are part of the container's env, so $(POD_IP) expands.
    command, args = expand_command(c, (*node_vars.items(), *built.env))
    if entry is not None:
        command = list(entry.command)
        if not c.args:
            args = list(entry.args)
    run.env = env
    run.cwd = c.working_dir or (entry.working_dir if entry and entry.working_dir else None) or str(
        worker.dir / "root")  # fmt: skip
    if not Path(run.cwd).is_dir():
        return None, ("CreateContainerError", f'working directory "{run.cwd}" does not exist')
    return command + args, None
