"""Signed bearer tokens for ServiceAccounts, nodes and node proxies.

A token is a JWT (RFC 7519) signed with HMAC-SHA256 by a key only the server
holds (``<data_dir>/token-signing.key``, mode 0600). Its claims follow
Kubernetes' service account tokens: ``iss``, ``sub`` (the user name),
``aud``, ``iat``/``nbf``/``exp`` and a ``kubernetes.io`` claim naming the
ServiceAccount (and the Pod a mounted token is bound to) with their uids.

Why signed tokens rather than token Secrets: nothing secret is stored in the
API (a reader of Secrets learns no credential), a token can expire, and the
check is a signature plus a lookup in the watch cache. Revocation stays as
Kubernetes has it: a ServiceAccount token is accepted only while its
ServiceAccount (and bound Pod) exists with the uid in the token, so deleting
the ServiceAccount ends its tokens at once (the authenticator's check, not
this module's). Node and proxy tokens carry no expiry and no ``iat``: a node
token is the same string every time the server makes it, which lets the
server present the node's own token to that node's agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshwork.control.auth import write_private

KEY_FILE = "token-signing.key"
ISSUER = "https://kubernetes.default.svc.cluster.local"  # Kubernetes' default --service-account-issuer
KEY_BYTES = 32  # HMAC-SHA256 wants a key of at least the hash's length (RFC 2104 §3)
CLOCK_SKEW_S = 60  # nbf/exp leeway, as Kubernetes' token validator allows
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(data_dir: Path) -> bytes:
    """The signing key in ``data_dir``, generated at first start."""
    path = data_dir / KEY_FILE
    if path.exists():
        key = path.read_bytes().strip()
        if key:
            return _unb64(key.decode())
    key = secrets.token_bytes(KEY_BYTES)
    write_private(path, (_b64(key) + "\n").encode())
    return key


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    groups: tuple[str, ...]
    extra: dict[str, Any]  # the ``kubernetes.io`` claim
    expires: int | None


class TokenIssuer:
    """Signs and checks the server's tokens."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(KEY_BYTES)

    def _sign(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps(_HEADER, separators=(",", ":"), sort_keys=True).encode())
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"

    def service_account_token(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        now: int,
        expiration_seconds: int | None,
        audiences: list[str] | None = None,
        pod: tuple[str, str] | None = None,
    ) -> str:
        """A TokenRequest's token; ``pod`` (name, uid) binds it to a Pod."""
        k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}
        if pod is not None:
            k8s["pod"] = {"name": pod[0], "uid": pod[1]}
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": audiences or [ISSUER], "iat": now, "nbf": now, "kubernetes.io": k8s,
            "jti": secrets.token_hex(8),
        }  # fmt: skip
        if expiration_seconds is not None:
            claims["exp"] = now + expiration_seconds
        return self._sign(claims)

    def identity_token(self, user: str, groups: tuple[str, ...]) -> str:
        """A node's or node proxy's token: the same string for the same identity and key."""
        return self._sign({"iss": ISSUER, "sub": user, "groups": list(groups)})

    def verify(self, token: str, *, now: int) -> Claims | None:
        """The claims of a token this server signed that is valid at ``now``; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            mac = _unb64(parts[2])
        except (ValueError, UnicodeDecodeError):
            return None
        if header != _HEADER:  # one algorithm only: never "none", never another key type
            return None
        want = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER or not isinstance(claims.get("sub"), str):
            return None
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, int) and now > exp + CLOCK_SKEW_S:
            return None
        if isinstance(nbf, int) and now + CLOCK_SKEW_S < nbf:
            return None
        groups = claims.get("groups")
        extra = claims.get("kubernetes.io")
        return Claims(
            claims["sub"],
            tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            extra if isinstance(extra, dict) else {},
            exp if isinstance(exp, int) else None,
        )
