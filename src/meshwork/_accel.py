"""The proxy's hot path compiled to C with mypyc, used only when it matches the sources.

What lives here: the list of hot modules (``HOT``), the digest that ties a
compiled build to the exact sources it came from, the import hook that loads
the compiled modules in place of the pure ones, and ``build`` (run by ``make
install``: ``python -m meshwork._accel build``).

The modules stay ordinary, strictly typed Python; mypyc turns the same code
into C extension modules (as mypy and black ship themselves), which cuts the
interpreter's share of a proxied request by about a third. Builds live under
the interpreter's prefix (``<venv>/lib/meshwork-accel/<digest>/``), never in
the source tree, so an edited source can never be shadowed by a stale build:
the digest covers every hot module's bytes and the interpreter, and a build
whose digest does not match is ignored (the pure modules run). Set
``MESHWORK_PURE=1`` to run the pure modules regardless.

What must not live here: anything the hot modules do; this file only decides
which copy of them is imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

# Compiled together, as one group: they call each other natively. Leaves first.
HOT = (
    "meshwork.core.http1_checks",
    "meshwork.core.http1",
    "meshwork.proxy.plan",
    "meshwork.proxy.observe",
    "meshwork.proxy.heads",
    "meshwork.proxy.response",
    "meshwork.proxy.static",
    "meshwork.proxy.telemetry",
    "meshwork.proxy.upstream",
    "meshwork.proxy.local",
    "meshwork.proxy.attempts",
    "meshwork.proxy.http",
    "meshwork.proxy.server",
)

PACKAGE_ROOT = Path(__file__).resolve().parent
ACCEL_ROOT = Path(sys.prefix) / "lib" / "meshwork-accel"
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]


def source_path(module: str) -> Path:
    return PACKAGE_ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")


def digest(modules: Sequence[str] = HOT) -> str:
    """What a build is valid for: the hot modules' exact bytes and this interpreter."""
    h = hashlib.sha256()
    h.update(f"{sys.implementation.cache_tag} {sys.version} {EXT}\n".encode())
    for name in modules:
        h.update(name.encode() + b"\n")
        h.update(source_path(name).read_bytes())
    return h.hexdigest()[:20]


def build_dir(key: str | None = None) -> Path:
    return ACCEL_ROOT / (key or digest())


class _Finder:
    """Maps the hot modules (and mypyc's shared runtime module) to the compiled files.

    A meta path finder by protocol (``importlib.abc`` is not imported: it costs 20 ms).
    """

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        spec = importlib.machinery.ModuleSpec(fullname, loader, origin=str(file))
        spec.has_location = True
        return spec


def compiled_files(where: Path) -> dict[str, Path] | None:
    """Module name -> compiled file for a complete build in ``where``, else None."""
    if not where.is_dir():
        return None
    files: dict[str, Path] = {}
    for name in HOT:
        file = where.joinpath(*name.split(".")).with_name(name.rsplit(".", 1)[1] + EXT)
        if not file.is_file():
            return None
        files[name] = file
    shared = sorted(where.glob(f"*__mypyc{EXT}"))
    if len(shared) != 1:
        return None
    files[shared[0].name.removesuffix(EXT)] = shared[0]
    return files


def active() -> bool:
    """Whether the compiled hot path is the one imported."""
    return any(isinstance(f, _Finder) for f in sys.meta_path)


def install() -> bool:
    """Put the compiled modules first on the import path when a build matches the sources."""
    if os.environ.get("MESHWORK_PURE") or active() or not ACCEL_ROOT.is_dir():
        return False
    try:
        files = compiled_files(build_dir())
    except OSError:
        return False
    if files is None or any(name in sys.modules for name in HOT):
        return False
    sys.meta_path.insert(0, _Finder(files))
    return True
