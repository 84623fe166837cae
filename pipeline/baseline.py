"""TF-IDF + logistic regression: the reference row every neural model must beat.

Word n-grams need words: scikit-learn's word analyzer splits on non-word characters, so an unsegmented
Chinese sentence is a single "word" and the baseline drops to near chance. Character n-grams work on any
script. With `baseline.analyzer: auto` the analyzer and C are picked together on validation macro-F1.
"""
from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from pipeline.config import BaselineConfig, ConfigError
from pipeline.data import read_split
from pipeline.io import read_json, write_json, write_jsonl
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths

# word: 1-2 word grams (scripts with spaces); char: character n-grams across spaces (text without spaces,
# e.g. Chinese); char_wb: character n-grams inside word boundaries; union: word + char features side by side
ANALYZERS = ("word", "char", "char_wb", "union")


def make_vectorizer(analyzer: str, cfg: BaselineConfig) -> TfidfVectorizer | FeatureUnion:
    if analyzer == "union":
        return FeatureUnion([("word", make_vectorizer("word", cfg)), ("char", make_vectorizer("char", cfg))])
    ngrams = (1, 2) if analyzer == "word" else tuple(cfg.char_ngram_range)
    return TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2)


def check_config(cfg: BaselineConfig) -> list[str]:
    """The analyzers to try; raises ConfigError on a value that cannot work, before any fitting."""
    if cfg.analyzer != "auto" and cfg.analyzer not in ANALYZERS:
        raise ConfigError(f"baseline.analyzer={cfg.analyzer!r} is not one of auto, {', '.join(ANALYZERS)}")
    low, high = (list(cfg.char_ngram_range) + [0, 0])[:2]
    if len(cfg.char_ngram_range) != 2 or not 1 <= low <= high:
        raise ConfigError(f"baseline.char_ngram_range={cfg.char_ngram_range} must be [min, max] with 1 <= min <= max")
    if not cfg.c_grid or min(cfg.c_grid) <= 0:
        raise ConfigError(f"baseline.c_grid={cfg.c_grid} must list one or more positive C values")
    return list(ANALYZERS) if cfg.analyzer == "auto" else [cfg.analyzer]


def tfidf_baseline(paths: Paths = Paths(), cfg: BaselineConfig = BaselineConfig(), seed: int = 42) -> dict:
    """Fit on train, pick analyzer and C on validation macro-F1, report on test; keep per-text predictions."""
    check_config(cfg)  # bad params fail before any input is read
    label2id = read_json(paths.label_map)
    id2label = {i: label for label, i in label2id.items()}
    train, validation, (x_test, y_test) = (read_split(s, paths) for s in ("train", "validation", "test"))
    vectorizer, model, best, scores = fit_selected(train, validation, cfg, seed, id2label)
    probabilities = model.predict_proba(vectorizer.transform(x_test))  # [n_test, n_labels], columns = label ids
    predicted = model.classes_[probabilities.argmax(1)]
    metrics = classification_metrics(y_test, predicted, id2label, probabilities)
    metrics.update(analyzer=best["analyzer"], C=best["C"], validation_f1_macro=best["validation_f1_macro"],
                   candidates=scores)
    out = paths.metrics("baseline")
    write_jsonl(out / "predictions.jsonl", prediction_rows(x_test, y_test, predicted, probabilities,
                                                                model.classes_, id2label))
    write_json(out / "test.json", metrics)
    return metrics


def fit_selected(train: tuple[list[str], list[int]], validation: tuple[list[str], list[int]], cfg: BaselineConfig,
                 seed: int, id2label: dict[int, str]):
    """(vectorizer, model, best candidate, every candidate): fitted on `train` (texts, label ids), analyzer and
    C picked on validation macro-F1."""
    analyzers = check_config(cfg)
    (x_train, y_train), (x_val, y_val) = train, validation
    # (validation macro-F1, analyzer, C) for every candidate; the vectorizer is fitted once per analyzer
    scores, fitted = [], {}
    for analyzer in analyzers:
        vectorizer = make_vectorizer(analyzer, cfg)
        train_features, val_features = vectorizer.fit_transform(x_train), vectorizer.transform(x_val)
        for c in cfg.c_grid:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(train_features, y_train)
            f1 = classification_metrics(y_val, model.predict(val_features), id2label)["f1_macro"]
            scores.append({"analyzer": analyzer, "C": c, "validation_f1_macro": f1})
            fitted[analyzer, c] = (vectorizer, model)
    best = max(scores, key=lambda s: s["validation_f1_macro"])  # ties: the first, i.e. simpler analyzer, smaller C
    return (*fitted[best["analyzer"], best["C"]], best, scores)


def prediction_rows(texts, y_true, predicted, probabilities, classes, id2label: dict[int, str]) -> list[dict]:
    """One row per test text, in test-split order: what the paired statistics need."""
    return [{"text": text, "label": id2label[int(t)], "predicted": id2label[int(p)],
             "probabilities": {id2label[int(i)]: float(q) for i, q in zip(classes, row)}}
            for text, t, p, row in zip(texts, y_true, predicted, probabilities)]
