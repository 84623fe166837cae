"""Classification metrics (scikit-learn), in the JSON shape every metrics file uses."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score


def roc_auc(y_true: Sequence[int], probabilities: np.ndarray, id2label: dict[int, str]) -> float:
    """ROC-AUC from [n, num_labels] class probabilities: binary uses the second class's score, more classes
    the macro one-vs-rest mean. NaN when the test set holds a single class (AUC is undefined then)."""
    ids = sorted(id2label)
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if len(ids) == 2:
        return float(roc_auc_score(y_true == ids[1], probabilities[:, 1]))
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=ids))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], id2label: dict[int, str],
                           probabilities: np.ndarray | None = None) -> dict:
    """accuracy; precision, recall, F1 per class and macro; the confusion matrix; ROC-AUC when the
    [n, num_labels] class `probabilities` are given."""
    ids = sorted(id2label)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    pm, rm, fm, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average="macro", zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(pm),
        "recall_macro": float(rm),
        "f1_macro": float(fm),
        "per_class": {id2label[i]: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                                    "support": int(s[k])} for k, i in enumerate(ids)},
        # {true label: {predicted label: count}}: nested numbers, so `dvc metrics show` lists every cell
        "confusion_matrix": {id2label[i]: {id2label[j]: int(c) for j, c in zip(ids, row)}
                             for i, row in zip(ids, confusion_matrix(y_true, y_pred, labels=ids))},
        "n": int(len(y_true)),
    }
    if probabilities is not None:
        out["roc_auc"] = roc_auc(y_true, probabilities, id2label)
    return out


def prediction_rows(y_true: Sequence[int], y_pred: Sequence[int], id2label: dict[int, str]) -> list[dict]:
    """[{actual, predicted}] per example: the input of DVC's confusion-matrix plot template."""
    return [{"actual": id2label[int(t)], "predicted": id2label[int(p)]} for t, p in zip(y_true, y_pred)]
