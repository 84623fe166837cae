"""`bilm export onnx` and `bilm predict`.

Nothing heavy at module level: `bilm predict` must run where torch and transformers are not installed, so
the export command imports the exporter inside its function and `predict` imports only the ONNX Runtime
predictor.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli_base import BilmCommand, BilmGroup

PROVIDER_NAMES = ("cpu", "cuda", "tensorrt")


@click.group(name="export", cls=BilmGroup)
def export() -> None:
    """Export fine-tuned models for inference."""


@export.command(name="onnx")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the family's).")
@click.option("--atol", type=float, default=None, help="Max abs logit diff allowed in parity (default: the family's).")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default=None,
              help="torch.onnx exporter (default: the family's).")
@click.option("--texts", "texts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSONL (a \"text\" field) of real texts for the parity check; default: built-in samples.")
def export_onnx_command(model_dir: Path, out_dir: Path, opset: int | None, atol: float | None,
                        exporter: str | None, texts_file: Path | None) -> None:
    """Export MODEL_DIR (a fine-tuned classifier folder) to the ONNX folder OUT_DIR, then check parity."""
    from pipeline.export.onnx import export_onnx, export_summary, load_parity_texts

    info = export_onnx(model_dir, out_dir, opset=opset, atol=atol, exporter=exporter,
                       texts=load_parity_texts(texts_file) if texts_file else None)
    click.echo(export_summary(info))
    click.echo(f"wrote {out_dir}")


def _read_items(texts: tuple[str, ...], file: Path | None, text_field: str):
    from pipeline.runtime.inputs import items_from_jsonl, items_from_lines, items_from_texts

    if texts and file:
        raise click.UsageError("give texts as arguments or --file, not both")
    if texts:
        return items_from_texts(texts)
    if file:
        with file.open(encoding="utf-8") as fh:
            return items_from_jsonl(fh, text_field) if file.suffix == ".jsonl" else items_from_lines(fh)
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        raise click.UsageError("no input: give TEXTS, --file FILE, or JSONL lines on stdin")
    return items_from_jsonl(stdin, text_field)


def _print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("input", "label", "score", "probabilities")
    for r in results:
        if "error" in r:
            table.add_row(r["source"], "[red]error[/red]", "", r["error"])
        else:
            probs = ", ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items())
            table.add_row(r["source"], r["label"] + (" (truncated)" if r["truncated"] else ""),
                          f"{r['score']:.3f}", probs)
    Console().print(table)


@click.command(cls=BilmCommand)
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A .jsonl file (one object per line) or a text file (one text per line).")
@click.option("--field", "text_field", default="text", show_default=True, help="The text field of JSONL input.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--provider", type=click.Choice(PROVIDER_NAMES), default="cpu", show_default=True,
              help="ONNX Runtime execution provider; cuda and tensorrt need onnxruntime-gpu.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
def predict(model_dir: Path, texts: tuple[str, ...], file: Path | None, text_field: str, batch_size: int,
            provider: str, fmt: str) -> None:
    """Classify TEXTS (or --file, or JSONL on stdin) with the ONNX folder MODEL_DIR.

    Prints label, score and per-label probabilities for each input. An input that cannot be classified
    (empty, bad JSON, no text field) gets an error entry and the others go on; the exit status is then 1.
    A folder or provider that cannot be used stops it before any input is read (exit status 2).
    """
    from pipeline.runtime import OrtPredictor, classify_items

    items = _read_items(texts, file, text_field)
    results = classify_items(OrtPredictor(model_dir, provider=provider), items, batch_size=batch_size)
    if fmt == "table":
        _print_table(results)
    else:
        for r in results:
            click.echo(json.dumps(r, ensure_ascii=False))
    failed = [r for r in results if "error" in r]
    for r in failed:
        click.echo(f"{r['source']}: {r['error']}", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(results)} inputs failed", err=True)
        sys.exit(1)


def _attach_trt() -> None:
    """`bilm export trt`: its module imports only click at load time (tensorrt, torch inside the command)."""
    from pipeline.export.trt_commands import trt

    export.add_command(trt)
    from pipeline.serve.commands import export_triton  # `bilm export triton`: click only at import
    export.add_command(export_triton)


_attach_trt()
