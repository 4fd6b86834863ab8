"""meshwork._accel: a compiled build is used only when it was made from exactly these sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshwork import _accel


def _fake_build(where: Path) -> None:
    for name in _accel.HOT:
        file = where.joinpath(*name.split(".")).with_name(name.rsplit(".", 1)[1] + _accel.EXT)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"")
    (where / f"0123abcd__mypyc{_accel.EXT}").write_bytes(b"")


def test_a_complete_build_maps_every_hot_module_and_the_shared_runtime(tmp_path: Path) -> None:
    _fake_build(tmp_path)
    files = _accel.compiled_files(tmp_path)
    assert files is not None
    assert set(files) == {*_accel.HOT, "0123abcd__mypyc"}


def test_a_build_missing_one_module_or_the_runtime_is_not_used(tmp_path: Path) -> None:
    _fake_build(tmp_path)
    http = tmp_path / "meshwork" / "proxy" / f"http{_accel.EXT}"
    http.unlink()
    assert _accel.compiled_files(tmp_path) is None
    _fake_build(tmp_path)
    (tmp_path / f"0123abcd__mypyc{_accel.EXT}").unlink()
    assert _accel.compiled_files(tmp_path) is None
    assert _accel.compiled_files(tmp_path / "absent") is None


def test_editing_any_hot_module_changes_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "meshwork"
    shutil.copytree(_accel.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_accel, "PACKAGE_ROOT", copy)
    before = _accel.digest()
    assert _accel.digest() == before  # stable
    for name in _accel.HOT:
        path = _accel.source_path(name)
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert _accel.digest() != before, name
        path.write_bytes(original)
    assert _accel.digest() == before


def _imported_from(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import meshwork.proxy.http as h, meshwork.core.http1 as p; print(h.__file__); print(p.__file__)"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout
    return out


def test_the_pure_modules_run_when_asked_or_when_no_build_matches() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESHWORK_PURE"}
    pure = _imported_from({**env, "MESHWORK_PURE": "1"})
    assert all(line.endswith(".py") for line in pure.split()), pure
    default = _imported_from(env)
    if _accel.compiled_files(_accel.build_dir()) is None:
        # No build for these sources (mypyc missing, or a source edited since `make install`).
        assert all(line.endswith(".py") for line in default.split()), default
    else:
        assert all(line.endswith(_accel.EXT) for line in default.split()), default
        assert all(str(_accel.build_dir()) in line for line in default.split()), default
