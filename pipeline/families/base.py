"""What a model family provides. One file per family subclasses `Family` and registers itself."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from pipeline.config import ConfigError, ModelConfig, PretrainConfig, TokenizerConfig


@dataclass(frozen=True)
class OnnxSpec:
    """How a family's classifier is exported to ONNX. The exporter reads this and has no family branches."""

    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    outputs: tuple[str, ...] = ("logits",)
    # input/output name -> {axis index: symbolic name}; batch and sequence are dynamic
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=lambda: {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "token_type_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
    })
    opset: int = 17
    atol: float = 1e-4  # max abs logit difference tolerated between PyTorch and ONNX Runtime (fp32)
    exporter: str = "torchscript"  # "torchscript" (torch.onnx.export(dynamo=False)) or "dynamo"
    # --- optimization (pipeline/export/optimize.py reads these; it has no family branches) ---
    # onnxruntime.transformers.optimizer model type whose fusion passes run on the graph
    ort_model_type: str = "bert"
    # FusionOptions switches turned off for this family (e.g. "attention": a graph that is not ORT's Attention)
    fusions_off: tuple[str, ...] = ()
    # config.json keys of (number of heads, hidden size), for the Attention fusion
    attention_config_keys: tuple[str, str] = ("num_attention_heads", "hidden_size")
    int8_method: str = "dynamic"  # "dynamic" or "static" (QDQ, calibrated on train texts)
    int8_reason: str = ""  # why this family uses int8_method; recorded in the variant's export.json
    # variant -> why this family cannot produce it; optimize refuses these before any work
    unsupported_variants: dict[str, str] = field(default_factory=dict)


class Family:
    """Base class: the config builder, tokenizer recipe, pretraining model + data, classifier and export spec."""

    name: ClassVar[str]
    # transformers *ForSequenceClassification classes, one per config class build_config can return; the first
    # is the family's own
    classifier_classes: ClassVar[tuple[type, ...]]
    dropout_keys: ClassVar[tuple[str, ...]]  # the config keys of the encoder's dropout probabilities
    # the config key of the dropout on attention probabilities alone (model.attention_dropout); None: no such key
    attention_dropout_key: ClassVar[str | None] = None
    onnx: ClassVar[OnnxSpec] = OnnxSpec()
    pretraining_objectives: ClassVar[tuple[str, ...]]  # e.g. ("mlm", "nsp"); names of logged losses

    # --- tokenizer -----------------------------------------------------------------------------------
    def train_tokenizer(self, corpus: list[Path], cfg: TokenizerConfig):
        """Train a tokenizer on text files; return a transformers fast tokenizer."""
        raise NotImplementedError

    # --- model ---------------------------------------------------------------------------------------
    def build_config(self, shape: ModelConfig, tokenizer, **extra: Any):
        """A transformers config for this family, with the vocabulary and special ids of `tokenizer`."""
        raise NotImplementedError

    def dropout_config(self, shape: ModelConfig) -> dict[str, float]:
        """Config key -> dropout probability: model.dropout for every key, and model.attention_dropout's entry
        for this family on its attention-probability key (where its config has one)."""
        values = {key: shape.dropout for key in self.dropout_keys}
        p = self.attention_dropout(shape)
        return values if p is None or self.attention_dropout_key is None else {**values, self.attention_dropout_key: p}

    def attention_dropout(self, shape: ModelConfig) -> float | None:
        """model.attention_dropout's entry for this family, checked; None where it has none."""
        if self.name not in shape.attention_dropout:
            return None
        p = shape.attention_dropout[self.name]
        if not 0 <= p < 1:
            raise ConfigError(f"model.attention_dropout.{self.name}: a dropout probability must be in [0, 1), got {p}")
        return p

    def apply_dropout(self, model: torch.nn.Module, shape: ModelConfig) -> None:
        """Set what the config cannot say on a model built with dropout_config(shape): a family whose config has
        no attention-dropout key overrides this to set model.attention_dropout on the modules (training only)."""
        if self.attention_dropout_key is None and self.attention_dropout(shape) is not None:
            raise ConfigError(f"model.attention_dropout.{self.name}: {self.name} has no dropout of its own on the "
                              f"attention probabilities; leave it out of model.attention_dropout")

    @property
    def model_types(self) -> tuple[str, ...]:
        """The transformers model_type values of this family's configs."""
        return tuple(c.config_class.model_type for c in self.classifier_classes)

    def classifier_for(self, config) -> type:
        """The classifier class for a config of this family (from build_config or a checkpoint's config.json)."""
        for cls in self.classifier_classes:
            if cls.config_class.model_type == config.model_type:
                return cls
        raise ConfigError(f"family {self.name!r} has no classifier for model_type {config.model_type!r}; it "
                          f"handles {', '.join(self.model_types)}")

    def pretraining_class(self, config) -> type:
        """A transformers PreTrainedModel class for `config` whose forward returns a dict with `loss`, one
        `<objective>_loss` per objective and `<objective>_correct` / `<objective>_total` counts for held-out
        accuracy. Its `from_pretrained` continues pretraining from a checkpoint (pretrain.init)."""
        raise NotImplementedError

    def pretraining_model(self, config) -> torch.nn.Module:
        """A new pretraining model (random weights from torch's current seed)."""
        return self.pretraining_class(config)(config)

    def weigh_objectives(self, model: torch.nn.Module, cfg: PretrainConfig) -> None:
        """Apply the pretrain section's loss weights to a pretraining model (default: a single objective)."""

    def initialize(self, model: torch.nn.Module, cfg: PretrainConfig) -> None:
        """What a new model (pretraining from scratch, or the random-init classifier, so that the ablation differs
        from the pretrained arm by the pretraining alone) gets beyond its class's own initialisation, from the
        pretrain section. Default: nothing."""

    def pretraining_examples(self, texts: list[str], tokenizer, cfg: PretrainConfig, n_examples: int,
                             seed: int) -> list[dict[str, Any]]:
        """Tokenized pretraining examples built from documents, about `n_examples` of them."""
        raise NotImplementedError

    def pretraining_collator(self, tokenizer, cfg: PretrainConfig):
        raise NotImplementedError

    @contextlib.contextmanager
    def training_patches(self, model: torch.nn.Module) -> Iterator[None]:
        """Faster kernels for training `model` (pretraining or fine-tuning), the same function, undone on exit:
        a saved folder is the stock model. Default: none."""
        yield

    def pretraining_probes(self, train: list[dict], heldout: list[dict], tokenizer) -> dict[str, float]:
        """Model-free sanity figures for the pretraining data, e.g. whether its labels are learnable at all
        (`probe/<name>` metrics). Default: none."""
        return {}

    # --- export --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def export_patches(self, model: torch.nn.Module) -> Iterator[None]:
        """Export-only changes to `model` (undone on exit). Default: none."""
        yield

    def top_modules(self, model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module]:
        """The last `num_layers` encoder layers of a classifier (and any pooler), for `finetune.reinit_top_layers`."""
        raise NotImplementedError

    def encoder_flops(self, config: dict[str, Any], batch: int, seq: int) -> float:
        """FLOPs (multiply-adds x 2) of one forward pass at batch x seq, from a config.json mapping:
        the Q/K/V/O projections, the FFN and the attention products, per layer. Families add their extras."""
        h = config.get("hidden_size") or config["d_model"]
        inner = config.get("intermediate_size") or config["d_inner"]
        layers = config.get("num_hidden_layers") or config["n_layer"]
        tokens = batch * seq
        per_layer = 2 * tokens * (4 * h * h + 2 * h * inner) + 2 * 2 * batch * seq * seq * h
        return float(layers * (per_layer + self.extra_layer_flops(h, batch, seq)))

    def extra_layer_flops(self, hidden: int, batch: int, seq: int) -> float:
        return 0.0

    def dummy_export_inputs(self, tokenizer, batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
        enc = tokenizer(["hello world"] * batch, padding="max_length", max_length=seq, truncation=True,
                        return_tensors="pt")
        return {k: enc[k] for k in self.onnx.inputs}
