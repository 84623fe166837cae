"""Isolated virtual environments for checks whose packages cannot live in bilm's own, built once per machine
and cached (a marker file records what was installed; a stale or half-built venv is rebuilt under a file lock,
so parallel test processes build it once).

- OPTIMUM: optimum's ONNX Runtime support (`optimum[onnxruntime]` -> optimum-onnx 0.1) pins transformers
  < 4.58, and bilm needs transformers 5. torch is installed first and on its own, as `torch==2.13.0`, so that
  resolving optimum never pulls another torch; on a machine without a local CPU wheel, point pip at the CPU
  index (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) or a CUDA torch (GBs) gets downloaded.
- MODELOPT: `nvidia-modelopt[onnx]` (the gpu extra's INT8 quantizer) requires onnxruntime-gpu, which must not
  sit next to bilm's onnxruntime. This venv sees the *active* environment's packages (those of the interpreter
  running the tests, a virtualenv included) after its own, and shadows only what modelopt brings:
  onnxruntime-gpu runs on the CPU there too. `python -m venv --system-site-packages` would not do: from inside
  a virtualenv it exposes the base interpreter's packages, not the active virtualenv's.

Both need packages from PyPI, so their tests are marked `interop` and left out of the default run:
`python -m pytest -m interop` (.ci/run runs it after the README's command).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.venvs import active_site_dirs, inherit_active_env


@dataclass(frozen=True)
class VenvSpec:
    name: str  # the cache folder: ~/.cache/bilm/<name>-venv, unless env_var says otherwise
    env_var: str
    steps: tuple[str, ...]  # `pip install` runs, in order
    check: str  # python code that must run in the finished venv
    inherit_active_env: bool = False  # see the active interpreter's packages after the venv's own
    report: tuple[str, ...] = ()  # distributions whose versions the marker records


OPTIMUM = VenvSpec("optimum", "BILM_OPTIMUM_VENV", ("torch==2.13.0", "optimum[onnxruntime]>=2.0"),
                   "import optimum.onnxruntime, optimum.exporters.onnx, tokenizers",
                   report=("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "tokenizers"))
MODELOPT = VenvSpec("modelopt", "BILM_MODELOPT_VENV", ("nvidia-modelopt[onnx]>=0.20",),  # the gpu extra's
                    "import modelopt.onnx.quantization, onnxruntime, tokenizers", inherit_active_env=True,
                    report=("nvidia-modelopt", "onnxruntime-gpu", "onnx"))
MARKER = ".bilm-venv-complete"


class VenvUnavailable(RuntimeError):
    """The venv could not be created or its packages not installed (no network, no wheel...)."""


def venv_dir(spec: VenvSpec) -> Path:
    return Path(os.environ.get(spec.env_var) or Path.home() / ".cache" / "bilm" / f"{spec.name}-venv")


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _wanted(spec: VenvSpec) -> dict:
    return {"requirements": list(spec.steps), "inherit": active_site_dirs() if spec.inherit_active_env else [],
            "python": sys.version.split()[0]}


def _marker(venv: Path) -> dict | None:
    try:
        return json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(spec: VenvSpec, venv: Path) -> bool:
    marker, wanted = _marker(venv), _wanted(spec)
    return bool(marker) and {k: marker.get(k) for k in wanted} == wanted and _python(venv).is_file()


def _run(cmd: list, timeout: float) -> None:
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VenvUnavailable(f"`{' '.join(map(str, cmd[-3:]))}` ran past {timeout:.0f} s") from None
    if proc.returncode:
        tail = [line for line in (proc.stderr or proc.stdout).splitlines()
                if line.strip() and "is ignored: it is neither a file nor a directory" not in line]
        raise VenvUnavailable(f"`{' '.join(map(str, cmd[-3:]))}` failed: {' | '.join(tail[-3:])[:500]}")


def ensure_venv(spec: VenvSpec, timeout: float = 900) -> tuple[Path, dict]:
    """Return (the venv's python, its marker), building the venv first if it is missing or stale."""
    venv = venv_dir(spec)
    if _is_complete(spec, venv):
        return _python(venv), _marker(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(spec, venv):  # another process built it while we waited
            return _python(venv), _marker(venv)
        shutil.rmtree(venv, ignore_errors=True)
        start = time.perf_counter()
        try:
            _run([sys.executable, "-m", "venv", venv], 120)
            if spec.inherit_active_env:
                inherit_active_env(venv)
            pip = [_python(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            for step in spec.steps:  # one at a time: a later step finds the earlier ones satisfied
                _run(pip + [step], timeout)
            _run([_python(venv), "-c", spec.check], 300)
        except VenvUnavailable:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        freeze = subprocess.run([_python(venv), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
        pins = [line for line in freeze.splitlines() if line.split("==")[0].lower() in spec.report]
        marker = {**_wanted(spec), "installed": pins, "setup_s": round(time.perf_counter() - start, 1),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")  # written last
        return _python(venv), marker


def skip_or_fail(name: str, message: str) -> None:
    """A check that needs the network could not get what it needs: skip with the reason, or fail where
    BILM_<NAME>_REQUIRED=1 says it must run."""
    import pytest

    if os.environ.get(f"BILM_{name.upper()}_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message + " (no network?)")


def venv_python_or_skip(spec: VenvSpec) -> Path:
    """The venv's python for a test; a skip with the reason when it cannot be built (no network), or a failure
    where BILM_<NAME>_REQUIRED=1."""
    start = time.perf_counter()
    try:
        python, marker = ensure_venv(spec)
    except VenvUnavailable as exc:
        skip_or_fail(spec.name, f"{spec.name} venv at {venv_dir(spec)} could not be built: {exc}")
    print(f"{spec.name} venv {venv_dir(spec)} ready in {time.perf_counter() - start:.1f} s (built in "
          f"{marker.get('setup_s')} s on {marker.get('created')}): {', '.join(marker.get('installed', []))}")
    return python
