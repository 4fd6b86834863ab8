"""RELIABILITY.md §1 rows 1-19 and 22 as ONE table of raw requests to refuse.

Plain data, no pytest: ``core.http1``'s unit tests and any live-socket test
(the control-plane ``httpd`` now, the proxy later) run the same rows and
assert the same outcome: the answer's status is ``status`` and the connection
is closed afterwards (``close``).

Load it by path (tests use ``--import-mode=importlib`` and have no packages)::

    import importlib.util, sys
    from pathlib import Path

    def load_bad_requests():
        name = "meshwork_tests_bad_requests"
        if name not in sys.modules:
            path = Path(__file__).resolve().parents[N] / "unit" / "core" / "bad_requests.py"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # before exec: dataclasses look the module up
            spec.loader.exec_module(module)
        return sys.modules[name]

Every request here is refused before a handler could see it, so a server
under test needs no routes. Bodies are at most ``MAX_TEST_BODY`` bytes; the
413 row uses a Content-Length far above any sane ``max_body``.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = b"Host: example.test\r\n"
MAX_TEST_BODY = 16


@dataclass(frozen=True, slots=True)
class BadRequestCase:
    id: str
    raw: bytes
    status: int
    row: str  # the RELIABILITY.md §1 row (or API row) this case stands for
    close: bool = True  # the connection must be closed after the answer


def _req(fields: bytes, body: bytes = b"", line: bytes = b"POST / HTTP/1.1") -> bytes:
    return line + b"\r\n" + fields + b"\r\n" + body


def _chunked(body: bytes) -> bytes:
    return _req(HOST + b"Transfer-Encoding: chunked\r\n", body)


_GOOD_GET = b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"

# One case per line reads best as a table.
# fmt: off
BAD_REQUESTS: list[BadRequestCase] = [
    # Row 1: Content-Length together with Transfer-Encoding.
    BadRequestCase("cl-then-te", _req(HOST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, "1"),
    BadRequestCase("te-then-cl", _req(HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400, "1"),
    BadRequestCase("cl-te-pipeline", _req(HOST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG") + _GOOD_GET, 400, "1"),
    # Row 2: differing or list-valued Content-Length.
    BadRequestCase("cl-differ", _req(HOST + b"Content-Length: 5\r\nContent-Length: 10\r\n", b"hello"), 400, "2"),
    BadRequestCase("cl-list", _req(HOST + b"Content-Length: 5, 10\r\n", b"hello"), 400, "2"),
    BadRequestCase("cl-list-same", _req(HOST + b"Content-Length: 5, 5\r\n", b"hello"), 400, "2"),
    BadRequestCase("cl-differ-leading-zero", _req(HOST + b"Content-Length: 5\r\nContent-Length: 05\r\n", b"hello"), 400, "2"),
    # Row 3 (identical duplicates) is accepted and collapsed: see the good cases in test_http1.py.
    # Row 4: Content-Length that is not 1*DIGIT, or longer than 19 digits.
    BadRequestCase("cl-plus", _req(HOST + b"Content-Length: +5\r\n", b"hello"), 400, "4"),
    BadRequestCase("cl-minus", _req(HOST + b"Content-Length: -1\r\n"), 400, "4"),
    BadRequestCase("cl-hex", _req(HOST + b"Content-Length: 0x05\r\n", b"hello"), 400, "4"),
    BadRequestCase("cl-inner-space", _req(HOST + b"Content-Length: 1 3\r\n", b"hello"), 400, "4"),
    BadRequestCase("cl-20-digits", _req(HOST + b"Content-Length: 00000000000000000005\r\n", b"hello"), 400, "4"),
    BadRequestCase("cl-empty", _req(HOST + b"Content-Length: \r\n"), 400, "4"),
    BadRequestCase("cl-unicode-digit", _req(HOST + "Content-Length: \u0665\r\n".encode()), 400, "4"),
    # Row 5: Transfer-Encoding that does not end in one chunked.
    BadRequestCase("te-gzip-only", _req(HOST + b"Transfer-Encoding: gzip\r\n", b"hello"), 400, "5"),
    BadRequestCase("te-xchunked", _req(HOST + b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 400, "5"),
    BadRequestCase("te-chunked-chunked", _req(HOST + b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400, "5"),
    BadRequestCase("te-chunked-twice", _req(HOST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, "5"),
    BadRequestCase("te-chunked-then-gzip", _req(HOST + b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400, "5"),
    BadRequestCase("te-gzip-chunked", _req(HOST + b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501, "5"),
    BadRequestCase("te-empty-element", _req(HOST + b"Transfer-Encoding: , chunked\r\n", b"0\r\n\r\n"), 400, "5"),
    BadRequestCase("te-with-param", _req(HOST + b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"), 400, "5"),
    # Row 6: Transfer-Encoding on HTTP/1.0.
    BadRequestCase("te-http10", _req(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", line=b"POST / HTTP/1.0"), 400, "6"),
    # Row 7: obfuscated framing names.
    BadRequestCase("name-space-before-colon", _req(HOST + b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-tab-before-colon", _req(HOST + b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-leading-space", _req(HOST + b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-first-field-leading-space", _req(b" Transfer-Encoding: chunked\r\n" + HOST, b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-ctl", _req(HOST + b"\x01Content-Length: 5\r\n", b"hello"), 400, "7"),
    BadRequestCase("name-long-s", _req(HOST + "Tran\u017ffer-Encoding: chunked\r\n".encode(), b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-underscore-te", _req(HOST + b"Transfer_Encoding: chunked\r\n", b"0\r\n\r\n"), 400, "7"),
    BadRequestCase("name-underscore-plain", _req(HOST + b"X_Forwarded_For: 1.2.3.4\r\n", line=b"GET / HTTP/1.1"), 400, "7"),
    BadRequestCase("name-nonascii", _req(HOST + b"X-\xc3\xa9: 1\r\n", line=b"GET / HTTP/1.1"), 400, "7"),
    # Row 8: obs-fold.
    BadRequestCase("obs-fold-space", _req(HOST + b"X-A: a\r\n b\r\n", line=b"GET / HTTP/1.1"), 400, "8"),
    BadRequestCase("obs-fold-tab", _req(HOST + b"X-A: a\r\n\tb\r\n", line=b"GET / HTTP/1.1"), 400, "8"),
    BadRequestCase("obs-fold-te", _req(HOST + b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400, "8"),
    # Row 9: bare CR anywhere; bare LF line endings.
    BadRequestCase("bare-cr-in-value", _req(HOST + b"X: \rxTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, "9"),
    BadRequestCase("bare-cr-request-line", b"GET /\r HTTP/1.1\r\n" + HOST + b"\r\n", 400, "9"),
    BadRequestCase("bare-cr-end-of-field", _req(HOST + b"X: a\r\r\n", line=b"GET / HTTP/1.1"), 400, "9"),
    BadRequestCase("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: example.test\n\n", 400, "9"),
    BadRequestCase("bare-lf-one-field", b"GET / HTTP/1.1\r\nHost: example.test\nX: b\r\n\r\n", 400, "9"),
    BadRequestCase("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: example.test\r\n\n", 400, "9"),
    BadRequestCase("nul-in-value", _req(HOST + b"X: a\x00b\r\n", line=b"GET / HTTP/1.1"), 400, "9"),
    BadRequestCase("del-in-value", _req(HOST + b"X: a\x7fb\r\n", line=b"GET / HTTP/1.1"), 400, "9"),
    # Row 10: empty or whitespace-only header name, or one starting with ":".
    BadRequestCase("empty-name", _req(HOST + b": x\r\n", line=b"GET / HTTP/1.1"), 400, "10"),
    BadRequestCase("pseudo-header-name", _req(HOST + b":authority: x\r\n", line=b"GET / HTTP/1.1"), 400, "10"),
    BadRequestCase("space-only-name", _req(HOST + b"\t : x\r\n", line=b"GET / HTTP/1.1"), 400, "10"),
    BadRequestCase("line-without-colon", _req(HOST + b"X-No-Colon\r\n", line=b"GET / HTTP/1.1"), 400, "10"),
    # Row 11: chunk size not hex, overflowing, signed or with spaces.
    BadRequestCase("chunk-size-not-hex", _chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-overflow", _chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-plus", _chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-minus", _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-0x", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-trailing-space", _chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-leading-space", _chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-size-empty", _chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    BadRequestCase("chunk-ext-bws", _chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), 400, "11"),
    # Row 12: bare LF ending a chunk-size line.
    BadRequestCase("chunk-size-bare-lf", _chunked(b"5\nhello\r\n0\r\n\r\n"), 400, "12"),
    BadRequestCase("last-chunk-bare-lf", _chunked(b"5\r\nhello\r\n0\n\r\n"), 400, "12"),
    # Row 13: LF inside a chunk-ext; unbounded chunk-ext.
    BadRequestCase("chunk-ext-lf", _chunked(b"5;a\nb\r\nhello\r\n0\r\n\r\n"), 400, "13"),
    BadRequestCase("chunk-ext-cr", _chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400, "13"),
    BadRequestCase("chunk-ext-long-line", _chunked(b"5;a=" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400, "13"),
    BadRequestCase("chunk-ext-total", _chunked(b"1;e=" + b"x" * 3000 + b"\r\na\r\n") * 6 + b"0\r\n\r\n", 400, "13"),
    BadRequestCase("chunk-ext-bad-quote", _chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400, "13"),
    # Row 14: chunk data not followed by exactly CRLF; chunk longer than declared.
    BadRequestCase("chunk-data-no-crlf", _chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, "14"),
    BadRequestCase("chunk-data-too-long", _chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400, "14"),
    BadRequestCase("chunk-data-lf-only", _chunked(b"5\r\nhello\n0\r\n\r\n"), 400, "14"),
    BadRequestCase("chunk-data-cr-only", _chunked(b"5\r\nhello\r0\r\n\r\n"), 400, "14"),
    # Row 15: the trailer section is parsed as strictly as a head.
    BadRequestCase("trailer-bare-lf", _chunked(b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n"), 400, "15"),
    BadRequestCase("trailer-obs-fold", _chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), 400, "15"),
    BadRequestCase("trailer-underscore", _chunked(b"5\r\nhello\r\n0\r\nX_T: 1\r\n\r\n"), 400, "15"),
    BadRequestCase("trailer-space-before-colon", _chunked(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"), 400, "15"),
    BadRequestCase("trailer-content-length", _chunked(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"), 400, "15"),
    BadRequestCase("trailer-transfer-encoding", _chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, "15"),
    BadRequestCase("trailer-host", _chunked(b"5\r\nhello\r\n0\r\nHost: evil.test\r\n\r\n"), 400, "15"),
    # Row 16: GET/HEAD carrying a body (we choose 400).
    BadRequestCase("get-with-cl", _req(HOST + b"Content-Length: 5\r\n", b"hello", line=b"GET / HTTP/1.1"), 400, "16"),
    BadRequestCase("get-with-te", _req(HOST + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", line=b"GET / HTTP/1.1"), 400, "16"),
    BadRequestCase("head-with-cl", _req(HOST + b"Content-Length: 5\r\n", b"hello", line=b"HEAD / HTTP/1.1"), 400, "16"),
    BadRequestCase("head-with-te", _req(HOST + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", line=b"HEAD / HTTP/1.1"), 400, "16"),
    # Row 17: Host missing, doubled or invalid on HTTP/1.1.
    BadRequestCase("host-missing", b"GET / HTTP/1.1\r\n\r\n", 400, "17"),
    BadRequestCase("host-twice", _req(HOST + HOST, line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-twice-differ", _req(HOST + b"Host: other.test\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-empty", _req(b"Host:\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-space", _req(b"Host: a b\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-userinfo", _req(b"Host: user@example.test\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-bad-port", _req(b"Host: example.test:80a\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-list", _req(b"Host: a.test, b.test\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    BadRequestCase("host-slash", _req(b"Host: a.test/evil\r\n", line=b"GET / HTTP/1.1"), 400, "17"),
    # Row 18: method not an upper-case token; bad version.
    BadRequestCase("method-lower", b"get / HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("method-mixed", b"Get / HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("method-not-token", b"GE(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("method-unknown", b"FROB / HTTP/1.1\r\n" + HOST + b"\r\n", 501, "18"),
    BadRequestCase("version-unicode-digit", "GET / HTTP/1.\U0001d7d9\r\n".encode() + HOST + b"\r\n", 400, "18"),
    BadRequestCase("version-o-umlaut", "GET / HTTP/1\u00f61\r\n".encode() + HOST + b"\r\n", 400, "18"),
    BadRequestCase("version-lower", b"GET / http/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("version-2", b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, "18"),
    BadRequestCase("version-1-2", b"GET / HTTP/1.2\r\n" + HOST + b"\r\n", 505, "18"),
    BadRequestCase("version-0-9", b"GET / HTTP/0.9\r\n" + HOST + b"\r\n", 505, "18"),
    BadRequestCase("version-missing", b"GET /\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("request-line-double-space", b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("request-line-tab", b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("target-nonascii", b"GET /\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("target-not-a-path", b"GET index.html HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    BadRequestCase("target-asterisk-get", b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", 400, "18"),
    # Row 19: too many header fields, or too large a head; an over-long request line is 414.
    BadRequestCase("headers-101", _req(HOST + b"".join(b"X-%d: v\r\n" % i for i in range(100)), line=b"GET / HTTP/1.1"), 431, "19"),
    BadRequestCase("head-over-60k", _req(HOST + b"X-Big: " + b"a" * (61 * 1024) + b"\r\n", line=b"GET / HTTP/1.1"), 431, "19"),
    BadRequestCase("head-over-60k-many-fields", _req(HOST + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 700) for i in range(90)), line=b"GET / HTTP/1.1"), 431, "19"),
    BadRequestCase("request-line-over-16k", b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "19"),
    BadRequestCase("request-line-endless", b"GET /" + b"a" * (70 * 1024), 414, "19"),
    BadRequestCase("trailers-101", _chunked(b"0\r\n" + b"".join(b"T-%d: v\r\n" % i for i in range(101)) + b"\r\n"), 431, "19"),
    # Row 22: bytes pipelined behind a refused request are never parsed.
    BadRequestCase("pipelined-after-no-host", b"GET /bad HTTP/1.1\r\n\r\n" + _GOOD_GET, 400, "22"),
    BadRequestCase("pipelined-after-bad-chunk", _chunked(b"5\r\nhelloXX0\r\n\r\n") + _GOOD_GET, 400, "22"),
    BadRequestCase("pipelined-after-smuggle", _req(HOST + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n") + _GOOD_GET, 400, "22"),
    # API 4: a body over the cap, decided from Content-Length alone.
    BadRequestCase("body-over-cap", _req(HOST + b"Content-Length: 99999999999\r\n"), 413, "API4"),
    # Expect with anything but 100-continue.
    BadRequestCase("expect-unknown", _req(HOST + b"Expect: 200-ok\r\nContent-Length: 0\r\n"), 417, "RFC9110-10.1.1"),
]
# fmt: on

# A request that must be accepted with its two identical Content-Length lines
# collapsed into one (row 3), for tests that check the forwarded head.
DUPLICATE_CONTENT_LENGTH = _req(HOST + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")


def by_id(case_id: str) -> BadRequestCase:
    """The case named ``case_id``."""
    for case in BAD_REQUESTS:
        if case.id == case_id:
            return case
    raise KeyError(case_id)


def _check_unique_ids() -> None:
    seen: set[str] = set()
    for case in BAD_REQUESTS:
        if case.id in seen:
            raise AssertionError(f"duplicate case id {case.id}")
        seen.add(case.id)


_check_unique_ids()
