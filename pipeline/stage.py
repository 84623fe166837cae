"""The entry point shared by per-family DVC stage scripts that run outside the CLI."""
from __future__ import annotations

import logging
import sys
from typing import Callable


def family_stage(name: str, run: Callable[[str], str], errors: tuple[type[Exception], ...]) -> None:
    """`python stages/NAME.py FAMILY`: print `run(FAMILY)`'s summary line; an expected error (whose
    message names the problem and the fix) ends the stage with that one line instead of a traceback."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python stages/{name}.py FAMILY")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(run(sys.argv[1]))
    except errors as exc:
        sys.exit(f"{name}@{sys.argv[1]} failed: {exc}")
