"""bookinfo ``ratings``: each reviewer's stars as JSON at ``/ratings/<id>``.

As the original (in-memory version): ``GET /ratings/0`` answers
``{"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}``; ``POST`` stores
the ratings it is sent for that product; a non-numeric id is a 400.
``SERVICE_VERSION=v-faulty`` answers 503 to half the requests and
``v-delayed`` waits 7 s on half of them, as the original's variants do.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

from meshwork.examples.bookinfo.web import Reply, Request, json_reply, serve

DELAYED_SECONDS = 7.0  # the original v-delayed variant's pause

_added: dict[int, dict[str, Any]] = {}
_lock = threading.Lock()


def ratings_for(product_id: int) -> dict[str, Any]:
    with _lock:
        if product_id in _added:
            return _added[product_id]
    return {"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


def handle(req: Request) -> Reply:
    path = req.path.split("?", 1)[0]
    if path == "/health":
        return json_reply(200, {"status": "Ratings is healthy"})
    if not path.startswith("/ratings/"):
        return json_reply(404, {"error": f"{path} not found"})
    try:
        product_id = int(path[len("/ratings/"):])
    except ValueError:
        return json_reply(400, {"error": "please provide numeric product ID"})
    if req.method == "POST":
        try:
            ratings = json.loads(req.body)
        except ValueError:
            return json_reply(400, {"error": "please provide valid ratings JSON"})
        with _lock:
            _added[product_id] = {"id": product_id, "ratings": ratings}
        return json_reply(200, ratings_for(product_id))
    variant = os.environ.get("SERVICE_VERSION", "")
    if variant == "v-faulty" and random.random() <= 0.5:
        return json_reply(503, {"error": "Service unavailable"})
    if variant == "v-delayed" and random.random() <= 0.5:
        time.sleep(DELAYED_SECONDS)
    return json_reply(200, ratings_for(product_id))


def main() -> None:
    serve(handle, "ratings")


if __name__ == "__main__":
    main()
