"""`bilm probe FAMILY`: did pretraining learn features the task can use, before any fine-tuning?

A linear probe on frozen features. Each arm's encoder reads the train, validation and test texts once
(finetune.max_length tokens, evaluate.batch_size texts a batch); a text's feature is its last hidden states
averaged over its real tokens. The arms:
- pretrained: finetune.init's source (artifacts/pretrained/FAMILY by default, or `--init` with a folder, hub id or
  python:MODULE);
- random: its twin with the same config and tokenizer and fresh weights from the family's initializer, as the
  ablation starts.
Per arm, a logistic regression on standardised features is fitted on nested stratified train subsets, as the
curves stage cuts them (probe.sizes, one draw per probe.seeds, and the whole split with probe.include_all). Its C
is picked on validation macro-F1 from probe.c_grid, and it is scored on the test split.

Output, artifacts/metrics/probe/FAMILY.json (not a DVC output):
- per n and arm, accuracy and macro-F1, mean and sd over the draws;
- pretrained - random, with the seed-paired bootstrap CI of the curves (evaluate.bootstrap_samples, confidence).

Why: the learning curves answer "does pretraining pay" with 30+ minutes of fine-tuning on 2 cores (curves@xlnet
alone took 20 minutes); the probe answers "did pretraining learn anything usable" in 1 minute (BERT) to 3.5
(XLNet) on the same 2-core CPU. Where the probe shows nothing, a fine-tuning recipe is unlikely to find it. On the
default run's encoders (2026-12-02), BERT's features led random ones by 8.0 and 6.2 points at n = 100 and 500,
CIs above zero, and its curve paid; XLNet's were at -1.6 and +2.6, CIs spanning zero, and its curve did not pay.

Mean pooling, not the classifier's summary token: the probe asks what the encoder holds. A summary token that
no pretraining objective trained (XLNet's last token) understates it.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from pipeline.config import ConfigError, Params, ProbeConfig
from pipeline.curves import (ALL, METRICS, arm_summary, check_grid, format_difference, plan_subsets,
                             where_pretraining_pays)
from pipeline.data import read_split
from pipeline.families import Family, check_family_keys, get_family
from pipeline.finetune import check_max_length, resolve_init
from pipeline.io import read_json, write_json
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths
from pipeline.stats import seed_paired_bootstrap
from pipeline.training import set_threads, show_progress

ARMS = ("pretrained", "random")
SPLITS = ("train", "validation", "test")


def check_config(cfg: ProbeConfig) -> None:
    """Values that cannot make a probe, named by key, before any model loads."""
    check_grid("probe", cfg.sizes, cfg.seeds)
    if not cfg.sizes and not cfg.include_all:
        raise ConfigError("probe.sizes is empty and probe.include_all is false: nothing to probe; give sizes, "
                          "e.g. [100, 500], or set probe.include_all: true")
    if not cfg.c_grid or min(cfg.c_grid) <= 0:
        raise ConfigError(f"probe.c_grid={cfg.c_grid} must list one or more positive C values, e.g. [0.01, 0.1, 1.0]")


def load_encoders(family: Family, source: str, params: Params) -> tuple[object, dict[str, torch.nn.Module]]:
    """(tokenizer, {"pretrained": encoder from `source`, "random": same config, fresh weights}), in eval mode."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source)
    family.classifier_for(config)  # a checkpoint of another family is an error naming both, before loading
    check_max_length(config, tokenizer, params.finetune.max_length)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pretraining heads' "UNEXPECTED" table: the probe drops them on purpose
    try:
        pretrained = AutoModel.from_pretrained(source)
    finally:
        hf_logging.set_verbosity(verbosity)
    torch.manual_seed(params.finetune.seed)  # the twin's weights, as build_classifier seeds the ablation's
    random = AutoModel.from_config(config)
    family.initialize(random, params.pretrain)
    return tokenizer, {"pretrained": pretrained.eval(), "random": random.eval()}


def mean_features(encoder: torch.nn.Module, tokenizer, texts: list[str], max_length: int, batch_size: int,
                  desc: str, progress: bool = False) -> np.ndarray:
    """[len(texts), hidden] float32: last hidden states averaged over each text's real tokens (padding masked),
    in batches of similar length (sorted by characters), returned in input order."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    rows: list[np.ndarray] = [np.empty(0)] * len(texts)
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state  # [batch, tokens, hidden]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, tokens, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            for i, row in zip(index, pooled.float().numpy()):
                rows[i] = row
    return np.stack(rows)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              cfg: ProbeConfig, class_weight: str | None, id2label: dict[int, str]):
    """(fitted scaler + logistic regression, its C): the C of probe.c_grid with the best validation macro-F1
    (the first listed on a tie)."""
    best = None
    for c in cfg.c_grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight=class_weight))
        model.fit(x_train, y_train)
        f1 = classification_metrics(y_val, model.predict(x_val), id2label)["f1_macro"]
        if best is None or f1 > best[0]:
            best = (f1, model, c)
    return best[1], best[2]


def draws(labels: list[int], cfg: ProbeConfig) -> dict[str, list[np.ndarray]]:
    """{size: one train-index subset per seed}; n = all is one draw (every seed would draw the same)."""
    plans = [plan_subsets(labels, cfg, seed, "probe") for seed in cfg.seeds]
    return {size: [plan[size] for plan in plans[:1 if size == ALL else None]] for size in plans[0]}


def probe_arm(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], subsets: dict[str, list[np.ndarray]],
              cfg: ProbeConfig, class_weight: str | None, id2label: dict[int, str]) -> dict[str, dict]:
    """{size: {"predicted": [draws, n_test] test label ids, "C": [draws]}} for one arm's features per split."""
    out = {}
    for size, subset_list in subsets.items():
        predicted, chosen = [], []
        for subset in subset_list:
            model, c = fit_probe(features["train"][subset], labels["train"][subset], features["validation"],
                                 labels["validation"], cfg, class_weight, id2label)
            predicted.append(model.predict(features["test"]).tolist())
            chosen.append(c)
        out[size] = {"predicted": predicted, "C": chosen}
    return out


def summarize(results: dict[str, dict], subsets: dict[str, list[np.ndarray]], gold: list[int],
              id2label: dict[int, str], params: Params) -> dict[str, dict]:
    """{size: {n, draws, pretrained, random (arm_summary plus the C per draw), difference}} per size."""
    ev, seeds = params.evaluate, params.probe.seeds
    curve = {}
    for size, subset_list in subsets.items():
        runs = {arm: results[arm][size]["predicted"] for arm in ARMS}
        row = {"n": int(len(subset_list[0])), "draws": len(subset_list)}
        for arm in ARMS:
            row[arm] = {**arm_summary(runs[arm], gold, seeds[:len(subset_list)], id2label),
                        "C": results[arm][size]["C"]}
        row["difference"] = {m: seed_paired_bootstrap(gold, runs["pretrained"], runs["random"], m, ev.bootstrap_samples,
                                                      ev.seed, ev.confidence, sorted(id2label)) for m in METRICS}
        curve[size] = row
    return curve


def resolve_source(family: Family, init: str, paths: Paths) -> str:
    """The from_pretrained source of the weights to probe; random init is no source, an error before any work."""
    source = resolve_init(init, family, paths, "--init", "pass --init a checkpoint folder, hub id or python:MODULE")
    if source is None:
        raise ConfigError(f"the probe compares pretrained weights with random ones, but the source is {init!r}; "
                          f"pass --init pretrained (the default) or a checkpoint folder, hub id or python:MODULE")
    return source


def probe_encoders(encoders: dict[str, torch.nn.Module], tokenizer, splits: dict[str, tuple[list[str], list[int]]],
                   subsets: dict[str, list[np.ndarray]], id2label: dict[int, str], params: Params,
                   progress: bool) -> tuple[dict, dict]:
    """({arm: probe_arm's result}, {arm: seconds of feature extraction}) for every arm."""
    labels = {name: np.asarray(split[1]) for name, split in splits.items()}
    class_weight = "balanced" if params.finetune.class_weighted_loss else None  # as fine-tuning weighs its loss
    results, seconds = {}, {}
    for arm, encoder in encoders.items():
        start = time.perf_counter()
        features = {name: mean_features(encoder, tokenizer, splits[name][0], params.finetune.max_length,
                                        params.evaluate.batch_size, f"{arm} {name}", progress) for name in SPLITS}
        seconds[arm] = round(time.perf_counter() - start, 1)
        results[arm] = probe_arm(features, labels, subsets, params.probe, class_weight, id2label)
    return results, seconds


def probe(family_name: str, params: Params, paths: Paths = Paths(), init: str | None = None) -> dict:
    """The probe of one family (see the module docstring); writes and returns its summary."""
    check_config(params.probe)
    check_family_keys(params)
    family, init = get_family(family_name), init or params.finetune.init
    source = resolve_source(family, init, paths)
    set_threads(params.threads)
    splits = {name: read_split(name, paths) for name in SPLITS}
    subsets = draws(splits["train"][1], params.probe)  # a size too big is an error before any model loads
    id2label = {i: label for label, i in read_json(paths.label_map).items()}
    progress = show_progress()  # before loading: it also turns transformers' bars off outside a terminal
    tokenizer, encoders = load_encoders(family, source, params)
    results, seconds = probe_encoders(encoders, tokenizer, splits, subsets, id2label, params, progress)
    curve = summarize(results, subsets, splits["test"][1], id2label, params)
    ev, out = params.evaluate, paths.metrics("probe") / f"{family_name}.json"
    summary = {"family": family_name, "source": source, "init": init, "pooling": "mean", "metric": "accuracy",
               **where_pretraining_pays(curve, "accuracy"), "f1_macro": where_pretraining_pays(curve, "f1_macro"),
               "seeds": list(params.probe.seeds), "class_weighted": params.finetune.class_weighted_loss,
               "feature_seconds": seconds, "train_size": len(splits["train"][1]), "test_size": len(splits["test"][1]),
               "bootstrap": {"samples": ev.bootstrap_samples, "confidence": ev.confidence, "seed": ev.seed},
               "curve": curve, "output": str(out)}
    write_json(out, summary)
    return summary


def summary_lines(summary: dict) -> str:
    """One line per size (accuracy mean ± sd per arm, the difference's CI) and the verdict."""
    lines = [f"{summary['family']} probe of {summary['source']} (frozen, mean-pooled; logistic regression):"]
    for row in summary["curve"].values():
        arms = ", ".join(f"{arm} {row[arm]['accuracy']['mean']:.3f} ± {row[arm]['accuracy']['sd']:.3f}"
                         for arm in ARMS)
        draws_text = f"{row['draws']} draw{'s' if row['draws'] > 1 else ''}"
        lines.append(f"n={row['n']} ({draws_text}): {arms}, diff "
                     f"{format_difference(row['difference']['accuracy'])}; macro-F1 diff "
                     f"{format_difference(row['difference']['f1_macro'])}")
    lines.append(f"pretrained features pay at n={summary['pays_at']}, stop paying at n={summary['stops_paying_at']}; "
                 f"features took {summary['feature_seconds']} s")
    lines.append(f"written to {summary['output']}")
    return "\n".join(lines)
