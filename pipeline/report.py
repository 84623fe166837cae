"""report: artifacts/report/report.md, readable on its own, plus PNGs drawn with matplotlib (Agg).

Reads only files: artifacts/evaluation/*.json and plots/ (the evaluate stage), the dvclive TSVs of the
pretrain and finetune stages, and artifacts/metrics/curves (the curves stages: learning curves, and the
multi-seed n = all rows). The same plot data is declared as DVC plots in dvc.yaml.
"""
from __future__ import annotations

import csv
import math
import shutil
from itertools import combinations
from pathlib import Path

from pipeline.io import MissingInputError, atomic_dir, read_json
from pipeline.paths import Paths
from pipeline.plotting import pyplot as _pyplot, save as _save
from pipeline.stats import seed_paired_bootstrap

ALPHA = 0.05  # significance level the summary uses for McNemar and the bootstrap CIs' reading


# --- small formatting helpers --------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def _points(quality: dict) -> list[tuple[str, str, dict]]:
    """(model, backend, row) for every row, the baseline included, in evaluation order."""
    return [(model, backend, row) for model, rows in quality.items() for backend, row in rows.items()]


def _ok(quality: dict) -> list[tuple[str, str, dict]]:
    return [p for p in _points(quality) if p[2].get("status") == "ok"]


# --- tables --------------------------------------------------------------------------------------------
def quality_table(quality: dict) -> list[str]:
    labels = sorted({c for _, _, r in _ok(quality) for c in r.get("per_class", {})})
    header = ["model", "backend", "accuracy", "precision (macro)", "recall (macro)", "F1 (macro)",
              *[f"F1 {c}" for c in labels], "ROC-AUC", "agreement w/ PyTorch", "size (MB)"]
    rows = []
    for model, backend, r in _ok(quality):
        per_class = [r["per_class"].get(c, {}).get("f1") for c in labels]
        rows.append([model, backend, r["accuracy"], r["precision_macro"], r["recall_macro"], r["f1_macro"],
                     *per_class, r.get("roc_auc"), r.get("agreement_with_pytorch"), r.get("size_mb")])
    return _table(header, rows)


def latency_table(latency: dict) -> list[str]:
    lengths = sorted({int(n) for rows in latency.values() for r in rows.values() for n in r["fixed"]})
    batch = next((r["real"]["throughput_batch_size"] for rows in latency.values() for r in rows.values()), "?")
    header = ["model", "backend", "p50 ms", "p90 ms", "p99 ms", f"texts/s @ batch {batch}",
              *[f"p50 ms @ {n} tok" for n in lengths], *[f"texts/s @ {n} tok" for n in lengths]]
    rows = []
    for model, rows_ in latency.items():
        for backend, r in rows_.items():
            fixed = [r["fixed"].get(str(n), {}) for n in lengths]
            rows.append([model, backend, r["real"]["p50_ms"], r["real"]["p90_ms"], r["real"]["p99_ms"],
                         r["real"]["throughput_per_s"], *[f.get("p50_ms") for f in fixed],
                         *[f.get("throughput_per_s") for f in fixed]])
    return _table(header, rows)


def _family_pairs(stats: dict) -> list[tuple[str, dict]]:
    """("bert_vs_xlnet", result) for each family pair that was compared (PyTorch rows); the ablation and baseline
    pairs are reported with pretraining (_pretraining_lines)."""
    return [(name, s) for name, s in stats.items() if "_vs_" in name and s.get("status") == "ok"
            and not any(side.endswith("random-init") or side == "tfidf-baseline" for side in name.split("_vs_"))]


def _stat_cells(s: dict) -> list:
    acc, f1, mc = s["accuracy"], s["f1_macro"], s["mcnemar"]
    pts = lambda d: f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"  # noqa: E731
    return [pts(acc), pts(f1), f"b={mc['b']}, c={mc['c']}", f"{mc['p_value']:.3g} ({mc['method']})",
            s["agreement"]]


def stats_tables(stats: dict) -> list[str]:
    conf = int(100 * stats.get("settings", {}).get("confidence", 0.95))
    header = ["comparison (A − B)", f"accuracy Δ pts [{conf}% CI]", f"macro-F1 Δ pts [{conf}% CI]",
              "discordant (A right / B right)", "McNemar p", "agreement"]
    rows = [[name.replace("_vs_", " − "), *_stat_cells(s)] for name, s in _family_pairs(stats)]
    rows += [[f"{fam}: {backend} − ort-fp32", *_stat_cells(s)]
             for fam, backends in stats.get("vs_onnx_fp32", {}).items() for backend, s in backends.items()
             if s.get("status") == "ok"]
    return _table(header, rows)


def skipped_lines(quality: dict, stats: dict) -> list[str]:
    lines = [f"- {model} / {backend}: {r['status']}" for model, backend, r in _points(quality)
             if r.get("status") != "ok"]
    lines += [f"- statistics {name}: {s['status']}" for name, s in stats.items()
              if isinstance(s, dict) and str(s.get("status", "")).startswith("skipped")]
    return lines or ["- none: every backend ran"]


def environment_lines(env: dict) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    return [f"- CPU: {env.get('cpu')} ({env.get('cpu_count')} logical cores; threads: "
            f"{env.get('threads') or 'runtime default'})",
            f"- GPU: {env.get('gpu') or 'none (CUDA not available)'}",
            f"- platform: {env.get('platform')}, Python {env.get('python')}",
            f"- versions: {versions}",
            f"- ONNX Runtime providers: {', '.join(env.get('onnxruntime_providers', []))}; PyTorch device: "
            f"{env.get('torch_device')}"]


# --- the generated summary -----------------------------------------------------------------------------
def _best(points: list[tuple[str, str, float]], lowest: bool = False) -> tuple[str, str, float] | None:
    points = [p for p in points if p[2] is not None and not math.isnan(p[2])]
    return (min if lowest else max)(points, key=lambda p: p[2]) if points else None


def _pair_sentence(name: str, s: dict, metric: str) -> str:
    a, b = name.split("_vs_")
    d, conf = s[metric], int(100 * s[metric]["confidence"])
    excludes_zero = d["ci_low"] > 0 or d["ci_high"] < 0
    leader = a if d["difference"] > 0 else b
    verdict = (f"{leader} is ahead, and the {conf}% CI excludes 0" if excludes_zero and d["difference"]
               else f"borderline: the CI reaches 0 but McNemar's p is below {ALPHA}, {leader} ahead"
               if _mcnemar_p(s) < ALPHA else "the CI includes 0, so the data do not separate them")
    return (f"{a} − {b} {metric}: {100 * d['difference']:+.1f} pts, {conf}% CI [{100 * d['ci_low']:+.1f}, "
            f"{100 * d['ci_high']:+.1f}]; {verdict} (McNemar p = {s['mcnemar']['p_value']:.3g})")


def _mcnemar_p(pair: dict) -> float:
    return pair.get("mcnemar", {}).get("p_value", 1.0)


def _changed_backends(stats: dict) -> list[tuple[str, str, dict]]:
    """(family, backend, result) where McNemar says the backend's predictions differ from its fp32 source."""
    return [(fam, backend, s) for fam, rows in stats.get("vs_onnx_fp32", {}).items() for backend, s in rows.items()
            if s.get("status") == "ok" and s["mcnemar"]["p_value"] < ALPHA]


def _significant_backends(stats: dict) -> list[str]:
    return [f"{fam}/{backend} (p = {s['mcnemar']['p_value']:.3g}, Δacc {100 * s['accuracy']['difference']:+.1f} pts)"
            for fam, backend, s in _changed_backends(stats)]


def recommendation(quality: dict, latency: dict, stats: dict, seed_pairs: list | None = None) -> str:
    """The family with significantly better accuracy (else: either), on its fastest backend whose predictions
    do not differ significantly from its fp32 ONNX source. `seed_pairs` (the learning curves' family pairs at
    n = all, over seeds) decide the family where they exist, else the single-seed pairs of `stats`."""
    pairs = seed_pairs or _family_pairs(stats)
    families = sorted({m for m in latency if m in quality and "-" not in m})
    if pairs:
        name, s = pairs[0]
        d = s["accuracy"]
        if d["ci_low"] > 0 or d["ci_high"] < 0:
            families = [name.split("_vs_")[0 if d["difference"] > 0 else 1]]
    changed = {(fam, backend) for fam, backend, _ in _changed_backends(stats)}
    options = [(m, b, r["real"]["p50_ms"]) for m in families for b, r in latency.get(m, {}).items()
               if (m, b) not in changed]
    best = _best(options, lowest=True)
    if best is None:
        return "no timed row is available, so there is no recommendation"
    acc = quality[best[0]][best[1]]["accuracy"]
    which = ("the significantly more accurate family" if len(families) == 1
             else "either family (their accuracy difference is not significant)")
    if seed_pairs:
        which += f" over {seed_pairs[0][1]['accuracy']['seeds']} fine-tuning seeds"
    choice = (f"**{best[0]} on {best[1]}**: {best[2]:.2f} ms p50 at batch 1, accuracy {acc:.3f}; the fastest "
              f"backend of {which} whose predictions do not differ significantly from its fp32 ONNX source")
    better = _significantly_better_alternatives(best[0], quality, stats)
    if not better:
        return (f"ship {choice}; neither its ablation ({ablation_label(quality, best[0])}) nor the TF-IDF "
                f"baseline is significantly better{_borderline_note(best[0], quality, stats)}")
    return (f"ship **{better[0]}**, not a pretrained model: {'; '.join(better[1:])}. Among the pretrained models "
            f"the pick would be {choice}")


def _alternatives(model: str, quality: dict, stats: dict):
    """(other, label, accuracy difference of `model` - other) for the TF-IDF baseline and the model's ablation,
    where the evaluate stage scored the pair `{model}_vs_{other}`; the baseline first, as it is also the cheapest."""
    for other, label in (("tfidf-baseline", "the TF-IDF baseline"),
                         (f"{model}-random-init", f"{model} from {ablation_label(quality, model)} (the ablation)")):
        pair = stats.get(f"{model}_vs_{other}", {})
        if pair.get("status") == "ok" and pair.get("accuracy"):
            yield other, label, pair


def _significantly_better_alternatives(model: str, quality: dict, stats: dict) -> list[str]:
    """[what to ship instead, why...] when the TF-IDF baseline or the model's random-init ablation is more
    accurate than `model` with a paired CI above zero; [] when neither is."""
    found = []
    for other, label, pair in _alternatives(model, quality, stats):
        d = pair["accuracy"]
        if d["ci_high"] < 0:
            row = quality.get(other, {})
            acc = next((r["accuracy"] for r in row.values() if r.get("status") == "ok"), float("nan"))
            found.append((other, f"{label} is more accurate ({acc:.3f}, {100 * -d['difference']:+.1f} pts over "
                                 f"{model}, {int(100 * d['confidence'])}% CI excludes 0)"))
    return [found[0][0], *(why for _, why in found)] if found else []


def _borderline_note(model: str, quality: dict, stats: dict) -> str:
    """'; but ...' naming the baseline or ablation when it leads `model` with McNemar's p below ALPHA while the
    bootstrap CI still reaches 0 (the two tests disagree at the edge), else ''."""
    close = [f"{other} leads by {100 * -d['difference']:.1f} pts (McNemar p = {_mcnemar_p(pair):.3g}, "
             f"CI [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}])"
             for other, _, pair in _alternatives(model, quality, stats)
             if (d := pair["accuracy"])["difference"] < 0 and _mcnemar_p(pair) < ALPHA]
    return f"; but at the edge of significance, {' and '.join(close)}" if close else ""


def summary_lines(quality: dict, latency: dict, stats: dict, curves: dict | None = None) -> list[str]:
    ok = _ok(quality)
    timed = [(m, b, r) for m, rows in latency.items() for b, r in rows.items()]
    lines = []
    for label, metric in (("accuracy", "accuracy"), ("macro-F1", "f1_macro"), ("ROC-AUC", "roc_auc")):
        best = _best([(m, b, r.get(metric)) for m, b, r in ok])
        if best:
            lines.append(f"- **{label}**: {best[0]} / {best[1]} ({best[2]:.3f})")
    for label, key, lowest, unit in (("latency (p50, batch 1, real texts)", "p50_ms", True, "ms"),
                                     ("throughput (real texts)", "throughput_per_s", False, "texts/s")):
        best = _best([(m, b, r["real"][key]) for m, b, r in timed], lowest)
        if best:
            lines.append(f"- **{label}**: {best[0]} / {best[1]} ({best[2]:.2f} {unit})")
    smallest = _best([(m, b, r.get("size_mb")) for m, b, r in ok if r.get("size_mb")], lowest=True)
    if smallest:
        lines.append(f"- **size on disk**: {smallest[0]} / {smallest[1]} ({smallest[2]:.1f} MB)")
    for name, s in _family_pairs(stats):
        lines += [f"- **confidence**: {_pair_sentence(name, s, 'accuracy')}",
                  f"- **confidence**: {_pair_sentence(name, s, 'f1_macro')}"]
    changed = _significant_backends(stats)
    lines.append("- **backends vs their fp32 ONNX source**: " + (
        f"significant change (McNemar p < {ALPHA}) for {', '.join(changed)}" if changed
        else f"no backend changed the predictions significantly (all McNemar p ≥ {ALPHA})"))
    lines += _pretraining_lines(quality, stats)
    curves = curves or {"families": {}, "pairs": []}
    lines += headline_lines(curves) + curves_off_lines(curves)
    lines.append(f"- **recommendation**: {recommendation(quality, latency, stats, curves['pairs'])}")
    return lines


def _pretraining_lines(quality: dict, stats: dict | None = None) -> list[str]:
    """Each family against its random-init ablation and the TF-IDF baseline, with the paired CI where the
    evaluate stage computed one."""
    lines, stats = [], stats or {}
    base = quality.get("tfidf-baseline", {}).get("sklearn", {})
    for model, rows in quality.items():
        if model.endswith("-random-init") or model == "tfidf-baseline":
            continue
        ablation = quality.get(f"{model}-random-init", {}).get("pytorch", {})
        row = rows.get("pytorch", {})
        start = ablation_label(quality, model)
        start += " (no pretraining)" if start == "random init" else ""
        for other, label in ((ablation, start), (base, _baseline_name(base))):
            if row.get("status") != "ok" or other.get("status") != "ok":
                continue
            key = f"{model}_vs_{model}-random-init" if other is ablation else f"{model}_vs_tfidf-baseline"
            paired = stats.get(key, {})
            detail = (_pair_sentence(key, paired, "accuracy") if paired.get("status") == "ok"
                      else f"accuracy {row['accuracy']:.3f} vs {other['accuracy']:.3f} (no per-text predictions: no CI)")
            lines.append(f"- **{model} vs {label}**: {detail}")
    return lines


def ablation_label(quality: dict, model: str) -> str:
    """What `model`'s ablation row (`{model}-random-init`) started from, as its finetune folder records it:
    random init by default, a checkpoint fine-tuned directly where finetune.ablation_init names one (the
    checkpoint preset: MiniLM without the continued pretraining)."""
    init = quality.get(f"{model}-random-init", {}).get("pytorch", {}).get("init", "random")
    return "random init" if init == "random" else f"{init} without continued pretraining"


def _baseline_name(base: dict) -> str:
    """The TF-IDF baseline with the analyzer and C its stage picked on validation."""
    if base.get("analyzer"):
        return f"TF-IDF baseline ({base['analyzer']} analyzer, C = {base['C']:g})"
    return "TF-IDF baseline"


# --- plots (matplotlib, Agg) ---------------------------------------------------------------------------
def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(name, p50 ms, accuracy) points no other point beats on both: faster and at least as accurate."""
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p[1], -p[2])):
        if point[2] > best:
            front.append(point)
            best = point[2]
    return front


def plot_pareto(rows: list[dict], out: Path) -> bool:
    if not rows:
        return False
    plt = _pyplot()
    points = [(r["point"], r["p50_ms"], r["accuracy"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    for name, x, y in points:
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="grey", marker="o", markersize=10,
            markerfacecolor="none", label="Pareto front")
    ax.set(xscale="log", xlabel="p50 latency, batch 1, real test texts (ms, log)", ylabel="test accuracy",
           title="Accuracy vs latency")
    ax.legend()
    return _save(fig, out, plt)


def plot_latency_vs_length(series: dict[str, list[dict]], out: Path) -> bool:
    if not any(series.values()):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["length"])
        ax.plot([r["length"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="sequence length (tokens, log)", ylabel="p50 latency, batch 1 (ms, log)",
           title="Latency vs sequence length")
    ax.legend(fontsize=7)
    return _save(fig, out, plt)


def plot_confusions(quality: dict, out: Path) -> bool:
    mats = [(f"{m}/{b}", r["confusion_matrix"]) for m, b, r in _ok(quality) if r.get("confusion_matrix")]
    if not mats:
        return False
    plt = _pyplot()
    cols = min(4, len(mats))
    rows = math.ceil(len(mats) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax, (name, cm) in zip(axes.flat, mats):
        labels = list(cm)
        counts = [[cm[t].get(p, 0) for p in labels] for t in labels]  # rows: actual, columns: predicted
        ax.imshow(counts, cmap="Blues")
        for i, row in enumerate(counts):
            for j, n in enumerate(row):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
               xlabel="predicted", ylabel="actual", title=name)
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    return _save(fig, out, plt)


def read_curve(path: Path) -> tuple[list[float], list[float]]:
    """A dvclive TSV (step, value) -> (steps, values); empty if the file is missing."""
    if not path.is_file():
        return [], []
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    return [float(r[0]) for r in rows[1:]], [float(r[-1]) for r in rows[1:]]


def plot_losses(metrics_root: Path, families: list[str], out: Path) -> bool:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, stage, title in zip(axes, ("pretrain", "finetune"), ("pretraining loss", "fine-tuning loss")):
        for color, family in enumerate(families):
            for kind, style in (("train", "-"), ("eval", "--")):
                steps, values = read_curve(metrics_root / stage / family / "plots" / "metrics" / kind / "loss.tsv")
                if steps:
                    ax.plot(steps, values, style, color=f"C{color}", marker="o" if kind == "eval" else None,
                            label=f"{family} {kind}")
                    drawn = True
        ax.set(xlabel="step", ylabel="loss", title=title)
        if ax.lines:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return False
    return _save(fig, out, plt)


# --- the report ----------------------------------------------------------------------------------------
def _latency_series(plots: Path) -> dict[str, list[dict]]:
    folder = plots / "latency_vs_length"
    return {p.stem.replace("--", "/"): read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def make_plots(out: Path, paths: Paths, quality: dict, families: list[str]) -> dict[str, bool]:
    plots = paths.evaluation / "plots"
    pareto = read_json(plots / "pareto.json") if (plots / "pareto.json").is_file() else []
    return {"pareto.png": plot_pareto(pareto, out / "pareto.png"),
            "latency_vs_length.png": plot_latency_vs_length(_latency_series(plots), out / "latency_vs_length.png"),
            "confusion_matrices.png": plot_confusions(quality, out / "confusion_matrices.png"),
            "loss_curves.png": plot_losses(paths.root / "metrics", families, out / "loss_curves.png")}


def _image(made: dict[str, bool], name: str, caption: str) -> list[str]:
    return [f"![{caption}]({name})", ""] if made.get(name) else [f"_{caption}: no data on this run._", ""]


def _read_optional(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _objective_cell(pre: dict) -> str:
    """Held-out accuracy per objective, each next to what it must beat: the token objective (MLM/PLM) next to
    always guessing the commonest token, NSP next to chance (0.5) and the TF-IDF cosine probe."""
    references = {"nsp": ["chance 0.5"] + ([f"TF-IDF probe {pre['probe/nsp_tfidf_cosine_accuracy']:.3f}"]
                                           if "probe/nsp_tfidf_cosine_accuracy" in pre else [])}
    cells = []
    for key, value in sorted(pre.items()):
        name = key.split("/")[-1].removesuffix("_accuracy")
        if not key.startswith("heldout/") or not key.endswith("_accuracy") or name == "unigram":
            continue
        refs = references.get(name) or ([f"unigram {pre['heldout/unigram_accuracy']:.3f}"]
                                        if "heldout/unigram_accuracy" in pre else [])
        cells.append(f"{name} {value:.3f}" + (f" ({'; '.join(refs)})" if refs else ""))
    return ", ".join(cells)


def training_table(paths: Paths, families: list[str]) -> list[str]:
    """Per family: pretraining time, throughput and held-out objective accuracy; fine-tuning seeds."""
    rows = []
    for family in families:
        pre = _read_optional(paths.metrics("pretrain", family) / "summary.json")
        seeds = _read_optional(paths.metrics("seeds") / f"{family}.json")
        objectives = _objective_cell(pre)
        seed_cell = "; ".join(f"{m} {seeds[m]['mean']:.3f} ± {seeds[m]['sd']:.3f}" for m in ("accuracy", "f1_macro")
                              if m in seeds) + (f" (n={seeds['n']})" if seeds else "")
        rows.append([family, _fmt(pre.get("train_seconds"), 0), _fmt(pre.get("tokens_per_second"), 0),
                     objectives or "–", seed_cell or "–"])
    return _table(["family", "pretrain s", "tokens/s", "held-out accuracy", "test over seeds (mean ± sd)"], rows)


def render(ev: dict, made: dict[str, bool], training: list[str] | None = None, curves: dict | None = None) -> str:
    quality, latency, stats, env = ev["quality"], ev["latency"], ev["stats"], ev["environment"]
    settings = stats.get("settings", {})
    lines = ["# bilm: BERT vs XLNet, every model x backend", "", "## Summary", "",
             *summary_lines(quality, latency, stats, curves), "", "## Environment", "", *environment_lines(env), "",
             "## Quality (test split)", "", *quality_table(quality), "",
             *(["## Training", "", *training, ""] if training else []),
             *curves_section(curves or {"families": {}}, made),
             "## Latency", "", "Model time only (tokenizing excluded), after warm-up; a family's backends are timed "
             "interleaved, round by round, in one process, so their ratios hold within this run. p50/p90/p99 at "
             "batch 1 over real test texts at their real lengths; throughput over length-sorted batches of real "
             "texts, and at fixed lengths (one real text cut to N tokens; median call).", "",
             *latency_table(latency), "",
             "## Statistics", "", f"Paired bootstrap ({settings.get('bootstrap_samples')} resamples, seed "
             f"{settings.get('seed')}): percentile CI of the difference A − B in points. McNemar on the "
             f"discordant pairs: exact binomial when b + c < {settings.get('mcnemar_exact_below')}, else "
             "chi-square with continuity correction.", "", *stats_tables(stats), "",
             "## Plots", "", *_image(made, "pareto.png", "Accuracy vs p50 latency, all model x backend points"),
             *_image(made, "latency_vs_length.png", "Latency vs sequence length per backend"),
             *_image(made, "confusion_matrices.png", "Confusion matrices (rows: actual, columns: predicted)"),
             *_image(made, "loss_curves.png", "Pretraining and fine-tuning loss"),
             "## Skipped rows", "", *skipped_lines(quality, stats), ""]
    return "\n".join(lines)


# --- learning curves (the curves stage's files, when they exist) ---------------------------------------------
def read_curves(paths: Paths, families: list[str]) -> dict:
    """{"families": {family: its curves JSON}, "pairs": [(a_vs_b, {metric: bootstrap})], "off": {family: why}}:
    every family pair, pretrained at n = all, paired by seed on the curves' per-text predictions. Empty without
    the stage; a family whose stage was off (curves.sizes empty) is in "off" only."""
    root = paths.metrics("curves")
    found = {f: read_json(root / f"{f}.json") for f in families if (root / f"{f}.json").is_file()}
    off = {f: s["off"] for f, s in found.items() if "off" in s}
    summaries = {f: s for f, s in found.items() if f not in off}
    predictions = {f: read_json(root / "predictions" / f"{f}.json") for f in summaries
                   if (root / "predictions" / f"{f}.json").is_file()}
    pairs = []
    for a, b in combinations(predictions, 2):
        pa, pb, boot = predictions[a], predictions[b], summaries[a]["bootstrap"]
        runs_a, runs_b = pa["pretrained"].get("all", {}), pb["pretrained"].get("all", {})
        seeds = [s for s in runs_a if s in runs_b]
        if seeds and pa["gold"] == pb["gold"] and pa["labels"] == pb["labels"]:
            pairs.append((f"{a}_vs_{b}", {m: seed_paired_bootstrap(
                pa["gold"], [runs_a[s] for s in seeds], [runs_b[s] for s in seeds], m, boot["samples"],
                boot["seed"], boot["confidence"], list(range(len(pa["labels"])))) for m in ("accuracy", "f1_macro")}))
    return {"families": summaries, "pairs": pairs, "off": off}


def copy_curve_plots(paths: Paths, curves: dict, out: Path) -> dict[str, bool]:
    made = {}
    for family in curves["families"]:
        png = paths.metrics("curves") / f"{family}.png"
        if png.is_file():
            shutil.copyfile(png, out / f"curves_{family}.png")
            made[f"curves_{family}.png"] = True
    return made


def _pts(d: dict) -> str:
    """A difference with its CI, in points: +1.2 [-0.3, +2.7]."""
    return f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def _spread_cell(arm: dict, metric: str) -> str:
    return f"{arm[metric]['mean']:.3f} ± {arm[metric]['sd']:.3f}"


def curve_table(summary: dict) -> list[str]:
    """One row per n: both arms and their Δ (accuracy, macro-F1), the checkpoint arm when it ran, TF-IDF."""
    conf = int(100 * summary["bootstrap"]["confidence"])
    checkpoint = "reference" in summary
    header = ["n", "pretrained acc", "random init acc", f"Δ acc pts [{conf}% CI]", "pretrained F1",
              "random init F1", f"Δ F1 pts [{conf}% CI]",
              *(["checkpoint acc", f"checkpoint − random acc pts [{conf}% CI]"] if checkpoint else []),
              "TF-IDF acc / F1"]
    rows = [[f"all ({p['n']})" if size == "all" else p["n"], _spread_cell(p["pretrained"], "accuracy"),
             _spread_cell(p["random"], "accuracy"), _pts(p["difference"]["accuracy"]),
             _spread_cell(p["pretrained"], "f1_macro"), _spread_cell(p["random"], "f1_macro"),
             _pts(p["difference"]["f1_macro"]),
             *([_spread_cell(p["checkpoint"], "accuracy"), _pts(p["checkpoint_difference"]["accuracy"])]
               if checkpoint else []),
             f"{p['tfidf']['accuracy']:.3f} / {p['tfidf']['f1_macro']:.3f}"]
            for size, p in summary["curve"].items()]
    return _table(header, rows)


def _paying_sizes(sizes: list) -> str:
    return ", ".join(f"n = {n}" for n in sizes)


def pays_sentence(summary: dict) -> str:
    """Where pretraining stops paying (accuracy, the CI of pretrained − random init), in one sentence, and every
    larger n where it pays again."""
    conf, stops, pays = int(100 * summary["bootstrap"]["confidence"]), summary["stops_paying_at"], \
        summary["pretraining_pays_up_to"]
    largest = max(p["n"] for p in summary["curve"].values())
    if stops is None:
        return (f"Pretraining pays at every n measured (up to {largest}): the {conf}% CI of pretrained − random "
                f"init accuracy is above zero at each.")
    upto = f"it pays up to n = {pays}" if pays else "it does not pay even at the smallest n"
    later = [n for n in summary.get("pays_at", []) if n > stops]
    again = (f"{', and again' if pays else ', but it does'} at {_paying_sizes(later)}, where the CI is above zero"
             if later else "")
    return (f"Pretraining stops paying at n = {stops}, the smallest n where the {conf}% CI of pretrained − random "
            f"init accuracy includes or is below zero; {upto}{again}.")


def rates_sentence(summary: dict) -> str:
    """Each arm's fine-tuning rate per n: picked on validation (curves.learning_rates), or its own; "" for a
    summary that records none."""
    picked = {size: p["learning_rate"] for size, p in summary["curve"].items() if "learning_rate" in p}
    if not picked:
        return ""

    def arms(rates: dict) -> str:
        return ", ".join(f"{arm} {rate:g}" for arm, rate in rates.items())

    searched = summary.get("learning_rates_searched")
    if not searched:  # the same at every n
        return (f"Learning rates: {arms(next(iter(picked.values())))} at every n, each arm's own "
                f"(`curves.learning_rates` searches them per arm and n on validation).")
    per_n = "; ".join(f"n = {summary['curve'][size]['n']}: {arms(rates)}" for size, rates in picked.items())
    return (f"Learning rates, searched for every arm at every n over {', '.join(f'{r:g}' for r in searched)} "
            f"(the first seed at each; the best validation macro-F1 picks the rate of the other seeds): {per_n}.")


def checkpoint_sentence(summary: dict) -> str:
    """What the checkpoint arm (curves.reference) says: where a published checkpoint's pretraining pays."""
    ref = summary.get("reference")
    if not ref:
        return ""
    stops, pays_at = ref["stops_paying_at"], ref.get("pays_at", [])
    where = ("at every n measured" if stops is None else f"at {_paying_sizes(pays_at)}" if pays_at
             else "at none of the n measured")
    return (f"The checkpoint arm, `{ref['source']}` fine-tuned the same way at learning rate "
            f"{ref['learning_rate']:g}, beats random init {where} (accuracy, CI above zero): what pretraining at "
            f"scale buys on these labels, beside what this run's pretraining buys.")


def headline_lines(curves: dict) -> list[str]:
    """The multi-seed rows at n = all: each family against random init, and the family pairs."""
    lines = []
    for family, s in curves["families"].items():
        p = s["curve"].get("all")
        if p:
            lines.append(f"- **{family}, all labels, {len(s['seeds'])} seeds**: pretrained "
                         f"{_spread_cell(p['pretrained'], 'accuracy')} vs random init "
                         f"{_spread_cell(p['random'], 'accuracy')} accuracy, Δ {_pts(p['difference']['accuracy'])} pts "
                         f"(CI over test items and seeds)")
    for name, s in curves["pairs"]:
        a, b = name.split("_vs_")
        d = s["accuracy"]
        verdict = ("the CI includes 0, so the data do not separate them" if d["ci_low"] <= 0 <= d["ci_high"]
                   else f"{a if d['difference'] > 0 else b} is ahead, and the CI excludes 0")
        lines.append(f"- **{a} − {b}, pretrained, all labels, {d['seeds']} seeds paired**: accuracy Δ {_pts(d)} "
                     f"pts, macro-F1 Δ {_pts(s['f1_macro'])} pts; {verdict}")
    return lines


def curves_off_lines(curves: dict) -> list[str]:
    """One line per reason a curves stage was off (how to turn it on), naming its families."""
    by_reason: dict[str, list[str]] = {}
    for family, reason in curves.get("off", {}).items():
        by_reason.setdefault(reason, []).append(family)
    return [f"- **learning curves, {', '.join(families)}**: {reason}" for reason, families in by_reason.items()]


def curves_section(curves: dict, made: dict[str, bool]) -> list[str]:
    if not curves["families"]:
        return ["## Learning curves", "", *curves_off_lines(curves)] if curves.get("off") else []
    lines = ["## Learning curves", "", "Fine-tuning on nested, stratified subsets of the train split (validation "
             "and test unchanged), from the pretrained model and from random init, mean ± sd over fine-tuning "
             "seeds; Δ = pretrained − random init in points, with a bootstrap CI that resamples test items and "
             "seeds (paired by seed); TF-IDF: the baseline fitted on the same subset.", ""]
    for family, summary in curves["families"].items():
        rates = rates_sentence(summary)
        lines += [f"### {family}", "", *curve_table(summary), "", pays_sentence(summary), "",
                  *([rates, ""] if rates else []),
                  *([checkpoint_sentence(summary), ""] if "reference" in summary else []),
                  *_image(made, f"curves_{family}.png", f"{family}: accuracy and macro-F1 vs labelled examples")]
    return lines


# --- serving (bilm loadtest's JSON, when one exists) ----------------------------------------------------------
def serving_lines(loadtest: Path, out: Path) -> str:
    """The "Serving" section from `bilm loadtest`'s JSON (copying its PNG into `out`); "" without one."""
    import shutil

    if not loadtest.is_file():
        return ""
    result = read_json(loadtest)
    rows = [[r["model"], r["concurrency"], round(r["throughput"], 1),
             round(r["vs_in_process"], 2) if "vs_in_process" in r else "", round(r["p50_ms"], 1),
             round(r["p90_ms"], 1), round(r["p99_ms"], 1), r["errors"], r.get("server_cpu_cores"),
             round(r["client_cpu_cores"], 2)] for r in result["levels"]]
    reference = next((f"x in-process b{r['reference_batch']} (measured just before)" for r in result["levels"]
                      if "reference_batch" in r), "x in-process")
    lines = ["", "## Serving", "", f"`bilm loadtest` against `{result['model']}` on Triton Inference Server "
             f"({result['duration_s']} s per level, one text per request, {result['n_texts']} texts).", "",
             *_table(["model", "concurrency", "texts/s", reference, "p50 ms", "p90 ms",
                      "p99 ms", "errors", "server CPU cores", "client CPU cores"], rows), ""]
    inproc = result.get("in_process") or {}
    if inproc:
        lines += ["In-process `bilm predict` path, same texts and threads:", "",
                  *_table(["batch", "texts/s"], [[int(b), round(v, 1)] for b, v in inproc.items()]), ""]
    if loadtest.with_suffix(".png").is_file():
        shutil.copyfile(loadtest.with_suffix(".png"), out / "serving.png")
        lines += ["![Serving throughput and latency per concurrency](serving.png)", ""]
    return "\n".join(lines)


def write_report(families: list[str], paths: Paths = Paths()) -> Path:
    """The report stage: artifacts/report/report.md and its PNGs, from the evaluate stage's files."""
    names = ("quality", "latency", "stats", "environment")
    missing = [n for n in names if not (paths.evaluation / f"{n}.json").is_file()]
    if missing:
        raise MissingInputError(f"{paths.evaluation} lacks {', '.join(f'{n}.json' for n in missing)}; run the "
                                f"evaluate stage first (`dvc repro evaluate` or `bilm evaluate`)")
    ev = {n: read_json(paths.evaluation / f"{n}.json") for n in names}
    curves = read_curves(paths, families)
    with atomic_dir(paths.report) as tmp:
        made = {**make_plots(tmp, paths, ev["quality"], families), **copy_curve_plots(paths, curves, tmp)}
        serving = serving_lines(paths.root / "serving" / "loadtest.json", tmp)
        (tmp / "report.md").write_text(render(ev, made, training_table(paths, families), curves) + serving,
                                       encoding="utf-8")
    return paths.report / "report.md"
