"""Mesh-wide settings for proxies: the parts of Istio's meshConfig a proxy needs, checked.

What lives here: ``proxy_mesh_config(mesh, meshwork)``, which the control
plane calls with the two YAML documents of ConfigMap ``istio-system/istio``
(already parsed) and which returns the ``meshConfig`` member of every
snapshot; and ``path_options(mesh_config)``, which a proxy calls to turn that
member into ``pathnorm.NormalizeOptions``, raising ``MeshConfigRejected``
(the proxy's NACK text) when a value is not one it knows.

The ConfigMap, as Istio keeps it:

- key ``mesh``: Istio's ``MeshConfig`` (YAML). Read here:
  ``pathNormalization.normalization``, one of ``NONE``, ``BASE``,
  ``MERGE_SLASHES``, ``DECODE_AND_MERGE_SLASHES``, or ``DEFAULT``. Every
  other field is Istio's business and is not copied into snapshots.
- key ``meshwork``: meshwork's own choices, kept out of ``mesh`` so that the
  same ConfigMap loads unchanged into a real istiod (it reads only ``mesh``
  and ``meshNetworks``)::

      pathNormalization:
        escapedSlashes: keep | reject | decode  # %2F and %5C (Envoy's path_with_escaped_slashes_action)
        backslashes: slash | reject | keep      # a literal "\\" in the path
        pathParameters: reject | keep           # ";x=1" path parameters

Defaults: ``DECODE_AND_MERGE_SLASHES`` (also for ``DEFAULT``, which in Istio
means ``BASE``): with any weaker mode a DENY on ``/admin`` is walked around
by ``//admin`` or ``/%2Fadmin`` while the app serves ``/admin``; Istio's
security best practices recommend this mode whenever traffic is allowed by
default, which is the case in every namespace without an ALLOW policy.
``escapedSlashes`` unset follows the mode (decoded by
``DECODE_AND_MERGE_SLASHES``, kept otherwise); backslashes become slashes;
path parameters are refused.

What must not live here: reading the ConfigMap or YAML text (the control
plane), normalising paths (``pathnorm``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from meshwork.core.security.pathnorm import (
    DEFAULT_OPTIONS,
    Backslashes,
    EscapedSlashes,
    NormalizeOptions,
    PathNormalization,
    PathParams,
)
from meshwork.errors import MeshworkError

__all__ = ["MeshConfigRejected", "path_options", "proxy_mesh_config"]

# Where it comes from (Istio's names), for messages.
SOURCE = "ConfigMap istio-system/istio"
_MODES = {m.value: m for m in PathNormalization}
_ESCAPED: tuple[EscapedSlashes, ...] = ("keep", "reject", "decode")
_BACKSLASHES: tuple[Backslashes, ...] = ("slash", "reject", "keep")
_PARAMS: tuple[PathParams, ...] = ("reject", "keep")
_MESHWORK_FIELDS = {
    "escapedSlashes": _ESCAPED,
    "backslashes": _BACKSLASHES,
    "pathParameters": _PARAMS,
}


class MeshConfigRejected(MeshworkError):
    """The mesh config has a value proxies cannot use: the text is the NACK's reason."""


def proxy_mesh_config(mesh: Any, meshwork: Any = None) -> dict[str, Any]:
    """The ``meshConfig`` member of snapshots from the parsed ``mesh`` and ``meshwork`` keys.

    Only the parts proxies read are copied (as found: ``path_options`` checks
    them, so that a bad value is the proxies' NACK, seen in ``proxy-status``).
    A document that is not a mapping is carried as ``error``.
    """
    out: dict[str, Any] = {}
    for key, doc in (("mesh", mesh), ("meshwork", meshwork)):
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            out["error"] = f"{SOURCE} key {key!r} is not a YAML mapping"
            continue
        if "pathNormalization" in doc:
            section = "pathNormalization" if key == "mesh" else "meshworkPathNormalization"
            out[section] = doc["pathNormalization"]
    return out


def path_options(mesh_config: Mapping[str, Any] | None) -> NormalizeOptions:
    """The path normalisation a snapshot's ``meshConfig`` asks for; raises ``MeshConfigRejected``."""
    if not mesh_config:
        return DEFAULT_OPTIONS
    error = mesh_config.get("error")
    if error:
        raise MeshConfigRejected(str(error))
    mode = DEFAULT_OPTIONS.mode
    istio = mesh_config.get("pathNormalization")
    if istio is not None:
        if not isinstance(istio, Mapping):
            raise MeshConfigRejected(f"{SOURCE} mesh: pathNormalization must be a mapping")
        for name in istio:
            if name != "normalization":
                raise MeshConfigRejected(f"{SOURCE} mesh: unknown field pathNormalization.{name}")
        value = istio.get("normalization")
        if value is not None and value != "DEFAULT":
            if value not in _MODES:
                raise MeshConfigRejected(
                    f"{SOURCE} mesh: pathNormalization.normalization {value!r} is not one of "
                    "NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES, DEFAULT"
                )
            mode = _MODES[value]
    own = mesh_config.get("meshworkPathNormalization")
    chosen: dict[str, str] = {}
    if own is not None:
        if not isinstance(own, Mapping):
            raise MeshConfigRejected(f"{SOURCE} meshwork: pathNormalization must be a mapping")
        for name, value in own.items():
            allowed = _MESHWORK_FIELDS.get(str(name))
            if allowed is None:
                raise MeshConfigRejected(
                    f"{SOURCE} meshwork: unknown field pathNormalization.{name} "
                    f"(known: {', '.join(_MESHWORK_FIELDS)})"
                )
            if value not in allowed:
                raise MeshConfigRejected(
                    f"{SOURCE} meshwork: pathNormalization.{name} {value!r} is not one of "
                    + ", ".join(allowed)
                )
            chosen[str(name)] = str(value)
    return NormalizeOptions(
        mode=mode,
        escaped_slashes=cast("EscapedSlashes | None", chosen.get("escapedSlashes")),
        backslashes=cast(Backslashes, chosen.get("backslashes", DEFAULT_OPTIONS.backslashes)),
        path_params=cast(PathParams, chosen.get("pathParameters", DEFAULT_OPTIONS.path_params)),
    )
