from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from pipeline.metrics import classification_metrics


def test_metrics_match_sklearn_on_fixed_inputs():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
    y_pred = [0, 1, 0, 1, 2, 2, 2, 0, 2, 1]
    m = classification_metrics(y_true, y_pred, {0: "a", 1: "b", 2: "c"})
    assert m["accuracy"] == accuracy_score(y_true, y_pred) == 0.7
    assert abs(m["f1_macro"] - f1_score(y_true, y_pred, average="macro")) < 1e-12
    assert abs(m["precision_macro"] - precision_score(y_true, y_pred, average="macro")) < 1e-12
    assert abs(m["recall_macro"] - recall_score(y_true, y_pred, average="macro")) < 1e-12
    assert m["per_class"]["b"]["recall"] == 2 / 3 and m["per_class"]["c"]["support"] == 4
    assert m["confusion_matrix"] == {"a": {"a": 2, "b": 1, "c": 0}, "b": {"a": 0, "b": 2, "c": 1},
                                     "c": {"a": 1, "b": 0, "c": 3}}  # {true: {predicted: count}}
