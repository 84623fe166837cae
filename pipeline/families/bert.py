"""BERT: uncased WordPiece, BertForPreTraining with masked LM + next sentence prediction."""
from __future__ import annotations

import contextlib
import random
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (BertConfig, BertForPreTraining, BertForSequenceClassification, BertTokenizer,
                          DataCollatorForLanguageModeling, RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM,
                          RobertaPreLayerNormForSequenceClassification, RobertaPreLayerNormModel)

from pipeline.config import ConfigError, ModelConfig, PretrainConfig, TokenizerConfig
from pipeline.families import register
from pipeline.families.base import Family, OnnxSpec
from pipeline.families._vocab import continuing_subwords

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Sentence ends for NSP
_SENTENCE_END = re.compile("|".join([
    r"(?<=[.!?])\s+",  # `.!?` before whitespace (not "3.5" or "e.g.x")
    r"(?<=[。！？；])(?![。！？；”’」』）])\s*",  # full-width ends; not in a run of them or before a closing quote
    r"(?<=[!?])(?=[\u3400-\u9fff\u3040-\u30ff])",  # ASCII !? right before CJK, as in "很快!会再买"
]))


def _accuracy_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    correct = (logits.argmax(-1) == labels).sum()
    return correct, torch.tensor(labels.numel(), device=labels.device)


def _mlm_nsp_outputs(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor, nsp_logits: torch.Tensor,
                     nsp_labels: torch.Tensor, nsp_weight: float) -> dict[str, torch.Tensor]:
    """The pretraining loss (MLM + nsp_weight x NSP) and the per-objective losses and accuracy counts.
    mlm_logits: [n_masked, vocab], nsp_logits: [batch, 2]."""
    nsp_labels = nsp_labels.view(-1)
    mlm_loss = F.cross_entropy(mlm_logits, mlm_labels) if mlm_labels.numel() else mlm_logits.sum() * 0
    nsp_loss = F.cross_entropy(nsp_logits, nsp_labels)
    mlm_correct, mlm_total = _accuracy_counts(mlm_logits, mlm_labels)
    nsp_correct, nsp_total = _accuracy_counts(nsp_logits, nsp_labels)
    return {"loss": mlm_loss + nsp_weight * nsp_loss, "mlm_loss": mlm_loss.detach(), "nsp_loss": nsp_loss.detach(),
            "mlm_correct": mlm_correct, "mlm_total": mlm_total, "nsp_correct": nsp_correct, "nsp_total": nsp_total}


class BertForPreTrainingAtMasked(BertForPreTraining):
    """BertForPreTraining whose MLM head runs only at the masked positions (pretrain.mlm_probability of the tokens).

    The vocabulary projection is the largest matrix in a small BERT; skipping it at the 85% of positions
    that carry no label roughly halves a small model's step time. Weights and checkpoint keys are those of
    BertForPreTraining, so `from_pretrained` loads the folder into any BERT class.
    """

    nsp_weight = 1.0  # set by the pretrain stage (pretrain.nsp_weight); not saved with the model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, **_: Any) -> dict[str, torch.Tensor]:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        selected = labels != -100  # [batch, seq] bool
        return _mlm_nsp_outputs(self.cls.predictions(out.last_hidden_state[selected]), labels[selected],
                                self.cls.seq_relationship(out.pooler_output), next_sentence_label, self.nsp_weight)


class PreLNBertForPreTrainingAtMasked(RobertaPreLayerNormForMaskedLM):
    """Pre-LayerNorm BERT with BERT's objectives: transformers' pre-LN encoder (RobertaPreLayerNorm: LayerNorm
    before each sublayer and once at the top), its MLM head (at masked positions only, as above), a pooler and
    an NSP head. Saved as RobertaPreLayerNormForMaskedLM (the pooler and NSP head ride along), so the folder
    loads into RobertaPreLayerNormForSequenceClassification and AutoModelForMaskedLM."""

    nsp_weight = 1.0

    def __init__(self, config: RobertaPreLayerNormConfig):
        super().__init__(config)
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=True)  # pooler: NSP input
        self.seq_relationship = torch.nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, **_: Any) -> dict[str, torch.Tensor]:
        out = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        selected = labels != -100
        return _mlm_nsp_outputs(self.lm_head(out.last_hidden_state[selected]), labels[selected],
                                self.seq_relationship(out.pooler_output), next_sentence_label, self.nsp_weight)


def sinusoidal_positions(positions: int, hidden: int) -> torch.Tensor:
    """Vaswani et al.'s [positions, hidden] table: sin/cos pairs at geometric wavelengths; entries in [-1, 1]
    (per-dimension sd 1/sqrt(2): times initializer_range x sqrt(2) it has the word embeddings' sd)."""
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-torch.log(torch.tensor(1e4)) / hidden))
    table = torch.zeros(positions, hidden)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate[: hidden // 2])
    return table


def _split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _segments(sentence_ids: list[list[int]], rng: random.Random) -> tuple[list[int], list[int]] | None:
    """Split one document into (A, B) at a sentence boundary, or mid-sentence when it has one sentence."""
    if len(sentence_ids) >= 2:
        k = rng.randint(1, len(sentence_ids) - 1)
        return sum(sentence_ids[:k], []), sum(sentence_ids[k:], [])
    tokens = sentence_ids[0] if sentence_ids else []
    if len(tokens) < 4:
        return None
    k = rng.randint(len(tokens) // 3, 2 * len(tokens) // 3)
    return tokens[:k], tokens[k:]


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Trim the longer segment, from a random end, as BERT's create_pretraining_data does."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


def _key_padding_mask(config, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                      **unused: Any) -> torch.Tensor | None:
    """[batch, keys] 0/1 mask -> [batch, 1, 1, keys] additive mask (0 kept, dtype min padded), built as
    transformers 4 did (Expand, 1 - mask, masked_fill): the ops, in this order, are the SDPA mask path that
    onnxruntime.transformers' FusionAttention matches. (Transformers 5's own mask is [batch, 1, queries, keys],
    and its `(1 - mask) * min` form starts with a Mul that the fusion confuses with the scores' scaling Mul.)"""
    if attention_mask is None:
        return None
    dtype = inputs_embeds.dtype
    rows = attention_mask[:, None, None, :]
    inverted = 1.0 - rows.expand(rows.shape[0], 1, 1, rows.shape[-1]).to(dtype)
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)


@register
class Bert(Family):
    name = "bert"
    # post-LN (model.layer_norm.bert: post): BERT itself; pre-LN: transformers' RobertaPreLayerNorm classes, which
    # take BERT's WordPiece tokenizer and segment ids as they are
    classifier_classes = (BertForSequenceClassification, RobertaPreLayerNormForSequenceClassification)
    dropout_keys = ("hidden_dropout_prob", "attention_probs_dropout_prob")
    attention_dropout_key = "attention_probs_dropout_prob"
    # torchscript: ORT's BERT optimizer fuses its graph into Attention + EmbedLayerNormalization; the dynamo
    # graph has the same numbers but its attention is not fused
    onnx = OnnxSpec(exporter="torchscript", opset=17, ort_model_type="bert",
                    int8_method="dynamic",
                    int8_reason="dynamic INT8 of the fused graph quantizes ORT's Attention into QAttention "
                                "(static QDQ cannot: Attention has no QDQ form, so static starts from the unfused "
                                "graph) and needs no calibration; base shape, b1 s128: 2.0x faster than fp32")
    pretraining_objectives = ("mlm", "nsp")

    def train_tokenizer(self, corpus: list[Path], cfg: TokenizerConfig) -> BertTokenizer:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase, strip_accents=cfg.lowercase, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        # the `##c` tokens as specials, in sorted order: deterministic ids and merges (families/_vocab.py)
        specials = SPECIAL_TOKENS + continuing_subwords(tok, corpus)
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=specials, show_progress=False)
        tok.train([str(p) for p in corpus], trainer)
        # BertTokenizer builds the standard BERT pipeline ([CLS] A [SEP] B [SEP], segment ids) on this vocab
        return BertTokenizer(vocab=tok.get_vocab(), do_lower_case=cfg.lowercase, model_max_length=cfg.model_max_length)

    def build_config(self, shape: ModelConfig, tokenizer, **extra: Any) -> BertConfig | RobertaPreLayerNormConfig:
        common = dict(vocab_size=len(tokenizer), hidden_size=shape.hidden_size,
                      num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
                      intermediate_size=shape.intermediate_size, initializer_range=shape.initializer_range,
                      pad_token_id=tokenizer.pad_token_id, **self.dropout_config(shape), **extra)
        if shape.layer_norm.get(self.name, "post") == "post":
            return BertConfig(max_position_embeddings=shape.max_position_embeddings, **common)
        # RoBERTa-style position ids count from pad_token_id + 1, so the table has pad_token_id + 1 more rows
        return RobertaPreLayerNormConfig(
            max_position_embeddings=shape.max_position_embeddings + tokenizer.pad_token_id + 1, type_vocab_size=2,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **common)

    @contextlib.contextmanager
    def export_patches(self, model: torch.nn.Module) -> Iterator[None]:
        """The padding mask as one [batch, 1, 1, keys] additive row per text (`_key_padding_mask`) instead of
        transformers' [batch, 1, queries, keys] square: the same numbers, a graph that adds one row to the
        attention scores, and the mask pattern ORT's BERT fusion turns into the Attention op's key lengths."""
        module = sys.modules[type(model.base_model).__module__]  # modeling_bert or modeling_roberta_prelayernorm
        saved = module.create_bidirectional_mask
        module.create_bidirectional_mask = _key_padding_mask
        try:
            yield
        finally:
            module.create_bidirectional_mask = saved

    def top_modules(self, model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module]:
        encoder = model.base_model
        layers = list(encoder.encoder.layer)[-num_layers:] if num_layers else []
        return layers + ([encoder.pooler] if getattr(encoder, "pooler", None) is not None else [])

    def pretraining_class(self, config: BertConfig | RobertaPreLayerNormConfig) -> type:
        if config.model_type == RobertaPreLayerNormConfig.model_type:
            return PreLNBertForPreTrainingAtMasked
        return BertForPreTrainingAtMasked

    def weigh_objectives(self, model: torch.nn.Module, cfg: PretrainConfig) -> None:
        model.nsp_weight = cfg.nsp_weight

    def initialize(self, model: torch.nn.Module, cfg: PretrainConfig) -> None:
        if cfg.position_init == "sinusoidal":
            table = model.base_model.embeddings.position_embeddings.weight  # [positions, hidden]
            with torch.no_grad():
                table.copy_(sinusoidal_positions(*table.shape) * model.config.initializer_range * 2 ** 0.5)

    def pretraining_examples(self, texts: list[str], tokenizer, cfg: PretrainConfig, n_examples: int,
                             seed: int) -> list[dict[str, Any]]:
        """Sentence pairs for NSP: B follows A in the same review half the time, else B is from another."""
        rng = random.Random(seed)
        docs = []
        for text in texts:
            sentences = _split_sentences(text)
            if sentences:
                ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
                if _segments(ids, rng) is not None:  # a document that cannot split is no NSP source
                    docs.append(ids)
        if len(docs) < 2:
            raise ConfigError("NSP needs at least two documents with two or more tokens each: give it more data "
                              "(data.max_train_samples)")
        examples = []
        while len(examples) < n_examples:
            for i in rng.sample(range(len(docs)), len(docs)):
                examples.append(self._pair(docs, i, tokenizer, cfg.max_seq_length - 3, rng))
        return examples[:n_examples]

    @staticmethod
    def _pair(docs: list[list[list[int]]], i: int, tokenizer, max_tokens: int, rng: random.Random) -> dict:
        a, b = _segments(docs[i], rng)
        is_random_next = rng.random() < 0.5
        if is_random_next:
            j = rng.choice([k for k in (rng.randrange(len(docs)) for _ in range(3)) if k != i] or [(i + 1) % len(docs)])
            b = _segments(docs[j], rng)[1]
        a, b = list(a), list(b)
        _truncate_pair(a, b, max_tokens, rng)
        ids = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        # transformers' convention: label 0 = B continues A, 1 = B is random
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids),
                "next_sentence_label": int(is_random_next)}

    def pretraining_probes(self, train: list[dict], heldout: list[dict], tokenizer) -> dict[str, float]:
        """The NSP probe: logistic regression on one feature, the TF-IDF cosine of A and B (token ids as words),
        fitted on the training pairs and scored on the held-out ones. Above chance (0.5) means the pairs carry
        a signal a bag of words finds; NSP at chance with a probe above it means the model misses it."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        def halves(rows: list[dict]) -> tuple[list[str], list[str], list[int]]:
            a, b = [], []
            for row in rows:
                ids, cut = row["input_ids"], row["token_type_ids"].index(1)  # [CLS] A [SEP] | B [SEP]
                a.append(" ".join(map(str, ids[1: cut - 1])))
                b.append(" ".join(map(str, ids[cut: -1])))
            return a, b, [row["next_sentence_label"] for row in rows]

        train_a, train_b, train_y = halves(train)
        vectorizer = TfidfVectorizer(token_pattern=r"\S+").fit(train_a + train_b)

        def cosine(a: list[str], b: list[str]) -> np.ndarray:  # rows are L2-normalised: the dot is the cosine
            return np.asarray(vectorizer.transform(a).multiply(vectorizer.transform(b)).sum(1))

        probe = LogisticRegression().fit(cosine(train_a, train_b), train_y)
        held_a, held_b, held_y = halves(heldout)
        return {"probe/nsp_tfidf_cosine_accuracy": float(probe.score(cosine(held_a, held_b), held_y))}

    def pretraining_collator(self, tokenizer, cfg: PretrainConfig) -> DataCollatorForLanguageModeling:
        # pretrain.mlm_probability of the tokens are selected; of those 80% -> [MASK], 10% -> random token, 10% unchanged
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.mlm_probability,
                                               mask_replace_prob=0.8, random_replace_prob=0.1,
                                               pad_to_multiple_of=8)
