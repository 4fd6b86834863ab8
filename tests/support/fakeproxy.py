"""A stand-in data-plane proxy for tests: a real HTTP client of the mesh config API.

It opens ``GET /apis/mesh.meshwork.io/v1/proxies/{id}/config`` (a chunked,
newline-delimited JSON stream), reads each snapshot on a thread, and
acknowledges it over a second connection, as the real proxy does; ``decide``
picks ACK (None) or NACK (the error text). It is the API's client, not a
mock of it: everything it sees came over a socket from the server under test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

API = "/apis/mesh.meshwork.io/v1"


def sidecar_id(pod: str, namespace: str, ip: str = "127.1.0.250") -> str:
    return f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


def router_id(pod: str, namespace: str, ip: str = "127.0.0.1") -> str:
    return f"router~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


class FakeProxy:
    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        ident: str,
        *,
        decide: Callable[[dict[str, Any]], str | None] | None = None,
        auto_ack: bool = True,
        labels: str | None = None,
    ) -> None:
        self.host, self.port, self.token, self.ident = host, port, token, ident
        self.decide = decide or (lambda snap: None)
        self.auto_ack = auto_ack
        self.labels = labels
        self.snapshots: queue.Queue[dict[str, Any]] = queue.Queue()
        self.applied: str = ""
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self, version: str = "", timeout: float = 30.0) -> FakeProxy:
        query = f"?version={quote(version)}" if version else ""
        if self.labels:
            query += ("&" if query else "?") + f"labels={quote(self.labels)}"
        self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn.request("GET", f"{API}/proxies/{self.ident}/config{query}",
                           headers={"Authorization": f"Bearer {self.token}"})
        resp = self._conn.getresponse()
        if resp.status != 200:
            raise AssertionError(f"config stream answered {resp.status}: {resp.read()!r}")
        self.applied = version
        self._thread = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self._thread.start()
        return self

    def _read(self, resp: http.client.HTTPResponse) -> None:
        acks = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                snap = json.loads(line)
                if self.auto_ack:
                    err = self.decide(snap)
                    self._post_ack(acks, snap["version"], err)
                    if err is None:
                        self.applied = snap["version"]
                self.snapshots.put(snap)
        except (OSError, ValueError, AssertionError, http.client.HTTPException) as exc:
            if self._conn is not None:  # not closing: a real failure, shown by next()
                self.failure = exc
        finally:
            acks.close()

    def _post_ack(self, conn: http.client.HTTPConnection, version: str, error: str | None) -> None:
        body = json.dumps({"version": version, "error": error})
        conn.request("POST", f"{API}/proxies/{self.ident}/ack", body=body,
                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise AssertionError(f"ack answered {resp.status}")

    def ack(self, version: str, error: str | None = None) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            self._post_ack(conn, version, error)
        finally:
            conn.close()

    def next(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next snapshot received (generous timeout: a broken build fails rather than hangs)."""
        try:
            return self.snapshots.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.ident}: no snapshot within {timeout}s (reader failure: {self.failure!r})") from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        # Shut the socket down (the reader sees the end of the stream), and close
        # the connection only once the reader has stopped using it.
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)
        if conn is not None:
            conn.close()

    def __enter__(self) -> FakeProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
