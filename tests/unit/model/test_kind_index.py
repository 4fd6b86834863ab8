"""The generated kind index says exactly what the model modules register.

The CLI and the API server look kinds up in the index without importing a
single model; if a model module adds or renames a kind and the index is not
regenerated, this fails with the command that fixes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import meshwork.model
from meshwork.model.kinds import REGISTRY

INDEX = Path(meshwork.model.__file__).with_name("_index.py")


def test_index_matches_the_models() -> None:
    env = {**os.environ, "MESHWORK_KIND_INDEX": "off"}
    fresh = subprocess.run(
        [sys.executable, "-c", "from meshwork.model.kinds import render_index; print(render_index(), end='')"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    assert fresh == INDEX.read_text(), (
        "src/meshwork/model/_index.py is out of date: run "
        "`MESHWORK_KIND_INDEX=off .venv/bin/python -m meshwork.model.kinds --write` from src/"
    )


def test_lookups_need_no_model_and_models_load_on_first_use() -> None:
    code = (
        "import sys\n"
        "from meshwork.model import REGISTRY\n"
        "info = REGISTRY.for_name('vs')[0]\n"
        "assert info.kind == 'VirtualService' and info.group == 'networking.istio.io'\n"
        "assert 'pydantic' not in sys.modules, 'looking a kind up imported pydantic'\n"
        "model = info.model\n"
        "assert model.__name__ == 'VirtualService' and model.info is info\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_every_indexed_kind_loads_its_model() -> None:
    for info in REGISTRY.known_kinds():
        assert info.model.info is info, info
