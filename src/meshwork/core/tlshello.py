"""The first bytes of a TLS connection: is it TLS, and which server name and protocols does it ask for?

What lives here: ``parse_client_hello(data)``, a pure reader of the TLS
ClientHello (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for TLS 1.2) that a
listener peeks at before it hands the socket to a TLS or plaintext
transport. It answers with one of three things:

* ``NEED_MORE``: the bytes so far are a valid beginning of a ClientHello;
  peek again when more have arrived;
* ``NotTls(reason)``: this is not a TLS ClientHello (plaintext, another
  record type, or a malformed hello), with why;
* ``ClientHello(sni, alpn, versions)``: the server name (RFC 6066 §3,
  ``host_name`` only, lower-cased, no trailing dot), the ALPN protocol list
  (RFC 7301 §3.1) and the versions the client offers (RFC 8446 §4.2.1), in
  the client's order.

The hello may span several handshake records (RFC 8446 §5.1 allows a
handshake message to be fragmented); the records are joined until the
message is whole.

What must not live here: sockets, peeking, choosing certificates (the
listener in ``meshwork.proxy.server`` does that with what this returns).
Nothing here raises on any input: every byte string gets one of the three
answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HELLO_BYTES",
    "NEED_MORE",
    "ClientHello",
    "NeedMore",
    "NotTls",
    "looks_like_tls",
    "parse_client_hello",
]

# A ClientHello larger than this is refused as not TLS rather than waited for:
# typical hellos are 200-600 bytes, post-quantum key shares (X25519MLKEM768)
# bring them near 1.8 KiB; Envoy's tls_inspector reads at most 64 KiB.
MAX_HELLO_BYTES: Final = 64 * 1024
# RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes.
MAX_RECORD: Final = 1 << 14

_HANDSHAKE: Final = 0x16  # ContentType handshake
_CLIENT_HELLO: Final = 0x01  # HandshakeType client_hello
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_EXT_SUPPORTED_VERSIONS: Final = 43
_HOST_NAME: Final = 0  # NameType host_name


class NeedMore:
    """The bytes so far begin a ClientHello; more are needed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True, slots=True)
class NotTls:
    """Not a TLS ClientHello: ``reason`` says what was wrong."""

    reason: str


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a listener needs from a ClientHello."""

    sni: str | None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()  # supported_versions (0x0304 = TLS 1.3); empty: the legacy field only
    legacy_version: int = 0x0303


Parsed = NeedMore | NotTls | ClientHello


def looks_like_tls(data: bytes) -> bool | None:
    """True when ``data`` starts like a TLS handshake record, False when it cannot, None: no bytes yet.

    Only the first byte decides (0x16, a handshake record), as Envoy's
    tls_inspector and Istio's PERMISSIVE mode do: no plaintext protocol the
    mesh carries starts with it (HTTP/1.1 methods and the HTTP/2 preface are ASCII).
    """
    if not data:
        return None
    return data[0] == _HANDSHAKE


def _handshake_bytes(data: bytes) -> bytes | NeedMore | NotTls:
    """The handshake-layer bytes of the leading records, up to the end of the first message."""
    out = bytearray()
    pos = 0
    need: int | None = None  # the message's full length once its header is in
    while True:
        if len(data) - pos < 5:
            if pos < len(data) and data[pos] != _HANDSHAKE:
                return NotTls(f"record type {data[pos]:#04x} is not a handshake")
            if len(data) - pos >= 2 and data[pos + 1] != 3:
                return NotTls(f"record version major {data[pos + 1]} is not 3")
            return NEED_MORE
        ctype, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5], "big")
        if ctype != _HANDSHAKE:
            return NotTls(f"record type {ctype:#04x} is not a handshake")
        if major != 3:
            return NotTls(f"record version major {major} is not 3")
        if length == 0 or length > MAX_RECORD:
            return NotTls(f"record length {length} is out of range")
        fragment = data[pos + 5 : pos + 5 + length]
        out += fragment
        if len(fragment) < length:
            partial = True
        else:
            partial = False
            pos += 5 + length
        if need is None and len(out) >= 4:
            if out[0] != _CLIENT_HELLO:
                return NotTls(f"handshake type {out[0]} is not ClientHello")
            need = 4 + int.from_bytes(out[1:4], "big")
            if need > MAX_HELLO_BYTES:
                return NotTls(f"ClientHello of {need} bytes is too large")
        if need is not None and len(out) >= need:
            return bytes(out[:need])
        if partial:
            return NEED_MORE


class _Reader:
    """Length-prefixed fields of a whole message; ``fail`` is set instead of raising."""

    __slots__ = ("data", "fail", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.fail = ""

    def take(self, n: int, what: str) -> bytes:
        if self.fail:
            return b""
        end = self.pos + n
        if end > len(self.data):
            self.fail = f"{what} runs past the end of the ClientHello"
            return b""
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def number(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big") if not self.fail else 0

    def vector(self, len_bytes: int, what: str) -> bytes:
        return self.take(self.number(len_bytes, f"{what} length"), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _server_name(ext: bytes) -> str | NotTls | None:
    r = _Reader(ext)
    names = _Reader(r.vector(2, "server_name_list"))
    if r.fail or r.left:
        return NotTls(r.fail or "bytes after server_name_list")
    found: str | None = None
    while names.left and not names.fail:
        kind = names.number(1, "name_type")
        name = names.vector(2, "host_name")
        if names.fail:
            break
        if kind != _HOST_NAME or found is not None:
            continue  # RFC 6066 §3: one name per type; unknown types are skipped
        if not name:
            return NotTls("empty host_name")
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            return NotTls("host_name is not ASCII")
        if not all(c.isalnum() or c in "-._*" for c in text):
            return NotTls(f"host_name {text!r} has characters a DNS name cannot")
        found = text.lower().rstrip(".") or None
    if names.fail:
        return NotTls(names.fail)
    return found


def _alpn(ext: bytes) -> tuple[str, ...] | NotTls:
    r = _Reader(ext)
    lst = _Reader(r.vector(2, "protocol_name_list"))
    if r.fail or r.left:
        return NotTls(r.fail or "bytes after protocol_name_list")
    out: list[str] = []
    while lst.left:
        proto = lst.vector(1, "protocol name")
        if lst.fail:
            return NotTls(lst.fail)
        if not proto:
            return NotTls("empty ALPN protocol name")  # RFC 7301 §3.1
        out.append(proto.decode("latin-1"))
    if not out:
        return NotTls("empty ALPN list")
    return tuple(out)


def _versions(ext: bytes) -> tuple[int, ...] | NotTls:
    r = _Reader(ext)
    body = r.vector(1, "supported_versions")
    if r.fail or r.left or len(body) % 2:
        return NotTls(r.fail or "malformed supported_versions")
    return tuple(int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2))


def parse_client_hello(data: bytes) -> Parsed:
    """Read the ClientHello at the start of ``data`` (bytes peeked from a new connection)."""
    msg = _handshake_bytes(data)
    if not isinstance(msg, bytes):
        return msg
    r = _Reader(msg)
    r.take(4, "handshake header")
    legacy_version = r.number(2, "legacy_version")
    r.take(32, "random")
    session = r.vector(1, "legacy_session_id")
    if len(session) > 32:
        return NotTls("legacy_session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if not r.fail and (not suites or len(suites) % 2):
        return NotTls("malformed cipher_suites")
    compression = r.vector(1, "legacy_compression_methods")
    if not r.fail and not compression:
        return NotTls("no compression methods")
    if r.fail:
        return NotTls(r.fail)
    if legacy_version >> 8 != 3:
        return NotTls(f"legacy_version {legacy_version:#06x} is not TLS")
    if not r.left:
        return ClientHello(None, (), (), legacy_version)  # no extensions at all (old clients)
    extensions = _Reader(r.vector(2, "extensions"))
    if r.fail or r.left:
        return NotTls(r.fail or "bytes after the extensions")
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2, "extension type")
        body = extensions.vector(2, "extension data")
        if extensions.fail:
            return NotTls(extensions.fail)
        if kind in seen:
            return NotTls(f"extension {kind} appears twice")  # RFC 8446 §4.2
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            got = _server_name(body)
            if isinstance(got, NotTls):
                return got
            sni = got
        elif kind == _EXT_ALPN:
            protos = _alpn(body)
            if isinstance(protos, NotTls):
                return protos
            alpn = protos
        elif kind == _EXT_SUPPORTED_VERSIONS:
            vs = _versions(body)
            if isinstance(vs, NotTls):
                return vs
            versions = vs
    return ClientHello(sni, alpn, versions, legacy_version)
