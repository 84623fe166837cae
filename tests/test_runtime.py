"""The torch-free ONNX Runtime path: Predictor, input reading, `bilm predict`, and bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from export_fixtures import family_name, model_dir, onnx_dir, texts  # noqa: F401

from pipeline.export.commands import predict
from pipeline.runtime import (OrtPredictor, PredictorError, TruncationWarning, classify_items, items_from_jsonl)
from pipeline.runtime.base import bucket_width, length_batches

REPO = Path(__file__).resolve().parents[1]


# --- the predictor -------------------------------------------------------------------------------------
def test_session_spinning_settings():
    from pipeline.runtime.ort import session_options

    def entry(options, key: str) -> str | None:
        try:
            return options.get_session_config_entry(key)
        except RuntimeError:  # "does not have configuration with key"
            return None

    run, never, always = (session_options(2, spinning=s) for s in ("run", "never", "always"))
    assert entry(run, "session.force_spinning_stop") == "1" and entry(run, "session.intra_op.allow_spinning") is None
    assert entry(never, "session.intra_op.allow_spinning") == "0"
    # ORT's default: spin, also between runs
    assert entry(always, "session.force_spinning_stop") is None is entry(always, "session.intra_op.allow_spinning")
    assert {entry(o, "session.set_denormal_as_zero") for o in (run, never, always)} == {"1"}  # every session
    with pytest.raises(ValueError, match="always, run, never"):
        session_options(2, spinning="sometimes")


def test_encoder_matches_transformers_tokenizer(onnx_dir, model_dir, texts):
    from transformers import AutoTokenizer

    predictor = OrtPredictor(onnx_dir)
    batch = predictor.encoder.pad(predictor.encoder.encode(texts[:6]))
    # max_length: the runtime also caps at the model's positions (BERT here: 256 < the tokenizer's 512)
    expected = AutoTokenizer.from_pretrained(model_dir)(texts[:6], padding=True, truncation=True,
                                                        max_length=predictor.encoder.max_length, return_tensors="np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(batch[name], expected[name], err_msg=name)


def test_classify_matches_pytorch(onnx_dir, model_dir, texts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    enc = AutoTokenizer.from_pretrained(model_dir)(texts[:10], padding=True, truncation=True, max_length=256,
                                                   return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(**enc).logits, -1).numpy()
    results = OrtPredictor(onnx_dir).classify(texts[:10], batch_size=3)
    got = np.array([list(r["probabilities"].values()) for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["label"] for r in results] == [model.config.id2label[i] for i in expected.argmax(-1)]
    assert all(abs(r["score"] - max(r["probabilities"].values())) < 1e-9 for r in results)


def test_length_batches_group_by_bucket_and_pad_to_its_edge():
    lengths = {0: 5, 1: 40, 2: 33, 3: 7, 4: 64, 5: 70}
    assert length_batches(lengths, 2, (32, 64)) == [([0, 3], 32), ([2, 1], 64), ([4], 64), ([5], 70)]
    # no buckets: length-sorted batches, each padded to its longest item
    assert length_batches(lengths, 4) == [([0, 3, 2, 1], 40), ([4, 5], 70)]


def test_bucketed_batches_return_each_text_its_own_result_in_input_order(onnx_dir, texts):
    predictor = OrtPredictor(onnx_dir)
    widths = []
    original = predictor.predict_logits

    def recording(batch):
        lengths = batch["attention_mask"].sum(1)
        widths.append((batch["input_ids"].shape[1], int(lengths.min()), int(lengths.max())))
        return original(batch)

    predictor.predict_logits = recording
    bucketed = predictor.classify(texts[:24], batch_size=4)
    edges = sorted(predictor.buckets)
    for width, shortest, longest in widths:  # one bucket per batch, padded to that bucket's edge
        assert width == bucket_width(longest, edges) == bucket_width(shortest, edges), (width, shortest, longest)
    predictor.predict_logits, predictor.buckets = original, ()
    one_by_one = predictor.classify(texts[:24], batch_size=1)  # no padding at all
    for a, b in zip(bucketed, one_by_one):
        assert a["label"] == b["label"]
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)


def test_releasing_the_arena_frees_its_peak_and_keeps_the_results(onnx_dir):
    """bench releases each session's arena after a cell: memory goes back, the next run answers the same."""
    psutil = pytest.importorskip("psutil")
    predictor = OrtPredictor(onnx_dir, threads=1, max_batch_tokens=None)  # one run of the whole batch
    rng = np.random.default_rng(0)
    big = {"input_ids": rng.integers(5, 100, (64, 256)), "attention_mask": np.ones((64, 256), np.int64),
           "token_type_ids": np.zeros((64, 256), np.int64)}
    rss = lambda: psutil.Process().memory_info().rss  # noqa: E731
    before = predictor.predict_logits(big)
    held = rss()
    predictor.release_arena(big)
    assert rss() < held - 20 * 2 ** 20  # the peak (64 x 256 x 2 heads x 256 attention scores alone: 33 MB) went back
    np.testing.assert_array_equal(predictor.predict_logits(big), before)


def test_a_batch_over_the_token_limit_runs_in_row_chunks_with_the_same_logits(onnx_dir):
    from pipeline.runtime.ort import rows_per_run

    assert rows_per_run(64, 128, 1024) == 8 and rows_per_run(64, 4096, 1024) == 1 and rows_per_run(3, 32, 1024) == 3
    assert rows_per_run(64, 128, None) == 64 == rows_per_run(64, 128, 0)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 100, (10, 32)), "attention_mask": np.ones((10, 32), np.int64),
             "token_type_ids": np.zeros((10, 32), np.int64)}
    batch["attention_mask"][:, 20:] = 0  # padded rows, as classify sends them
    whole = OrtPredictor(onnx_dir, threads=1, max_batch_tokens=None)
    chunked = OrtPredictor(onnx_dir, threads=1, max_batch_tokens=96)  # 3 rows a run: 3 + 3 + 3 + 1
    runs = []
    run = chunked.session.run
    chunked.session = type("Counting", (), {"run": lambda _, *a: runs.append(a[1]["input_ids"].shape) or run(*a)})()
    np.testing.assert_allclose(chunked.predict_logits(batch), whole.predict_logits(batch), atol=1e-5)
    assert runs == [(3, 32)] * 3 + [(1, 32)]
    assert OrtPredictor(onnx_dir, max_batch_tokens=96).max_batch_tokens == 96


def test_empty_texts_get_an_error_and_the_rest_go_on(onnx_dir):
    results = OrtPredictor(onnx_dir).classify(["great coffee", "", "   ", "bad tea"])
    assert [("error" in r) for r in results] == [False, True, True, False]
    assert "empty text" in results[1]["error"]


def test_overlong_text_is_truncated_with_a_warning(onnx_dir):
    predictor = OrtPredictor(onnx_dir)
    with pytest.warns(TruncationWarning, match=f"longer than {predictor.encoder.max_length} tokens"):
        results = predictor.classify(["great coffee " * 2000, "short"])
    assert results[0]["truncated"] is True and results[1]["truncated"] is False


def test_jsonl_lines_missing_the_text_field(onnx_dir):
    lines = ['{"text": "great coffee", "id": 7}', '{"review": "no text field"}', "not json", "", '{"text": "ok"}']
    results = classify_items(OrtPredictor(onnx_dir), items_from_jsonl(lines))
    assert [r["source"] for r in results] == ["line 1", "line 2", "line 3", "line 5"]
    assert results[0]["id"] == 7 and "label" in results[0] and "label" in results[3]
    assert 'no "text" field (keys: review)' in results[1]["error"]
    assert "not valid JSON" in results[2]["error"]


# --- bad folders and providers -------------------------------------------------------------------------
@pytest.fixture
def copied(onnx_dir, tmp_path) -> Path:
    return Path(shutil.copytree(onnx_dir, tmp_path / "copy"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_or_truncated_onnx_file(copied, damage):
    path = copied / "model.onnx"
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "garbage": b"\x00not an onnx model" * 10, "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(PredictorError, match="corrupt or truncated.*re-run `bilm export onnx`"):
        OrtPredictor(copied)


@pytest.mark.parametrize("missing, message", [("model.onnx", "has no model.onnx"),
                                              ("tokenizer.json", "has no tokenizer.json"),
                                              ("config.json", "has no config.json")])
def test_missing_files(copied, missing, message):
    (copied / missing).unlink()
    with pytest.raises(PredictorError, match=message):
        OrtPredictor(copied)


def test_missing_folder(tmp_path):
    with pytest.raises(PredictorError, match="does not exist"):
        OrtPredictor(tmp_path / "nope")


def test_config_without_labels(copied):
    config = json.loads((copied / "config.json").read_text())
    del config["id2label"]
    (copied / "config.json").write_text(json.dumps(config))
    with pytest.raises(PredictorError, match="no id2label"):
        OrtPredictor(copied)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu present")
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_unavailable_provider_is_a_clear_error(onnx_dir, provider):
    with pytest.raises(PredictorError, match=f"provider '{provider}'.*onnxruntime-gpu.*--provider cpu"):
        OrtPredictor(onnx_dir, provider=provider)


def test_onnxruntime_and_onnxruntime_gpu_together_is_named_with_the_fix():
    from pipeline.runtime.ort import onnxruntime_conflict

    message = onnxruntime_conflict({"onnxruntime", "onnxruntime-gpu", "numpy"})
    assert "both installed" in message and "pip uninstall -y onnxruntime onnxruntime-gpu" in message
    assert onnxruntime_conflict({"onnxruntime-gpu", "numpy"}) is None
    assert onnxruntime_conflict({"onnxruntime"}) is None


def test_tensorrt_ep_linked_against_another_tensorrt_major_says_which_to_install(tmp_path):
    """onnxruntime-gpu 1.31.1's TensorRT EP links libnvinfer.so.10 (and CUDA 13): `pip install tensorrt`
    now gives TensorRT 11, which that EP cannot load. The check reads the library's dynamic string table."""
    from pipeline.runtime.ort import tensorrt_ep_mismatch

    library = tmp_path / "libonnxruntime_providers_tensorrt.so"
    library.write_bytes(b"\x7fELF\x00libdl.so.2\x00libnvinfer.so.10\x00libnvonnxparser.so.10\x00libcudart.so.13\x00")
    message = tensorrt_ep_mismatch(library, "11.4.0.106")
    assert "links TensorRT 10 (libnvinfer.so.10)" in message and "TensorRT 11.4.0.106 is installed" in message
    assert "'tensorrt-cu13>=10,<11'" in message and "trt-fp16" in message
    assert tensorrt_ep_mismatch(library, "10.16.1.11") is None
    assert tensorrt_ep_mismatch(tmp_path / "absent.so", "11.4.0.106") is None


# --- bilm predict --------------------------------------------------------------------------------------
def test_predict_texts_as_arguments(onnx_dir):
    result = CliRunner().invoke(predict, [str(onnx_dir), "great coffee", "stale tea"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["source"] for r in rows] == ["arg 1", "arg 2"]
    assert set(rows[0]["probabilities"]) == {"great", "other"} and rows[0]["label"] in {"great", "other"}


def test_predict_file_and_table(onnx_dir, tmp_path):
    (tmp_path / "in.txt").write_text("great coffee\n\nstale tea\n")
    result = CliRunner().invoke(predict, [str(onnx_dir), "--file", str(tmp_path / "in.txt"), "--format", "table"])
    assert result.exit_code == 0, result.output
    assert "line 1" in result.output and "line 3" in result.output and "probabilities" in result.output


def test_predict_stdin_jsonl_with_a_bad_line(onnx_dir):
    stdin = '{"text": "great coffee"}\n{"body": "x"}\n{"text": ""}\n{"text": "bad tea"}\n'
    result = CliRunner().invoke(predict, [str(onnx_dir), "--batch-size", "1"], input=stdin)
    assert result.exit_code == 1  # some inputs failed; the others were still classified
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["label" in r for r in rows] == [True, False, False, True]
    assert "2 of 4 inputs failed" in result.stderr


def test_predict_bad_folder_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(predict, [str(tmp_path / "nope"), "text"])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


# --- without torch -------------------------------------------------------------------------------------
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "transformers")
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked: this test runs as if it were not installed")
            return None

    sys.meta_path.insert(0, Blocker())
    import atexit
    atexit.register(lambda: sys.stderr.write(f"\\nBLOCKED_IMPORTS={sorted(set(attempts))}\\n"))
""")


def _run_without_torch(code: str, stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", BLOCKER + code], input=stdin, capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_predict_runs_without_torch_or_transformers(onnx_dir):
    code = textwrap.dedent(f"""
        from pipeline.export.commands import predict
        try:
            predict.main([{str(onnx_dir)!r}], prog_name="bilm predict")
        finally:
            leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
            sys.stderr.write(f"\\nLOADED={{leaked}}\\n")
    """)
    proc = _run_without_torch(code, '{"text": "great coffee, will buy again"}\n')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["label"] in {"great", "other"}
    assert "LOADED=[]" in proc.stderr and "BLOCKED_IMPORTS=[]" in proc.stderr, proc.stderr


@pytest.mark.skipif(not (REPO / "pipeline" / "cli.py").is_file(), reason="pipeline/cli.py not written yet")
def test_bilm_cli_predict_runs_without_torch(onnx_dir):
    code = textwrap.dedent(f"""
        import runpy
        sys.argv = ["bilm", "predict", {str(onnx_dir)!r}]
        runpy.run_module("pipeline.cli", run_name="__main__")
    """)
    proc = _run_without_torch(code, '{"text": "great coffee, will buy again"}\n')
    assert proc.returncode == 0, proc.stderr
    assert "BLOCKED_IMPORTS=[]" in proc.stderr, proc.stderr
