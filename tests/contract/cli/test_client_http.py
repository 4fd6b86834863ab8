"""The client against a real HTTP socket: requests it sends, answers and errors it decodes, watches.

The peer is a small scripted ``http.server`` on loopback; the client under test
is the real one.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meshwork import errors
from meshwork.client import Client, ServerUnreachable
from meshwork.model.base import KindInfo, Resource

POD = KindInfo(
    group="", versions=("v1",), kind="Pod", plural="pods", singular="pod", model=Resource
)
CM = KindInfo(
    group="",
    versions=("v1",),
    kind="ConfigMap",
    plural="configmaps",
    singular="configmap",
    model=Resource,
)

Seen = dict[str, Any]
Route = Callable[[BaseHTTPRequestHandler, Seen], None]


def send_json(h: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    data = json.dumps(body).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }


def chunked(h: BaseHTTPRequestHandler, lines: list[bytes]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for line in lines:
        # Split each line over two chunks to prove the client joins them.
        for part in (line[: len(line) // 2], line[len(line) // 2 :]):
            if part:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                h.wfile.flush()
    h.wfile.write(b"0\r\n\r\n")


def event(kind: str, name: str, rv: int) -> bytes:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "resourceVersion": str(rv)},
    }
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/readyz"): lambda h, s: (
        (
            h.send_response(200),
            h.send_header("Content-Length", "2"),
            h.end_headers(),
            h.wfile.write(b"ok"),
        )
        and None
    ),
    ("GET", "/version"): lambda h, s: send_json(h, 200, {"gitVersion": "v1.31.0-meshwork.0.1.0"}),
    ("GET", "/api/v1/namespaces/default/pods/web-1"): lambda h, s: send_json(
        h, 200, {"kind": "Pod", "metadata": {"name": "web-1"}}
    ),
    ("GET", "/api/v1/namespaces/default/pods/missing"): lambda h, s: send_json(
        h, 404, status(404, "NotFound", 'pods "missing" not found', name="missing", kind="pods")
    ),
    ("GET", "/api/v1/pods"): lambda h, s: send_json(
        h, 200, {"kind": "PodList", "metadata": {"resourceVersion": "12"}, "items": []}
    ),
    ("POST", "/api/v1/namespaces/default/configmaps"): lambda h, s: send_json(
        h, 409, status(409, "AlreadyExists", 'configmaps "cfg" already exists')
    ),
    ("PUT", "/api/v1/namespaces/default/configmaps/cfg"): lambda h, s: send_json(
        h, 409, status(409, "Conflict", "the object has been modified")
    ),
    ("POST", "/api/v1/namespaces/default/pods"): lambda h, s: send_json(
        h,
        422,
        status(
            422,
            "Invalid",
            'Pod "x" is invalid',
            causes=[
                {
                    "field": "spec.containers",
                    "message": "Required value",
                    "reason": "FieldValueRequired",
                }
            ],
        ),
    ),
    ("PATCH", "/api/v1/namespaces/default/pods/web-1"): lambda h, s: send_json(
        h, 200, {"kind": "Pod", "metadata": {"name": "web-1", "labels": {"a": "b"}}}
    ),
    ("DELETE", "/api/v1/namespaces/default/pods/web-1"): lambda h, s: send_json(
        h, 200, {"kind": "Pod", "metadata": {"name": "web-1", "uid": "u1"}}
    ),
    ("GET", "/api/v1/namespaces/default/secrets/x"): lambda h, s: (
        (
            h.send_response(502),
            h.send_header("Content-Length", "11"),
            h.end_headers(),
            h.wfile.write(b"Bad Gateway"),
        )
        and None
    ),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[Seen]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record: Seen = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": dict(self.headers),
            "body": body,
        }
        self.server.seen.append(record)  # type: ignore[attr-defined]
        if path == "/api/v1/namespaces/default/pods" and "watch=1" in query:
            if "resourceVersion=100" in query:
                chunked(
                    self,
                    [
                        b'{"type":"ERROR","object":'
                        + json.dumps(
                            status(410, "Expired", "too old resource version: 100 (200)")
                        ).encode()
                        + b"}\n"
                    ],
                )
            else:
                chunked(
                    self,
                    [
                        event("ADDED", "a", 13),
                        b"\n",
                        event("MODIFIED", "a", 14),
                        event("DELETED", "a", 15),
                    ],
                )
            return
        route = ROUTES.get((self.command, path))
        if route is None:
            send_json(self, 404, status(404, "NotFound", f"no route {path}"))
        else:
            route(self, record)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[Seen]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_get_sends_the_token_and_decodes_the_object(server: tuple[str, list[Seen]]) -> None:
    url, seen = server
    client = Client(url, "tok-123")
    assert client.get(POD, "default", "web-1") == {"kind": "Pod", "metadata": {"name": "web-1"}}
    assert seen[-1]["headers"]["Authorization"] == "Bearer tok-123"
    assert seen[-1]["headers"]["Accept"] == "application/json"


def test_list_passes_selectors(server: tuple[str, list[Seen]]) -> None:
    url, seen = server
    listed = Client(url, None).list(
        POD, None, label_selector="app=web,tier!=db", field_selector="status.phase=Running"
    )
    assert listed["metadata"]["resourceVersion"] == "12"
    assert (
        seen[-1]["query"]
        == "labelSelector=app%3Dweb%2Ctier%21%3Ddb&fieldSelector=status.phase%3DRunning"
    )
    assert "Authorization" not in seen[-1]["headers"]


def test_error_statuses_become_exceptions(server: tuple[str, list[Seen]]) -> None:
    url, _ = server
    client = Client(url, "t")
    with pytest.raises(errors.NotFound) as nf:
        client.get(POD, "default", "missing")
    assert nf.value.message == 'pods "missing" not found' and nf.value.name == "missing"
    with pytest.raises(errors.AlreadyExists):
        client.create(
            CM, "default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
        )
    with pytest.raises(errors.Conflict) as conflict:
        client.update(CM, "default", {"metadata": {"name": "cfg", "resourceVersion": "3"}})
    assert not isinstance(conflict.value, errors.AlreadyExists)
    with pytest.raises(errors.ValidationError) as invalid:
        client.create(POD, "default", {"metadata": {"name": "x"}})
    assert invalid.value.causes[0].field == "spec.containers"
    with pytest.raises(errors.ApiError) as bad:
        client.get(
            KindInfo(
                group="",
                versions=("v1",),
                kind="Secret",
                plural="secrets",
                singular="secret",
                model=Resource,
            ),
            "default",
            "x",
        )
    assert (bad.value.status, bad.value.message) == (502, "Bad Gateway")


def test_write_requests_carry_json_bodies_and_content_types(server: tuple[str, list[Seen]]) -> None:
    url, seen = server
    client = Client(url, "t")
    assert client.patch(POD, "default", "web-1", {"metadata": {"labels": {"a": "b"}}})["metadata"][
        "labels"
    ] == {"a": "b"}
    assert seen[-1]["headers"]["Content-Type"] == "application/merge-patch+json"
    assert json.loads(seen[-1]["body"]) == {"metadata": {"labels": {"a": "b"}}}
    client.patch(
        POD, "default", "web-1", [{"op": "remove", "path": "/metadata/labels"}], patch_type="json"
    )
    assert seen[-1]["headers"]["Content-Type"] == "application/json-patch+json"
    deleted = client.delete(
        POD, "default", "web-1", propagation_policy="Foreground", grace_period_seconds=0
    )
    assert deleted is not None and deleted["metadata"]["uid"] == "u1"
    assert json.loads(seen[-1]["body"]) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0,
    }
    client.delete(POD, "default", "web-1")
    assert seen[-1]["body"] == b""


def test_watch_yields_events_from_a_chunked_stream(server: tuple[str, list[Seen]]) -> None:
    url, seen = server
    events = list(
        Client(url, "t").watch(POD, "default", resource_version="12", label_selector="app=a")
    )
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "13"),
        ("MODIFIED", "14"),
        ("DELETED", "15"),
    ]
    assert "watch=1" in seen[-1]["query"] and "resourceVersion=12" in seen[-1]["query"]


def test_watch_error_event_raises_gone(server: tuple[str, list[Seen]]) -> None:
    url, _ = server
    with pytest.raises(errors.Gone, match="too old resource version"):
        list(Client(url, "t").watch(POD, "default", resource_version="100"))


def test_readiness_and_version(server: tuple[str, list[Seen]]) -> None:
    url, _ = server
    client = Client(url, None)
    assert client.ready()
    assert client.version()["gitVersion"].startswith("v1.31.0")


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", None)
    assert not client.ready()
    with pytest.raises(ServerUnreachable) as info:
        client.get(POD, "default", "x")
    assert info.value.server == f"http://127.0.0.1:{port}"
    assert isinstance(info.value, errors.Unavailable)


def test_bad_server_urls_are_refused() -> None:
    for url in ("127.0.0.1:7380", "ftp://h", "http://"):
        with pytest.raises(ValueError):
            Client(url, None)
