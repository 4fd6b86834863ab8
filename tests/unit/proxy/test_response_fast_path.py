"""The engine's shortcuts on the response side give what the general code gives.

* ``heads.cut_hop`` with the hop-by-hop lines ``ResponseReader`` found equals
  ``heads.response_head`` scanning the head itself (generated heads);
* a ``RetryPolicy.retriable_statuses`` hint agrees with its ``retry_on``
  (Istio's default in standalone mode).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.proxy.heads import cut_hop, response_head
from meshwork.proxy.response import ResponseReader
from meshwork.proxy.static import ISTIO_DEFAULT_RETRIES

_FIELD = st.sampled_from([
    b"Content-Length: 5", b"content-length:5", b"Connection: keep-alive", b"connection: Keep-Alive",
    b"Connection: close", b"Keep-Alive: timeout=5", b"keep-alive:max=3", b"Proxy-Connection: x",
    b"Upgrade: h2c", b"upgrade:websocket", b"X-A: 1", b"Server: nginx", b"Date: Thu, 26 Nov 2026 04:02:03 GMT",
    b"Connection: keep-alive, X-A", b"Connection: x-a", b"Connection: close, keep-alive",
    b"Connection: upgrade", b"X-Connection: keep-alive", b"Set-Cookie: a=b; connection: keep-alive",
])


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204"]),
    st.lists(_FIELD, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_cut_hop_equals_response_head(line: bytes, fields: list[bytes], close: bool, http10: bool) -> None:
    if not any(f.lower().startswith(b"content-length") for f in fields):
        fields = [*fields, b"Content-Length: 5"]
    head = line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    reader = ResponseReader()
    try:
        reader.feed(head + b"hello")
    except Exception:
        return  # refused (e.g. conflicting lengths): never forwarded
    assert reader.head == head
    if reader.hop is None:
        return  # a Connection header names other fields: the general path runs
    expected = response_head(head, close=close, http10_keep_alive=http10)
    # Twice, and once more for a kept-alive 1.1 client: the second calls may answer
    # from the memo of heads already cut, which must never change an answer.
    assert cut_hop(head, reader.hop, close, http10) == expected
    assert cut_hop(head, reader.hop, close, http10) == expected
    assert cut_hop(head, reader.hop, False, False) == response_head(head, close=False)
    assert cut_hop(head, reader.hop, close, http10) == expected


def test_istio_default_retriable_statuses_agree_with_retry_on() -> None:
    policy = ISTIO_DEFAULT_RETRIES
    assert policy.retriable_statuses is not None
    for status in range(100, 600):
        assert (status in policy.retriable_statuses) is policy.retry_on(status)
