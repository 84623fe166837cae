"""`dvc repro` end to end on the tiny preset, in a temporary copy of the repository: outputs, a clean
`dvc status`, no rerun without a change, exactly the dependants rerun after a change, and the same metrics and
weights when the training stages run again (issue: a `dvc repro` users can trust)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_dvc import code_deps, stages

# forced with their upstream stages: prepare, tokenizers, pretraining
TRAINING = ["finetune@bert", "finetune@xlnet", "ablation@bert", "ablation@xlnet"]


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], repo)


def _quality_metrics(repo: Path) -> dict[str, object]:
    """Every training metrics file, without the wall-clock figures (train seconds, tokens/s)."""
    out = {}
    for path in sorted((repo / "artifacts" / "metrics").rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("train_seconds", "tokens_per_second")}
        out[str(path.relative_to(repo))] = data
    return out


def _weights(repo: Path) -> dict[str, bytes]:
    art = repo / "artifacts"
    return {str(p.relative_to(art)): p.read_bytes()
            for folder in ("pretrained", "models", "models_random_init") for p in (art / folder).rglob("*.safetensors")}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    _copy_repo(repo)
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("\npreset: small", "\npreset: tiny", 1))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "copy"]):
        _run(cmd, repo)
    _dvc(repo, "repro")
    return repo


@pytest.mark.slow
def test_dvc_repro_end_to_end_on_the_tiny_preset(tiny_repo):
    art = tiny_repo / "artifacts"
    for family in ("bert", "xlnet"):
        assert (art / "models" / family / "config.json").exists()
        assert (art / "models_random_init" / family / "config.json").exists()
        export = json.loads((art / "onnx" / family / "export.json").read_text())
        assert export["parity"]["max_abs_diff"] <= export["atol"]
    shown = json.loads(_dvc(tiny_repo, "metrics", "show", "--json").stdout)
    flat = json.dumps(shown)
    for key in ("mlm_accuracy", "nsp_accuracy", "plm_accuracy", "f1_macro", "confusion_matrix", "tokens_per_second"):
        assert key in flat, key


@pytest.mark.slow
def test_stage_test_metrics_are_evaluate_pytorch_rows(tiny_repo):
    quality = json.loads((tiny_repo / "artifacts" / "evaluation" / "quality.json").read_text())
    metrics = tiny_repo / "artifacts" / "metrics"
    for family in ("bert", "xlnet"):
        for stage, row in (("finetune", family), ("finetune_random_init", f"{family}-random-init")):
            test = json.loads((metrics / stage / family / "test.json").read_text())
            evaluated = quality[row]["pytorch"]
            for key in ("accuracy", "f1_macro", "confusion_matrix"):
                assert test[key] == evaluated[key], (stage, family, key)


@pytest.mark.slow
def test_status_is_clean_and_a_second_repro_runs_nothing(tiny_repo):
    assert "up to date" in _dvc(tiny_repo, "status").stdout
    again = _dvc(tiny_repo, "repro")
    assert "Running stage" not in again.stdout, again.stdout


@pytest.mark.slow
def test_touching_a_family_file_marks_exactly_its_dependants(tiny_repo):
    family_file = tiny_repo / "pipeline" / "families" / "bert.py"
    original = family_file.read_text()
    expected = {name for name, stage in stages().items()
                if any(dep in ("pipeline/families", "pipeline/families/bert.py") for dep in code_deps(stage))}
    try:
        family_file.write_text(original + "\n# touched\n")
        changed = json.loads(_dvc(tiny_repo, "status", "--json").stdout)
    finally:
        family_file.write_text(original)
    assert {name.split("@")[0] for name in changed} == expected
    assert {"prepare", "baseline", "report"}.isdisjoint(expected) and {"pretrain", "finetune"} <= expected
    assert "up to date" in _dvc(tiny_repo, "status").stdout


@pytest.mark.slow
def test_training_stages_rerun_give_identical_metrics_and_weights(tiny_repo):
    """Same params on the same machine: `dvc repro -f` of every training stage gives the same bytes."""
    before_metrics, before_weights = _quality_metrics(tiny_repo), _weights(tiny_repo)
    _dvc(tiny_repo, "repro", "-f", *TRAINING)
    assert _quality_metrics(tiny_repo) == before_metrics
    after = _weights(tiny_repo)
    assert after.keys() == before_weights.keys() and len(after) == 6
    different = [name for name in after if after[name] != before_weights[name]]
    assert not different, f"weights differ after a rerun: {different}"
