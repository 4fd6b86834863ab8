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
"""

from __future__ import annotations

from typing import Any, Literal

from meshwork.model.base import Model, Resource
from meshwork.model.kinds import REGISTRY, KindInfo

GROUP = "meshwork.io"


class PluginSelector(Model):
    """The workloads whose proxies run the plugin (Istio's WorkloadSelector); none: all in the namespace."""

    match_labels: dict[str, str] | None = None


class ProxyPluginSpec(Model):
    """Which module to run, where, with what configuration."""

    selector: PluginSelector | None = None
    module: str  # an importable module name, or a path to a .py file
    config: dict[str, Any] | None = None
    priority: int = 0  # higher runs first, as WasmPlugin's priority


class ProxyPlugin(Resource):
    """A Python extension run inside selected proxies (meshwork.io/v1alpha1 ProxyPlugin)."""

    api_version: Literal["meshwork.io/v1alpha1"] = "meshwork.io/v1alpha1"
    kind: Literal["ProxyPlugin"] = "ProxyPlugin"
    spec: ProxyPluginSpec


REGISTRY.register(KindInfo(
    group=GROUP, versions=("v1alpha1",), kind="ProxyPlugin", plural="proxyplugins", singular="proxyplugin",
    model=ProxyPlugin, namespaced=True, has_status=False, short_names=("pp",),
))  # fmt: skip
