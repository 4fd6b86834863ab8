"""Where the upstream conformance manifests are: ``../shared/conformance`` beside the checkout.

Tests that read them skip, saying why, when the folder is absent (a user's
clone has no ``../shared``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

# tests/support/conformance.py -> the repo is parents[2]; shared/ sits beside it.
CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"

DELETE = object()


def absent_reason(folder: Path = CONFORMANCE) -> str:
    return f"{folder} is absent: the conformance manifests live beside the repo, in ../shared"


def argo_docs(folder: Path) -> list[Any]:
    """Every argoproj.io document under ``folder``, as pytest params named file#index."""
    if not folder.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent_reason(folder)))]
    params = []
    for path in sorted(folder.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("argoproj.io/"):
                params.append(pytest.param(doc, id=f"{path.relative_to(folder)}#{i}"))
    return params


def patched(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the dotted ``path`` set to ``value`` (or removed with DELETE)."""
    out = copy.deepcopy(doc)
    node: Any = out
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out
