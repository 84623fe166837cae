"""`bilm evaluate` and `bilm report`. Nothing heavy at import: the library is imported inside the commands."""
from __future__ import annotations

import click

from pipeline.cli_base import BilmCommand
from pipeline.params_cli import params_option, run_with_params, set_option


@click.command(cls=BilmCommand)
@params_option
@set_option
def evaluate(params_file: str, overrides: tuple[str, ...]) -> None:
    """Quality, latency and statistics for every family x backend present; writes artifacts/evaluation."""
    from pipeline.evaluate import evaluate as run, summary_text

    click.echo(summary_text(run_with_params(run, params_file, overrides)))


@click.command(cls=BilmCommand)
@params_option
@set_option
def report(params_file: str, overrides: tuple[str, ...]) -> None:
    """Write artifacts/report/report.md and its plots from the evaluate stage's files."""
    from pipeline.report import write_report

    click.echo(run_with_params(lambda p: write_report(p.families), params_file, overrides))
