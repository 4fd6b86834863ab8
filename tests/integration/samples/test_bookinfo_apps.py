"""The bookinfo example apps on their own: real processes on loopback IPs, no mesh.

A recording server stands in for the services an app calls (``*_HOSTNAME``
points the app at it), so each test sees exactly what the app sent: the
forwarded user and tracing headers, productpage's retry towards reviews,
and the pages and JSON the apps answer with.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.node import wait_for

pytestmark = pytest.mark.integration

BASE = f"127.77.{os.getpid() % 250}."  # a loopback /24 of this test run's own
TRACE = {"x-request-id": "req-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", "x-b3-traceid": "80f198ee56343ba8"}  # fmt: skip


class Recorder:
    """Answers every GET with a fixed (status, JSON body) per path prefix; remembers each request."""

    def __init__(self, host: str, answers: dict[str, tuple[int, Any]]) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = next((v for p, v in answers.items() if self.path.startswith(p)), (404, {}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 9080), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def app(module: str, ip: str, **env: str) -> Iterator[str]:
    """Run ``meshwork.examples.bookinfo.<module>`` on ``ip``:9080; yield its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", f"meshwork.examples.bookinfo.{module}"],
                            env={**os.environ, "POD_IP": ip, "HOSTNAME": f"{module}-pod", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://{ip}:9080"
        wait_for(lambda: get(url + "/health")[0] == 200, 20, f"{module} to answer /health")
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, str, Any]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=20) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers
    except OSError as err:
        return 0, str(err), None


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder(BASE + "10", {
        "/details/": (200, {"id": 0, "type": "paperback", "pages": 200, "publisher": "PublisherA",
                            "language": "English", "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}),
        "/reviews/": (503, {"error": "down"}),
        "/ratings/": (200, {"id": 0, "ratings": {"Reviewer1": 3, "Reviewer2": 1}}),
    })  # fmt: skip
    try:
        yield rec
    finally:
        rec.close()


def test_productpage_forwards_the_user_and_tracing_headers_and_retries_reviews_once(recorder: Recorder) -> None:
    target = BASE + "10"
    with app("productpage", BASE + "1", DETAILS_HOSTNAME=target, REVIEWS_HOSTNAME=target,
             RATINGS_HOSTNAME=target) as url:  # fmt: skip
        status, page, _ = get(url + "/productpage", {"Cookie": "user=jason", "end-user": "mallory", **TRACE})
        assert status == 200
        assert [p for p, _ in recorder.seen] == ["/details/0", "/reviews/0", "/reviews/0"]  # one retry
        for _, headers in recorder.seen:
            assert headers["end-user"] == "jason"  # the signed-in user, not what the client claimed
            assert {k: headers.get(k) for k in TRACE} == TRACE
        assert "Book Details" in page and "PublisherA" in page
        assert "Error fetching product reviews!" in page
        assert "Sorry, product reviews are currently unavailable for this book." in page
        assert 'href="logout"' in page and "jason" in page

        status, body, _ = get(url + "/api/v1/products/0/ratings")
        assert status == 200 and json.loads(body)["ratings"] == {"Reviewer1": 3, "Reviewer2": 1}
        status, body, _ = get(url + "/api/v1/products/0/reviews")
        assert status == 503 and json.loads(body) == {"error": "Sorry, product reviews are currently unavailable for this book."}
        status, body, _ = get(url + "/api/v1/products")
        assert status == 200 and json.loads(body)[0]["title"] == "The Comedy of Errors"

        form = urllib.parse.urlencode({"username": "jason"}).encode()
        status, _, headers = get(url + "/login", {"Referer": "http://shop/productpage"}, data=form)
        assert (status, headers["Location"], headers["Set-Cookie"]) == (302, "http://shop/productpage", "user=jason; Path=/")
        status, _, headers = get(url + "/logout", {"Referer": "http://shop/productpage"})
        assert status == 302 and "Max-Age=0" in headers["Set-Cookie"]
        status, page, _ = get(url + "/productpage")
        assert recorder.seen[-1][1].get("end-user") is None and "Sign in" in page


def test_productpage_without_details_says_so() -> None:
    with app("productpage", BASE + "2", DETAILS_HOSTNAME=BASE + "99", REVIEWS_HOSTNAME=BASE + "99") as url:
        _, page, _ = get(url + "/productpage")
        assert "Error fetching product details!" in page
        assert "Sorry, product details are currently unavailable for this book." in page


@pytest.mark.parametrize(("env", "rating"), [
    ({"ENABLE_RATINGS": "false"}, None),
    ({"ENABLE_RATINGS": "true", "STAR_COLOR": "black"}, {"stars": 3, "color": "black"}),
    ({"ENABLE_RATINGS": "true", "STAR_COLOR": "red"}, {"stars": 3, "color": "red"}),
], ids=["v1", "v2", "v3"])  # fmt: skip
def test_reviews_versions(recorder: Recorder, env: dict[str, str], rating: dict[str, Any] | None) -> None:
    with app("reviews", BASE + "3", RATINGS_HOSTNAME=BASE + "10", **env) as url:
        status, body, _ = get(url + "/reviews/0", {"end-user": "jason", **TRACE})
        assert status == 200
        got = json.loads(body)
        assert got["id"] == "0" and got["podname"] == "reviews-pod"
        assert [r["reviewer"] for r in got["reviews"]] == ["Reviewer1", "Reviewer2"]
        assert got["reviews"][0].get("rating") == rating
        if rating is None:
            assert recorder.seen == []  # v1 never calls ratings
        else:
            (path, headers), = recorder.seen
            assert path == "/ratings/0" and headers["end-user"] == "jason"
            assert {k: headers.get(k) for k in TRACE} == TRACE


def test_reviews_without_ratings_says_ratings_unavailable() -> None:
    with app("reviews", BASE + "4", RATINGS_HOSTNAME=BASE + "99", ENABLE_RATINGS="true") as url:
        got = json.loads(get(url + "/reviews/0")[1])
        assert got["reviews"][1]["rating"] == {"error": "Ratings service is currently unavailable"}


def test_details_and_ratings_answer_like_the_originals() -> None:
    with app("details", BASE + "5") as details, app("ratings", BASE + "6") as ratings:
        status, body, _ = get(details + "/details/0")
        assert status == 200 and json.loads(body)["ISBN-13"] == "123-1234567890"
        assert get(details + "/details/x")[0] == 400
        assert json.loads(get(ratings + "/ratings/0")[1]) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
        assert get(ratings + "/ratings/x")[0] == 400
        req = urllib.request.Request(ratings + "/ratings/1", data=b'{"Reviewer1": 1}', method="POST")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"id": 1, "ratings": {"Reviewer1": 1}}
        assert json.loads(get(ratings + "/ratings/1")[1])["ratings"] == {"Reviewer1": 1}
