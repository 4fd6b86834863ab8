"""Shared fixtures. tests/support holds the helpers (a real server subprocess, raw HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.conformance import CONFORMANCE, absent_reason


@pytest.fixture
def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(absent_reason())
    return CONFORMANCE
