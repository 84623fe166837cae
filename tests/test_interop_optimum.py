"""Interop with Hugging Face Optimum (the `interop` extra): our BERT ONNX folder loads in
ORTModelForSequenceClassification with the same predictions, and matches Optimum's own export of the same
checkpoint in numbers and, within noise, in latency.

optimum-onnx 0.1 pins transformers < 4.58, so it cannot be installed next to transformers 5. The cross-check
therefore runs in its own virtual environment (tests/interop/venvs.py, OPTIMUM: built once per machine, cached
under $BILM_OPTIMUM_VENV or ~/.cache/bilm/optimum-venv) through tests/interop/optimum_check.py; it skips,
with the reason, only when that venv cannot be built (no network). Set BILM_OPTIMUM_REQUIRED=1 to make that
a failure instead. The two in-env tests below run only where optimum is importable in bilm's own env.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import bert_model_dir, bert_onnx_dir, texts  # noqa: F401
from interop.venvs import OPTIMUM, venv_python_or_skip

from pipeline.runtime import OrtPredictor

CHECK = Path(__file__).parent / "interop" / "optimum_check.py"


@pytest.fixture(scope="session")
def optimum_python() -> Path:
    """The isolated optimum venv's python (built on first use: about 30 s from a local torch wheel)."""
    return venv_python_or_skip(OPTIMUM)


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.filterwarnings("ignore:.*were truncated")  # one sample text is longer than 256 tokens, on purpose
def test_optimum_cross_check_in_its_own_venv(optimum_python, bert_model_dir, bert_onnx_dir, texts, tmp_path):
    """Our BERT folder in optimum's ORTModelForSequenceClassification, and optimum's own export of the same
    checkpoint, both in the optimum venv (transformers 4.x) against our export and our torch-free runtime."""
    sample = texts[:16]
    (tmp_path / "texts.json").write_text(json.dumps(sample), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1")
    proc = subprocess.run([str(optimum_python), str(CHECK), str(bert_onnx_dir), str(bert_model_dir), str(tmp_path),
                           str(tmp_path / "texts.json"), "--runs", "50", "--threads", "1", "--max-length", "256"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    # transformers 4.x reads the tokenizer folder written by transformers 5 the same way `tokenizers` does
    assert result["autotokenizer_same_ids"], result
    # (1) optimum loads our folder and gives our logits, and our torch-free runtime's labels and probabilities
    load = result["load"]
    assert load["label_agreement"] == 1.0 and load["max_abs_diff"] <= 1e-4, load
    ours = OrtPredictor(bert_onnx_dir).classify(sample)
    id2label = load["id2label"]
    optimum_probs = _softmax(np.asarray(load["logits"]))
    assert [r["label"] for r in ours] == [id2label[str(i)] for i in optimum_probs.argmax(-1)]
    ours_probs = np.array([[r["probabilities"][id2label[str(i)]] for i in range(len(id2label))] for r in ours])
    np.testing.assert_allclose(ours_probs, optimum_probs, atol=1e-4)
    # (2) optimum's own export of the same checkpoint: same numbers; latency recorded, not asserted
    cross = result["cross"]
    assert cross["label_agreement"] == 1.0 and cross["max_abs_diff"] <= 1e-4, cross
    print(f"optimum cross-check ({result['versions']}): load max abs diff {load['max_abs_diff']:.2e}; "
          f"optimum export max abs diff {cross['max_abs_diff']:.2e}; median latency at batch {result['batch']}, "
          f"{cross['threads']} thread(s), {cross['runs']} runs: ours {cross['median_ms']['ours']:.2f} ms, "
          f"optimum {cross['median_ms']['optimum']:.2f} ms, ratio {cross['latency_ratio_ours_over_optimum']:.2f}")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
