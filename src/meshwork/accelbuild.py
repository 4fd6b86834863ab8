"""Compile the proxy's hot path with mypyc: ``python -m meshwork.accelbuild [build|status]``.

``make install`` runs it. The build goes to ``<prefix>/lib/meshwork-accel/<digest>/``
(see ``meshwork._accel``, which decides at import time whether to use it); nothing
compiled is ever written beside the sources.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from meshwork._accel import ACCEL_ROOT, EXT, HOT, PACKAGE_ROOT, build_dir, compiled_files, digest


def build(out_root: Path = ACCEL_ROOT) -> Path:
    """Compile the hot modules with mypyc into ``out_root/<digest>``; returns that directory.

    Runs mypyc on a copy of the package in a scratch directory, so nothing
    compiled ever lands beside the sources. Older builds are removed.
    """
    import shutil
    import subprocess
    import tempfile

    key = digest()
    dest = out_root / key
    if compiled_files(dest) is not None:
        return dest
    with tempfile.TemporaryDirectory(prefix="meshwork-accel-") as tmp:
        work = Path(tmp)
        shutil.copytree(PACKAGE_ROOT, work / "meshwork", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        (work / "mypy.ini").write_text("[mypy]\nignore_missing_imports = True\n")
        files = [str(Path(*name.split(".")).with_suffix(".py")) for name in HOT]
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", *files],
            cwd=work,
            capture_output=True,
            text=True,
            env={**os.environ, "MYPYC_OPT_LEVEL": os.environ.get("MYPYC_OPT_LEVEL", "3")},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mypyc failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        staging = out_root / f".{key}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for built in (work / "build").glob(f"lib.*/**/*{EXT}"):
            rel = built.relative_to(next((work / "build").glob("lib.*")))
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, staging / rel)
        for shared in work.glob(f"*__mypyc{EXT}"):
            shutil.copy2(shared, staging / shared.name)
        if compiled_files(staging) is None:
            raise RuntimeError(f"mypyc produced an incomplete build in {staging}")
        for old in out_root.iterdir():
            if old.name != staging.name:
                shutil.rmtree(old, ignore_errors=True)
        staging.rename(dest)
    return dest


def main(argv: list[str]) -> int:
    if argv[:1] in (["build"], []):
        try:
            import mypyc  # noqa: F401
        except ImportError:
            print("meshwork: mypyc is not installed; the proxy runs as pure Python", file=sys.stderr)
            return 0
        if compiled_files(build_dir()) is not None:
            return 0  # already built for these sources
        print("meshwork: compiling the proxy's hot path with mypyc (about 30 s)...", flush=True)
        try:
            where = build()
        except RuntimeError as exc:
            print(f"meshwork: {exc}", file=sys.stderr)
            return 1
        print(f"meshwork: compiled hot path in {where}")
        return 0
    if argv[:1] == ["status"]:
        files = compiled_files(build_dir())
        print("compiled" if files is not None else "pure Python (no build for these sources)")
        return 0
    print("usage: python -m meshwork.accelbuild [build|status]", file=sys.stderr)
    return 2




if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
