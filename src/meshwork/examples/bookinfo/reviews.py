"""bookinfo ``reviews``: two reviews of the book, with or without the reviewers' stars.

The version is chosen as the original images choose it, by environment:
``ENABLE_RATINGS=true`` makes it call ``ratings`` (v2 and v3), and
``STAR_COLOR`` colours the stars (v2 ``black``, v3 ``red``). The call to
ratings times out after 10 s for black stars and 2.5 s otherwise, as in the
original; when it fails each review carries ``{"error": "Ratings service is
currently unavailable"}`` instead of stars.
"""

from __future__ import annotations

import os
from typing import Any

from meshwork.examples.bookinfo.web import (
    Reply,
    Request,
    forward_headers,
    get_json,
    json_reply,
    serve,
    service_url,
)

BLACK_TIMEOUT_S = 10.0  # the original's ratings timeout for black stars (v2) ...
OTHER_TIMEOUT_S = 2.5  # ... and for any other colour (v3)
UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
)  # fmt: skip


def ratings_enabled() -> bool:
    return os.environ.get("ENABLE_RATINGS", "").lower() == "true"


def star_color() -> str:
    return os.environ.get("STAR_COLOR") or "black"


def fetch_ratings(product_id: int, headers: dict[str, str]) -> dict[str, Any]:
    """Each reviewer's stars from the ratings service; empty when it could not be reached."""
    timeout = BLACK_TIMEOUT_S if star_color() == "black" else OTHER_TIMEOUT_S
    status, body = get_json(service_url("ratings", f"ratings/{product_id}"), headers, timeout)
    if status == 200 and isinstance(body, dict) and isinstance(body.get("ratings"), dict):
        return dict(body["ratings"])
    return {}


def reviews_for(product_id: int, headers: dict[str, str]) -> dict[str, Any]:
    stars = fetch_ratings(product_id, headers) if ratings_enabled() else {}
    out = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if ratings_enabled():
            if isinstance(stars.get(reviewer), int):
                review["rating"] = {"stars": stars[reviewer], "color": star_color()}
            else:
                review["rating"] = {"error": UNAVAILABLE}
        out.append(review)
    return {"id": str(product_id), "podname": os.environ.get("HOSTNAME", ""),
            "clustername": os.environ.get("CLUSTER_NAME", "null"), "reviews": out}  # fmt: skip


def handle(req: Request) -> Reply:
    path = req.path.split("?", 1)[0]
    if path == "/health":
        return json_reply(200, {"status": "Reviews is healthy"})
    if not path.startswith("/reviews/"):
        return json_reply(404, {"error": f"{path} not found"})
    try:
        product_id = int(path[len("/reviews/"):])
    except ValueError:
        return json_reply(404, {"error": "please provide numeric product id"})
    return json_reply(200, reviews_for(product_id, forward_headers(req.headers)))


def main() -> None:
    serve(handle, "reviews")


if __name__ == "__main__":
    main()
