"""meshwork's own kinds: ``ProxyPlugin`` (meshwork.io/v1alpha1).

A ``ProxyPlugin`` runs a Python module inside the proxies of the workloads it
selects, the way Envoy users attach Lua or Wasm filters (and Istio's
``WasmPlugin`` selects workloads). The module may define::

    def on_request(request):   # -> None, or (status, body[, headers]) to answer at once
        request.headers_to_add["x-team"] = "payments"

``request`` has ``method``, ``path``, ``authority``, ``headers`` (lower-case
names) and ``config`` (the plugin's ``spec.config``). Returning a tuple
answers locally; setting ``headers_to_add`` adds headers upstream.
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
