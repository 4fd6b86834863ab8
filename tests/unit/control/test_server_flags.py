"""The server's node lifecycle flags: durations as kube-controller-manager takes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshwork.cli import cli
from meshwork.control.server import lifecycle_config, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("40", 40.0), ("2.5", 2.5), ("40s", 40.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5), ("0", 0.0)],
)
def test_durations_in_seconds_or_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-3", "s", "5m-", "nan", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_defaults_and_overrides() -> None:
    default = lifecycle_config()
    assert (default.grace_period, default.pod_eviction_timeout, default.pod_gc_quarantine) == (40.0, 300.0, 40.0)
    short = lifecycle_config(2.0, 1.0)
    assert (short.grace_period, short.pod_eviction_timeout, short.pod_gc_quarantine) == (2.0, 1.0, 2.0)
    assert short.startup_grace_period == 60.0


def test_the_server_refuses_a_bad_duration_before_starting(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["server", "--no-agent", "--data-dir", str(tmp_path), "--node-monitor-grace-period", "soon"]
    )
    assert result.exit_code == 2 and 'invalid duration "soon"' in result.output
    assert not (tmp_path / "store.db").exists()
