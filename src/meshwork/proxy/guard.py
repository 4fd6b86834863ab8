"""The proxy's request guard: path normalisation, JWT authentication and authorization.

What lives here: ``compile_guard(snapshot)``, which picks the
RequestAuthentications and AuthorizationPolicies of a snapshot that apply to
this proxy's workload (``core.security.select``) and compiles them once per
snapshot, and ``GuardedDecider``, which wraps the listener's decider and, per
request, in the order of Istio's inbound filter chain:

1. normalises the request path (``core.security.pathnorm``): a spelling that
   cannot be normalised safely is answered 400; the normalised path is what
   routing, authorization *and* the app see (Envoy's ``normalize_path``);
2. authenticates the request's JWTs (``core.security.requestauthn``): an
   invalid token is answered 401 with ``www-authenticate``; the token header
   is removed and output headers set as the result says;
3. authorizes (``core.security.authz``): a denial is answered 403
   ``RBAC: access denied``. Envoy sets no response flag for RBAC denials; its
   ``response_code_details`` names the policy
   (``rbac_access_denied_matched_policy[...]``), which is what the access log
   carries here (never the client: security refusals do not name policies);
4. asks the inner decider with the normalised request.

How paths are normalised is the mesh's choice: the snapshot's ``meshConfig``
(Istio's ``pathNormalization.normalization`` and meshwork's own
``escapedSlashes``, ``backslashes``, ``pathParameters``;
``core.security.meshconfig``), read by ``compile_guard``; a value it does not
know is a ``GuardRejected``, so the proxy NACKs the snapshot and keeps its
last good config.

A workload that no policy selects gets no guard at all: its listener keeps its
bare decider and pays nothing (the path goes to the app as received, as
nothing is matched against it). The sidecar wraps its inbound listener and a
gateway every listener; outbound traffic is never guarded (Istio enforces at
the server side).

What must not live here: the policy semantics themselves (``core.security``)
and the listeners (``proxy.sidecar``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshwork.core.http1 import Request
from meshwork.core.security.attributes import RequestAttributes, fold_headers
from meshwork.core.security.authz import DENIED_BODY, Authorizer, Verdict, compile_policies
from meshwork.core.security.meshconfig import MeshConfigRejected, path_options
from meshwork.core.security.pathnorm import (
    DEFAULT_OPTIONS,
    NormalizeOptions,
    PathRejected,
    normalize_target,
)
from meshwork.core.security.requestauthn import RequestAuthenticator, compile_request_authn
from meshwork.core.security.select import Workload, select_policies
from meshwork.errors import MeshworkError
from meshwork.proxy import plan

__all__ = ["Guard", "GuardRejected", "GuardedDecider", "compile_guard", "workload_of_snapshot"]

_TEXT = (b"content-type", b"text/plain")


class GuardRejected(MeshworkError):
    """A security policy of the snapshot cannot be enforced: the proxy NACKs with this text."""


@dataclass(frozen=True, slots=True, eq=False)
class Guard:
    """The compiled security policies of one workload. ``key`` is what they were compiled from."""

    key: str
    authorizer: Authorizer | None  # None: no AuthorizationPolicy applies
    authn: RequestAuthenticator | None  # None: no RequestAuthentication applies
    options: NormalizeOptions = DEFAULT_OPTIONS
    policies: tuple[str, ...] = ()  # "kind ns/name" of every policy that applies, for logs and why

    @property
    def warnings(self) -> tuple[str, ...]:
        return (self.authorizer.warnings if self.authorizer else ()) + (
            self.authn.warnings if self.authn else ()
        )


def workload_of_snapshot(raw: Mapping[str, Any]) -> Workload:
    """The workload a snapshot is for: its proxy's namespace and labels (a gateway's too)."""
    proxy = raw.get("proxy") or {}
    return Workload(str(proxy.get("namespace") or "default"), dict(proxy.get("labels") or {}))


def compile_guard(
    raw: Mapping[str, Any],
    *,
    previous: Guard | None = None,
    options: NormalizeOptions | None = None,
) -> Guard | None:
    """The guard for the snapshot's workload, or None when no policy selects it.

    ``options`` (path normalisation) default to what the snapshot's
    ``meshConfig`` says. ``previous`` is returned as is when the selected
    policies, keys and options did not change, so that a snapshot about
    something else recompiles nothing. Raises ``GuardRejected`` naming the
    policy (or mesh config field) at fault.
    """
    if options is None:
        try:
            options = path_options(raw.get("meshConfig"))
        except MeshConfigRejected as exc:
            raise GuardRejected(str(exc)) from exc
    workload = workload_of_snapshot(raw)
    authz = select_policies(raw.get("authorizationPolicies") or (), workload)
    authn = select_policies(raw.get("requestAuthentications") or (), workload)
    if not authz and not authn:
        return None
    jwks = dict(raw.get("jwks") or {})
    key = json.dumps(
        [[(p.key, p.spec, dict(p.annotations)) for p in authz], [(p.key, p.spec) for p in authn], jwks],
        sort_keys=True, default=str,
    )  # fmt: skip
    if previous is not None and previous.key == key and previous.options == options:
        return previous
    manifests = [
        {
            "metadata": {
                "name": p.name,
                "namespace": p.namespace,
                "annotations": dict(p.annotations),
            },
            "spec": p.spec,
        }
        for p in authz
    ]
    try:
        authorizer = compile_policies(manifests) if authz else None
    except MeshworkError as exc:
        raise GuardRejected(str(exc)) from exc
    authenticator: RequestAuthenticator | None = None
    if authn:
        try:
            authenticator = compile_request_authn([p.spec for p in authn], jwks)
        except MeshworkError as exc:
            which = ", ".join(p.key for p in authn)
            raise GuardRejected(f"{exc} (one of {which})") from exc
    names = tuple(f"AuthorizationPolicy {p.key}" for p in authz) + tuple(
        f"RequestAuthentication {p.key}" for p in authn
    )
    return Guard(key, authorizer, authenticator, options, names)


def denial_details(verdict: Verdict) -> str:
    """Envoy's ``response_code_details`` for an RBAC denial, as Istio names the policy."""
    if verdict.policy is None:
        return "rbac_access_denied_matched_policy[none]"
    ns, _, name = verdict.policy.partition("/")
    return f"rbac_access_denied_matched_policy[ns[{ns}]-policy[{name}]-rule[{verdict.rule}]]"


def _merge(edits: plan.HeaderEdits | None, remove: tuple[bytes, ...], set_: tuple[tuple[bytes, bytes], ...]
           ) -> plan.HeaderEdits:  # fmt: skip
    if edits is None:
        return plan.HeaderEdits(set=set_, remove=remove)
    return plan.HeaderEdits(set=set_ + edits.set, add=edits.add, remove=remove + edits.remove)


def _split_absolute(target: str) -> tuple[str, str]:
    """``("http://host", "/path?q")`` for an absolute-form target; ``("", target)`` otherwise."""
    if target.startswith("/") or "://" not in target:
        return "", target
    scheme_end = target.index("://") + 3
    rest = target[scheme_end:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    return target[: scheme_end + cut], rest[cut:] or "/"


class GuardedDecider:
    """Runs a ``Guard`` before ``inner`` (see the module docstring).

    ``destination_port`` is the port the request is for: the listener's for a
    gateway; for the inbound side the app port named by ``port_header``
    (``x-meshwork-inbound-port``), else ``destination_port`` (the pod's only port).
    """

    __slots__ = (
        "_port_name",
        "clock",
        "destination_ip",
        "destination_port",
        "guard",
        "inner",
        "port_header",
    )

    def __init__(
        self,
        inner: plan.Decider,
        guard: Guard,
        *,
        destination_port: int | None = None,
        destination_ip: str | None = None,
        port_header: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.destination_port = destination_port
        self.destination_ip = destination_ip
        self.port_header = port_header
        self._port_name = port_header.decode("latin-1").lower() if port_header is not None else None
        self.clock = clock

    def decide(self, request: Request, downstream: plan.Downstream) -> plan.Plan:
        raw_target = request.target.decode("latin-1")
        prefix, origin = _split_absolute(raw_target)
        normal = normalize_target(origin, self.guard.options)
        if isinstance(normal, PathRejected):
            return plan.DirectResponse(status=normal.status, body=b"Bad Request", headers=(_TEXT,),
                                       reason=f"path_normalization_failed: {normal.reason}", private=True)  # fmt: skip
        target = normal.target
        changed = target != origin
        if changed:
            request = dataclasses.replace(request, target=(prefix + target).encode("latin-1"))
        headers = fold_headers(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers
        )
        principal: str | None = None
        claims: Mapping[str, Any] = {}
        remove: tuple[bytes, ...] = ()
        set_: tuple[tuple[bytes, bytes], ...] = ()
        authn = self.guard.authn
        if authn is not None:
            result = authn.authenticate(headers, normal.query, now=self.clock())
            if not result.ok:
                host = headers.get("host", "")
                challenge = f'Bearer realm="http://{host}{normal.path}", error="invalid_token"'
                body = (result.error or "Jwt verification fails").encode()
                return plan.DirectResponse(
                    status=401, body=body, headers=(_TEXT, (b"www-authenticate", challenge.encode("latin-1"))),
                    reason=f"jwt_authn_access_denied{{{result.error}}}", private=True,
                )  # fmt: skip
            principal, claims = result.principal, result.claims
            remove = tuple(h.encode("latin-1") for h in result.remove_headers)
            set_ = tuple(
                (h.lower().encode("latin-1"), v.encode("latin-1")) for h, v in result.set_headers
            )
        authorizer = self.guard.authorizer
        if authorizer is not None:
            verdict = authorizer.check(
                self.attributes(
                    request, downstream, headers, normal.path, principal, claims, prefix
                )
            )
            if not verdict.allowed:
                return plan.DirectResponse(status=403, body=DENIED_BODY.encode(), headers=(_TEXT,),
                                           reason=f"{denial_details(verdict)}: {verdict.reason}",
                                           private=True)  # fmt: skip
        chosen = self.inner.decide(request, downstream)
        if type(chosen) is not plan.Forward:
            return chosen
        # The engine forwards the head as received unless the plan rewrites the target.
        if changed and chosen.rewrite_path is None:
            chosen = dataclasses.replace(chosen, rewrite_path=target.encode("latin-1"))
        if remove or set_:
            chosen = dataclasses.replace(
                chosen, request_headers=_merge(chosen.request_headers, remove, set_)
            )
        return chosen

    def attributes(
        self,
        request: Request,
        downstream: plan.Downstream,
        headers: Mapping[str, str],
        path: str,
        principal: str | None = None,
        claims: Mapping[str, Any] | None = None,
        prefix: str = "",
    ) -> RequestAttributes:
        """What the Authorizer looks at (``path`` already normalised; ``prefix``: an absolute-form
        target's ``scheme://authority``, whose authority is the host)."""
        port = self.destination_port
        if self._port_name is not None:
            wanted = headers.get(self._port_name)
            if wanted is not None:
                wanted = wanted.strip()
                port = int(wanted) if wanted.isdigit() and len(wanted) <= 5 else None
        host = prefix.split("://", 1)[1] if prefix else headers.get("host", "")
        return RequestAttributes(
            method=request.method.decode("latin-1"), host=host, path=path, headers=headers,
            source_ip=downstream.address, source_principal=downstream.principal,
            request_principal=principal, claims=claims or {}, destination_ip=self.destination_ip,
            destination_port=port, sni=downstream.sni,
        )  # fmt: skip
