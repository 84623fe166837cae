"""Paired comparisons of two classifiers on the same test set: bootstrap CIs and McNemar's test.

Both models must have predicted the same examples in the same order; the pairing is what makes these tests
sharper than comparing two independent accuracies.

- Paired bootstrap: resample test examples with replacement (the same indices for both models), recompute
  the metric difference A - B on each resample, and take the percentile interval.
- McNemar: only the discordant pairs matter. b = A right and B wrong, c = A wrong and B right. Under the null
  (equal error rates) b ~ Binomial(b + c, 1/2). With few discordant pairs (b + c < `exact_below`, 25 by
  default, the usual rule of thumb) we use the exact two-sided binomial p-value,
  p = min(1, 2 * P(X <= min(b, c))); otherwise the chi-square approximation with Edwards' continuity
  correction, (|b - c| - 1)^2 / (b + c) on 1 degree of freedom.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Macro-F1 along the last axis: [..., n] labels -> [...] scores (classes with no support or
    predictions score 0, as scikit-learn's zero_division=0 does)."""
    scores = []
    for k in labels:
        t, p = y_true == k, y_pred == k
        tp = np.sum(t & p, axis=-1)
        denom = np.sum(t, axis=-1) + np.sum(p, axis=-1)  # 2tp + fp + fn
        scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(scores, axis=0)


def metric_values(name: str, y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    if name == "accuracy":
        return np.mean(y_true == y_pred, axis=-1)
    if name == "f1_macro":
        return _macro_f1(y_true, y_pred, labels)
    raise ValueError(f"unknown metric {name!r}; the bootstrap knows accuracy and f1_macro")


def paired_bootstrap(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], metric: str = "accuracy",
                     samples: int = 2000, seed: int = 42, confidence: float = 0.95,
                     labels: Sequence[int] | None = None, chunk: int = 500) -> dict[str, float]:
    """Observed metric(A) - metric(B), its percentile CI over `samples` paired resamples, and the share of
    resamples where A beats B (`p_a_better`). One run per model: seed_paired_bootstrap with k = 1."""
    result = seed_paired_bootstrap(y_true, [pred_a], [pred_b], metric, samples, seed, confidence, labels, chunk)
    del result["seeds"]
    return result


def seed_paired_bootstrap(y_true: Sequence[int], runs_a: Sequence[Sequence[int]], runs_b: Sequence[Sequence[int]],
                          metric: str = "accuracy", samples: int = 2000, seed: int = 42, confidence: float = 0.95,
                          labels: Sequence[int] | None = None, chunk: int = 500) -> dict[str, float]:
    """Mean over seeds of metric(A) - metric(B), with a CI that holds seed variance as well as test-set variance.

    `runs_a`, `runs_b`: [k, n] predictions of k runs per model, paired by row (the same seed). Each resample
    draws n test items with replacement (the same items for every run) and k seed rows with replacement (the
    same rows for A and B), and averages the per-seed differences on those items (a two-level bootstrap).
    With k = 1 it is the plain paired bootstrap, with the same draws."""
    y_true, runs_a, runs_b = np.asarray(y_true), np.atleast_2d(runs_a), np.atleast_2d(runs_b)
    if not runs_a.shape == runs_b.shape or runs_a.shape[1] != len(y_true) or len(y_true) == 0:
        raise ValueError(f"paired bootstrap needs equal, non-empty lengths; got {len(y_true)} items and runs of "
                         f"shapes {runs_a.shape}, {runs_b.shape}")
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(runs_a.ravel().tolist()) | set(runs_b.ravel().tolist()))
    k, n = runs_a.shape
    rng, seed_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])  # items, seed rows
    diffs = []
    for start in range(0, samples, chunk):  # [chunk, n] index draws: bounded memory for large test sets
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        t = y_true[idx]
        per_seed = (metric_values(metric, t, runs_a[:, idx], labels)
                    - metric_values(metric, t, runs_b[:, idx], labels))  # [k, chunk]
        rows = seed_rng.integers(0, k, size=(len(idx), k))  # [chunk, k] seed rows drawn per resample
        diffs.append(np.take_along_axis(per_seed.T, rows, axis=1).mean(axis=1))
    diff = np.concatenate(diffs)
    alpha = (1 - confidence) / 2
    observed = np.mean(metric_values(metric, y_true, runs_a, labels) - metric_values(metric, y_true, runs_b, labels))
    return {"difference": float(observed), "ci_low": float(np.quantile(diff, alpha)),
            "ci_high": float(np.quantile(diff, 1 - alpha)), "p_a_better": float(np.mean(diff > 0)),
            "samples": int(samples), "confidence": float(confidence), "seeds": int(k)}


def mcnemar_from_counts(b: int, c: int, exact_below: int = 25) -> dict[str, float | str]:
    """McNemar's test from the discordant counts (see the module docstring for the rule)."""
    n = b + c
    if n == 0:  # the models never disagree on correctness: no evidence of any difference
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if n < exact_below:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
        return {"b": int(b), "c": int(c), "statistic": float(min(b, c)), "p_value": min(1.0, 2 * tail),
                "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / n
    # chi-square survival with 1 dof: P(X > s) = erfc(sqrt(s / 2)); no scipy needed
    return {"b": int(b), "c": int(c), "statistic": float(statistic),
            "p_value": float(math.erfc(math.sqrt(statistic / 2))), "method": "chi2_cc"}


def mcnemar(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int],
            exact_below: int = 25) -> dict[str, float | str]:
    y_true, pred_a, pred_b = (np.asarray(x) for x in (y_true, pred_a, pred_b))
    right_a, right_b = pred_a == y_true, pred_b == y_true
    return mcnemar_from_counts(int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b)), exact_below)


def compare(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int],
            samples: int = 2000, seed: int = 42, confidence: float = 0.95, exact_below: int = 25) -> dict:
    """Bootstrap CIs for the accuracy and macro-F1 differences (A - B) and McNemar's test."""
    boot = {m: paired_bootstrap(y_true, pred_a, pred_b, m, samples, seed, confidence, labels)
            for m in ("accuracy", "f1_macro")}
    return {**boot, "mcnemar": mcnemar(y_true, pred_a, pred_b, exact_below),
            "agreement": float(np.mean(np.asarray(pred_a) == np.asarray(pred_b)))}
