"""Where a Rollout's traffic goes: Service selectors, DestinationRule subsets, VirtualService weights.

What lives here: the objects a Rollout patches to send ``weight`` percent
of requests to the canary, in the shapes Argo Rollouts writes them:

* ``canaryService`` / ``stableService`` (and blue-green's ``activeService`` /
  ``previewService``) select their ReplicaSet's pods by adding
  ``rollouts-pod-template-hash: <hash>`` to their selector;
* with ``destinationRule``, the canary and stable subsets get that label;
* in the VirtualService, each HTTP route named in ``routes`` (the only HTTP
  route when ``routes`` is empty) has the destination whose host is the
  canary service (or whose subset is the canary subset) weighted ``weight``
  and the stable one ``100 - weight``; other destinations are left alone.

What must not: deciding the weight (``canary``), or I/O. Each function
returns the patched object, or None when it already says so.
"""

from __future__ import annotations

from typing import Any

from meshwork.model.argo_rollouts import (
    HeaderRoutingMatch,
    RouteMatch,
    SetHeaderRoute,
    SetMirrorRoute,
    StringMatch,
)
from meshwork.model.core import Service
from meshwork.model.istio_routing import VirtualService
from meshwork.model.istio_traffic import DestinationRule

HASH_LABEL = "rollouts-pod-template-hash"  # Argo's DefaultRolloutUniqueLabelKey
MANAGED_BY = "argo-rollouts.argoproj.io/managed-by-rollouts"  # annotation Argo puts on patched Services


def _wire(obj: Service | VirtualService | DestinationRule) -> dict[str, Any]:
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True)


def select_hash(service: Service, pod_hash: str, rollout: str) -> Service | None:
    """``service`` selecting only the pods of ReplicaSet ``pod_hash``; None when it already does."""
    wire = _wire(service)
    selector = dict(wire.get("spec", {}).get("selector") or {})
    annotations = dict(wire["metadata"].get("annotations") or {})
    if selector.get(HASH_LABEL) == pod_hash and annotations.get(MANAGED_BY) == rollout:
        return None
    selector[HASH_LABEL] = pod_hash
    annotations[MANAGED_BY] = rollout
    wire["spec"]["selector"] = selector
    wire["metadata"]["annotations"] = annotations
    return Service.model_validate(wire)


def label_subsets(rule: DestinationRule, canary_subset: str, stable_subset: str,
                  canary_hash: str, stable_hash: str) -> DestinationRule | None:  # fmt: skip
    """The rule with the canary and stable subsets selecting their hashes; None when unchanged."""
    wire = _wire(rule)
    changed = False
    for subset in wire["spec"].get("subsets") or []:
        want = {canary_subset: canary_hash, stable_subset: stable_hash}.get(subset.get("name"))
        if want is None:
            continue
        labels = dict(subset.get("labels") or {})
        if labels.get(HASH_LABEL) != want:
            labels[HASH_LABEL] = want
            subset["labels"] = labels
            changed = True
    return DestinationRule.model_validate(wire) if changed else None


def _host_is(host: str, service: str | None) -> bool:
    """Argo's match of a destination host against a service name: short or qualified."""
    return bool(service) and (host == service or host.startswith(f"{service}."))


def set_weights(vs: VirtualService, routes: list[str] | None, weight: int, *,
                canary_service: str | None, stable_service: str | None,
                canary_subset: str | None = None, stable_subset: str | None = None) -> VirtualService | None:  # fmt: skip
    """The VirtualService with canary ``weight`` / stable ``100 - weight``; None when unchanged.

    Raises ValueError naming the route when a named route is missing, as Argo
    reports "HTTP Route 'x' is not found in the defined Virtual Service".
    """
    wire = _wire(vs)
    http = wire["spec"].get("http") or []
    names = list(routes or [])
    if not names:
        if len(http) != 1:
            raise ValueError("spec.http[] must have exactly one route when routes is not given")
        chosen = [http[0]]
    else:
        by_name = {r.get("name"): r for r in http}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"HTTP Route '{missing[0]}' is not found in the defined Virtual Service.")
        chosen = [by_name[n] for n in names]
    changed = False
    for route in chosen:
        for dest in route.get("route") or []:
            target = dest.get("destination") or {}
            host, subset = target.get("host", ""), target.get("subset")
            if canary_subset or stable_subset:
                want = {canary_subset: weight, stable_subset: 100 - weight}.get(subset)
            elif _host_is(host, canary_service):
                want = weight
            elif _host_is(host, stable_service):
                want = 100 - weight
            else:
                want = None
            if want is not None and dest.get("weight") != want:
                dest["weight"] = want
                changed = True
    return VirtualService.model_validate(wire) if changed else None


# ---------------------------------------------------------------------------
# Managed routes: setHeaderRoute and setMirrorRoute
# ---------------------------------------------------------------------------


def _string_match(match: StringMatch) -> dict[str, str]:
    """An Argo StringMatch as Istio's (exact, prefix or regex; the one that is set)."""
    return {k: v for k, v in match.model_dump(exclude_none=True).items() if v}


def header_route(name: str, matches: list[HeaderRoutingMatch], canary: dict[str, Any]) -> dict[str, Any]:
    """Argo's header route: requests whose headers match go to the canary destination, all of them."""
    return {"name": name,
            "match": [{"headers": {m.header_name: _string_match(m.header_value)}} for m in matches],
            "route": [{"destination": canary, "weight": 100}]}  # fmt: skip


def mirror_route(name: str, matches: list[RouteMatch] | None, percentage: int | None,
                 route: list[dict[str, Any]], canary: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Argo's mirror route: matching requests go where the managed route sends them (``route``, as
    weighted now) and ``percentage`` of them (all when absent) are copied to the canary."""
    out: dict[str, Any] = {"name": name}
    wire_matches = []
    for m in matches or ():
        one: dict[str, Any] = {}
        if m.method is not None:
            one["method"] = _string_match(m.method)
        if m.path is not None:
            one["uri"] = _string_match(m.path)
        if m.headers:
            one["headers"] = {k: _string_match(v) for k, v in m.headers.items()}
        wire_matches.append(one)
    if wire_matches:
        out["match"] = wire_matches
    out["route"] = route
    out["mirror"] = canary
    out["mirrorPercentage"] = {"value": float(100 if percentage is None else percentage)}
    return out


def set_managed_routes(vs: VirtualService, routes: list[str] | None, managed: list[str],
                       wanted: dict[str, SetHeaderRoute | SetMirrorRoute], *, canary_service: str | None,
                       canary_subset: str | None = None) -> VirtualService | None:  # fmt: skip
    """The VirtualService with the managed routes ``wanted`` (name -> the step that sets it: a
    ``SetHeaderRoute`` or ``SetMirrorRoute``) first, in the order of ``managed``, and every other
    managed route removed, as Argo places them; None when unchanged.

    The routes' destinations come from the first route in ``routes`` (the only route when
    ``routes`` is empty): its canary destination, and for a mirror its weighted destinations.
    """
    wire = _wire(vs)
    http = list(wire["spec"].get("http") or [])
    others = [r for r in http if r.get("name") not in managed]
    names = list(routes or [])
    base = next((r for r in others if r.get("name") == names[0]), None) if names else (others[0] if others else None)
    built: list[dict[str, Any]] = []
    if base is not None:
        dests = [d for d in base.get("route") or [] if d.get("destination")]
        canary = next((dict(d["destination"]) for d in dests
                       if (canary_subset and d["destination"].get("subset") == canary_subset)
                       or (not canary_subset and _host_is(d["destination"].get("host", ""), canary_service))),
                      None)  # fmt: skip
        for name in managed:
            step = wanted.get(name)
            if step is None or canary is None:
                continue
            if isinstance(step, SetMirrorRoute):
                built.append(mirror_route(name, step.match, step.percentage, [dict(d) for d in dests], canary))
            elif step.match:
                built.append(header_route(name, step.match, canary))
    new_http = [*built, *others]
    if new_http == http:
        return None
    wire["spec"]["http"] = new_http
    return VirtualService.model_validate(wire)
