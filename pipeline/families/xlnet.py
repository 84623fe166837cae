"""XLNet: SentencePiece-style Unigram tokenizer, XLNetLMHeadModel with permutation language modeling."""
from __future__ import annotations

import contextlib
import json
import random
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from tokenizers import Regex, pre_tokenizers, trainers
from transformers import (DataCollatorForPermutationLanguageModeling, XLNetConfig, XLNetForSequenceClassification,
                          XLNetLMHeadModel, XLNetTokenizer)

from pipeline.config import ConfigError, ModelConfig, PretrainConfig, TokenizerConfig
from pipeline.families import register
from pipeline.families.base import Family, OnnxSpec
from pipeline.families._vocab import sorted_unigram_vocab

# <unk> first: XLNetTokenizer's unk_id defaults to 0
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]
# Training only: no piece may cross punctuation, a digit run or the edge of a Han/kana run (with its "▁"),
# as SentencePiece's split_by_unicode_script / split_by_number keep them. Without these, unsegmented Chinese
# (one space-free "word" per clause) fills the vocabulary with clause-long pieces such as "非常好,强烈".
# The saved tokenizer keeps XLNetTokenizer's own pipeline, which from_pretrained rebuilds anyway: the
# vocabulary then holds no piece across those edges, so the Viterbi segmentation stops at them.
_TRAINING_SPLITS = [pre_tokenizers.Split(Regex(r"▁?[\p{Han}\p{Hiragana}\p{Katakana}ー]+"), "isolated"),
                    pre_tokenizers.Punctuation("isolated"), pre_tokenizers.Digits(individual_digits=False)]
MAX_PIECE_LENGTH = 16  # characters; SentencePiece's default


class XLNetLMHeadModelAtTargets(XLNetLMHeadModel):
    """XLNetLMHeadModel that projects to the vocabulary only at the prediction targets.

    Two-stream attention already runs the query stream only over `target_mapping`'s rows; the collator
    below sizes those rows to the real targets (about 1/6 of tokens) instead of every position.
    """

    def forward(self, input_ids, perm_mask=None, target_mapping=None, labels=None, attention_mask=None,
                token_type_ids=None, **_: Any) -> dict[str, torch.Tensor]:
        out = self.transformer(input_ids, attention_mask=attention_mask, perm_mask=perm_mask,
                               target_mapping=target_mapping, token_type_ids=token_type_ids, use_mems=False)
        selected = labels != -100  # [batch, n_predict]
        logits = self.lm_loss(out.last_hidden_state[selected])  # [n_targets, vocab]
        targets = labels[selected]
        loss = F.cross_entropy(logits, targets) if targets.numel() else logits.sum() * 0
        correct = (logits.argmax(-1) == targets).sum()
        return {"loss": loss, "plm_loss": loss.detach(), "plm_correct": correct,
                "plm_total": torch.tensor(targets.numel(), device=targets.device)}


class CompactPermutationCollator(DataCollatorForPermutationLanguageModeling):
    """transformers' PLM collator (span masking, factorisation order, perm_mask), with `target_mapping`
    cut from [batch, seq, seq] to [batch, n_predict, seq], n_predict = the most targets in any row."""

    def torch_call(self, examples: list[Any]) -> dict[str, torch.Tensor]:
        batch = super().torch_call(examples)
        labels = batch["labels"]  # [batch, seq], -100 off target
        n_predict = max(int((labels != -100).sum(1).max()), 1)
        bsz, seq = labels.shape
        target_mapping = torch.zeros(bsz, n_predict, seq)
        compact = torch.full((bsz, n_predict), -100, dtype=labels.dtype)
        for i in range(bsz):
            positions = (labels[i] != -100).nonzero().flatten()
            target_mapping[i, torch.arange(len(positions)), positions] = 1.0
            compact[i, : len(positions)] = labels[i, positions]
        batch["target_mapping"], batch["labels"] = target_mapping, compact
        return batch


class AttentionProbabilityDropout(torch.nn.Module):
    """XLNetRelativeAttention's `dropout`, which it applies to two tensors: the attention probabilities
    [batch, heads, i, j] (4-D) get `p_attention`, the attention output [seq, batch, hidden] (3-D) `p`.
    No weights, so a saved model is the stock XLNet; a loaded one gets config.dropout everywhere again."""

    def __init__(self, p: float, p_attention: float):
        super().__init__()
        self.p, self.p_attention = p, p_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p_attention if x.dim() == 4 else self.p, self.training)


@register
class XLNet(Family):
    name = "xlnet"
    classifier_classes = (XLNetForSequenceClassification,)
    dropout_keys = ("dropout",)
    # dynamo: with export_patches both exporters give the same numbers; dynamo's graph is a third the size
    # (no Constant/Identity/shape chains). Stock XLNet fails in dynamo (int64 `1.0 - attention_mask`).
    # optimization: XLNet's attention is built in export_patches (_FastRelAttention, end of this file);
    # ORT's Attention and EmbedLayerNormalization patterns are BERT's (absolute positions) and do not apply,
    # while its LayerNorm / SkipLayerNorm / BiasGelu passes do.
    onnx = OnnxSpec(exporter="dynamo", opset=18, ort_model_type="bert",
                    fusions_off=("attention", "embed_layer_norm"), attention_config_keys=("n_head", "d_model"),
                    int8_method="dynamic",
                    int8_reason="dynamic INT8 quantizes the weight MatMuls only "
                                "(activation ranges per batch), so no calibration set can "
                                "misjudge them; base shape, b1 s128: 2.0x faster than fp32")
    pretraining_objectives = ("plm",)

    def train_tokenizer(self, corpus: list[Path], cfg: TokenizerConfig) -> XLNetTokenizer:
        # Train a Unigram model inside XLNetTokenizer's own normalizer and Metaspace pre-tokenizer, then
        # hand its pieces and scores back to XLNetTokenizer, which adds `A <sep> <cls>` and left padding.
        backend = XLNetTokenizer(do_lower_case=cfg.lowercase).backend_tokenizer
        _check_vocab_covers_characters(backend, corpus, cfg.vocab_size)
        backend.pre_tokenizer = pre_tokenizers.Sequence([backend.pre_tokenizer, *_TRAINING_SPLITS])
        trainer = trainers.UnigramTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS,
                                          unk_token="<unk>", max_piece_length=MAX_PIECE_LENGTH,
                                          show_progress=False)
        backend.train([str(p) for p in corpus], trainer)
        trained = [tuple(piece) for piece in json.loads(backend.to_str())["model"]["vocab"]]
        vocab = sorted_unigram_vocab(trained, len(SPECIAL_TOKENS))
        return XLNetTokenizer(vocab=vocab, unk_id=0, do_lower_case=cfg.lowercase, padding_side="left",
                              model_max_length=cfg.model_max_length,
                              model_input_names=["input_ids", "token_type_ids", "attention_mask"])

    def build_config(self, shape: ModelConfig, tokenizer, **extra: Any) -> XLNetConfig:
        if shape.layer_norm.get(self.name, "post") != "post":
            raise ConfigError("model.layer_norm.xlnet: transformers' XLNet is post-LayerNorm only; set it to post "
                              "or leave xlnet out of model.layer_norm")
        return XLNetConfig(
            vocab_size=len(tokenizer), d_model=shape.hidden_size, n_layer=shape.num_hidden_layers,
            n_head=shape.num_attention_heads, d_inner=shape.intermediate_size, **self.dropout_config(shape),
            initializer_range=shape.initializer_range,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, mem_len=None, use_mems_train=False, **extra)

    def apply_dropout(self, model: torch.nn.Module, shape: ModelConfig) -> None:
        # XLNetConfig's one `dropout` covers the attention probabilities too: split each layer's module
        p = self.attention_dropout(shape)
        if p is not None:
            for layer in model.transformer.layer:
                layer.rel_attn.dropout = AttentionProbabilityDropout(shape.dropout, p)

    def top_modules(self, model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module]:
        # the sequence summary is new in every classifier already; only the top layers need a fresh start
        return list(model.transformer.layer)[-num_layers:] if num_layers else []

    def pretraining_class(self, config: XLNetConfig) -> type:
        return XLNetLMHeadModelAtTargets

    def pretraining_examples(self, texts: list[str], tokenizer, cfg: PretrainConfig, n_examples: int,
                             seed: int) -> list[dict[str, Any]]:
        """Documents joined by <eod> and packed into blocks of `max_seq_length - 2` tokens + `<sep> <cls>`:
        no padding, and the classifier's layout (summary token last) is seen in pretraining too."""
        if cfg.max_seq_length % 2:
            raise ConfigError(f"pretrain.max_seq_length={cfg.max_seq_length} must be even for XLNet: the "
                             f"permutation collator builds a leakage-free perm_mask only for even lengths")
        rng = random.Random(seed)
        stream: list[int] = []
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            stream += ids + [tokenizer.convert_tokens_to_ids("<eod>")]
        body = cfg.max_seq_length - 2
        if len(stream) < body:
            raise ConfigError(f"the corpus has {len(stream)} tokens, fewer than one block of {body}")
        tail = [tokenizer.sep_token_id, tokenizer.cls_token_id]
        examples = []
        while len(examples) < n_examples:  # each pass starts at a new offset, so blocks differ
            offset = rng.randrange(body)
            rotated = stream[offset:] + stream[:offset]
            blocks = [rotated[i: i + body] + tail for i in range(0, len(rotated) - body + 1, body)]
            examples += [{"input_ids": b} for b in rng.sample(blocks, len(blocks))]
        return examples[:n_examples]

    def pretraining_collator(self, tokenizer, cfg: PretrainConfig) -> CompactPermutationCollator:
        return CompactPermutationCollator(tokenizer, plm_probability=cfg.plm_probability,
                                          max_span_length=cfg.max_span_length)

    def extra_layer_flops(self, hidden: int, batch: int, seq: int) -> float:
        # relative attention: the position projection and the position scores over 2 x seq keys
        return 2 * batch * 2 * seq * hidden * hidden + 2 * batch * seq * 2 * seq * hidden

    @contextlib.contextmanager
    def training_patches(self, model: torch.nn.Module) -> Iterator[None]:
        """The content stream in MatMul form (fine-tuning), batch-major masks and a cheaper relative-shift
        backward (every attention call, two-stream pretraining's too): _TrainingRelAttention, _batch_major,
        _RelShift. The same results to the bit in pretraining; fine-tuning's MatMul form within rounding."""
        with _fast_relative_attention(model.base_model, training=True), _fast_rel_shift(model.base_model):
            yield

    @contextlib.contextmanager
    def export_patches(self, model: torch.nn.Module) -> Iterator[None]:
        """Export XLNet without Einsum, EyeLike or OneHot, with the same numbers (see `_export_globals`)."""
        with _export_globals(), _input_mask_from_attention_mask(model.base_model), \
                _fast_relative_attention(model.base_model):
            yield


def _check_vocab_covers_characters(backend, corpus: list[Path], vocab_size: int) -> None:
    """Unigram keeps every character of the corpus as a piece: a vocabulary smaller than the character set
    (a tiny vocab on Chinese: thousands of characters) cannot be trained. Say so before training."""
    chars: set[str] = set()
    for path in corpus:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                chars.update(backend.normalizer.normalize_str(line))
    chars -= {" ", "\n", "\t", "\r"}  # spaces become the one "▁" piece
    needed = len(chars) + 1 + len(SPECIAL_TOKENS)
    if vocab_size < needed:
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} is too small for XLNet's Unigram tokenizer on this corpus: it keeps "
            f"each of its {len(chars)} distinct characters as a piece, so it needs at least {needed}. Text without "
            f"spaces (Chinese, Japanese) wants several times its character count: set tokenizer.vocab_size to "
            f"{max(2 * needed, 1000)} or more (e.g. --set tokenizer.vocab_size={max(2 * needed, 1000)}).")


# --- ONNX export patches ---------------------------------------------------------------------------------
# transformers' XLNet writes every projection and attention product as torch.einsum, the "not the target"
# mask as torch.eye(qlen) and the segment matrix as one_hot. Exported as is they become Einsum (ORT's
# quantizer and TensorRT's fusions skip it), EyeLike on a dynamic shape (TensorRT's parser rejects it) and
# OneHot. During export, modeling_xlnet's `torch` and `nn` names point at proxies that send those three
# calls to MatMul / Range+Equal forms with the same numbers; every other attribute is the real module, and
# the model code itself is untouched.


def _eye(n: int, m: int | None = None, *, dtype=None, device=None, **_: Any) -> torch.Tensor:
    """torch.eye as Range + Equal + Cast, which stays valid when n is a dynamic sequence length."""
    rows = torch.arange(n, device=device)
    cols = rows if m is None else torch.arange(m, device=device)
    return (rows[:, None] == cols[None, :]).to(dtype or torch.get_default_dtype())


def _one_hot(x: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """F.one_hot as Equal against arange(num_classes) + Cast (XLNet calls it with num_classes=2)."""
    if num_classes < 0:
        raise ValueError("XLNet export patch: one_hot needs an explicit num_classes")
    return (x[..., None] == torch.arange(num_classes, device=x.device)).long()


def _proj_in(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ibh,hnd->ibnd: one MatMul against a 2-D [h, n*d] weight (constant-folded), as a Linear would be."""
    h, n, d = w.shape
    return torch.matmul(x, w.reshape(h, n * d)).reshape(x.shape[0], x.shape[1], n, d)


def _proj_out(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ibnd,hnd->ibh: [i, b, n*d] @ [n*d, h]."""
    h, n, d = w.shape
    return torch.matmul(x.flatten(2), w.reshape(h, n * d).t())


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """ibnd,jbnd->bnij: [b, n, i, d] @ [b, n, d, j], the Q.K^T layout of BERT's attention."""
    return torch.matmul(q.permute(1, 2, 0, 3), k.permute(1, 2, 3, 0))


def _context(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """bnij,jbnd->ibnd: [b, n, i, j] @ [b, n, j, d], back to [i, b, n, d]."""
    return torch.matmul(p, v.permute(1, 2, 0, 3)).permute(2, 0, 1, 3)


def _segment_bias(q: torch.Tensor, seg_embed: torch.Tensor) -> torch.Tensor:
    """ibnd,snd->ibns: per head, [n, i*b, d] @ [n, d, s]."""
    i, b, n, _ = q.shape
    out = torch.matmul(q.permute(2, 0, 1, 3).flatten(1, 2), seg_embed.permute(1, 2, 0))  # [n, i*b, s]
    return out.reshape(n, i, b, -1).permute(1, 2, 0, 3)


def _segment_scores(seg_mat: torch.Tensor, ef: torch.Tensor) -> torch.Tensor:
    """ijbs,ibns->bnij: [b, i, n, s] @ [b, i, s, j] -> [b, i, n, j] -> [b, n, i, j]."""
    return torch.matmul(ef.permute(1, 0, 2, 3), seg_mat.permute(2, 0, 3, 1)).permute(0, 2, 1, 3)


def _gather_targets(q: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """mbnd,mlb->lbnd (two-stream pretraining only): [b, l, m] @ [b, m, n*d]."""
    out = torch.matmul(mapping.permute(2, 1, 0), q.permute(1, 0, 2, 3).flatten(2))
    return out.reshape(out.shape[0], out.shape[1], q.shape[2], q.shape[3]).permute(1, 0, 2, 3)


def _scatter_targets(a: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """lbnd,mlb->mbnd (two-stream pretraining only): [b, m, l] @ [b, l, n*d]."""
    out = torch.matmul(mapping.permute(2, 0, 1), a.permute(1, 0, 2, 3).flatten(2))
    return out.reshape(out.shape[0], out.shape[1], a.shape[2], a.shape[3]).permute(1, 0, 2, 3)


_EINSUM_AS_MATMUL: dict[str, Callable[..., torch.Tensor]] = {
    "ibh,hnd->ibnd": _proj_in,
    "ibnd,hnd->ibh": _proj_out,
    "ibnd,jbnd->bnij": _scores,
    "bnij,jbnd->ibnd": _context,
    "ibnd,snd->ibns": _segment_bias,
    "ijbs,ibns->bnij": _segment_scores,
    "mbnd,mlb->lbnd": _gather_targets,
    "lbnd,mlb->mbnd": _scatter_targets,
    "i,d->id": lambda a, b: a[:, None] * b[None, :],  # older transformers' positional_embedding
}


def _einsum(equation: str, *operands: Any) -> torch.Tensor:
    """torch.einsum for the equations modeling_xlnet uses, as MatMul / Transpose; others are an error."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    equation = equation.replace(" ", "")
    inputs, output = equation.split("->")
    if len(operands) == 1 and sorted(inputs) == sorted(output) and len(set(inputs)) == len(inputs):
        return operands[0].permute([inputs.index(c) for c in output])  # e.g. ijbn->bnij: a Transpose
    if equation not in _EINSUM_AS_MATMUL:
        raise NotImplementedError(
            f"XLNet export patch has no MatMul form for einsum {equation!r} (a newer transformers?); "
            f"add one to _EINSUM_AS_MATMUL in pipeline/families/xlnet.py")
    return _EINSUM_AS_MATMUL[equation](*operands)


class _ModuleProxy(types.ModuleType):
    """Stands in for a module: the given overrides first, then every attribute of the real module."""

    def __init__(self, real: types.ModuleType, **overrides: Any):
        super().__init__(real.__name__)
        self.__dict__.update(overrides)
        self._real = real

    def __getattr__(self, name: str) -> Any:  # called only for names not overridden
        return getattr(self._real, name)


@contextlib.contextmanager
def _export_globals() -> Iterator[None]:
    """Point modeling_xlnet's `torch` and `nn` at the proxies; restore them on exit."""
    from transformers.models.xlnet import modeling_xlnet

    functional = _ModuleProxy(torch.nn.functional, one_hot=_one_hot)
    patched = {"torch": _ModuleProxy(torch, eye=_eye, einsum=_einsum),
               "nn": _ModuleProxy(torch.nn, functional=functional)}
    saved = {name: modeling_xlnet.__dict__[name] for name in patched}
    modeling_xlnet.__dict__.update(patched)
    try:
        yield
    finally:
        modeling_xlnet.__dict__.update(saved)


@contextlib.contextmanager
def _input_mask_from_attention_mask(transformer: torch.nn.Module) -> Iterator[None]:
    """Hand XLNetModel `input_mask` (1.0 on padding) instead of the int64 `attention_mask`.

    XLNetModel computes `1.0 - attention_mask`; the dynamo exporter cannot decompose that int64 rsub.
    For a 0/1 mask, `attention_mask == 0` as float is the same tensor, so the numbers do not change.
    """
    had_own = "forward" in transformer.__dict__
    original = transformer.forward

    def forward(*args: Any, attention_mask=None, input_mask=None, **kwargs: Any):
        if attention_mask is not None and input_mask is None:
            input_mask = (attention_mask == 0).to(transformer.dtype)
        return original(*args, input_mask=input_mask, **kwargs)

    transformer.forward = forward
    try:
        yield
    finally:
        if had_own:
            transformer.forward = original
        else:
            del transformer.forward


# --- serving-speed export patches (optimization, issue 6) --------------------------------------------------
# The content stream of an inference forward (no mems, no two-stream query, no attention outputs) rewritten
# for ONNX Runtime, with the numbers unchanged:
# - q, k and v come from one [h, 3*n*d] MatMul: one contiguous GEMM instead of three.
# - the relative-position keys `r @ W_r` depend only on the sequence length and the weights, so each layer
#   keeps a precomputed [2L, n*d] table and slices the 2s rows for sequence length s: no sin/cos, no
#   per-batch projection over 2s positions (about 13% of XLNet-base's FLOPs at s=128).
# - the relative shift ends in a Slice instead of index_select (a Gather over the whole score tensor).
# Every weight the graph multiplies by is a ready 2-D initializer, so ORT's quantizer sees each MatMul.
REL_POS_TABLE_LENGTH = 512  # longest sequence served: the tokenizers' model_max_length and parity's maximum


def _rel_shift(x: torch.Tensor, klen: int) -> torch.Tensor:
    """rel_shift_bnij with a Slice: [b, n, i, 2s] -> [b, n, i, klen]."""
    b, n, i, j = x.shape
    x = x.reshape(b, n, j, i)[:, :, 1:, :].reshape(b, n, i, j - 1)
    return x[:, :, :, :klen]


def _content_attention(a: torch.nn.Module, h: torch.Tensor, w_qkv: torch.Tensor, w_o: torch.Tensor,
                       k_r: torch.Tensor, seg_mat: torch.Tensor | None, attn_mask_h: torch.Tensor | None,
                       dropout: Callable[[torch.Tensor], torch.Tensor],
                       shift: Callable[[torch.Tensor, int], torch.Tensor] = _rel_shift) -> torch.Tensor:
    """rel_attn_core + post_attention of XLNetRelativeAttention `a` for the content stream, in MatMul form.
    h [s, b, hidden]; w_qkv [hidden, 3*n*d]; w_o [n*d, hidden]; k_r [2s, b or 1, n, d], the position keys
    for distances s .. -s+1; `dropout` goes where the stock code applies a.dropout; `shift`: _rel_shift or, in
    training, its _RelShift.apply. Returns [s, b, hidden]."""
    s, b, _ = h.shape
    q, k, v = (h @ w_qkv).reshape(s, b, 3, a.n_head, a.d_head).unbind(2)  # each [s, b, n, d]
    score = _scores(q + a.r_w_bias, k) + shift(_scores(q + a.r_r_bias, k_r), s)  # [b, n, s, s]
    if seg_mat is not None:
        score = score + _segment_scores(seg_mat, _segment_bias(q + a.r_s_bias, a.seg_embed))
    score = score * a.scale
    if attn_mask_h is not None:
        score = score - 1e30 * attn_mask_h.permute(2, 3, 0, 1)  # ijbn -> bnij
    prob = dropout(torch.softmax(score, dim=3))
    out = dropout(_context(prob, v).flatten(2) @ w_o)  # [s, b, hidden]
    return a.layer_norm(out + h)


def _no_dropout(x: torch.Tensor) -> torch.Tensor:
    return x


class _RelShift(torch.autograd.Function):
    """_rel_shift with a backward of one zero fill and one copy into it. Stock XLNet's index_select backs
    into a scatter-add, the two-Slice form into two fills and two copies, each over the [b, n, s, 2s]
    position scores; each output gradient lands in one input element, so every form gives the same bits.
    About 10% of an XLNet pretraining step (32 x 128, 2 cores)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, klen: int) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return _rel_shift(x, klen)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # output [p, c] is row-major element i + p * (j - 1) + c of each [b, n] block of the input
        b, n, i, j = ctx.shape
        out = grad.new_zeros(b, n, i * j, dtype=ctx.dtype)  # the input's dtype, whatever autocast made grad
        out[:, :, i:].view(b, n, i, j - 1)[..., :grad.shape[-1]].copy_(grad)
        return out.view(b, n, i, j), None


class _ContentStreamForward:
    """A replacement for one XLNetRelativeAttention.forward: the content stream without mems goes to `attend`;
    other call forms (two-stream, mems, attention outputs) go to the original."""

    batch_major_masks = False  # _TrainingRelAttention: lay the masks out as _batch_major does

    def __init__(self, attn: torch.nn.Module, original: Callable):
        self.attn, self.original = attn, original

    def __call__(self, h, g, attn_mask_h, attn_mask_g, r, seg_mat, mems=None, target_mapping=None,
                 output_attentions=False):
        if self.batch_major_masks:
            attn_mask_h, attn_mask_g = _batch_major(attn_mask_h), _batch_major(attn_mask_g)
        if g is not None or mems is not None or output_attentions:
            return self.original(h, g, attn_mask_h, attn_mask_g, r, seg_mat, mems=mems,
                                 target_mapping=target_mapping, output_attentions=output_attentions)
        return self.attend(h, r, seg_mat, attn_mask_h), None

    def attend(self, h, r, seg_mat, attn_mask_h) -> torch.Tensor:
        raise NotImplementedError


def _batch_major(mask: torch.Tensor | None) -> torch.Tensor | None:
    """An [i, j, b, 1] attention mask, the same values, as a view of [b, 1, i, j]-contiguous memory. Both
    attention forms (the stock two-stream one and `_content_attention`) subtract 1e30 x the mask permuted to
    [b, 1, i, j] from the [b, n, i, j] scores: from XLNetModel's layout that broadcast reads the mask with the
    batch as its fastest axis and ran 2.7x slower than from this one (20 against 7.4 ms of a 140 ms layer at
    32 x 255 tokens, bf16 autocast, 2 cores). Elementwise, so the results are the same to the bit."""
    return None if mask is None else mask.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)


class _FastRelAttention(_ContentStreamForward):
    """The serving forward: weights and position keys precomputed once."""

    def __init__(self, attn: torch.nn.Module, transformer: torch.nn.Module, original: Callable):
        super().__init__(attn, original)
        h, n, d = attn.q.shape
        with torch.no_grad():
            self.w_qkv = torch.cat([w.reshape(h, n * d) for w in (attn.q, attn.k, attn.v)], 1).contiguous()
            self.w_o = attn.o.reshape(h, n * d).t().contiguous()  # [n*d, h]
            L = REL_POS_TABLE_LENGTH
            pos = transformer.relative_positional_encoding(L, L, bsz=None)[:, 0, :]  # [2L, h]: L .. -L+1
            self.k_rel = (pos.to(attn.r.dtype) @ attn.r.reshape(h, n * d)).contiguous()  # [2L, n*d]

    def attend(self, h, r, seg_mat, attn_mask_h) -> torch.Tensor:
        s, L = h.shape[0], REL_POS_TABLE_LENGTH
        k_r = self.k_rel[L - s: L + s].reshape(2 * s, 1, self.attn.n_head, self.attn.d_head)  # batch broadcasts
        return _content_attention(self.attn, h, self.w_qkv, self.w_o, k_r, seg_mat, attn_mask_h, _no_dropout)


class _TrainingRelAttention(_ContentStreamForward):
    """XLNetRelativeAttention.forward for fine-tuning: the content stream in MatMul form, weights read at each
    call so that gradients reach them, dropout where the stock code has it. Stock XLNet runs 4-D einsums, the
    relative shift's index_select (and its scatter-add backward) and one position projection per batch row. A
    small-preset step at 32 x 256 tokens took 3.3 s instead of 3.9 (2 cores, AVX2). Other call forms (two-stream
    pretraining): the original. Both with batch-major masks (_batch_major); export keeps the stock layout."""

    batch_major_masks = True

    def attend(self, h, r, seg_mat, attn_mask_h) -> torch.Tensor:
        a = self.attn
        hidden, n, d = a.q.shape
        w_qkv = torch.cat([w.reshape(hidden, n * d) for w in (a.q, a.k, a.v)], 1)
        if r.stride(1) == 0:  # [2s, b, h] expanded from one column (no dropout on it): project that column once
            r = r[:, :1]
        k_r = (r.to(a.r.dtype) @ a.r.reshape(hidden, n * d)).reshape(r.shape[0], r.shape[1], n, d)
        return _content_attention(a, h, w_qkv, a.o.reshape(hidden, n * d).t(), k_r, seg_mat, attn_mask_h,
                                  a.dropout, _RelShift.apply)


def _rel_shift_bnij(x: torch.Tensor, klen: int) -> torch.Tensor:
    return _RelShift.apply(x, klen)  # Function.apply takes no keywords; the stock code passes klen=


@contextlib.contextmanager
def _fast_rel_shift(transformer: torch.nn.Module) -> Iterator[None]:
    """Every layer's `rel_shift_bnij` (a staticmethod the stock forward calls) as _RelShift, undone on exit."""
    for layer in transformer.layer:
        layer.rel_attn.rel_shift_bnij = _rel_shift_bnij
    try:
        yield
    finally:
        for layer in transformer.layer:
            del layer.rel_attn.rel_shift_bnij


@contextlib.contextmanager
def _fast_relative_attention(transformer: torch.nn.Module, training: bool = False) -> Iterator[None]:
    """Give every layer's attention the serving forward above (`training`: _TrainingRelAttention); restore the
    modules on exit."""
    if getattr(transformer, "bi_data", False) or transformer.attn_type != "bi":
        yield  # pretraining-only layouts: keep the stock forward
        return
    patched = []
    for layer in transformer.layer:
        attn = layer.rel_attn
        had_own = "forward" in attn.__dict__
        attn.forward = (_TrainingRelAttention(attn, attn.forward) if training
                        else _FastRelAttention(attn, transformer, attn.forward))
        patched.append((attn, had_own))
    try:
        yield
    finally:
        for attn, had_own in patched:
            if had_own:
                attn.forward = attn.forward.original
            else:
                del attn.forward
