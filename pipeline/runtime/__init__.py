"""Inference behind one interface, `Predictor`. The ONNX Runtime path imports neither torch nor transformers.

Backends: `OrtPredictor` (onnxruntime + tokenizers; CPU, or CUDA and TensorRT execution providers with
onnxruntime-gpu), and, imported lazily by whoever needs them so that this package stays importable without
torch: `pipeline.runtime.torch_backend` (PyTorch) and `pipeline.runtime.trt.TrtPredictor` (TensorRT engines).
"""
from pipeline.runtime.base import Predictor, TruncationWarning, softmax
from pipeline.runtime.inputs import (InputItem, classify_items, items_from_jsonl, items_from_lines,
                                     items_from_texts)
from pipeline.runtime.ort import PROVIDERS, OrtPredictor, resolve_providers
from pipeline.runtime.text import PredictorError, TextEncoder

__all__ = ["Predictor", "OrtPredictor", "PredictorError", "TextEncoder", "TruncationWarning", "InputItem",
           "PROVIDERS", "classify_items", "items_from_jsonl", "items_from_lines", "items_from_texts",
           "resolve_providers", "softmax"]
