"""A small Python environment for Triton's Python-backend stub, with numpy 1: `python -m pipeline.serve.stubenv`.

The stub that PyTriton 0.7 ships is built against numpy 1 and misreads numpy 2 arrays (its strides come out
0: a text arrives as one byte repeated). PyTriton therefore pins numpy<2, but this project needs numpy 2
(pandas 3, pyarrow). The stub is a separate process that finds its interpreter through PATH (`python3`) and
its packages through that interpreter's pyvenv.cfg, so bilm points it at this venv: numpy<2 and pyzmq (all the
stub's PyTriton code imports) ahead of the base interpreter's packages. bilm's own process keeps numpy 2.

Made once per machine (it needs pip and an index); `BILM_PYTRITON_STUB_ENV` moves it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.serve.contract import ServeError
from pipeline.venvs import inherit_active_env, inherits_active_env

STUB_REQUIREMENTS = ["numpy>=1.21,<2", "pyzmq>=23"]
CREATE = "python -m pipeline.serve.stubenv"


def stub_env() -> Path:
    return Path(os.environ.get("BILM_PYTRITON_STUB_ENV", Path.home() / ".cache" / "bilm" / "pytriton-stub-env"))


def stub_env_problem(env: Path | None = None) -> str | None:
    """Why the stub environment cannot serve (with the fix), or None when it has numpy 1 for this Python."""
    env = env or stub_env()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    numpy = list((env / "lib" / version / "site-packages").glob("numpy-1.*.dist-info"))
    if not (env / "bin" / "python3").exists() or not numpy:
        return (f"numpy {_numpy_version()} is installed, and the Triton Python-backend stub that PyTriton ships "
                f"garbles numpy 2 arrays; it runs in its own environment with numpy 1, which {env} does not hold "
                f"for {version} yet: create it once with `{CREATE}`")
    if not inherits_active_env(env / "lib" / version / "site-packages"):
        return (f"the Triton Python-backend stub environment {env} was made for another Python environment than "
                f"this one ({sys.prefix}); make it again with `{CREATE}`")
    return None


def _numpy_version() -> str:
    import numpy as np

    return np.__version__


def create(env: Path | None = None) -> Path:
    """A venv of this interpreter with numpy<2 and pyzmq ahead of its site-packages (made with pip; replaces an
    unusable one)."""
    env = env or stub_env()
    # the active environment's packages too (after numpy 1): a repository's Python models (bilm export triton)
    # import tokenizers and onnxruntime, also where bilm runs in a virtualenv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
    inherit_active_env(env)
    done = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *STUB_REQUIREMENTS])
    if done.returncode != 0:
        raise ServeError(f"pip could not install {STUB_REQUIREMENTS} into {env} (no package index reachable?)")
    return env


if __name__ == "__main__":
    from pipeline.errors import exit_on_user_error

    with exit_on_user_error():
        print(f"stub environment ready: {create()}")
