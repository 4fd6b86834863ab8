"""``make demo``: start meshwork, apply the example app, show what the server holds, stop.

It uses a fresh data dir under /tmp so it never touches ``~/.meshwork``, and
always stops the server it started, even when a step fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESHWORK = [sys.executable, "-m", "meshwork"]


def step(title: str, *args: str, check: bool = True) -> None:
    print(f"\n$ meshwork {' '.join(args)}    # {title}", flush=True)
    result = subprocess.run([*MESHWORK, *args], check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"demo step failed: meshwork {' '.join(args)} (exit {result.returncode})")


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
        time.sleep(1)  # the controllers work in the background
        step("controllers made ReplicaSets, pods and Endpoints (pods wait for a node agent)",
             "get", "replicasets,pods,endpoints", "-n", "shop")
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
