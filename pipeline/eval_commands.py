"""`bilm evaluate` and `bilm report`. Nothing heavy at import: the library is imported inside the commands."""
from __future__ import annotations

import sys

import click

_params = click.option("--params", "params_file", default="params.yaml", show_default=True, help="params file")
_set = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                    help="override one param, e.g. --set evaluate.batch_size=32 (repeatable)")


def _run(fn, params_file: str, overrides: tuple[str, ...]):
    """pipeline.cli's error handling, plus the evaluation's own input errors (exit code 2, one line)."""
    from pipeline.cli import run_with_params  # here, not at import: pipeline.cli imports this module

    from pipeline.evaluate import EvaluationError

    try:
        return run_with_params(fn, params_file, overrides)
    except (EvaluationError, FileNotFoundError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.command()
@_params
@_set
def evaluate(params_file: str, overrides: tuple[str, ...]) -> None:
    """Quality, latency and statistics for every family x backend present; writes artifacts/evaluation."""
    from pipeline.evaluate import evaluate as run

    result = _run(run, params_file, overrides)
    for model, rows in result["quality"].items():
        for backend, row in rows.items():
            shown = f"accuracy {row['accuracy']:.3f}" if row.get("status") == "ok" else row.get("status")
            click.echo(f"{model}/{backend}: {shown}")


@click.command()
@_params
@_set
def report(params_file: str, overrides: tuple[str, ...]) -> None:
    """Write artifacts/report/report.md and its plots from the evaluate stage's files."""
    from pipeline.report import write_report

    click.echo(_run(lambda p: write_report(p.families), params_file, overrides))
