"""The GPU install: one CUDA major across torch, onnxruntime-gpu, TensorRT and modelopt, checked on pip's own
resolution (`pip install --dry-run --report`, which reads PyPI's metadata and downloads no GPU wheel), and
`install.sh --gpu` stopping before it installs anything when NVIDIA's index is out of reach."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from interop.venvs import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_resolve  # noqa: E402


def _item(name: str, version: str, requires: list[str] | None = None) -> dict:
    return {"metadata": {"name": name, "version": version, "requires_dist": requires or []}}


def test_cuda_major_of_each_resolved_distribution():
    """Names as pip resolved them for torch 2.14.1, onnxruntime-gpu 1.31.1 / 1.24.4 and modelopt 0.47's
    cupy: library versions that are not the CUDA version (nvidia-cufft 12.0 ships with CUDA 13) count for
    nothing."""
    report = {"install": [
        _item("torch", "2.14.1"), _item("cuda-toolkit", "13.0.3.0"), _item("nvidia-cudnn-cu13", "9.24.0.43"),
        _item("nvidia-cufft", "12.0.0.61"), _item("nvidia-cuda-runtime", "13.0.96"),
        _item("onnxruntime-gpu", "1.31.1", ['nvidia-cuda-runtime~=13.0; extra == "cuda"']),
        _item("tensorrt_cu13_libs", "10.16.1.11"), _item("polygraphy", "0.53.6")]}
    assert gpu_resolve.cuda_majors(report) == {13: [
        "cuda-toolkit==13.0.3.0", "nvidia-cudnn-cu13==9.24.0.43", "nvidia-cuda-runtime==13.0.96",
        "onnxruntime-gpu==1.31.1", "tensorrt_cu13_libs==10.16.1.11"]}
    assert gpu_resolve.mixed_majors(report, 13) is None
    report["install"] += [_item("onnxruntime-gpu", "1.24.4", ['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"']),
                          _item("cupy-cuda12x", "14.2.0")]
    problem = gpu_resolve.mixed_majors(report, 13)
    assert "CUDA 12: cupy-cuda12x==14.2.0, onnxruntime-gpu==1.24.4" in problem and "--cuda" in problem


def test_install_gpu_stops_before_installing_anything_without_nvidias_index():
    freeze = [sys.executable, "-m", "pip", "freeze"]
    before = subprocess.run(freeze, capture_output=True, text=True).stdout
    env = {**os.environ, "BILM_NVIDIA_INDEX": "https://nvidia-index.invalid"}  # a name that never resolves
    done = subprocess.run(["bash", str(REPO / "scripts/install.sh"), "--gpu", "--cuda", "13"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "https://nvidia-index.invalid cannot be reached" in done.stderr and "Nothing was installed" in done.stderr
    assert ('python -m pip install --extra-index-url https://nvidia-index.invalid -e ".[dev,gpu-cu13,tensorrt-cu13]"'
            in done.stderr)
    assert subprocess.run(freeze, capture_output=True, text=True).stdout == before


def _resolve(extras: str, tmp_path: Path, index: str | None = None) -> dict:
    """pip's resolution of bilm with `extras` for this Python on Linux x86-64, ignoring what is installed."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
           str(report), f"{REPO}[{extras}]", *(["--extra-index-url", index] if index else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode:
        skip_or_fail("gpu_resolve", f"pip could not resolve .[{extras}]: {done.stderr.strip()[-600:]}")
    return json.loads(report.read_text())


@pytest.mark.interop
@pytest.mark.parametrize("extras, major", [("gpu-cu13", 13), ("gpu-cu12", 12), ("gpu-cu12,modelopt", 12)])
def test_gpu_extras_resolve_to_one_cuda_major(extras, major, tmp_path):
    majors = gpu_resolve.cuda_majors(_resolve(extras, tmp_path))
    assert set(majors) == {major}, majors
    names = " ".join(n for found in majors.values() for n in found)
    assert "onnxruntime-gpu==" in names  # the GPU runtime itself is among what pins the major


@pytest.mark.interop
def test_modelopt_cannot_join_the_cuda_13_install(tmp_path):
    """Why modelopt has its own extra: every nvidia-modelopt[onnx] release pins a CUDA 12 onnxruntime-gpu
    (0.47: ~=1.24.2), so pip finds no resolution with the CUDA 13 set rather than a mixed one."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           f"{REPO}[gpu-cu13,modelopt]"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if "ResolutionImpossible" not in done.stderr:
        skip_or_fail("gpu_resolve", f"pip did not get to a resolution: {done.stderr.strip()[-600:]}")
    assert done.returncode != 0 and "nvidia-modelopt" in done.stderr


@pytest.mark.interop
@pytest.mark.parametrize("major", [13, 12])
def test_tensorrt_extra_resolves_to_the_same_major_from_nvidias_index(major, tmp_path):
    problem = gpu_resolve.index_problem(major)
    if problem:
        skip_or_fail("nvidia_index", f"{gpu_resolve.NVIDIA_INDEX} unreachable ({problem})")
    report = _resolve(f"gpu-cu{major},tensorrt-cu{major}", tmp_path, index=gpu_resolve.NVIDIA_INDEX)
    assert set(gpu_resolve.cuda_majors(report)) == {major}
