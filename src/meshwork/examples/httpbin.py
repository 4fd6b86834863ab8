"""httpbin for the samples' httpbin images: the real ``httpbin`` package from PyPI.

``python -m meshwork.examples.httpbin [--port N]`` serves httpbin's WSGI app
with werkzeug's threaded server on ``$POD_IP``. The package is the optional
``samples`` extra (``pip install 'meshwork[samples]'``); without it this
exits with that instruction, so the pod's log says what is missing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

DEFAULT_PORT = 8080  # go-httpbin's port, as istio/samples/httpbin/httpbin.yaml's containerPort says


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshwork.examples.httpbin")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    parser.add_argument("--host", default=os.environ.get("POD_IP") or "127.0.0.1")
    opts = parser.parse_args(argv)
    try:
        app = importlib.import_module("httpbin").app
        from werkzeug.serving import run_simple
    except ImportError as exc:
        print(f"httpbin is not installed ({exc}): pip install 'meshwork[samples]'", file=sys.stderr)
        return 1
    print(f"httpbin listening on http://{opts.host}:{opts.port}", flush=True)
    run_simple(opts.host, opts.port, app, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
