"""meshwork's own kinds: ``ProxyPlugin`` (meshwork.io/v1alpha1).

A ``ProxyPlugin`` runs a Python module inside the proxies of the workloads it
selects, the way Envoy users attach Lua or Wasm filters (and Istio's
``WasmPlugin`` selects workloads). The module may define any of::

    def on_request(request):   # -> None, or (status, body[, headers]) to answer at once
        request.headers_to_add["x-team"] = "payments"

    def on_response(request, response):   # before the upstream's head goes to the client
        response.headers_to_set["x-served-for"] = request.config["team"]

    def pick(request, endpoints):   # -> one of endpoints, or None: the DestinationRule's balancer
        return next((e for e in endpoints if e.labels.get("zone") == "a"), None)

``request`` has ``method``, ``path``, ``authority``, ``headers`` (lower-case
names) and ``config`` (the plugin's ``spec.config``). Returning a tuple
answers locally; setting ``headers_to_add`` adds headers upstream.
``response`` has ``status``, ``headers`` and ``config``, and takes
``headers_to_set`` / ``headers_to_add`` (name -> value) and
``headers_to_remove`` (names). ``endpoints`` are the cluster's endpoints
neither ejected by outlier detection nor already tried by this request, each
with ``address``, ``port``, ``labels`` and ``name`` (the pod). How hooks are
ordered and what happens when one fails: ``meshwork.proxy.plugins``.

Which traffic: ``spec.match``, Istio's ``WasmPlugin.match`` (a list of
``TrafficSelector``; a request passes the plugin when any one selects it)::

    match:
    - mode: SERVER          # WorkloadMode: CLIENT, SERVER, CLIENT_AND_SERVER, UNDEFINED
      ports: [{number: 8080}]

``CLIENT`` is the workload's outbound side (its sidecar's :15001, the port the
request is for being the destination service's), ``SERVER`` its inbound side
(the request reaches the app; the port is the app's), ``CLIENT_AND_SERVER``
both. A selector without ``mode`` (or ``UNDEFINED``) is ``CLIENT_AND_SERVER``,
as upstream; without ``ports`` it selects every port. One difference from
upstream, kept so that manifests written before ``match`` existed behave as
they did: a ProxyPlugin with no ``match`` (or an empty one) runs on the CLIENT
side only, where Istio would run a WasmPlugin without ``match`` on both.
``pick`` means nothing on the SERVER side (one endpoint there: the app) and
is not called there.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import model_validator

from meshwork.model.base import Model, Resource
from meshwork.model.istio import DUPLICATE, PORT_MAX, PORT_MIN, REQUIRED, PortSelector, Problems
from meshwork.model.kinds import REGISTRY, KindInfo

GROUP = "meshwork.io"


class PluginSelector(Model):
    """The workloads whose proxies run the plugin (Istio's WorkloadSelector); none: all in the namespace."""

    match_labels: dict[str, str] | None = None


# Istio's istio.type.v1beta1.WorkloadMode.
WorkloadMode = Literal["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"]


class TrafficSelector(Model):
    """Which traffic passes the plugin (``WasmPlugin.TrafficSelector``): all of its conditions hold."""

    mode: WorkloadMode = "CLIENT_AND_SERVER"  # upstream: "If not specified, the default value is CLIENT_AND_SERVER"
    ports: list[PortSelector] | None = None  # any one of these destination ports; none: every port

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems("TrafficSelector")
        seen: set[int] = set()
        for i, port in enumerate(self.ports or []):
            if port.number is None:
                problems.add(("ports", i, "number"), "port number is required", None, REQUIRED)
            elif not PORT_MIN <= port.number <= PORT_MAX:
                problems.add(("ports", i, "number"), f"port number {port.number} must be in the range 1..65535",
                             port.number)  # fmt: skip
            elif port.number in seen:  # upstream: +listType=map, +listMapKey=number
                problems.add(("ports", i, "number"), f"port {port.number} listed twice", port.number, DUPLICATE)
            else:
                seen.add(port.number)
        problems.raise_if_any()
        return self


class ProxyPluginSpec(Model):
    """Which module to run, where, with what configuration."""

    selector: PluginSelector | None = None
    module: str  # an importable module name, or a path to a .py file
    config: dict[str, Any] | None = None
    priority: int = 0  # higher runs first, as WasmPlugin's priority
    match: list[TrafficSelector] | None = None  # none or empty: CLIENT only (see the module docstring)


class ProxyPlugin(Resource):
    """A Python extension run inside selected proxies (meshwork.io/v1alpha1 ProxyPlugin)."""

    api_version: Literal["meshwork.io/v1alpha1"] = "meshwork.io/v1alpha1"
    kind: Literal["ProxyPlugin"] = "ProxyPlugin"
    spec: ProxyPluginSpec


REGISTRY.register(KindInfo(
    group=GROUP, versions=("v1alpha1",), kind="ProxyPlugin", plural="proxyplugins", singular="proxyplugin",
    model=ProxyPlugin, namespaced=True, has_status=False, short_names=("pp",),
))  # fmt: skip
