"""Envoy's response flags, the bodies of the local replies that carry them, and their reasons.

What lives here: the response flags meshwork's proxy puts in access logs and
metrics (``response_flags``), each with Envoy's meaning; the plain-text bodies
Envoy (and so Istio) sends when the proxy answers on the upstream's behalf, so
that ``curl`` shows users what they are used to; and ``local_reply``, which
turns a flag and a detail into status, body and the one-line human reason the
proxy sends in ``x-meshwork-reason``.

Kept from Envoy: the flag letters and meanings, the 503 bodies
(``no healthy upstream``, ``upstream connect error or disconnect/reset before
headers. reset reason: ...``), ``upstream request timeout`` with 504, the 404
with an empty body for ``NR`` and ``fault filter abort`` for ``FI``.
Meshwork's own addition: the ``x-meshwork-reason`` text, so no error is opaque.

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Flag = Literal["UH", "UF", "UO", "NR", "NC", "URX", "UT", "DI", "FI", "DC", "UC", "LR"]

FLAG_MEANINGS: Final[dict[str, str]] = {
    "UH": "no healthy upstream hosts in the upstream cluster",
    "UF": "upstream connection failure",
    "UO": "upstream overflow (circuit breaking)",
    "NR": "no route configured for the request",
    "NC": "upstream cluster not found",
    "URX": "the request was rejected because the retry limit or connect attempts were reached",
    "UT": "upstream request timeout",
    "DI": "the request was delayed by fault injection",
    "FI": "the request was aborted by fault injection",
    "DC": "downstream connection termination",
    "UC": "upstream connection termination",
    "LR": "connection local reset",
}

RESET_BEFORE_HEADERS: Final = (
    "upstream connect error or disconnect/reset before headers. reset reason: "
)
REASON_HEADER: Final = "x-meshwork-reason"


@dataclass(frozen=True, slots=True)
class LocalReply:
    """An answer the proxy gives itself instead of the upstream's."""

    status: int
    flag: str
    body: bytes
    reason: str  # one line for x-meshwork-reason and access logs

    def headers(self) -> tuple[tuple[str, str], ...]:
        """Headers of the reply: Envoy sends text/plain for non-empty bodies."""
        out: list[tuple[str, str]] = [("content-length", str(len(self.body)))]
        if self.body:
            out.append(("content-type", "text/plain"))
        out.append((REASON_HEADER, self.reason))
        return tuple(out)


def _reset_body(reason: str) -> bytes:
    return (RESET_BEFORE_HEADERS + reason).encode()


def local_reply(flag: str, detail: str = "", *, status: int | None = None) -> LocalReply:
    """The reply Envoy sends for ``flag``; ``detail`` names what failed (host, cluster, limit).

    ``status`` overrides the code where the flag does not fix it (``FI`` uses
    the configured abort status).
    """
    suffix = f": {detail}" if detail else ""
    if flag == "UH":
        return LocalReply(503, flag, b"no healthy upstream", "no healthy upstream" + suffix)
    if flag == "UF":
        return LocalReply(
            503, flag, _reset_body("connection failure"), "upstream connect failed" + suffix
        )
    if flag == "UO":
        return LocalReply(
            503, flag, _reset_body("overflow"), "upstream overflow (circuit breaker)" + suffix
        )
    if flag == "UC":
        return LocalReply(
            503,
            flag,
            _reset_body("connection termination"),
            "upstream closed the connection before answering" + suffix,
        )
    if flag == "LR":
        return LocalReply(
            503, flag, _reset_body("local reset"), "connection reset locally" + suffix
        )
    if flag == "UT":
        return LocalReply(
            504, flag, b"upstream request timeout", "upstream request timeout" + suffix
        )
    if flag == "NR":
        return LocalReply(404, flag, b"", "no route matched" + suffix)
    if flag == "NC":
        return LocalReply(503, flag, b"", "no such upstream cluster" + suffix)
    if flag == "FI":
        return LocalReply(
            status or 500, flag, b"fault filter abort", "aborted by fault injection" + suffix
        )
    if flag == "URX":
        return LocalReply(
            503, flag, _reset_body("connection failure"), "retries exhausted" + suffix
        )
    if flag == "DC":
        return LocalReply(499, flag, b"", "client closed the connection" + suffix)
    raise ValueError(f"no local reply for response flag {flag!r}")


def join_flags(flags: tuple[str, ...] | list[str]) -> str:
    """Envoy's ``%RESPONSE_FLAGS%``: comma-separated, ``-`` when there are none."""
    return ",".join(flags) if flags else "-"
