"""Shared fixtures. tests/support holds the helpers (a real server subprocess, raw HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE = SHARED / "conformance"


@pytest.fixture
def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"{CONFORMANCE} is absent: the conformance manifests live beside the repo, in ../shared")
    return CONFORMANCE
