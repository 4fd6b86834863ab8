"""bookinfo ``details``: the book's facts as JSON at ``/details/<id>``.

Answers as the original does: ``{"id", "author", "year", "type", "pages",
"publisher", "language", "ISBN-10", "ISBN-13"}``, 400 with an ``error`` for a
product id that is not a number, and ``/health``.
"""

from __future__ import annotations

from meshwork.examples.bookinfo.web import Reply, Request, json_reply, serve


def book_details(product_id: int) -> dict[str, object]:
    return {
        "id": product_id, "author": "William Shakespeare", "year": 1595, "type": "paperback",
        "pages": 200, "publisher": "PublisherA", "language": "English",
        "ISBN-10": "1234567890", "ISBN-13": "123-1234567890",
    }  # fmt: skip


def handle(req: Request) -> Reply:
    path = req.path.split("?", 1)[0]
    if path == "/health":
        return json_reply(200, {"status": "Details is healthy"})
    if path == "/details" or path.startswith("/details/"):
        try:
            product_id = int(path.rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            return json_reply(400, {"error": "please provide numeric product id"})
        return json_reply(200, book_details(product_id))
    return json_reply(404, {"error": f"{path} not found"})


def main() -> None:
    serve(handle, "details")


if __name__ == "__main__":
    main()
