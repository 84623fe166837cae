"""`bilm evaluate` and `bilm report`. Nothing heavy at import: the library is imported inside the commands."""
from __future__ import annotations

import click

from pipeline.cli_base import BilmCommand
from pipeline.params_cli import command_params, params_option, set_option


@click.command(cls=BilmCommand)
@params_option
@set_option
def evaluate(params_file: str, overrides: tuple[str, ...]) -> None:
    """Quality, latency and statistics for every family x backend present; writes artifacts/evaluation."""
    params = command_params(params_file, overrides)
    from pipeline.evaluate import evaluate as run, summary_text

    click.echo(summary_text(run(params)))


@click.command(cls=BilmCommand)
@params_option
@set_option
def report(params_file: str, overrides: tuple[str, ...]) -> None:
    """Write artifacts/report/report.md and its plots from the evaluate stage's files."""
    params = command_params(params_file, overrides)
    from pipeline.report import write_report

    click.echo(write_report(params.families))
