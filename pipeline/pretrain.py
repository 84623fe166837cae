"""pretrain stage: pretrain a family's model with its own objectives (BERT: MLM + NSP, XLNet: PLM), from scratch or
continuing from a checkpoint (pretrain.init), on the prepare stage's corpus (pretrain.corpus)."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter

import torch
from transformers import AutoConfig, AutoTokenizer

from pipeline.config import ConfigError, Params, PretrainConfig
from pipeline.data import read_corpus, read_split
from pipeline.families import check_family_keys, get_family
from pipeline.io import write_json
from pipeline.paths import Paths
from pipeline.training import (LiveCallback, drop_checkpoints, ObjectiveTrainer, prepare_checkpoints,
                               resolve_checkpoint, save_model_folder, set_threads, set_training_attention,
                               summarize_objectives, training_args, world_size)

log = logging.getLogger(__name__)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


@torch.no_grad()
def evaluate_pretraining(model, examples: list[dict], collator, batch_size: int, seed: int,
                         unigram_token: int | None = None) -> dict[str, float]:
    """Held-out loss and accuracy per objective (MLM/NSP/PLM), with seeded masking so runs compare; with
    `unigram_token`, also the accuracy of always predicting that token at the same targets (`labels`)."""
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    sums: dict[str, float] = {"_batches": 0, "unigram_correct": 0, "unigram_total": 0}
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in collator(examples[start: start + batch_size]).items()}
        for key, value in model(**batch).items():
            if key != "loss" and key.endswith(("_loss", "_correct", "_total")):
                sums[key] = sums.get(key, 0.0) + float(value)
        targets = batch["labels"][batch["labels"] != -100]  # the token objective's targets (MLM / PLM)
        sums["unigram_correct"] += int((targets == unigram_token).sum()) if unigram_token is not None else 0
        sums["unigram_total"] += targets.numel()
        sums["_batches"] += 1
    torch.random.set_rng_state(state)
    model.train()
    if unigram_token is None:
        del sums["unigram_correct"], sums["unigram_total"]
    return {f"heldout/{k}": v for k, v in summarize_objectives(sums).items()}


def most_frequent_token(examples: list[dict], tokenizer) -> int:
    """The commonest non-special token of the training examples: the unigram baseline's constant guess."""
    counts = Counter(t for e in examples for t in e["input_ids"])
    for special in tokenizer.all_special_ids:
        counts.pop(special, None)
    return counts.most_common(1)[0][0]


def resolve_pretrain_init(init: str, family, paths: Paths) -> str | None:
    """None for pretrain.init=scratch, else the checked from_pretrained source; before any work."""
    if init == "scratch":
        if not (paths.tokenizer(family.name) / "tokenizer_config.json").exists():
            raise ConfigError(f"no tokenizer in {paths.tokenizer(family.name)}; run `dvc repro "
                              f"tokenizer@{family.name}` first")
        return None
    return resolve_checkpoint(init, family, "pretrain.init", "`scratch`")


def pretraining_model(family, params: Params, cfg: PretrainConfig, tokenizer, source: str | None):
    """A new model of params.model's shape (source None), or the checkpoint's, with pretrain.dropout (if set)
    and the objective weights. Seeded: the Trainer seeds only after the model exists."""
    torch.manual_seed(cfg.seed)
    # pretrain.dropout, where set, is every dropout (the attention probabilities' too)
    shape = params.model if cfg.dropout is None else dataclasses.replace(
        params.model, dropout=cfg.dropout, attention_dropout={})
    if source is None:
        model = family.pretraining_model(family.build_config(shape, tokenizer))
        family.apply_dropout(model, shape)
        family.initialize(model, cfg)
    else:  # a checkpoint keeps its own dropout unless pretrain.dropout is set
        dropout = {} if cfg.dropout is None else family.dropout_config(shape)
        model = family.pretraining_class(AutoConfig.from_pretrained(source)).from_pretrained(source, **dropout)
    family.weigh_objectives(model, cfg)
    set_training_attention(model, cfg)
    return model


def pretrain(family_name: str, params: Params, paths: Paths = Paths()) -> dict:
    family, cfg = get_family(family_name), params.pretrain
    check_family_keys(params)
    set_threads(params.threads)
    cfg = dataclasses.replace(cfg, max_steps=cfg.max_steps_by_family.get(family_name, cfg.max_steps))
    source = resolve_pretrain_init(cfg.init, family, paths)
    tokenizer = AutoTokenizer.from_pretrained(source or paths.tokenizer(family_name))
    heldout_texts, _ = read_split("validation", paths)
    world = world_size()
    n_train = cfg.max_steps * cfg.per_device_train_batch_size * world
    train = family.pretraining_examples(read_corpus(paths), tokenizer, cfg, n_train, cfg.seed)
    heldout = family.pretraining_examples(heldout_texts, tokenizer, cfg,
                                          cfg.eval_max_batches * cfg.per_device_eval_batch_size, cfg.seed + 1)
    model = pretraining_model(family, params, cfg, tokenizer, source)
    fingerprint = {"family": family_name, "model": dataclasses.asdict(params.model), "pretrain": dataclasses.asdict(cfg),
                   "tokenizer": params.tokenizer.__dict__, "data": params.data.__dict__}
    ckpt_dir = paths.checkpoints("pretrain", family_name)
    resume_from = prepare_checkpoints(ckpt_dir, fingerprint)
    callback = LiveCallback(paths.metrics("pretrain", family_name), resume=resume_from is not None)
    args = training_args(cfg, ckpt_dir, cfg.max_steps, max_steps=cfg.max_steps, save_steps=cfg.save_steps,
                         remove_unused_columns=False,
                         train_sampling_strategy="group_by_length")  # less padding for variable-length pairs
    trainer = ObjectiveTrainer(model=model, args=args, train_dataset=ListDataset(train),
                               data_collator=family.pretraining_collator(tokenizer, cfg), callbacks=[callback])
    start = time.perf_counter()
    with family.training_patches(model):
        result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    metrics = {"train/final_loss": result.training_loss, "steps": trainer.state.global_step, "world_size": world,
               "parameters": sum(p.numel() for p in model.parameters()),
               **evaluate_pretraining(model, heldout, trainer.data_collator, cfg.per_device_eval_batch_size,
                                      cfg.seed, most_frequent_token(train, tokenizer)),
               **family.pretraining_probes(train, heldout, tokenizer)}
    # wall-clock figures go to the untracked summary (cache: false) only: the model folder is a DVC output
    timing = {"train_seconds": seconds, "tokens_per_second": trainer.tokens_seen * world / max(seconds, 1e-9)}
    if trainer.is_world_process_zero():
        callback.log_final(metrics)
        base = type(model).__mro__[1].__name__  # e.g. BertForPreTraining, so AutoModel classes load it
        save_model_folder(trainer, tokenizer, paths.pretrained(family_name), {"params": params.to_dict(),
                          "init": source or "scratch", "metrics": metrics}, architecture=base)
        write_json(paths.metrics("pretrain", family_name) / "summary.json", {**metrics, **timing})
        drop_checkpoints(trainer, ckpt_dir)
    metrics.update(timing)
    log.info("pretrain %s: %s", family_name, {k: round(v, 4) for k, v in metrics.items() if math.isfinite(v)})
    return metrics
