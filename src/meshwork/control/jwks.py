"""JWKS documents for RequestAuthentication's ``jwksUri``, fetched by the control plane.

Istio's control plane resolves each ``jwksUri`` itself and hands the proxies
the keys inline, refreshing them every 20 minutes
(``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``); proxies never reach out to an
identity provider on a request's path. ``JwksCache`` does the same: it fetches
every URI the RequestAuthentications name, keeps the last good document of
each, and calls ``on_change`` when one changes so the snapshots are rebuilt.
A URI that cannot be fetched keeps its last good keys; one never fetched has
none, and tokens for its issuer fail verification (401), as in Istio.

What must not live here: verification (``meshwork.core.security.jwt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["REFRESH_S", "JwksCache"]

log = logging.getLogger(__name__)

REFRESH_S = 20 * 60.0  # Istio's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
RETRY_S = 5.0  # a URI that failed is tried again this soon (Istio retries failed fetches quickly too)
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1024 * 1024


@dataclass
class _Entry:
    text: str | None = None
    fetched_at: float = 0.0
    error: str | None = None
    next_at: float = 0.0


def fetch(uri: str) -> str:
    """One JWKS document (blocking; run it in a thread). ValueError when it is not a JWKS."""
    if not uri.startswith(("http://", "https://")):
        raise ValueError(f"jwksUri {uri!r}: only http:// and https:// are supported")
    req = urllib.request.Request(uri, headers={"Accept": "application/json", "User-Agent": "meshwork"})
    context = ssl.create_default_context() if uri.startswith("https://") else None
    with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S, context=context) as resp:
        data = resp.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"jwksUri {uri!r}: the document is larger than {MAX_JWKS_BYTES} bytes")
    text: str = data.decode("utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"jwksUri {uri!r}: not a JWKS (no \"keys\" list)")
    return text


class JwksCache:
    """The JWKS of every wanted URI, refreshed in the background."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        refresh_s: float = REFRESH_S,
        fetcher: Callable[[str], str] = fetch,
    ) -> None:
        self._on_change = on_change
        self._refresh_s = refresh_s
        self._fetch = fetcher
        self._entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def documents(self) -> dict[str, str]:
        """URI -> the last good JWKS text (URIs never fetched are absent)."""
        return {uri: e.text for uri, e in self._entries.items() if e.text is not None}

    def errors(self) -> dict[str, str]:
        return {uri: e.error for uri, e in self._entries.items() if e.error}

    def want(self, uris: Iterable[str]) -> None:
        """The URIs the RequestAuthentications name now; new ones are fetched at once."""
        wanted = set(uris)
        for uri in list(self._entries):
            if uri not in wanted:
                del self._entries[uri]
        fresh = [u for u in wanted if u not in self._entries]
        for uri in fresh:
            self._entries[uri] = _Entry()
        if fresh:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = [u for u, e in self._entries.items() if e.next_at <= now]
            changed = False
            for uri in due:
                changed |= await self._refresh(uri)
            if changed:
                self._on_change()
            now = time.monotonic()
            wait = min((e.next_at for e in self._entries.values()), default=now + self._refresh_s) - now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.05))

    async def _refresh(self, uri: str) -> bool:
        entry = self._entries.get(uri)
        if entry is None:
            return False
        try:
            text = await asyncio.to_thread(self._fetch, uri)
        except Exception as exc:  # a bad or unreachable URI is reported, never fatal
            message = f"{type(exc).__name__}: {exc}"
            if entry.error != message:
                log.warning("jwksUri %s: %s", uri, message)
            entry.error, entry.next_at = message, time.monotonic() + RETRY_S
            return False
        entry.next_at = time.monotonic() + self._refresh_s
        entry.error, entry.fetched_at = None, time.time()
        if text == entry.text:
            return False
        entry.text = text
        return True
