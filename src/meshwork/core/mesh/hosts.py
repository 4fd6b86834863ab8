"""Host names as Istio reads them: short names, FQDNs, wildcards, ``exportTo``, durations.

What lives here: the small pure helpers every other module of the mesh core
uses to compare host names and read Istio's scalar fields.

Kept from Istio:

* ``resolve_host`` is Istio's ``ResolveShortnameToFQDN``: a name without a
  dot is relative to the namespace of the resource that names it
  (``reviews`` in a VirtualService of ``default`` is
  ``reviews.default.svc.cluster.local``); a name with a dot, ``*`` or an IP
  address is taken as written.
* ``host_matches`` / ``hosts_intersect`` follow Istio's ``host.Name.Matches``:
  ``*.example.com`` covers ``a.example.com`` and ``a.b.example.com`` but not
  ``example.com``; ``*`` covers everything.
* ``visible`` applies ``exportTo`` (absent or ``*``: everywhere; ``.``: the
  resource's own namespace; otherwise the named namespaces).
* ``request_aliases`` are the names a client may use for a Kubernetes Service,
  as the domains Istio puts on a sidecar's virtual host: the short name only
  from the Service's own namespace, ``name.ns`` and ``name.ns.svc`` from
  anywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from meshwork.model.istio import duration_nanos


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def resolve_host(host: str, namespace: str, domain: str) -> str:
    """Istio ``ResolveShortnameToFQDN`` (lower-cased: DNS names compare without case)."""
    host = host.lower()
    if host == "*" or "." in host or is_ip(host) or not host:
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` (possibly itself a wildcard) is covered by ``pattern``."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix) and len(host) > len(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """Whether two host patterns have a name in common."""
    return host_matches(a, b) or host_matches(b, a)


def narrower(a: str, b: str) -> str:
    """The more specific of two intersecting host patterns."""
    return b if host_matches(a, b) else a


def specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact names first, then longer wildcards (Istio's ``MostSpecificHostMatch``)."""
    return (1 if pattern.startswith("*") else 0, -len(pattern))


def most_specific(host: str, patterns: Sequence[str]) -> str | None:
    """The pattern that covers ``host`` most specifically, or None."""
    covering = [p for p in patterns if host_matches(p, host)]
    return min(covering, key=specificity) if covering else None


def visible(export_to: Sequence[str] | None, owner_namespace: str, viewer_namespace: str) -> bool:
    """Istio ``exportTo``: is a resource of ``owner_namespace`` visible from ``viewer_namespace``."""
    if not export_to:
        return True
    for entry in export_to:
        if entry == "*":
            return True
        if entry == "." and owner_namespace == viewer_namespace:
            return True
        if entry == viewer_namespace:
            return True
    return False


def request_aliases(name: str, namespace: str, domain: str, viewer_namespace: str) -> list[str]:
    """Names a client in ``viewer_namespace`` may use for Service ``name.namespace``."""
    fqdn = f"{name}.{namespace}.svc.{domain}"
    out = [fqdn, f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    if namespace == viewer_namespace:
        out.append(name)
    return out


def strip_port(authority: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) into a lower-case host and the port."""
    authority = authority.lower()
    if ":" not in authority and not authority.endswith((".", " ")):
        return authority, None
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end] if end > 0 else authority, authority[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text.isdigit() else None
    return host.rstrip("."), port


def seconds(duration: str | None) -> float | None:
    """A Go/protobuf duration string in seconds (None stays None)."""
    if duration is None:
        return None
    nanos = duration_nanos(duration)
    return None if nanos is None else nanos / 1e9
