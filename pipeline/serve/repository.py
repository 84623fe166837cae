"""`bilm export triton`: a Triton model repository that the stock Triton container serves without bilm.

Per folder NAME: `NAME-tokenizer` (Python backend: tokenizers + numpy), `NAME-network` (`onnxruntime_onnx` for
ONNX folders, `tensorrt_plan` for engine folders, or a Python-backend ONNX Runtime model), `NAME-postprocess`
(softmax and label names, Python backend) and the ensemble `NAME` chaining them, with the contract of
`bilm serve`. Configs are built as Triton's own protobuf (`model_config_pb2`), written with `text_format`, then
parsed back and checked against the ONNX graph or the engine's bindings.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io import atomic_dir
from pipeline.runtime.graph_info import disabled_optimizers
from pipeline.runtime.text import TextEncoder
from pipeline.serve.contract import INPUT, LABEL, PROBABILITIES, SERVE_INSTALL, ServeError, folder_kind, labels_of

TEMPLATES = Path(__file__).parent / "triton_models"
LOGITS = "logits"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ONNX_TYPES = {7: "TYPE_INT64", 6: "TYPE_INT32", 1: "TYPE_FP32", 10: "TYPE_FP16"}  # onnx.TensorProto ids
_NUMPY_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


@dataclass
class RepoOptions:
    max_batch_size: int = 64
    instances: int = 1
    kind: str = "auto"  # instance_group kind of the network: auto (GPU for engines), cpu, gpu
    buckets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    network_backend: str = "native"  # native (onnxruntime_onnx / tensorrt_plan) or python (ONNX Runtime)
    names: list[str] = field(default_factory=list)


def pb():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ServeError(f"bilm export triton needs tritonclient (the serve extra): {SERVE_INSTALL}") from exc
    return model_config_pb2, text_format


# --- network I/O: from the ONNX graph or the engine's bindings -------------------------------------------
def onnx_io(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({input: TYPE_*}, {output: TYPE_*}) as the graph declares them."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def types(values):
        return {v.name: _ONNX_TYPES.get(v.type.tensor_type.elem_type, "TYPE_INVALID") for v in values
                if v.name not in initializers}

    return types(graph.input), types(graph.output)


def engine_io(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The engine's input/output bindings: engine.json "bindings" ({name: {"mode", "dtype"}}) when recorded,
    else read from the engine with TensorRT (needs a GPU)."""
    record = json.loads((folder / "engine.json").read_text(encoding="utf-8"))
    bindings = record.get("bindings")
    if bindings is None:
        bindings = _read_engine_bindings(folder / record["engine"])
    inputs = {n: _NUMPY_TYPES[b["dtype"]] for n, b in bindings.items() if b["mode"] == "input"}
    outputs = {n: _NUMPY_TYPES[b["dtype"]] for n, b in bindings.items() if b["mode"] == "output"}
    return inputs, outputs


def _read_engine_bindings(path: Path) -> dict[str, dict[str, str]]:
    try:
        import numpy as np
        import tensorrt as trt
    except ImportError:
        raise ServeError(f"{path.parent}/engine.json records no bindings and TensorRT is not installed to read "
                         f"them from {path.name}; export on the GPU machine that built the engine") from None
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ServeError(f"TensorRT {trt.__version__} cannot read {path} (built by another TensorRT or GPU)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return {n: {"mode": "input" if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT else "output",
                "dtype": np.dtype(trt.nptype(engine.get_tensor_dtype(n))).name} for n in names}


def network_io(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    inputs, outputs = onnx_io(folder / "model.onnx") if folder_kind(folder) == "onnx" else engine_io(folder)
    unknown = sorted(set(inputs) - set(TOKEN_INPUTS))
    if unknown or len(outputs) != 1:
        raise ServeError(f"{folder}: a text classifier takes {list(TOKEN_INPUTS)} and returns one logits "
                         f"output; this network takes {sorted(inputs)} and returns {sorted(outputs)}")
    return inputs, outputs


# --- configs, as Triton's protobuf --------------------------------------------------------------------------
def _tensor(message, name: str, dtype: str, dims: list[int], label_filename: str | None = None):
    item = message(name=name, data_type=pb()[0].DataType.Value(dtype), dims=dims)
    if label_filename:
        item.label_filename = label_filename
    return item


def _params(config, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _base(name: str, options: RepoOptions, kind: str = "KIND_CPU", count: int = 1, **fields):
    m, _ = pb()
    config = m.ModelConfig(name=name, max_batch_size=options.max_batch_size, **fields)
    config.instance_group.add(kind=m.ModelInstanceGroup.Kind.Value(kind), count=count)
    return config


def tokenizer_config(name: str, encoder: TextEncoder, inputs: dict[str, str], options: RepoOptions):
    """text -> the network's inputs (its names and types), padded to a fixed length bucket."""
    m, _ = pb()
    config = _base(name, options, backend="python")
    config.input.append(_tensor(m.ModelInput, INPUT, "TYPE_STRING", [1]))
    config.output.extend(_tensor(m.ModelOutput, n, t, [-1]) for n, t in inputs.items())
    buckets = [b for b in options.buckets if b < encoder.max_length] + [encoder.max_length]
    _params(config, {"max_length": encoder.max_length, "buckets": ",".join(map(str, buckets)),
                     "padding_side": encoder.padding_side, "pad_id": encoder.pad_id, "pad_type_id": encoder.pad_type_id,
                     "padding": f"each request padded to the smallest of the fixed buckets {buckets} that holds its "
                                f"longest text (so that the network's dynamic batcher can batch requests); texts "
                                f"truncated to {encoder.max_length} tokens"})
    return config


def network_config(name: str, platform: str, inputs: dict[str, str], output: tuple[str, str], n_labels: int,
                   options: RepoOptions):
    m, _ = pb()
    kind = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}.get(options.kind,
                                                      "KIND_GPU" if platform == "tensorrt_plan" else "KIND_CPU")
    fields = {"backend": "python"} if platform == "python" else {"platform": platform}
    config = _base(name, options, kind=kind, count=options.instances, **fields)
    config.input.extend(_tensor(m.ModelInput, n, t, [-1]) for n, t in inputs.items())
    config.output.append(_tensor(m.ModelOutput, output[0], output[1], [n_labels], label_filename="labels.txt"))
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    return config


def postprocess_config(name: str, logits_type: str, n_labels: int, options: RepoOptions):
    m, _ = pb()
    config = _base(name, options, backend="python")
    config.input.append(_tensor(m.ModelInput, LOGITS, logits_type, [n_labels]))
    config.output.append(_tensor(m.ModelOutput, PROBABILITIES, "TYPE_FP32", [n_labels], label_filename="labels.txt"))
    config.output.append(_tensor(m.ModelOutput, LABEL, "TYPE_STRING", [1]))
    return config


def ensemble_config(name: str, inputs: dict[str, str], logits: str, n_labels: int, options: RepoOptions):
    """text -> NAME-tokenizer -> NAME-network -> NAME-postprocess -> probabilities, label."""
    m, _ = pb()
    config = m.ModelConfig(name=name, platform="ensemble", max_batch_size=options.max_batch_size)
    config.input.append(_tensor(m.ModelInput, INPUT, "TYPE_STRING", [1]))
    config.output.append(_tensor(m.ModelOutput, LABEL, "TYPE_STRING", [1]))
    config.output.append(_tensor(m.ModelOutput, PROBABILITIES, "TYPE_FP32", [n_labels], label_filename="labels.txt"))
    steps = [(f"{name}-tokenizer", {INPUT: INPUT}, {n: f"_{n}" for n in inputs}),
             (f"{name}-network", {n: f"_{n}" for n in inputs}, {logits: "_logits"}),
             (f"{name}-postprocess", {LOGITS: "_logits"}, {PROBABILITIES: PROBABILITIES, LABEL: LABEL})]
    for model, input_map, output_map in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(input_map)
        step.output_map.update(output_map)
    return config


# --- writing and checking -------------------------------------------------------------------------------------
def write_model(repo: Path, config, files: dict[str, Path | str]) -> None:
    """REPO/NAME/config.pbtxt, REPO/NAME/labels.txt and version 1's files ({name: source path, or text})."""
    _, text_format = pb()
    folder = repo / config.name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    for name, source in files.items():
        target = folder / name if name == "labels.txt" else folder / "1" / name
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        else:
            target.write_text(source, encoding="utf-8")


def read_config(path: Path):
    """A config.pbtxt parsed with Triton's schema; ServeError names the file and the problem."""
    m, text_format = pb()
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), m.ModelConfig())
    except text_format.ParseError as exc:
        raise ServeError(f"{path} does not parse as a Triton model config: {exc}") from None


def _declared(tensors) -> dict[str, tuple[str, list[int]]]:
    m, _ = pb()
    return {t.name: (m.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


def check_network(path: Path, inputs: dict[str, str], outputs: dict[str, str], n_labels: int) -> None:
    """The network's config.pbtxt against the graph (or engine): names, types, dims."""
    config = read_config(path)
    want_in = {n: (t, [-1]) for n, t in inputs.items()}
    want_out = {n: (t, [n_labels]) for n, t in outputs.items()}
    for what, declared, want in (("inputs", _declared(config.input), want_in),
                                 ("outputs", _declared(config.output), want_out)):
        if declared != want:
            raise ServeError(f"{path}: {what} {declared} do not match the network's {want}")


def check_ensemble(repo: Path, name: str) -> None:
    """Every step's inputs come from the ensemble's input or an earlier step, and each mapped tensor exists in
    that step's own config with the type it is fed."""
    config = read_config(repo / name / "config.pbtxt")
    available = {t: v for t, v in _declared(config.input).items()}
    for step in config.ensemble_scheduling.step:
        part = read_config(repo / step.model_name / "config.pbtxt")
        ins, outs = _declared(part.input), _declared(part.output)
        for model_input, tensor in step.input_map.items():
            if tensor not in available or model_input not in ins or available[tensor][0] != ins[model_input][0]:
                raise ServeError(f"{repo / name}: step {step.model_name} input {model_input!r} <- {tensor!r} is "
                                 f"not produced with type {ins.get(model_input, ('?',))[0]} before it")
        available.update({tensor: outs[out] for out, tensor in step.output_map.items()})
    missing = [t for t in _declared(config.output) if t not in available]
    if missing:
        raise ServeError(f"{repo / name}: ensemble outputs {missing} are produced by no step")


def export_model(folder: Path, name: str, repo: Path, options: RepoOptions) -> list[str]:
    """The four models of one folder; returns their names."""
    folder, kind = Path(folder), folder_kind(folder)
    labels, encoder = labels_of(folder), TextEncoder(folder)
    inputs, outputs = network_io(folder)
    logits, logits_type = next(iter(outputs.items()))
    label_text = "\n".join(labels) + "\n"
    if options.network_backend == "python":
        if kind != "onnx":
            raise ServeError(f"--network-backend python runs ONNX Runtime; {folder} is an engine folder")
        platform, net_files = "python", {"model.py": TEMPLATES / "onnxruntime_network.py",
                                         "model.onnx": folder / "model.onnx"}
    elif kind == "onnx":
        platform, net_files = "onnxruntime_onnx", {"model.onnx": folder / "model.onnx"}
    else:
        engine = json.loads((folder / "engine.json").read_text(encoding="utf-8"))["engine"]
        platform, net_files = "tensorrt_plan", {"model.plan": folder / engine}
    network = network_config(f"{name}-network", platform, inputs, (logits, logits_type), len(labels), options)
    skipped = disabled_optimizers(folder) if platform == "python" else []
    if skipped:  # as OrtPredictor loads the graph on the CPU
        _params(network, {"disabled_optimizers": ",".join(skipped)})
    write_model(repo, tokenizer_config(f"{name}-tokenizer", encoder, inputs, options),
                {"model.py": TEMPLATES / "tokenizer.py", "tokenizer.json": folder / "tokenizer.json"})
    write_model(repo, network, {**net_files, "labels.txt": label_text})
    write_model(repo, postprocess_config(f"{name}-postprocess", logits_type, len(labels), options),
                {"model.py": TEMPLATES / "postprocess.py", "labels.txt": label_text})
    write_model(repo, ensemble_config(name, inputs, logits, len(labels), options), {"labels.txt": label_text})
    check_network(repo / network.name / "config.pbtxt", inputs, outputs, len(labels))
    check_ensemble(repo, name)
    return [f"{name}-tokenizer", network.name, f"{name}-postprocess", name]


def export_repository(folders: list[Path], repo: Path, options: RepoOptions) -> list[str]:
    """Write REPO (replacing it atomically) with every folder's models; returns the model names."""
    from pipeline.serve.server import model_names

    pb()  # fail before any work without tritonclient
    names = model_names(folders, options.names)
    written: list[str] = []
    with atomic_dir(repo) as tmp:
        for folder, name in zip(folders, names):
            written += export_model(folder, name, tmp, options)
    return written
