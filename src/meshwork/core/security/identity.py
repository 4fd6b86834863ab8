"""SPIFFE workload identities: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

Istio names a workload by its ServiceAccount; the X.509 certificate a proxy
holds carries that name as its only URI SAN, and an AuthorizationPolicy's
``principals`` are the same string without the ``spiffe://`` scheme
(``cluster.local/ns/default/sa/bookinfo-productpage``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_TRUST_DOMAIN", "SCHEME", "SpiffeId"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
SCHEME = "spiffe://"
# A trust domain is a DNS-like name; namespace and service account names are DNS labels/subdomains.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(f"trust domain {self.trust_domain!r} is not a lower-case DNS name")
        for what, value in (
            ("namespace", self.namespace),
            ("service account", self.service_account),
        ):
            if not _NAME.match(value):
                raise ValueError(f"{what} {value!r} is not a valid Kubernetes name")

    @property
    def uri(self) -> str:
        """The URI SAN: ``spiffe://cluster.local/ns/default/sa/reviews``."""
        return f"{SCHEME}{self.principal}"

    @property
    def principal(self) -> str:
        """Istio's ``source.principal``: the URI without its scheme."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """A workload identity from its URI (or its principal form); ValueError when it is not one."""
        body = text[len(SCHEME) :] if text.startswith(SCHEME) else text
        parts = body.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise ValueError(
                f"{text!r} is not a workload identity (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)"
            )
        return cls(parts[0], parts[2], parts[4])

    def __str__(self) -> str:
        return self.uri
