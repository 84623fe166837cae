"""evaluate: every family x backend present on this machine, through the one Predictor interface.

For each row: accuracy, precision/recall/F1 (per class and macro), confusion matrix, ROC-AUC, agreement with
the family's PyTorch predictions, size on disk, and latency (model time only, tokenizing excluded): p50/p90/p99
at batch 1 and throughput at `evaluate.batch_size`, on real test texts and at fixed lengths, each series timed
interleaved over the family's backends (round by round, so a machine's drift hits all alike). Then the paired
statistics (pipeline/stats.py): BERT vs XLNet, and every backend vs its fp32 ONNX source.

Backends are discovered from the artifacts: a folder or engine that is missing, or was skipped by its own
stage, or needs a runtime this machine lacks, becomes a row "skipped: <reason>", never a crash.
Outputs (artifacts/evaluation): quality.json, latency.json, stats.json (DVC metrics), environment.json, and
plot data under plots/ (DVC plots; the report draws the same data as PNGs).
"""
from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import EvaluateConfig, Params
from pipeline.io import read_json, read_jsonl, write_json
from pipeline.metrics import prediction_rows
from pipeline.paths import Paths
from pipeline.latency import cpu_model, fixed_batch, long_text, real_batches, time_feeds
from pipeline.runtime.base import Predictor
from pipeline.runtime.text import Encoded
from pipeline.runtime.timing import interleaved
from pipeline.scoring import EvaluationError, TestSplit, read_test, score_predictor

log = logging.getLogger(__name__)

# backend name -> (ONNX variant folder, ORT provider); the fp16 graph is for GPU providers only
ORT_BACKENDS = {"ort-fp32": ("fp32", "cpu"), "ort-fused": ("fused", "cpu"), "ort-int8": ("int8", "cpu"),
                "ort-fp16": ("fp16", "cuda")}
TRT_PRECISIONS = ("fp16", "int8")
REFERENCE = "pytorch"  # agreement is measured against the family's PyTorch predictions
SOURCE = "ort-fp32"  # every other backend is tested against its fp32 ONNX source
BASELINE = "tfidf-baseline"


@dataclass
class Backend:
    model: str  # row name: "bert", or "bert-random-init" for the no-pretraining ablation
    family: str
    name: str  # "pytorch", "ort-int8", "trt-fp16", ...
    folder: Path  # what is loaded; its size on disk is reported
    load: Callable[[], Predictor] | None = None
    skip: str | None = None  # why this row cannot run here
    max_batch: int | None = None  # TensorRT profile limits, from engine.json
    max_seq: int | None = None
    timed: bool = True  # False: quality only (the ablation runs exactly as fast as its family's PyTorch row)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.name}"


@dataclass
class Row:
    backend: Backend
    status: str = "ok"
    quality: dict = field(default_factory=dict)
    latency: dict | None = None
    predicted: np.ndarray | None = None  # [n] predicted label names, in test-split order
    probabilities: np.ndarray | None = None  # [n, num_labels]


# --- discovery -----------------------------------------------------------------------------------------
def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def torch_backend(model: str, family: str, folder: Path, cfg: EvaluateConfig, stage: str,
                  timed: bool = True, variant=None) -> Backend:
    """The PyTorch row (cfg.torch_device, fp32), or with `variant` (a torch_backend.TorchVariant) a CUDA row,
    skipped with the reason where torch sees no CUDA device."""
    backend = Backend(model, family, variant.name if variant else "pytorch", folder, timed=timed)
    if not (folder / "config.json").is_file():
        backend.skip = f"folder missing: {folder} (run `dvc repro {stage}`)"
        return backend
    if variant is not None:
        from pipeline.runtime.torch_backend import cuda_missing

        backend.skip = cuda_missing()

    def load() -> Predictor:
        from pipeline.runtime.torch_backend import TorchPredictor  # torch only where PyTorch rows run

        if variant is None:
            return TorchPredictor(folder, device=cfg.torch_device, threads=cfg.threads)
        return TorchPredictor(folder, device=variant.device, dtype=variant.dtype, compile=variant.compile)

    backend.load = load
    return backend


def ort_backend(family: str, name: str, folder: Path, provider: str, cfg: EvaluateConfig) -> Backend:
    from pipeline.runtime.ort import OrtPredictor, missing_provider

    backend = Backend(family, family, name, folder)
    stage = f"export@{family}" if folder.name == family else f"optimize@{family}"
    if missing := missing_provider(provider):  # first: on a CPU machine the GPU rows' real reason is the runtime
        backend.skip = missing
    elif not (folder / "model.onnx").is_file():
        backend.skip = f"folder missing: {folder} (run `dvc repro {stage}`)"
    else:
        # spinning only while a run lasts: the family's ORT sessions are timed in turn in this process, and a pool
        # that kept spinning after its run would slow the next one (BERT small int8 at 1 x 128: 5.4 ms beside two
        # spinning sessions, 1.5 ms without). PyTorch keeps OpenMP's default: runtime.timing.SETTLE_S
        backend.load = lambda: OrtPredictor(folder, provider=provider, threads=cfg.threads, spinning="run")
    return backend


def discover(family: str, paths: Paths, cfg: EvaluateConfig) -> list[Backend]:
    """Every backend row of one family, runnable or with the reason it is skipped (checked before any run)."""
    from pipeline.runtime.torch_backend import CUDA_VARIANTS

    rows = [torch_backend(family, family, paths.model(family), cfg, f"finetune@{family}", variant=v)
            for v in (None, *CUDA_VARIANTS)]
    rows += [ort_backend(family, name, paths.onnx(family, variant), provider, cfg)
             for name, (variant, provider) in ORT_BACKENDS.items()]
    known = {paths.onnx(family, variant) for variant, _ in ORT_BACKENDS.values()}
    extra = sorted(p.parent for p in paths.onnx(family).parent.glob(f"{family}-*/model.onnx") if p.parent not in known)
    rows += [ort_backend(family, f"ort-{p.name[len(family) + 1:]}", p, "cuda" if "fp16" in p.name else "cpu", cfg)
             for p in extra]  # further variants the optimize stage wrote (int8-static, int8-dynamic, ...)
    rows += trt_backends(family, paths, cfg)
    rows.append(ort_backend(family, "ort-trt-ep", paths.onnx(family), "tensorrt", cfg))
    rows.append(torch_backend(f"{family}-random-init", family, paths.model(family, ablation=True), cfg,
                              f"ablation@{family}", timed=False))
    return rows


# --- TensorRT engines ------------------------------------------------------------------------------------
# The engine stage writes artifacts/engines/FAMILY/engine.json (the family summary: "built", or false and the
# "reason") and, per built precision, FAMILY/PRECISION/engine.json with its "profiles":
# [{"batch": [min, opt, max], "sequence": [min, opt, max]}, ...] next to the engine and the tokenizer files.
def profile_limits(info: dict) -> tuple[int | None, int | None]:
    """(largest batch, largest sequence) any of the engine's optimization profiles accepts; None if unknown."""
    shapes = []
    for profile in info.get("profiles") or []:
        if isinstance(profile, dict) and "batch" in profile:
            shapes.append((max(profile["batch"]), max(profile.get("sequence") or [0])))
        elif isinstance(profile, dict) and "max" in profile:  # {"min": [b, s], "opt": [b, s], "max": [b, s]}
            shapes.append((profile["max"][0], profile["max"][1] if len(profile["max"]) > 1 else 0))
    if not shapes:
        return None, None
    return max(b for b, _ in shapes), (max(s for _, s in shapes) or None)


def check_batch_size(batch_size: int, max_batch: int | None, where: Path) -> None:
    if max_batch is not None and batch_size > max_batch:
        raise EvaluationError(
            f"evaluate.batch_size={batch_size} is larger than the TensorRT engine at {where} allows (its "
            f"optimization profiles' max batch is {max_batch}); set evaluate.batch_size to {max_batch} or less, "
            f"or rebuild the engine with a larger max_batch in engine.profiles")


def engine_entries(root: Path) -> list[tuple[str, Path, dict]]:
    """(precision, folder, engine.json record) for each precision the family's engine stage covered."""
    summary_path = root / "engine.json"
    if not summary_path.is_file():
        return []
    summary = read_json(summary_path)
    if not summary.get("built", False):
        return [(p, root, summary) for p in summary.get("precisions") or TRT_PRECISIONS]
    entries = [(read_json(f).get("precision") or f.parent.name, f.parent, read_json(f))
               for f in sorted(root.glob("*/engine.json"))]
    found = {p for p, _, _ in entries}
    missing = [p for p in list(summary.get("engines") or {}) + list(summary.get("precisions") or []) if p not in found]
    return entries + [(p, root, {"built": False, "reason": f"no {root / p}/engine.json"})
                      for p in dict.fromkeys(missing)]


def _load_trt(folder: Path) -> Predictor:
    from pipeline.runtime.trt import TrtPredictor  # lazily: only when an engine was built

    return TrtPredictor(folder)


def trt_backends(family: str, paths: Paths, cfg: EvaluateConfig) -> list[Backend]:
    root = paths.engines(family)
    entries = engine_entries(root)
    if not entries:
        reason = f"no engine: {root}/engine.json missing (run `dvc repro engine@{family}`)"
        return [Backend(family, family, f"trt-{p}", root, skip=reason) for p in TRT_PRECISIONS]
    rows = []
    for precision, folder, info in entries:
        row = Backend(family, family, f"trt-{precision}", folder)
        if not info.get("built", False):
            row.skip = f"engine not built: {info.get('reason') or 'engine.json gives no reason'}"
        else:
            row.max_batch, row.max_seq = profile_limits(info)
            check_batch_size(cfg.batch_size, row.max_batch, folder)  # before any backend runs
            row.load = lambda f=folder: _load_trt(f)
        rows.append(row)
    return rows


# --- running one backend ---------------------------------------------------------------------------------
def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def folder_init(folder: Path) -> dict[str, str]:
    """{"init": what fine-tuning started from} as the folder's bilm.json records it ("random", "pretrained",
    a checkpoint source; export and optimize copy that file, so ONNX rows carry it too), or {} where the folder
    has none."""
    record = folder / "bilm.json"
    init = read_json(record).get("init") if record.is_file() else None
    return {"init": str(init)} if init else {}


def _summary(ms: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean()),
            "calls": int(len(ms))}


def _ms(seconds: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {k: np.array(t) * 1e3 for k, t in seconds.items()}


def latency_real(predictors: dict[str, Predictor], encoded: dict[str, list[Encoded]], cfg: EvaluateConfig) -> dict:
    """{backend: batch-1 p50/p90/p99 over up to `latency_texts` real texts (each round: the same text through
    every backend; time-bounded), and throughput over the batches `classify` forms from `throughput_texts`
    (median of `throughput_rounds` interleaved passes)}."""
    n = min(cfg.latency_texts, *(len(enc) for enc in encoded.values()))
    singles = {k: [predictors[k].encoder.pad([e]) for e in enc[:n]] for k, enc in encoded.items()}
    for k, p in predictors.items():  # warm-up on the first text, which is then timed like the others
        for _ in range(cfg.latency_warmup):
            p.predict_logits(singles[k][0])
    calls = {k: (lambda p=p, it=iter(singles[k]): p.predict_logits(next(it))) for k, p in predictors.items()}
    settlers = {k: (lambda p=p, first=singles[k][0]: p.predict_logits(first)) for k, p in predictors.items()}
    one = _ms(interleaved(calls, n, 0, {k: p.clock for k, p in predictors.items()}, cfg.latency_budget_s,
                          settlers=settlers))
    passes = {k: real_batches(p, encoded[k][: cfg.throughput_texts], cfg.batch_size) for k, p in predictors.items()}
    full = _ms(time_feeds(predictors, passes, cfg.throughput_rounds, 1))
    out = {}
    for k, ms in one.items():
        texts = len(encoded[k][: cfg.throughput_texts])
        out[k] = {**_summary(ms), "mean_tokens": float(np.mean([len(e.ids) for e in encoded[k][: len(ms)]])),
                  "throughput_per_s": texts / (float(np.median(full[k])) / 1e3),
                  "throughput_batch_size": cfg.batch_size}
    return out


def fixed_cell(predictors: dict[str, Predictor], long_texts: dict[str, Encoded], batch: int, length: int,
               cfg: EvaluateConfig) -> dict[str, np.ndarray]:
    """Milliseconds per call of each backend at `batch` x `length`, interleaved, after `fixed_warmup` calls:
    ONNX Runtime's second run at a shape larger than any before still grows its memory arena (at BERT small
    64 x 512 it took 2x the steady time), so one warm-up call is not enough."""
    feeds = {k: fixed_batch(p, long_texts[k], batch, length) for k, p in predictors.items()}
    rounds = cfg.fixed_iterations if batch == 1 else cfg.fixed_throughput_batches
    return _ms(time_feeds(predictors, feeds, rounds, cfg.fixed_warmup, cfg.fixed_budget_s))


def latency_fixed(predictors: dict[str, Predictor], long_texts: dict[str, Encoded],
                  limits: dict[str, tuple[int | None, int | None]], cfg: EvaluateConfig) -> dict:
    """{backend: {length: p50/p90/p99 at batch 1 and, per batch size of `fixed_batch_sizes` with batch x length
    <= `fixed_max_tokens`, throughput ("batches"; the largest also at the top level)}} for each fixed length
    that fits the model (and an engine profile's `limits`: max_seq, max_batch). Every cell is interleaved over
    the backends that fit it."""
    out: dict[str, dict] = {k: {} for k in predictors}
    for length in cfg.fixed_lengths:
        fit = {k: p for k, p in predictors.items() if length <= min(len(long_texts[k].ids), limits[k][0] or length)}
        sizes = sorted({1, *(b for b in cfg.fixed_batch_sizes if b * length <= cfg.fixed_max_tokens)})
        for batch in sizes:
            here = {k: p for k, p in fit.items() if batch <= (limits[k][1] or batch)}
            for k, ms in (fixed_cell(here, long_texts, batch, length, cfg) if here else {}).items():
                row = out[k].setdefault(str(length), _summary(ms) if batch == 1 else {})
                if batch in cfg.fixed_batch_sizes:  # throughput from the median call: one slow call moves nothing
                    row.setdefault("batches", {})[str(batch)] = {
                        "p50_ms": float(np.median(ms)), "calls": len(ms),
                        "throughput_per_s": float(batch / (np.median(ms) / 1e3))}
    for rows in out.values():
        for row in rows.values():
            if batches := row.get("batches"):
                largest = max(batches, key=int)
                row.update(throughput_per_s=batches[largest]["throughput_per_s"], throughput_batch_size=int(largest))
    return out


def measure_latency(predictors: dict[str, Predictor], limits: dict[str, tuple[int | None, int | None]],
                    texts: list[str], cfg: EvaluateConfig) -> dict[str, dict]:
    """{backend: {"real": ..., "fixed": ...}}, every series interleaved over the backends (one family's)."""
    order = np.random.default_rng(cfg.seed).permutation(len(texts))  # the same texts for every backend
    encoded = {k: p.encoder.encode([texts[i] for i in order]) for k, p in predictors.items()}
    # one long real text (test reviews joined), cut to each fixed length; truncated at the model's max length
    long_texts = {k: long_text(p, [texts[i] for i in order]) for k, p in predictors.items()}
    real = latency_real(predictors, encoded, cfg)
    fixed = latency_fixed(predictors, long_texts, limits, cfg)
    return {k: {"real": real[k], "fixed": fixed[k]} for k in predictors}


def score_backend(backend: Backend, test: TestSplit, cfg: EvaluateConfig) -> tuple[Row, Predictor | None]:
    """The row's quality, and its loaded predictor where the row is to be timed (None: skipped or untimed)."""
    if backend.skip:
        return Row(backend, status=f"skipped: {backend.skip}"), None
    try:
        predictor = backend.load()
    except Exception as exc:  # an installed-but-unusable runtime (no CUDA libraries, ...) is a skip, not a crash
        log.warning("%s: could not load: %s", backend.key, exc)
        return Row(backend, status=f"skipped: could not load ({_short(exc)})"), None
    quality, predicted, probs = score_predictor(predictor, test, cfg.batch_size, str(backend.folder))
    quality.update(size_mb=folder_size_mb(backend.folder), **folder_init(backend.folder))
    names = np.array([str(predictor.id2label[int(k)]) for k in predicted])
    row = Row(backend, quality=quality, predicted=names, probabilities=probs)
    return row, predictor if backend.timed else None


def run_backends(backends: list[Backend], test: TestSplit, cfg: EvaluateConfig, progress=None) -> list[Row]:
    """Rows for one family's backends: each scored in turn, then every timed one's latency, interleaved."""
    rows, timed, timed_rows = [], {}, {}
    for backend in backends:
        log.info("%s: %s", backend.key, f"skipped: {backend.skip}" if backend.skip else "running")
        row, predictor = score_backend(backend, test, cfg)
        rows.append(row)
        if predictor is not None:
            timed[backend.key], timed_rows[backend.key] = predictor, row
        if progress:
            progress()
    if timed:
        log.info("timing %s, interleaved", ", ".join(timed))
        limits = {k: (r.backend.max_seq, r.backend.max_batch) for k, r in timed_rows.items()}
        for key, latency in measure_latency(timed, limits, test.texts, cfg).items():
            timed_rows[key].latency = latency
    return rows


def run_backend(backend: Backend, test: TestSplit, cfg: EvaluateConfig) -> Row:
    return run_backends([backend], test, cfg)[0]


# --- agreement, baseline, statistics -------------------------------------------------------------------
def add_agreement(rows: list[Row]) -> None:
    """Share of test texts where each row predicts the same label as its family's PyTorch model."""
    reference = {r.backend.family: r.predicted for r in rows
                 if r.status == "ok" and r.backend.name == REFERENCE and r.backend.model == r.backend.family}
    for row in rows:
        ref = reference.get(row.backend.family)
        if row.status == "ok" and ref is not None:
            row.quality["agreement_with_pytorch"] = float(np.mean(row.predicted == ref))


def baseline_row(paths: Paths) -> dict:
    path = paths.metrics("baseline") / "test.json"
    if not path.is_file():
        return {"status": f"skipped: {path} missing (run `dvc repro baseline`)"}
    return {"status": "ok", **read_json(path)}


def baseline_predictions(paths: Paths) -> list[str] | None:
    """The TF-IDF baseline's predicted label per test text (test-split order), where its stage kept them."""
    path = paths.metrics("baseline") / "predictions.jsonl"
    return [str(row["predicted"]) for row in read_jsonl(path)] if path.is_file() else None


def _stat_kwargs(cfg: EvaluateConfig) -> dict:
    return {"samples": cfg.bootstrap_samples, "seed": cfg.seed, "confidence": cfg.confidence,
            "exact_below": cfg.mcnemar_exact_below}


def statistics(rows: list[Row], test: TestSplit, families: list[str], cfg: EvaluateConfig,
               baseline_predicted: list[str] | None = None) -> dict:
    """Paired statistics on the test split: family vs family (their PyTorch rows: the models themselves), each
    family vs its random-init ablation and vs the TF-IDF baseline (its per-text predictions, where the
    baseline stage kept them), and each backend vs its fp32 ONNX source."""
    from pipeline.stats import compare

    labels = sorted(set(test.labels))
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index[label] for label in test.labels])
    ok = {(r.backend.model, r.backend.name): np.array([index[p] for p in r.predicted])
          for r in rows if r.status == "ok"}
    if baseline_predicted is not None and len(baseline_predicted) == len(test.labels):
        ok[(BASELINE, "sklearn")] = np.array([index[p] for p in baseline_predicted])
    ids = list(range(len(labels)))

    def pair(a: tuple[str, str], b: tuple[str, str]) -> dict:
        if a not in ok or b not in ok:
            missing = " and ".join("/".join(k) for k in (a, b) if k not in ok)
            return {"status": f"skipped: {missing} not evaluated"}
        return {"status": "ok", **compare(y_true, ok[a], ok[b], ids, **_stat_kwargs(cfg))}

    out: dict = {f"{a}_vs_{b}": pair((a, REFERENCE), (b, REFERENCE)) for a, b in combinations(families, 2)}
    for f in families:
        out[f"{f}_vs_{f}-random-init"] = pair((f, REFERENCE), (f"{f}-random-init", REFERENCE))
        out[f"{f}_vs_{BASELINE}"] = pair((f, REFERENCE), (BASELINE, "sklearn"))
    out["vs_onnx_fp32"] = {f: {r.backend.name: pair((f, r.backend.name), (f, SOURCE)) for r in rows
                               if r.backend.model == f and r.backend.name != SOURCE and r.status == "ok"}
                           for f in families}
    out["settings"] = {"bootstrap_samples": cfg.bootstrap_samples, "confidence": cfg.confidence,
                       "seed": cfg.seed, "mcnemar_exact_below": cfg.mcnemar_exact_below}
    return out


# --- environment and outputs ---------------------------------------------------------------------------
def environment(cfg: EvaluateConfig) -> dict:
    """Where the latency was measured: CPU/GPU model, cores, threads, library versions."""
    import os
    import platform
    from importlib import metadata

    import onnxruntime as ort
    import torch

    versions = {}
    for dist in ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy", "scikit-learn",
                 "tokenizers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": cfg.threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions,
            "onnxruntime_providers": ort.get_available_providers(), "torch_device": cfg.torch_device}


def _file_name(backend: Backend) -> str:
    return f"{backend.model}--{backend.name}.json"


def plot_data(rows: list[Row], test: TestSplit) -> dict[str, object]:
    """Relative path under plots/ -> JSON rows, in the shapes DVC's templates read."""
    files: dict[str, object] = {}
    timed = [r for r in rows if r.status == "ok" and r.latency]
    files["pareto.json"] = [{"point": r.backend.key, "model": r.backend.model, "backend": r.backend.name,
                             "accuracy": r.quality["accuracy"], "p50_ms": r.latency["real"]["p50_ms"]}
                            for r in timed]
    for r in timed:
        files[f"latency_vs_length/{_file_name(r.backend)}"] = [
            {"length": int(n), "p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"], "throughput_per_s": v["throughput_per_s"]}
            for n, v in r.latency["fixed"].items()]
    id2label = dict(enumerate(sorted(set(test.labels))))
    index = {label: i for i, label in id2label.items()}
    actual = [index[label] for label in test.labels]
    for r in rows:
        if r.status == "ok":
            files[f"confusion/{_file_name(r.backend)}"] = prediction_rows(
                actual, [index[p] for p in r.predicted], id2label)
    return files


def write_outputs(out: Path, rows: list[Row], test: TestSplit, baseline: dict, stats: dict, env: dict) -> dict:
    quality: dict = {}
    latency: dict = {}
    for r in rows:
        quality.setdefault(r.backend.model, {})[r.backend.name] = {"status": r.status, **r.quality}
        if r.latency:
            latency.setdefault(r.backend.model, {})[r.backend.name] = r.latency
    quality[BASELINE] = {"sklearn": baseline}
    plots = plot_data(rows, test)
    shutil.rmtree(out / "plots", ignore_errors=True)  # no stale files from backends that are gone
    for name, data in plots.items():
        write_json(out / "plots" / name, data)
    for name, data in (("quality", quality), ("latency", latency), ("stats", stats), ("environment", env)):
        write_json(out / f"{name}.json", data)
    return {"quality": quality, "latency": latency, "stats": stats, "environment": env}


def evaluate(params: Params, paths: Paths = Paths()) -> dict:
    """The evaluate stage: every row, the statistics, and the files under artifacts/evaluation."""
    from tqdm import tqdm

    cfg = params.evaluate
    test = read_test(paths)
    backends = [b for family in params.families for b in discover(family, paths, cfg)]  # fails fast
    rows = []
    with tqdm(total=len(backends), desc="evaluate", unit="row", disable=not sys.stderr.isatty()) as bar:
        for family in params.families:
            rows += run_backends([b for b in backends if b.family == family], test, cfg, bar.update)
    add_agreement(rows)
    stats = statistics(rows, test, params.families, cfg, baseline_predictions(paths))
    return write_outputs(paths.evaluation, rows, test, baseline_row(paths), stats, environment(cfg))


def summary_text(result: dict) -> str:
    """One line per model x backend: its test accuracy, or why it was skipped."""
    lines = []
    for model, rows in result["quality"].items():
        for backend, row in rows.items():
            shown = f"accuracy {row['accuracy']:.3f}" if row.get("status", "ok") == "ok" else row.get("status")
            lines.append(f"{model}/{backend}: {shown}")
    return "\n".join(lines)
