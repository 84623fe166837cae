"""Export a fine-tuned classifier folder to an ONNX folder, then prove it: parity with PyTorch, onnx.checker,
and the TensorRT lint.

The exporter is generic: what differs per family (inputs, dynamic axes, opset, tolerance, exporter, graph
patches) comes from the family's `OnnxSpec` and `export_patches`. The output folder holds `model.onnx`,
`config.json` (with id2label), the tokenizer files and `export.json`, and is written atomically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

from pipeline.errors import BilmError
from pipeline.export.lint import lint_tensorrt
from pipeline.families import Family, OnnxSpec, family_of_config
from pipeline.io import atomic_dir, read_jsonl, write_json
from pipeline.logs import quiet_loggers
from pipeline.model_limits import position_limit

log = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
PARITY_SHAPES = ((1, 8), (4, 37), (8, 128))  # plus (2, max length): see parity_shapes
MAX_PARITY_LENGTH = 512
# Fallback parity texts, used only when no test texts are given (the stage passes the test split).
SAMPLE_TEXTS = (
    "Great coffee, will buy again.",
    "The tea arrived stale and the box was crushed; I would not order it again.",
    "My dog loves these treats.",
    "Too sweet for my taste, but my kids finished the whole bag in two days.",
    "Good value for the price, fast shipping, and the flavor is rich without being bitter.",
    "Not what I expected.",
)


class ExportError(BilmError, RuntimeError):
    """An export that cannot be done or did not pass its checks; the message names the fix."""


class ParityError(ExportError):
    """ONNX Runtime's logits differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportSettings:
    opset: int
    atol: float
    exporter: str


def resolve_settings(spec: OnnxSpec, opset: int | None = None, atol: float | None = None,
                     exporter: str | None = None) -> ExportSettings:
    """The family's spec with the caller's overrides; bad values fail here, before any model loads."""
    settings = ExportSettings(opset=spec.opset if opset is None else opset,
                              atol=spec.atol if atol is None else atol,
                              exporter=spec.exporter if exporter is None else exporter)
    if settings.exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {settings.exporter!r}; choose one of {', '.join(EXPORTERS)}")
    low, high = _opset_range(settings.exporter)
    if not low <= settings.opset <= high:
        raise ExportError(f"opset {settings.opset} is outside what the {settings.exporter} exporter writes "
                          f"({low}..{high}); pass --opset between them (the family default is {spec.opset})")
    if not settings.atol > 0:
        raise ExportError(f"atol must be positive, got {settings.atol}")
    return settings


def _opset_range(exporter: str) -> tuple[int, int]:
    from torch.onnx import _constants  # private, so read with fallbacks

    low = getattr(_constants, "ONNX_MIN_OPSET", 7)
    high = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20) if exporter == "torchscript" \
        else getattr(_constants, "ONNX_MAX_OPSET", onnx.defs.onnx_opset_version())
    return low, min(high, onnx.defs.onnx_opset_version())


# --- loading -------------------------------------------------------------------------------------------
def inspect_model_dir(model_dir: str | Path) -> tuple[Family, Any]:
    """(family, config) of a fine-tuned folder, or an ExportError saying what is wrong with it."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"model folder {model_dir} does not exist; run the finetune stage first "
                          f"(dvc repro finetune) or pass the folder that holds config.json")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} has no config.json, so it is not a saved transformers model; "
                          f"pass a fine-tuned folder such as artifacts/models/bert")
    config = AutoConfig.from_pretrained(model_dir)
    try:
        family = family_of_config(config)
    except KeyError as exc:
        raise ExportError(f"{model_dir}: {exc.args[0]}") from None
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ExportError(f"{model_dir} holds a {', '.join(architectures) or 'base'} checkpoint, not a sequence "
                          f"classifier; export the fine-tuned folder (artifacts/models/{family.name}), "
                          f"not a pretrained one")
    return family, config


def load_classifier(model_dir: str | Path) -> tuple[Family, torch.nn.Module, Any]:
    """(family, model in eval mode, fast tokenizer) of a fine-tuned folder."""
    family, config = inspect_model_dir(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{model_dir} has no loadable tokenizer ({exc}); save the tokenizer next to the "
                          f"model with tokenizer.save_pretrained") from None
    # eager attention: the plain MatMul/Softmax pattern that ORT's transformer fusions recognise
    model = family.classifier_for(config).from_pretrained(model_dir, attn_implementation="eager")
    return family, model.eval(), tokenizer


# --- graph export --------------------------------------------------------------------------------------
class _Outputs(torch.nn.Module):
    """model(**named inputs) -> the spec's outputs as tensors (exporters want tensors, not ModelOutput)."""

    def __init__(self, model: torch.nn.Module, spec: OnnxSpec):
        super().__init__()
        self.model, self.inputs, self.outputs = model, spec.inputs, spec.outputs

    def forward(self, *tensors: torch.Tensor):
        out = self.model(**dict(zip(self.inputs, tensors)), return_dict=True)
        values = tuple(out[name] for name in self.outputs)
        return values[0] if len(values) == 1 else values


def _exporter_kwargs(spec: OnnxSpec, settings: ExportSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(input_names=list(spec.inputs), output_names=list(spec.outputs),
                                  opset_version=settings.opset)
    if settings.exporter == "dynamo":
        dims: dict[str, Any] = {}  # one torch.export.Dim per symbolic name, shared across inputs
        shapes = tuple({axis: dims.setdefault(sym, torch.export.Dim(sym)) for axis, sym in
                        spec.dynamic_axes.get(name, {}).items()} for name in spec.inputs)
        return {**kwargs, "dynamo": True, "dynamic_shapes": (shapes,), "external_data": False, "verbose": False}
    return {**kwargs, "dynamo": False, "dynamic_axes": spec.dynamic_axes, "do_constant_folding": True}


# logger -> the least level shown while exporting: the dynamo exporter logs every optional op library it skips
# (torch.onnx), and onnxscript's optimizer one INFO line per node it leaves unfolded (hundreds for XLNet)
_EXPORT_LOG_LEVELS = {"torch.onnx": logging.ERROR, "onnxscript": logging.WARNING}


def export_graph(family: Family, model: torch.nn.Module, tokenizer, path: Path, settings: ExportSettings) -> None:
    """Write `model.onnx` for `model` with the family's patches applied (and undone afterwards)."""
    spec = family.onnx
    wrapper = _Outputs(model, spec).eval()
    example = family.dummy_export_inputs(tokenizer)
    args = tuple(example[name] for name in spec.inputs)
    kwargs = _exporter_kwargs(spec, settings)
    printed = io.StringIO()  # the torchscript exporter prints its whole IR graph on failure: debug log only
    try:
        with torch.no_grad(), family.export_patches(model), warnings.catch_warnings(), \
                contextlib.redirect_stdout(printed), quiet_loggers(_EXPORT_LOG_LEVELS):
            warnings.simplefilter("ignore")  # tracer and axis-renaming chatter; failures still raise
            torch.onnx.export(wrapper, args, str(path), **kwargs)
    except Exception as exc:  # the exporters raise many types; name the family, opset and exporter
        log.debug("exporter output:\n%s", printed.getvalue())
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{family.name}: the {settings.exporter} exporter failed at opset {settings.opset}: "
                          f"{first_line[:500]}. If an operator is missing at this opset, raise --opset "
                          f"(the family default is {spec.opset}); else try --exporter "
                          f"{'dynamo' if settings.exporter == 'torchscript' else 'torchscript'}") from exc
    model.eval()  # the torchscript exporter restores the wrapper's mode, which must stay eval


def check_graph(path: Path) -> dict[str, Any]:
    """onnx.checker with full checking (shape inference included); a failure stops the export."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {str(exc).splitlines()[0]}") from exc
    return {"passed": True, "full_check": True}


def graph_signature(model: onnx.ModelProto) -> dict[str, Any]:
    """Input/output names, element types and dims (symbolic names for dynamic axes) as written."""
    def describe(values) -> dict[str, Any]:
        return {v.name: {"dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                         "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
                for v in values}

    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": describe(v for v in model.graph.input if v.name not in initializers),
            "outputs": describe(model.graph.output),
            "opset_imports": {i.domain or "ai.onnx": i.version for i in model.opset_import}}


# --- parity --------------------------------------------------------------------------------------------
def max_parity_length(tokenizer, config) -> int:
    """The longest sequence checked: min(tokenizer max, config max positions if any, 512)."""
    limits = [MAX_PARITY_LENGTH, position_limit(config.to_dict()),
              tokenizer.model_max_length if tokenizer.model_max_length < 10 ** 6 else None]
    return min(n for n in limits if n and n > 0)


def parity_shapes(max_length: int) -> list[tuple[int, int]]:
    shapes = [(b, min(s, max_length)) for b, s in PARITY_SHAPES] + [(2, max_length)]
    return list(dict.fromkeys(shapes))  # drop repeats when max_length is small


def _short_text(tokenizer, texts: list[str], seq: int) -> str:
    """A real text, cut word by word until it encodes to fewer than `seq` tokens: that row has padding."""
    words = min(texts, key=len).split()
    while len(words) > 1 and len(tokenizer(" ".join(words))["input_ids"]) >= seq:
        words = words[: len(words) // 2]
    return " ".join(words)


def parity_batch(tokenizer, texts: list[str], batch: int, seq: int, offset: int = 0) -> dict[str, torch.Tensor]:
    """A batch of exactly batch x seq tokens from real texts: one row filled to `seq` (texts joined),
    the last row short (so padding is present), the others as they come, truncated or padded."""
    rows = [texts[(offset + i) % len(texts)] for i in range(batch)]
    if batch > 1:
        rows[0] = " ".join(texts[(offset + i) % len(texts)] for i in range(max(1, seq // 4)))
    rows[-1] = _short_text(tokenizer, texts, seq)
    return tokenizer(rows, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")


def check_parity(family: Family, model: torch.nn.Module, session: ort.InferenceSession, tokenizer,
                 texts: list[str], shapes: list[tuple[int, int]], atol: float) -> list[dict[str, Any]]:
    """Run PyTorch (unpatched) and ONNX Runtime on each shape; record diffs; raise if any is over atol."""
    records = []
    for k, (batch, seq) in enumerate(shapes):
        enc = parity_batch(tokenizer, texts, batch, seq, offset=k * 7)
        inputs = [enc[name] for name in family.onnx.inputs]
        with torch.no_grad():
            expected = model(**dict(zip(family.onnx.inputs, inputs))).logits.numpy()
        got = session.run([family.onnx.outputs[0]], {n: t.numpy() for n, t in zip(family.onnx.inputs, inputs)})[0]
        diff = float(np.abs(expected - got).max())
        records.append({"shape": f"{batch}x{seq}", "batch": batch, "sequence": seq,
                        "padded_rows": int((enc["attention_mask"] == 0).any(1).sum()),
                        "max_abs_diff": diff, "label_agreement": float((expected.argmax(-1) == got.argmax(-1)).mean()),
                        "passed": diff <= atol})
    failed = [r for r in records if not r["passed"]]
    if failed:
        detail = "; ".join(f"shape {r['shape']}: max abs logit diff {r['max_abs_diff']:.3g}" for r in failed)
        raise ParityError(f"{family.name} ONNX parity failed ({detail}) > atol {atol:g}. The exported graph "
                          f"computes different numbers: check the family's export_patches, or try the other "
                          f"exporter; raise atol only if the difference is expected (e.g. fp16)")
    return records


def load_parity_texts(path: str | Path | None, field: str | None = None, limit: int = 256) -> list[str]:
    """Non-empty texts of a JSONL split (`field`, else "text", else the first string value)."""
    if path is None or not Path(path).is_file():
        return list(SAMPLE_TEXTS)
    texts = []
    for row in read_jsonl(path)[:limit]:
        value = row.get(field) if field else None
        value = value if isinstance(value, str) else row.get("text")
        value = value if isinstance(value, str) else next((v for v in row.values() if isinstance(v, str)), None)
        if value and value.strip():
            texts.append(value)
    return texts or list(SAMPLE_TEXTS)


# --- the whole export ----------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import onnxscript

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "onnxscript": onnxscript.__version__}


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, opset: int | None = None,
                atol: float | None = None, exporter: str | None = None,
                texts: list[str] | None = None) -> dict[str, Any]:
    """Export `model_dir` (a fine-tuned classifier folder) to the ONNX folder `out_dir`; return export.json.

    Fails, leaving `out_dir` as it was, if the graph does not pass onnx.checker or parity.
    """
    family, _ = inspect_model_dir(model_dir)
    settings = resolve_settings(family.onnx, opset, atol, exporter)
    family, model, tokenizer = load_classifier(model_dir)
    texts = [t for t in (texts or SAMPLE_TEXTS) if t and t.strip()] or list(SAMPLE_TEXTS)
    with atomic_dir(out_dir) as tmp:
        path = tmp / "model.onnx"
        log.info("exporting %s with the %s exporter at opset %d", family.name, settings.exporter, settings.opset)
        export_graph(family, model, tokenizer, path, settings)
        checker = check_graph(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shapes = parity_shapes(max_parity_length(tokenizer, model.config))
        parity = check_parity(family, model, session, tokenizer, texts, shapes, settings.atol)
        graph = onnx.load(str(path))
        info = {"family": family.name, "source": str(model_dir), **dataclasses.asdict(settings),
                **graph_signature(graph), "dynamic_axes": family.onnx.dynamic_axes,
                "parity": {"atol": settings.atol, "max_abs_diff": max(r["max_abs_diff"] for r in parity),
                           "label_agreement": min(r["label_agreement"] for r in parity), "shapes": parity},
                "onnx_checker": checker, "tensorrt_lint": lint_tensorrt(graph),
                "op_types": sorted({n.op_type for n in graph.graph.node}), "versions": versions()}
        model.config.save_pretrained(tmp)  # config.json, with id2label
        tokenizer.backend_tokenizer.no_padding()  # else tokenizer.json keeps the last parity call's padding
        tokenizer.backend_tokenizer.no_truncation()
        tokenizer.save_pretrained(tmp)  # tokenizer.json + tokenizer_config.json, all the runtime reads
        if (Path(model_dir) / "bilm.json").is_file():  # the params that made the model travel with it
            shutil.copy2(Path(model_dir) / "bilm.json", tmp / "bilm.json")
        write_json(tmp / "export.json", info)
    return info


def export_summary(info: dict[str, Any]) -> str:
    lint = info["tensorrt_lint"]
    return (f"{info['family']}: {info['exporter']} exporter, opset {info['opset']}; parity max abs diff "
            f"{info['parity']['max_abs_diff']:.2e} (atol {info['atol']:g}), label agreement "
            f"{info['parity']['label_agreement']:.0%}; TensorRT lint {'passed' if lint['passed'] else 'FAILED'} "
            f"({len(lint['errors'])} errors, {len(lint['warnings'])} warnings)")


def read_export_info(onnx_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(onnx_dir) / "export.json").read_text(encoding="utf-8"))


def export_family(family: str, params, paths=None) -> dict[str, Any]:
    """The export stage: artifacts/models/FAMILY -> artifacts/onnx/FAMILY, parity on the test split's texts."""
    from pipeline.paths import Paths

    paths = paths or Paths()
    texts = load_parity_texts(paths.split("test"), field=params.data.text_column)
    return export_onnx(paths.model(family), paths.onnx(family), opset=params.export.opset,
                       atol=params.export.atol, exporter=params.export.exporter, texts=texts)
