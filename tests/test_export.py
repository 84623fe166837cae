"""ONNX export: folder contract, parity, XLNet patches, TensorRT lint, and the bad-input errors."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from export_fixtures import (bert_model_dir, bert_onnx_dir, build_model_dir, family_name, model_dir,  # noqa: F401
                             onnx_dir, review_texts, texts, xlnet_model_dir)
from onnx import TensorProto, helper

from pipeline.export.commands import export
from pipeline.export.lint import lint_tensorrt
from pipeline.export.onnx import ExportError, ParityError, export_onnx
from pipeline.families import get_family

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_XLNET = {"EyeLike", "Einsum", "OneHot"}


# --- the folder contract -------------------------------------------------------------------------------
def test_onnx_folder_has_model_config_tokenizer_and_export_json(onnx_dir):
    for name in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "export.json"):
        assert (onnx_dir / name).is_file(), name
    config = json.loads((onnx_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "great", "1": "other"}
    assert not list(onnx_dir.glob("*.safetensors")), "weights belong in model.onnx only"


def test_export_json_records_io_axes_versions_and_checks(onnx_dir, family_name):
    info = json.loads((onnx_dir / "export.json").read_text())
    spec = get_family(family_name).onnx
    assert info["family"] == family_name and info["opset"] == spec.opset and info["exporter"] == spec.exporter
    assert list(info["inputs"]) == ["input_ids", "attention_mask", "token_type_ids"]
    for name, value in info["inputs"].items():
        assert value["dtype"] == "int64" and all(isinstance(d, str) for d in value["shape"]), (name, value)
    assert list(info["outputs"]) == ["logits"] and isinstance(info["outputs"]["logits"]["shape"][0], str)
    assert info["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert info["onnx_checker"] == {"passed": True, "full_check": True}
    assert info["tensorrt_lint"]["passed"], info["tensorrt_lint"]["errors"]
    assert set(info["versions"]) >= {"torch", "transformers", "onnx", "onnxruntime"}


def test_parity_recorded_at_every_shape_with_padding(onnx_dir, family_name):
    parity = json.loads((onnx_dir / "export.json").read_text())["parity"]
    max_len = 256 if family_name == "bert" else 512  # BERT: its 256 positions; XLNet: the 512 cap
    assert [r["shape"] for r in parity["shapes"]] == ["1x8", "4x37", "8x128", f"2x{max_len}"]
    for record in parity["shapes"]:
        assert record["passed"] and record["max_abs_diff"] <= parity["atol"] == 1e-4
        assert record["label_agreement"] == 1.0 and record["padded_rows"] >= 1
    print(f"{family_name} parity max abs diff {parity['max_abs_diff']:.3g}")


def test_onnx_graph_has_dynamic_batch_and_sequence(onnx_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, seq in [(3, 5), (1, 200)]:
        feed = {i.name: torch.ones(batch, seq, dtype=torch.int64).numpy() for i in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (batch, 2)


# --- XLNet patches -------------------------------------------------------------------------------------
def test_xlnet_graph_free_of_eyelike_einsum_onehot(tmp_path_factory):
    from export_fixtures import build_onnx_dir

    graph = onnx.load(str(build_onnx_dir("xlnet", tmp_path_factory) / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & FORBIDDEN_IN_XLNET
    matmuls = [n for n in graph.graph.node if n.op_type == "MatMul"]
    weights = {i.name: list(i.dims) for i in graph.graph.initializer}
    # the q/k/v/r projections read a 2-D [d_model, n_head * d_head] weight, which quantizers can use
    assert sum(1 for n in matmuls if len(weights.get(n.input[1], [])) == 2) >= 4 * 2


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def _load_xlnet(model_dir: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def test_xlnet_patches_keep_numbers_and_restore(xlnet_model_dir, texts):
    from transformers.models.xlnet import modeling_xlnet

    model, tokenizer = _load_xlnet(xlnet_model_dir)
    # sentence pairs: two segments, so the segment (seg_mat) path is exercised too
    enc = tokenizer(texts[:4], texts[4:8], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits
        with get_family("xlnet").export_patches(model):
            assert modeling_xlnet.torch is not torch
            patched = model(**enc).logits
    assert modeling_xlnet.torch is torch and modeling_xlnet.nn is torch.nn
    assert "forward" not in model.transformer.__dict__
    assert torch.allclose(expected, patched, atol=1e-6, rtol=0)


def test_bert_export_masks_keys_with_one_row_per_text(bert_model_dir, bert_onnx_dir, texts):
    """The BERT export patch: the same logits with padded rows, transformers' mask builder restored on exit, and
    the graph's padding mask a [batch, 1, 1, keys] row (not transformers 5's [batch, 1, queries, keys] square)."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(bert_model_dir).eval()
    module = sys.modules[type(model.base_model).__module__]
    stock = module.create_bidirectional_mask
    enc = AutoTokenizer.from_pretrained(bert_model_dir)(texts[:4], padding=True, truncation=True, max_length=64,
                                                        return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits
        with get_family("bert").export_patches(model):
            assert module.create_bidirectional_mask is not stock
            patched = model(**enc).logits
    assert module.create_bidirectional_mask is stock
    assert torch.allclose(expected, patched, atol=1e-6, rtol=0)
    graph = onnx.load(str(bert_onnx_dir / "model.onnx"))
    added = {name for n in graph.graph.node if n.op_type == "Add" for name in n.input}
    wheres = [n.output[0] for n in graph.graph.node if n.op_type == "Where" and n.output[0] in added]
    assert len(wheres) == 1, wheres  # the mask added to the scores, built once for every layer
    graph.graph.output.append(helper.make_tensor_value_info(wheres[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy().astype(np.int64) for k, v in enc.items() if k in {i.name for i in session.get_inputs()}}
    assert session.run([wheres[0]], feed)[0].shape == (4, 1, 1, enc["input_ids"].shape[1])


def test_stock_xlnet_export_fails_the_tensorrt_lint(xlnet_model_dir, tmp_path):
    """Without the patches the graph has EyeLike on a dynamic shape, Einsum and OneHot."""
    model, tokenizer = _load_xlnet(xlnet_model_dir)
    enc = tokenizer(["hello world", "a longer second text"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    wrapper = _Logits(model).eval()
    torch.onnx.export(wrapper, tuple(enc[n] for n in names), str(tmp_path / "stock.onnx"), input_names=names,
                      output_names=["logits"], dynamic_axes={n: {0: "b", 1: "s"} for n in names}, dynamo=False)
    graph = onnx.load(str(tmp_path / "stock.onnx"))
    assert FORBIDDEN_IN_XLNET <= {n.op_type for n in graph.graph.node}
    lint = lint_tensorrt(graph)
    assert not lint["passed"]
    eyelike = [e for e in lint["errors"] if e["op_type"] == "EyeLike"]
    assert eyelike and eyelike[0]["node"] and "Range" in eyelike[0]["fix"]
    assert any(w["op_type"] == "Einsum" for w in lint["warnings"])


# --- TensorRT lint on hand-made graphs -----------------------------------------------------------------
def _graph(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_lint_eyelike_static_passes_dynamic_fails():
    static = _graph([helper.make_node("EyeLike", ["x"], ["y"], name="eye")], [_value("x", [4, 4])],
                    [_value("y", [4, 4])])
    dynamic = _graph([helper.make_node("EyeLike", ["x"], ["y"], name="eye")], [_value("x", ["n", "n"])],
                     [_value("y", ["n", "n"])])
    assert lint_tensorrt(static)["passed"]
    errors = lint_tensorrt(dynamic)["errors"]
    assert [(e["op_type"], e["node"]) for e in errors] == [("EyeLike", "eye")]


def test_lint_unsupported_op_and_runtime_axes():
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="uniq"),
             helper.make_node("Shape", ["x"], ["axes"], name="shape"),
             helper.make_node("Unsqueeze", ["x", "axes"], ["z"], name="unsq")]
    model = _graph(nodes, [_value("x", ["n"])], [_value("u", None), _value("z", None)])
    errors = {e["op_type"]: e for e in lint_tensorrt(model)["errors"]}
    assert set(errors) == {"Unique", "Unsqueeze"}
    assert "not supported" in errors["Unique"]["problem"] and "initializer" in errors["Unsqueeze"]["problem"]


# --- bad input -----------------------------------------------------------------------------------------
def test_missing_model_folder(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_without_config(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ExportError, match="no config.json"):
        export_onnx(tmp_path / "model", tmp_path / "out")


def test_pretraining_folder_is_not_a_classifier(tmp_path_factory, tmp_path):
    pretrained = build_model_dir("bert", tmp_path_factory, classifier=False)
    with pytest.raises(ExportError, match="not a sequence classifier"):
        export_onnx(pretrained, tmp_path / "out")


def test_opset_too_old_for_an_operator(bert_model_dir, tmp_path):
    with pytest.raises(ExportError, match=r"failed at opset 7: .*raise --opset"):
        export_onnx(bert_model_dir, tmp_path / "out", opset=7)
    assert not (tmp_path / "out").exists()


def test_opset_outside_exporter_range_fails_before_loading(tmp_path):
    # the folder does not even exist: the check must not need it
    with pytest.raises(ExportError, match="opset 3 is outside"):
        from pipeline.export.onnx import resolve_settings

        resolve_settings(get_family("bert").onnx, opset=3)


def test_parity_failure_names_family_shape_diff_and_tolerance(bert_model_dir, tmp_path, monkeypatch):
    family = get_family("bert")

    @contextlib.contextmanager
    def wrong_numbers(self, model):  # a broken "patch": the exported classifier's output layer has a shifted bias
        output_layer = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            output_layer.bias += 1.0
        try:
            yield
        finally:
            with torch.no_grad():
                output_layer.bias -= 1.0

    monkeypatch.setattr(type(family), "export_patches", wrong_numbers)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old export")
    with pytest.raises(ParityError, match=r"bert ONNX parity failed \(shape 1x8: max abs logit diff 1\b.*atol 0\.0001"):
        export_onnx(bert_model_dir, tmp_path / "out", texts=review_texts()[:40])
    assert (tmp_path / "out" / "keep.txt").read_text() == "old export"  # the old folder is untouched


# --- command and stage ---------------------------------------------------------------------------------
def test_cli_export_onnx(bert_model_dir, tmp_path):
    result = CliRunner().invoke(export, ["onnx", str(bert_model_dir), str(tmp_path / "out"), "--atol", "1e-4"])
    assert result.exit_code == 0, result.output
    assert "parity max abs diff" in result.output and (tmp_path / "out" / "model.onnx").is_file()


def test_cli_export_reports_errors_without_traceback(tmp_path):
    result = CliRunner().invoke(export, ["onnx", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


def test_stage_script_exports_paths_model_to_paths_onnx(xlnet_model_dir, tmp_path):
    import shutil

    shutil.copytree(xlnet_model_dir, tmp_path / "artifacts" / "models" / "xlnet")
    (tmp_path / "params.yaml").write_text("export:\n  exporter: torchscript\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "export.py"), "xlnet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "xlnet: torchscript exporter" in proc.stdout
    info = json.loads((tmp_path / "artifacts" / "onnx" / "xlnet" / "export.json").read_text())
    assert info["exporter"] == "torchscript"  # params.yaml overrides the family's dynamo
    assert not {n.op_type for n in onnx.load(str(tmp_path / "artifacts/onnx/xlnet/model.onnx")).graph.node} \
        & FORBIDDEN_IN_XLNET


def test_pre_layer_norm_bert_exports_with_parity_and_fuses_its_attention(tmp_path):
    """model.layer_norm {bert: pre}: transformers' RobertaPreLayerNorm classifier exports like BERT (positions
    offset by the padding id, so the longest parity shape is the table size less pad_token_id + 1), and ORT
    fuses its attention, LayerNorms and GELU."""
    from pipeline.config import ModelConfig, OptimizeConfig, TokenizerConfig
    from pipeline.export.optimize import GateData, optimize_onnx
    from pipeline.random_model import save_random_classifier

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(review_texts()) + "\n", encoding="utf-8")
    shape = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, layer_norm={"bert": "pre"})
    folder = save_random_classifier("bert", shape, corpus, tmp_path / "model", TokenizerConfig(vocab_size=500))
    export_onnx(folder, tmp_path / "onnx", texts=review_texts()[:60])
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["model_type"] == "roberta-prelayernorm"
    parity = json.loads((tmp_path / "onnx" / "export.json").read_text())["parity"]
    assert max(r["sequence"] for r in parity["shapes"]) == 64 and parity["max_abs_diff"] <= parity["atol"]
    gate = GateData(review_texts()[:32], [i % 2 for i in range(32)], review_texts()[:8])
    optimize_onnx(tmp_path / "onnx", ["fused"], OptimizeConfig(max_f1_drop=100.0), gate,
                  out_dir_of=lambda name: tmp_path / name)
    fused = {n.op_type for n in onnx.load(str(tmp_path / "fused" / "model.onnx")).graph.node}
    assert {"Attention", "BiasGelu"} <= fused, fused
    fuse = json.loads((tmp_path / "fused" / "export.json").read_text())["variant"]["steps"][0]
    assert fuse["skip_layer_norm"]["split"] == fuse["fused_ops"]["SkipLayerNormalization"] > 0, fuse


def test_export_quiets_the_exporters_info_chatter_and_restores_levels(caplog):
    """onnxscript's optimizer logs one INFO line per unfolded node during a dynamo export (hundreds for XLNet)."""
    import logging

    from pipeline.export.onnx import _EXPORT_LOG_LEVELS
    from pipeline.logs import quiet_loggers

    chatter = logging.getLogger("onnxscript.optimizer._constant_folding")
    caplog.set_level(logging.INFO)
    with quiet_loggers(_EXPORT_LOG_LEVELS):
        chatter.info("Skipping constant folding for node 'node_Shape_4'")
        chatter.warning("a real problem")
        logging.getLogger("torch.onnx").warning("optional op library skipped")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
    assert logging.getLogger("onnxscript").level == logging.NOTSET  # as before: the user's settings are kept
    chatter.info("after the export")
    assert caplog.records[-1].getMessage() == "after the export"
