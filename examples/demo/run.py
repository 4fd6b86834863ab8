"""``make demo``: start meshwork, run the example app as local processes, poke at it, stop.

It uses a fresh data dir under /tmp so it never touches ``~/.meshwork``, and
always stops the server it started, even when a step fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESHWORK = [sys.executable, "-m", "meshwork"]


def step(title: str, *args: str, check: bool = True) -> None:
    print(f"\n$ meshwork {' '.join(args)}    # {title}", flush=True)
    result = subprocess.run([*MESHWORK, *args], check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"demo step failed: meshwork {' '.join(args)} (exit {result.returncode})")


def get_json(*args: str) -> dict:
    out = subprocess.run([*MESHWORK, *args, "-o", "json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def fetch_each_pod() -> None:
    pods = get_json("get", "pods", "-n", "shop", "-l", "app=catalog")["items"]
    print("\n# every replica listens on port 8080 of its own pod IP:", flush=True)
    for pod in pods:
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
                status = resp.status
        except OSError as exc:
            status = f"error: {exc}"
        print(f"GET http://{ip}:8080/  ->  {status}    ({pod['metadata']['name']})", flush=True)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="meshwork-demo-"))
    os.environ["MESHWORK_HOME"] = str(home)
    os.environ.pop("MESHWORK_SERVER", None)
    os.environ.pop("MESHWORK_TOKEN", None)
    # A port of its own, so the demo never collides with a server the user runs.
    os.environ["MESHWORK_DEMO"] = "1"
    try:
        step("start the control plane in the background", "up", "-d", "--port", "7391")
        step("apply Kubernetes and Istio manifests", "apply", "-f", str(HERE / "app.yaml"))
        step("applying again changes nothing", "apply", "-f", str(HERE / "app.yaml"))
        step("what the server holds", "get", "deployments,services,configmaps", "-n", "shop")
        step("wait until the pods are up (progress as they turn ready)",
             "rollout", "status", "deployment/catalog-v1", "-n", "shop", "--timeout", "60s")
        step("pods are local processes, each with its own loopback IP", "get", "pods", "-n", "shop", "-o", "wide")
        step("Endpoints list the ready pods", "get", "endpoints", "-n", "shop")
        fetch_each_pod()
        step("the node that runs them", "get", "nodes")
        name = get_json("get", "pods", "-n", "shop", "-l", "version=v2")["items"][0]["metadata"]["name"]
        step("a container's log", "logs", name, "-n", "shop", "--tail", "3")
        step("run a command in a pod's environment", "exec", name, "-n", "shop", "--", "sh", "-c", "echo $HOSTNAME at $POD_IP")
        step("CPU and memory of each pod's processes", "top", "pods", "-n", "shop")
        step("scale up, then watch the rollout", "scale", "deployment/catalog-v2", "-n", "shop", "--replicas", "2")
        step("", "rollout", "status", "deployment/catalog-v2", "-n", "shop", "--timeout", "60s")
        step("what happened, as events", "get", "events", "-n", "shop")
        step("Istio routing", "get", "virtualservices,destinationrules", "-n", "shop")
        step("defaults are filled in as upstream fills them", "get", "deployment", "catalog-v2", "-n", "shop", "-o", "yaml")
        step("a typo is refused with file, line and field", "apply", "-f", str(HERE / "broken.yaml"), check=False)
        step("namespaces", "get", "namespaces")
    finally:
        step("stop everything", "down", check=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
