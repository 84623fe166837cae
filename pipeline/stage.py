"""The entry points of the DVC stage scripts (stages/NAME.py): one exit path, and nothing imported beyond what
the stage runs, so that the import graph of a stage script is exactly what dvc.yaml must list as deps
(tests/test_dvc.py derives it)."""
from __future__ import annotations

import sys
from typing import Any, Callable

from pipeline.config import Params, load_params
from pipeline.errors import exit_on_user_error
from pipeline.logs import setup_logging


def _run(label: str, run: Callable[[], Any]) -> None:
    setup_logging()
    with exit_on_user_error(f"{label} failed: "):
        print(run())


def family_stage(name: str, run: Callable[[str, Params], Any]) -> None:
    """`python stages/NAME.py FAMILY`: print `run(FAMILY, params)`'s summary; a user error (whose message names
    the problem and the fix) ends the stage with that one line and exit code 2, as in the CLI."""
    if len(sys.argv) != 2:
        print(f"usage: python stages/{name}.py FAMILY", file=sys.stderr)
        sys.exit(2)
    family = sys.argv[1]
    _run(f"{name}@{family}", lambda: run(family, load_params()))


def params_stage(name: str, run: Callable[[Params], Any]) -> None:
    """`python stages/NAME.py`: print `run(params)`'s summary, with the same exit path as family_stage."""
    if len(sys.argv) != 1:
        print(f"usage: python stages/{name}.py", file=sys.stderr)
        sys.exit(2)
    _run(name, lambda: run(load_params()))
