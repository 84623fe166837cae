"""`dvc repro` end to end on the tiny preset, in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO


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


@pytest.mark.slow
def test_dvc_repro_end_to_end_on_the_tiny_preset(tmp_path):
    _copy_repo(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["preset"] = "tiny"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "copy"]):
        _run(cmd, tmp_path)
    _run([sys.executable, "-m", "dvc", "repro"], tmp_path)

    art = tmp_path / "artifacts"
    for family in ("bert", "xlnet"):
        assert (art / "models" / family / "config.json").exists()
        assert (art / "models_random_init" / family / "config.json").exists()
        export = json.loads((art / "onnx" / family / "export.json").read_text())
        assert export["parity"]["max_abs_diff"] <= export["atol"]
    status = _run([sys.executable, "-m", "dvc", "status"], tmp_path)
    assert "up to date" in status.stdout  # a second repro would do nothing
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], tmp_path).stdout)
    flat = json.dumps(shown)
    for key in ("mlm_accuracy", "nsp_accuracy", "plm_accuracy", "f1_macro", "confusion_matrix", "tokens_per_second"):
        assert key in flat, key
