"""The frozen-feature probe (pipeline/probe.py): its statistics on planted features, config errors before any model
loads, and the command on the tiny preset for every registered family (real pretraining, real encoders)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import run_cli
from pipeline import probe
from pipeline.config import ConfigError, ProbeConfig
from pipeline.families import family_names

ID2LABEL = {0: "great", 1: "other"}


def _with(params, **probe_values):
    return dataclasses.replace(params, probe=dataclasses.replace(params.probe, **probe_values))


def _planted(rng, labels: np.ndarray, signal: float) -> np.ndarray:
    """[n, 8] features: noise, plus `signal` x (label - 0.5) on the first column."""
    x = rng.normal(size=(len(labels), 8))
    x[:, 0] += signal * (labels - 0.5)
    return x


def test_a_planted_signal_pays_and_identical_features_do_not(tiny_params):
    """Pretrained features that carry the label beat noise with a CI above zero at every n; the same features in
    both arms give a difference of exactly zero."""
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, 2, 400), "validation": rng.integers(0, 2, 100), "test": rng.integers(0, 2, 300)}
    params = _with(tiny_params, sizes=[40, 200], seeds=[1, 2, 3], include_all=True)
    subsets = probe.draws(labels["train"].tolist(), params.probe)
    assert [len(s) for s in subsets.values()] == [3, 3, 1]
    assert all(set(a) <= set(b) for a, b in zip(subsets["40"], subsets["200"]))  # nested per draw
    signal = {name: _planted(rng, y, 4.0) for name, y in labels.items()}
    noise = {name: _planted(rng, y, 0.0) for name, y in labels.items()}
    results = {arm: probe.probe_arm(features, labels, subsets, params.probe, None, ID2LABEL)
               for arm, features in (("pretrained", signal), ("random", noise))}
    curve = probe.summarize(results, subsets, labels["test"].tolist(), ID2LABEL, params)
    assert [row["n"] for row in curve.values()] == [40, 200, 400]
    for row in curve.values():
        assert row["pretrained"]["accuracy"]["mean"] > 0.9 and row["random"]["accuracy"]["mean"] < 0.65
        assert row["difference"]["accuracy"]["ci_low"] > 0.2
        assert set(row["pretrained"]["C"]) <= set(params.probe.c_grid)
    same = probe.summarize({"pretrained": results["random"], "random": results["random"]}, subsets,
                           labels["test"].tolist(), ID2LABEL, params)
    assert all(row["difference"]["accuracy"]["difference"] == 0 for row in same.values())


@pytest.mark.parametrize("values, message", [
    ({"sizes": [100, 50]}, "probe.sizes"), ({"seeds": [1, 1]}, "probe.seeds"), ({"c_grid": []}, "probe.c_grid"),
    ({"c_grid": [0.0]}, "probe.c_grid"), ({"sizes": [], "include_all": False}, "probe.sizes is empty")])
def test_bad_probe_params_are_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        probe.check_config(ProbeConfig(**values))


def test_bad_sources_and_sizes_stop_before_any_model_loads(workdir, tiny_params, monkeypatch):
    monkeypatch.setattr(probe, "load_encoders", lambda *a: pytest.fail("loaded a model"))
    with pytest.raises(ConfigError, match="holds no pretrained model; .* or pass --init a checkpoint folder"):
        probe.probe("bert", tiny_params, workdir)
    with pytest.raises(ConfigError, match="compares pretrained weights with random ones"):
        probe.probe("bert", tiny_params, workdir, init="random")
    (workdir.pretrained("bert") / "config.json").parent.mkdir(parents=True)
    (workdir.pretrained("bert") / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="probe.sizes .5000. are not below the train split"):
        probe.probe("bert", _with(tiny_params, sizes=[5000]), workdir)


@pytest.mark.parametrize("family", family_names())
def test_probe_on_the_tiny_preset(family, workdir, tiny_params):
    """A real (6-step) pretrained encoder against its random twin: every size and draw, C from the grid, the
    summary written where the docs say, and the same numbers from `bilm probe` in a second process."""
    from pipeline.pretrain import pretrain

    pretrain(family, tiny_params, workdir)
    summary = probe.probe(family, tiny_params, workdir)
    saved = json.loads((workdir.metrics("probe") / f"{family}.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    cfg, train = tiny_params.probe, summary["train_size"]
    assert list(summary["curve"]) == [*map(str, cfg.sizes), "all"]
    assert [row["n"] for row in summary["curve"].values()][-1] == train
    for size, row in summary["curve"].items():
        assert row["draws"] == (1 if size == "all" else len(cfg.seeds))
        for arm in probe.ARMS:
            assert len(row[arm]["C"]) == row["draws"] and set(row[arm]["C"]) <= set(cfg.c_grid)
            assert 0 <= row[arm]["accuracy"]["mean"] <= 1
        diff = row["difference"]["accuracy"]
        assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"]
    # the command, in a fresh process: the same numbers (deterministic), its lines and where it wrote them
    proc = run_cli("probe", family, "--set", "preset=tiny", env={"BILM_ARTIFACTS": str(workdir.root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((workdir.metrics("probe") / f"{family}.json").read_text())["curve"] == saved["curve"]
    assert f"{family} probe of" in proc.stdout and f"n={train} (1 draw):" in proc.stdout
    assert f"written to {workdir.metrics('probe') / f'{family}.json'}" in proc.stdout


def test_the_random_twin_has_the_checkpoints_config_and_fresh_weights(workdir, tiny_params):
    """--init with a checkpoint: the twin is built from its config (not params.model); another family's is an
    error naming both."""
    import torch

    from pipeline.families import get_family
    from pipeline.random_model import save_random_classifier

    folder = save_random_classifier("bert", tiny_params.model, workdir.corpus, workdir.root / "ckpt",
                                    tiny_params.tokenizer, classifier=False)
    _, encoders = probe.load_encoders(get_family("bert"), str(folder), tiny_params)
    pretrained, random = encoders["pretrained"], encoders["random"]
    assert pretrained.config.to_dict() == random.config.to_dict()
    assert not torch.equal(pretrained.embeddings.word_embeddings.weight, random.embeddings.word_embeddings.weight)
    assert not pretrained.training and not random.training
    with pytest.raises(ConfigError, match="family 'xlnet' has no classifier for model_type 'bert'"):
        probe.load_encoders(get_family("xlnet"), str(folder), tiny_params)
