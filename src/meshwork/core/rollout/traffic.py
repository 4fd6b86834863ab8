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
