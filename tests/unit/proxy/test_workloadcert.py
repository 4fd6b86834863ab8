"""The proxy's certificate keeper: its own key, the CA's signature, renewal at half-life."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from meshwork.control.ca import CertificateAuthority
from meshwork.core.security.identity import SpiffeId
from meshwork.proxy.workloadcert import (
    CertificateKeeper,
    WorkloadCert,
    cert_from_answer,
    make_csr,
    renew_in,
)

IDENTITY = SpiffeId("cluster.local", "default", "reviews")


@given(
    start=st.floats(0, 2e9), life=st.floats(60, 1e7), elapsed=st.floats(0, 1.0), seed=st.integers(0, 2**32)
)
def test_renewal_is_near_half_life_and_never_negative(start: float, life: float, elapsed: float, seed: int) -> None:
    now = start + elapsed * life
    wait = renew_in(start, start + life, now, random.Random(seed))
    assert wait >= 0
    assert start + 0.45 * life - 1e-6 <= max(now, now + wait) <= max(now, start + 0.55 * life + 1e-6)


def _authority(tmp_path: Path, ttl: dt.timedelta = dt.timedelta(minutes=2)) -> CertificateAuthority:
    return CertificateAuthority.open(tmp_path, dt.datetime.now(dt.UTC), workload_ttl=ttl)


def _answer(ca: CertificateAuthority, csr: bytes) -> dict[str, Any]:
    signed = ca.sign(csr.decode(), IDENTITY, "sidecar~127.1.0.2~reviews-1.default~default.svc.cluster.local",
                     dt.datetime.now(dt.UTC))
    return {"certificateChain": signed.chain_pem, "trustBundle": signed.trust_bundle, "identity": signed.identity.uri}


def test_the_signed_certificate_carries_our_key_and_identity(tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    key, csr = make_csr()
    cert = cert_from_answer(key, _answer(ca, csr))
    leaf = x509.load_pem_x509_certificate(cert.chain_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [IDENTITY.uri]
    assert cert.identity == IDENTITY.uri
    assert 100 <= cert.not_after - cert.not_before <= 200  # two minutes and a small backdate


def test_an_answer_for_another_key_is_refused(tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    key, _ = make_csr()
    _, other_csr = make_csr()
    with pytest.raises(ValueError, match="not for the key"):
        cert_from_answer(key, _answer(ca, other_csr))
    with pytest.raises(ValueError, match="lacks"):
        cert_from_answer(key, {"certificateChain": ""})


def test_keeper_renews_on_demand_and_retries_after_failures(tmp_path: Path) -> None:
    ca = _authority(tmp_path)
    failures = [RuntimeError("control plane away")]
    seen: list[WorkloadCert] = []

    async def sign(csr: bytes) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return _answer(ca, csr)

    async def main() -> None:
        keeper = CertificateKeeper(sign, seen.append, clock=time.time)
        stop = asyncio.Event()
        task = asyncio.create_task(keeper.run(stop))
        try:
            await asyncio.wait_for(keeper.ready.wait(), 10)  # the first try failed; the retry got one
            assert keeper.renewals == 1 and len(seen) == 1
            keeper.renew_now()  # the CA's chain changed: ask again at once, not at half-life
            for _ in range(200):
                if keeper.renewals == 2:
                    break
                await asyncio.sleep(0.02)
            assert keeper.renewals == 2
            assert seen[0].serial != seen[1].serial and seen[0].key_pem != seen[1].key_pem
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
