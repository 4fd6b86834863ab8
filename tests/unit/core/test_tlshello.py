"""The ClientHello reader: real hellos from OpenSSL, built ones, every prefix, and arbitrary bytes."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshwork.core.tlshello import (
    MAX_RECORD,
    NEED_MORE,
    ClientHello,
    NotTls,
    looks_like_tls,
    parse_client_hello,
)


def _vec(n: int, data: bytes) -> bytes:
    return len(data).to_bytes(n, "big") + data


def _ext(kind: int, body: bytes) -> bytes:
    return kind.to_bytes(2, "big") + _vec(2, body)


def build_hello(
    sni: str | None = None,
    alpn: tuple[str, ...] = (),
    *,
    versions: tuple[int, ...] = (0x0304, 0x0303),
    extra: bytes = b"",
    record_size: int = MAX_RECORD,
) -> bytes:
    """A ClientHello with these extensions, cut into records of at most ``record_size`` bytes."""
    exts = b""
    if sni is not None:
        exts += _ext(0, _vec(2, b"\x00" + _vec(2, sni.encode())))
    if alpn:
        exts += _ext(16, _vec(2, b"".join(_vec(1, p.encode()) for p in alpn)))
    if versions:
        exts += _ext(43, _vec(1, b"".join(v.to_bytes(2, "big") for v in versions)))
    exts += extra
    body = b"\x03\x03" + bytes(32) + _vec(1, bytes(32)) + _vec(2, b"\x13\x01\x13\x02") + _vec(1, b"\x00")
    body += _vec(2, exts)
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    out = b""
    for i in range(0, len(msg), record_size):
        out += b"\x16\x03\x01" + _vec(2, msg[i : i + record_size])
    return out


def openssl_hello(sni: str | None, alpn: list[str]) -> bytes:
    """The first flight Python's ssl (OpenSSL) sends as a client: no sockets, a memory BIO."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_real_openssl_hello_gives_its_sni_and_alpn() -> None:
    data = openssl_hello("Reviews.Default.svc.cluster.local", ["istio-http/1.1", "istio", "http/1.1"])
    got = parse_client_hello(data)
    assert isinstance(got, ClientHello)
    assert got.sni == "reviews.default.svc.cluster.local"
    assert got.alpn == ("istio-http/1.1", "istio", "http/1.1")
    assert 0x0304 in got.versions


def test_a_real_hello_without_sni_or_alpn() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    got = parse_client_hello(outgoing.read())
    assert got == ClientHello(None, (), got.versions if isinstance(got, ClientHello) else (), 0x0303)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "record type 0x47"),
        (b"\x17\x03\x03\x00\x05hello", "record type 0x17"),
        (b"\x16\x02\x00\x00\x05", "major 2"),
        (b"\x16\x03\x01\x00\x00", "record length 0"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "too large"),
        (b"PRI * HTTP/2.0\r\n", "record type 0x50"),
    ],
)
def test_what_is_not_a_client_hello(data: bytes, reason: str) -> None:
    got = parse_client_hello(data)
    assert isinstance(got, NotTls) and reason in got.reason


def test_first_byte_decides_tls_or_plaintext() -> None:
    assert looks_like_tls(b"") is None
    assert looks_like_tls(b"\x16") is True
    assert looks_like_tls(b"GET /") is False


def test_malformed_extensions_are_not_tls() -> None:
    assert isinstance(parse_client_hello(build_hello(extra=_ext(0, b"\x00"))), NotTls)  # SNI twice / short
    bad_sni = build_hello(extra=_ext(0, _vec(2, b"\x00" + _vec(2, b"a b"))))
    assert isinstance(parse_client_hello(bad_sni), NotTls)
    empty_alpn = build_hello(extra=_ext(16, _vec(2, b"\x00")))
    assert isinstance(parse_client_hello(empty_alpn), NotTls)


def test_a_hello_in_several_records_is_joined() -> None:
    whole = build_hello("a.example", ("h2", "http/1.1"))
    split = build_hello("a.example", ("h2", "http/1.1"), record_size=7)
    assert parse_client_hello(split) == parse_client_hello(whole) == ClientHello(
        "a.example", ("h2", "http/1.1"), (0x0304, 0x0303)
    )


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
_names = st.lists(_label, min_size=1, max_size=5).map(".".join)
_protos = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz/.1-", min_size=1, max_size=20), max_size=4)


@given(sni=st.none() | _names, alpn=_protos, record=st.integers(min_value=1, max_value=600))
def test_built_hellos_read_back(sni: str | None, alpn: list[str], record: int) -> None:
    data = build_hello(sni, tuple(alpn), record_size=record)
    assert parse_client_hello(data) == ClientHello(sni, tuple(alpn), (0x0304, 0x0303))


@given(sni=st.none() | _names, alpn=_protos, record=st.integers(min_value=1, max_value=600), data=st.data())
def test_every_prefix_needs_more(sni: str | None, alpn: list[str], record: int, data: st.DataObject) -> None:
    whole = build_hello(sni, tuple(alpn), record_size=record)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    assert parse_client_hello(whole[:cut]) is NEED_MORE
    # What follows the hello (the rest of the flight) changes nothing.
    assert parse_client_hello(whole + b"\x14\x03\x03\x00\x01\x01") == parse_client_hello(whole)


@given(st.binary(max_size=300))
@example(b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03")
@example(b"\x16\x03\x01\x40\x01")
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    got = parse_client_hello(data)
    assert got is NEED_MORE or isinstance(got, NotTls | ClientHello)
    if data and data[0] != 0x16:
        assert isinstance(got, NotTls)


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=400))
def test_flipping_a_byte_of_a_hello_never_raises(noise: bytes, at: int) -> None:
    whole = bytearray(build_hello("x.example", ("http/1.1",)))
    at %= len(whole)
    whole[at : at + len(noise)] = noise[: len(whole) - at]
    got = parse_client_hello(bytes(whole))
    assert got is NEED_MORE or isinstance(got, NotTls | ClientHello)
