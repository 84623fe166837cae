"""Shared fixtures: the tiny preset, and a prepared data + tokenizer folder built once per session."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipeline.config import load_params  # noqa: E402
from pipeline.paths import Paths  # noqa: E402


# The suite runs on 2 pytest-xdist workers, one test file per worker at a time (pyproject's addopts). These
# files go first, in this order: the end-to-end `dvc repro` file is half of the suite's time (about 6 of 12
# minutes on 2 cores), so it must start at once on one worker while the other takes every other file.
FIRST = ("test_pipeline_e2e.py",)


def pytest_collection_modifyitems(config, items):
    import torch

    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_params():
    return load_params(REPO / "params.yaml", ["preset=tiny"])


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_params) -> Paths:
    """artifacts/ with data and both tokenizers, on the tiny preset. Read-only for tests: copy to change."""
    from pipeline.data import prepare
    from pipeline.tokenize import train_tokenizer

    paths = Paths(tmp_path_factory.mktemp("artifacts"))
    prepare(tiny_params.data, paths)
    for family in tiny_params.families:
        train_tokenizer(family, tiny_params, paths)
    return paths


@pytest.fixture
def workdir(tmp_path, prepared) -> Paths:
    """A private copy of the prepared artifacts, for tests that write."""
    root = tmp_path / "artifacts"
    shutil.copytree(prepared.root, root)
    return Paths(root)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def modules_loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` (a module, or a package with any of its submodules) a fresh interpreter has loaded after
    running `code` in the repository: how the tests check that a path stays clear of a heavy import."""
    probe = (f"{code}\nimport sys\nprint(sorted(n for n in {names!r} "
             "if any(m == n or m.startswith(n + '.') for m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])
