"""Who is calling and may they: authentication, impersonation and RBAC for the API server.

What lives here: bearer-token authentication (the static admin token, and
the server's signed tokens for ServiceAccounts, nodes and node proxies),
Kubernetes' impersonation headers, the RBAC check of every request against
the Roles and bindings in the watch cache, and the endpoints that hand out
or explain credentials: TokenRequest
(``POST .../serviceaccounts/{name}/token``), SelfSubjectAccessReview, and a
node's credentials (``POST /apis/mesh.meshwork.io/v1/nodes/{name}/credentials``).

What must not: deciding RBAC (``meshwork.core.rbac``) or mapping paths to
verbs (``meshwork.core.apirequest``); logging a token.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from meshwork.control.api.cache import CachedObject, WatchCache
from meshwork.control.api.paths import object_key
from meshwork.control.tokens import Claims, TokenIssuer
from meshwork.core import rbac
from meshwork.core.apirequest import forbidden_message, qualified_resource, request_attributes
from meshwork.core.restart import rfc3339
from meshwork.errors import BadRequest, Forbidden, NotFound, Unauthenticated
from meshwork.httpd import Request, Response
from meshwork.model.kinds import REGISTRY

_RBAC = "rbac.authorization.k8s.io"
_ROLES, _CLUSTER_ROLES = REGISTRY.require(_RBAC, "Role"), REGISTRY.require(_RBAC, "ClusterRole")
_ROLE_BINDINGS = REGISTRY.require(_RBAC, "RoleBinding")
_CLUSTER_ROLE_BINDINGS = REGISTRY.require(_RBAC, "ClusterRoleBinding")
_SERVICE_ACCOUNTS, _PODS = REGISTRY.require("", "ServiceAccount"), REGISTRY.require("", "Pod")
ADMIN_GROUPS = (rbac.SYSTEM_MASTERS, rbac.AUTHENTICATED)
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
PROXY_PREFIX = "system:meshwork:proxy:"
PROXIES_GROUP = "system:meshwork:proxies"
# TokenRequest limits: Kubernetes refuses less than 10 minutes and defaults to one hour.
MIN_TOKEN_SECONDS = 600
DEFAULT_TOKEN_SECONDS = 3600

TOKEN_REQUEST_SUFFIX = "/token"
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
CREDENTIALS_PREFIX = "/apis/mesh.meshwork.io/v1/nodes/"


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


class CachePolicy:
    """``rbac.Policy`` over the watch cache; each object compiled once per version."""

    def __init__(self, cache: WatchCache) -> None:
        self.cache = cache
        self._memo: dict[str, tuple[bytes, Any]] = {}

    def _compiled(self, item: CachedObject, compile_: Callable[[dict[str, Any]], Any]) -> Any:
        hit = self._memo.get(item.record.key)
        if hit is not None and hit[0] is item.record.value:
            return hit[1]
        value = compile_(item.obj)
        self._memo[item.record.key] = (item.record.value, value)
        return value

    def _bindings(self, items: list[CachedObject]) -> Iterator[rbac.Binding]:
        for item in items:
            binding = self._compiled(item, rbac.binding_from_wire)
            if binding is not None:
                yield binding

    def cluster_bindings(self) -> Iterable[rbac.Binding]:
        return self._bindings(self.cache.list(_CLUSTER_ROLE_BINDINGS.resource))

    def bindings(self, namespace: str) -> Iterable[rbac.Binding]:
        return self._bindings(self.cache.list(_ROLE_BINDINGS.resource, namespace))

    def rules(self, kind: rbac.RoleKind, namespace: str, name: str) -> tuple[rbac.Rule, ...] | None:
        info = _ROLES if kind == "Role" else _CLUSTER_ROLES
        item = self.cache.get(object_key(info, namespace, name))
        if item is None:
            return None
        rules: tuple[rbac.Rule, ...] = self._compiled(item, lambda o: rbac.rules_from_wire(o.get("rules")))
        return rules


class Access:
    """Authenticates and authorizes API requests."""

    def __init__(
        self, cache: WatchCache, *, tokens: dict[str, str], issuer: TokenIssuer,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        """``tokens`` maps static bearer tokens to user names; ``admin`` is in ``system:masters``."""
        self.cache = cache
        self.policy = CachePolicy(cache)
        self.issuer = issuer
        self.clock = clock
        self._static = [(t.encode(), user) for t, user in tokens.items()]

    # -- authentication -----------------------------------------------------------------

    def authenticate(self, req: Request) -> rbac.UserInfo:
        """The caller, or Unauthenticated (401) for a missing or wrong token."""
        header = req.headers.get("authorization") or ""
        scheme, _, raw = header.partition(" ")
        token = raw.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Unauthorized: a valid bearer token is required")
        user = self.user_for_token(token)
        if user is None:
            raise Unauthenticated("Unauthorized: the bearer token is not valid (wrong, expired or revoked)")
        return self._impersonated(req, user)

    def user_for_token(self, token: str) -> rbac.UserInfo | None:
        encoded = token.encode()
        for known, name in self._static:
            if hmac.compare_digest(known, encoded):
                return rbac.UserInfo(name, ADMIN_GROUPS if name == "admin" else (rbac.AUTHENTICATED,))
        claims = self.issuer.verify(token, now=int(self.clock()))
        if claims is None:
            return None
        if claims.extra:
            return self._service_account(claims)
        return rbac.UserInfo(claims.subject, (*claims.groups, rbac.AUTHENTICATED))

    def _service_account(self, claims: Claims) -> rbac.UserInfo | None:
        """A ServiceAccount token holds only while its ServiceAccount (and bound Pod) exist with its uids."""
        extra = claims.extra
        namespace = extra.get("namespace")
        sa = extra.get("serviceaccount") or {}
        if not isinstance(namespace, str) or not isinstance(sa, dict):
            return None
        if rbac.split_service_account(claims.subject) != (namespace, sa.get("name")):
            return None
        live = self.cache.get(object_key(_SERVICE_ACCOUNTS, namespace, str(sa.get("name"))))
        if live is None or live.obj["metadata"].get("uid") != sa.get("uid"):
            return None
        pod = extra.get("pod")
        if isinstance(pod, dict):
            bound = self.cache.get(object_key(_PODS, namespace, str(pod.get("name"))))
            if bound is None or bound.obj["metadata"].get("uid") != pod.get("uid"):
                return None
        return rbac.service_account_user(namespace, str(sa.get("name")), str(sa.get("uid") or ""))

    def _impersonated(self, req: Request, user: rbac.UserInfo) -> rbac.UserInfo:
        """``Impersonate-User``/``Impersonate-Group``: act as another user when allowed to ``impersonate``."""
        as_user = req.headers.get("impersonate-user")
        as_groups = req.headers.get_all("impersonate-group")
        if not as_user:
            if as_groups:
                raise BadRequest("Impersonate-Group requires Impersonate-User")
            return user
        sa = rbac.split_service_account(as_user)
        if sa is not None:
            target = rbac.Attributes(verb="impersonate", resource="serviceaccounts", namespace=sa[0], name=sa[1])
        else:
            target = rbac.Attributes(verb="impersonate", resource="users", name=as_user)
        checks = [target] + [rbac.Attributes(verb="impersonate", resource="groups", name=g) for g in as_groups]
        for attrs in checks:
            if not rbac.authorize(user, attrs, self.policy).allowed:
                raise Forbidden(forbidden_message(user.name, attrs), kind=attrs.resource, name=attrs.name)
        if sa is not None and not as_groups:
            return rbac.service_account_user(*sa)
        groups = tuple(as_groups) + ((rbac.AUTHENTICATED,) if as_user != "system:anonymous" else ())
        return rbac.UserInfo(as_user, groups)

    # -- authorization ------------------------------------------------------------------

    def authorize(self, req: Request, user: rbac.UserInfo) -> None:
        """Forbidden (403, kubectl's message) unless RBAC allows the request."""
        attrs = request_attributes(req.method, req.path, req.query)
        if not rbac.authorize(user, attrs, self.policy).allowed:
            raise Forbidden(
                forbidden_message(user.name, attrs),
                kind=attrs.resource if attrs.resource_request else None,
                name=attrs.name or None, group=attrs.api_group or None,
            )  # fmt: skip

    def allowed(self, user: rbac.UserInfo, attrs: rbac.Attributes) -> rbac.Decision:
        return rbac.authorize(user, attrs, self.policy)

    # -- endpoints ----------------------------------------------------------------------

    def serves(self, path: str) -> bool:
        return path == SSAR_PATH or (path.startswith(CREDENTIALS_PREFIX) and path.endswith("/credentials"))

    def handle(self, req: Request, user: rbac.UserInfo) -> Response:
        if req.method != "POST":
            raise BadRequest(f"{req.method} is not allowed on {req.path}: POST")
        if req.path == SSAR_PATH:
            return self._review(req, user)
        return self._node_credentials(req, user)

    def _review(self, req: Request, user: rbac.UserInfo) -> Response:
        """SelfSubjectAccessReview: may the caller do what ``spec`` describes?"""
        body = _body(req)
        spec = _spec(body)
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(ra, dict):
            attrs = rbac.Attributes(
                verb=str(ra.get("verb") or ""), api_group=str(ra.get("group") or ""),
                api_version=str(ra.get("version") or ""), resource=str(ra.get("resource") or ""),
                subresource=str(ra.get("subresource") or ""), namespace=str(ra.get("namespace") or ""),
                name=str(ra.get("name") or ""),
            )  # fmt: skip
        elif isinstance(nra, dict):
            attrs = rbac.Attributes(verb=str(nra.get("verb") or ""), resource_request=False,
                                    path=str(nra.get("path") or ""))  # fmt: skip
        else:
            raise BadRequest("spec.resourceAttributes or spec.nonResourceAttributes is required")
        if not attrs.verb:
            raise BadRequest("the verb to review is required")
        decision = self.allowed(user, attrs)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return _json(201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                           "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})  # fmt: skip

    def _node_credentials(self, req: Request, user: rbac.UserInfo) -> Response:
        """A node's own token and its proxies' token (a node may ask only for itself)."""
        node = req.path[len(CREDENTIALS_PREFIX):].split("/")[0]
        if not node or req.path != f"{CREDENTIALS_PREFIX}{node}/credentials":
            raise NotFound(f"the server could not find the requested resource ({req.path})")
        if NODES_GROUP in user.groups and user.name != NODE_PREFIX + node:
            raise Forbidden(f'nodes.mesh.meshwork.io "{node}" is forbidden: User "{user.name}" '
                            f"may only get the credentials of its own node", kind="nodes", name=node)  # fmt: skip
        return _json(201, {
            "kind": "NodeCredentials", "apiVersion": "mesh.meshwork.io/v1", "nodeName": node,
            "user": NODE_PREFIX + node, "token": self.node_token(node), "proxyToken": self.proxy_token(node),
        })  # fmt: skip

    def node_token(self, node: str) -> str:
        return self.issuer.identity_token(NODE_PREFIX + node, (NODES_GROUP,))

    def proxy_token(self, node: str) -> str:
        return self.issuer.identity_token(PROXY_PREFIX + node, (PROXIES_GROUP,))

    def token_request(self, req: Request, user: rbac.UserInfo, namespace: str, name: str) -> Response:
        """TokenRequest (authentication.k8s.io/v1) for ServiceAccount ``namespace/name``."""
        if req.method != "POST":
            raise BadRequest(f"{req.method} is not allowed on {req.path}: POST a TokenRequest")
        sa = self.cache.get(object_key(_SERVICE_ACCOUNTS, namespace, name))
        if sa is None:
            raise NotFound(f'serviceaccounts "{name}" not found', kind="serviceaccounts", name=name)
        body = _body(req) if req.body else {}
        spec = _spec(body)
        seconds = spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)
        if not isinstance(seconds, int) or seconds < MIN_TOKEN_SECONDS:
            raise BadRequest(f"spec.expirationSeconds: may not specify a duration less than {MIN_TOKEN_SECONDS} seconds")
        audiences = spec.get("audiences") or None
        if audiences is not None and not (isinstance(audiences, list) and all(isinstance(a, str) for a in audiences)):
            raise BadRequest("spec.audiences must be a list of strings")
        bound = self._bound_pod(spec.get("boundObjectRef"), namespace, name, user)
        now = int(self.clock())
        token = self.issuer.service_account_token(
            namespace, name, str(sa.obj["metadata"].get("uid") or ""), now=now, expiration_seconds=seconds,
            audiences=audiences, pod=bound,
        )  # fmt: skip
        return _json(201, {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": rfc3339(now + seconds)},
        })  # fmt: skip

    def _bound_pod(self, ref: Any, namespace: str, sa: str, user: rbac.UserInfo) -> tuple[str, str] | None:
        """(pod name, uid) a token is bound to. A node may only ask for pods bound to it that run as ``sa``."""
        if ref is None:
            if NODES_GROUP in user.groups:
                raise Forbidden(f'serviceaccounts "{sa}" is forbidden: a node may only request tokens '
                                "bound to its own pods", kind="serviceaccounts", name=sa)  # fmt: skip
            return None
        if not isinstance(ref, dict) or ref.get("kind") != "Pod" or not ref.get("name"):
            raise BadRequest("spec.boundObjectRef: only a Pod (kind, name, uid) is supported")
        pod = self.cache.get(object_key(_PODS, namespace, str(ref["name"])))
        if pod is None or (ref.get("uid") and pod.obj["metadata"].get("uid") != ref["uid"]):
            raise NotFound(f'pods "{ref["name"]}" not found', kind="pods", name=str(ref["name"]))
        spec = pod.obj.get("spec") or {}
        if (spec.get("serviceAccountName") or "default") != sa:
            raise BadRequest(f'pod "{ref["name"]}" runs as ServiceAccount "{spec.get("serviceAccountName")}", not "{sa}"')
        if NODES_GROUP in user.groups and user.name != NODE_PREFIX + str(spec.get("nodeName") or ""):
            raise Forbidden(f'serviceaccounts "{sa}" is forbidden: User "{user.name}" may only request tokens '
                            f'of pods bound to its node', kind="serviceaccounts", name=sa)  # fmt: skip
        return str(ref["name"]), str(pod.obj["metadata"].get("uid") or "")


def _spec(body: dict[str, Any]) -> dict[str, Any]:
    spec = body.get("spec")
    return spec if isinstance(spec, dict) else {}


def _body(req: Request) -> dict[str, Any]:
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


__all__ = ["Access", "CachePolicy", "qualified_resource"]
