"""`bilm optimize`, `bilm quantize` and `bilm bench`. Nothing heavy at module level: each command imports the
library inside its function."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli_base import BilmCommand
from pipeline.params_cli import command_params, params_option, set_option

VARIANT_NAMES = ("fused", "int8", "int8-dynamic", "int8-static", "fp16")


def _run(onnx_dir: Path, variants: tuple[str, ...], params_file: str, overrides: tuple[str, ...],
         max_f1_drop: float | None) -> None:
    # --max-f1-drop is an override like any --set, so the params check covers it
    drop = (f"optimize.max_f1_drop={max_f1_drop}",) if max_f1_drop is not None else ()
    cfg = command_params(params_file, overrides + drop).optimize
    from pipeline.export.optimize import load_gate_data, load_source, optimize_onnx, summary
    from pipeline.paths import Paths

    results = optimize_onnx(onnx_dir, list(variants) or cfg.variants, cfg, load_gate_data(Paths(), cfg))
    click.echo(summary(load_source(onnx_dir).family.name, results))


_drop = click.option("--max-f1-drop", type=float, default=None,
                     help="points of validation macro-F1 a variant may lose (default: optimize.max_f1_drop)")


@click.command(cls=BilmCommand)
@click.argument("onnx_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("variants", nargs=-1, type=click.Choice(VARIANT_NAMES))
@_drop
@params_option
@set_option
def optimize(onnx_dir: Path, variants: tuple[str, ...], max_f1_drop: float | None, params_file: str,
             overrides: tuple[str, ...]) -> None:
    """Build VARIANTS (default: optimize.variants) of the fp32 folder ONNX_DIR as sibling folders
    ONNX_DIR-VARIANT, each gated on validation macro-F1 against ONNX_DIR."""
    _run(onnx_dir, variants, params_file, overrides, max_f1_drop)


@click.command(cls=BilmCommand)
@click.argument("onnx_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--method", type=click.Choice(["dynamic", "static", "family"]), default="family", show_default=True,
              help="INT8 method; family: the family's choice (OnnxSpec.int8_method)")
@_drop
@params_option
@set_option
def quantize(onnx_dir: Path, method: str, max_f1_drop: float | None, params_file: str,
             overrides: tuple[str, ...]) -> None:
    """INT8 variant of the fp32 folder ONNX_DIR (ONNX_DIR-int8, or ONNX_DIR-int8-METHOD)."""
    _run(onnx_dir, ("int8",) if method == "family" else (f"int8-{method}",), params_file, overrides, max_f1_drop)


def _shape_list(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(b), int(s)) for b, s in (cell.split("x") for cell in text.split(","))]
    except ValueError:
        raise click.BadParameter(f"{text!r}: write BATCHxSEQ cells separated by commas, e.g. 1x128,64x512") from None


@click.command(cls=BilmCommand)
@click.option("--families", default="bert,xlnet", show_default=True)
@click.option("--preset", "presets", multiple=True, default=("small", "base"), show_default=True,
              help="model shapes (params.yaml presets): trained models for the active preset where exported, "
                   "else random weights of that shape")
@click.option("--threads", type=int, default=2, show_default=True, help="intra-op threads, ORT and PyTorch")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="interleaved rounds per cell (each round times every backend once)")
@click.option("--shapes", default="1x32,1x128,1x512,8x32,8x128,8x512,64x32,64x128,64x512", show_default=True,
              help="BATCHxSEQ cells for the non-base presets")
@click.option("--base-shapes", default="1x128,8x128,64x128", show_default=True,
              help="BATCHxSEQ cells for the base preset")
@click.option("--full", is_flag=True, help="the whole batch x length grid for the base preset too (slow: see README)")
@click.option("--trained/--no-trained", default=True, help="the pipeline's models, where exported")
@click.option("--profile/--no-profile", default=True, help="attention's share from ONNX Runtime's profiler")
@click.option("--ort-max-batch-tokens", type=click.IntRange(min=0), default=None,
              help="tokens per ONNX Runtime run: larger batches run as row chunks "
                   "[default: runtime.ort.CPU_MAX_BATCH_TOKENS]; 0: each batch in one run")
@click.option("--real-texts", type=click.IntRange(min=0), default=256, show_default=True,
              help="test texts per backend and round; 0: no real-text rows")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON file, or a folder to write bench.json into (default: artifacts/bench/bench.json)")
def bench(families: str, presets: tuple[str, ...], threads: int, rounds: int, shapes: str, base_shapes: str,
          full: bool, trained: bool, profile: bool, ort_max_batch_tokens: int | None, real_texts: int,
          out: Path | None) -> None:
    """PyTorch eager vs every ORT CPU variant over batch x length, interleaved, against the same-run GEMM
    roofline; the PyTorch CUDA rows where a GPU is present."""
    from pipeline.bench import GRID, BenchSettings, run_bench

    chunks = {} if ort_max_batch_tokens is None else {"ort_max_batch_tokens": ort_max_batch_tokens}  # else the default
    settings = BenchSettings(families=families.split(","), presets=list(presets), threads=threads, rounds=rounds,
                             shapes=_shape_list(shapes), base_shapes=GRID if full else _shape_list(base_shapes),
                             trained=trained, profile=profile, real_texts=real_texts, **chunks)
    if out is not None and (out.is_dir() or not out.suffix):
        out = out / "bench.json"
    click.echo(f"wrote {run_bench(settings, out)}")
