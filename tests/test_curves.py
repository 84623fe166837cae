"""Label-scarce learning curves (pipeline/curves.py): nested stratified subsets, the epoch plan, the seed-paired
bootstrap, config errors, and the stage on the tiny preset (outputs, reuse of the finetune/ablation runs,
resume after an interruption)."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from pipeline import curves
from pipeline.config import ConfigError, CurvesConfig
from pipeline.stats import paired_bootstrap, seed_paired_bootstrap


def _with(params, **curves_values):
    return dataclasses.replace(params, curves=dataclasses.replace(params.curves, **curves_values))


def test_subsets_are_nested_stratified_and_seeded():
    labels = [0] * 700 + [1] * 250 + [2] * 50  # shares 0.70 / 0.25 / 0.05
    sizes = [10, 100, 250, 500]
    subsets = curves.nested_subsets(labels, sizes, seed=42)
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) < set(large)
    for n, subset in zip(sizes, subsets):
        counts = Counter(labels[i] for i in subset)
        assert counts == {0: round(0.7 * n), 1: round(0.25 * n), 2: max(1, round(0.05 * n))}
        assert list(subset) == sorted(subset)  # train order, as the finetune stage reads it
    assert all((a == b).all() for a, b in zip(subsets, curves.nested_subsets(labels, sizes, seed=42)))
    assert not (curves.nested_subsets(labels, sizes, seed=7)[1] == subsets[1]).all()


def test_every_class_keeps_at_least_one_example():
    labels = [0] * 990 + [1] * 10
    (subset,) = curves.nested_subsets(labels, [20], seed=0)
    assert Counter(labels[i] for i in subset) == {0: 20, 1: 1}


def test_plan_adds_all_and_refuses_sizes_at_or_above_the_train_split():
    labels = [0, 1] * 50
    plan = curves.plan_subsets(labels, CurvesConfig(sizes=[10, 40], include_all=True), 42)
    assert list(plan) == ["10", "40", "all"] and len(plan["all"]) == 100
    assert list(curves.plan_subsets(labels, CurvesConfig(sizes=[10], include_all=False), 42)) == ["10"]
    with pytest.raises(ConfigError, match=r"curves.sizes \[100\] are not below the train split's 100"):
        curves.plan_subsets(labels, CurvesConfig(sizes=[10, 100]), 42)


@pytest.mark.parametrize("values, message", [
    ({"sizes": [100, 100]}, "curves.sizes"), ({"sizes": [250, 100]}, "curves.sizes"),
    ({"sizes": [0, 10]}, "curves.sizes"), ({"seeds": []}, "curves.seeds"), ({"seeds": [1, 1]}, "curves.seeds"),
    ({"min_steps": -1}, "curves.min_steps"),
    ({"reference_learning_rate": 0.0}, "curves.reference_learning_rate"),
    ({"learning_rates": [0.0]}, "curves.learning_rates"), ({"learning_rates": [1e-4, 1e-4]}, "curves.learning_rates")])
def test_bad_curves_params_are_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        curves.check_config(CurvesConfig(**values))


def test_small_subsets_train_for_min_steps_with_as_many_evaluations(tiny_params):
    params = dataclasses.replace(tiny_params, finetune=dataclasses.replace(
        tiny_params.finetune, num_train_epochs=6.0, per_device_train_batch_size=32))
    params = _with(params, min_steps=150)
    # 100 examples: 4 steps an epoch, 38 epochs needed -> 6 evaluations 7 epochs apart (168 steps)
    assert curves.plan_epochs(100, params) == (42.0, 7)
    assert curves.plan_epochs(1000, params) == (6.0, 1)  # 32 steps an epoch: 6 epochs are 192 steps
    assert curves.plan_epochs(3600, params) == (6.0, 1)  # the finetune stage's own run
    assert curves.plan_epochs(100, _with(params, min_steps=0)) == (6.0, 1)


def test_seed_paired_bootstrap_separates_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    better = [np.where(rng.random(400) < 0.9, y, 1 - y) for _ in range(3)]  # about 90% accurate
    worse = [np.where(rng.random(400) < 0.6, y, 1 - y) for _ in range(3)]  # about 60%
    result = seed_paired_bootstrap(y, better, worse, "accuracy", samples=500)
    assert result["ci_low"] > 0.2 and result["seeds"] == 3
    assert result["difference"] == pytest.approx(np.mean([np.mean(b == y) - np.mean(w == y)
                                                          for b, w in zip(better, worse)]))
    same = seed_paired_bootstrap(y, better, better, "f1_macro", samples=500)
    assert same["ci_low"] <= 0 <= same["ci_high"]
    # two arms of one distribution, different draws: the CI holds zero
    other = [np.where(rng.random(400) < 0.9, y, 1 - y) for _ in range(3)]
    null = seed_paired_bootstrap(y, better, other, "accuracy", samples=500)
    assert null["ci_low"] < 0 < null["ci_high"]


def test_seed_variance_widens_the_interval_and_one_seed_is_the_plain_bootstrap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    base = np.where(rng.random(300) < 0.8, y, 1 - y)
    # seed 1: A far ahead; seed 2: B slightly ahead. Test-item resampling alone would not see the disagreement
    a = [np.where(rng.random(300) < 0.95, y, 1 - y), base]
    b = [base, np.where(rng.random(300) < 0.83, y, 1 - y)]
    pooled = seed_paired_bootstrap(y, a, b, samples=1000)
    items_only = paired_bootstrap(np.tile(y, 2), np.concatenate(a), np.concatenate(b), samples=1000)
    assert pooled["ci_high"] - pooled["ci_low"] > items_only["ci_high"] - items_only["ci_low"]
    single = seed_paired_bootstrap(y, [a[0]], [b[0]], "f1_macro", samples=300, seed=3)
    assert {k: v for k, v in single.items() if k != "seeds"} == paired_bootstrap(y, a[0], b[0], "f1_macro",
                                                                                   samples=300, seed=3)
    with pytest.raises(ValueError, match="equal, non-empty lengths"):
        seed_paired_bootstrap(y, a, b[:1])


def _point(n, low, high):
    return {"n": n, "difference": {"accuracy": {"ci_low": low, "ci_high": high}}}


def test_where_pretraining_stops_paying():
    curve = {"100": _point(100, 0.05, 0.1), "250": _point(250, 0.01, 0.2), "500": _point(500, -0.01, 0.05),
             "all": _point(4000, 0.02, 0.04)}
    assert curves.where_pretraining_pays(curve, "accuracy") == {"pretraining_pays_up_to": 250,
                                                                "stops_paying_at": 500, "pays_at": [100, 250, 4000]}
    paying = {k: _point(p["n"], 0.01, 0.1) for k, p in curve.items()}
    assert curves.where_pretraining_pays(paying, "accuracy") == {"pretraining_pays_up_to": 4000,
                                                                 "stops_paying_at": None,
                                                                 "pays_at": [100, 250, 500, 4000]}
    assert curves.where_pretraining_pays({"100": _point(100, -0.1, 0.1)}, "accuracy") == {
        "pretraining_pays_up_to": None, "stops_paying_at": 100, "pays_at": []}


def test_the_report_names_a_larger_n_where_pretraining_pays_after_a_smaller_one_where_it_does_not():
    """A CI that spans zero at n = 100 (the random arm's seeds spread widely) must not read as 'pretraining
    does not pay' when it pays at n = 500: the default run of 2026-11-30 gave exactly that curve."""
    from pipeline.report import checkpoint_sentence, pays_sentence

    curve = {"100": _point(100, -0.010, 0.114), "500": _point(500, 0.017, 0.074)}
    summary = {"bootstrap": {"confidence": 0.95}, "curve": curve, **curves.where_pretraining_pays(curve, "accuracy")}
    sentence = pays_sentence(summary)
    assert "stops paying at n = 100" in sentence and "does not pay even at the smallest n" in sentence
    assert sentence.endswith("does not pay even at the smallest n, but it does at n = 500, where the CI is above zero.")
    paying_first = {"100": _point(100, 0.01, 0.1), "250": _point(250, -0.01, 0.1), "500": _point(500, 0.01, 0.1)}
    summary = {"bootstrap": {"confidence": 0.95}, "curve": paying_first,
               **curves.where_pretraining_pays(paying_first, "accuracy")}
    assert pays_sentence(summary).endswith("it pays up to n = 100, and again at n = 500, where the CI is above zero.")
    summary["reference"] = {"source": "ckpt", "learning_rate": 5e-5, **curves.where_pretraining_pays(curve, "accuracy")}
    assert "beats random init at n = 500 (accuracy" in checkpoint_sentence(summary)


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_stage_on_the_tiny_preset_reuses_stage_runs_and_resumes(workdir, tiny_params, monkeypatch):
    """bert only: pretrain, finetune and ablation first (the reused runs), then the curves stage, interrupted
    after two trained runs and run again: it trains only the rest, and writes every output; then the reused
    run trained again gives the same predictions."""
    from pipeline.finetune import finetune
    from pipeline.pretrain import pretrain

    params = _with(tiny_params, sizes=[40], seeds=[42, 43], include_all=True, min_steps=6)
    pretrain("bert", params, workdir)
    finetune("bert", params, workdir)
    finetune("bert", params, workdir, ablation=True)
    real, calls = curves.train_and_score, []

    def counted(*args, **kwargs):
        calls.append(args[4][1])  # the subset's labels
        if len(calls) == 3 and fail:
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(curves, "train_and_score", counted)
    fail = True
    with pytest.raises(_Interrupt):
        curves.learning_curves("bert", params, workdir)
    cached = sorted(p.name for p in (workdir.checkpoints("curves", "bert") / "runs").glob("*.json"))
    assert cached == ["pretrained-n40-s42.json", "random-n40-s42.json"]
    fail, calls[:] = False, []
    summary = curves.learning_curves("bert", params, workdir)
    # 4 runs left: n=40 seed 43 x 2 arms, n=all seed 43 x 2 arms; seed 42 at n=all is the stages' own runs
    assert len(calls) == 4 and not workdir.checkpoints("curves", "bert").exists()
    assert summary["reused_stage_runs"] == ["pretrained-nall-s42", "random-nall-s42"]
    _check_outputs(workdir, summary, params)
    # what makes the reuse honest: (all, finetune.seed) trained by the curves code gives the finetune stage's
    # test predictions, item for item
    monkeypatch.setattr(curves, "train_and_score", real)
    inputs = curves.load_inputs("bert", params, workdir)
    retrained = curves.run_one(curves.Run("pretrained", "all", params.finetune.seed), inputs,
                               _with(params, reuse_stage_runs=False), workdir)
    stage = json.loads((workdir.metrics("finetune", "bert") / "predictions.json").read_text())
    assert retrained["source"] == "trained"
    assert [inputs.id2label[p] for p in retrained["predicted"]] == [r["predicted"] for r in stage]


def _check_outputs(paths, summary, params):
    root = paths.metrics("curves")
    assert json.loads((root / "bert.json").read_text()) == json.loads(json.dumps(summary))
    assert list(summary["curve"]) == ["40", "all"] and summary["curve"]["all"]["n"] == summary["train_size"]
    for point in summary["curve"].values():
        for arm in curves.ARMS:
            assert list(point[arm]["accuracy"]["seeds"]) == ["42", "43"]
        d = point["difference"]["accuracy"]
        assert d["ci_low"] <= d["difference"] <= d["ci_high"] and d["seeds"] == 2
        assert 0 <= point["tfidf"]["accuracy"] <= 1
    finetuned = json.loads((paths.metrics("finetune", "bert") / "test.json").read_text())
    assert summary["curve"]["all"]["pretrained"]["accuracy"]["seeds"]["42"] == finetuned["accuracy"]
    assert sorted(p.name for p in (root / "plots" / "bert").iterdir()) == ["pretrained.json", "random.json",
                                                                           "tfidf.json"]
    assert (root / "bert.png").stat().st_size > 0
    predictions = json.loads((root / "predictions" / "bert.json").read_text())
    assert len(predictions["pretrained"]["all"]["43"]) == summary["test_size"] == len(predictions["gold"])


def _fake_family(paths, family, params, accuracy_by_arm, rng, gold):
    """The curves stage's outputs for made-up runs (no training): `accuracy_by_arm` {arm: per-item hit rate};
    a "checkpoint" key adds that arm, as curves.reference does."""
    labels = [0, 1] * 100
    sources = {arm: f"/models/{arm}" for arm in accuracy_by_arm}
    inputs = curves.Inputs(family, ([f"t{i}" for i in range(200)], labels), ([], []), ([""] * 300, gold),
                           {0: "great", 1: "other"},
                           curves.plan_subsets(labels, params.curves, params.curves.subset_seed), sources, {})

    def run(arm):
        return {"predicted": [int(g if rng.random() < accuracy_by_arm[arm] else 1 - g) for g in gold],
                "seconds": 1.0, "source": "trained"}

    results = {curves.Run(arm, size, s).name: run(arm) for size in inputs.subsets for s in params.curves.seeds
               for arm in inputs.arms}
    tfidf = {size: {"accuracy": 0.7, "f1_macro": 0.6, "analyzer": "word", "C": 1.0, "predicted": gold}
             for size in inputs.subsets}
    summary = curves.summarize(inputs, results, tfidf, params)
    curves.write_outputs(summary, results, tfidf, inputs, paths)
    return summary


def test_report_sections_and_recommendation_from_curves_files(tmp_path, tiny_params):
    from pipeline.paths import Paths
    from pipeline.report import curves_section, headline_lines, read_curves, recommendation

    paths, rng = Paths(tmp_path), np.random.default_rng(0)
    params = _with(tiny_params, sizes=[20, 50], seeds=[1, 2, 3], include_all=True)
    gold = [int(g) for g in rng.integers(0, 2, 300)]
    bert = _fake_family(paths, "bert", params, {"pretrained": 0.95, "random": 0.6}, rng, gold)
    _fake_family(paths, "xlnet", params, {"pretrained": 0.7, "random": 0.7}, rng, gold)
    assert bert["pretraining_pays_up_to"] == 200 and bert["stops_paying_at"] is None
    assert json.loads((paths.metrics("curves") / "plots" / "bert" / "tfidf.json").read_text())[0]["n"] == 20
    found = read_curves(paths, ["bert", "xlnet"])
    (name, pair), = found["pairs"]
    assert name == "bert_vs_xlnet" and pair["accuracy"]["ci_low"] > 0 and pair["accuracy"]["seeds"] == 3
    text = "\n".join(curves_section(found, {"curves_bert.png": True}) + headline_lines(found))
    assert "## Learning curves" in text and "![bert: accuracy" in text and "| all (200) |" in text
    assert "Pretraining pays at every n measured (up to 200)" in text
    assert "xlnet, all labels, 3 seeds" in text and "bert − xlnet, pretrained" in text
    quality = {f: {"pytorch": {"accuracy": 0.8}} for f in ("bert", "xlnet")}
    latency = {"bert": {"pytorch": {"real": {"p50_ms": 9.0}}}, "xlnet": {"pytorch": {"real": {"p50_ms": 1.0}}}}
    assert "ship **xlnet" in recommendation(quality, latency, {})  # single seed: no pair, the fastest
    assert "ship **bert" in recommendation(quality, latency, {}, found["pairs"])


def test_checkpoint_arm_in_the_summary_plots_and_report(tmp_path, tiny_params):
    """curves.reference's arm: its own Δ against random init with a CI, where it pays, its DVC plot file and
    prediction runs, a line in the plot, and its columns and sentence in the report."""
    from pipeline.paths import Paths
    from pipeline.report import curves_section, read_curves

    paths, rng = Paths(tmp_path), np.random.default_rng(0)
    params = _with(tiny_params, sizes=[20, 50], seeds=[1, 2, 3], include_all=True)
    gold = [int(g) for g in rng.integers(0, 2, 300)]
    summary = _fake_family(paths, "bert", params, {"pretrained": 0.6, "random": 0.6, "checkpoint": 0.95}, rng, gold)
    assert summary["reference"]["source"] == "/models/checkpoint"
    assert summary["reference"]["learning_rate"] == params.curves.reference_learning_rate
    assert summary["reference"]["stops_paying_at"] is None and summary["stops_paying_at"] == 20
    for point in summary["curve"].values():
        d = point["checkpoint_difference"]["accuracy"]
        assert d["ci_low"] > 0 and d["seeds"] == 3 and point["checkpoint"]["accuracy"]["mean"] > 0.9
    root = paths.metrics("curves")
    assert sorted(p.name for p in (root / "plots" / "bert").iterdir()) == [
        "checkpoint.json", "pretrained.json", "random.json", "tfidf.json"]
    assert list(json.loads((root / "predictions" / "bert.json").read_text())["checkpoint"]["all"]) == ["1", "2", "3"]
    text = "\n".join(curves_section(read_curves(paths, ["bert"]), {}))
    assert "| checkpoint acc | checkpoint − random acc pts [95% CI] |" in text
    assert "The checkpoint arm, `/models/checkpoint` fine-tuned the same way" in text
    assert "beats random init at every n measured" in text
    assert "checkpoint (/models/checkpoint) pays up to n=200, stops paying at n=None" in curves.summary_line(summary)


@pytest.mark.slow
def test_checkpoint_arm_trains_the_reference_at_its_own_rate(workdir, tiny_params, monkeypatch):
    """The stage with curves.reference.bert: a saved BERT folder is the third arm, trained on the same subsets
    and seeds at curves.reference_learning_rate (the other arms at finetune.learning_rate); a folder that is
    not a checkpoint is an error naming the key before any training."""
    import shutil

    from pipeline.pretrain import pretrain

    params = _with(tiny_params, sizes=[40], seeds=[42], min_steps=4)
    pretrain("bert", params, workdir)
    reference = workdir.root.parent / "reference-bert"
    shutil.copytree(workdir.pretrained("bert"), reference)
    with pytest.raises(ConfigError, match="curves.reference.bert"):
        curves.learning_curves("bert", _with(params, reference={"bert": str(workdir.root / "none")}), workdir)
    real, rates = curves.train_and_score, {}

    def recorded(family, run_params, paths, source, *args):
        rates[source] = run_params.finetune.learning_rate
        return real(family, run_params, paths, source, *args)

    monkeypatch.setattr(curves, "train_and_score", recorded)
    summary = curves.learning_curves("bert", _with(params, reference={"bert": str(reference)},
                                                   reference_learning_rate=3e-5), workdir)
    assert rates == {str(workdir.pretrained("bert")): params.finetune.learning_rate,
                     None: params.finetune.learning_rate, str(reference): 3e-5}
    point = summary["curve"]["40"]
    assert summary["reference"]["source"] == summary["reference"]["path"] == str(reference)
    assert 0 <= point["checkpoint"]["accuracy"]["mean"] <= 1
    assert point["checkpoint_difference"]["accuracy"]["seeds"] == 1


def test_only_the_stage_arms_reuse_the_stage_runs(tmp_path, tiny_params):
    """(all, finetune.seed) reads finetune@/ablation@ predictions for the pretrained and random arms; the checkpoint
    arm, which no stage runs, always trains (it once matched the ablation's file by falling through)."""
    from pipeline.paths import Paths

    paths = Paths(tmp_path)
    for stage in ("finetune", "finetune_random_init"):
        paths.metrics(stage, "bert").mkdir(parents=True)
        (paths.metrics(stage, "bert") / "predictions.json").write_text("[]")
    epochs, seed = (tiny_params.finetune.num_train_epochs, 1), tiny_params.finetune.seed
    found = {arm: curves._reusable(curves.Run(arm, curves.ALL, seed), tiny_params, paths, "bert", epochs)
             for arm in (*curves.ARMS, curves.CHECKPOINT)}
    assert found == {"pretrained": paths.metrics("finetune", "bert") / "predictions.json",
                     "random": paths.metrics("finetune_random_init", "bert") / "predictions.json", "checkpoint": None}


def test_an_empty_grid_turns_the_stage_off_with_every_output_saying_so(workdir, tiny_params, monkeypatch):
    """The default (no sizes, include_all false): nothing trains, each output DVC declares exists, and the
    summary, the stage line and the report say how to turn the curves on."""
    from pipeline.report import curves_section, read_curves, summary_lines

    monkeypatch.setattr(curves, "train_and_score", lambda *a, **k: pytest.fail("an off stage trained a model"))
    params = _with(tiny_params, sizes=[], include_all=False)
    summary = curves.learning_curves("bert", params, workdir)
    assert summary["family"] == "bert" and "curves.sizes=[100,500]" in summary["off"]
    assert "dvc exp run -S 'curves.sizes=[100,500]'" in curves.summary_line(summary)
    root = workdir.metrics("curves")
    assert json.loads((root / "bert.json").read_text()) == summary
    assert json.loads((root / "predictions" / "bert.json").read_text()) == {}
    assert {p.name for p in (root / "plots" / "bert").iterdir()} == {"pretrained.json", "random.json", "tfidf.json"}
    assert (root / "bert.png").stat().st_size > 1000
    read = read_curves(workdir, ["bert", "xlnet"])
    assert read["families"] == {} and read["pairs"] == [] and read["off"] == {"bert": summary["off"]}
    lines = summary_lines({}, {}, {}, read)
    assert f"- **learning curves, bert**: {summary['off']}" in lines
    assert curves_section(read, {}) == ["## Learning curves", "", f"- **learning curves, bert**: {summary['off']}"]
    both = {"families": {}, "pairs": [], "off": {"bert": summary["off"], "xlnet": summary["off"]}}
    assert curves_section(both, {})[2:] == [f"- **learning curves, bert, xlnet**: {summary['off']}"]
    with pytest.raises(ConfigError, match="curves.sizes"):  # a bad grid is still an error, not "off"
        curves.learning_curves("bert", _with(params, sizes=[50, 20]), workdir)


def test_rate_search_picks_each_arms_rate_on_validation_and_its_other_seeds_train_at_it(tmp_path, tiny_params,
                                                                                        monkeypatch):
    """curves.learning_rates: every arm, at every n, trains its first seed at each rate; the best validation
    macro-F1 (never test) picks the rate its other seeds train at. The summary, stage line and report say which."""
    from pipeline.paths import Paths
    from pipeline.report import rates_sentence

    params = _with(tiny_params, sizes=[20], seeds=[1, 2, 3], include_all=False, learning_rates=[1e-4, 2e-4, 4e-4])
    labels, gold = [0, 1] * 50, [0, 1] * 150
    inputs = curves.Inputs("bert", ([f"t{i}" for i in range(100)], labels), ([], []), ([""] * 300, gold),
                           {0: "great", 1: "other"}, curves.plan_subsets(labels, params.curves, params.curves.subset_seed),
                           {"pretrained": "/models/pretrained", "random": None}, {})
    best = {"pretrained": 2e-4, "random": 4e-4}
    trained = []

    def run_one(run, inputs, params, paths):
        rate = curves.run_rate(run, params)
        trained.append((run.arm, run.seed, rate))
        # test accuracy is best at the rate validation does NOT pick: test must not choose
        hit = 0.9 if rate != best[run.arm] else 0.6
        return {"predicted": [g if i % 10 < hit * 10 else 1 - g for i, g in enumerate(gold)], "seconds": 1.0,
                "validation_f1_macro": 0.8 if rate == best[run.arm] else 0.5, "source": "trained"}

    monkeypatch.setattr(curves, "run_one", run_one)
    results, searches = curves.run_all(inputs, params, Paths(tmp_path))
    for arm, rate in best.items():
        assert [t for t in trained if t[0] == arm] == [(arm, 1, 1e-4), (arm, 1, 2e-4), (arm, 1, 4e-4),
                                                       (arm, 2, rate), (arm, 3, rate)]
        assert searches["20"][arm] == {"learning_rate": rate, "validation_f1_macro": {
            f"{r:g}": 0.8 if r == rate else 0.5 for r in (1e-4, 2e-4, 4e-4)}}
    assert len(results) == 2 * 5  # 3 seeds per arm, and the 2 rates each arm did not pick
    assert "random-n20-s1-lr0.0002" in results and "random-n20-s1-lr0.0004" not in results
    tfidf = {"20": {"accuracy": 0.7, "f1_macro": 0.6, "analyzer": "word", "C": 1.0, "predicted": gold}}
    summary = curves.summarize(inputs, results, tfidf, params, searches)
    point = summary["curve"]["20"]
    assert point["learning_rate"] == best and point["pretrained"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert summary["train_seconds"] == 10.0 and summary["learning_rates_searched"] == [1e-4, 2e-4, 4e-4]
    assert "rates pretrained 0.0002, random 0.0004 (picked on validation)" in curves.summary_line(summary)
    assert "n = 20: pretrained 0.0002, random 0.0004" in rates_sentence(summary)
    plain = curves.summarize(inputs, results, tfidf, _with(params, learning_rates=[]))
    assert plain["curve"]["20"]["learning_rate"] == {"pretrained": 2e-4, "random": 2e-4}
    assert rates_sentence(plain).startswith("Learning rates: pretrained 0.0002, random 0.0002 at every n")
