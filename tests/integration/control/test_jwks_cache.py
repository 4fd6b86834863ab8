"""The control plane's JWKS cache against a real HTTP server: fetch, keep the last good document, refresh, drop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshwork.control.jwks import JwksCache


class _Jwks(BaseHTTPRequestHandler):
    body = json.dumps({"keys": [{"kty": "oct", "kid": "one"}]}).encode()
    status = 200

    def do_GET(self) -> None:
        cls = type(self)
        self.send_response(cls.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(cls.body)))
        self.end_headers()
        self.wfile.write(cls.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[_Jwks]]]:
    handler = type("Handler", (_Jwks,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", handler
    finally:
        server.shutdown()
        server.server_close()


async def _until(check: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def test_fetches_refreshes_and_keeps_last_good(jwks_server: tuple[str, type[_Jwks]]) -> None:
    uri, handler = jwks_server
    changes: list[int] = []

    async def main() -> None:
        cache = JwksCache(lambda: changes.append(1), refresh_s=0.1)
        cache.start()
        try:
            cache.want([uri])
            await _until(lambda: uri in cache.documents())
            assert json.loads(cache.documents()[uri])["keys"][0]["kid"] == "one"
            assert len(changes) == 1
            handler.body = json.dumps({"keys": [{"kty": "oct", "kid": "two"}]}).encode()
            await _until(lambda: '"two"' in cache.documents()[uri])
            assert len(changes) == 2
            handler.status, handler.body = 500, b"oops"  # a broken provider: the last good keys stay
            await _until(lambda: uri in cache.errors())
            assert '"two"' in cache.documents()[uri]
            cache.want([])
            assert cache.documents() == {}
        finally:
            await cache.close()

    asyncio.run(main())


def test_a_document_without_keys_is_an_error_not_keys(jwks_server: tuple[str, type[_Jwks]]) -> None:
    uri, handler = jwks_server
    handler.body = b'{"not": "a jwks"}'

    async def main() -> None:
        cache = JwksCache(lambda: None, refresh_s=60)
        cache.start()
        try:
            cache.want([uri, "ftp://example/keys"])
            await _until(lambda: len(cache.errors()) == 2)
            assert "keys" in cache.errors()[uri]
            assert "only http" in cache.errors()["ftp://example/keys"]
            assert cache.documents() == {}
        finally:
            await cache.close()

    asyncio.run(main())
