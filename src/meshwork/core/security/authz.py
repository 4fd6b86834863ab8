"""AuthorizationPolicy: compile the policies of one workload, then decide each request.

What lives here: ``compile_policies(policies)`` → ``Authorizer`` and
``Authorizer.check(attrs)`` → ``Verdict``, with Istio's evaluation order
(istio.io "Authorization Policy" reference, "Authorization" concepts):

1. CUSTOM policies would be asked first; meshwork has no ext-authz providers,
   so a CUSTOM policy is refused when compiling, saying so.
2. If any DENY policy matches, the request is denied.
3. If the workload has no ALLOW policy, the request is allowed.
4. If any ALLOW policy matches, it is allowed; otherwise denied. So an ALLOW
   policy without rules (``spec: {}``, "allow-nothing") denies everything,
   and ``rules: [{}]`` allows everything.

AUDIT policies never change the outcome; the verdict lists the ones that
matched. A policy annotated ``istio.io/dry-run: "true"`` is evaluated but not
enforced: the verdict carries what it *would* have decided (``shadow``).

A rule matches when its ``from`` (any of its sources), its ``to`` (any of its
operations) and every ``when`` condition match; a missing part matches all.
On a TCP connection (``attrs.http`` False) HTTP-only fields cannot be
checked: an ALLOW rule that has one never matches; a DENY rule ignores them
and so denies more. Fail closed either way, as Istio does. A TCP connection
is decided once, when it is accepted (``Authorizer.check_connection``, the
same compiled rules over ``connection_attributes``); a denied connection is
closed before any byte reaches the app (Envoy's RBAC network filter).

A denied request is answered ``403`` with the body ``RBAC: access denied``
(Envoy's RBAC filter text, which clients and tests grep for).

What must not live here: choosing which policies apply to a workload
(``select``), JWT verification (``jwt``), path normalisation (``pathnorm``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshwork.core.security.attributes import RequestAttributes
from meshwork.core.security.authz_match import (
    Check,
    condition_check,
    operation_checks,
    source_checks,
)
from meshwork.errors import MeshworkError
from meshwork.model.istio_security import DRY_RUN_ANNOTATION, AuthorizationPolicySpec, Rule

__all__ = [
    "DENIED_BODY",
    "Authorizer",
    "AuthzPolicy",
    "PolicyRejected",
    "Verdict",
    "compile_policies",
    "connection_attributes",
]

DENIED_BODY = "RBAC: access denied"  # Envoy's RBAC filter reply, status 403
Enforced = Literal["ALLOW", "DENY", "AUDIT"]


class PolicyRejected(MeshworkError):
    """A policy meshwork cannot enforce (invalid, or CUSTOM): say which and why."""


@dataclass(frozen=True, slots=True)
class AuthzPolicy:
    """One AuthorizationPolicy as the snapshot carries it: name, namespace, wire ``spec``."""

    name: str
    namespace: str
    spec: Mapping[str, Any]
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any]) -> AuthzPolicy:
        """From a whole object (``metadata`` + ``spec``), reading the dry-run annotation."""
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        dry = str(annotations.get(DRY_RUN_ANNOTATION, "false")).lower() in ("1", "t", "true")
        return cls(
            meta.get("name", ""), meta.get("namespace", "default"), obj.get("spec") or {}, dry
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one request, and why (for logs, access logs and ``meshwork why``)."""

    allowed: bool
    reason: str
    policy: str | None = None  # "namespace/name" of the deciding policy
    rule: int | None = None
    audited: tuple[str, ...] = ()  # "ns/name rule i" of every AUDIT rule that matched
    shadow: str | None = None  # what dry-run policies would have decided, when any exist

    @property
    def status(self) -> int:
        return 200 if self.allowed else 403

    @property
    def body(self) -> str:
        return "" if self.allowed else DENIED_BODY


Conjunction = tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class _Rule:
    sources: tuple[Conjunction, ...] | None  # None: no ``from`` (any source)
    operations: tuple[Conjunction, ...] | None
    when: Conjunction

    def matches(self, attrs: RequestAttributes, action: Enforced) -> bool:
        return (
            _any(self.sources, attrs, action)
            and _any(self.operations, attrs, action)
            and _all(self.when, attrs, action)
        )

    def mismatch(self, attrs: RequestAttributes, action: Enforced) -> str | None:
        """The first part that does not match, in words; None when the rule matches."""
        for part, alternatives in (("from", self.sources), ("to", self.operations)):
            if alternatives is not None and not _any(alternatives, attrs, action):
                failed = [_first_failure(c, attrs, action) for c in alternatives]
                return f"{part}: " + " / ".join(failed)
        if not _all(self.when, attrs, action):
            return _first_failure(self.when, attrs, action)
        return None


def _usable(check: Check, attrs: RequestAttributes) -> bool:
    return check.scope == "any" or (check.scope == "http" and attrs.http)


def _all(checks: Conjunction, attrs: RequestAttributes, action: Enforced) -> bool:
    for check in checks:
        if not _usable(check, attrs):
            if action != "DENY":
                return False  # fail closed: an ALLOW (or AUDIT) rule cannot be proven
            continue  # ... and a DENY rule matches more
        if not check(attrs):
            return False
    return True


def _any(
    alternatives: tuple[Conjunction, ...] | None, attrs: RequestAttributes, action: Enforced
) -> bool:
    return alternatives is None or any(_all(c, attrs, action) for c in alternatives)


def _first_failure(checks: Conjunction, attrs: RequestAttributes, action: Enforced) -> str:
    for check in checks:
        if not _usable(check, attrs):
            if action != "DENY":
                why = "not available on TCP" if check.scope == "http" else "not supported"
                return f"{check.label} ({why})"
            continue
        if not check(attrs):
            return f"{check.label} (got {check.get(attrs)!r})"
    return "matched"


@dataclass(frozen=True, slots=True)
class _Policy:
    key: str
    action: Enforced
    rules: tuple[_Rule, ...]
    dry_run: bool

    def first_match(self, attrs: RequestAttributes) -> int | None:
        for i, rule in enumerate(self.rules):
            if rule.matches(attrs, self.action):
                return i
        return None


@dataclass(frozen=True, slots=True)
class Authorizer:
    """The compiled policies of one workload. ``check`` is pure and cheap: call it per request."""

    policies: tuple[_Policy, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def check(self, attrs: RequestAttributes) -> Verdict:
        enforced = [p for p in self.policies if not p.dry_run]
        verdict = _decide(enforced, attrs)
        if any(p.dry_run for p in self.policies):
            shadow = _decide(list(self.policies), attrs)
            verdict = Verdict(
                verdict.allowed,
                verdict.reason,
                verdict.policy,
                verdict.rule,
                verdict.audited,
                f"dry-run: would be {'allowed' if shadow.allowed else 'denied'}: {shadow.reason}",
            )
        return verdict

    def check_connection(
        self,
        *,
        source_ip: str | None,
        destination_ip: str | None,
        destination_port: int | None,
        source_principal: str | None = None,
        sni: str | None = None,
    ) -> Verdict:
        """The decision on a new TCP connection (see ``connection_attributes``)."""
        return self.check(
            connection_attributes(
                source_ip=source_ip,
                destination_ip=destination_ip,
                destination_port=destination_port,
                source_principal=source_principal,
                sni=sni,
            )
        )

    def explain(self, attrs: RequestAttributes) -> list[str]:
        """Every policy and rule, and why each did or did not match: ``meshwork why``'s lines."""
        verdict = self.check(attrs)
        lines = [f"{'ALLOW' if verdict.allowed else 'DENY (403)'}: {verdict.reason}"]
        if not self.policies:
            lines.append("  no AuthorizationPolicy applies to this workload")
        for policy in self.policies:
            dry = " (dry-run)" if policy.dry_run else ""
            lines.append(f"  {policy.action} {policy.key}{dry}")
            if not policy.rules:
                lines.append("    no rules: matches nothing")
            for i, rule in enumerate(policy.rules):
                why = rule.mismatch(attrs, policy.action)
                lines.append(f"    rule {i}: " + ("matched" if why is None else f"no match: {why}"))
        if verdict.shadow:
            lines.append(f"  {verdict.shadow}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines


def connection_attributes(
    *,
    source_ip: str | None,
    destination_ip: str | None,
    destination_port: int | None,
    source_principal: str | None = None,
    sni: str | None = None,
) -> RequestAttributes:
    """What a TCP connection shows authorization: its peer, its local address and port, the
    verified peer identity and SNI when it is TLS; ``remote.ip`` is the peer (no headers on TCP)."""
    return RequestAttributes(
        source_ip=source_ip,
        source_principal=source_principal,
        destination_ip=destination_ip,
        destination_port=destination_port,
        sni=sni,
        http=False,
    )


def _decide(policies: list[_Policy], attrs: RequestAttributes) -> Verdict:
    audited = tuple(
        f"{p.key} rule {i}"
        for p in policies
        if p.action == "AUDIT" and (i := p.first_match(attrs)) is not None
    )
    for policy in policies:
        if policy.action == "DENY" and (i := policy.first_match(attrs)) is not None:
            return Verdict(
                False, f"denied by DENY policy {policy.key} rule {i}", policy.key, i, audited
            )
    allows = [p for p in policies if p.action == "ALLOW"]
    if not allows:
        return Verdict(True, "no ALLOW policy applies", audited=audited)
    for policy in allows:
        if (i := policy.first_match(attrs)) is not None:
            return Verdict(
                True, f"allowed by ALLOW policy {policy.key} rule {i}", policy.key, i, audited
            )
    names = ", ".join(p.key for p in allows)
    return Verdict(False, f"no ALLOW policy matched ({names})", audited=audited)


def compile_policies(
    policies: Iterable[AuthzPolicy | Mapping[str, Any]], *, ignore_case_paths: bool = False
) -> Authorizer:
    """Validate and compile; raises ``PolicyRejected`` naming the policy and field at fault.

    ``ignore_case_paths`` compares ``paths`` case-insensitively, for apps that serve
    ``/ADMIN`` as ``/admin`` (Istio has no such switch; its paths are case-sensitive).
    """
    compiled: list[_Policy] = []
    warnings: list[str] = []
    for item in policies:
        policy = item if isinstance(item, AuthzPolicy) else AuthzPolicy.from_manifest(item)
        spec = _validate(policy)
        action = spec.action or "ALLOW"
        if action == "CUSTOM":
            provider = spec.provider.name if spec.provider else None
            raise PolicyRejected(
                f"AuthorizationPolicy {policy.key}: action CUSTOM (provider {provider!r}) is not "
                "supported: meshwork has no external authorization providers; use ALLOW or DENY"
            )
        if spec.target_ref is not None or spec.target_refs:
            warnings.append(f"{policy.key}: targetRef policies apply to gateways only")
        rules = tuple(
            _compile_rule(r, policy.namespace, ignore_case_paths) for r in spec.rules or []
        )
        for i, rule in enumerate(rules):
            checks = [c for conj in (rule.sources or ()) + (rule.operations or ()) for c in conj]
            if any(c.scope == "unsupported" for c in (*checks, *rule.when)):
                effect = "never matches" if action != "DENY" else "ignores that condition"
                warnings.append(
                    f"{policy.key} rule {i}: experimental.envoy.filters keys: the rule {effect}"
                )
        compiled.append(_Policy(policy.key, action, rules, policy.dry_run))
    return Authorizer(tuple(compiled), tuple(warnings))


def _validate(policy: AuthzPolicy) -> AuthorizationPolicySpec:
    try:
        return AuthorizationPolicySpec.model_validate(dict(policy.spec))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise PolicyRejected(
            f"AuthorizationPolicy {policy.key} is invalid: {_problems(exc)}"
        ) from exc


def _problems(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())


def _compile_rule(rule: Rule, namespace: str, ignore_case_paths: bool) -> _Rule:
    sources = None
    if rule.from_:
        sources = tuple(
            tuple(source_checks(_fields(f.source), namespace)) for f in rule.from_ if f.source
        )
    operations = None
    if rule.to:
        operations = tuple(
            tuple(operation_checks(_fields(t.operation), ignore_case_paths=ignore_case_paths))
            for t in rule.to
            if t.operation
        )
    when: list[Check] = []
    for cond in rule.when or []:
        when += condition_check(cond.key, cond.values, cond.not_values, namespace)
    return _Rule(sources, operations, tuple(when))


def _fields(model: Any) -> dict[str, list[str]]:
    dumped: dict[str, list[str]] = model.model_dump(by_alias=True, exclude_none=True)
    return dumped
