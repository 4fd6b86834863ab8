"""The fast head scan against the regex grammar it stands in for.

Compiled, ``check_head`` takes a fast path (``_scan``: a loop over the head's
bytes) for the usual head and the regex path (``_HEAD`` then ``_SPECIAL``) for
everything else; these tests call ``_scan`` directly, so they hold it to the
grammar whether or not this run is compiled. The fast path must never accept what the grammar refuses,
must find the same framing fields, and must be taken for every head the
regex path would pass with a known method and an origin-form target (else
the speed it exists for is lost without any test noticing).
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshwork.core import http1_checks as c

SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(head: bytes) -> tuple[bytes, bytes, int, list[tuple[bytes, bytes]]] | None:
    """What ``_scan`` must return: the regex path's findings when that path would pass the
    request line and field count, for a known method with an origin-form target; else None."""
    m = c._HEAD.fullmatch(head)
    if m is None:
        return None
    method, target = m.group(1, 2)
    line_end = m.end(3)
    if line_end > c.MAX_REQUEST_LINE or method not in c.KNOWN_METHODS or method == b"CONNECT":
        return None
    if target[:1] != b"/" or head.count(b"\n", line_end + 2) > c.MAX_HEADERS + 1:
        return None
    return method, target, line_end, c._SPECIAL.findall(head.lower(), line_end)


# Pieces chosen to sit on every edge of the grammar: case, whitespace, separators,
# control bytes, obs-text, bare CR/LF, underscores, empty names and values.
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"get", b"FOO", b"G_T", b"", b"GE T"])
target_bytes = st.sampled_from(
    [b"/", b"/a", b"?", b"*", b"http://x/", b" ", b"\t", b"\x7f", b"\xe9", b"\x00", b"%20", b":", b"\r", b"\n"]
)
targets = st.lists(target_bytes, max_size=5).map(b"".join)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1.10"])
spaces = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b""])
special_names = st.sampled_from(
    [b"Host", b"host", b"HOST", b"Content-Length", b"transfer-encoding", b"Transfer-Encoding", b"Connection",
     b"EXPECT", b"Upgrade", b"Keep-Alive", b"proxy-connection", b"TE", b"te", b"Http2-Settings", b"hosts",
     b"X-Host", b"Host ", b" Host", b"Content_Length", b"te2"]
)  # fmt: skip
other_names = st.text("abcXYZ09-!#$%&'*+.^`|~_ \t\"(),/;<=>?@[\\]{}\xe9", min_size=0, max_size=10).map(
    lambda s: s.encode("latin-1")
)
value_bytes = st.sampled_from(
    [b"a", b"B", b"1", b" ", b"\t", b":", b"\x7f", b"\x00", b"\x01", b"\xe9", b"\xff", b"chunked", b"close", b"\r", b"\n"]
)
values = st.lists(value_bytes, max_size=6).map(b"".join)
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    line = draw(methods) + draw(spaces) + draw(targets) + draw(spaces) + draw(versions)
    out = [line, draw(line_ends)]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(special_names | other_names)
        colon = draw(st.sampled_from([b":", b":", b":", b"", b"::"]))
        out += [name, colon, draw(values), draw(line_ends)]
    out.append(b"\r\n")
    head = b"".join(out)
    if draw(st.booleans()):
        return head
    i = draw(st.integers(0, len(head)))
    return head[:i] + draw(st.binary(min_size=0, max_size=2)) + head[i + draw(st.integers(0, 2)) :]


@SETTINGS
@given(heads())
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nX_Y: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n")
@example(b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: \xe9\t\x7e\r\nTE: trailers\r\nKEEP-ALIVE: 5\r\n\r\n")
def test_the_fast_scan_agrees_with_the_grammar(head: bytes) -> None:
    assert c._scan(head) == reference(head)


def test_the_fast_scan_covers_the_common_requests() -> None:
    # Not a property a generator finds easily: realistic heads take the fast path.
    browser = (
        b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
        b"Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-GB,en;q=0.5\r\nConnection: keep-alive\r\n"
        b"Cookie: a=b; c=d\r\nX-Request-Id: 4f1c\r\n\r\n"
    )
    post = b"POST /api HTTP/1.0\r\nhost: svc:8080\r\ncontent-length: 2\r\nCONTENT-TYPE: application/json\r\n\r\n"
    for head in (browser, post):
        scanned = c._scan(head)
        assert scanned is not None and scanned == reference(head)
    assert c._scan(browser) == (
        b"GET", b"/index.html?q=1", 28, [(b"host", b" example.test"), (b"connection", b" keep-alive")]
    )  # fmt: skip


def test_too_many_fields_leave_the_fast_path() -> None:
    fields = b"".join(b"x-%d: v\r\n" % i for i in range(c.MAX_HEADERS))
    at_limit = b"GET / HTTP/1.1\r\nHost: a\r\n" + fields[: -len(b"x-99: v\r\n")] + b"\r\n"
    over = b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
    assert c._scan(at_limit) is not None
    assert c._scan(over) is None and reference(over) is None
