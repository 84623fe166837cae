"""TensorRT engines from an ONNX folder: optimization profiles, timing cache, fp16 and INT8 (explicit Q/DQ),
parity with the fp32 ONNX model, and a recorded skip where there is no CUDA device or no TensorRT.

Importing this module needs neither tensorrt nor torch: they are imported inside the functions that build or
run an engine, so the CPU parts (profile validation, naming, compatibility checks, Q/DQ graph production,
the skip path) run and are tested anywhere.

TensorRT API targeted: 10.x and 11.x (Python bindings).
- 10.x ("weak" typing): fp32 ONNX graph + `BuilderFlag.FP16`; INT8 = Q/DQ graph + `BuilderFlag.INT8 | FP16`.
- 11.x (strongly typed only; the precision flags are removed): the precision comes from the ONNX types, so fp16
  builds from a graph converted to fp16 (int64 inputs and fp32 logits kept as I/O) and INT8 from the Q/DQ graph.
  `typing: strong` selects this on 10.x too (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`).

Output folder (one per family): `engine.json` (summary: built or the reason not) and one sub-folder per
precision holding the engine file, its own `engine.json`, and config.json + tokenizer files, so that
`pipeline.runtime.trt.TrtPredictor(folder)` classifies texts from it.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.config import EngineConfig, EngineProfile, EngineTolerance
from pipeline.export.lint import format_findings, lint_tensorrt
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.model_limits import position_limit
from pipeline.trt_common import (INPUTS, MIN_SEQUENCE, EngineError, Profile, compat_problem,  # noqa: F401
                                 compute_capability, engine_name, pad_columns, pad_to_profile, parse_engine_name,
                                 pick_profile,
                                 unavailable_reason)

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
TYPINGS = ("auto", "weak", "strong")
QUANTIZERS = ("auto", "ort", "modelopt")


class EngineParityError(EngineError):
    """The engine's logits differ from the fp32 ONNX model's by more than the precision's tolerance."""


# --- profiles and shapes (pure Python) -----------------------------------------------------------------
def validate_profiles(profiles: Sequence[EngineProfile], max_positions: int | None,
                      limit_source: str = "the model", where: str = "engine.profiles") -> list[Profile]:
    """Params profiles -> Profiles, or an EngineError naming the param, the limit and the fix."""
    if not profiles:
        raise EngineError(f"{where} is empty; give at least one profile (min/opt/max batch and sequence)")
    out = []
    for i, p in enumerate(profiles):
        key = f"{where}[{i}]"
        for axis in ("batch", "sequence"):
            lo, opt, hi = (getattr(p, f"{k}_{axis}") for k in ("min", "opt", "max"))
            floor = 1 if axis == "batch" else MIN_SEQUENCE
            if lo < floor:
                raise EngineError(f"{key}.min_{axis} = {lo} is below {floor}; set it to {floor} or more "
                                  f"(shorter inputs are padded up to min_{axis} at run time)")
            if not lo <= opt <= hi:
                raise EngineError(f"{key}: {axis} must satisfy min <= opt <= max, got min_{axis}={lo}, "
                                  f"opt_{axis}={opt}, max_{axis}={hi}; reorder them")
        if max_positions is not None and p.max_sequence > max_positions:
            raise EngineError(f"{key}.max_sequence = {p.max_sequence} exceeds the model's maximum of "
                              f"{max_positions} positions ({limit_source}); set {key}.max_sequence <= "
                              f"{max_positions}")
        out.append(Profile((p.min_batch, p.opt_batch, p.max_batch),
                           (p.min_sequence, p.opt_sequence, p.max_sequence)))
    return out


def model_max_positions(onnx_dir: str | Path) -> tuple[int | None, str]:
    """The longest sequence the exported model takes, and where that limit comes from.

    BERT: config.json max_position_embeddings; XLNet has none (-1, relative positions), so only the
    tokenizer's model_max_length can limit it; None when nothing does."""
    onnx_dir = Path(onnx_dir)
    limits = []
    for file, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
        path = onnx_dir / file
        content = read_json(path) if path.is_file() else {}
        value = position_limit(content) if key == "max_position_embeddings" else content.get(key)
        if isinstance(value, (int, float)) and 0 < value < 10 ** 6:
            limits.append((int(value), f"{key} in {path}"))
    return min(limits) if limits else (None, "no limit")


def parity_shapes(profile: Profile) -> list[tuple[int, int]]:
    """The profile's min, opt and max [batch, sequence], without repeats."""
    return list(dict.fromkeys(profile.shapes()))


# --- naming, compatibility, caching --------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rebuild_reason(record: dict[str, Any] | None, want: dict[str, Any], folder: Path) -> str | None:
    """Why a previously built engine cannot be reused for `want` (same keys as a record); None: reuse it."""
    if not record or not record.get("built"):
        return "no engine built yet"
    if not (folder / record.get("engine", "")).is_file():
        return f"engine file {record.get('engine')} is missing"
    problem = compat_problem(record, want["tensorrt"], want["capability"])
    if problem:
        return problem
    for key in ("precision", "typing", "profiles", "onnx_sha256", "workspace_mib", "optimization_level", "settings"):
        if record.get(key) != want.get(key):
            return f"{key} changed ({record.get(key)!r} -> {want.get(key)!r})"
    return None


def resolve_typing(typing: str, trt_major: int) -> str:
    """"weak" (builder precision flags) or "strong" (precision from the ONNX types) for this TensorRT."""
    if typing not in TYPINGS:
        raise EngineError(f"engine.typing = {typing!r}; choose one of {', '.join(TYPINGS)}")
    if typing == "auto":
        return "weak" if trt_major <= 10 else "strong"
    if typing == "weak" and trt_major >= 11:
        raise EngineError(f"engine.typing = weak needs TensorRT 10 (builder flags FP16/INT8); TensorRT "
                          f"{trt_major} removed them and builds strongly typed networks only: set typing: auto")
    return typing


def resolve_quantizer(quantizer: str, typing: str) -> str:
    """"ort" or "modelopt" for the INT8 Q/DQ graph. auto: modelopt under strong typing where it is installed,
    since its graph is fp16 between the quantized MatMuls and ORT's is fp32, which a strongly typed engine then
    runs in fp32; under weak typing BuilderFlag.FP16 lets TensorRT pick fp16 there, so ORT's graph serves."""
    if quantizer != "auto":
        return quantizer
    if typing == "strong":
        try:
            modelopt_version()
            return "modelopt"
        except EngineError:
            log.warning("int8 under strong typing with ONNX Runtime's Q/DQ graph: layers between the quantized "
                        "MatMuls run in fp32; install nvidia-modelopt (the modelopt extra) for fp16 there")
    return "ort"


def check_workspace(workspace_mib: int, free_bytes: int, total_bytes: int, device: str = "GPU") -> None:
    """Fail before building when the workspace pool cannot fit in free GPU memory."""
    if workspace_mib <= 0:
        raise EngineError(f"engine.workspace_mib = {workspace_mib}; set a positive size in MiB (e.g. 4096)")
    free_mib, total_mib = free_bytes // 2 ** 20, total_bytes // 2 ** 20
    if workspace_mib > free_mib:
        raise EngineError(f"engine.workspace_mib = {workspace_mib} MiB does not fit in the {free_mib} MiB free "
                          f"on {device} ({total_mib} MiB total); lower engine.workspace_mib below {free_mib}, "
                          f"or free GPU memory (other processes?)")


def check_request(cfg: EngineConfig) -> None:
    """Reject unknown precisions / typing / quantizer values before any work."""
    bad = [p for p in cfg.precisions if p not in PRECISIONS]
    if bad or not cfg.precisions:
        raise EngineError(f"engine.precisions = {cfg.precisions}; choose from {', '.join(PRECISIONS)}")
    if cfg.typing not in TYPINGS:
        raise EngineError(f"engine.typing = {cfg.typing!r}; choose one of {', '.join(TYPINGS)}")
    if cfg.quantizer not in QUANTIZERS:
        raise EngineError(f"engine.quantizer = {cfg.quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    if not 0 <= cfg.optimization_level <= 5:
        raise EngineError(f"engine.optimization_level = {cfg.optimization_level}; TensorRT takes 0..5")


def tolerance_for(cfg: EngineConfig, precision: str) -> EngineTolerance:
    return getattr(cfg.tolerances, precision)


# --- where TensorRT can run ----------------------------------------------------------------------------
def gpu_facts(device: int = 0) -> dict[str, Any]:
    """TensorRT version, GPU name, compute capability and memory of `device` (needs CUDA + TensorRT)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    free, total = torch.cuda.mem_get_info(device)
    return {"tensorrt": trt.__version__, "capability": compute_capability(major, minor),
            "gpu": torch.cuda.get_device_name(device), "free_bytes": int(free), "total_bytes": int(total),
            "cuda": torch.version.cuda, "torch": torch.__version__}


# --- texts and batches (CPU) ---------------------------------------------------------------------------
def load_texts(path: str | Path | None, field: str = "text", limit: int | None = None) -> list[str]:
    """Non-empty `field` strings of a JSONL split (the train split for calibration, test for parity)."""
    from pipeline.io import read_jsonl

    if path is None or not Path(path).is_file():
        raise EngineError(f"texts file {path} not found; run the prepare stage (dvc repro prepare) or pass "
                          f"a JSONL file with a {field!r} field")
    rows = read_jsonl(path)
    texts = [r[field] for r in rows if isinstance(r.get(field), str) and r[field].strip()]
    if not texts:
        raise EngineError(f"{path} has no non-empty {field!r} strings; pass the text field's name")
    return texts[:limit] if limit else texts


def _pad_to(encoder, items, seq: int) -> dict[str, np.ndarray]:
    """[len(items), seq] int64 inputs, padded on the tokenizer's side (items are at most seq long)."""
    return pad_like(encoder, encoder.pad(items), seq)


def pad_like(encoder, batch: dict[str, np.ndarray], seq: int) -> dict[str, np.ndarray]:
    """`batch` padded to `seq` columns as `encoder`'s tokenizer pads (side, pad id, pad segment id)."""
    return pad_columns(batch, seq, encoder.pad_id, encoder.pad_type_id, left=encoder.padding_side == "left")


def exact_batch(encoder, texts: Sequence[str], batch: int, seq: int, offset: int = 0) -> dict[str, np.ndarray]:
    """Exactly batch x seq tokens from real texts: the first row is texts joined (fills seq), the last row is
    the shortest text (so padding is present), the others as they come, truncated or padded."""
    rows = [texts[(offset + i) % len(texts)] for i in range(batch)]
    rows[0] = " ".join(texts[(offset + i) % len(texts)] for i in range(max(1, seq // 4)))
    if batch > 1:
        rows[-1] = min(texts, key=len)
    encoder.tokenizer.enable_truncation(seq)
    try:
        items = encoder.encode(rows)
    finally:
        encoder.tokenizer.enable_truncation(encoder.max_length)
    return _pad_to(encoder, items, seq)


def calibration_batches(onnx_dir: str | Path, texts: Sequence[str], samples: int, batch_size: int,
                        max_sequence: int) -> list[dict[str, np.ndarray]]:
    """Train texts tokenized as the runtime does (length-sorted batches, cut at max_sequence)."""
    from pipeline.export.calibration import encode_batches

    return encode_batches(onnx_dir, list(texts[:samples]), batch_size, max_sequence)


# --- ONNX graphs per precision (CPU) -------------------------------------------------------------------
def quantize_qdq(model_path: Path, out_path: Path, batches: list[dict[str, np.ndarray]],
                 quantizer: str = "ort") -> dict[str, Any]:
    """Write an explicit-quantization (Q/DQ) INT8 graph of `model_path`, calibrated on `batches`.

    TensorRT reads only signed, symmetric int8 Q/DQ, so both activations and weights are QInt8 with zero
    point 0. MatMul/Gemm only: that is where the encoder's FLOPs are and what TensorRT fuses around Q/DQ."""
    if not batches:
        raise EngineError("no calibration batches: give engine.calibration_samples > 0 and train texts")
    if quantizer == "modelopt":  # NVIDIA's ONNX quantizer (max calibration, fp16 elsewhere)
        return _quantize_modelopt(model_path, out_path, batches)
    if quantizer != "ort":
        raise EngineError(f"quantizer {quantizer!r}: pass ort or modelopt (resolve_quantizer turns auto into one)")
    return _quantize_ort(model_path, out_path, batches)


def _quantize_ort(model_path: Path, out_path: Path, batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from pipeline.export.calibration import BatchReader

    quantize_static(str(model_path), str(out_path), BatchReader(batches), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm"], per_channel=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    # QuantizeBias False: biases stay float; TensorRT rejects the INT32 DequantizeLinear ORT makes
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    import onnxruntime

    return {"quantizer": "onnxruntime.quantization.quantize_static", "version": onnxruntime.__version__,
            "format": "QDQ", "activations": "int8 symmetric", "weights": "int8 symmetric per-tensor",
            "calibration": "MinMax", "calibration_batches": len(batches),
            "calibration_rows": sum(len(b["input_ids"]) for b in batches), "ops": ["MatMul", "Gemm"],
            "biases": "float (QuantizeBias: False)",
            "elsewhere": "fp32 graph (fp16 under weak typing: BuilderFlag.FP16)"}


def modelopt_calibration(batches: list[dict[str, np.ndarray]], encoder) -> dict[str, np.ndarray]:
    """modelopt wants {input name: array} with every calibration row at one shape: the batches padded to the
    longest one as the family pads (XLNet: on the left, with its pad and segment ids), then stacked."""
    seq = max(b["input_ids"].shape[1] for b in batches)
    padded = [pad_like(encoder, b, seq) for b in batches]
    return {name: np.concatenate([b[name] for b in padded]) for name in batches[0]}


def _quantize_modelopt(model_path: Path, out_path: Path, batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """nvidia-modelopt's ONNX PTQ (max calibration; fp16 where not quantized), run in its own process:
    importing it patches onnxruntime.quantization's calibrators process-wide (modelopt's ort_patching), after
    which ORT's own quantize_static failed on XLNet in the same process."""
    from pipeline.runtime import TextEncoder

    version = modelopt_version()
    calib = modelopt_calibration(batches, TextEncoder(model_path.parent))
    data = out_path.with_name(out_path.stem + ".calibration.npz")
    np.savez(data, **calib)
    # every setting whose default changed between modelopt releases is given: fp16 between the quantized ops
    # (0.47's int8 default is fp32), calibration on ONNX Runtime's CPU provider (the default list tries TensorRT)
    cmd = [sys.executable, "-m", "modelopt.onnx.quantization", "--onnx_path", str(model_path),
           "--quantize_mode", "int8", "--calibration_method", "max", "--calibration_data_path", str(data),
           "--high_precision_dtype", "fp16", "--calibration_eps", "cpu", "--output_path", str(out_path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    data.unlink(missing_ok=True)
    if result.returncode != 0 or not out_path.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise EngineError(f"nvidia-modelopt {version} could not quantize {model_path.name} (exit "
                          f"{result.returncode}):\n{tail}\nset engine.quantizer: ort to use ONNX Runtime's instead")
    return {"quantizer": "modelopt.onnx.quantization", "version": version, "format": "QDQ",
            "calibration": "max", "calibration_rows": int(calib["input_ids"].shape[0]), "elsewhere": "fp16 graph",
            "settings": {"high_precision_dtype": "fp16", "calibration_eps": ["cpu"]}}


def modelopt_version() -> str:
    """The installed nvidia-modelopt, or an EngineError saying how to get it (checked before any build)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-modelopt")
    except PackageNotFoundError:
        raise EngineError("engine.quantizer = modelopt needs nvidia-modelopt[onnx], which exists for CUDA 12: bash "
                          "scripts/install.sh --gpu --cuda 12 --modelopt (the modelopt extra), or set "
                          "engine.quantizer: ort") from None


def convert_fp16(model_path: Path, out_path: Path) -> dict[str, Any]:
    """An fp16 graph for strongly typed builds: weights and compute in fp16; int64 inputs and fp32 logits as
    I/O (keep_io_types), so callers and the runtime see the same signature as the fp32 model."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return {"converter": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}


def prepare_graph(onnx_dir: Path, precision: str, typing: str, work: Path, calibration: list | None,
                  quantizer: str) -> tuple[Path, dict[str, Any]]:
    """The ONNX file TensorRT parses for `precision` under `typing`, and how it was made; lint-checked."""
    source = onnx_dir / "model.onnx"
    if precision == "int8":
        path, info = work / "model.int8.qdq.onnx", quantize_qdq(source, work / "model.int8.qdq.onnx",
                                                                calibration or [], quantizer)
    elif typing == "strong":
        path, info = work / "model.fp16.onnx", convert_fp16(source, work / "model.fp16.onnx")
    else:
        path, info = source, {"graph": "fp32 ONNX; precision from BuilderFlag.FP16"}
    lint = lint_tensorrt(path)
    if not lint["passed"]:
        raise EngineError(f"the {precision} graph {path.name} fails the TensorRT lint:\n{format_findings(lint)}")
    return path, {**info, "lint_warnings": len(lint["warnings"])}


def lint_or_raise(onnx_dir: Path) -> dict[str, Any]:
    """The fp32 graph must pass the TensorRT lint: each error names the operator, the node and the fix."""
    path = onnx_dir / "model.onnx"
    if not path.is_file():
        raise EngineError(f"{onnx_dir} has no model.onnx; export it first (dvc repro export, or "
                          f"`bilm export onnx MODEL_DIR {onnx_dir}`)")
    lint = lint_tensorrt(path)
    if not lint["passed"]:
        raise EngineError(f"{path} fails the TensorRT lint, so TensorRT's ONNX parser would reject it; "
                          f"fix these and re-export:\n{format_findings(lint)}")
    return lint


# --- building (GPU) ------------------------------------------------------------------------------------
def _parse(trt, network, logger, path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node_name() or f"#{err.node()}"
        op = err.node_operator() or "?"
        errors.append(f"{op} node {node}: {err.desc()}")
    raise EngineError(f"TensorRT {trt.__version__}'s ONNX parser rejected {path.name}:\n" + "\n".join(errors)
                      + "\nrun `python -c 'from pipeline.export.lint import *; print(format_findings("
                        f"lint_tensorrt(\"{path}\")))'` for fixes, or re-export at another opset")


def _network(trt, builder, typing: str):
    """TensorRT 10: explicit batch is implicit, STRONGLY_TYPED optional; 11: always strongly typed."""
    flags = 0
    if typing == "strong" and int(trt.__version__.split(".")[0]) == 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _builder_config(trt, builder, precision: str, typing: str, cfg: EngineConfig):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib * 2 ** 20)
    config.builder_optimization_level = cfg.optimization_level
    if typing == "weak":  # TensorRT 10 only (resolve_typing refuses weak on 11)
        config.set_flag(trt.BuilderFlag.FP16)  # INT8: the layers Q/DQ leaves unquantized run in fp16
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    return config


def _add_profiles(builder, config, network, profiles: Sequence[Profile]) -> None:
    names = [tensor.name for tensor in map(network.get_input, range(network.num_inputs))]
    unknown = sorted(set(names) - set(INPUTS))
    if unknown:
        raise EngineError(f"the graph wants inputs {unknown}; a text classifier engine feeds only {INPUTS}")
    for p in profiles:
        optimization_profile = builder.create_optimization_profile()
        for name in names:
            optimization_profile.set_shape(name, *p.shapes())  # min, opt, max [batch, sequence]
        config.add_optimization_profile(optimization_profile)


def _load_timing_cache(config, path: Path, facts: dict[str, Any]):
    """A timing cache is valid for one TensorRT version and GPU: its sidecar says which; else start fresh."""
    meta_path = path.with_name(path.name + ".json")
    stamp = {"tensorrt": facts["tensorrt"], "capability": facts["capability"], "gpu": facts["gpu"]}
    data = b""
    if path.is_file() and meta_path.is_file() and read_json(meta_path) == stamp:
        data = path.read_bytes()
    elif path.is_file():
        log.info("timing cache %s is from another TensorRT/GPU; starting a fresh one", path)
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # False: refuse a cache from another device
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return stamp, len(data)


def _save_timing_cache(config, path: Path, stamp: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    cache = config.get_timing_cache()
    tmp.write_bytes(memoryview(cache.serialize()))
    tmp.replace(path)
    write_json(path.with_name(path.name + ".json"), stamp)


def build_engine(graph: Path, out: Path, profiles: Sequence[Profile], precision: str, typing: str,
                 cfg: EngineConfig, timing_cache: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """Parse `graph`, build a serialized engine at `out`; return build facts (seconds, cache size)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder, typing)
    _parse(trt, network, logger, graph)
    config = _builder_config(trt, builder, precision, typing, cfg)
    _add_profiles(builder, config, network, profiles)
    stamp, cache_bytes = _load_timing_cache(config, timing_cache, facts)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise EngineError(f"TensorRT could not build the {precision} engine from {graph.name} (see its log "
                          f"above); if it ran out of memory, lower engine.workspace_mib or max_batch/max_sequence")
    out.write_bytes(memoryview(plan))
    _save_timing_cache(config, timing_cache, stamp)
    return {"build_seconds": round(seconds, 3), "timing_cache_bytes_before": cache_bytes,
            "engine_bytes": out.stat().st_size}


# --- parity --------------------------------------------------------------------------------------------
def check_engine_parity(predictor, onnx_dir: Path, texts: Sequence[str], profiles: Sequence[Profile],
                        tolerance: EngineTolerance, precision: str) -> dict[str, Any]:
    """Engine vs fp32 ONNX (ORT CPU) at every profile's min/opt/max shape; raise above the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    records = []
    for index, profile in enumerate(profiles):  # each profile's own min/opt/max, run on that profile
        for b, s in parity_shapes(profile):
            batch = exact_batch(predictor.encoder, texts, b, s, offset=7 * len(records))
            expected = session.run(None, {n: batch[n] for n in names})[0]
            got = predictor.run(batch, profile=index)
            records.append({"profile": index, **parity_record(expected, got, b, s, tolerance)})
    return summarize_parity(records, tolerance, precision)


def parity_record(expected: np.ndarray, got: np.ndarray, batch: int, seq: int,
                  tolerance: EngineTolerance) -> dict[str, Any]:
    """One shape's figures. Label agreement is judged over all shapes pooled (summarize_parity): at batch 1 a
    shape's own agreement is 0% or 100%, so one near-tied text would fail the gate."""
    diff = float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max())
    agreeing = int((expected.argmax(-1) == got.argmax(-1)).sum())
    return {"shape": f"{batch}x{seq}", "batch": batch, "sequence": seq, "max_abs_diff": diff,
            "rows": int(len(expected)), "agreeing_rows": agreeing, "label_agreement": agreeing / len(expected),
            "passed": diff <= tolerance.atol}


def summarize_parity(records: list[dict[str, Any]], tolerance: EngineTolerance, precision: str) -> dict[str, Any]:
    """Max abs diff per shape against atol; label agreement pooled over every row of every shape."""
    failed = [r for r in records if not r["passed"]]
    rows = sum(r["rows"] for r in records)
    agreement = sum(r["agreeing_rows"] for r in records) / rows
    summary = {"atol": tolerance.atol, "min_label_agreement": tolerance.min_label_agreement,
               "max_abs_diff": max(r["max_abs_diff"] for r in records), "label_agreement": agreement,
               "rows": rows, "shapes": records,
               "passed": not failed and agreement >= tolerance.min_label_agreement}
    if not summary["passed"]:
        detail = [f"{r['shape']}: max abs diff {r['max_abs_diff']:.3g}" for r in failed]
        if agreement < tolerance.min_label_agreement:
            detail.append(f"label agreement {agreement:.1%} over {rows} rows of {len(records)} shapes")
        raise EngineParityError(f"{precision} engine parity failed vs fp32 ONNX ({'; '.join(detail)}); tolerance: "
                                f"atol {tolerance.atol:g}, label agreement >= {tolerance.min_label_agreement:.0%}. "
                                f"Raise engine.tolerances.{precision} only if the loss is acceptable; for int8 "
                                f"try more engine.calibration_samples")
    return summary


# --- the whole build -----------------------------------------------------------------------------------
def _versions(facts: dict[str, Any]) -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {"tensorrt": facts.get("tensorrt"), "cuda": facts.get("cuda"), "torch": facts.get("torch"),
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _precision_engine(onnx_dir: Path, out: Path, old: Path, precision: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Build (or reuse a current) engine for one precision into `out`/precision; return its record."""
    cfg, facts, profiles = ctx["cfg"], ctx["facts"], ctx["profiles"]
    name = engine_name(ctx["family"], precision, facts["tensorrt"], facts["capability"])
    want = {"built": True, "family": ctx["family"], "precision": precision, "typing": ctx["typing"],
            "engine": name, "tensorrt": facts["tensorrt"], "capability": facts["capability"],
            "gpu": facts["gpu"], "profiles": [p.to_dict() for p in profiles], "onnx_sha256": ctx["onnx_sha256"],
            "workspace_mib": cfg.workspace_mib, "optimization_level": cfg.optimization_level,
            "settings": {"quantizer": ctx["quantizer"], "calibration_samples": cfg.calibration_samples,
                         "calibration_batch_size": cfg.calibration_batch_size} if precision == "int8" else {}}
    folder = out / precision
    from pipeline.export.optimize import copy_folder_files  # lazily: optimize imports the families (torch)

    copy_folder_files(onnx_dir, folder)  # config.json, tokenizer files and bilm.json
    previous = read_json(old / precision / "engine.json") if (old / precision / "engine.json").is_file() else None
    reason = rebuild_reason(previous, want, old / precision)
    if reason is None:
        shutil.copy2(old / precision / previous["engine"], folder / name)
        record = {**previous, "reused": True}
    else:
        log.info("%s %s: building (%s)", ctx["family"], precision, reason)
        graph, graph_info = prepare_graph(onnx_dir, precision, ctx["typing"], ctx["work"],
                                          ctx.get("calibration"), ctx["quantizer"])
        built = build_engine(graph, folder / name, profiles, precision, ctx["typing"], cfg, ctx["timing_cache"],
                             facts)
        record = {**want, "graph": graph_info, **built, "rebuild_reason": reason, "versions": _versions(facts)}
    write_json(folder / "engine.json", record)  # parity added below, after the engine has run
    from pipeline.runtime.trt import TrtPredictor

    predictor = TrtPredictor(folder, device=cfg.device)
    record["parity"] = check_engine_parity(predictor, onnx_dir, ctx["texts"], profiles,
                                           tolerance_for(cfg, precision), precision)
    write_json(folder / "engine.json", record)
    return record


def plan_build(onnx_dir: Path, cfg: EngineConfig) -> tuple[list[Profile], dict[str, Any]]:
    """Everything checkable on a CPU, before any long work: params, profiles vs the model, the lint."""
    check_request(cfg)
    limit, source = model_max_positions(onnx_dir)
    profiles = validate_profiles(cfg.profiles, limit, limit_source=source)
    lint = lint_or_raise(onnx_dir)
    return profiles, {"max_positions": limit, "limit_source": source, "lint_warnings": len(lint["warnings"])}


def skip_record(family: str, reason: str, cfg: EngineConfig, profiles: Sequence[Profile]) -> dict[str, Any]:
    return {"family": family, "built": False, "reason": reason, "precisions": list(cfg.precisions),
            "profiles": [p.to_dict() for p in profiles], "engines": {},
            "note": "evaluation leaves TensorRT out; rebuild on a CUDA machine with TensorRT "
                    "(bash scripts/install.sh --gpu; dvc repro -f -s engine@" + family + ")"}


def _family_of(onnx_dir: Path) -> str:
    info = onnx_dir / "export.json"
    return read_json(info).get("family", onnx_dir.name) if info.is_file() else onnx_dir.name


def build_engines(onnx_dir: str | Path, out_dir: str | Path, cfg: EngineConfig, *, family: str | None = None,
                  calibration_texts: Sequence[str] | None = None, parity_texts: Sequence[str] | None = None,
                  timing_cache: str | Path | None = None) -> dict[str, Any]:
    """Build every precision of `cfg` from the ONNX folder into `out_dir`; return (and write) engine.json.

    Without CUDA or TensorRT this writes `engine.json` with "built": false and the reason, and returns."""
    from pipeline.paths import Paths

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    family = family or _family_of(onnx_dir)
    profiles, plan = plan_build(onnx_dir, cfg)
    reason = unavailable_reason(cfg.device)
    if reason:
        summary = skip_record(family, reason, cfg, profiles)
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / "engine.json", summary)
        log.warning("engine@%s not built: %s", family, reason)
        return summary
    if "int8" in cfg.precisions and not calibration_texts:
        raise EngineError("int8 needs calibration texts (the train split); pass calibration_texts")
    if "int8" in cfg.precisions and cfg.quantizer == "modelopt":
        modelopt_version()
    return _build_all(onnx_dir, out_dir, cfg, family, profiles, plan, calibration_texts or [],
                      list(parity_texts or calibration_texts or []), Path(timing_cache or Paths().timing_cache))


def _build_all(onnx_dir: Path, out_dir: Path, cfg: EngineConfig, family: str, profiles: list[Profile],
               plan: dict[str, Any], calibration_texts: Sequence[str], texts: list[str],
               timing_cache: Path) -> dict[str, Any]:
    import tensorrt as trt

    if not texts:
        raise EngineError("no parity texts: pass the test split (parity_texts)")
    facts = gpu_facts(cfg.device)
    check_workspace(cfg.workspace_mib, facts["free_bytes"], facts["total_bytes"], facts["gpu"])
    typing = resolve_typing(cfg.typing, int(trt.__version__.split(".")[0]))
    with atomic_dir(out_dir) as tmp:
        ctx = {"cfg": cfg, "facts": facts, "profiles": profiles, "family": family, "typing": typing,
               "onnx_sha256": file_sha256(onnx_dir / "model.onnx"), "work": tmp / ".work", "texts": texts,
               "timing_cache": timing_cache, "quantizer": resolve_quantizer(cfg.quantizer, typing)}
        ctx["work"].mkdir()
        if "int8" in cfg.precisions:
            max_seq = max(p.sequence[2] for p in profiles)
            ctx["calibration"] = calibration_batches(onnx_dir, calibration_texts, cfg.calibration_samples,
                                                     cfg.calibration_batch_size, max_seq)
        engines = {p: _precision_engine(onnx_dir, tmp, out_dir, p, ctx) for p in cfg.precisions}
        shutil.rmtree(ctx["work"])
        summary = {"family": family, "built": True, "typing": typing, "tensorrt": facts["tensorrt"],
                   "capability": facts["capability"], "gpu": facts["gpu"], **plan,
                   "profiles": [p.to_dict() for p in profiles],
                   "engines": {p: {k: r[k] for k in ("engine", "build_seconds", "parity") if k in r} | {
                       "folder": p} for p, r in engines.items()}}
        write_json(tmp / "engine.json", summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    if not summary.get("built"):
        return f"{summary['family']}: no TensorRT engine built: {summary['reason']}"
    parts = [f"{p}: {e['engine']}, built in {e.get('build_seconds', 0):.1f}s, parity max abs diff "
             f"{e['parity']['max_abs_diff']:.2e}, label agreement {e['parity']['label_agreement']:.0%}"
             for p, e in summary["engines"].items()]
    return f"{summary['family']} (TensorRT {summary['tensorrt']}, {summary['typing']} typing): " + "; ".join(parts)


def run_stage(family: str, params=None, paths=None) -> dict[str, Any]:
    """DVC stage engine@FAMILY: artifacts/onnx/FAMILY -> artifacts/engines/FAMILY. Texts: the prepared splits'
    "text" field (train calibrates INT8, test checks parity); not read when the build is skipped."""
    from pipeline.config import load_params
    from pipeline.paths import Paths

    params, paths = params or load_params(), paths or Paths()
    need_texts = unavailable_reason(params.engine.device) is None
    calibration = load_texts(paths.split("train")) if need_texts and "int8" in params.engine.precisions else None
    parity = load_texts(paths.split("test"), limit=256) if need_texts else None
    return build_engines(paths.onnx(family), paths.engines(family), params.engine, family=family,
                         calibration_texts=calibration, parity_texts=parity, timing_cache=paths.timing_cache)
