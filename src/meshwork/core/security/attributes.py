"""What an authorization decision looks at: the attributes of one request (or TCP connection).

What lives here: ``RequestAttributes``, a frozen value the proxy fills from
the request head, the connection (peer address, verified peer principal,
SNI) and the JWT verdict, and the helpers that derive Istio's attributes from
it (``source.namespace`` from the principal, ``request.auth.audiences`` from
the ``aud`` claim). Header names are folded to lower case and repeated headers
joined with ``,``, as Istio's authorization normalisation says.

What must not: matching (``authz_match``) or anything that reads a socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestAttributes", "fold_headers", "namespace_of"]


def fold_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; a header sent several times becomes one value joined with ``,``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def namespace_of(principal: str | None) -> str | None:
    """The namespace in ``<td>/ns/<ns>/sa/<sa>`` (Istio matches ``.*/ns/<ns>/.*``), or None."""
    if not principal:
        return None
    parts = principal.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "ns" and parts[i + 1]:
            return parts[i + 1]
    return None


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """One request as authorization sees it; ``path`` is already normalised (``pathnorm``).

    ``source_principal`` is the verified peer identity without ``spiffe://`` (None on
    plaintext); ``request_principal`` is ``<iss>/<sub>`` of a verified JWT (None without
    one); ``remote_ip`` is the original client (X-Forwarded-For / PROXY), defaulting to
    ``source_ip``. ``http`` is False for a TCP connection, where HTTP-only fields cannot
    be checked.
    """

    method: str = ""
    host: str = ""
    path: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    source_ip: str | None = None
    remote_ip: str | None = None
    source_principal: str | None = None
    request_principal: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    destination_ip: str | None = None
    destination_port: int | None = None
    sni: str | None = None
    http: bool = True

    @classmethod
    def build(
        cls,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        **fields: Any,
    ) -> RequestAttributes:
        """Like the constructor, folding ``headers`` (any case, repeats allowed) first."""
        return cls(headers=fold_headers(headers), **fields)

    @property
    def source_namespace(self) -> str | None:
        return namespace_of(self.source_principal)

    @property
    def client_ip(self) -> str | None:
        """``remote.ip``: the original client when known, else the peer."""
        return self.remote_ip if self.remote_ip is not None else self.source_ip

    @property
    def match_path(self) -> str:
        """The path policies compare: the query never takes part (Istio strips it)."""
        return self.path.partition("?")[0]

    @property
    def audiences(self) -> tuple[str, ...]:
        aud = self.claims.get("aud") if self.request_principal else None
        if isinstance(aud, str):
            return (aud,)
        if isinstance(aud, list):
            return tuple(a for a in aud if isinstance(a, str))
        return ()

    @property
    def presenter(self) -> str | None:
        azp = self.claims.get("azp") if self.request_principal else None
        return azp if isinstance(azp, str) else None
