"""What the proxy must refuse (RELIABILITY.md §1), over a real socket, and a fuzz of framing.

The table is the project's one list (tests/unit/core/bad_requests.py); the
fuzz mutates valid requests that carry a smuggled request in their body and
asserts the backend never sees the smuggled one.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxytools import Procs, connect, get, is_closed, read_reply

pytestmark = pytest.mark.integration


def _load_bad_requests() -> ModuleType:
    name = "meshwork_tests_bad_requests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "unit" / "core" / "bad_requests.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _load_bad_requests()
# The proxy streams bodies of any size, so the control plane's 413 cap does not apply.
CASES = [c for c in bad.BAD_REQUESTS if c.status != 413]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    procs = Procs(tmp_path_factory.mktemp("refusals"))
    try:
        backend = procs.backend("b0")
        proxy = procs.proxy([backend.port])
        yield proxy.port, backend.port
    finally:
        procs.kill_all()


def backend_targets(port: int) -> list[str]:
    seen = json.loads(get(port, "/_stats").body)["requests"]
    return [r["target"] for r in seen if r["target"] != "/_stats"]


def refused(port: int, raw: bytes) -> tuple[int, bool]:
    sock = connect(port)
    try:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the proxy may stop reading a huge request; the answer must still come
        reply = read_reply(sock)
        return reply.status, reply.headers.get("connection") == "close" and is_closed(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"row{c.row}-{c.id}")
def test_bad_request_table(setup: tuple[int, int], case: Any) -> None:
    proxy, backend = setup
    before = backend_targets(backend)
    status, closed = refused(proxy, case.raw)
    assert status == case.status
    assert closed
    assert backend_targets(backend) == before  # nothing reached the backend, pipelined bytes included


def test_identical_duplicate_content_length_is_collapsed(setup: tuple[int, int]) -> None:
    proxy, _ = setup
    sock = connect(proxy)
    try:
        sock.sendall(bad.DUPLICATE_CONTENT_LENGTH.replace(b"POST / ", b"POST /count "))
        reply = read_reply(sock)
        assert reply.status == 200 and json.loads(reply.body)["length"] == 5
    finally:
        sock.close()


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
# Framing mutations in the spirit of RELIABILITY.md rows 1-14: each may make the
# request ambiguous; none may let the embedded request through as a request.
FIELD_MUTATIONS = [
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer-Encoding:\tchunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b" Transfer-Encoding: chunked\r\n",
    b"X: y\r\n\tTransfer-Encoding: chunked\r\n",
    b"X: \rTransfer-Encoding: chunked\r\n",
    b"Transfer_Encoding: chunked\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: +0\r\n",
    b"Content-Length: 0, 0\r\n",
    b"Content-Length:\r\n",
    b"X-Pad: a\nTransfer-Encoding: chunked\r\n",
]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    chunked = draw(st.booleans())
    body = b"0\r\n\r\n" + SMUGGLED if chunked else SMUGGLED
    fields = [b"Host: t\r\n"]
    fields.append(b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(body))
    for mutation in draw(st.lists(st.sampled_from(FIELD_MUTATIONS), min_size=1, max_size=3)):
        fields.insert(draw(st.integers(0, len(fields))), mutation)
    if chunked and draw(st.booleans()):
        size = draw(st.sampled_from([b"5", b"-0", b"0x0", b"0 ", b"00000000000000000", b"0;a\n", b"z"]))
        body = body.replace(b"0\r\n\r\n", size + b"\r\n\r\n", 1)
    return b"POST /count HTTP/1.1\r\n" + b"".join(fields) + b"\r\n" + body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_requests())
def test_fuzzed_framing_never_smuggles(setup: tuple[int, int], raw: bytes) -> None:
    proxy, backend = setup
    sock = connect(proxy)
    sock.settimeout(2.0)  # an ambiguous request the proxy holds open is answered by closing it
    try:
        sock.sendall(raw)
        reply = read_reply(sock)
        # Every mutation makes the framing ambiguous: refused, and the connection closed.
        assert 400 <= reply.status < 600, reply
        assert reply.headers.get("connection") == "close", reply
        assert is_closed(sock)
    finally:
        sock.close()
    assert "/smuggled" not in backend_targets(backend)
