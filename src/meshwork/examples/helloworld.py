"""helloworld for Istio's ``examples-helloworld-v1``/``-v2`` images (and Argo's ``rollouts-demo``).

``GET /hello`` answers ``Hello version: <v>, instance: <pod name>`` as the
original does, with the version taken from ``SERVICE_VERSION`` (the catalogue
sets it per image); port 5000 by default, as the sample's containerPort.
``GET /color`` answers the version as a JSON string, as Argo Rollouts' demo
app answers its colour.

``ERROR_RATE`` (a percentage, as the demo app's variable of that name; 0 by
default) answers that share of ``/hello`` and ``/color`` requests with 500,
at random: a bad release to roll back. Other paths never fail, so a readiness
probe on one of them still passes.
"""

from __future__ import annotations

import json
import os
import random
import sys

from meshwork.examples.bookinfo.web import Reply, Request, serve

DEFAULT_PORT = 5000


def _error_rate() -> float:
    try:
        return max(0.0, min(100.0, float(os.environ.get("ERROR_RATE") or 0))) / 100
    except ValueError:
        return 0.0


ERROR_SHARE = _error_rate()


def handle(req: Request) -> Reply:
    path = req.path.split("?", 1)[0]
    version = os.environ.get("SERVICE_VERSION", "v1")
    if path in ("/hello", "/color") and ERROR_SHARE and random.random() < ERROR_SHARE:
        return Reply(500, f"Internal Server Error (version {version})\n".encode(), "text/plain")
    if path == "/hello":
        text = f"Hello version: {version}, instance: {os.environ.get('HOSTNAME', '')}\n"
        return Reply(200, text.encode(), "text/html; charset=utf-8")
    if path == "/color":
        return Reply(200, json.dumps(version).encode(), "application/json")
    return Reply(404, b"Not Found", "text/plain")


def main() -> None:
    serve(handle, "helloworld", sys.argv[1:] or [str(DEFAULT_PORT)])


if __name__ == "__main__":
    main()
