"""An isolated virtual environment for the optimum cross-check, built once per machine and cached.

optimum's ONNX Runtime support (`optimum[onnxruntime]` -> optimum-onnx 0.1) pins transformers < 4.58, and
bilm needs transformers 5, so optimum cannot live in bilm's environment. This venv holds optimum with a
transformers it accepts; the test runs `optimum_check.py` with its python and reads the JSON it prints.

Location: $BILM_OPTIMUM_VENV, else ~/.cache/bilm/optimum-venv. It is re-used when its marker file records the
same requirements and python version; otherwise it is rebuilt (under a file lock, so parallel test
processes build it once). torch is installed first and on its own, as `torch==2.13.0`, so that resolving
optimum never pulls another torch; on a machine without a local CPU wheel, point pip at the CPU index
(PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) or a CUDA torch (GBs) gets downloaded.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TORCH = "torch==2.13.0"
OPTIMUM = "optimum[onnxruntime]>=2.0"  # the `interop` extra of pyproject.toml
MARKER = ".bilm-optimum-complete"


class VenvUnavailable(RuntimeError):
    """The venv could not be created or its packages not installed (no network, no wheel...)."""


def venv_dir() -> Path:
    return Path(os.environ.get("BILM_OPTIMUM_VENV") or Path.home() / ".cache" / "bilm" / "optimum-venv")


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _wanted() -> dict:
    return {"requirements": [TORCH, OPTIMUM], "python": sys.version.split()[0]}


def _marker(venv: Path) -> dict | None:
    try:
        return json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(venv: Path) -> bool:
    marker = _marker(venv)
    return bool(marker) and {k: marker.get(k) for k in _wanted()} == _wanted() and _python(venv).is_file()


def _run(cmd: list, timeout: float) -> None:
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VenvUnavailable(f"`{' '.join(map(str, cmd[-3:]))}` ran past {timeout:.0f} s") from None
    if proc.returncode:
        tail = [line for line in (proc.stderr or proc.stdout).splitlines()
                if line.strip() and "is ignored: it is neither a file nor a directory" not in line]
        raise VenvUnavailable(f"`{' '.join(map(str, cmd[-3:]))}` failed: {' | '.join(tail[-3:])[:500]}")


def ensure_venv(timeout: float = 900) -> tuple[Path, dict]:
    """Return (the venv's python, its marker), building the venv first if it is missing or stale."""
    venv = venv_dir()
    if _is_complete(venv):
        return _python(venv), _marker(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(venv):  # another process built it while we waited
            return _python(venv), _marker(venv)
        shutil.rmtree(venv, ignore_errors=True)
        start = time.perf_counter()
        try:
            _run([sys.executable, "-m", "venv", venv], 120)
            pip = [_python(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run(pip + [TORCH], timeout)  # first and alone: optimum then finds torch satisfied
            _run(pip + [OPTIMUM], timeout)
            _run([_python(venv), "-c", "import optimum.onnxruntime, optimum.exporters.onnx, tokenizers"], 300)
        except VenvUnavailable:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        freeze = subprocess.run([_python(venv), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
        pins = [line for line in freeze.splitlines() if line.split("==")[0].lower() in
                {"torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "tokenizers"}]
        marker = {**_wanted(), "installed": pins, "setup_s": round(time.perf_counter() - start, 1),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")  # written last
        return _python(venv), marker
