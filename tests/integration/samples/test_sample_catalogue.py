"""Every image Istio's samples name (bookinfo, httpbin, sleep/curl, helloworld) has a catalogue entry.

Read from the conformance manifests themselves, so a sample that names a new
image fails here first; each entry runs a module that exists.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from meshwork.agent.images import Catalogue
from support.conformance import CONFORMANCE, absent_reason

ISTIO = CONFORMANCE / "istio"
SAMPLES = [ISTIO / "bookinfo" / "platform" / "kube" / "bookinfo.yaml", ISTIO / "httpbin" / "httpbin.yaml",
           ISTIO / "sleep" / "sleep.yaml", ISTIO / "helloworld" / "helloworld.yaml",
           CONFORMANCE / "istio.io" / "traffic-management" / "mirroring" / "workloads.yaml"]  # fmt: skip


def _images(path: Path) -> list[str]:
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        out += [c["image"] for c in spec.get("containers") or []]
    return out


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_image_is_in_the_catalogue(path: Path, tmp_path: Path) -> None:
    if not path.is_file():
        pytest.skip(absent_reason(path))
    catalogue = Catalogue(tmp_path)
    images = _images(path)
    assert images
    for image in images:
        entry = catalogue.lookup(image)
        assert entry is not None, catalogue.missing_message(image)
        if entry.command[0] == sys.executable:
            assert importlib.util.find_spec(entry.command[2]) is not None, entry


def test_reviews_versions_differ_as_the_original_images_do(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    env = {v: dict(catalogue.lookup(f"docker.io/istio/examples-bookinfo-reviews-{v}:1.20.3").env)  # type: ignore[union-attr]
           for v in ("v1", "v2", "v3")}  # fmt: skip
    assert env["v1"]["ENABLE_RATINGS"] == "false"
    assert (env["v2"]["ENABLE_RATINGS"], env["v2"]["STAR_COLOR"]) == ("true", "black")
    assert (env["v3"]["ENABLE_RATINGS"], env["v3"]["STAR_COLOR"]) == ("true", "red")
