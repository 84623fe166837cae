"""curves@FAMILY: label-scarce learning curves. Fine-tune on nested, stratified subsets of the train split
(`curves.sizes`, plus the whole split with `curves.include_all`), from the pretrained model and from random
init, for each of `curves.seeds`; fit the TF-IDF baseline on the same subsets. Validation (epoch selection)
and test (scoring) are the full splits, as in the finetune stage. With `curves.reference[FAMILY]` a published
checkpoint is a third arm ("checkpoint", fine-tuned at curves.reference_learning_rate): what pretraining at
scale buys at each n, beside what this run's few minutes of pretraining buy. With `curves.learning_rates`, every
arm gets the same rate search at every n: its first seed trains at each rate, and the best validation macro-F1
picks the rate of its other seeds (one shared rate can favour an arm: on the default data, random-init BERT
at n = 500 scored 0.625 test accuracy at 2e-4 and 0.689 at 4e-4, pretrained BERT 0.679 and 0.680).

Outputs (artifacts/metrics/curves): FAMILY.json (per size and arm: accuracy and macro-F1 mean, sd and per
seed; pretrained - random, and checkpoint - random, with a seed-and-item paired bootstrap CI; the TF-IDF row;
where pretraining stops paying), plots/FAMILY/{pretrained,random[,checkpoint],tfidf}.json (DVC plots, one line
per arm), FAMILY.png, and
predictions/FAMILY.json (every run's per-text predictions: the report pairs BERT and XLNet by seed on them).

Each finished run's predictions are kept under artifacts/checkpoints/curves/FAMILY/runs with a fingerprint of
what made it, so an interrupted stage resumes and skips them; the folder is removed when the stage finishes.
The (all, finetune.seed) runs are the finetune@ and ablation@ stages' own runs when the params say so
(`curves.reuse_stage_runs`): their predictions are read, not trained again.

Off by default (`curves.sizes: []`, `include_all: false`): the stage then writes its outputs saying so, and
the report says how to turn them on. Why: the grid of sizes 100 and 500, 2 arms, 3 seeds (12 runs a family; a
run is 100-200 optimizer steps in length-grouped batches, 6 validation passes and one test pass) took curves@bert
7.1 minutes (30-39 s a run) and curves@xlnet 20.2 minutes (90-125 s a run) in a fresh-clone default run on the
project's 2-core machine, quiet (2026-11-30, commit c217f3a): 56 minutes in all, against the default run's
30-minute budget, which the other stages alone nearly fill (28 minutes). Turn them on with
`dvc exp run -S 'curves.sizes=[100,500]'`; fewer seeds or sizes cut the cost proportionally. Each run logs its
seconds, and FAMILY.json holds the stage's `train_seconds`. A MiniLM-L6 checkpoint arm adds about 9 minutes a run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.baseline import fit_selected
from pipeline.config import ConfigError, CurvesConfig, Params, ProbeConfig
from pipeline.data import read_split
from pipeline.families import check_family_keys, get_family
from pipeline.finetune import resolve_init, train_and_score
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths
from pipeline.plotting import pyplot, save
from pipeline.stats import seed_paired_bootstrap
from pipeline.training import resolve_checkpoint, set_threads, show_progress

log = logging.getLogger(__name__)
ARMS = ("pretrained", "random")  # always run; "checkpoint" joins them with curves.reference[family]
CHECKPOINT = "checkpoint"
METRICS = ("accuracy", "f1_macro")
ALL = "all"


def check_grid(section: str, sizes: list[int], seeds: list[int]) -> None:
    """A section's `sizes` and `seeds` (curves, probe), named by key: sizes positive and increasing, seeds distinct."""
    if any(n <= 0 for n in sizes) or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ConfigError(f"{section}.sizes={sizes} must be positive and strictly increasing, e.g. [100, 250, 500]")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{section}.seeds={seeds} must list one or more distinct seeds, e.g. [42, 43, 44]")


def check_config(cfg: CurvesConfig) -> None:
    """Values that cannot make a curve, named by key, before any data is read or model trained."""
    check_grid("curves", cfg.sizes, cfg.seeds)
    if cfg.min_steps < 0:
        raise ConfigError(f"curves.min_steps={cfg.min_steps} must be >= 0 (0: finetune.num_train_epochs alone)")
    if cfg.reference_learning_rate is not None and not cfg.reference_learning_rate > 0:
        raise ConfigError(f"curves.reference_learning_rate={cfg.reference_learning_rate} must be > 0 "
                          f"(null: finetune.learning_rate)")
    rates = cfg.learning_rates
    if not all(rate > 0 for rate in rates) or len(set(rates)) != len(rates):
        raise ConfigError(f"curves.learning_rates={rates} must list distinct rates > 0, e.g. [1.0e-4, 2.0e-4, "
                          f"4.0e-4] ([]: each arm at its own rate)")


def curves_off(cfg: CurvesConfig) -> str | None:
    """Why the stage trains nothing, or None when it has a grid."""
    if cfg.sizes or cfg.include_all:
        return None
    return ("off: curves.sizes is empty and curves.include_all is false (the default, for the 30-minute budget; "
            "sizes 100 and 500 x 3 seeds add about 27 minutes on a 2-core CPU); turn them on with "
            "dvc exp run -S 'curves.sizes=[100,500]'")


def nested_subsets(labels: list[int], sizes: list[int], seed: int) -> list[np.ndarray]:
    """Per size n, the train indices (in train order) of a stratified subset: one seeded permutation per class,
    of which each subset takes the first max(1, round(n x class share)). Larger subsets contain smaller ones."""
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    orders = {c: rng.permutation(np.flatnonzero(labels_arr == c)) for c in sorted(set(labels))}
    subsets = []
    for n in sizes:
        take = [order[:min(len(order), max(1, round(n * len(order) / len(labels))))] for order in orders.values()]
        subsets.append(np.sort(np.concatenate(take)))
    return subsets


def plan_subsets(labels: list[int], cfg: CurvesConfig | ProbeConfig, seed: int,
                 section: str = "curves") -> dict[str, np.ndarray]:
    """{"100": indices, ..., "all": every index}, cut with `seed`; a size that is not below the train split is an
    error naming `section`.sizes."""
    too_big = [n for n in cfg.sizes if n >= len(labels)]
    if too_big:
        raise ConfigError(f"{section}.sizes {too_big} are not below the train split's {len(labels)} examples; "
                          f"drop them ({section}.include_all: true adds the whole split) or use more data")
    subsets = dict(zip(map(str, cfg.sizes), nested_subsets(labels, cfg.sizes, seed)))
    if cfg.include_all:
        subsets[ALL] = np.arange(len(labels))
    return subsets


def plan_epochs(n: int, params: Params) -> tuple[float, int]:
    """(epochs, evaluate every N epochs) for a subset of n examples: at least `curves.min_steps` optimizer
    steps; when that takes more than finetune.num_train_epochs, the run is a whole multiple of them, so it
    still evaluates (and may pick) as many checkpoints as a plain run."""
    cfg = params.finetune
    needed = math.ceil(params.curves.min_steps / math.ceil(n / cfg.per_device_train_batch_size))
    if needed <= cfg.num_train_epochs:
        return cfg.num_train_epochs, 1
    evaluations = math.ceil(cfg.num_train_epochs)
    every = math.ceil(needed / evaluations)
    return float(every * evaluations), every


@dataclass
class Run:
    arm: str
    size: str  # a key of plan_subsets
    seed: int
    learning_rate: float | None = None  # a rate of curves.learning_rates; None: the arm's own

    @property
    def name(self) -> str:
        rate = "" if self.learning_rate is None else f"-lr{self.learning_rate:g}"
        return f"{self.arm}-n{self.size}-s{self.seed}{rate}"


def _digest(*folders: Path) -> str:
    """sha256 over the files of `folders` (names and bytes): the inputs a cached run was made from."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _fingerprint(run: Run, params: Params, epochs: tuple[float, int], inputs: str) -> dict:
    return json.loads(json.dumps({
        "run": dataclasses.asdict(run), "epochs": epochs, "inputs": inputs, "threads": params.threads,
        "finetune": {**dataclasses.asdict(params.finetune), "seed": run.seed, "seeds": None, "init": None},
        "model": dataclasses.asdict(params.model), "position_init": params.pretrain.position_init,  # random arm
        "subsets": [params.curves.sizes, params.curves.subset_seed],
        "scoring": [params.evaluate.batch_size, params.evaluate.threads, params.evaluate.torch_device]}))


def _reusable(run: Run, params: Params, paths: Paths, family: str, epochs: tuple[float, int]) -> Path | None:
    """The finetune@/ablation@ predictions file that IS this run, when params guarantee it: the whole train
    split, finetune.seed, the same epochs, deterministic training, and the stage's init the arm's (finetune.init
    pretrained, finetune.ablation_init random). Never for the checkpoint arm: no stage runs it."""
    cfg = params.finetune
    same = (params.curves.reuse_stage_runs and run.arm in ARMS and run.size == ALL and run.seed == cfg.seed
            and cfg.full_determinism
            and epochs == (cfg.num_train_epochs, 1)
            and run_rate(run, params) == cfg.learning_rate
            and (cfg.ablation_init if run.arm == "random" else cfg.init) == ("random" if run.arm == "random"
                                                                             else "pretrained"))
    stage = "finetune" if run.arm == "pretrained" else "finetune_random_init"
    path = paths.metrics(stage, family) / "predictions.json"
    return path if same and path.is_file() else None


@dataclass
class Inputs:
    """What every run of one family reads."""

    family: str
    train: tuple[list[str], list[int]]
    validation: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]
    id2label: dict[int, str]
    subsets: dict[str, np.ndarray]
    sources: dict[str, str | None]  # arm -> from_pretrained source (None: random init)
    digests: dict[str, str]  # arm -> digest of the model, tokenizer and data folders

    @property
    def arms(self) -> tuple[str, ...]:
        return (*ARMS, CHECKPOINT) if CHECKPOINT in self.sources else ARMS

    def subset(self, size: str) -> tuple[list[str], list[int]]:
        texts, labels = self.train
        return [texts[i] for i in self.subsets[size]], [labels[i] for i in self.subsets[size]]


def load_inputs(family: str, params: Params, paths: Paths) -> Inputs:
    source = resolve_init("pretrained", get_family(family), paths)
    train = read_split("train", paths)
    id2label = {i: label for label, i in read_json(paths.label_map).items()}
    data_digest = _digest(paths.data)
    sources = {"pretrained": source, "random": None}
    digests = {"pretrained": _digest(paths.pretrained(family)) + data_digest,
               "random": _digest(paths.tokenizer(family)) + data_digest}
    if family in params.curves.reference:
        reference = resolve_checkpoint(params.curves.reference[family], get_family(family),
                                       f"curves.reference.{family}", "a python:MODULE")
        sources[CHECKPOINT] = reference
        # a folder by its bytes; a hub id (not on disk) by its name
        digests[CHECKPOINT] = (_digest(Path(reference)) if Path(reference).is_dir() else reference) + data_digest
    return Inputs(family, train, read_split("validation", paths), read_split("test", paths), id2label,
                  plan_subsets(train[1], params.curves, params.curves.subset_seed), sources, digests)


def arm_learning_rate(arm: str, params: Params) -> float:
    """The peak fine-tuning rate of `arm`: curves.reference_learning_rate for the checkpoint arm (when set),
    finetune.learning_rate otherwise."""
    rate = params.curves.reference_learning_rate
    return rate if arm == CHECKPOINT and rate is not None else params.finetune.learning_rate


def run_rate(run: Run, params: Params) -> float:
    """The peak rate one run trains at: its own (a searched rate), else its arm's."""
    return arm_learning_rate(run.arm, params) if run.learning_rate is None else run.learning_rate


def run_params(run: Run, params: Params) -> Params:
    """The params one run trains with: finetune.seed the run's, and its rate (run_rate)."""
    return dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, seed=run.seed,
                                                                    learning_rate=run_rate(run, params)))


def run_one(run: Run, inputs: Inputs, params: Params, paths: Paths) -> dict:
    """{"predicted": [n_test] ids, "validation_f1_macro" (the chosen checkpoint's), "seconds", "source"}: read
    from the stage run or the resume cache if there is one, else trained (checkpoints in a temporary folder that
    is removed)."""
    epochs = plan_epochs(len(inputs.subsets[run.size]), params)
    reused = _reusable(run, params, paths, inputs.family, epochs)
    if reused is not None:
        label2id = {label: i for i, label in inputs.id2label.items()}
        validation = read_json(reused.with_name("metrics.json"))["best_validation_f1_macro"]
        return {"predicted": [label2id[r["predicted"]] for r in read_json(reused)], "seconds": 0.0,
                "validation_f1_macro": validation, "source": str(reused)}
    cache = paths.checkpoints("curves", inputs.family) / "runs" / f"{run.name}.json"
    trained_with = run_params(run, params)
    fingerprint = _fingerprint(run, trained_with, epochs, inputs.digests[run.arm])
    if cache.is_file() and (cached := read_json(cache)).get("fingerprint") == fingerprint:
        return {**cached["result"], "source": "resumed"}
    cache.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache.parent.parent, prefix="run-") as work:
        quality, _, predicted = train_and_score(inputs.family, trained_with, paths, inputs.sources[run.arm],
                                                inputs.subset(run.size), Path(work), *epochs)
    result = {"predicted": [int(p) for p in predicted], "seconds": time.perf_counter() - start,
              "epochs": epochs[0], "validation_f1_macro": quality["best_validation_f1_macro"]}
    write_json(cache, {"fingerprint": fingerprint, "result": result})
    return {**result, "source": "trained"}


def run_all(inputs: Inputs, params: Params, paths: Paths) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every run, smallest subsets first, logged one line each, with a progress bar on a terminal: ({run name:
    result}, {size: {arm: search}}). The runs a curve uses are under Run(arm, size, seed).name; a search's
    runs at the rates not picked (curves.learning_rates) under their own names, with the rate."""
    from tqdm.auto import tqdm

    rates, seeds, gold = params.curves.learning_rates, params.curves.seeds, np.asarray(inputs.test[1])
    per_arm = len(seeds) + max(0, len(rates) - 1)  # the first seed's run at the picked rate is a search run
    results: dict[str, dict] = {}
    searches: dict[str, dict] = {}
    with tqdm(total=len(inputs.subsets) * len(inputs.arms) * per_arm, desc=f"curves@{inputs.family}", unit="run",
              disable=not show_progress()) as bar:
        def run(r: Run) -> dict:
            result = run_one(r, inputs, params, paths)
            log.info("curves@%s %s n=%s seed %d, rate %g: validation macro-F1 %.4f, test accuracy %.4f, %.0f s (%s)",
                     inputs.family, r.arm, len(inputs.subsets[r.size]), r.seed, run_rate(r, params),
                     result["validation_f1_macro"],
                     float(np.mean(np.asarray(result["predicted"]) == gold)), result["seconds"], result["source"])
            bar.update()
            return result

        for size in inputs.subsets:
            picked: dict[str, float | None] = dict.fromkeys(inputs.arms)
            for arm in inputs.arms if rates else ():  # the search: the first seed at every rate
                tried = {r: run(Run(arm, size, seeds[0], r)) for r in rates}
                picked[arm], searches.setdefault(size, {})[arm] = pick_rate(tried)
                results.update({Run(arm, size, seeds[0], r).name: tried[r] for r in rates if r != picked[arm]})
                results[Run(arm, size, seeds[0]).name] = tried[picked[arm]]
            for seed in seeds[1:] if rates else seeds:  # arms in turn: an interrupted stage leaves pairs
                for arm in inputs.arms:
                    results[Run(arm, size, seed).name] = run(Run(arm, size, seed, picked[arm]))
    return results, searches


def pick_rate(tried: dict[float, dict]) -> tuple[float, dict]:
    """The rate whose run has the best validation macro-F1 (the first listed on a tie), and the search's record."""
    best = max(tried, key=lambda rate: tried[rate]["validation_f1_macro"])
    return best, {"learning_rate": best,
                  "validation_f1_macro": {f"{rate:g}": run["validation_f1_macro"] for rate, run in tried.items()}}


def tfidf_curve(inputs: Inputs, params: Params) -> dict[str, dict]:
    """The TF-IDF baseline fitted on each subset (analyzer and C picked on validation): deterministic, one row
    per size: accuracy, macro-F1, analyzer, C and the per-text predictions."""
    rows = {}
    x_test, y_test = inputs.test
    for size in inputs.subsets:
        vectorizer, model, best, _ = fit_selected(inputs.subset(size), inputs.validation, params.baseline,
                                                  params.data.seed, inputs.id2label)
        predicted = model.predict(vectorizer.transform(x_test))
        m = classification_metrics(y_test, predicted, inputs.id2label)
        rows[size] = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "analyzer": best["analyzer"],
                      "C": best["C"], "predicted": [int(p) for p in predicted]}
    return rows


def _spread(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def arm_summary(runs: list[list[int]], gold: list[int], seeds: list[int], id2label: dict[int, str]) -> dict:
    """{metric: {mean, sd, seeds: {seed: value}}} over the runs of one arm at one size ([k, n_test] ids)."""
    scores = [classification_metrics(gold, predicted, id2label) for predicted in runs]
    return {m: {**_spread([s[m] for s in scores]), "seeds": {str(seed): s[m] for seed, s in zip(seeds, scores)}}
            for m in METRICS}


def size_summary(size: str, inputs: Inputs, results: dict, tfidf: dict, params: Params,
                 searches: dict | None = None) -> dict:
    """One point of the curve: both arms, their seed-paired difference with its CI, TF-IDF, and each arm's
    learning rate (with the validation macro-F1 of every rate tried, where curves.learning_rates searched)."""
    seeds, gold, ev = params.curves.seeds, inputs.test[1], params.evaluate
    runs = {arm: [results[Run(arm, size, s).name]["predicted"] for s in seeds] for arm in inputs.arms}
    row = {"n": int(len(inputs.subsets[size])), "epochs": plan_epochs(len(inputs.subsets[size]), params)[0]}
    searched = (searches or {}).get(size, {})
    row["learning_rate"] = {arm: searched[arm]["learning_rate"] if arm in searched else arm_learning_rate(arm, params)
                            for arm in inputs.arms}
    if searched:
        row["learning_rate_search"] = {arm: s["validation_f1_macro"] for arm, s in searched.items()}
    row.update({arm: arm_summary(runs[arm], gold, seeds, inputs.id2label) for arm in inputs.arms})
    for arm, key in (("pretrained", "difference"), (CHECKPOINT, "checkpoint_difference")):  # arm - random init
        if arm in runs:
            row[key] = {m: seed_paired_bootstrap(gold, runs[arm], runs["random"], m, ev.bootstrap_samples, ev.seed,
                                                 ev.confidence, sorted(inputs.id2label)) for m in METRICS}
    row["tfidf"] = {k: v for k, v in tfidf[size].items() if k != "predicted"}
    return row


def where_pretraining_pays(curve: dict[str, dict], metric: str, key: str = "difference") -> dict:
    """pretraining_pays_up_to: the largest n up to which every CI of pretrained - random (`key`:
    checkpoint_difference, the checkpoint arm's) is above zero (None if not at the smallest); stops_paying_at:
    the smallest n whose CI includes or is below zero (None: never); pays_at: every n whose CI is above zero,
    which a curve whose CI spans zero at a small n (a wide seed spread) can still have further on."""
    pays_up_to = stops_at = None
    pays_at = []
    for row in curve.values():
        if row[key][metric]["ci_low"] > 0:
            pays_at.append(row["n"])
            if stops_at is None:
                pays_up_to = row["n"]
        elif stops_at is None:
            stops_at = row["n"]
    return {"pretraining_pays_up_to": pays_up_to, "stops_paying_at": stops_at, "pays_at": pays_at}


def summarize(inputs: Inputs, results: dict, tfidf: dict, params: Params, searches: dict | None = None) -> dict:
    curve = {size: size_summary(size, inputs, results, tfidf, params, searches) for size in inputs.subsets}
    ev = params.evaluate
    reference = {}
    if CHECKPOINT in inputs.sources:
        resolved = inputs.sources[CHECKPOINT]  # python:MODULE's folder is MODULE/model: keep the name given
        reference = {"reference": {"source": params.curves.reference.get(inputs.family, resolved), "path": resolved,
                                   "learning_rate": arm_learning_rate(CHECKPOINT, params),
                                   **where_pretraining_pays(curve, "accuracy", "checkpoint_difference")}}
    return {"family": inputs.family, "metric": "accuracy", **where_pretraining_pays(curve, "accuracy"),
            "f1_macro": where_pretraining_pays(curve, "f1_macro"), "seeds": list(params.curves.seeds),
            "learning_rates_searched": list(params.curves.learning_rates),
            "train_size": len(inputs.train[1]), "test_size": len(inputs.test[1]),
            "bootstrap": {"samples": ev.bootstrap_samples, "confidence": ev.confidence, "seed": ev.seed},
            "reused_stage_runs": sorted(k for k, r in results.items() if r["source"].endswith("predictions.json")),
            "train_seconds": round(sum(r["seconds"] for r in results.values()), 1), **reference, "curve": curve}


def summary_arms(summary: dict) -> tuple[str, ...]:
    """The fine-tuned arms a curves summary holds: ARMS, and the checkpoint arm when it ran."""
    return (*ARMS, CHECKPOINT) if "reference" in summary else ARMS


def plot_rows(summary: dict) -> dict[str, list[dict]]:
    """{arm: [{n, size, accuracy, accuracy_sd, f1_macro, f1_macro_sd}]}: one DVC plot file per arm, so that
    `dvc plots show` draws one line per arm (x: n)."""
    arms = summary_arms(summary)
    rows: dict[str, list[dict]] = {arm: [] for arm in (*arms, "tfidf")}
    for size, point in summary["curve"].items():
        for arm in arms:
            rows[arm].append({"n": point["n"], "size": size, **{k: v for m in METRICS for k, v in (
                (m, point[arm][m]["mean"]), (f"{m}_sd", point[arm][m]["sd"]))}})
        rows["tfidf"].append({"n": point["n"], "size": size, **{m: point["tfidf"][m] for m in METRICS}})
    return rows


def write_plot_files(folder: Path, rows: dict[str, list[dict]]) -> None:
    """plot_rows' output as DVC plot files, one per arm, written atomically."""
    with atomic_dir(folder) as tmp:
        for arm, arm_rows in rows.items():
            write_json(tmp / f"{arm}.json", arm_rows)


def plot_curves(summary: dict, out: Path) -> bool:
    """Accuracy and macro-F1 vs n (log x): mean over seeds with a ±sd band per arm, TF-IDF dashed."""
    plt = pyplot()
    rows = plot_rows(summary)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = {arm: f"{arm} init" for arm in ARMS}
    if "reference" in summary:
        names[CHECKPOINT] = f"checkpoint: {summary['reference']['source']}"
    for ax, metric, title in zip(axes, METRICS, ("accuracy", "macro-F1")):
        for color, arm in enumerate(summary_arms(summary)):
            n = [r["n"] for r in rows[arm]]
            mean, sd = np.array([r[metric] for r in rows[arm]]), np.array([r[f"{metric}_sd"] for r in rows[arm]])
            ax.plot(n, mean, marker="o", color=f"C{color}", label=f"{names[arm]} (mean ± sd)")
            ax.fill_between(n, mean - sd, mean + sd, color=f"C{color}", alpha=0.2)
        ax.plot([r["n"] for r in rows["tfidf"]], [r[metric] for r in rows["tfidf"]], "--", marker="s",
                color="grey", label="TF-IDF baseline")
        ax.set(xscale="log", xlabel="labelled train examples (log)", ylabel=f"test {title}",
               title=f"{summary['family']}: {title} vs labels ({len(summary['seeds'])} seeds)")
        ax.set_xticks([r["n"] for r in rows["tfidf"]], [r["size"] for r in rows["tfidf"]])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    return save(fig, out, plt)


def write_outputs(summary: dict, results: dict, tfidf: dict, inputs: Inputs, paths: Paths) -> None:
    root, family = paths.metrics("curves"), inputs.family
    write_plot_files(root / "plots" / family, plot_rows(summary))
    runs = {arm: {size: {str(s): results[Run(arm, size, s).name]["predicted"] for s in summary["seeds"]}
                  for size in inputs.subsets} for arm in inputs.arms}
    write_json(root / "predictions" / f"{family}.json",
               {"labels": [inputs.id2label[i] for i in sorted(inputs.id2label)], "gold": list(inputs.test[1]),
                **runs, "tfidf": {size: row["predicted"] for size, row in tfidf.items()}})
    plot_curves(summary, root / f"{family}.png")
    write_json(root / f"{family}.json", summary)


def write_off_outputs(family: str, reason: str, paths: Paths) -> dict:
    """The stage's outputs when it is off (DVC wants every declared output): a summary and a figure that say so,
    no runs, empty plot files."""
    root = paths.metrics("curves")
    write_plot_files(root / "plots" / family, plot_rows({"curve": {}}))  # each arm's file, no rows
    write_json(root / "predictions" / f"{family}.json", {})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.axis("off")
    text = f"{family}: learning curves {reason}".replace("; ", ";\n")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    save(fig, root / f"{family}.png", plt)
    summary = {"family": family, "off": reason}
    write_json(root / f"{family}.json", summary)
    return summary


def learning_curves(family: str, params: Params, paths: Paths = Paths()) -> dict:
    """The curves stage of one family (see the module docstring)."""
    check_config(params.curves)
    check_family_keys(params)
    reason = curves_off(params.curves)
    if reason:
        get_family(family)  # an unknown family is still an error
        return write_off_outputs(family, reason, paths)
    set_threads(params.threads)
    inputs = load_inputs(family, params, paths)
    tfidf = tfidf_curve(inputs, params)
    results, searches = run_all(inputs, params, paths)
    summary = summarize(inputs, results, tfidf, params, searches)
    write_outputs(summary, results, tfidf, inputs, paths)
    shutil.rmtree(paths.checkpoints("curves", family), ignore_errors=True)  # resume state of a finished stage
    with contextlib.suppress(OSError):  # and its parent, once no other family's runs are in it
        paths.checkpoints("curves", family).parent.rmdir()
    return summary


def format_difference(d: dict) -> str:
    """A seed_paired_bootstrap result in points: "+5.5 pts [+0.9, +10.4]"."""
    return f"{100 * d['difference']:+.1f} pts [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def summary_line(summary: dict) -> str:
    """One line per size for the stage's output: accuracy mean ± sd per arm and the difference's CI."""
    if "off" in summary:
        return f"learning curves {summary['off']}"
    lines = []
    for size, p in summary["curve"].items():
        line = (f"n={p['n']}: pretrained {p['pretrained']['accuracy']['mean']:.3f} ± "
                f"{p['pretrained']['accuracy']['sd']:.3f}, random {p['random']['accuracy']['mean']:.3f} ± "
                f"{p['random']['accuracy']['sd']:.3f}, diff {format_difference(p['difference']['accuracy'])}")
        if CHECKPOINT in p:
            line += (f", checkpoint {p[CHECKPOINT]['accuracy']['mean']:.3f} ± {p[CHECKPOINT]['accuracy']['sd']:.3f}"
                     f" (vs random {format_difference(p['checkpoint_difference']['accuracy'])})")
        rates = ", ".join(f"{arm} {rate:g}" for arm, rate in p["learning_rate"].items())
        lines.append(f"{line}, tfidf {p['tfidf']['accuracy']:.3f}; rates {rates}"
                     f"{' (picked on validation)' if 'learning_rate_search' in p else ''}")
    lines.append(f"pretraining pays up to n={summary['pretraining_pays_up_to']}, stops paying at "
                 f"n={summary['stops_paying_at']}, pays at n={summary['pays_at']}")
    if "reference" in summary:
        ref = summary["reference"]
        lines.append(f"the checkpoint ({ref['source']}) pays up to n={ref['pretraining_pays_up_to']}, stops paying "
                     f"at n={ref['stops_paying_at']}, pays at n={ref['pays_at']}")
    return "\n".join(lines)
