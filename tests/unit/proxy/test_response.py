"""proxy.response: where an upstream response ends, however its bytes are split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.errors import RemoteProtocolError
from meshwork.proxy.response import ResponseReader

CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n"
)
NEXT = b"HTTP/1.1 204 No Content\r\n\r\n"


def feed_all(pieces: list[bytes], *, head: bool = False, upgrade: bool = False) -> tuple[ResponseReader, bytes, bytes]:
    r = ResponseReader()
    r.start(head, upgrade)
    out = b""
    got_head = b""
    for p in pieces:
        out += r.feed(p)
        if r.head is not None:
            got_head, r.head = r.head, None
    return r, got_head, out


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=8).map(
        lambda cuts: [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)]
    )


@pytest.mark.parametrize("message", [CL, CHUNKED])
def test_whole_message(message: bytes) -> None:
    r, head, body = feed_all([message + NEXT])
    assert r.done and r.status == 200 and r.keep_alive
    assert head + body == message
    assert r.excess == NEXT  # bytes after the end: the connection must not be reused


@given(st.data())
def test_any_split_gives_the_same_boundary(data: st.DataObject) -> None:
    message = data.draw(st.sampled_from([CL, CHUNKED]))
    pieces = data.draw(splits(message))
    r, head, body = feed_all(pieces)
    assert r.done and head + body == message and r.excess == b""


def test_interim_100_is_swallowed_and_101_ends_at_the_head() -> None:
    r, head, body = feed_all([b"HTTP/1.1 100 Continue\r\n\r\n" + CL])
    assert r.done and head.startswith(b"HTTP/1.1 200") and body == b"hello"
    r, head, _ = feed_all([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\nframes"], upgrade=True)
    assert r.done and r.upgraded and r.excess == b"frames"


@pytest.mark.parametrize(
    ("raw", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", True),
    ],
)
def test_keep_alive_and_bodyless_statuses(raw: bytes, keep: bool) -> None:
    r, _, body = feed_all([raw])
    assert r.done and r.keep_alive is keep and body == b""


def test_head_response_has_no_body_and_close_delimited_ends_at_eof() -> None:
    r, _, _ = feed_all([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], head=True)
    assert r.done
    r, _, body = feed_all([b"HTTP/1.1 200 OK\r\n\r\nuntil close"])
    assert not r.done and r.close_delimited and body == b"until close"
    r.eof()
    assert r.done and not r.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",  # nobody asked to upgrade
        b"HTTP/2 200 OK\r\n\r\n",
    ],
)
def test_ambiguous_or_malformed_responses_are_errors(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        feed_all([raw])


def test_eof_inside_a_length_body_is_an_error() -> None:
    r, _, _ = feed_all([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"])
    with pytest.raises(RemoteProtocolError):
        r.eof()
