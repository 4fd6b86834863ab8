"""core.http1: the bad-request table, good requests, and the response writers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httptools
import pytest

from meshwork.core import http1
from meshwork.core.http1 import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    RequestParser,
    format_chunk,
    format_response_head,
    format_trailers,
    reason_phrase,
)
from meshwork.core.http1_checks import KNOWN_METHODS, MAX_HEADERS
from meshwork.errors import LocalProtocolError, RemoteProtocolError


def _load_bad_requests() -> ModuleType:
    name = "meshwork_tests_bad_requests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "bad_requests.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _load_bad_requests()
HOST = b"Host: example.test\r\n"

Event = http1.Event | http1.Pending


def drain(parser: RequestParser) -> list[Event]:
    """Every event the parser can give now, up to NEED_DATA/PAUSED/ConnectionClosed."""
    out: list[Event] = []
    while True:
        event = parser.next_event()
        out.append(event)
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return out


def parse_all(raw: bytes, *, step: int | None = None, eof: bool = False, **kw: int) -> list[Event]:
    parser = RequestParser(**kw)
    events: list[Event] = []
    pieces = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
    for piece in filter(None, pieces):  # b"" would mean end of stream
        parser.receive_data(piece)
        events.extend(e for e in drain(parser) if e is not NEED_DATA)
    if eof:
        parser.receive_data(b"")
        events.extend(e for e in drain(parser) if e is not NEED_DATA)
    return events


def requests_of(events: list[Event]) -> list[Request]:
    return [e for e in events if isinstance(e, Request)]


def body_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


# --- The bad-request table ------------------------------------------------------


def _refuse(raw: bytes, step: int | None) -> tuple[RemoteProtocolError, RequestParser, list[Event]]:
    parser = RequestParser()
    events: list[Event] = []
    pieces = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
    for piece in pieces:
        parser.receive_data(piece)
        try:
            events.extend(drain(parser))
        except RemoteProtocolError as exc:
            return exc, parser, events
    parser.receive_data(b"")
    try:
        events.extend(drain(parser))
    except RemoteProtocolError as exc:
        return exc, parser, events
    raise AssertionError(f"accepted: {events!r}")


@pytest.mark.parametrize("case", bad.BAD_REQUESTS, ids=lambda c: f"row{c.row}-{c.id}")
def test_bad_request_is_refused(case: Any) -> None:
    exc, parser, events = _refuse(case.raw, None)
    assert exc.status_hint == case.status, str(exc)
    assert case.close
    # Dead for good: the same error again, more bytes are ignored, and nothing
    # after the refused request was ever parsed (row 22).
    with pytest.raises(RemoteProtocolError) as again:
        parser.next_event()
    assert again.value is exc
    parser.receive_data(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_event()
    assert all(r.target != b"/next" for r in requests_of(events))
    assert parser.buffered == 0


@pytest.mark.parametrize(
    "case",
    [c for c in bad.BAD_REQUESTS if len(c.raw) < 4096],
    ids=lambda c: f"row{c.row}-{c.id}",
)
def test_bad_request_is_refused_byte_by_byte(case: Any) -> None:
    exc, _, events = _refuse(case.raw, 1)
    assert exc.status_hint == case.status, str(exc)
    assert all(r.target != b"/next" for r in requests_of(events))


def test_table_covers_every_row() -> None:
    rows = {c.row for c in bad.BAD_REQUESTS}
    wanted = {str(n) for n in range(1, 20)} - {"3"} | {"22"}  # row 3 is accepted: see below
    assert wanted <= rows


def test_error_messages_name_the_problem() -> None:
    exc, _, _ = _refuse(bad.by_id("name-underscore-te").raw, None)
    assert "underscore" in str(exc)
    exc, _, _ = _refuse(bad.by_id("obs-fold-space").raw, None)
    assert "obs-fold" in str(exc)
    exc, _, _ = _refuse(bad.by_id("cl-then-te").raw, None)
    assert "Content-Length and Transfer-Encoding" in str(exc)


# --- Good requests --------------------------------------------------------------


def test_small_get() -> None:
    raw = b"GET /a?b=c HTTP/1.1\r\n" + HOST + b"User-Agent: t\r\n\r\n"
    events = parse_all(raw)
    assert len(events) == 2
    req, end = events
    assert isinstance(req, Request)
    assert (req.method, req.target, req.http_version, req.host) == (
        b"GET",
        b"/a?b=c",
        b"1.1",
        b"example.test",
    )
    assert req.head == raw
    assert req.headers == [(b"Host", b"example.test"), (b"User-Agent", b"t")]
    assert req.keep_alive and not req.has_body and not req.expect_continue
    assert end == EndOfMessage((), True)


def test_pipelined_requests_come_out_in_order() -> None:
    raw = (
        b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /2 HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc"
        b"POST /3 HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
        b"GET /4 HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
        b"GET /never HTTP/1.1\r\n" + HOST + b"\r\n"
    )
    for step in (None, 1, 7):
        events = parse_all(raw, step=step)
        assert [r.target for r in requests_of(events)] == [b"/1", b"/2", b"/3", b"/4"]
        ends = [e for e in events if isinstance(e, EndOfMessage)]
        assert [e.keep_alive for e in ends] == [True, True, True, False]
        assert body_of(events) == b"abcxy"


def test_chunked_with_extensions_and_trailers() -> None:
    raw = (
        b"PUT /x HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: Chunked\r\n\r\n"
        b"5;name=value;flag\r\nhello\r\n"
        b'6;q="a \\"quoted\\" one"\r\n world\r\n'
        b"0\r\nX-Checksum: abc \r\nX-Other:\r\n\r\n"
    )
    for step in (None, 1, 3):
        events = parse_all(raw, step=step)
        assert body_of(events) == b"hello world"
        end = events[-1]
        assert isinstance(end, EndOfMessage)
        assert end.trailers == ((b"X-Checksum", b"abc"), (b"X-Other", b""))
        assert end.keep_alive
        (req,) = requests_of(events)
        assert req.chunked and req.content_length is None and req.has_body


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive", True),
        (b"1.1", b"keep-alive, close", False),
        (b"1.1", b"TE, Close", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"keep-alive, close", False),
        (b"1.0", b"close", False),
    ],
)
def test_keep_alive_follows_rfc_9112(version: bytes, connection: bytes | None, keep: bool) -> None:
    for with_body in (False, True):  # with a body, llhttp's own verdict is folded in too
        fields = HOST + (b"Connection: " + connection + b"\r\n" if connection else b"")
        body = b""
        if with_body:
            fields += b"Content-Length: 2\r\n"
            body = b"ok"
        raw = b"POST / HTTP/" + version + b"\r\n" + fields + b"\r\n" + body
        events = parse_all(raw)
        (req,) = requests_of(events)
        end = events[-1]
        assert isinstance(end, EndOfMessage)
        assert req.keep_alive is keep
        assert end.keep_alive is keep


def test_nothing_is_parsed_after_a_closing_request() -> None:
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/1.0\r\n\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    events = drain(parser)
    assert [type(e) for e in events] == [Request, EndOfMessage, type(NEED_DATA)]
    assert parser.buffered == 0
    parser.receive_data(b"more garbage \x00")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"")
    assert isinstance(parser.next_event(), ConnectionClosed)


def test_identical_duplicate_content_length_collapses() -> None:
    events = parse_all(bad.DUPLICATE_CONTENT_LENGTH)
    (req,) = requests_of(events)
    assert req.content_length == 5
    assert req.head.lower().count(b"content-length") == 1
    assert [n for n, _ in req.headers if n.lower() == b"content-length"] == [b"Content-Length"]
    assert body_of(events) == b"hello"
    # What we forward re-parses to the same request.
    again = parse_all(req.head + b"hello")
    assert requests_of(again) == [req]


def test_expect_100_continue_is_a_flag() -> None:
    raw = b"POST / HTTP/1.1\r\n" + HOST + b"Expect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
    parser = RequestParser()
    parser.receive_data(raw)
    req = parser.next_event()
    assert isinstance(req, Request) and req.expect_continue
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"x")
    assert parser.next_event() == Data(b"x")
    # On HTTP/1.0 the expectation is ignored (RFC 9110 §10.1.1).
    events = parse_all(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert not requests_of(events)[0].expect_continue


def test_body_streams_without_buffering() -> None:
    parser = RequestParser(max_body=None)
    size = 1 << 20
    parser.receive_data(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % size)
    assert isinstance(parser.next_event(), Request)
    got = 0
    piece = b"z" * 65536
    while got < size:
        parser.receive_data(piece)
        event = parser.next_event()
        assert isinstance(event, Data) and len(event.data) == len(piece)
        assert parser.buffered == 0
        got += len(event.data)
    assert parser.next_event() == EndOfMessage((), True)


def test_max_body_for_chunked_bodies() -> None:
    raw = b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
    ok = parse_all(raw + b"a\r\n0123456789\r\n0\r\n\r\n", max_body=10)
    assert body_of(ok) == b"0123456789"
    parser = RequestParser(max_body=10)
    # Refused from the second size line, before its data arrives.
    parser.receive_data(raw + b"6\r\nabcdef\r\n5\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        drain(parser)
    assert info.value.status_hint == 413


def test_content_length_at_the_cap_is_accepted() -> None:
    events = parse_all(
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n0123456789", max_body=10
    )
    assert body_of(events) == b"0123456789"
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\n", max_body=10)
    assert info.value.status_hint == 413


def test_limits_are_inclusive() -> None:
    fields = HOST + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    events = parse_all(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert len(requests_of(events)[0].headers) == MAX_HEADERS
    trailers = b"".join(b"T-%d: v\r\n" % i for i in range(MAX_HEADERS))
    events = parse_all(
        b"POST / HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
        + trailers
        + b"\r\n"
    )
    end = events[-1]
    assert isinstance(end, EndOfMessage) and len(end.trailers) == MAX_HEADERS


def test_upgrade_pauses_until_resumed() -> None:
    raw = (
        b"GET /chat HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n"
        b"\x81\x05hello"
    )
    parser = RequestParser()
    parser.receive_data(raw)
    req = parser.next_event()
    assert isinstance(req, Request) and req.upgrade == b"WebSocket"
    assert parser.next_event() == EndOfMessage((), True)
    assert parser.next_event() is PAUSED
    assert parser.trailing_data == b"\x81\x05hello"
    # Declined instead: the bytes that follow are parsed as HTTP again.
    parser = RequestParser()
    parser.receive_data(raw.replace(b"\x81\x05hello", b"GET /2 HTTP/1.1\r\n" + HOST + b"\r\n"))
    assert [type(e) for e in drain(parser)] == [Request, EndOfMessage, type(PAUSED)]
    parser.resume()
    assert [r.target for r in requests_of(drain(parser))] == [b"/2"]
    with pytest.raises(LocalProtocolError):
        parser.resume()


def test_upgrade_header_without_connection_upgrade_is_ignored() -> None:
    events = parse_all(
        b"GET / HTTP/1.1\r\n" + HOST + b"Upgrade: h2c\r\n\r\nGET /2 HTTP/1.1\r\n" + HOST + b"\r\n"
    )
    assert [r.upgrade for r in requests_of(events)] == [None, None]


def test_connect_pauses() -> None:
    parser = RequestParser()
    parser.receive_data(b"CONNECT example.test:443 HTTP/1.1\r\n" + HOST + b"\r\n\x16\x03\x01")
    req = parser.next_event()
    assert isinstance(req, Request) and req.method == b"CONNECT"
    assert isinstance(parser.next_event(), EndOfMessage)
    assert parser.next_event() is PAUSED
    assert parser.trailing_data == b"\x16\x03\x01"


@pytest.mark.parametrize(
    "raw",
    [
        b"CONNECT /path HTTP/1.1\r\n" + HOST + b"\r\n",
        b"CONNECT example.test HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET /chat HTTP/1.1\r\n"
        + HOST
        + b"Connection: upgrade\r\nUpgrade: ws\r\nUpgrade: x\r\n\r\n",
        b"POST /chat HTTP/1.1\r\n"
        + HOST
        + b"Connection: upgrade\r\nUpgrade: ws\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\n" + HOST + b"Connection: bad token\r\n\r\n",
        b"\r\n\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    ],
)
def test_more_refusals(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(raw)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET http://example.test/a?b HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:example.test\t \r\n\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Latin: caf\xe9\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
        b"GET /" + b"a" * 16000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"M-SEARCH / HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"Connection: , close,\r\n\r\n",
    ],
)
def test_more_acceptances(raw: bytes) -> None:
    events = parse_all(raw)
    assert len(requests_of(events)) == 1
    assert isinstance(events[-1], EndOfMessage)


def test_header_values_are_ows_stripped_and_names_kept() -> None:
    events = parse_all(b"GET / HTTP/1.1\r\nhOsT:  Example.Test \r\nX-A:\t1 2\t\r\n\r\n")
    (req,) = requests_of(events)
    assert req.headers == [(b"hOsT", b"Example.Test"), (b"X-A", b"1 2")]
    assert req.host == b"example.test"


def test_eof_handling() -> None:
    assert parse_all(b"", eof=True) == [ConnectionClosed()]
    events = parse_all(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n", eof=True)
    assert isinstance(events[-1], ConnectionClosed)
    for partial in (
        b"GET / HTTP/1.1\r\nHo",
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nab",
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n",
    ):
        with pytest.raises(RemoteProtocolError):
            parse_all(partial, eof=True)
    parser = RequestParser()
    parser.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"x")


def test_slow_head_is_linear_and_refused_at_the_limit() -> None:
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/1.1\r\n" + HOST + b"X-Slow: ")
    assert parser.next_event() is NEED_DATA
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(70 * 1024 // 64):
            parser.receive_data(b"s" * 64)
            assert parser.next_event() is NEED_DATA
    assert info.value.status_hint == 431


def test_every_known_method_is_known_to_llhttp() -> None:
    class Sink:
        def __init__(self) -> None:
            self.done = 0

        def on_message_complete(self) -> None:
            self.done += 1

    for method in sorted(KNOWN_METHODS):
        sink = Sink()
        target = b"example.test:443" if method == b"CONNECT" else b"/"
        raw = method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n"
        try:
            httptools.HttpRequestParser(sink).feed_data(raw)
        except httptools.HttpParserUpgrade:
            pass
        assert sink.done == 1, method
        assert requests_of(parse_all(raw))[0].method == method


# --- Writers --------------------------------------------------------------------


def test_format_response_head() -> None:
    head = format_response_head(200, [("Content-Type", "text/plain"), (b"Content-Length", b"2")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
    assert format_response_head(404, []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert format_response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    assert format_response_head(200, [], reason="Fine") == b"HTTP/1.1 200 Fine\r\n\r\n"
    assert reason_phrase(431) == b"Request Header Fields Too Large"


@pytest.mark.parametrize(
    "headers",
    [
        [("X", "a\r\nSet-Cookie: evil")],
        [("X", "a\nb")],
        [("Bad Name", "v")],
        [("X", "\x00")],
        [("", "v")],
    ],
)
def test_response_splitting_is_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(LocalProtocolError):
        format_response_head(200, headers)
    with pytest.raises(LocalProtocolError):
        format_trailers(headers)


def test_bad_status_or_reason_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        format_response_head(42, [])
    with pytest.raises(LocalProtocolError):
        format_response_head(200, [], reason="OK\r\nX: y")


def test_chunk_framing_round_trips() -> None:
    body = (
        format_chunk(b"hello")
        + format_chunk(b"")
        + format_chunk(b"x" * 300)
        + format_trailers([("X-T", "1")])
    )
    assert body.startswith(b"5\r\nhello\r\n12c\r\n")
    raw = b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + body
    events = parse_all(raw)
    assert body_of(events) == b"hello" + b"x" * 300
    end = events[-1]
    assert isinstance(end, EndOfMessage) and end.trailers == ((b"X-T", b"1"),)
    assert format_trailers() == http1.LAST_CHUNK


@pytest.mark.parametrize(
    "host",
    [b"Fresh-Name.test:81 ", b"x" * 400 + b".test", b"[::1]"],
)
def test_host_cache_gives_the_same_answer(host: bytes) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    first = requests_of(parse_all(raw))  # validates the Host (and may remember it)
    again = requests_of(parse_all(raw))  # may take the remembered answer
    assert first == again
    assert first[0].host == host.strip().lower()
    with_cl = requests_of(parse_all(raw[:-2] + b"Content-Length: 0\r\n\r\n"))  # general path
    assert with_cl[0].host == first[0].host
