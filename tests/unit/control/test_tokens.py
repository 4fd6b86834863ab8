"""The server's signed tokens (meshwork.control.tokens): what verifies and what never does."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshwork.control.tokens import CLOCK_SKEW_S, KEY_FILE, TokenIssuer, load_or_create_key

NOW = 1_800_000_000
KEY = b"k" * 32


def _part(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return loaded


def test_service_account_token_round_trip() -> None:
    issuer = TokenIssuer(KEY)
    token = issuer.service_account_token("team", "reader", "uid-1", now=NOW, expiration_seconds=600,
                                         pod=("app", "uid-p"))  # fmt: skip
    claims = issuer.verify(token, now=NOW + 10)
    assert claims is not None
    assert claims.subject == "system:serviceaccount:team:reader"
    assert claims.extra == {"namespace": "team", "serviceaccount": {"name": "reader", "uid": "uid-1"},
                            "pod": {"name": "app", "uid": "uid-p"}}  # fmt: skip
    assert claims.expires == NOW + 600


def test_expiry_and_not_before_with_skew() -> None:
    issuer = TokenIssuer(KEY)
    token = issuer.service_account_token("team", "reader", "u", now=NOW, expiration_seconds=600)
    assert issuer.verify(token, now=NOW + 600 + CLOCK_SKEW_S) is not None
    assert issuer.verify(token, now=NOW + 601 + CLOCK_SKEW_S) is None
    assert issuer.verify(token, now=NOW - CLOCK_SKEW_S - 1) is None


def test_other_keys_algorithms_and_edits_are_refused() -> None:
    issuer = TokenIssuer(KEY)
    token = issuer.service_account_token("team", "reader", "u", now=NOW, expiration_seconds=None)
    head, body, sig = token.split(".")
    assert TokenIssuer(b"x" * 32).verify(token, now=NOW) is None
    assert issuer.verify(f"{_part({'alg': 'none', 'typ': 'JWT'})}.{body}.", now=NOW) is None
    assert issuer.verify(f"{_part({'alg': 'HS512', 'typ': 'JWT'})}.{body}.{sig}", now=NOW) is None
    edited = _claims(token) | {"sub": "system:serviceaccount:kube-system:admin"}
    assert issuer.verify(f"{head}.{_part(edited)}.{sig}", now=NOW) is None
    for junk in ("", "a.b", "a.b.c", "...", token + ".x"):
        assert issuer.verify(junk, now=NOW) is None


def test_identity_tokens_are_stable() -> None:
    issuer = TokenIssuer(KEY)
    first = issuer.identity_token("system:node:n1", ("system:nodes",))
    assert first == TokenIssuer(KEY).identity_token("system:node:n1", ("system:nodes",))
    claims = issuer.verify(first, now=NOW)
    assert claims is not None and claims.subject == "system:node:n1" and claims.groups == ("system:nodes",)
    assert claims.extra == {} and claims.expires is None


@given(st.binary(max_size=200))
def test_random_bytes_never_verify(data: bytes) -> None:
    assert TokenIssuer(KEY).verify(data.decode("latin-1"), now=NOW) is None


def test_key_file_is_private_and_kept(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key and len(key) == 32
