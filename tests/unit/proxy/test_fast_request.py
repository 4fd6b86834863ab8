"""``RequestParser.receive_request`` (the proxy's shortcut for a read that holds one whole head)
gives exactly what ``receive_data`` + ``next_event`` give: the same events, the same refusals.

Run over RELIABILITY.md's bad-request table (``tests/unit/core/bad_requests.py``)
and over generated heads, good and bad (hypothesis).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core import http1
from meshwork.errors import RemoteProtocolError


def _load_bad_requests() -> ModuleType:
    name = "meshwork_tests_bad_requests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "core" / "bad_requests.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _load_bad_requests()


def _general(raw: bytes) -> list[Any]:
    """Events through receive_data/next_event until NEED_DATA, or the refusal."""
    p = http1.RequestParser(max_body=None)
    p.receive_data(raw)
    out: list[Any] = []
    try:
        while True:
            ev = p.next_event()
            if ev is http1.NEED_DATA or ev is http1.PAUSED:
                out.append(ev)
                return out
            out.append(ev)
    except RemoteProtocolError as exc:
        out.append(("refused", exc.status_hint, str(exc)))
        return out


def _fast(raw: bytes) -> list[Any] | None:
    """The same, through receive_request first (None: it declined the bytes)."""
    p = http1.RequestParser(max_body=None)
    out: list[Any] = []
    try:
        got = p.receive_request(raw)
        if got is None:
            assert p.buffered == 0, "declined bytes must not be consumed"
            return None
        req, eom = got
        out.append(req)
        if eom is not None:
            out.append(eom)
        while True:
            ev = p.next_event()
            out.append(ev)
            if ev is http1.NEED_DATA or ev is http1.PAUSED:
                return out
    except RemoteProtocolError as exc:
        out.append(("refused", exc.status_hint, str(exc)))
        return out


def _same(raw: bytes) -> None:
    fast = _fast(raw)
    if fast is not None:
        assert fast == _general(raw)


@pytest.mark.parametrize("case", bad.BAD_REQUESTS, ids=lambda c: c.id)
def test_bad_request_table_is_refused_the_same_way(case: Any) -> None:
    head_end = case.raw.find(b"\r\n\r\n")
    _same(case.raw)
    if head_end >= 0:
        _same(case.raw[: head_end + 4])  # the head alone, as one read


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"HEAD /x?y=1 HTTP/1.1\r\nHost: a:80\r\nConnection: close\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ],
)
def test_good_heads_give_the_same_events(raw: bytes) -> None:
    fast = _fast(raw)
    assert fast is not None
    assert fast == _general(raw)


def test_it_declines_what_is_not_exactly_one_head() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert _fast(head + head) is None  # pipelined
    assert _fast(head[:-2]) is None  # partial
    assert _fast(b"\r\n" + head) is None  # leading empty line
    p = http1.RequestParser(max_body=None)
    p.receive_data(b"GET / HT")
    assert p.receive_request(head) is None  # something already buffered


_FIELD = st.sampled_from([
    b"Host: a", b"Host: a:8080", b"host:b", b"Content-Length: 0", b"Content-Length: 3",
    b"Content-Length: 3\r\nContent-Length: 3", b"Content-Length: 1\r\nContent-Length: 2",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Connection: close",
    b"Connection: keep-alive", b"Connection: upgrade", b"Upgrade: websocket", b"Expect: 100-continue",
    b"Expect: nope", b"X-A: 1", b"X_B: 2", b"Bad Name: x", b"X-C: a\x00b", b"X-D:\tv\t", b" folded",
])
_LINE = st.sampled_from([
    b"GET / HTTP/1.1", b"GET / HTTP/1.0", b"POST /p HTTP/1.1", b"HEAD / HTTP/1.1", b"get / HTTP/1.1",
    b"GET  / HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET * HTTP/1.1", b"CONNECT a:1 HTTP/1.1",
    b"GET http://a/b HTTP/1.1", b"BREW / HTTP/1.1", b"GET / HTTP/2.0", b"GET /\x7f HTTP/1.1",
])


@settings(max_examples=400, deadline=None)
@given(_LINE, st.lists(_FIELD, max_size=6))
def test_generated_heads_give_the_same_events(line: bytes, fields: list[bytes]) -> None:
    raw = line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    _same(raw)


_HOP_NAMES = ["Connection", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade", "Expect", "HTTP2-Settings"]
_OTHER_NAMES = ["Host", "Content-Length", "Accept", "X-Te", "X-Upgrade", "Teapot", "Connection-Id", "User-Agent"]
_VALUES = {"connection": "keep-alive", "keep-alive": "timeout=5", "proxy-connection": "keep-alive",
           "te": "trailers", "upgrade": "h2c", "expect": "100-continue", "http2-settings": "AAMAAABkAAQAoAAAAAIAAAAA",
           "content-length": "0"}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_HOP_NAMES + _OTHER_NAMES), max_size=5), st.booleans())
def test_hop_free_says_exactly_whether_the_head_has_a_hop_by_hop_field(names: list[str], lower: bool) -> None:
    fields = [("Host", "a.test")] + [(n.lower() if lower else n, _VALUES.get(n.lower(), "1")) for n in names
                                     if n.lower() != "host"]  # fmt: skip
    raw = b"GET / HTTP/1.1\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in fields) + b"\r\n"
    seen = 0
    for got in (_general(raw), _fast(raw)):
        if not got or not isinstance(got[0], http1.Request):
            continue  # refused (two Content-Length lines, an unknown expectation...) or declined
        req = got[0]
        seen += 1
        expected = not any(n.lower() in {h.lower() for h in _HOP_NAMES} for n, _ in fields)
        assert req.hop_free is expected, raw
    assert seen != 1, raw  # both paths take the head, or neither
