"""``meshwork auth can-i`` and ``meshwork create token``: kubectl's access-control commands.

``auth can-i VERB RESOURCE[/NAME]`` (or a non-resource URL starting with
``/``) asks the server a SelfSubjectAccessReview, as the caller or, with
``--as``, as another user (Kubernetes' impersonation headers), and prints
``yes`` (exit 0) or ``no`` (exit 1). ``create token SERVICEACCOUNT`` asks for
a ServiceAccount token (TokenRequest) and prints it.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
from typing import Any
from urllib.parse import quote, urlsplit

import click

from meshwork.cli.context import reports_errors, session
from meshwork.client import Client, ServerUnreachable, error_from_status

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def _post(client: Client, path: str, body: Any, headers: list[tuple[str, str]]) -> Any:
    """One POST with extra headers (impersonation, repeatable); the decoded answer or the API error."""
    parts = urlsplit(client.server)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=client.timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=client.timeout)
    payload = json.dumps(body).encode()
    pairs = [("Content-Type", "application/json"), ("Accept", "application/json"),
             ("Content-Length", str(len(payload))), *headers]  # fmt: skip
    if client.token:
        pairs.append(("Authorization", f"Bearer {client.token}"))
    try:
        conn.putrequest("POST", parts.path.rstrip("/") + path)
        for name, value in pairs:
            conn.putheader(name, value)
        conn.endheaders(payload)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServerUnreachable(client.server, exc) from exc
    finally:
        conn.close()
    if resp.status >= 400:
        raise error_from_status(resp.status, data)
    return json.loads(data) if data else None


def _resource_attributes(verb: str, target: str, namespace: str, subresource: str | None) -> dict[str, Any]:
    from meshwork.cli.resolve import UnknownKind, load_kinds, resolve_kind

    load_kinds()
    kind, _, name = target.partition("/")
    attrs: dict[str, Any] = {"verb": verb, "namespace": namespace}
    try:
        info = resolve_kind(kind)
        attrs.update(group=info.group, version=info.preferred_version, resource=info.plural)
        if not info.namespaced:
            attrs["namespace"] = ""
    except UnknownKind:
        # kubectl warns and asks anyway: RBAC rules may name resources this client does not know.
        resource, _, group = kind.partition(".")
        click.echo(f"Warning: the server doesn't have a resource type '{kind}'", err=True)
        attrs.update(group=group, resource=resource)
    if name:
        attrs["name"] = name
    if subresource:
        attrs["subresource"] = subresource
    return attrs


@click.group("auth")
def auth_group() -> None:
    """Inspect authorization."""


@auth_group.command("can-i")
@click.argument("verb")
@click.argument("target", metavar="RESOURCE[/NAME] | NONRESOURCEURL")
@click.option("-n", "--namespace", default=None, help="The namespace to ask about (default: the context's).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Ask about every namespace (the cluster scope).")
@click.option("--subresource", default=None, help="A subresource, such as log or status.")
@click.option("--as", "as_user", default=None, metavar="USER",
              help="Ask as this user or system:serviceaccount:NS:NAME (needs impersonate).")  # fmt: skip
@click.option("--as-group", "as_groups", multiple=True, metavar="GROUP", help="Groups to ask as (with --as).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit code answers.")
@reports_errors
def can_i_cmd(
    verb: str, target: str, namespace: str | None, all_namespaces: bool, subresource: str | None,
    as_user: str | None, as_groups: tuple[str, ...], quiet: bool,
) -> None:  # fmt: skip
    """May I VERB RESOURCE? Prints yes (exit 0) or no (exit 1), as kubectl auth can-i."""
    sess = session()
    client = sess.client()
    spec: dict[str, Any]
    if target.startswith("/"):
        spec = {"nonResourceAttributes": {"path": target, "verb": verb}}
    else:
        ns = "" if all_namespaces else sess.namespace(namespace)
        spec = {"resourceAttributes": _resource_attributes(verb, target, ns, subresource)}
    if as_groups and not as_user:
        raise click.UsageError("--as-group needs --as")
    headers = [("Impersonate-User", as_user)] if as_user else []
    headers += [("Impersonate-Group", g) for g in as_groups]  # one header per group, as kubectl sends them
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}
    answer = _post(client, SSAR_PATH, body, headers)
    allowed = bool((answer or {}).get("status", {}).get("allowed"))
    if not quiet:
        click.echo("yes" if allowed else "no")
    sys.exit(0 if allowed else 1)


@click.group("create")
def create_group() -> None:
    """Create credentials (``create token``)."""


@create_group.command("token")
@click.argument("service_account", metavar="SERVICEACCOUNT")
@click.option("-n", "--namespace", default=None, help="The ServiceAccount's namespace.")
@click.option("--duration", default=None, metavar="DURATION",
              help="How long the token is valid (e.g. 1h, 30m; at least 10m; default 1h).")  # fmt: skip
@click.option("--audience", "audiences", multiple=True, help="An audience of the token (repeatable).")
@reports_errors
def create_token_cmd(service_account: str, namespace: str | None, duration: str | None,
                     audiences: tuple[str, ...]) -> None:  # fmt: skip
    """Print a token of SERVICEACCOUNT (a TokenRequest, as kubectl create token)."""
    from meshwork.control.server import parse_duration

    sess = session()
    client = sess.client()
    ns = sess.namespace(namespace)
    spec: dict[str, Any] = {}
    if duration is not None:
        try:
            spec["expirationSeconds"] = int(parse_duration(duration))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--duration") from None
    if audiences:
        spec["audiences"] = list(audiences)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{quote(ns)}/serviceaccounts/{quote(service_account)}/token"
    answer = client.request("POST", path, body=body)
    click.echo(answer["status"]["token"])
