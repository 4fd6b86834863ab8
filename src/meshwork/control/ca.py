"""The mesh certificate authority: its chains on disk, signing, and rotation.

What lives here: ``CertificateAuthority``, the CA's state under
``<data dir>/ca/`` (directory mode 0700, every key 0600), created at first
start and reused after. The X.509 building and the rotation decisions are
in ``meshwork.control.pki``; the HTTP endpoints, the published trust bundle
and the periodic checks are in ``meshwork.control.api.certs``.

A *chain* is a root plus the intermediate ("signing CA") that signs
workload certificates. The root is either made here (self-signed, 10 y) or
given by the user (``meshwork server --ca-cert --ca-key``: the key stays
where the user keeps it; only its path is recorded). Each chain is in one
state:

* ``active``: signs every new workload certificate; its root is in the bundle;
* ``pending``: a replacement root in the trust bundle, not signing yet, so
  that every proxy trusts it before any peer presents a certificate from it;
* ``retiring``: replaced; its root stays in the bundle until ``retireAt``
  (every certificate it signed has expired, or the overlap the user chose).

``generation`` counts changes of the signing chain (a promotion, a new
intermediate); proxies request a new certificate when it moves.

Layout::

    ca/state.json                 chains, generation, trust domain
    ca/issued.json                unexpired workload certificates issued (for listing and retirement)
    ca/chain-<n>/root.pem         the chain's root certificate(s): what goes in the bundle
    ca/chain-<n>/root-key.pem     a self-made root's key (absent for a user's root)
    ca/chain-<n>/signing.pem      the intermediate, then any user intermediates up to the root
    ca/chain-<n>/signing-key.pem  the intermediate's key
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from meshwork.control import pki
from meshwork.control.auth import write_private
from meshwork.core.security.identity import DEFAULT_TRUST_DOMAIN, SpiffeId

ChainState = Literal["active", "pending", "retiring"]
CA_DIR = "ca"
STATE_FILE = "state.json"
ISSUED_FILE = "issued.json"


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Chain:
    id: int
    state: ChainState
    roots: list[x509.Certificate]
    signing: list[x509.Certificate]  # the intermediate first
    signing_key: pki.PrivateKey
    external: dict[str, str] | None = None  # {"cert": path, "key": path} of a user's root
    retire_at: dt.datetime | None = None
    overlap: dt.timedelta | None = None  # the overlap asked for at rotation, applied at promotion

    @property
    def intermediate(self) -> x509.Certificate:
        return self.signing[0]

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "external": self.external,
            "retireAt": rfc3339(self.retire_at) if self.retire_at else None,
            "overlapSeconds": self.overlap.total_seconds() if self.overlap is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Issued:
    serial: str
    identity: str
    proxy: str
    chain: int
    not_before: dt.datetime
    not_after: dt.datetime

    def wire(self) -> dict[str, Any]:
        return {"serial": self.serial, "identity": self.identity, "proxy": self.proxy, "chain": self.chain,
                "notBefore": rfc3339(self.not_before), "notAfter": rfc3339(self.not_after)}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Issued:
        return cls(str(d["serial"]), str(d["identity"]), str(d.get("proxy") or ""), int(d["chain"]),
                   parse_rfc3339(d["notBefore"]), parse_rfc3339(d["notAfter"]))


@dataclass(frozen=True, slots=True)
class Signed:
    """One signing's answer: the leaf and what a proxy needs beside it."""

    leaf: x509.Certificate
    chain_pem: str  # leaf, intermediate, any user intermediates
    trust_bundle: str
    identity: SpiffeId
    generation: int


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.tbs_certificate_bytes).hexdigest()


def load_user_root(cert_path: Path, key_path: Path, now: dt.datetime) -> tuple[list[x509.Certificate], pki.PrivateKey]:
    """A user's CA (``--ca-cert``: the CA certificate first, then any chain up to the root;
    ``--ca-key``: its key), checked; ValueError saying what is wrong."""
    try:
        certs, key = pki.load_certs(cert_path.read_bytes()), pki.load_key(key_path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the CA certificate {cert_path} and key {key_path}: {exc}") from None
    if not pki.same_key(certs[0], key):
        raise ValueError(f"{key_path} is not the key of the first certificate in {cert_path}")
    if not pki.is_ca(certs[0]):
        raise ValueError(f"{cert_path}: the certificate is not a CA (basicConstraints cA is not TRUE)")
    if certs[0].not_valid_after_utc <= now:
        raise ValueError(f"{cert_path}: the CA certificate expired on {rfc3339(certs[0].not_valid_after_utc)}")
    return certs, key


class CertificateAuthority:
    """The CA's chains and issued certificates; every change is written to disk before it is used."""

    def __init__(self, directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 workload_ttl: dt.timedelta = pki.WORKLOAD_TTL) -> None:
        self.dir = directory
        self.trust_domain = trust_domain
        self.workload_ttl = max(workload_ttl, pki.MIN_WORKLOAD_TTL)
        self.generation = 0
        self.chains: list[Chain] = []
        self.issued: list[Issued] = []

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path,
        now: dt.datetime,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        workload_ttl: dt.timedelta = pki.WORKLOAD_TTL,
        external: tuple[Path, Path] | None = None,
    ) -> CertificateAuthority:
        """The CA in ``data_dir/ca``: loaded when it exists, created otherwise.

        ``external`` (cert file, key file): the user's root. When it differs
        from the active chain's root, a chain under it is added as pending
        (the caller promotes it once proxies trust it).
        """
        SpiffeId(trust_domain, "default", "default")  # refuse a malformed trust domain early
        directory = data_dir / CA_DIR
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        ca = cls(directory, trust_domain, workload_ttl)
        if (directory / STATE_FILE).exists():
            ca._load()
        if external is not None:
            ca._adopt_external(external, now)
        elif not ca.chains:
            ca._add_chain(now, "active")
            ca.generation = 1
            ca._save()
        return ca

    def _load(self) -> None:
        state = json.loads((self.dir / STATE_FILE).read_text())
        self.generation = int(state["generation"])
        for c in state["chains"]:
            d = self.dir / f"chain-{c['id']}"
            overlap = c.get("overlapSeconds")
            self.chains.append(Chain(
                int(c["id"]), c["state"], pki.load_certs((d / "root.pem").read_bytes()),
                pki.load_certs((d / "signing.pem").read_bytes()), pki.load_key((d / "signing-key.pem").read_bytes()),
                c.get("external"), parse_rfc3339(c["retireAt"]) if c.get("retireAt") else None,
                dt.timedelta(seconds=overlap) if overlap is not None else None,
            ))
        issued = self.dir / ISSUED_FILE
        if issued.exists():
            self.issued = [Issued.from_wire(d) for d in json.loads(issued.read_text())]

    def _save(self) -> None:
        state = {"trustDomain": self.trust_domain, "generation": self.generation,
                 "chains": [c.wire() for c in self.chains]}
        write_private(self.dir / STATE_FILE, json.dumps(state, indent=2).encode())

    def _save_issued(self) -> None:
        write_private(self.dir / ISSUED_FILE, json.dumps([i.wire() for i in self.issued]).encode())

    def _write_chain(self, chain: Chain, root_key: pki.PrivateKey | None = None) -> None:
        d = self.dir / f"chain-{chain.id}"
        d.mkdir(mode=0o700, exist_ok=True)
        if root_key is not None:
            write_private(d / "root-key.pem", pki.key_pem(root_key))
        write_private(d / "signing-key.pem", pki.key_pem(chain.signing_key))
        write_private(d / "signing.pem", pki.certs_pem(chain.signing).encode())
        write_private(d / "root.pem", pki.certs_pem(chain.roots).encode())

    def _next_id(self) -> int:
        return max((c.id for c in self.chains), default=0) + 1

    def _add_chain(self, now: dt.datetime, state: ChainState, overlap: dt.timedelta | None = None) -> Chain:
        """A new self-signed root and its intermediate, written to disk."""
        root_key = pki.new_key()
        root = pki.build_root(root_key, self.trust_domain, now)
        key = pki.new_key()
        inter = pki.build_intermediate(key, root, root_key, self.trust_domain, now)
        chain = Chain(self._next_id(), state, [root], [inter], key, overlap=overlap)
        self._write_chain(chain, root_key)
        self.chains.append(chain)
        return chain

    def _adopt_external(self, paths: tuple[Path, Path], now: dt.datetime) -> None:
        cert_path, key_path = (p.expanduser().resolve() for p in paths)
        certs, key = load_user_root(cert_path, key_path, now)
        known = {_fingerprint(r) for c in self.chains if c.state != "retiring" for r in c.roots[:1]}
        roots = [c for c in certs if pki.self_signed(c)] or certs[-1:]
        if _fingerprint(roots[0]) in known:
            return  # the same root as before: reuse its chain
        ext = {"cert": str(cert_path), "key": str(key_path)}
        inter_key = pki.new_key()
        inter = pki.build_intermediate(inter_key, certs[0], key, self.trust_domain, now)
        upper = [c for c in certs if c not in roots]
        first = not self.chains
        chain = Chain(self._next_id(), "active" if first else "pending", roots, [inter, *upper], inter_key, ext)
        for old in self.chains:
            if old.state == "pending":  # an unpromoted replacement is superseded
                old.state, old.retire_at = "retiring", now
        self._write_chain(chain)
        self.chains.append(chain)
        if first:
            self.generation = 1
        self._save()

    # -- reading -----------------------------------------------------------------------------

    @property
    def active(self) -> Chain:
        return next(c for c in self.chains if c.state == "active")

    @property
    def pending(self) -> Chain | None:
        return next((c for c in self.chains if c.state == "pending"), None)

    def trust_bundle(self) -> str:
        """Every root a proxy must trust now (active, pending and retiring chains), oldest first."""
        seen: set[str] = set()
        out = []
        for chain in sorted(self.chains, key=lambda c: c.id):
            for root in chain.roots:
                fp = _fingerprint(root)
                if fp not in seen:
                    seen.add(fp)
                    out.append(root)
        return pki.certs_pem(out)

    def ca_certificates(self) -> list[tuple[str, x509.Certificate, Chain]]:
        """(``root`` | ``intermediate``, certificate, chain) for every CA certificate in use."""
        out: list[tuple[str, x509.Certificate, Chain]] = []
        for chain in sorted(self.chains, key=lambda c: c.id):
            out.extend(("root", r, chain) for r in chain.roots)
            out.extend(("intermediate", c, chain) for c in chain.signing)
        return out

    # -- signing -----------------------------------------------------------------------------

    def sign(self, csr_pem: str, identity: SpiffeId, proxy: str, now: dt.datetime) -> Signed:
        """Sign ``csr_pem`` (pki.CsrError when it is bad) for ``identity``, the caller's choice of name."""
        csr = pki.parse_csr(csr_pem)
        chain = self.active
        leaf = pki.build_workload(csr.public_key(), identity, chain.intermediate, chain.signing_key, now,  # type: ignore[arg-type]
                                  self.workload_ttl)
        self.issued = [i for i in self.issued if i.not_after > now]
        self.issued.append(Issued(pki.serial_hex(leaf), identity.uri, proxy, chain.id,
                                  leaf.not_valid_before_utc, leaf.not_valid_after_utc))
        self._save_issued()
        return Signed(leaf, pki.certs_pem([leaf, *chain.signing]), self.trust_bundle(), identity, self.generation)

    # -- rotation ----------------------------------------------------------------------------

    def begin_root_rotation(self, now: dt.datetime, overlap: dt.timedelta | None = None) -> Chain:
        """Add a new self-signed chain as pending (its root joins the bundle; it signs nothing yet)."""
        pending = self.pending
        if pending is not None:
            pending.overlap = overlap
            self._save()
            return pending
        chain = self._add_chain(now, "pending", overlap)
        self._save()
        return chain

    def promote(self, now: dt.datetime) -> bool:
        """The pending chain takes over signing; the active one starts retiring. False: nothing pending."""
        pending = self.pending
        if pending is None:
            return False
        old = self.active
        expiries = [i.not_after for i in self.issued if i.chain == old.id]
        old.state, old.retire_at = "retiring", pki.retire_at(now, expiries, pending.overlap)
        pending.state, pending.overlap = "active", None
        self.generation += 1
        self._save()
        return True

    def maintain(self, now: dt.datetime) -> list[str]:
        """Retire chains whose time came; replace an intermediate or root that is due. What changed."""
        changes = []
        for chain in list(self.chains):
            if chain.state == "retiring" and chain.retire_at is not None and chain.retire_at <= now:
                self.chains.remove(chain)
                changes.append(f"root of chain {chain.id} left the trust bundle")
        active = self.active
        inter = active.intermediate
        # What signs the intermediate: the user's CA certificate or our root. A new intermediate
        # never outlives it, so renewing is only worth it while that reaches further than today's.
        issuer = active.signing[1] if len(active.signing) > 1 else active.roots[0]
        if self.pending is not None:
            pass  # a rotation is under way: the service promotes it
        elif active.external is None and pki.due_for_rotation(active.roots[0], now):
            self.begin_root_rotation(now)
            changes.append("root due for rotation: a new root joined the trust bundle")
        elif pki.due_for_rotation(inter, now) and issuer.not_valid_after_utc > inter.not_valid_after_utc:
            self._new_intermediate(active, now)
            changes.append(f"new intermediate for chain {active.id}")
        if changes:
            self._save()
        return changes

    def next_retirement(self) -> dt.datetime | None:
        times = [c.retire_at for c in self.chains if c.state == "retiring" and c.retire_at is not None]
        return min(times) if times else None

    def _new_intermediate(self, chain: Chain, now: dt.datetime) -> None:
        if chain.external is not None:
            certs = pki.load_certs(Path(chain.external["cert"]).read_bytes())
            issuer, issuer_key = certs[0], pki.load_key(Path(chain.external["key"]).read_bytes())
            upper = chain.signing[1:]
        else:
            issuer = chain.roots[0]
            issuer_key = pki.load_key((self.dir / f"chain-{chain.id}" / "root-key.pem").read_bytes())
            upper = []
        key = pki.new_key()
        chain.signing = [pki.build_intermediate(key, issuer, issuer_key, self.trust_domain, now), *upper]
        chain.signing_key = key
        self._write_chain(chain)
        self.generation += 1

    # -- listing -----------------------------------------------------------------------------

    def listing(self, now: dt.datetime) -> list[dict[str, Any]]:
        """Every CA certificate and every unexpired workload certificate, as the API lists them."""
        items = []
        for what, cert, chain in self.ca_certificates():
            items.append({
                "type": what, "name": pki.common_name(cert), "subject": cert.subject.rfc4514_string(),
                "serial": pki.serial_hex(cert),
                "chain": chain.id, "state": chain.state.capitalize(), "identity": None, "proxy": None,
                "notBefore": rfc3339(cert.not_valid_before_utc), "notAfter": rfc3339(cert.not_valid_after_utc),
                "retireAt": rfc3339(chain.retire_at) if chain.retire_at and what == "root" else None,
                "external": chain.external is not None,
            })
        states = {c.id: c.state for c in self.chains}
        for leaf in sorted(self.issued, key=lambda i: (i.identity, i.not_after)):
            if leaf.not_after <= now:
                continue
            items.append({
                "type": "workload", "name": leaf.identity, "subject": "", "serial": leaf.serial, "chain": leaf.chain,
                "state": "Valid" if states.get(leaf.chain) in ("active", "retiring") else "Untrusted",
                "identity": leaf.identity, "proxy": leaf.proxy,
                "notBefore": rfc3339(leaf.not_before), "notAfter": rfc3339(leaf.not_after),
                "retireAt": None, "external": False,
            })
        return items
