"""The one owner of `--params FILE` / `--set SECTION.KEY=VALUE` (the exit path is pipeline/cli_base.py).

Every command that reads params.yaml takes these two options and calls `command_params` before it imports the
library, so that a bad key or value is one line within a second, not after the training stack's imports (about
10 s). Every command is a `pipeline.cli_base.BilmCommand` and every stage script runs in `pipeline.stage`, both of
which map a `BilmError` to one line and exit code 2 (`pipeline.errors.exit_on_user_error`). Nothing heavy at
import: click only.
"""
from __future__ import annotations

from typing import Any

import click


params_option = click.option("--params", "params_file", default="params.yaml", show_default=True,
                             help="params file (presets/ beside it)")
set_option = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="override one param, e.g. --set pretrain.max_steps=10 (repeatable)")


def command_params(params_file: str, overrides: tuple[str, ...], family: str | None = None) -> Any:
    """The checked params (with the overrides; `family`, the command's FAMILY argument, and every family key
    checked too), and logging set up for the command that runs on them."""
    from pipeline.config import load_params
    from pipeline.family_names import check_family_keys, check_family_name
    from pipeline.logs import setup_logging

    setup_logging()
    params = load_params(params_file, list(overrides))
    if family is not None:
        check_family_name(family)
    check_family_keys(params)
    return params
