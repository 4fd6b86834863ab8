"""proxy.response: a response head read again from the remembered framings gives what a fresh parse gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.errors import RemoteProtocolError
from meshwork.proxy import response
from meshwork.proxy.response import ResponseReader

MESSAGES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
]


def read(data: bytes, *, head: bool = False, upgrade: bool = False) -> tuple[object, ...]:
    r = ResponseReader()
    r.start(head, upgrade)
    body = r.feed(data)
    return (r.head, body, r.status, r.keep_alive, r.hop, r.done, r.excess, r.upgraded, r.close_delimited)


@given(st.lists(st.tuples(st.sampled_from(MESSAGES), st.booleans(), st.binary(max_size=8)), min_size=1, max_size=12))
def test_remembered_framing_equals_a_fresh_parse(reads: list[tuple[bytes, bool, bytes]]) -> None:
    for message, head_request, after in reads:
        remembered = read(message + after, head=head_request)
        response._FRAMINGS.clear()
        fresh = read(message + after, head=head_request)
        assert remembered == fresh
        read(message + after, head=head_request)  # remembered again for the next read


def test_plain_responses_are_remembered_head_responses_are_not() -> None:
    response._FRAMINGS.clear()
    read(MESSAGES[0])
    assert len(response._FRAMINGS) == 1
    got = read(MESSAGES[0], head=True)  # the same head to a HEAD request: no body follows it
    assert got[1] == b"" and got[5] is True and got[6] == b"hello"


def test_a_malformed_head_is_refused_every_time() -> None:
    bad = b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n"
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            read(bad)
    assert bad not in response._FRAMINGS


def test_the_memory_is_bounded() -> None:
    response._FRAMINGS.clear()
    for i in range(response.MAX_REMEMBERED_HEADS + 10):
        read(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i)
    assert len(response._FRAMINGS) <= response.MAX_REMEMBERED_HEADS
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * response.MAX_REMEMBERED_HEAD + b"\r\nContent-Length: 0\r\n\r\n"
    read(big)
    assert big not in response._FRAMINGS
