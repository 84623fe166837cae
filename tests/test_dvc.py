"""dvc.yaml knows exactly what each stage runs and reads: its code deps are the files its stage script imports
(transitively, tests/import_graph.py), and its params are keys that exist."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from import_graph import REPO, closure
from pipeline.config import Params

CODE_ROOTS = ("pipeline", "stages")


def stages() -> dict[str, dict]:
    """dvc.yaml's stages, a `foreach` stage once (its code and params do not depend on the item)."""
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def _script(stage: dict) -> Path:
    cmd = _body(stage)["cmd"].split()
    assert cmd[:2] == ["python", cmd[1]] and cmd[1].startswith("stages/"), cmd
    return REPO / cmd[1]


def code_deps(stage: dict) -> list[str]:
    return [d for d in _body(stage)["deps"] if d.split("/")[0] in CODE_ROOTS]


def covered(deps: list[str]) -> set[Path]:
    """Every file a list of deps names; a folder counts for each of its .py files."""
    files: set[Path] = set()
    for dep in deps:
        path = REPO / dep
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return {f.resolve() for f in files}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_lists_exactly_the_code_it_imports(name):
    stage = stages()[name]
    imported = closure(_script(stage))
    listed = covered(code_deps(stage))
    missing = sorted(str(p.relative_to(REPO)) for p in imported - listed)
    extra = sorted(str(p.relative_to(REPO)) for p in listed - imported)
    assert not missing, f"{name}: dvc.yaml does not list files its script imports: {missing}"
    assert not extra, f"{name}: dvc.yaml lists files its script never imports: {extra}"


def _key_exists(key: str) -> bool:
    node: object = Params()
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_params_are_real_keys_and_presets_are_per_file(name):
    body = _body(stages()[name])
    keys = [k for entry in body.get("params", []) for k in ([entry] if isinstance(entry, str) else entry)]
    assert keys and all(_key_exists(k) for k in keys), keys
    assert "presets" not in keys  # presets are files (presets/NAME.yaml): only the active one is a dep
    if name != "report":  # report reads only the evaluate stage's files
        assert "preset" in keys and "presets/${preset}.yaml" in body["deps"]


def test_every_stage_script_has_a_stage():
    scripts = {_script(s).name for s in stages().values()}
    assert scripts == {p.name for p in (REPO / "stages").glob("*.py")}
