"""TF-IDF + logistic regression: the reference row every neural model must beat."""
from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from pipeline.data import read_split
from pipeline.io import read_json, write_json
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths

C_GRID = (0.25, 1.0, 4.0, 16.0)


def tfidf_baseline(paths: Paths = Paths(), seed: int = 42) -> dict:
    """Fit on train, pick C on validation macro-F1, report on test."""
    label2id = read_json(paths.label_map)
    id2label = {i: label for label, i in label2id.items()}
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (read_split(s, paths)
                                                            for s in ("train", "validation", "test"))

    def fit(c: float):
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                              LogisticRegression(C=c, max_iter=2000, random_state=seed))
        return model.fit(x_train, y_train)

    scored = [(classification_metrics(y_val, fit(c).predict(x_val), id2label)["f1_macro"], c) for c in C_GRID]
    best_c = max(scored)[1]
    metrics = classification_metrics(y_test, fit(best_c).predict(x_test), id2label)
    metrics["C"] = best_c
    write_json(paths.metrics("baseline") / "test.json", metrics)
    return metrics
