"""`bilm export trt ONNX_DIR OUT_DIR`: TensorRT engines from an ONNX folder. Nothing heavy at import."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli_base import BilmCommand


def _triple(text: str | None, option: str) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise click.BadParameter(f"expected MIN,OPT,MAX integers (e.g. 1,8,32), got {text!r}", param_hint=option)
    return values  # type: ignore[return-value]


def _engine_config(params_file: Path, overrides: tuple[str, ...], precisions: tuple[str, ...],
                   batch: str | None, sequence: str | None, workspace_mib: int | None, typing: str | None):
    """params.yaml's `engine` section (if the file exists; else the same defaults, from EngineConfig) with the
    command line's options on top."""
    from pipeline.config import EngineConfig, EngineProfile, load_params

    cfg = load_params(params_file, list(overrides)).engine if params_file.is_file() else EngineConfig()
    cfg.precisions = list(precisions) or cfg.precisions
    b, s = _triple(batch, "--batch"), _triple(sequence, "--sequence")
    if b or s:  # one profile from the options (the other axis from the first configured profile)
        first = cfg.profiles[0] if cfg.profiles else EngineProfile()
        b = b or (first.min_batch, first.opt_batch, first.max_batch)
        s = s or (first.min_sequence, first.opt_sequence, first.max_sequence)
        cfg.profiles = [EngineProfile(*b, *s)]
    cfg.workspace_mib = workspace_mib or cfg.workspace_mib
    cfg.typing = typing or cfg.typing
    return cfg


@click.command(cls=BilmCommand, name="trt")
@click.argument("onnx_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8"]),
              help="Repeatable; default: params.yaml engine.precisions.")
@click.option("--batch", default=None, metavar="MIN,OPT,MAX", help="One profile's batch sizes.")
@click.option("--sequence", default=None, metavar="MIN,OPT,MAX", help="One profile's sequence lengths.")
@click.option("--workspace-mib", type=click.IntRange(min=1), default=None, help="Builder workspace (MiB).")
@click.option("--typing", type=click.Choice(["auto", "weak", "strong"]), default=None,
              help="weak: TensorRT 10 precision flags; strong: precision from the ONNX types (TensorRT 11).")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("artifacts/data/train.jsonl"), show_default=True, help="JSONL train texts for INT8.")
@click.option("--texts", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("artifacts/data/test.jsonl"), show_default=True, help="JSONL test texts for parity.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("params.yaml"), show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one param.")
def trt(onnx_dir: Path, out_dir: Path, precisions: tuple[str, ...], batch: str | None, sequence: str | None,
        workspace_mib: int | None, typing: str | None, calibration: Path, texts: Path, params_file: Path,
        overrides: tuple[str, ...]) -> None:
    """Build TensorRT engines from ONNX_DIR into OUT_DIR, then check parity against the fp32 ONNX model.

    Without a CUDA device or TensorRT, writes OUT_DIR/engine.json with "built": false and the reason."""
    # an EngineError or ConfigError is a user error: pipeline.cli.BilmGroup prints it and exits 2; the params
    # are checked before the builder's imports
    cfg = _engine_config(params_file, overrides, precisions, batch, sequence, workspace_mib, typing)
    from pipeline.export.tensorrt import build_engines, load_texts, summary_line, unavailable_reason

    gpu = unavailable_reason(cfg.device) is None
    summary = build_engines(onnx_dir, out_dir, cfg,
                            calibration_texts=load_texts(calibration) if gpu and "int8" in cfg.precisions else None,
                            parity_texts=load_texts(texts, limit=256) if gpu else None)
    click.echo(summary_line(summary))
    click.echo(f"wrote {out_dir}")
