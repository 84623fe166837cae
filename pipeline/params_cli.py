"""The one owner of `--params FILE` / `--set SECTION.KEY=VALUE` (the exit path is pipeline/cli_base.py).

Every command that reads params.yaml takes these two options and calls `run_with_params`. Every command is a
`pipeline.cli_base.BilmCommand` and every stage script runs in `pipeline.stage`, both of which map a `BilmError`
to one line and exit code 2 (`pipeline.errors.exit_on_user_error`). Nothing heavy at import: click only.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

import click


params_option = click.option("--params", "params_file", default="params.yaml", show_default=True,
                             help="params file (presets/ beside it)")
set_option = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="override one param, e.g. --set pretrain.max_steps=10 (repeatable)")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def run_with_params(fn: Callable[[Any], Any], params_file: str, overrides: tuple[str, ...]) -> Any:
    """Load params (with the overrides), then return `fn(params)`."""
    from pipeline.config import load_params

    setup_logging()
    return fn(load_params(params_file, list(overrides)))
