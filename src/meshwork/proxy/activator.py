"""The activator: requests for a workload scaled to zero wait in the proxy while it starts.

What lives here: ``Activator`` (one per proxy) and ``ActivatingDecider``, a
wrapper over a listener's decider. A request routed to the cluster of a
Service that the snapshot lists under ``scaleToZero`` (``core.scaletozero``)
while the cluster has no endpoint gets a ``plan.Hold``: the engine keeps it
(reading its body meanwhile) until the hold is over. Per Service one
activation runs, however many requests wait: it asks the control plane to
start the workload (``POST .../namespaces/{ns}/services/{name}/activate``
with the proxy's token; again every ``REPOST_S`` while it waits, which also
brings back any reason the start failed), and watches the cluster until a
snapshot gives it a ready endpoint. Then every waiting request goes on, in
arrival order; when the control plane reports a start that failed, or none
is ready after ``ACTIVATION_TIMEOUT_S``, each is answered 503 (flag UH) with
the reason.

What must not live here: deciding when to scale (``control.scaletozero``),
the engine's waiting (``proxy.http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from meshwork.core.http1 import Request
from meshwork.proxy import plan
from meshwork.proxy.mesh import ClusterState

__all__ = ["ACTIVATION_TIMEOUT_S", "ActivatingDecider", "Activator"]

log = logging.getLogger("meshwork.proxy")

API = "/apis/mesh.meshwork.io/v1"
# How long a request waits for a workload to start (Knative's activator waits up to its
# request timeout; a Python app here is up in about a second). MESHWORK_ACTIVATION_TIMEOUT overrides.
ACTIVATION_TIMEOUT_S = float(os.environ.get("MESHWORK_ACTIVATION_TIMEOUT", "60"))
# How often the cluster is looked at while waiting: small next to a start, small for the loop.
POLL_S = 0.005
# How often the activation is asked again (a lost scale-up is redone; a failed start is reported).
REPOST_S = 1.0
# An activation answer larger than this is not read (it is a few hundred bytes).
MAX_ANSWER = 64 * 1024


class _Waiting:
    """A request's place in an activation; ``cancel`` when its client leaves."""

    __slots__ = ("activation", "done")

    def __init__(self, activation: _Activation, done: Callable[[str | None], None]) -> None:
        self.activation, self.done = activation, done

    def cancel(self) -> None:
        with contextlib.suppress(ValueError):
            self.activation.waiters.remove(self)


class _Activation:
    def __init__(self) -> None:
        self.waiters: list[_Waiting] = []
        self.task: asyncio.Task[None] | None = None


class _Hold:
    __slots__ = ("activator", "cluster", "target")

    def __init__(self, activator: Activator, target: tuple[str, str], cluster: str) -> None:
        self.activator, self.target, self.cluster = activator, target, cluster

    def wait(self, done: Callable[[str | None], None]) -> plan.Cancellable:
        return self.activator.join(self.target, self.cluster, done)


class Activator:
    """Activations in flight, and which clusters may be activated (from the latest snapshot)."""

    def __init__(self, host: str, port: int, token: str, states: Mapping[str, ClusterState], *,
                 timeout: float = ACTIVATION_TIMEOUT_S) -> None:  # fmt: skip
        self.host, self.port, self.token = host, port, token
        self.states = states
        self.timeout = timeout
        self.activatable: dict[str, tuple[str, str]] = {}  # service hostname -> (namespace, service)
        self._running: dict[tuple[str, str], _Activation] = {}
        self.activations = 0  # started so far (each may serve many requests)

    def update(self, raw: Mapping[str, Any]) -> None:
        """Learn the Services backed by scale-to-zero Deployments from a snapshot."""
        domain = str(raw.get("domain") or "cluster.local")
        found: dict[str, tuple[str, str]] = {}
        for entry in raw.get("scaleToZero") or ():
            ns = str(entry.get("namespace") or "default")
            for svc in entry.get("services") or ():
                found[f"{svc}.{ns}.svc.{domain}"] = (ns, str(svc))
        self.activatable = found

    def hold_for(self, cluster: plan.Cluster) -> plan.Hold | None:
        """A hold when ``cluster`` has no endpoint and its Service can be woken; else None."""
        state = getattr(cluster, "state", cluster)  # a consistent-hash cluster wraps its state
        if not isinstance(state, ClusterState) or state.endpoints or not self.activatable:
            return None
        target = self.activatable.get(state.spec.host)
        return _Hold(self, target, state.name) if target is not None else None

    def join(self, target: tuple[str, str], cluster: str, done: Callable[[str | None], None]) -> plan.Cancellable:
        activation = self._running.get(target)
        if activation is None:
            activation = self._running[target] = _Activation()
            activation.task = asyncio.get_running_loop().create_task(self._activate(target, cluster, activation))
            self.activations += 1
        waiting = _Waiting(activation, done)
        activation.waiters.append(waiting)
        return waiting

    def _ready(self, cluster: str) -> bool:
        state = self.states.get(cluster)
        return state is not None and bool(state.endpoints)

    async def _activate(self, target: tuple[str, str], cluster: str, activation: _Activation) -> None:
        loop = asyncio.get_running_loop()
        ns, svc = target
        deadline = loop.time() + self.timeout
        next_post = 0.0
        failure: str | None = None
        try:
            while not self._ready(cluster):
                now = loop.time()
                if now >= deadline:
                    failure = f"{svc}.{ns} had no ready endpoint {self.timeout:g}s after it was activated"
                    break
                if now >= next_post:
                    next_post = now + REPOST_S
                    try:
                        failure = await self._post(ns, svc)
                    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                        log.info("activating %s.%s: %s; asking again", svc, ns, exc)
                    if failure is not None:
                        break
                await asyncio.sleep(POLL_S)
        except Exception as exc:  # never leave requests waiting for a task that died
            log.exception("activating %s.%s failed", svc, ns)
            failure = f"activating {svc}.{ns} failed: {type(exc).__name__}"
        finally:
            self._running.pop(target, None)
            waiters, activation.waiters = activation.waiters, []
            for w in waiters:
                try:
                    w.done(failure)
                except Exception:
                    log.exception("a request held for %s.%s failed to resume", svc, ns)

    async def _post(self, ns: str, svc: str) -> str | None:
        """Ask the control plane to start the Service's workload; the reason it cannot, or None."""
        path = f"{API}/namespaces/{quote(ns, safe='')}/services/{quote(svc, safe='')}/activate"
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write((f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
                          "Content-Length: 0\r\nConnection: close\r\n\r\n").encode())  # fmt: skip
            await writer.drain()
            data = await asyncio.wait_for(reader.read(MAX_ANSWER), REPOST_S * 5)
            while chunk := await asyncio.wait_for(reader.read(MAX_ANSWER), REPOST_S * 5):
                data += chunk
                if len(data) > MAX_ANSWER:
                    break
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status < 300:
            return None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        reason = answer.get("failure") or answer.get("message") or body[:200].decode("latin-1")
        return f"{svc}.{ns} could not be started: {reason}"


class ActivatingDecider:
    """``inner``'s plans, with a hold on those for a Service that is at zero and can be woken."""

    __slots__ = ("activator", "inner")

    def __init__(self, inner: plan.Decider, activator: Activator) -> None:
        self.inner, self.activator = inner, activator

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        chosen = self.inner.decide(request, downstream)
        if type(chosen) is plan.Forward:
            hold = self.activator.hold_for(chosen.cluster)
            if hold is not None:
                return dataclasses.replace(chosen, hold=hold)
        return chosen
