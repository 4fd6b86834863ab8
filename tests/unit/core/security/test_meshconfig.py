"""meshConfig for proxies: what the control plane copies, and the path normalisation a proxy makes of it."""

from __future__ import annotations

from typing import Any

import pytest

from meshwork.core.security.meshconfig import MeshConfigRejected, path_options, proxy_mesh_config
from meshwork.core.security.pathnorm import (
    DEFAULT_OPTIONS,
    NormalizeOptions,
    PathNormalization,
    PathRejected,
    normalize_path,
)

MODES = PathNormalization


def test_only_what_proxies_need_is_copied() -> None:
    mesh = {
        "accessLogFile": "/dev/stdout",
        "enableTracing": True,
        "pathNormalization": {"normalization": "BASE"},
    }
    assert proxy_mesh_config(mesh) == {"pathNormalization": {"normalization": "BASE"}}
    assert proxy_mesh_config(mesh, {"pathNormalization": {"escapedSlashes": "reject"}}) == {
        "pathNormalization": {"normalization": "BASE"},
        "meshworkPathNormalization": {"escapedSlashes": "reject"},
    }
    assert proxy_mesh_config(None) == {} and proxy_mesh_config({"trustDomain": "x"}) == {}
    assert "not a YAML mapping" in proxy_mesh_config("just text")["error"]


@pytest.mark.parametrize(
    ("mesh_config", "want"),
    [
        (None, DEFAULT_OPTIONS),
        ({}, DEFAULT_OPTIONS),
        ({"pathNormalization": {}}, DEFAULT_OPTIONS),
        ({"pathNormalization": {"normalization": "DEFAULT"}}, DEFAULT_OPTIONS),
        ({"pathNormalization": {"normalization": "NONE"}}, NormalizeOptions(MODES.NONE)),
        ({"pathNormalization": {"normalization": "BASE"}}, NormalizeOptions(MODES.BASE)),
        (
            {"pathNormalization": {"normalization": "MERGE_SLASHES"}},
            NormalizeOptions(MODES.MERGE_SLASHES),
        ),
        (
            {
                "pathNormalization": {"normalization": "BASE"},
                "meshworkPathNormalization": {
                    "escapedSlashes": "reject",
                    "backslashes": "keep",
                    "pathParameters": "keep",
                },
            },
            NormalizeOptions(MODES.BASE, "reject", "keep", "keep"),
        ),
        (
            {"meshworkPathNormalization": {"escapedSlashes": "keep"}},
            NormalizeOptions(escaped_slashes="keep"),
        ),
    ],
)
def test_path_options(mesh_config: dict[str, Any] | None, want: NormalizeOptions) -> None:
    assert path_options(mesh_config) == want


@pytest.mark.parametrize(
    ("mesh_config", "reason"),
    [
        (
            {"pathNormalization": {"normalization": "SOMETIMES"}},
            "'SOMETIMES' is not one of NONE, BASE",
        ),
        (
            {"pathNormalization": {"normalization": "none"}},
            "'none' is not one of",
        ),  # enum names are exact
        (
            {"pathNormalization": {"normalisation": "NONE"}},
            "unknown field pathNormalization.normalisation",
        ),
        ({"pathNormalization": "NONE"}, "pathNormalization must be a mapping"),
        (
            {"meshworkPathNormalization": {"escapedSlashes": "maybe"}},
            "escapedSlashes 'maybe' is not one of keep",
        ),
        (
            {"meshworkPathNormalization": {"slashes": "keep"}},
            "unknown field pathNormalization.slashes",
        ),
        (
            {"error": "ConfigMap istio-system/istio key 'mesh' is not valid YAML: ..."},
            "is not valid YAML",
        ),
    ],
)
def test_a_bad_value_is_refused_with_the_reason(mesh_config: dict[str, Any], reason: str) -> None:
    with pytest.raises(MeshConfigRejected, match="ConfigMap istio-system/istio") as err:
        path_options(mesh_config)
    assert reason in str(err.value)


def test_what_each_mode_makes_of_admin_spellings() -> None:
    def norm(mode: str, path: str, **own: str) -> str | PathRejected:
        cfg: dict[str, Any] = {"pathNormalization": {"normalization": mode}}
        if own:
            cfg["meshworkPathNormalization"] = own
        return normalize_path(path, path_options(cfg))

    assert norm("NONE", "//admin") == "//admin"
    assert norm("BASE", "//admin") == "//admin" and norm("BASE", "/x/../%61dmin") == "/admin"
    assert (
        norm("MERGE_SLASHES", "//admin") == "/admin"
        and norm("MERGE_SLASHES", "/%2Fadmin") == "/%2Fadmin"
    )
    assert norm("DECODE_AND_MERGE_SLASHES", "/%2Fadmin") == "/admin"
    assert isinstance(norm("BASE", "/%2Fadmin", escapedSlashes="reject"), PathRejected)
    assert isinstance(norm("BASE", "/x\\admin", backslashes="reject"), PathRejected)
    assert norm("BASE", "/admin;a=1", pathParameters="keep") == "/admin;a=1"
