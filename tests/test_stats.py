"""Paired bootstrap and McNemar's test on cases with known answers."""
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.stats import compare, mcnemar, mcnemar_from_counts, metric_values, paired_bootstrap


def test_mcnemar_exact_for_few_discordant_pairs():
    result = mcnemar_from_counts(10, 0)
    assert result["method"] == "exact" and result["p_value"] == pytest.approx(2 * 0.5 ** 10)
    # b=7, c=3: two-sided exact p = 2 * P(X <= 3), X ~ Binomial(10, 1/2) = 2 * 176 / 1024
    assert mcnemar_from_counts(7, 3)["p_value"] == pytest.approx(2 * 176 / 1024)
    assert mcnemar_from_counts(5, 5)["p_value"] == 1.0  # capped at 1
    assert mcnemar_from_counts(0, 0) == {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}


def test_mcnemar_chi_square_with_continuity_correction():
    result = mcnemar_from_counts(30, 12)
    assert result["method"] == "chi2_cc"
    assert result["statistic"] == pytest.approx((18 - 1) ** 2 / 42)
    stats = pytest.importorskip("scipy.stats")
    for b, c in ((30, 12), (12, 30), (20, 20), (100, 60)):
        expected = stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), df=1)
        assert mcnemar_from_counts(b, c)["p_value"] == pytest.approx(expected, rel=1e-9)
    exact = stats.binomtest(3, 10, 0.5).pvalue  # the exact branch agrees with scipy's binomial test
    assert mcnemar_from_counts(7, 3)["p_value"] == pytest.approx(exact)


def test_mcnemar_counts_discordant_pairs_from_predictions():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    a = np.array([0, 0, 1, 1, 0, 1, 1, 0])  # wrong on the last two
    b = np.array([0, 1, 0, 1, 0, 1, 0, 1])  # wrong on items 1 and 2
    result = mcnemar(y, a, b)
    assert (result["b"], result["c"]) == (2, 2)  # a right & b wrong: items 1, 2; a wrong & b right: 6, 7


def test_vectorized_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
        p[p == 2] = 1  # a class never predicted: scored 0, as zero_division=0 does
        expected = f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0)
        assert metric_values("f1_macro", y, p, [0, 1, 2]) == pytest.approx(expected)


def test_bootstrap_degenerate_cases_have_exact_intervals():
    y = np.array([0, 1] * 20)
    same = paired_bootstrap(y, y, y, "accuracy", samples=200)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    best = paired_bootstrap(y, y, 1 - y, "f1_macro", samples=200)
    assert best["difference"] == best["ci_low"] == best["ci_high"] == 1.0 and best["p_a_better"] == 1.0


def test_bootstrap_interval_matches_the_normal_approximation_on_a_large_sample():
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.80, y, 1 - y)  # about 80% accurate
    b = np.where(rng.random(n) < 0.75, y, 1 - y)  # about 75% accurate
    result = paired_bootstrap(y, a, b, "accuracy", samples=2000, seed=3)
    d = (a == y).astype(float) - (b == y).astype(float)  # per-item paired difference
    half = 1.959964 * d.std(ddof=1) / math.sqrt(n)
    assert result["difference"] == pytest.approx(d.mean())
    assert result["ci_low"] == pytest.approx(d.mean() - half, abs=0.004)
    assert result["ci_high"] == pytest.approx(d.mean() + half, abs=0.004)


def test_bootstrap_is_seeded_and_checks_its_input():
    y, a, b = [0, 1, 1, 0, 1, 0, 1, 1], [0, 1, 0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 1, 0]
    assert paired_bootstrap(y, a, b, seed=5) == paired_bootstrap(y, a, b, seed=5)
    assert paired_bootstrap(y, a, b, seed=5) != paired_bootstrap(y, a, b, seed=6)
    with pytest.raises(ValueError, match="equal, non-empty lengths"):
        paired_bootstrap(y, a[:-1], b)
    result = compare(y, a, b, [0, 1], samples=100)
    assert set(result) == {"accuracy", "f1_macro", "mcnemar", "agreement"} and result["agreement"] == 3 / 8
