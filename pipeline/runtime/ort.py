"""ONNX Runtime predictor: model.onnx + tokenizers, no torch, no transformers."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.runtime.base import Predictor
from pipeline.runtime.graph_info import disabled_optimizers, graph_inputs
from pipeline.runtime.text import PredictorError

# --provider name -> ONNX Runtime providers in priority order (CPU last, for ops a GPU provider lacks)
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def resolve_providers(provider: str) -> list[str]:
    if provider not in PROVIDERS:
        raise PredictorError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    missing = missing_provider(provider)
    if missing:
        raise PredictorError(f"provider {provider!r} {missing}, or use --provider cpu")
    available = ort.get_available_providers()
    return [p for p in PROVIDERS[provider] if p in available]


def missing_provider(provider: str) -> str | None:
    """Why this onnxruntime cannot run `provider` (a PROVIDERS key) and what to do; None if it can. The install
    conflict is named first when there is one."""
    wanted, available = PROVIDERS[provider][0], ort.get_available_providers()
    if wanted in available:
        return None
    hint = onnxruntime_conflict() or "install onnxruntime-gpu on a CUDA machine (bash scripts/install.sh --gpu)"
    return f"needs {wanted}, which this onnxruntime build lacks (it has {', '.join(available)}); {hint}"


def onnxruntime_conflict(installed: set[str] | None = None) -> str | None:
    """Both onnxruntime and onnxruntime-gpu installed: they share the `onnxruntime` module, and whichever was
    written last wins, often without the GPU providers. The fix, or None when only one is there."""
    if installed is None:
        from importlib.metadata import distributions

        installed = {(d.metadata["Name"] or "").lower() for d in distributions()}
    if {"onnxruntime", "onnxruntime-gpu"} <= installed:
        return ("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files: run "
                "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu` (or bash "
                "scripts/install.sh --gpu, which does it)")
    return None


def tensorrt_ep_mismatch(library: str | Path | None = None, tensorrt_version: str | None = None) -> str | None:
    """ONNX Runtime's TensorRT EP is linked against one TensorRT major (libnvinfer.so.N); with another one
    installed it cannot start. Say which to install, or None if they match (or either is absent)."""
    library = Path(library or Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so")
    tensorrt_version = tensorrt_version or installed_tensorrt()
    if tensorrt_version is None or not library.is_file():
        return None
    linked = sorted(set(re.findall(rb"libnvinfer\.so\.(\d+)\x00", library.read_bytes())))
    installed = tensorrt_version.split(".")[0]
    if not linked or installed.encode() in linked:
        return None
    want = linked[0].decode()
    return (f"onnxruntime {ort.__version__}'s TensorRT execution provider links TensorRT {want} "
            f"(libnvinfer.so.{want}), but TensorRT {tensorrt_version} is installed: for --provider tensorrt "
            f"install TensorRT {want} (pip install 'tensorrt-cu13>={want},<{int(want) + 1}', or -cu12 to match a "
            f"CUDA 12 onnxruntime-gpu); bilm's own engines (trt-fp16, trt-int8) work with either")


def installed_tensorrt() -> str | None:
    """The TensorRT version pip installed (the metapackage, or a CUDA-specific wheel directly), without
    importing it (that needs its libraries); None if there is none."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


# --- TensorRT execution provider options (issue 4) ------------------------------------------------------
EP_MIN_SEQUENCE, EP_OPT_SEQUENCE, EP_MAX_BATCH = 4, 128, 64  # one profile, [1, 4] .. [64, max]; evaluate.batch_size: 64


def tensorrt_ep_options(folder: str | Path, fp16: bool = True, cache_dir: str | Path | None = None,
                        inputs: list[str] | None = None, max_sequence: int = 512,
                        max_batch: int = EP_MAX_BATCH) -> dict:
    """ONNX Runtime's TensorRT EP: fp16 kernels, its engine and timing caches kept under artifacts/
    (engines/ort-tensorrt/<folder name>), and one explicit optimization profile from [1, 4] to
    [max_batch, max_sequence] (opt [1, 128]), so that the provider builds its engine once instead of again
    each time a longer or larger input arrives."""
    from pipeline.paths import Paths

    cache = Path(cache_dir) if cache_dir else Paths().ort_tensorrt_cache(Path(folder).name)
    cache.mkdir(parents=True, exist_ok=True)
    names = inputs or ["input_ids", "attention_mask", "token_type_ids"]

    def shapes(batch: int, seq: int) -> str:  # "input_ids:1x128,attention_mask:1x128,..."
        return ",".join(f"{name}:{batch}x{seq}" for name in names)

    return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(1, min(EP_MIN_SEQUENCE, max_sequence)),
            "trt_profile_opt_shapes": shapes(1, min(EP_OPT_SEQUENCE, max_sequence)),
            "trt_profile_max_shapes": shapes(max_batch, max_sequence)}


def preload_tensorrt_libraries() -> str | None:
    """Load pip's TensorRT libraries (libnvinfer.so.N, its parser and plugins) into this process, so that ORT's
    TensorRT EP finds them: they sit in site-packages/tensorrt_libs, which is not on the loader path, and
    without this the provider fails with "libnvinfer.so.N: cannot open shared object file". Importing
    `tensorrt_libs` is how TensorRT's own Python package loads them (ctypes, by full path). Returns its
    folder, or None where that package is absent (TensorRT from a system install is on the path already)."""
    import importlib

    try:
        module = importlib.import_module("tensorrt_libs")
    except ImportError:
        return None
    return str(Path(module.__file__).parent)


def _with_options(providers: list[str], options: dict[str, dict]) -> list:
    """["TensorrtExecutionProvider", ...] -> [("TensorrtExecutionProvider", {...}), ...] where options exist."""
    return [(p, options[p]) if p in options else p for p in providers]
# --- end of TensorRT execution provider options ---------------------------------------------------------


def arena_shrinkage() -> ort.RunOptions:
    """Run options that hand the CPU memory arena's free chunks back to the system at the end of the run."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


@functools.cache
def _register_shared_cpu_arena() -> None:
    """Register one CPU arena with ONNX Runtime's environment, once per process."""
    cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    try:
        ort.create_and_register_allocator(cpu, None)
    except Exception:  # other code in this process registered one first: the sessions share that one
        pass


def use_shared_cpu_arena(options: ort.SessionOptions) -> None:
    """One CPU memory arena for every session of this process (registered with ONNX Runtime's environment on
    first use) instead of one per session: sessions that run one after another then reuse the same memory.
    Timing XLNet small's three ORT variants interleaved at 64 x 512 peaked at 17.9 GB resident with an arena
    each and 6.3 GB with the shared one, and ran as fast (3.4-3.7 s against 3.7-4.0 s a call)."""
    _register_shared_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")


# When the intra-op pool's idle threads spin, waiting for the next operator's work instead of sleeping:
#   always: ORT's default, also between runs: the lowest latency on cores of one's own;
#   run: only while a run lasts (session.force_spinning_stop): a graph of many short operators pays no wake-up
#        per operator, and no thread spins once the run returns, so other work on shared cores (PyTorch's
#        OpenMP pool in the same process, another session) is not starved. BERT small's fp32 graph on a 2-core
#        AMX Xeon, against never: 1.60x at 1 x 128, 1.17x at 64 x 32, 1.24x at 64 x 128 (interleaved with
#        PyTorch eager, whose times did not move);
#   never: threads sleep whenever they have no work.
SPINNING = ("always", "run", "never")


def session_options(threads: int | None = None, spinning: str = "always", arena: bool = True) -> ort.SessionOptions:
    """The CPU session settings of every bilm ORT session (predictor, bench, ceilings): `threads` intra-op
    threads (None: ONNX Runtime's default, one per core), one inter-op thread (the graphs are sequential), and
    when idle pool threads spin (SPINNING). arena=False: memory goes back after each run instead of staying at
    the session's peak. With an arena, the process's sessions share one (`use_shared_cpu_arena`)."""
    if spinning not in SPINNING:
        raise ValueError(f"spinning={spinning!r}: use one of {', '.join(SPINNING)}")
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    if arena:
        use_shared_cpu_arena(options)
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if spinning == "never":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    elif spinning == "run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    # flush denormal floats to zero: on padded batches ORT's CPU attention met enough of them to run 1.2-2.2x
    # slower than on the same shapes unpadded (its Attention op at 8 x 512 x 128 with text lengths of 128-512:
    # 17.5 ms against 7.8 full; 8.2 ms flushed); values below 1.2e-38 change no logit that parity can see
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


# Rows x padded length per ONNX Runtime run on the CPU: a larger batch runs as row chunks of at most this many
# tokens (results concatenated in order). ORT runs a graph node by node over the whole batch, so past about a
# thousand tokens every elementwise pass streams its tensors through memory instead of cache; chunks of 1,024
# tokens ran BERT-base's fp32 graph at 64 x 128 1.35x faster than one run, BERT small's 1.31x at 64 x 128 and
# 1.26x at 64 x 512, on a 2-core AVX2 EPYC (bench cells, interleaved; PyTorch eager gains at most 1.07x from
# the same chunks). GPU providers run each batch whole.
CPU_MAX_BATCH_TOKENS = 1024


def rows_per_run(batch: int, seq: int, max_tokens: int | None) -> int:
    """Rows of a [batch, seq] input that one run takes: all of them without a limit, at least one."""
    return batch if not max_tokens else max(1, min(batch, max_tokens // max(seq, 1)))


class OrtPredictor(Predictor):
    def __init__(self, folder: str | Path, provider: str = "cpu", threads: int | None = None,
                 provider_options: dict[str, dict] | None = None, spinning: str = "always", arena: bool = True,
                 max_batch_tokens: int | None = CPU_MAX_BATCH_TOKENS):
        """max_batch_tokens: the CPU provider's token limit per run (None or 0: each batch in one run)."""
        super().__init__(folder)
        self.max_batch_tokens = max_batch_tokens if provider == "cpu" else None
        providers = resolve_providers(provider)  # before the session: a bad provider fails fast
        if "TensorrtExecutionProvider" in providers:
            preload_tensorrt_libraries()  # before the session: the provider dlopens libnvinfer when it starts
            if provider_options is None:
                provider_options = {"TensorrtExecutionProvider": tensorrt_ep_options(
                    self.folder, inputs=graph_inputs(self.folder), max_sequence=self.encoder.max_length)}
        path = self.folder / "model.onnx"
        if not path.is_file():
            raise PredictorError(f"{self.folder} has no model.onnx; export it with "
                                 f"`bilm export onnx MODEL_DIR {self.folder}`")
        options = session_options(threads, spinning, arena)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=_with_options(providers, provider_options or {}),
                                                disabled_optimizers=disabled_optimizers(self.folder, provider) or None)
        except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail...: all mean the file is unusable
            raise PredictorError(f"{path} is corrupt or truncated and ONNX Runtime cannot load it "
                                 f"({str(exc).strip().splitlines()[0][:300]}); re-run `bilm export onnx`") from None
        if providers[0] not in self.session.get_providers():
            why = (providers[0] == "TensorrtExecutionProvider" and tensorrt_ep_mismatch()) or (
                "CUDA, cuDNN or TensorRT libraries missing?")
            raise PredictorError(f"{providers[0]} is installed but failed to start ({why}); ONNX Runtime fell "
                                 f"back to {self.session.get_providers()}")
        self.provider = provider
        self.inputs = {i.name: _NUMPY_TYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        self._check_inputs()

    def _check_inputs(self) -> None:
        known = {"input_ids", "attention_mask", "token_type_ids"}
        unknown = sorted(set(self.inputs) - known)
        if unknown:
            raise PredictorError(f"{self.folder}/model.onnx wants inputs {unknown}, which a text classifier "
                                 f"runtime cannot provide (it feeds {sorted(known)})")

    def predict_logits(self, batch: dict[str, np.ndarray], run_options: ort.RunOptions | None = None) -> np.ndarray:
        feed = {name: batch[name].astype(dtype, copy=False) for name, dtype in self.inputs.items()}
        rows, seq = feed["input_ids"].shape
        step = rows_per_run(rows, seq, self.max_batch_tokens)
        if step == rows:
            return self.session.run(None, feed, run_options)[0]
        return np.concatenate([self.session.run(None, {k: v[i:i + step] for k, v in feed.items()}, run_options)[0]
                               for i in range(0, rows, step)])

    def release_arena(self, batch: dict[str, np.ndarray]) -> None:
        """Run `batch` once more and, at the end of that run, give the memory arena's free chunks back to the
        system: a session keeps its arena at the largest batch it has run, and several sessions holding their
        peaks can exhaust a machine (bench holds three per model)."""
        self.predict_logits(batch, arena_shrinkage())
