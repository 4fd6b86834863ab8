"""What an API request asks to do, as the authorizer sees it. Pure.

What lives here: Kubernetes' ``RequestInfoFactory`` over a request's method,
path and query (``/api/v1/...`` and ``/apis/{group}/{version}/...`` are
resource requests: verb get/list/watch/create/update/patch/delete/
deletecollection, namespace, resource, name, subresource; any other path is
a non-resource URL with an HTTP verb), and the kube-apiserver's 403 message.

What must not: knowing which resources exist (an unknown resource is still a
resource request: the authorizer answers first, the router says 404 after).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshwork.core.rbac import Attributes

# /api/v1/namespaces/{name}/{status|finalize} are the Namespace's own subresources.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _first(query: Mapping[str, Sequence[str]], name: str) -> str:
    values = query.get(name)
    return values[0] if values else ""


def _exact_name(field_selector: str) -> str:
    """``metadata.name=x`` in a field selector narrows a list to one name, as upstream treats it."""
    for term in field_selector.split(","):
        key, sep, value = term.partition("=")
        if key.strip() == "metadata.name" and sep and not value.startswith("="):
            name = value.strip()
            if name and "/" not in name and name not in (".", ".."):
                return name
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, Sequence[str]]) -> Attributes:
    """The request's verb and target.

    >>> request_attributes("GET", "/api/v1/namespaces/a/pods", {}).verb
    'list'
    """
    parts = [p for p in path.split("/") if p]
    if (len(parts) >= 3 and parts[0] == "api") or (len(parts) >= 4 and parts[0] == "apis"):
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(verb=_VERBS.get(method, method.lower()), resource_request=False, path=path or "/")
    verb = _VERBS.get(method, method.lower())
    if rest[0] == "watch":  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
        if not rest:
            return Attributes(verb=verb, api_group=group, api_version=version)
    namespace = ""
    if rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
                rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if not name and verb == "get":
        verb = "watch" if _first(query, "watch").lower() in ("1", "true") else "list"
        name = _exact_name(_first(query, "fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, api_group=group, api_version=version, resource=resource,
                      subresource=subresource, namespace=namespace, name=name)  # fmt: skip


def qualified_resource(attrs: Attributes) -> str:
    """``pods`` or ``deployments.apps``: the resource as Kubernetes names it in messages."""
    return f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource


def forbidden_message(username: str, attrs: Attributes, reason: str = "") -> str:
    """The kube-apiserver's 403 message (responsewriters.forbiddenMessage in a Forbidden status)."""
    if not attrs.resource_request:
        text = f'User "{username}" cannot {attrs.verb} path "{attrs.path}"'
        message = f"forbidden: {text}"
    else:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        if attrs.namespace:
            scope = f'in the namespace "{attrs.namespace}"'
        else:
            scope = "at the cluster scope"
        text = f'User "{username}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" {scope}'
        target = qualified_resource(attrs)
        message = f'{target} "{attrs.name}" is forbidden: {text}' if attrs.name else f"{target} is forbidden: {text}"
    return f"{message}: {reason}" if reason else message
