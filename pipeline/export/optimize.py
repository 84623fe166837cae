"""ONNX Runtime variants of an fp32 ONNX folder: `fused`, `int8` (dynamic or static) and `fp16`.

Each variant is its own folder with the fp32 folder's contract (model.onnx, config.json, tokenizer files,
export.json with a `variant` section), written atomically, so `OrtPredictor` loads it unchanged. A variant
is kept only if it passes the accuracy gate: validation macro-F1 within `max_f1_drop` points of the fp32
ONNX model's.

Order matters. The graph is fused first (ORT's transformer fusions, with each family's switches from its
OnnxSpec), then typed with ORT's symbolic shape inference, which knows the contrib ops the fusions emit;
without it, quantizing a fused graph fails with "Unable to find data type for weight_name". INT8 dynamic
and fp16 start from the fused graph (BERT's Attention becomes QAttention); INT8 static starts from the fp32
graph, since fused contrib ops have no QDQ form, and ORT fuses at load time.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from pipeline.errors import BilmError
from pipeline.config import OptimizeConfig
from pipeline.families import Family, get_family
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.logs import quiet_loggers

log = logging.getLogger(__name__)

VARIANTS = ("fused", "int8", "int8-dynamic", "int8-static", "fp16")
INT8_METHODS = ("dynamic", "static")
QUANTIZED_OPS = ("MatMul", "Gemm", "Attention")  # weight-bearing ops; MatMuls of two activations stay fp32
FOLDER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "bilm.json",
                "vocab.txt", "spiece.model")


class OptimizeError(BilmError, RuntimeError):
    """A source folder, variant or setting that cannot be used; the message names the fix."""


class GateError(OptimizeError):
    """A variant lost more validation macro-F1 against fp32 ONNX than `max_f1_drop` allows."""

    def __init__(self, message: str, results: dict[str, Any] | None = None):
        super().__init__(message)
        self.results = results or {}  # every variant's gate record so far, for the metrics file


@dataclass
class Source:
    """The fp32 ONNX folder a variant is made from."""

    folder: Path
    family: Family
    info: dict[str, Any]  # its export.json
    config: dict[str, Any]  # its config.json

    @property
    def model_path(self) -> Path:
        return self.folder / "model.onnx"


def load_source(onnx_dir: str | Path) -> Source:
    """The fp32 ONNX folder, checked before any work: model.onnx, config.json and export.json."""
    folder = Path(onnx_dir)
    if not folder.is_dir():
        raise OptimizeError(f"ONNX folder {folder} does not exist; export one first "
                            f"(dvc repro export, or bilm export onnx MODEL_DIR {folder})")
    for name, why in (("model.onnx", "the graph"), ("config.json", "labels"),
                      ("export.json", "family, opset and parity of the fp32 export")):
        if not (folder / name).is_file():
            raise OptimizeError(f"{folder} has no {name} ({why}), so it is not a folder written by "
                                f"`bilm export onnx`; re-export it with `bilm export onnx MODEL_DIR {folder}`")
    info = read_json(folder / "export.json")
    if "variant" in info:
        raise OptimizeError(f"{folder} is already the {info['variant']['name']!r} variant of "
                            f"{info['variant']['source']}; optimize the fp32 folder instead")
    try:
        family = get_family(info.get("family", ""))
    except KeyError as exc:
        raise OptimizeError(f"{folder}/export.json: {exc.args[0]}") from None
    return Source(folder, family, info, read_json(folder / "config.json"))


def resolve_variants(source: Source, variants: list[str], cfg: OptimizeConfig) -> list[str]:
    """Validated variant names; an unknown one, or one the family cannot produce, fails here with why."""
    if not variants:
        raise OptimizeError(f"no variants asked for; choose from {', '.join(VARIANTS)}")
    for name in variants:
        if name not in VARIANTS:
            raise OptimizeError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        why = source.family.onnx.unsupported_variants.get(name)
        if why:
            raise OptimizeError(f"the {source.family.name} family cannot produce the {name!r} variant: {why}")
    int8_method(source.family, cfg)  # a bad method fails before any work too
    if cfg.max_f1_drop < 0:
        raise OptimizeError(f"optimize.max_f1_drop must be >= 0 points, got {cfg.max_f1_drop}")
    return list(dict.fromkeys(variants))


def int8_method(family: Family, cfg: OptimizeConfig, variant: str = "int8") -> str:
    """'dynamic' or 'static': the variant's own (int8-dynamic, int8-static), the config's, or the family's."""
    method = variant.split("-", 1)[1] if "-" in variant else (cfg.int8_method or family.onnx.int8_method)
    if method not in INT8_METHODS:
        raise OptimizeError(f"unknown INT8 method {method!r}; set optimize.int8_method to one of "
                            f"{', '.join(INT8_METHODS)} (or null for the family's choice)")
    return method


# --- graph passes ----------------------------------------------------------------------------------------
# ORT's symbolic shape inference warns once per dynamic Slice it cannot bound ("Cannot determine if 512 -
# sequence < 0": hundreds of lines for a base model), under two logger names (the optimizer's copy and
# onnxruntime.tools'); the graphs are checked by the parity and accuracy gates instead
_SHAPE_INFERENCE_LOGGERS = dict.fromkeys(("symbolic_shape_infer", "onnxruntime.tools.symbolic_shape_infer"), logging.ERROR)


def fuse_graph(source: Source, out_path: Path, skip_layer_norm: str = "split") -> dict[str, Any]:
    """ORT transformer fusions with the family's switches, SkipLayerNormalization split where asked (see
    split_skip_layer_norms), then symbolic shape inference; write out_path."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    spec = source.family.onnx
    options = FusionOptions(spec.ort_model_type)
    for name in spec.fusions_off:
        if not hasattr(options, f"enable_{name}"):
            raise OptimizeError(f"{source.family.name}: OnnxSpec.fusions_off names {name!r}, which is not an "
                                f"onnxruntime FusionOptions switch (enable_{name})")
        setattr(options, f"enable_{name}", False)
    heads, hidden = (int(source.config.get(k, 0)) for k in spec.attention_config_keys)
    with quiet_loggers(_SHAPE_INFERENCE_LOGGERS):
        fused = optimize_model(str(source.model_path), model_type=spec.ort_model_type, num_heads=heads,
                               hidden_size=hidden, optimization_options=options, opt_level=0)
        fused_ops = fused.get_fused_operator_statistics()
        split = split_skip_layer_norms(fused.model) if skip_layer_norm == "split" else 0
        fused.topological_sort()
        fused.save_model_to_file(str(out_path))  # also adds the com.microsoft opset import
        typed = SymbolicShapeInference.infer_shapes(onnx.load(str(out_path)), auto_merge=True)
    onnx.save(typed, str(out_path))
    return {"step": "fuse", "tool": "onnxruntime.transformers.optimizer", "model_type": spec.ort_model_type,
            "fusions_off": list(spec.fusions_off), "fused_ops": fused_ops,
            "skip_layer_norm": {"mode": skip_layer_norm, "split": split}}


# ORT's CPU SkipLayerNormalization kernel (ORT 1.32, 2 threads, AMX Xeon) took 2.5-3.6x as long as an Add and a
# LayerNormalization on the same tensors: 336 against 134 us at 32 x 32 x 128, 1914 against 530 us at
# 8 x 128 x 768. Split back into those two ops, BERT small's fused graph ran 1.09-1.21x and its INT8 graph
# 1.04-1.37x faster (1 x 128 to 64 x 128). A session loading the graph fuses an Add + LayerNormalization pair
# back into SkipLayerNormalization (ORT 1.32 matches x + skip and (x + bias) + skip, not the (x + skip) + bias
# written here), so the CPU variants' export.json names its SkipLayerNormFusion transformer for CPU sessions to
# skip; GPU providers (whose SkipLayerNormalization kernel is the fast form) fuse the pairs again as before.
SKIP_LAYER_NORM_FUSION = "SkipLayerNormFusion"


def split_skip_layer_norms(model: onnx.ModelProto) -> int:
    """Each SkipLayerNormalization(x, skip, gamma[, beta[, bias]]) whose mean and inverse-std outputs are unused
    -> Add(x, skip) [-> Add(bias)] -> LayerNormalization, in place; returns how many were split."""
    from onnx import helper

    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    nodes, split = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization" or any(o in used for o in node.output[1:3] if o):
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.name}_sum"
        added = f"{node.name}_skip_sum" if bias else total
        nodes.append(helper.make_node("Add", [x, skip], [added], name=f"{node.name}_add"))
        if bias:
            nodes.append(helper.make_node("Add", [added, bias], [total], name=f"{node.name}_add_bias"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []),
                                      [node.output[0]], name=f"{node.name}_layer_norm", axis=-1, epsilon=epsilon))
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul / Gemm / Attention nodes whose weight (input 1) is a 2-D initializer."""
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in weights]


def quantize_dynamic_graph(fused_path: Path, out_path: Path, cfg: OptimizeConfig) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fused_path), load_external_data=False)
    # BERT's fused embeddings (word + position + segment tables) become QEmbedLayerNormalization
    nodes = weight_nodes(graph) + [n.name for n in graph.graph.node if n.op_type == "EmbedLayerNormalization"]
    with quiet_loggers(_SHAPE_INFERENCE_LOGGERS):
        quantize_dynamic(str(fused_path), str(out_path), weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                         nodes_to_quantize=nodes, op_types_to_quantize=[*QUANTIZED_OPS, "EmbedLayerNormalization"])
    tables = quantize_tables(out_path)
    return {"tables_int8": tables, "step": "quantize", "method": "dynamic", "source_graph": "fused", "weights": "int8 (symmetric)",
            "activations": "uint8, scaled per batch at run time", "per_channel": cfg.per_channel,
            "quantized_nodes": len(nodes)}


def quantize_static_graph(source: Source, out_path: Path, cfg: OptimizeConfig,
                          texts: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from pipeline.export.calibration import TextCalibrationReader

    names = list(source.family.onnx.inputs)
    reader = TextCalibrationReader(source.folder, texts, names, cfg.calibration_batch_size)  # empty: fails here
    nodes = weight_nodes(onnx.load(str(source.model_path), load_external_data=False))
    quantize_static(str(source.model_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                    nodes_to_quantize=nodes, op_types_to_quantize=["MatMul", "Gemm"],
                    calibrate_method=CalibrationMethod.MinMax)
    return {"step": "quantize", "method": "static", "source_graph": "fp32 (ORT fuses the QDQ graph at load)",
            "format": "QDQ", "weights": "int8", "activations": "uint8, ranges from calibration (MinMax)",
            "per_channel": cfg.per_channel, "quantized_nodes": len(nodes),
            "calibration": {"texts": reader.size, "batch_size": cfg.calibration_batch_size, "split": "train"}}


def _constant_ints(model: onnx.ModelProto, name: str) -> list[int] | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).tolist()
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t).tolist()
    return None


def _selects_rows(model: onnx.ModelProto, node: onnx.NodeProto, table: str) -> bool:
    """True when `node` only picks rows (axis 0) of `table`: Gather on axis 0, or Slice with axes [0]."""
    if node.input[0] != table or table in node.input[1:]:
        return False
    if node.op_type == "Gather":
        return all(a.i == 0 for a in node.attribute if a.name == "axis")
    return node.op_type == "Slice" and len(node.input) > 3 and _constant_ints(model, node.input[3]) in ([0], [-2])


def quantize_tables(path: Path, min_elements: int = 1 << 16) -> list[str]:
    """Store large fp32 lookup tables (embeddings, XLNet's relative-position keys) as int8 with one scale
    per column, dequantized after the Gather/Slice that picks their rows: only the rows used are expanded.

    ORT's dynamic quantizer leaves these tables in fp32; XLNet's [2L, n*d] key tables alone would keep its
    INT8 model above a third of fp32's size.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    done = []
    for init in list(model.graph.initializer):
        users = consumers.get(init.name, [])
        if (init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2 or np.prod(init.dims) < min_elements
                or not users or not all(_selects_rows(model, n, init.name) for n in users)):
            continue
        table = numpy_helper.to_array(init)
        scale = (np.abs(table).max(axis=0) / 127.0).astype(np.float32) + np.float32(1e-12)  # [columns]
        init.CopyFrom(numpy_helper.from_array(np.round(table / scale).clip(-127, 127).astype(np.int8), init.name))
        model.graph.initializer.extend([numpy_helper.from_array(scale, f"{init.name}_scale"),
                                        numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{init.name}_zp")])
        for node in users:
            rows = f"{node.output[0]}_int8"
            dq = helper.make_node("DequantizeLinear", [rows, f"{init.name}_scale", f"{init.name}_zp"],
                                  [node.output[0]], name=f"{node.name}_dequantize", axis=-1)
            node.output[0] = rows
            model.graph.node.insert(list(model.graph.node).index(node) + 1, dq)
        done.append(init.name)
    if done:
        onnx.save(model, str(path))
    return done


def fp16_graph(fused_path: Path, out_path: Path) -> dict[str, Any]:
    """fp16 weights and activations inside; inputs and outputs keep their types (int64 ids, fp32 logits)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fused_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path))
    return {"step": "fp16", "tool": "onnxruntime.transformers float16", "keep_io_types": True,
            "intended_for": "GPU execution providers (CUDA, TensorRT); on CPU ORT casts back around most ops"}


# --- the accuracy gate -------------------------------------------------------------------------------------
@dataclass
class GateData:
    """Validation texts and their label ids; `calibration` holds train texts for static INT8."""

    texts: list[str]
    labels: list[int]
    calibration: list[str]


def predict_ids(folder: Path, texts: list[str], batch_size: int) -> list[int]:
    """Label ids from the folder's model through the runtime's Predictor (length-bucketed batches)."""
    from pipeline.runtime import OrtPredictor, TruncationWarning

    predictor = OrtPredictor(folder)
    label2id = {v: k for k, v in predictor.id2label.items()}
    with warnings.catch_warnings():  # long reviews are cut to the model's length, as in serving
        warnings.simplefilter("ignore", TruncationWarning)
        return [label2id[r["label"]] for r in predictor.classify(texts, batch_size=batch_size)]


def gate_record(name: str, reference: list[int], predicted: list[int], labels: list[int],
                id2label: dict[int, str], max_f1_drop: float) -> dict[str, Any]:
    """Label agreement with fp32 ONNX and the macro-F1 change (points) against the true labels."""
    from pipeline.metrics import classification_metrics

    f1_ref = classification_metrics(labels, reference, id2label)["f1_macro"]
    f1 = classification_metrics(labels, predicted, id2label)["f1_macro"]
    change = 100 * (f1 - f1_ref)
    return {"variant": name, "n": len(labels), "split": "validation",
            "label_agreement": sum(a == b for a, b in zip(reference, predicted)) / max(len(labels), 1),
            "f1_macro_fp32": f1_ref, "f1_macro": f1, "f1_change_points": change,
            "max_f1_drop_points": max_f1_drop, "passed": -change <= max_f1_drop}


def check_gate(record: dict[str, Any]) -> None:
    if not record["passed"]:
        raise GateError(
            f"accuracy gate failed for variant {record['variant']!r}: validation macro-F1 changed by "
            f"{record['f1_change_points']:+.2f} points ({record['f1_macro_fp32']:.4f} -> {record['f1_macro']:.4f}, "
            f"{record['n']} texts, label agreement {record['label_agreement']:.1%}), a drop beyond the threshold "
            f"of {record['max_f1_drop_points']:g} points (optimize.max_f1_drop). Drop this variant from "
            f"optimize.variants, try optimize.int8_method=static|dynamic or per_channel, or raise max_f1_drop")


def load_gate_data(paths, cfg: OptimizeConfig) -> GateData:
    """Validation split (text, label_id) for the gate; train texts for calibration (none when absent)."""
    from pipeline.data import read_split

    if not paths.split("validation").is_file():
        raise OptimizeError(f"{paths.split('validation')} not found: the accuracy gate needs the validation split; "
                            f"run `dvc repro prepare` (or bilm prepare)")
    texts, labels = read_split("validation", paths)
    n = cfg.max_gate_samples or None
    calibration = read_split("train", paths)[0][: cfg.calibration_size] if paths.split("train").is_file() else []
    return GateData(texts[:n], [int(label) for label in labels[:n]], calibration)


# --- building the folders ----------------------------------------------------------------------------------
def copy_folder_files(source: Path, out: Path) -> None:
    """What a predictor reads besides the graph or engine (config.json, tokenizer files) and bilm.json."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FOLDER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def _variant_info(source: Source, name: str, model_path: Path, steps: list[dict], gate: dict) -> dict[str, Any]:
    """The source's export.json, with this graph's signature and op types, plus a `variant` section."""
    from pipeline.export.onnx import graph_signature

    graph = onnx.load(str(model_path), load_external_data=False)
    size, source_size = model_path.stat().st_size, source.model_path.stat().st_size
    info = {**source.info, **graph_signature(graph), "op_types": sorted({n.op_type for n in graph.graph.node})}
    info["variant"] = {"name": name, "source": str(source.folder), "steps": steps, "gate": gate,
                       "size_bytes": size, "source_size_bytes": source_size, "size_ratio": size / source_size,
                       "note": "parity above is the fp32 source's; this variant's check is `gate`"}
    return info


def _make_graph(source: Source, name: str, fused: Path, out: Path, cfg: OptimizeConfig,
                data: GateData) -> list[dict[str, Any]]:
    """Write variant `name`'s model.onnx to `out`; return the steps taken."""
    fuse_step = {"step": "fuse", "graph": "see the fused variant"}
    if name == "fused":
        shutil.copy2(fused, out)
        return [read_json(fused.with_suffix(".json"))]
    if name == "fp16":
        return [fuse_step, fp16_graph(fused, out)]
    method = int8_method(source.family, cfg, name)
    reason = source.family.onnx.int8_reason if method == source.family.onnx.int8_method else "set in params"
    if method == "dynamic":
        return [fuse_step, {**quantize_dynamic_graph(fused, out, cfg), "why": reason}]
    return [{**quantize_static_graph(source, out, cfg, data.calibration), "why": reason}]


def session_section(name: str, steps: list[dict[str, Any]], fuse: dict[str, Any]) -> dict[str, Any]:
    """export.json's `session` section for a graph made from the fused graph with its SkipLayerNormalizations
    split: CPU sessions skip the transformer that would fuse them again. Not for fp16, which is meant for GPU
    providers (they fuse them again, into their fast kernel), nor for a graph made from the fp32 source."""
    from pipeline.runtime.graph_info import SESSION_KEY

    if name == "fp16" or steps[0].get("step") != "fuse" or not fuse.get("skip_layer_norm", {}).get("split"):
        return {}
    return {SESSION_KEY: {"cpu": {"disabled_optimizers": [SKIP_LAYER_NORM_FUSION]},
                          "why": "the graph's Add + LayerNormalization pairs run faster on ORT's CPU kernels than "
                                 "the SkipLayerNormalization ORT would fuse them into (optimize.skip_layer_norm)"}}


def build_variant(source: Source, name: str, fused: Path, out_dir: Path, cfg: OptimizeConfig, data: GateData,
                  reference: list[int]) -> dict[str, Any]:
    """One variant folder, written only if it passes the gate; returns its gate record."""
    with atomic_dir(out_dir) as tmp:
        steps = _make_graph(source, name, fused, tmp / "model.onnx", cfg, data)
        copy_folder_files(source.folder, tmp)
        session = session_section(name, steps, read_json(fused.with_suffix(".json")))
        write_json(tmp / "export.json", session)  # the gate's predictor loads the graph as sessions will
        predicted = predict_ids(tmp, data.texts, cfg.gate_batch_size)
        id2label = {int(k): v for k, v in source.config["id2label"].items()}
        gate = gate_record(name, reference, predicted, data.labels, id2label, cfg.max_f1_drop)
        info = {**_variant_info(source, name, tmp / "model.onnx", steps, gate), **session}
        log.info("%s-%s: %.1f MB (%.0f%% of fp32), macro-F1 %+.2f points, agreement %.1f%%", source.family.name,
                 name, info["variant"]["size_bytes"] / 1e6, 100 * info["variant"]["size_ratio"],
                 gate["f1_change_points"], 100 * gate["label_agreement"])
        check_gate(gate)  # raising here removes the temporary folder: no failed variant is left behind
        write_json(tmp / "export.json", info)
    return {**gate, "size_bytes": info["variant"]["size_bytes"], "size_ratio": info["variant"]["size_ratio"]}


def optimize_onnx(onnx_dir: str | Path, variants: list[str], cfg: OptimizeConfig, data: GateData,
                  out_dir_of=None) -> dict[str, Any]:
    """Build each variant of the fp32 folder `onnx_dir`; `out_dir_of(name)` is its folder (default: a sibling
    `{onnx_dir}-{name}`). Returns {variant: gate record}; raises GateError on the first failing variant,
    after recording every variant built so far."""
    source = load_source(onnx_dir)
    variants = resolve_variants(source, variants, cfg)
    if not data.texts:
        raise OptimizeError("the accuracy gate has no validation texts; check artifacts/data/validation.jsonl")
    if any(int8_method(source.family, cfg, v) == "static" for v in variants if v.startswith("int8")):
        from pipeline.export.calibration import CalibrationError

        if not data.calibration:
            raise CalibrationError("the calibration set is empty: static INT8 needs train-split texts "
                                   "(artifacts/data/train.jsonl, optimize.calibration_size > 0); or use "
                                   "optimize.int8_method=dynamic")
    out_dir_of = out_dir_of or (lambda name: source.folder.with_name(f"{source.folder.name}-{name}"))
    reference = predict_ids(source.folder, data.texts, cfg.gate_batch_size)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".optimize-", dir=source.folder.parent) as work:
        fused = Path(work) / "fused.onnx"
        write_json(fused.with_suffix(".json"), fuse_graph(source, fused, cfg.skip_layer_norm))
        for name in variants:
            try:
                results[name] = build_variant(source, name, fused, Path(out_dir_of(name)), cfg, data, reference)
            except GateError as exc:
                results[name] = {"variant": name, "passed": False, "error": str(exc)}
                raise GateError(str(exc), results) from None
    return results


def optimize_family(family: str, params, paths=None) -> dict[str, Any]:
    """The optimize@FAMILY stage: every variant of artifacts/onnx/FAMILY, metrics under metrics/optimize."""
    from pipeline.paths import Paths

    paths = paths or Paths()
    cfg = params.optimize
    data = load_gate_data(paths, cfg)
    metrics_path = paths.metrics("optimize") / f"{family}.json"
    try:
        results = optimize_onnx(paths.onnx(family), cfg.variants, cfg, data,
                                out_dir_of=lambda name: paths.onnx(family, name))
    except GateError as exc:
        write_json(metrics_path, exc.results or {"error": str(exc)})
        raise
    write_json(metrics_path, results)
    return results


def summary(family: str, results: dict[str, Any]) -> str:
    return "\n".join(f"{family}-{name}: macro-F1 {r['f1_change_points']:+.2f} points vs fp32, label agreement "
                     f"{r['label_agreement']:.1%}, {r['size_bytes'] / 1e6:.1f} MB ({r['size_ratio']:.0%} of fp32)"
                     for name, r in results.items() if "f1_change_points" in r)
