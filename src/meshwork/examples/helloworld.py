"""helloworld for Istio's ``examples-helloworld-v1``/``-v2`` images.

``GET /hello`` answers ``Hello version: <v>, instance: <pod name>`` as the
original does, with the version taken from ``SERVICE_VERSION`` (the catalogue
sets it per image); port 5000 by default, as the sample's containerPort.
"""

from __future__ import annotations

import os
import sys

from meshwork.examples.bookinfo.web import Reply, Request, serve

DEFAULT_PORT = 5000


def handle(req: Request) -> Reply:
    if req.path.split("?", 1)[0] == "/hello":
        version = os.environ.get("SERVICE_VERSION", "v1")
        text = f"Hello version: {version}, instance: {os.environ.get('HOSTNAME', '')}\n"
        return Reply(200, text.encode(), "text/html; charset=utf-8")
    return Reply(404, b"Not Found", "text/plain")


def main() -> None:
    serve(handle, "helloworld", sys.argv[1:] or [str(DEFAULT_PORT)])


if __name__ == "__main__":
    main()
