"""bookinfo ``productpage``: the HTML page that calls ``details`` and ``reviews``.

Behaves as the original:

* ``/productpage`` renders the book, its details and its reviews (with each
  reviewer's stars, ``<font color="black|red">`` and one
  ``glyphicon-star`` per star, or the rating's error), "Error fetching
  product details!" / "Error fetching product reviews!" with the reason
  when a call fails.
* ``POST /login`` (form field ``username``) remembers the user in a ``user``
  cookie and ``GET /logout`` clears it; both redirect back to the referrer.
  The page's calls carry ``end-user: <user>``, which is what routing by user
  matches, plus the tracing headers of the incoming request.
* The call to reviews times out after 3 s and is tried twice (the original's
  deliberate retry, which the fault-injection task relies on: a 7 s ratings
  delay makes the page give up on reviews after about 6 s); details and
  ratings get one 3 s try.
* ``/health``, ``/api/v1/products``, ``/api/v1/products/<id>``,
  ``/api/v1/products/<id>/reviews`` and ``/api/v1/products/<id>/ratings``.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from http.cookies import CookieError, SimpleCookie
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

CALL_TIMEOUT_S = 3.0  # the original's timeout on each call it makes
REVIEWS_TRIES = 2  # the original tries reviews twice ("bug introduced explicitly" for the fault task)
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
PRODUCTS = [{
    "id": 0, "title": "The Comedy of Errors",
    "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
                       "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest "
                       "and one of his most farcical comedies, with a major part of the humour coming from "
                       "slapstick and mistaken identity, in addition to puns and word play.",
}]  # fmt: skip


# -- the calls ---------------------------------------------------------------------


def user_of(req: Request) -> str:
    cookie = SimpleCookie()
    try:
        cookie.load(req.headers.get("cookie", ""))
    except CookieError:
        return ""
    return cookie["user"].value if "user" in cookie else ""


def call_headers(req: Request) -> dict[str, str]:
    """What the page's calls carry: the tracing headers, and ``end-user`` when someone signed in."""
    headers = forward_headers(req.headers)
    headers.pop("end-user", None)  # the user is who signed in, not what a client claims
    user = user_of(req)
    if user:
        headers["end-user"] = user
    return headers


def product_details(product_id: int, headers: dict[str, str]) -> tuple[int, Any]:
    status, body = get_json(service_url("details", f"details/{product_id}"), headers, CALL_TIMEOUT_S)
    if status == 200:
        return 200, body
    return status or 500, {"error": DETAILS_ERROR}


def product_reviews(product_id: int, headers: dict[str, str]) -> tuple[int, Any]:
    status = 0
    for _ in range(REVIEWS_TRIES):
        status, body = get_json(service_url("reviews", f"reviews/{product_id}"), headers, CALL_TIMEOUT_S)
        if status == 200:
            return 200, body
    return status or 500, {"error": REVIEWS_ERROR}


def product_ratings(product_id: int, headers: dict[str, str]) -> tuple[int, Any]:
    status, body = get_json(service_url("ratings", f"ratings/{product_id}"), headers, CALL_TIMEOUT_S)
    if status == 200:
        return 200, body
    return status or 500, {"error": RATINGS_ERROR}


# -- the page ----------------------------------------------------------------------


def _stars(rating: dict[str, Any]) -> str:
    if isinstance(rating.get("stars"), int):
        n = max(0, min(5, rating["stars"]))
        full = '<span class="glyphicon glyphicon-star"></span>\n' * n
        empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * (5 - n)
        return f'<font color="{html.escape(str(rating.get("color", "black")))}">\n{full}{empty}</font>\n'
    if rating.get("error"):
        return f"<p><i>{html.escape(str(rating['error']))}</i></p>\n"
    return ""


def _details_html(status: int, details: Any) -> str:
    if status != 200 or not isinstance(details, dict):
        reason = details.get("error", "") if isinstance(details, dict) else ""
        return ('<h4 class="text-center text-primary">Error fetching product details!</h4>\n'
                f"<p>{html.escape(str(reason))}</p>\n")  # fmt: skip
    rows = "".join(f"<dt>{label}:</dt>{html.escape(str(details.get(key, '')))}\n" for label, key in (
        ("Type", "type"), ("Pages", "pages"), ("Publisher", "publisher"), ("Language", "language"),
        ("ISBN-10", "ISBN-10"), ("ISBN-13", "ISBN-13")))  # fmt: skip
    return f'<h4 class="text-center text-primary">Book Details</h4>\n<dl>\n{rows}</dl>\n'


def _reviews_html(status: int, reviews: Any) -> str:
    if status != 200 or not isinstance(reviews, dict):
        reason = reviews.get("error", "") if isinstance(reviews, dict) else ""
        return ('<h4 class="text-center text-primary">Error fetching product reviews!</h4>\n'
                f"<p>{html.escape(str(reason))}</p>\n")  # fmt: skip
    out = ['<h4 class="text-center text-primary">Book Reviews</h4>\n']
    for review in reviews.get("reviews") or []:
        rating = review.get("rating")
        out.append(f"<blockquote>\n<p>{html.escape(str(review.get('text', '')))}</p>\n"
                   f"<small>{html.escape(str(review.get('reviewer', '')))}</small>\n"
                   f"{_stars(rating) if isinstance(rating, dict) else ''}</blockquote>\n")  # fmt: skip
    if reviews.get("podname"):
        out.append(f"<dl><dt>Reviews served by:</dt><u>{html.escape(str(reviews['podname']))}</u></dl>\n")
    return "".join(out)


def render_page(user: str, details: tuple[int, Any], reviews: tuple[int, Any]) -> str:
    product = PRODUCTS[0]
    if user:
        who = (f'<p class="navbar-text navbar-right">{html.escape(user)} '
               '( <a href="logout">sign out</a> )</p>')  # fmt: skip
    else:
        who = ('<form method="post" action="login" name="login_form" class="navbar-right">'
               '<input type="text" name="username" placeholder="User Name"> '
               '<input type="password" name="passwd" placeholder="Password"> '
               '<button type="submit">Sign in</button></form>')  # fmt: skip
    return f"""<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Simple Bookstore App</title>
<style>
body {{ font-family: sans-serif; margin: 0; }}
nav {{ background: #222; color: #ddd; padding: 10px 20px; display: flex; justify-content: space-between; }}
nav a {{ color: #9cf; }}
.row {{ display: flex; gap: 40px; padding: 0 20px; }} .col {{ flex: 1; }}
.text-center {{ text-align: center; }}
.glyphicon-star::before {{ content: "\\2605"; }} .glyphicon-star-empty::before {{ content: "\\2606"; }}
</style></head>
<body>
<nav><span class="navbar-brand">BookInfo Sample</span>{who}</nav>
<div class="container-fluid">
<h3 class="text-center text-primary">{html.escape(str(product["title"]))}</h3>
<p style="padding: 0 20px">Summary: {product["descriptionHtml"]}</p>
<div class="row">
<div class="col">
{_details_html(*details)}</div>
<div class="col">
{_reviews_html(*reviews)}</div>
</div>
</div>
</body>
</html>
"""


INDEX = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Simple Bookstore App</title></head>
<body><h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3>
<p>productpage calls details and reviews; reviews calls ratings.</p>
<p><a href="productpage?u=normal">Normal user</a> | <a href="productpage?u=test">Test user</a></p>
</body></html>
"""


# -- routing -----------------------------------------------------------------------


def _redirect_back(req: Request, cookie: str) -> Reply:
    target = req.headers.get("referer") or "productpage"
    return Reply(302, b"", "text/html; charset=utf-8", (("Location", target), ("Set-Cookie", cookie)))


def _product_id(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def handle(req: Request) -> Reply:
    path = urllib.parse.urlsplit(req.path).path
    if path in ("/", "/index.html"):
        return Reply(200, INDEX.encode(), "text/html; charset=utf-8")
    if path == "/health":
        return Reply(200, b"Product page is healthy", "text/html; charset=utf-8")
    if path == "/login" and req.method == "POST":
        form = urllib.parse.parse_qs(req.body.decode(errors="replace"))
        user = (form.get("username") or [""])[0]
        return _redirect_back(req, f"user={urllib.parse.quote(user)}; Path=/")
    if path == "/logout":
        return _redirect_back(req, "user=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/")
    if path == "/productpage":
        headers = call_headers(req)
        page = render_page(user_of(req), product_details(0, headers), product_reviews(0, headers))
        return Reply(200, page.encode(), "text/html; charset=utf-8")
    if path == "/api/v1/products":
        return json_reply(200, PRODUCTS)
    parts = path.strip("/").split("/")
    if len(parts) in (4, 5) and parts[:3] == ["api", "v1", "products"]:
        product_id = _product_id(parts[3])
        if product_id is None:
            return json_reply(400, {"error": "please provide numeric product id"})
        what = parts[4] if len(parts) == 5 else "details"
        call = {"details": product_details, "reviews": product_reviews, "ratings": product_ratings}.get(what)
        if call is not None:
            status, body = call(product_id, call_headers(req))
            return Reply(status, json.dumps(body).encode())
    return Reply(404, b"Not Found", "text/plain")


def main() -> None:
    serve(handle, "productpage")


if __name__ == "__main__":
    main()
