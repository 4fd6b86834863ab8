"""``logs``, ``exec`` and ``top``: what runs inside pods, through the API server and the agents."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from meshwork.cli.commands import namespace_option
from meshwork.cli.context import reports_errors, session
from meshwork.client import Client
from meshwork.errors import BadRequest, MeshworkError, NotFound

_SINCE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_since(text: str) -> int:
    """``--since 5m`` / ``1h30m`` / ``90s`` / ``45`` in whole seconds (at least 1)."""
    value = text.strip()
    if value.isdigit():
        return max(1, int(value))
    m = _SINCE.match(value)
    if not value or m is None or not any(m.groups()):
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m or 1h", param_hint="--since")
    h, mi, s = (int(g or 0) for g in m.groups())
    return max(1, h * 3600 + mi * 60 + s)


def _pod_path(namespace: str, name: str, sub: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}/{sub}"


def _pod_name(target: str) -> str:
    kind, _, name = target.partition("/")
    if name and kind not in ("pod", "pods", "po"):
        raise MeshworkError(f"{target}: logs and exec take a pod (NAME or pod/NAME)")
    return name or kind


@click.command("logs")
@click.argument("pod")
@namespace_option
@click.option("-c", "--container", default=None, help="The container (needed when the pod has several).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the container stops.")
@click.option("-p", "--previous", is_flag=True, help="The previous (restarted) instance's log.")
@click.option("--tail", type=int, default=-1, help="Only the last N lines (-1: all).")
@click.option("--since", "since", default=None, help="Only lines newer than this, e.g. 30s, 5m, 1h.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@reports_errors
def logs_cmd(pod: str, namespace: str | None, container: str | None, follow: bool, previous: bool,
             tail: int, since: str | None, timestamps: bool) -> None:  # fmt: skip
    """Print a container's log (kubectl logs)."""
    sess = session()
    ns = sess.namespace(namespace)
    query: list[tuple[str, str]] = []
    if container:
        query.append(("container", container))
    for flag, on in (("follow", follow), ("previous", previous), ("timestamps", timestamps)):
        if on:
            query.append((flag, "true"))
    if tail >= 0:
        query.append(("tailLines", str(tail)))
    if since:
        query.append(("sinceSeconds", str(parse_since(since))))
    out = sys.stdout.buffer
    for chunk in sess.client().stream("GET", _pod_path(ns, _pod_name(pod), "log"), query=query):
        out.write(chunk)
        out.flush()


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@namespace_option
@click.option("-c", "--container", default=None, help="The container (default: the only app container).")
@reports_errors
def exec_cmd(pod: str, command: tuple[str, ...], namespace: str | None, container: str | None) -> None:
    """Run COMMAND in a pod's container environment: meshwork exec POD -- CMD [ARGS]."""
    sess = session()
    ns = sess.namespace(namespace)
    query = [("command", c) for c in command]
    if container:
        query.append(("container", container))
    code = 0
    buffer = b""
    for chunk in sess.client().stream("POST", _pod_path(ns, _pod_name(pod), "exec"), query=query):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            frame = json.loads(line)
            if "stdout" in frame:
                sys.stdout.write(frame["stdout"])
                sys.stdout.flush()
            if "stderr" in frame:
                sys.stderr.write(frame["stderr"])
                sys.stderr.flush()
            if "exitCode" in frame:
                code = int(frame["exitCode"])
    if code:
        raise SystemExit(code)


def _summaries(client: Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every node's ``/stats/summary`` (through any pod's node proxy is not needed: nodes list it)."""
    nodes = client.request("GET", "/api/v1/nodes")["items"]
    out = []
    for node in nodes:
        name = node["metadata"]["name"]
        try:
            out.append(client.request("GET", f"/api/v1/nodes/{name}/proxy/stats/summary"))
        except (NotFound, BadRequest, MeshworkError):
            continue
    return nodes, out


def _cores(m: float) -> str:
    return f"{round(m * 1000)}m"


def _mib(b: float) -> str:
    return f"{round(b / (1024 * 1024))}Mi"


@click.command("top")
@click.argument("what", type=click.Choice(["nodes", "node", "pods", "pod", "no", "po"]))
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="Pods of every namespace.")
@click.option("--containers", is_flag=True, help="One line per container.")
@reports_errors
def top_cmd(what: str, namespace: str | None, all_namespaces: bool, containers: bool) -> None:
    """CPU and memory of nodes or pods (their process groups), sampled over half a second."""
    sess = session()
    client = sess.client()
    _, first = _summaries(client)
    time.sleep(0.5)
    nodes, second = _summaries(client)
    before = {s["node"]["nodeName"]: s for s in first}
    if what in ("nodes", "node", "no"):
        alloc = {n["metadata"]["name"]: n.get("status", {}).get("allocatable", {}) for n in nodes}
        rows: list[tuple[str, ...]] = [("NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)")]
        for s in second:
            name = s["node"]["nodeName"]
            prev = before.get(name, s)
            dt = max(1e-3, s["node"]["time"] - prev["node"]["time"])
            cpu = (s["node"].get("cpuSeconds", 0) - prev["node"].get("cpuSeconds", 0)) / dt
            mem = s["node"].get("memoryBytes", 0)
            cap_cpu = float(str(alloc.get(name, {}).get("cpu", "1")).rstrip("m") or 1)
            cap_mem = _bytes(alloc.get(name, {}).get("memory", "0"))
            rows.append((name, _cores(cpu), f"{round(100 * cpu / cap_cpu)}%", _mib(mem),
                         f"{round(100 * mem / cap_mem)}%" if cap_mem else "<unknown>"))  # fmt: skip
        _table(rows)
        return
    ns = None if all_namespaces else sess.namespace(namespace)
    prev_c: dict[tuple[str, str, str], float] = {}
    prev_t: dict[str, float] = {}
    for s in first:
        prev_t[s["node"]["nodeName"]] = s["node"]["time"]
        for p in s["pods"]:
            for c in p["containers"]:
                prev_c[(p["podRef"]["namespace"], p["podRef"]["name"], c["name"])] = c["cpuSeconds"]
    header: tuple[str, ...] = ("NAMESPACE",) if all_namespaces else ()
    header += ("POD", "NAME", "CPU(cores)", "MEMORY(bytes)") if containers else ("NAME", "CPU(cores)", "MEMORY(bytes)")
    rows2: list[tuple[str, ...]] = [header]
    for s in second:
        dt = max(1e-3, s["node"]["time"] - prev_t.get(s["node"]["nodeName"], s["node"]["time"] - 0.5))
        for p in sorted(s["pods"], key=lambda p: (p["podRef"]["namespace"], p["podRef"]["name"])):
            pns, pname = p["podRef"]["namespace"], p["podRef"]["name"]
            if ns is not None and pns != ns:
                continue
            usage = []
            for c in p["containers"]:
                before_c = prev_c.get((pns, pname, c["name"]), c["cpuSeconds"])
                usage.append((c["name"], max(0.0, (c["cpuSeconds"] - before_c) / dt), c["memoryBytes"]))
            lead: tuple[str, ...] = (pns,) if all_namespaces else ()
            if containers:
                rows2 += [(*lead, pname, n, _cores(cpu), _mib(mem)) for n, cpu, mem in usage]
            else:
                rows2.append((*lead, pname, _cores(sum(u[1] for u in usage)), _mib(sum(u[2] for u in usage))))
    if len(rows2) == 1:
        click.echo(f"No resources found{'' if ns is None else f' in {ns} namespace'}.", err=True)
        return
    _table(rows2)


def _bytes(q: Any) -> float:
    from meshwork.model.pod import parse_quantity

    try:
        return float(parse_quantity(str(q)))
    except (ValueError, ArithmeticError):
        return 0.0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
