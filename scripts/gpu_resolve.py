"""The GPU install's checks, for scripts/install.sh --gpu (and its tests). Standard library only.

    python scripts/gpu_resolve.py detect              the CUDA major to install for: 12 or 13
    python scripts/gpu_resolve.py index CUDA          exit 3 with the command to run when NVIDIA's index is needed
                                                      and unreachable
    python scripts/gpu_resolve.py check REPORT CUDA   exit 3 unless `pip install --dry-run --report REPORT`
                                                      resolved to CUDA major CUDA only

Facts behind them (PyPI, checked with `pip install --dry-run --report`): torch >= 2.11 on PyPI is a CUDA 13
build (cuda-toolkit 13), <= 2.10 a CUDA 12.8 one; onnxruntime-gpu >= 1.27 is built for CUDA 13, <= 1.26 for
CUDA 12; nvidia-modelopt[onnx] 0.47 pins onnxruntime-gpu~=1.24.2 and cupy-cuda12x (CUDA 12 only); and
PyPI's tensorrt-cu12 / tensorrt-cu13 (and their -libs) are stubs that download the real wheels from NVIDIA's
index at install time, for every release.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

NVIDIA_INDEX = os.environ.get("BILM_NVIDIA_INDEX", "https://pypi.nvidia.com")
CUDA_MAJORS = (12, 13)
DEFAULT_MAJOR = 13
# a distribution name that carries its CUDA major: nvidia-cudnn-cu13, tensorrt_cu12_libs, cupy-cuda12x
_NAME_MAJOR = re.compile(r"(?:[-_]cu|^cupy-cuda)(\d{2})(?:x|$|[-_])")
# CUDA runtime/toolkit packages whose own version is the CUDA version (nvidia-cufft 12.x ships with CUDA 13)
_VERSION_IS_CUDA = {"cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "cuda-bindings"}
_REQUIRES_RUNTIME = re.compile(r"nvidia-cuda-runtime(?:-cu\d+)?\s*[~=>]=\s*(\d+)")


def package_major(metadata: dict) -> int | None:
    """The CUDA major a resolved distribution is built for, from its name, its version (CUDA runtime
    packages) or, for onnxruntime-gpu, the CUDA runtime its `cuda` extra asks for; None if it has none."""
    name = metadata["name"].lower().replace("_", "-")
    if match := _NAME_MAJOR.search(name):
        return int(match[1])
    if name in _VERSION_IS_CUDA:
        return int(metadata["version"].split(".")[0])
    if name == "onnxruntime-gpu":
        for requirement in metadata.get("requires_dist") or []:
            if match := _REQUIRES_RUNTIME.match(requirement):
                return int(match[1])
    return None


def cuda_majors(report: dict) -> dict[int, list[str]]:
    """CUDA major -> the `name==version` of each resolved distribution that pins it, from pip's report."""
    majors: dict[int, list[str]] = {}
    for item in report.get("install", []):
        metadata = item["metadata"]
        major = package_major(metadata)
        if major is not None:
            majors.setdefault(major, []).append(f"{metadata['name']}=={metadata['version']}")
    return majors


def mixed_majors(report: dict, wanted: int) -> str | None:
    """Why this resolution is not a single-CUDA-major install for `wanted`; None if it is."""
    majors = cuda_majors(report)
    others = {m: names for m, names in majors.items() if m != wanted}
    if not others:
        return None
    detail = "; ".join(f"CUDA {m}: {', '.join(sorted(names))}" for m, names in sorted(majors.items()))
    return (f"the GPU install for CUDA {wanted} would mix CUDA majors ({detail}); a CUDA library of another "
            f"major cannot be loaded next to these. Pick one major with --cuda, and leave modelopt out on CUDA 13")


def detect_major() -> int:
    """The installed torch's CUDA major if it is a CUDA build, else the driver's (nvidia-smi), else 13."""
    try:
        import torch

        if torch.version.cuda:
            return int(torch.version.cuda.split(".")[0])
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
        if match := re.search(r"CUDA Version:\s*(\d+)", out):
            return 13 if int(match[1]) >= 13 else 12
    return DEFAULT_MAJOR


def index_problem(major: int, timeout: float = 10) -> str | None:
    """TensorRT's wheels come from NVIDIA's index: why it cannot be reached, or None when it can."""
    url = f"{NVIDIA_INDEX.rstrip('/')}/tensorrt-cu{major}-libs/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(1)
        return None
    except Exception as exc:  # URLError, timeouts, TLS: all mean the install would fail half-way
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def install_command(major: int, extras: str) -> str:
    """The pip command install.sh --gpu runs for CUDA `major` with `extras`."""
    return f"python -m pip install --extra-index-url {NVIDIA_INDEX} -e \".[{extras}]\""


def main(argv: list[str]) -> int:
    if argv[:1] == ["detect"]:
        print(detect_major())
        return 0
    if len(argv) == 3 and argv[0] == "index":
        problem = index_problem(int(argv[1]))
        if problem:
            major, extras = int(argv[1]), argv[2]
            print(f"TensorRT for CUDA {major} is not on PyPI: PyPI's tensorrt-cu{major} and tensorrt-cu{major}-libs "
                  f"are stubs that fetch the real wheels from https://pypi.nvidia.com at install time, and the "
                  f"index {NVIDIA_INDEX} cannot be reached from here ({problem}). Nothing was installed. Where "
                  f"it is reachable (or mirrored: BILM_NVIDIA_INDEX=URL), `bash scripts/install.sh --gpu --cuda "
                  f"{major}` runs\n  {install_command(major, extras)}\nthen keeps onnxruntime-gpu as the only "
                  f"onnxruntime. Without TensorRT: bash scripts/install.sh --gpu --cuda {major} --no-tensorrt",
                  file=sys.stderr)
            return 3
        return 0
    if len(argv) == 3 and argv[0] == "check":
        with open(argv[1], encoding="utf-8") as fh:
            problem = mixed_majors(json.load(fh), int(argv[2]))
        if problem:
            print(f"{problem}. Nothing was installed.", file=sys.stderr)
            return 3
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
