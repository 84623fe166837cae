"""Scoring a classifier on the test split: the one path that the fine-tuning stages (their test metrics) and
`evaluate` (every backend's row) share, so both report the same numbers for the same model."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pipeline.data import read_split
from pipeline.errors import BilmError
from pipeline.io import read_json
from pipeline.metrics import classification_metrics
from pipeline.paths import Paths
from pipeline.runtime.base import Predictor, TruncationWarning


class EvaluationError(BilmError, ValueError):
    """Inputs that cannot be evaluated together; the message names the problem and the fix."""


@dataclass
class TestSplit:
    __test__ = False  # not a pytest test class, despite the name
    texts: list[str]
    labels: list[str]  # label names, so that models are compared by name, not by their id order

    def ids_for(self, id2label: dict[int, str], where: str) -> np.ndarray:
        """[n] gold ids in the model's own id space; an error naming both label sets if they differ."""
        model_labels, test_labels = set(map(str, id2label.values())), set(self.labels)
        if model_labels != test_labels:
            raise EvaluationError(
                f"the test split's labels {sorted(test_labels)} differ from {where}'s id2label "
                f"{sorted(model_labels)}; evaluate a model fine-tuned on this data (re-run prepare and finetune "
                f"with the same data params) or point data.source at the data the model was trained on")
        label2id = {str(label): i for i, label in id2label.items()}
        return np.array([label2id[label] for label in self.labels])


def read_test(paths: Paths) -> TestSplit:
    texts, ids = read_split("test", paths)
    id2label = {i: str(label) for label, i in read_json(paths.label_map).items()}
    return TestSplit(texts, [id2label[i] for i in ids])


def predict_probabilities(predictor: Predictor, texts: list[str], batch_size: int) -> tuple[np.ndarray, int]:
    """([n, num_labels] probabilities in id order, number of texts truncated to the model's max length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # counted in the row instead
        results = predictor.classify(texts, batch_size=batch_size)
    bad = [i for i, r in enumerate(results) if "error" in r]
    if bad:
        raise EvaluationError(f"{len(bad)} test texts could not be classified (item {bad[0]}: "
                              f"{results[bad[0]]['error']}); re-run prepare, which drops empty texts")
    ids = sorted(predictor.id2label)
    probs = np.array([[r["probabilities"][predictor.id2label[k]] for k in ids] for r in results])
    return probs, sum(bool(r["truncated"]) for r in results)


def score_predictor(predictor: Predictor, test: TestSplit, batch_size: int,
                    where: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """(quality metrics, [n] predicted ids, [n, num_labels] probabilities) of `predictor` on `test`.

    The one test-set scoring path: the fine-tuning stages call it on the folder they just wrote, with
    `evaluate.batch_size`, so their test metrics and evaluate's PyTorch row are the same numbers."""
    y_true = test.ids_for(predictor.id2label, where)
    probs, truncated = predict_probabilities(predictor, test.texts, batch_size)
    predicted = probs.argmax(-1)
    quality = classification_metrics(y_true, predicted, predictor.id2label, probs)
    quality["truncated"] = truncated
    return quality, predicted, probs
