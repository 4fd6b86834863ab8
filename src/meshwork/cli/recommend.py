"""``meshwork recommend``: container requests and limits from observed usage (VPA-style).

What lives here: the click command, the sampling loop (every node agent's
``/stats/summary`` through the API server, as ``meshwork top pods`` reads
it, every ``--interval`` for ``--window``), the table, and ``--apply``,
which writes the recommended resources into the Deployment's pod template
(a read-modify-write with the resourceVersion read, so a concurrent change is
a conflict, retried) and so rolls the Deployment.

Only the containers of the Deployment's template are sized; the injected
sidecar is the mesh's to size. The rules (p90 CPU and peak memory plus a
15 % margin, limits keeping their ratio) are in ``core.autoscale.recommend``.

What must not live here: the arithmetic of a recommendation.
"""

from __future__ import annotations

import time
from typing import Any

import click

from meshwork.cli.commands import namespace_option
from meshwork.cli.context import reports_errors, session
from meshwork.cli.podio import parse_since
from meshwork.client import Client
from meshwork.core.autoscale.recommend import (
    Recommendation,
    Resources,
    Usage,
    cpu_quantity,
    memory_quantity,
    recommend,
)
from meshwork.core.selectors import selector_from_spec
from meshwork.errors import Conflict, MeshworkError
from meshwork.model.corev1 import parse_quantity
from meshwork.model.kinds import REGISTRY

CONFLICT_RETRIES = 5  # another writer racing the --apply write is rare
# /proc counts CPU in 10 ms ticks: over 5 s a 0.2-core rate is read within 1 %
# (over 0.5 s, within 10 %), so a percentile of rates is not a percentile of noise.
INTERVAL_S = 5.0


def _summaries(client: Client) -> list[dict[str, Any]]:
    from meshwork.cli.podio import _summaries as every_node

    return every_node(client)[1]


def _current(container: dict[str, Any]) -> Resources:
    res = container.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}

    def num(d: dict[str, Any], k: str) -> float | None:
        return float(parse_quantity(d[k])) if k in d else None

    return Resources(num(req, "cpu"), num(req, "memory"), num(lim, "cpu"), num(lim, "memory"))


def sample(client: Client, namespace: str, deployments: list[dict[str, Any]], window: float, interval: float
           ) -> dict[tuple[str, str], Usage]:  # fmt: skip
    """Per (deployment, container): CPU rates between consecutive samples and memory readings."""
    selectors = {d["metadata"]["name"]: selector_from_spec(d["spec"].get("selector")) for d in deployments}
    wanted = {d["metadata"]["name"]: {c["name"] for c in d["spec"]["template"]["spec"]["containers"]}
              for d in deployments}  # fmt: skip
    pods_info = REGISTRY.require("", "Pod")
    cpu: dict[tuple[str, str], list[float]] = {}
    mem: dict[tuple[str, str], list[float]] = {}
    last: dict[tuple[str, str], tuple[float, float]] = {}  # (pod, container) -> (time, cpu seconds)
    deadline = time.monotonic() + window
    while True:
        pods = client.list(pods_info, namespace)["items"]
        owner: dict[str, str] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            for name, sel in selectors.items():
                if sel.matches(labels):
                    owner[pod["metadata"]["name"]] = name
        for summary in _summaries(client):
            at = float(summary["node"]["time"])
            for pod in summary.get("pods") or []:
                ref = pod["podRef"]
                deploy = owner.get(ref["name"]) if ref.get("namespace") == namespace else None
                if deploy is None:
                    continue
                for c in pod.get("containers") or []:
                    if c["name"] not in wanted[deploy]:
                        continue
                    key = (deploy, c["name"])
                    mem.setdefault(key, []).append(float(c["memoryBytes"]))
                    prev = last.get((ref["name"], c["name"]))
                    if prev is not None and at > prev[0]:
                        cpu.setdefault(key, []).append(max(0.0, (c["cpuSeconds"] - prev[1]) / (at - prev[0])))
                    last[(ref["name"], c["name"])] = (at, float(c["cpuSeconds"]))
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())) or interval)
    return {key: Usage(cpu.get(key, []), mem.get(key, [])) for key in mem}


def _apply(client: Client, namespace: str, name: str, recs: dict[str, Recommendation]) -> None:
    info = REGISTRY.require("apps", "Deployment")
    for attempt in range(CONFLICT_RETRIES):
        deploy = client.get(info, namespace, name)
        for c in deploy["spec"]["template"]["spec"]["containers"]:
            rec = recs.get(c["name"])
            if rec is None:
                continue
            t = rec.target
            res: dict[str, Any] = {"requests": {"cpu": cpu_quantity(t.cpu_request or 0),
                                                "memory": memory_quantity(t.memory_request or 0)}}  # fmt: skip
            limits = {}
            if t.cpu_limit is not None:
                limits["cpu"] = cpu_quantity(t.cpu_limit)
            if t.memory_limit is not None:
                limits["memory"] = memory_quantity(t.memory_limit)
            if limits:
                res["limits"] = limits
            c["resources"] = res
        try:
            client.update(info, namespace, deploy)
            return
        except Conflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise


@click.command("recommend")
@click.argument("deployment", required=False)
@namespace_option
@click.option("--window", default="5m", show_default=True, help="How long to observe, e.g. 30s, 5m, 1h.")
@click.option("--interval", default=INTERVAL_S, show_default=True, type=float,
              help="Seconds between samples (each CPU sample is the rate over one interval).")
@click.option("--apply", "apply_", is_flag=True, help="Write the recommendations into the Deployment (rolls it).")
@reports_errors
def recommend_cmd(deployment: str | None, namespace: str | None, window: str, interval: float, apply_: bool) -> None:
    """Recommend container requests and limits from observed CPU and memory (VPA-style).

    CPU request = 90th percentile of the observed rate, memory request = peak,
    both plus 15 %; a limit keeps its ratio to the request, none stays none.
    """
    sess = session()
    ns = sess.namespace(namespace)
    client = sess.client()
    info = REGISTRY.require("apps", "Deployment")
    if deployment:
        deployments = [client.get(info, ns, deployment)]
    else:
        deployments = list(client.list(info, ns)["items"])
    if not deployments:
        raise MeshworkError(f"No deployments found in {ns} namespace.")
    seconds = parse_since(window)
    click.echo(f"observing {len(deployments)} deployment(s) in {ns} for {seconds}s ...", err=True)
    usage = sample(client, ns, deployments, float(seconds), max(0.1, interval))
    rows = [("DEPLOYMENT", "CONTAINER", "CPU REQUEST", "CPU LIMIT", "MEMORY REQUEST", "MEMORY LIMIT",
             "CPU P50-P95", "SAMPLES")]  # fmt: skip
    chosen: dict[str, dict[str, Recommendation]] = {}
    for d in deployments:
        name = d["metadata"]["name"]
        for c in d["spec"]["template"]["spec"]["containers"]:
            use = usage.get((name, c["name"]))
            if use is None or not use.cpu:
                rows.append((name, c["name"], "<unknown>", "", "", "", "", "0"))
                continue
            rec = recommend(use, _current(c))
            chosen.setdefault(name, {})[c["name"]] = rec
            t = rec.target
            rows.append((name, c["name"], cpu_quantity(t.cpu_request or 0),
                         cpu_quantity(t.cpu_limit) if t.cpu_limit is not None else "<none>",
                         memory_quantity(t.memory_request or 0),
                         memory_quantity(t.memory_limit) if t.memory_limit is not None else "<none>",
                         f"{cpu_quantity(rec.lower_cpu)}-{cpu_quantity(rec.upper_cpu)}", str(rec.samples)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if apply_:
        for name, recs in chosen.items():
            _apply(client, ns, name, recs)
            click.echo(f"deployment.apps/{name} resources updated")
