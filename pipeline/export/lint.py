"""TensorRT-compatibility lint for an ONNX graph, on the CPU, without TensorRT installed.

The rules follow onnx-tensorrt's operator support matrix (docs/operators.md, TensorRT 10.0): operators it
marks unsupported, and the restrictions it documents that a graph can break, mostly "this input must be an
initializer" and "EyeLike needs static dimensions" (NVIDIA/TensorRT issue 3123). An error means the
TensorRT ONNX parser would reject the graph; a warning means it parses but something downstream suffers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import onnx
import onnx.numpy_helper

REFERENCE = "onnx-tensorrt docs/operators.md (TensorRT 10.0 operator support matrix)"
TRT_OPSET_RANGE = (9, 20)  # what TensorRT 10.0 documents; newer TensorRT releases extend it

UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "BlackmanWindow", "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer",
    "StringSplit", "TfIdfVectorizer", "Unique",
})
_INTEGER_QUANT = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}

# op type -> (input index, what it is): inputs the matrix says must be initializers (constants)
CONSTANT_INPUTS = {
    "CumSum": (1, "axis"), "Pad": (3, "axes"), "Slice": (3, "axes"), "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"), "TopK": (1, "K"), "OneHot": (1, "depth"), "Dropout": (2, "training_mode"),
    **{f"Reduce{r}": (1, "axes") for r in ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod",
                                          "Sum", "SumSquare")},
}


@dataclass
class Finding:
    severity: str  # "error": the parser rejects it; "warning": parses, but fusion/quantization suffers
    op_type: str
    node: str
    problem: str
    fix: str


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those of If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _nodes(sub)


def _constants(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.initializer}
    return names | {o for n in _nodes(graph) if n.op_type == "Constant" for o in n.output}


def _inferred(model: onnx.ModelProto) -> tuple[dict[str, bool], dict[str, int]]:
    """value name -> whether shape inference found every dimension fixed, and value name -> element type
    (initializers included)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    static = {v.name: v.type.tensor_type.HasField("shape")
              and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim) for v in values}
    types = {v.name: v.type.tensor_type.elem_type for v in values if v.type.tensor_type.elem_type}
    return static, {**types, **{i.name: i.data_type for i in model.graph.initializer}}


# what TensorRT's ONNX parser takes as a DequantizeLinear input (its "x"); everything else is rejected
DQ_INPUT_TYPES = {getattr(onnx.TensorProto, name): name for name in ("INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1")
                  if hasattr(onnx.TensorProto, name)}


def _check_node(node: onnx.NodeProto, constants: set[str], static: dict[str, bool],
                initializers: dict[str, onnx.TensorProto] | None = None,
                types: dict[str, int] | None = None) -> Iterator[Finding]:
    op, name = node.op_type, node.name or f"<unnamed {node.op_type}>"
    if node.domain not in ("", "ai.onnx"):
        yield Finding("error", op, name, f"custom-domain operator {node.domain}::{op}",
                      "TensorRT parses it only with a plugin; export without custom ops")
    elif op in UNSUPPORTED:
        fix = ("quantize with QDQ (QuantizeLinear/DequantizeLinear) nodes, which TensorRT reads"
               if op in _INTEGER_QUANT else "rewrite the model code so the exporter emits supported operators")
        yield Finding("error", op, name, f"{op} is not supported by the TensorRT ONNX parser", fix)
    if op == "EyeLike" and not static.get(node.input[0], False):
        yield Finding("error", op, name, "EyeLike on a dynamically shaped input (TensorRT needs static dims)",
                      "build the identity from Range + Equal, as pipeline/families/xlnet.py `_eye` does")
    if op in CONSTANT_INPUTS:
        index, what = CONSTANT_INPUTS[op]
        if len(node.input) > index and node.input[index] and node.input[index] not in constants:
            yield Finding("error", op, name, f"{op} input `{what}` is computed at run time; TensorRT needs "
                          "it as an initializer", f"make `{what}` a constant in the model code (a Python int)")
    if op == "TopK" and any(a.name == "sorted" and a.i == 0 for a in node.attribute):
        yield Finding("error", op, name, "TopK with sorted=0", "use sorted=1 (torch.topk(sorted=True))")
    if op in ("QuantizeLinear", "DequantizeLinear"):
        yield from _check_qdq(node, name, initializers or {})
    if op == "DequantizeLinear":
        yield from _check_dq_input(node, name, types or {})
    if op == "Einsum":
        yield Finding("warning", op, name, "Einsum: ORT's quantizer and TensorRT's fusions skip it; "
                      "ellipsis, diagonal and broadcasting forms fail in older TensorRT",
                      "write it as MatMul with a 2-D weight (see the XLNet export patches)")


def _check_qdq(node: onnx.NodeProto, name: str, initializers: dict[str, onnx.TensorProto]) -> Iterator[Finding]:
    """TensorRT's explicit quantization takes signed, symmetric Q/DQ: an int8 zero point that is all zeros
    (fp8/int4 too, which this pipeline does not write). ORT's default QDQ (uint8, asymmetric) is rejected."""
    zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero_point is None:
        return  # no zero point: int8 with zero 0 by the ONNX default
    fix = ("quantize with activation_type=QInt8, weight_type=QInt8 and extra_options ActivationSymmetric=True, "
           "WeightSymmetric=True (pipeline.export.tensorrt.quantize_qdq does)")
    if zero_point.data_type == onnx.TensorProto.UINT8:
        yield Finding("error", node.op_type, name, "uint8 Q/DQ: TensorRT supports only signed int8 quantization",
                      fix)
    elif zero_point.data_type == onnx.TensorProto.INT8 and onnx.numpy_helper.to_array(zero_point).any():
        yield Finding("error", node.op_type, name, "asymmetric Q/DQ (non-zero zero point): TensorRT needs "
                      "zero point 0", fix)


def _check_dq_input(node: onnx.NodeProto, name: str, types: dict[str, int]) -> Iterator[Finding]:
    """TensorRT dequantizes INT8/FP8/INT4/FP4 only. ONNX Runtime's static quantizer by default turns Gemm
    biases into INT32 initializers behind a DequantizeLinear (QuantizeBias), which the parser rejects."""
    elem = types.get(node.input[0])
    if elem is None or elem in DQ_INPUT_TYPES:
        return
    kind = onnx.TensorProto.DataType.Name(elem)
    yield Finding("error", node.op_type, name, f"DequantizeLinear of a {kind} input: TensorRT dequantizes only "
                  f"{'/'.join(DQ_INPUT_TYPES.values())}",
                  "keep biases in float: quantize_static(..., extra_options={'QuantizeBias': False}) "
                  "(pipeline.export.tensorrt.quantize_qdq does)")


def lint_tensorrt(model: onnx.ModelProto | str | Path) -> dict[str, Any]:
    """{"passed", "errors", "warnings", "reference"}; passed means no error-level finding."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    constants, (static, types) = _constants(model.graph), _inferred(model)
    initializers = {i.name: i for i in model.graph.initializer}
    findings = [f for node in _nodes(model.graph)
                for f in _check_node(node, constants, static, initializers, types)]
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if opset is not None and not TRT_OPSET_RANGE[0] <= opset <= TRT_OPSET_RANGE[1]:
        findings.append(Finding("warning", "opset", "model", f"opset {opset} is outside TensorRT 10.0's "
                                f"documented {TRT_OPSET_RANGE[0]}..{TRT_OPSET_RANGE[1]}",
                                "check the installed TensorRT's range, or export at an opset inside it"))
    return {"passed": not any(f.severity == "error" for f in findings), "reference": REFERENCE,
            "errors": [asdict(f) for f in findings if f.severity == "error"],
            "warnings": [asdict(f) for f in findings if f.severity == "warning"]}


def format_findings(result: dict[str, Any]) -> str:
    lines = [f"{f['op_type']} {f['node']}: {f['problem']} -> {f['fix']}"
             for f in result["errors"] + result["warnings"]]
    return "\n".join(lines) or "no findings"
