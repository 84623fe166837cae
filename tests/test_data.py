import json

import pandas as pd
import pytest

from pipeline.config import DataConfig
from pipeline.data import DataError, make_splits, prepare
from pipeline.io import read_jsonl
from pipeline.paths import Paths


def _frame(n_per_class=30, classes=("pos", "neg")):
    rows = [{"body": f"review number {i} about {c} things", "stars": c} for c in classes for i in range(n_per_class)]
    return pd.DataFrame(rows)


def test_embedded_default_is_cleaned_split_and_stratified(prepared, tiny_params):
    stats = json.loads((prepared.data / "stats.json").read_text())
    assert stats["train_source"]["rows_in"] == 4000 and stats["train_source"]["duplicates_dropped"] > 0
    label2id = json.loads(prepared.label_map.read_text())
    assert label2id == {"great": 0, "other": 1}
    splits = {s: read_jsonl(prepared.split(s)) for s in ("train", "validation", "test")}
    assert len(splits["validation"]) == round(tiny_params.data.max_train_samples * tiny_params.data.validation_size)
    assert len(splits["test"]) == tiny_params.data.max_test_samples
    for rows in splits.values():  # stratified: both classes in every split, at about the same ratio
        share = sum(r["label"] == "great" for r in rows) / len(rows)
        assert 0.55 < share < 0.75 and all(r["label_id"] == label2id[r["label"]] for r in rows)
    corpus = set(prepared.corpus.read_text().splitlines())
    assert corpus == {r["text"] for r in splits["train"]}  # the pretraining corpus is the train split only
    held_out = {r["text"] for s in ("validation", "test") for r in splits[s]}
    assert not corpus & held_out


def test_split_is_seeded():
    cfg = DataConfig(max_train_samples=200, max_test_samples=50)
    a, _, _ = make_splits(cfg)
    b, _, _ = make_splits(cfg)
    assert a["validation"]["text"].tolist() == b["validation"]["text"].tolist()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_files_with_configurable_columns(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"reviews{suffix}"
    {".csv": lambda: df.to_csv(path, index=False), ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
     ".parquet": lambda: df.to_parquet(path)}[suffix]()
    splits, label2id, _ = make_splits(DataConfig(source=str(path), text_column="body", label_column="stars"))
    assert label2id == {"neg": 0, "pos": 1}
    assert sum(len(s) for s in splits.values()) == 60 and len(splits["test"]) == 12  # test_size 0.2


def test_local_folder_loads_like_a_hub_dataset_and_keeps_its_test_split(tmp_path):
    _frame(40).to_csv(tmp_path / "train.csv", index=False)
    test = _frame(5)
    test["body"] = test["body"] + " (held out)"
    test.to_csv(tmp_path / "test.csv", index=False)
    splits, _, _ = make_splits(DataConfig(source=str(tmp_path), text_column="body", label_column="stars"))
    assert sorted(splits["test"]["text"]) == sorted(test["body"])
    assert len(splits["train"]) + len(splits["validation"]) == 80


def test_empty_texts_and_duplicates_are_dropped_and_counted(tmp_path):
    df = pd.concat([_frame(), pd.DataFrame([{"body": "  ", "stars": "pos"}, {"body": None, "stars": "neg"}]),
                    _frame(3)])
    df.to_csv(tmp_path / "d.csv", index=False)
    _, _, stats = make_splits(DataConfig(source=str(tmp_path / "d.csv"), text_column="body", label_column="stars"))
    assert stats["train_source"] == {"rows_in": 68, "empty_dropped": 2, "duplicates_dropped": 6, "rows_out": 60}


def test_missing_column_names_the_columns_that_exist(tmp_path):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"no column 'text'.*columns are: body, stars"):
        make_splits(DataConfig(source=str(tmp_path / "d.csv"), text_column="text", label_column="stars"))


def test_empty_after_cleaning(tmp_path):
    pd.DataFrame({"body": ["", "   "], "stars": ["a", "b"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="empty after cleaning"):
        make_splits(DataConfig(source=str(tmp_path / "d.csv"), text_column="body", label_column="stars"))


def test_single_class(tmp_path):
    _frame(classes=("pos",)).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="single class"):
        make_splits(DataConfig(source=str(tmp_path / "d.csv"), text_column="body", label_column="stars"))


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("body,stars\ncaf\xe9 latte,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8.*iconv"):
        make_splits(DataConfig(source=str(path), text_column="body", label_column="stars"))


def test_validation_split_too_small(tmp_path):
    _frame(n_per_class=3).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="cannot make a stratified validation split"):
        make_splits(DataConfig(source=str(tmp_path / "d.csv"), text_column="body", label_column="stars",
                               test_size=0.5))


def test_missing_source_and_unsupported_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_splits(DataConfig(source=str(tmp_path / "nope.csv")))
    (tmp_path / "d.xml").write_text("<x/>")
    with pytest.raises(DataError, match="unsupported file type"):
        make_splits(DataConfig(source=str(tmp_path / "d.xml")))


def test_prepare_leaves_nothing_half_written(tmp_path):
    paths = Paths(tmp_path / "artifacts")
    with pytest.raises(DataError):
        prepare(DataConfig(source=str(tmp_path / "nope.csv")), paths)
    assert not paths.data.exists() and not list(tmp_path.glob("artifacts/.*"))


def _splits(train, validation, test):
    import pandas as pd

    return {name: pd.DataFrame({"text": texts}) for name, texts in
            (("train", train), ("validation", validation), ("test", test))}


def test_an_outside_corpus_loses_every_validation_and_test_text(tmp_path):
    from pipeline.data import pretraining_corpus

    folder = tmp_path / "corpus"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text("first doc\nthe  test   review\n\n", encoding="utf-8")
    (folder / "more" / "b.txt").write_text("a validation review\nlast doc\n", encoding="utf-8")
    splits = _splits(["train text"], ["a validation review"], ["the test review"])
    documents, stats = pretraining_corpus(str(folder), splits, "review")
    assert documents == ["first doc", "last doc"]
    assert stats == {"source": str(folder), "documents": 2, "dropped_empty": 1, "dropped_heldout_or_test": 2}
    table = tmp_path / "docs.csv"
    table.write_text("review,other\nfrom a table,1\nthe test review,2\n", encoding="utf-8")
    assert pretraining_corpus(str(table), splits, "review")[0] == ["from a table"]


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.txt", "does not exist"),
    (lambda p: p, "holds no .txt files"),
    (lambda p: (p / "t.csv").write_text("body\nx\n") and p / "t.csv", "has no `text` or 'review' column"),
    (lambda p: (p / "only_test.txt").write_text("the test review\n") and p / "only_test.txt", "no documents left")])
def test_bad_corpus_sources_are_named(tmp_path, make, match):
    from pipeline.data import DataError, pretraining_corpus

    with pytest.raises(DataError, match=match):
        pretraining_corpus(str(make(tmp_path)), _splits(["t"], ["v"], ["the test review"]), "review")
