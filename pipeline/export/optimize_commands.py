"""`bilm optimize`, `bilm quantize` and `bilm bench`. Nothing heavy at module level: each command imports the
library inside its function."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.params_cli import params_option, run_with_params, set_option

VARIANT_NAMES = ("fused", "int8", "int8-dynamic", "int8-static", "fp16")


def _run(onnx_dir: Path, variants: tuple[str, ...], params_file: str, overrides: tuple[str, ...],
         max_f1_drop: float | None) -> None:
    from pipeline.export.optimize import load_gate_data, load_source, optimize_onnx, summary
    from pipeline.paths import Paths

    def run(params):
        cfg = params.optimize
        if max_f1_drop is not None:
            cfg.max_f1_drop = max_f1_drop
        results = optimize_onnx(onnx_dir, list(variants) or cfg.variants, cfg, load_gate_data(Paths(), cfg))
        return summary(load_source(onnx_dir).family.name, results)

    click.echo(run_with_params(run, params_file, overrides))


_drop = click.option("--max-f1-drop", type=float, default=None,
                     help="points of validation macro-F1 a variant may lose (default: optimize.max_f1_drop)")


@click.command()
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


@click.command()
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


@click.command()
@click.option("--families", default="bert,xlnet", show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="intra-op threads, ORT and PyTorch")
@click.option("--iterations", type=int, default=10, show_default=True, help="timed calls per shape")
@click.option("--shapes", default="1x32,1x128,1x512,32x128", show_default=True, help="BATCHxSEQ list")
@click.option("--base/--no-base", default=True, help="random-weight base-shape models (the roofline targets)")
@click.option("--trained/--no-trained", default=True, help="the pipeline's models, where present")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON (default: artifacts/bench)")
def bench(families: str, threads: int, iterations: int, shapes: str, base: bool, trained: bool,
          out: Path | None) -> None:
    """Latency, throughput, roofline fraction, size and peak memory of PyTorch eager vs every ORT variant."""
    from pipeline.bench import BenchSettings, run_bench

    settings = BenchSettings(families=families.split(","), threads=threads, iterations=iterations,
                             shapes=[tuple(int(x) for x in s.split("x")) for s in shapes.split(",")],
                             base=base, trained=trained)
    click.echo(f"wrote {run_bench(settings, out)}")
