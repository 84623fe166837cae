"""TensorRT engines: what runs on a CPU (profiles, naming, compatibility, lint, Q/DQ graphs, the skip path),
and, marked `gpu`, real engine builds and runs (skipped without CUDA; no mock stands in for TensorRT)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from export_fixtures import bert_onnx_dir, family_name, onnx_dir, review_texts, texts  # noqa: F401
from onnx import TensorProto, helper

from pipeline.config import EngineConfig, EngineProfile, EngineTolerance, load_params
from pipeline.export.commands import export
from pipeline.export.lint import format_findings, lint_tensorrt
from pipeline.export.tensorrt import (EngineError, EngineParityError, Profile, build_engines, calibration_batches,
                                      check_request, check_workspace, compat_problem, convert_fp16, engine_name,
                                      exact_batch, lint_or_raise, model_max_positions, modelopt_version,
                                      pad_to_profile, parity_record, parity_shapes, parse_engine_name, pick_profile,
                                      quantize_qdq, rebuild_reason, resolve_quantizer, resolve_typing, run_stage,
                                      summarize_parity, unavailable_reason, validate_profiles)
from pipeline.paths import Paths
from pipeline.runtime import PredictorError, TextEncoder
from pipeline.trt_common import cuda_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = cuda_unavailable_reason() is None  # a CUDA device, whether or not TensorRT is installed
CAN_BUILD = unavailable_reason() is None  # CUDA and an importable TensorRT
MODELOPT = find_spec("modelopt") is not None  # found without asking modelopt_version, the code under test


def profile(b=(1, 1, 8), s=(8, 64, 128)) -> EngineProfile:
    return EngineProfile(*b, *s)


# --- profiles and shapes -------------------------------------------------------------------------------
def test_profiles_validate_and_give_min_opt_max_shapes():
    (p,) = validate_profiles([profile((1, 4, 16), (8, 64, 128))], max_positions=128)
    assert p.shapes() == ((1, 8), (4, 64), (16, 128))
    assert parity_shapes(Profile((1, 1, 8), (8, 8, 64))) == [(1, 8), (8, 64)]  # repeats dropped


@pytest.mark.parametrize("bad, message", [
    (profile((4, 2, 8)), r"engine.profiles\[0\]: batch must satisfy min <= opt <= max.*min_batch=4, opt_batch=2"),
    (profile(s=(8, 256, 128)), r"sequence must satisfy min <= opt <= max.*opt_sequence=256"),
    (profile((0, 1, 8)), r"engine.profiles\[0\].min_batch = 0 is below 1"),
    (profile(s=(1, 8, 64)), r"min_sequence = 1 is below 4"),
])
def test_inconsistent_profiles_name_the_param(bad, message):
    with pytest.raises(EngineError, match=message):
        validate_profiles([bad], max_positions=512)


def test_profile_beyond_the_models_positions_names_param_and_limit(bert_onnx_dir):
    limit, source = model_max_positions(bert_onnx_dir)
    assert limit == json.loads((bert_onnx_dir / "config.json").read_text())["max_position_embeddings"]
    assert "max_position_embeddings" in source
    with pytest.raises(EngineError, match=rf"engine.profiles\[1\].max_sequence = 512 exceeds the model's maximum "
                                          rf"of {limit} positions \(max_position_embeddings in .*config.json\); "
                                          rf"set engine.profiles\[1\].max_sequence <= {limit}"):
        validate_profiles([profile(), profile(s=(8, 128, 512))], limit, limit_source=source)


def test_pick_profile_prefers_an_exact_fit_pads_up_and_refuses_too_large():
    profiles = [Profile((1, 1, 4), (8, 64, 128)), Profile((8, 16, 32), (8, 64, 128))]
    assert pick_profile(profiles, 2, 40) == 0
    assert pick_profile(profiles, 20, 40) == 1
    assert pick_profile(profiles, 5, 40) == 1  # beyond profile 0's max batch: profile 1 pads 5 rows up to 8
    assert pick_profile(profiles, 1, 3) == 0  # shorter than min_sequence: padded up
    with pytest.raises(EngineError, match=r"batch of 33 x 40 .*largest: batch 32, sequence 128.*batch_size <= 32"):
        pick_profile(profiles, 33, 40)
    with pytest.raises(EngineError, match="larger than every optimization profile"):
        pick_profile(profiles, 1, 129)


@pytest.mark.parametrize("left", [False, True])
def test_pad_to_profile_masks_new_positions_and_repeats_rows(left):
    batch = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), np.int64),
             "token_type_ids": np.zeros((1, 3), np.int64)}
    out = pad_to_profile(batch, Profile((2, 2, 4), (5, 8, 16)), pad_id=0, pad_type_id=3, left=left)
    assert out["input_ids"].shape == (2, 5)
    expected_ids = [0, 0, 5, 6, 7] if left else [5, 6, 7, 0, 0]
    assert out["input_ids"][0].tolist() == expected_ids and out["input_ids"][1].tolist() == expected_ids
    assert out["attention_mask"][0].sum() == 3 and out["token_type_ids"][0].tolist().count(3) == 2


def test_exact_batch_is_batch_by_seq_with_padding_from_real_texts(bert_onnx_dir, texts):
    encoder = TextEncoder(bert_onnx_dir)
    for b, s in [(1, 8), (4, 64), (3, 128)]:
        batch = exact_batch(encoder, texts, b, s)
        assert batch["input_ids"].shape == (b, s) and batch["input_ids"].dtype == np.int64
        assert batch["attention_mask"][0].all()  # the joined row fills the sequence
        if b > 1:
            assert not batch["attention_mask"][-1].all()  # the short row is padded
    assert encoder.tokenizer.truncation["max_length"] == encoder.max_length  # restored


# --- naming, compatibility, caching --------------------------------------------------------------------
def test_engine_name_round_trips():
    name = engine_name("xlnet", "int8", "10.13.0.35", "sm90")
    assert name == "xlnet-int8-trt10.13.0-sm90.engine"
    assert parse_engine_name(name) == {"family": "xlnet", "precision": "int8", "tensorrt": "10.13.0",
                                       "capability": "sm90"}
    assert parse_engine_name("model.plan") is None


def test_engine_for_another_tensorrt_or_gpu_is_detected():
    record = {"engine": "bert-fp16-trt10.13.0-sm90.engine", "tensorrt": "10.13.0.35", "capability": "sm90"}
    assert compat_problem(record, "10.13.0.35", "sm90") is None
    assert compat_problem(record, "10.13.0.99", "sm90") is None  # the build number does not matter
    assert "built with TensorRT 10.13.0.35, this is TensorRT 11.4.0" in compat_problem(record, "11.4.0.106", "sm90")
    assert "built for GPU sm90, this GPU is sm80" in compat_problem(record, "10.13.0.35", "sm80")
    from_name = compat_problem({"engine": "bert-fp16-trt10.9.0-sm86.engine"}, "10.13.0", "sm90")
    assert "TensorRT 10.9.0" in from_name and "sm86" in from_name
    assert "records neither" in compat_problem({"engine": "x.engine"}, "10.13.0", "sm90")


def test_rebuild_reason_reuses_only_a_current_engine(tmp_path):
    want = {"precision": "fp16", "typing": "weak", "profiles": [{"batch": [1, 1, 8], "sequence": [8, 64, 128]}],
            "onnx_sha256": "abc", "workspace_mib": 1024, "optimization_level": 3, "tensorrt": "10.13.0",
            "capability": "sm90", "engine": "bert-fp16-trt10.13.0-sm90.engine"}
    assert rebuild_reason(None, want, tmp_path) == "no engine built yet"
    record = {**want, "built": True}
    assert "missing" in rebuild_reason(record, want, tmp_path)
    (tmp_path / want["engine"]).write_bytes(b"plan")
    assert rebuild_reason(record, want, tmp_path) is None
    assert "onnx_sha256 changed" in rebuild_reason({**record, "onnx_sha256": "old"}, want, tmp_path)
    assert "this is TensorRT 10.13.0" in rebuild_reason({**record, "tensorrt": "10.9.0"}, want, tmp_path)


def test_typing_per_tensorrt_major():
    assert resolve_typing("auto", 10) == "weak" and resolve_typing("auto", 11) == "strong"
    assert resolve_typing("strong", 10) == "strong"
    with pytest.raises(EngineError, match="typing = weak needs TensorRT 10.*set typing: auto"):
        resolve_typing("weak", 11)


def test_too_little_gpu_memory_for_the_workspace_is_a_clear_error():
    check_workspace(1024, free_bytes=8 * 2 ** 30, total_bytes=16 * 2 ** 30)
    with pytest.raises(EngineError, match=r"workspace_mib = 4096 MiB does not fit in the 2048 MiB free on H200 "
                                          r"\(16384 MiB total\); lower engine.workspace_mib"):
        check_workspace(4096, free_bytes=2 * 2 ** 30, total_bytes=16 * 2 ** 30, device="H200")


def test_unknown_precision_is_refused():
    with pytest.raises(EngineError, match="engine.precisions = \\['fp8'\\]; choose from fp16, int8"):
        check_request(EngineConfig(precisions=["fp8"]))


def test_modelopt_quantizer_without_modelopt_says_how_to_get_it():
    if MODELOPT:
        from importlib.metadata import version

        assert modelopt_version() == version("nvidia-modelopt")
    else:
        with pytest.raises(EngineError, match=r"scripts/install.sh --gpu.*engine.quantizer: ort"):
            modelopt_version()


def test_auto_quantizer_picks_modelopt_under_strong_typing_where_installed():
    assert resolve_quantizer("auto", "weak") == "ort"  # BuilderFlag.FP16 covers the layers between Q/DQ
    assert resolve_quantizer("auto", "strong") == ("modelopt" if MODELOPT else "ort")
    assert resolve_quantizer("ort", "strong") == "ort" and resolve_quantizer("modelopt", "weak") == "modelopt"
    with pytest.raises(EngineError, match="pass ort or modelopt"):
        quantize_qdq(Path("model.onnx"), Path("q.onnx"), [{"input_ids": np.zeros((1, 4))}], quantizer="auto")


def test_parity_tolerance_per_precision():
    expected = np.array([[1.0, 0.0], [0.0, 1.0]])
    tol = EngineTolerance(atol=0.05, min_label_agreement=1.0)
    ok = parity_record(expected, expected + 0.01, 2, 8, tol)
    assert ok["passed"] and summarize_parity([ok], tol, "fp16")["max_abs_diff"] == pytest.approx(0.01)
    bad = parity_record(expected, expected[:, ::-1], 2, 8, tol)
    with pytest.raises(EngineParityError, match=r"fp16 engine parity failed.*2x8: max abs diff 1.*engine.tolerances"
                                                r".fp16"):
        summarize_parity([ok, bad], tol, "fp16")


def test_label_agreement_is_pooled_over_every_row_of_every_shape():
    """One near-tied text flips at 1x8 (that shape alone: 0%); over 1 + 1 + 8 rows it is 90%, within int8's
    gate. Two flips in 10 rows (80%) fail it, and the message gives the pooled figure."""
    tol = EngineTolerance(atol=1.0, min_label_agreement=0.9)
    tied = np.array([[0.50, 0.49]])
    rows8 = np.tile([[1.0, 0.0]], (8, 1))
    records = [parity_record(tied, tied[:, ::-1], 1, 8, tol), parity_record(tied, tied, 1, 128, tol),
               parity_record(rows8, rows8, 8, 128, tol)]
    assert records[0]["label_agreement"] == 0.0 and records[0]["passed"]  # per shape: only the diff gates
    summary = summarize_parity(records, tol, "int8")
    assert summary["passed"] and summary["label_agreement"] == pytest.approx(0.9) and summary["rows"] == 10
    flipped = rows8.copy()
    flipped[0] = flipped[0, ::-1]
    records[2] = parity_record(rows8, flipped, 8, 128, tol)
    with pytest.raises(EngineParityError, match=r"label agreement 80.0% over 10 rows of 3 shapes"):
        summarize_parity(records, tol, "int8")


# --- the lint on the exported graphs -------------------------------------------------------------------
def test_exported_graphs_pass_the_tensorrt_lint(onnx_dir):
    assert lint_or_raise(onnx_dir)["passed"]


def _bad_graph_folder(src: Path, dst: Path) -> Path:
    """The exported folder with a graph TensorRT's parser rejects: EyeLike on a dynamic shape."""
    shutil.copytree(src, dst)
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence"])
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("EyeLike", ["f"], ["logits"], name="/transformer/EyeLike")]
    onnx.save(helper.make_model(helper.make_graph(nodes, "bad", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), dst / "model.onnx")
    return dst


def test_a_graph_failing_the_lint_names_operator_node_and_fix(bert_onnx_dir, tmp_path):
    bad = _bad_graph_folder(bert_onnx_dir, tmp_path / "bad")
    with pytest.raises(EngineError, match=r"fails the TensorRT lint(.|\n)*EyeLike /transformer/EyeLike: EyeLike on "
                                          r"a dynamically shaped input.*Range \+ Equal"):
        build_engines(bad, tmp_path / "out", EngineConfig(profiles=[profile()]))
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_lint_rejects_asymmetric_uint8_qdq():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("z", TensorProto.UINT8, [], [128])]  # ORT's default: uint8, zero point 128
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q_x"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq_x")]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    result = lint_tensorrt(model)
    assert not result["passed"]
    assert {(e["op_type"], e["node"]) for e in result["errors"]} == {("QuantizeLinear", "q_x"),
                                                                       ("DequantizeLinear", "dq_x")}
    assert "signed int8" in result["errors"][0]["problem"] and "QInt8" in result["errors"][0]["fix"]


def _non_int8_dequantize(model: onnx.ModelProto) -> list[str]:
    """DequantizeLinear nodes fed by an initializer that is not int8 (ORT's quantized biases are int32)."""
    types = {i.name: i.data_type for i in model.graph.initializer}
    return sorted(n.name for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and types.get(n.input[0], TensorProto.INT8) != TensorProto.INT8)


def test_lint_rejects_ort_default_bias_quantization(onnx_dir, family_name, texts, tmp_path):
    """ONNX Runtime's static quantizer with its defaults (QuantizeBias on) on the real exported graphs: each
    int32 bias DequantizeLinear is a lint error (TensorRT's parser takes int8/fp8/int4/fp4 only). BERT's
    classifier Gemm bias is one; bilm's own Q/DQ graph (test below) has none."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from pipeline.export.calibration import BatchReader

    batches = calibration_batches(onnx_dir, texts[:64], samples=32, batch_size=16, max_sequence=128)
    quantize_static(str(onnx_dir / "model.onnx"), str(tmp_path / "default.onnx"), BatchReader(batches),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    graph = onnx.load(str(tmp_path / "default.onnx"))
    int32 = _non_int8_dequantize(graph)
    if family_name == "bert":
        # the classifier's output bias (post-LN BERT: classifier.bias; pre-LN: classifier.out_proj.bias)
        assert any(n.startswith("model.classifier.") and n.endswith("bias_DequantizeLinear") for n in int32), int32
    result = lint_tensorrt(graph)
    flagged = sorted(e["node"] for e in result["errors"] if "DequantizeLinear of a INT32 input" in e["problem"])
    assert flagged == int32 and result["passed"] == (not int32)
    if int32:
        assert "QuantizeBias" in format_findings(result)


# --- precision graphs (CPU) ----------------------------------------------------------------------------
@pytest.mark.parametrize("quantizer", ["ort", "modelopt"])
def test_int8_qdq_graph_has_qdq_nodes_passes_the_lint_and_stays_close(onnx_dir, texts, tmp_path, quantizer):
    if quantizer == "modelopt" and not MODELOPT:  # the modelopt extra brings onnxruntime-gpu: its own venv
        pytest.skip("nvidia-modelopt is not installed here; test_modelopt_qdq_graphs_in_the_modelopt_venv runs it")
    batches = calibration_batches(onnx_dir, texts[:200], samples=64, batch_size=16, max_sequence=128)
    info = quantize_qdq(onnx_dir / "model.onnx", tmp_path / "q.onnx", batches, quantizer=quantizer)
    assert info["format"] == "QDQ" and info["calibration_rows"] == 64
    graph = onnx.load(str(tmp_path / "q.onnx"))
    assert _non_int8_dequantize(graph) == []  # biases stay float: TensorRT's parser takes int8 DQ inputs only
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4
    assert lint_tensorrt(graph)["passed"]  # signed, symmetric: what TensorRT reads
    fp32 = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    batch = exact_batch(TextEncoder(onnx_dir), texts[200:], 8, 64)
    expected, got = (s.run(None, batch)[0] for s in (fp32, qdq))
    diff = np.abs(expected - got).max()
    assert 0 < diff <= 0.1 * np.abs(expected).max(), (expected, got)  # quantized, and within 10% of the logits


def test_modelopt_calibration_rows_are_padded_as_the_family_pads(onnx_dir, family_name, texts):
    """modelopt gets every calibration row at one length: shorter batches are padded on the tokenizer's side
    (XLNet: left) with its pad id, mask 0 and its pad segment id (XLNet: 4), so calibration sees real inputs."""
    from pipeline.export.tensorrt import modelopt_calibration

    encoder = TextEncoder(onnx_dir)
    batches = calibration_batches(onnx_dir, texts[:40], samples=40, batch_size=8, max_sequence=64)
    calib = modelopt_calibration(batches, encoder)
    longest = max(b["input_ids"].shape[1] for b in batches)
    assert {k: v.shape for k, v in calib.items()} == dict.fromkeys(batches[0], (40, longest))
    shortest = batches[0]  # length-sorted: the first batch is the shortest
    width = shortest["input_ids"].shape[1]
    assert width < longest
    rows = slice(0, len(shortest["input_ids"]))
    new = slice(0, longest - width) if encoder.padding_side == "left" else slice(width, longest)
    old = slice(longest - width, longest) if encoder.padding_side == "left" else slice(0, width)
    assert (encoder.padding_side == "left") == (family_name == "xlnet")
    assert (calib["input_ids"][rows, new] == encoder.pad_id).all()
    assert (calib["attention_mask"][rows, new] == 0).all()
    assert (calib["token_type_ids"][rows, new] == encoder.pad_type_id).all()
    for name in batches[0]:
        np.testing.assert_array_equal(calib[name][rows, old], shortest[name])


@pytest.mark.slow
@pytest.mark.interop
def test_modelopt_qdq_graphs_in_the_modelopt_venv():
    """The modelopt rows above, where modelopt is installed: in its own venv (tests/interop/venvs.py, MODELOPT:
    it needs onnxruntime-gpu), both families. ORT's rows run after modelopt's in that pytest process, so
    quantizing with modelopt in-process again (it patches ORT's calibrators process-wide) would fail them."""
    import re

    from interop.venvs import MODELOPT, venv_python_or_skip

    python = venv_python_or_skip(MODELOPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    selected = "int8_qdq_graph or modelopt_quantizer or auto_quantizer"
    # one process, without pyproject's xdist options (the venv may not see pytest-xdist)
    proc = subprocess.run([str(python), "-m", "pytest", "tests/test_tensorrt.py", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=--strict-markers -m 'not interop'", "-p", "no:xdist", "-k", selected],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"\b6 passed\b", summary) and "skipped" not in summary, summary


def test_fp16_graph_keeps_int64_inputs_and_fp32_logits(onnx_dir, tmp_path):
    """The graph a strongly typed fp16 engine is built from, both families (XLNet: left padding, fully masked
    positions at the shortest row) on ONNX Runtime's CPU: no NaN, within 1% of the fp32 logits."""
    convert_fp16(onnx_dir / "model.onnx", tmp_path / "h.onnx")
    graph = onnx.load(str(tmp_path / "h.onnx"))
    assert {i.name: i.type.tensor_type.elem_type for i in graph.graph.input} == dict.fromkeys(
        ["input_ids", "attention_mask", "token_type_ids"], TensorProto.INT64)
    assert graph.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert lint_tensorrt(graph)["passed"]
    for b, seq in [(1, 8), (4, 64), (8, 128)]:
        batch = exact_batch(TextEncoder(onnx_dir), review_texts()[200:], b, seq)
        expected, got = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, batch)[0]
                         for path in (onnx_dir / "model.onnx", tmp_path / "h.onnx"))
        assert got.dtype == np.float32 and not np.isnan(got).any()
        assert np.abs(expected - got).max() <= 0.01 * np.abs(expected).max(), (b, seq)


# --- without a GPU: the skip path ----------------------------------------------------------------------
def _stage_root(onnx_dir: Path, family: str, tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "artifacts")
    shutil.copytree(onnx_dir, paths.onnx(family))
    return paths


@pytest.mark.skipif(CAN_BUILD, reason="CUDA and TensorRT present: the stage builds instead")
def test_stage_without_cuda_or_tensorrt_records_the_skip_and_reason(bert_onnx_dir, tmp_path):
    paths = _stage_root(bert_onnx_dir, "bert", tmp_path)
    params = load_params(REPO / "params.yaml", ["preset=tiny"])
    params.engine.profiles = [profile(s=(8, 64, 128))]
    summary = run_stage("bert", params, paths)
    written = json.loads((paths.engines("bert") / "engine.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["built"] is False and written["family"] == "bert" and written["engines"] == {}
    assert ("no CUDA device" in written["reason"]) == (not HAS_CUDA)
    if find_spec("tensorrt") is None:
        assert "TensorRT not installed" in written["reason"]


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_stage_script_exits_zero_without_cuda(bert_onnx_dir, tmp_path):
    paths = _stage_root(bert_onnx_dir, "bert", tmp_path)  # tmp_path/artifacts, as `dvc repro` would see it
    params = (REPO / "params.yaml").read_text().replace("\npreset: small", "\npreset: tiny")
    (tmp_path / "params.yaml").write_text(params)
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BILM_ARTIFACTS", None)
    done = subprocess.run([sys.executable, str(REPO / "stages/engine.py"), "bert"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "bert: no TensorRT engine built: no CUDA device" in done.stdout
    assert json.loads((paths.engines("bert") / "engine.json").read_text())["built"] is False


def test_stage_with_bad_profiles_fails_before_the_skip(bert_onnx_dir, tmp_path):
    paths = _stage_root(bert_onnx_dir, "bert", tmp_path)
    params = load_params(REPO / "params.yaml", ["preset=tiny"])
    params.engine.profiles = [profile(s=(8, 64, 4096))]
    with pytest.raises(EngineError, match=r"max_sequence = 4096 exceeds"):
        run_stage("bert", params, paths)


def test_cli_reports_bad_profile_shapes(bert_onnx_dir, tmp_path):
    result = CliRunner().invoke(export, ["trt", str(bert_onnx_dir), str(tmp_path / "e"), "--batch", "8,2,16"])
    assert result.exit_code != 0 and "batch must satisfy min <= opt <= max" in result.output
    result = CliRunner().invoke(export, ["trt", str(bert_onnx_dir), str(tmp_path / "e"), "--sequence", "8,64"])
    assert result.exit_code != 0 and "MIN,OPT,MAX" in result.output


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_trt_predictor_without_cuda_says_why(bert_onnx_dir, tmp_path):
    from pipeline.runtime.trt import TrtPredictor

    folder = tmp_path / "fp16"
    shutil.copytree(bert_onnx_dir, folder)
    (folder / "engine.json").write_text(json.dumps({"engine": "bert-fp16-trt10.13.0-sm90.engine"}))
    with pytest.raises(PredictorError, match="TensorRT predictor cannot run here: no CUDA device"):
        TrtPredictor(folder)


def test_ort_tensorrt_provider_options_cache_under_artifacts_with_one_explicit_profile(onnx_dir, tmp_path):
    """The TensorRT EP gets one optimization profile over the model's real inputs (export.json) up to its
    tokenizer's max length, so it does not rebuild its engine as shapes grow."""
    from pipeline.runtime.graph_info import graph_inputs
    from pipeline.runtime.ort import tensorrt_ep_options

    inputs = graph_inputs(onnx_dir)
    assert inputs == [i.name for i in ort.InferenceSession(str(onnx_dir / "model.onnx"),
                                                           providers=["CPUExecutionProvider"]).get_inputs()]
    max_length = TextEncoder(onnx_dir).max_length
    options = tensorrt_ep_options(onnx_dir, cache_dir=tmp_path / "cache", inputs=inputs, max_sequence=max_length)
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()
    assert options["trt_profile_min_shapes"] == ",".join(f"{name}:1x4" for name in inputs)
    assert options["trt_profile_opt_shapes"] == ",".join(f"{name}:1x{min(128, max_length)}" for name in inputs)
    assert options["trt_profile_max_shapes"] == ",".join(f"{name}:64x{max_length}" for name in inputs)


def test_pip_tensorrt_libraries_are_found_where_installed():
    """`--provider tensorrt` loads pip's libnvinfer (site-packages/tensorrt_libs) before the session starts."""
    from importlib.util import find_spec

    from pipeline.runtime.ort import preload_tensorrt_libraries

    spec = find_spec("tensorrt_libs")
    folder = preload_tensorrt_libraries()
    assert folder == (None if spec is None else str(Path(spec.origin).parent))
    if folder:
        assert sorted(Path(folder).glob("libnvinfer.so.*")), folder


def test_tensorrt_runner_imports_nothing_from_export():
    """runtime/trt.py and the builder share pipeline/trt_common.py; the runner never loads export code."""
    code = ("import sys, pipeline.runtime.trt; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.export')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- on a GPU with TensorRT: real engines --------------------------------------------------------------
@pytest.fixture(scope="module")
def trt_ready():
    pytest.importorskip("tensorrt", reason="TensorRT not installed")
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason())


def _gpu_cfg(**changes) -> EngineConfig:
    cfg = EngineConfig(profiles=[profile((1, 1, 4), (8, 64, 128)), profile((4, 16, 32), (8, 64, 128))],
                       workspace_mib=1024, calibration_samples=64)
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def built(trt_ready, onnx_dir, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / onnx_dir.name
    summary = build_engines(onnx_dir, out, _gpu_cfg(), calibration_texts=texts[:200], parity_texts=texts[200:],
                            timing_cache=out.parent / "timing.cache")
    return out, summary


@pytest.mark.gpu
def test_gpu_engines_build_with_records_and_pass_parity(built, onnx_dir):
    out, summary = built
    assert summary["built"] and set(summary["engines"]) == {"fp16", "int8"}
    for precision in ("fp16", "int8"):
        record = json.loads((out / precision / "engine.json").read_text())
        assert (out / precision / record["engine"]).is_file()
        assert parse_engine_name(record["engine"])["precision"] == precision
        assert record["parity"]["passed"] and len(record["parity"]["shapes"]) == 6  # 2 profiles x min/opt/max
        assert {r["profile"] for r in record["parity"]["shapes"]} == {0, 1}
        assert record["typing"] in ("weak", "strong") and record["build_seconds"] > 0
        for name in ("config.json", "tokenizer.json", "bilm.json"):  # the ONNX folder's, as optimize copies them
            assert (out / precision / name).is_file() == (onnx_dir / name).is_file(), name
    assert (out.parent / "timing.cache").stat().st_size > 0


@pytest.mark.gpu
def test_gpu_predictor_matches_onnx_runtime_and_refuses_too_large(built, onnx_dir, texts):
    from pipeline.runtime import OrtPredictor
    from pipeline.runtime.trt import TrtPredictor

    out, _ = built
    engine, reference = TrtPredictor(out / "fp16"), OrtPredictor(onnx_dir)
    labels = [r["label"] for r in engine.classify(texts[:64], batch_size=16)]
    expected = [r["label"] for r in reference.classify(texts[:64], batch_size=16)]
    assert np.mean(np.array(labels) == np.array(expected)) >= 0.95
    with pytest.raises(PredictorError, match="larger than every optimization profile.*batch_size <= 32"):
        engine.classify(texts[:40], batch_size=40)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_engine_gives_the_same_logits_in_polygraphys_runner(built, texts, precision):
    """A second, independent TensorRT runner (Polygraphy's TrtRunner, the gpu extra) on the same engine file:
    TrtPredictor's buffers, profile switching and int64 -> int32 casts must not change a number."""
    polygraphy_trt = pytest.importorskip("polygraphy.backend.trt", reason="polygraphy not installed")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.datatype import DataType

    from pipeline.runtime.trt import TrtPredictor

    folder = built[0] / precision
    predictor = TrtPredictor(folder)
    for index, (b, s) in [(1, (4, 16)), (0, (1, 128)), (1, (32, 128))]:  # profile 1, then 0, then 1 again
        batch = exact_batch(predictor.encoder, texts, b, s)
        ours = predictor.run(batch, profile=index)
        engine = polygraphy_trt.EngineFromBytes(BytesFromPath(str(folder / predictor.record["engine"])))
        with polygraphy_trt.TrtRunner(engine, optimization_profile=index) as runner:
            meta = runner.get_input_metadata()
            feed = {name: batch[name].astype(DataType.to_dtype(meta[name].dtype, "numpy")) for name in meta.keys()}
            theirs = runner.infer(feed)[predictor.outputs[0]]
        assert ours.shape == theirs.shape and ours.shape[0] == b
        np.testing.assert_allclose(ours, theirs.astype(np.float32), atol=1e-3, rtol=0)


@pytest.mark.gpu
def test_gpu_engine_from_another_tensorrt_is_refused_and_rebuilt(built, onnx_dir, texts, tmp_path):
    from pipeline.runtime.trt import TrtPredictor

    out, _ = built
    copy = tmp_path / "engines"
    shutil.copytree(out, copy)
    record = json.loads((copy / "fp16" / "engine.json").read_text())
    (copy / "fp16" / "engine.json").write_text(json.dumps({**record, "tensorrt": "9.0.0"}))
    with pytest.raises(PredictorError, match="built with TensorRT 9.0.0.*rebuild it"):
        TrtPredictor(copy / "fp16")
    summary = build_engines(onnx_dir, copy, _gpu_cfg(precisions=["fp16"]), parity_texts=texts[200:],
                            timing_cache=tmp_path / "timing.cache")
    rebuilt = json.loads((copy / "fp16" / "engine.json").read_text())
    assert summary["built"] and "this is TensorRT" in rebuilt["rebuild_reason"] and not rebuilt.get("reused")
    again = build_engines(onnx_dir, copy, _gpu_cfg(precisions=["fp16"]), parity_texts=texts[200:],
                          timing_cache=tmp_path / "timing.cache")
    assert again["built"] and json.loads((copy / "fp16" / "engine.json").read_text())["reused"] is True


@pytest.mark.gpu
def test_gpu_workspace_larger_than_free_memory_is_refused(trt_ready, bert_onnx_dir, texts, tmp_path):
    with pytest.raises(EngineError, match="does not fit in the .* MiB free"):
        build_engines(bert_onnx_dir, tmp_path / "e", _gpu_cfg(workspace_mib=10 ** 8, precisions=["fp16"]),
                      parity_texts=texts)
