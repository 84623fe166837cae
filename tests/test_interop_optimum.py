"""Interop with Hugging Face Optimum (the `interop` extra): our BERT ONNX folder loads in
ORTModelForSequenceClassification with the same predictions, and matches Optimum's own export of the same
checkpoint in numbers and, within noise, in latency.

Skipped when optimum's ONNX Runtime support is not importable: optimum-onnx 0.1 pins transformers < 4.58,
so it cannot be installed next to transformers 5 (install `bilm-pipeline[interop]` in a separate env).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from export_fixtures import bert_model_dir, bert_onnx_dir, texts  # noqa: F401

try:
    from optimum.onnxruntime import ORTModelForSequenceClassification
except Exception as exc:  # ImportError, or an optimum built for another transformers failing on import
    pytest.skip(f"optimum[onnxruntime] is not importable here ({type(exc).__name__}: {exc}); it caps "
                f"transformers below 5 — run in an env with the `interop` extra", allow_module_level=True)

from pipeline.runtime import OrtPredictor


def _median_ms(session, feed: dict, runs: int = 30) -> float:
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def test_our_folder_loads_in_optimum_with_same_predictions(bert_onnx_dir, texts):
    from transformers import AutoTokenizer

    model = ORTModelForSequenceClassification.from_pretrained(bert_onnx_dir, file_name="model.onnx")
    tokenizer = AutoTokenizer.from_pretrained(bert_onnx_dir)
    enc = tokenizer(texts[:16], padding=True, truncation=True, max_length=256, return_tensors="np")
    optimum_probs = _softmax(np.asarray(model(**enc).logits))
    ours = OrtPredictor(bert_onnx_dir).classify(texts[:16])
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in ours], optimum_probs, atol=1e-5)


def test_cross_check_against_optimums_own_export(bert_model_dir, bert_onnx_dir, texts, tmp_path):
    import onnxruntime as ort
    from optimum.exporters.onnx import main_export
    from transformers import AutoTokenizer

    main_export(str(bert_model_dir), tmp_path / "optimum", task="text-classification")
    enc = AutoTokenizer.from_pretrained(bert_model_dir)(texts[:8], padding=True, truncation=True, max_length=128,
                                                        return_tensors="np")
    sessions = {name: ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
                for name, path in {"ours": bert_onnx_dir, "optimum": tmp_path / "optimum"}.items()}
    logits = {}
    latency = {}
    for name, session in sessions.items():
        feed = {i.name: enc[i.name] for i in session.get_inputs()}
        logits[name] = session.run(None, feed)[0]
        latency[name] = _median_ms(session, feed)
    diff = float(np.abs(logits["ours"] - logits["optimum"]).max())
    print(f"optimum cross-check: max abs diff {diff:.2e}, median latency ours {latency['ours']:.2f} ms, "
          f"optimum {latency['optimum']:.2f} ms")
    assert diff <= 1e-4
    assert 0.5 <= latency["ours"] / latency["optimum"] <= 2.0, latency  # tiny model, shared CPU: wide band


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
