"""The functional core stays pure: ``core/`` and ``model/`` import no I/O layer.

STYLE.md §3.1: core/ and model/ import only the stdlib, ``meshwork.model``,
``meshwork.errors`` (and httptools in the HTTP/1 parser; pydantic in model/).
This test reads the imports of every module there, so a shell import sneaking
into the core fails CI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "meshwork"

ALLOWED = {
    # cryptography: pure computation, needed for JWT signatures (meshwork.core.security.jwt)
    "core": {"meshwork.errors", "meshwork.model", "meshwork.core", "httptools", "cryptography"},
    "model": {"meshwork.errors", "meshwork.model", "pydantic", "pydantic_core", "yaml"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _allowed(module: str, allowed: set[str]) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return True
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_pure_packages_import_no_shell(package: str) -> None:
    offenders = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module in _imports(path):
            if not _allowed(module, ALLOWED[package]):
                offenders.append(f"{path.relative_to(SRC)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_core_does_no_io() -> None:
    """No sockets, threads, subprocesses or asyncio in the core: time and randomness are inputs."""
    banned = {"socket", "asyncio", "subprocess", "threading", "os", "time"}
    offenders = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in sorted((SRC / "core").rglob("*.py"))
        for module in _imports(path)
        if module.split(".")[0] in banned
    ]
    assert not offenders, "\n".join(offenders)
