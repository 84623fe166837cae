"""pretrain stage: pretrain a family's model from scratch with its own objectives (BERT: MLM + NSP, XLNet: PLM)."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import torch
from transformers import AutoTokenizer

from pipeline.config import Params
from pipeline.data import read_split
from pipeline.families import get_family
from pipeline.io import write_json
from pipeline.paths import Paths
from pipeline.training import (LiveCallback, drop_checkpoints, ObjectiveTrainer, prepare_checkpoints, save_model_folder,
                               set_threads, summarize_objectives, training_args)

log = logging.getLogger(__name__)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


@torch.no_grad()
def evaluate_pretraining(model, examples: list[dict], collator, batch_size: int, seed: int) -> dict[str, float]:
    """Held-out loss and accuracy per objective (MLM/NSP/PLM), with seeded masking so runs compare."""
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    sums: dict[str, float] = {"_batches": 0}
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in collator(examples[start: start + batch_size]).items()}
        for key, value in model(**batch).items():
            if key != "loss" and key.endswith(("_loss", "_correct", "_total")):
                sums[key] = sums.get(key, 0.0) + float(value)
        sums["_batches"] += 1
    torch.random.set_rng_state(state)
    model.train()
    return {f"heldout/{k}": v for k, v in summarize_objectives(sums).items()}


def pretrain(family_name: str, params: Params, paths: Paths = Paths()) -> dict:
    family, cfg = get_family(family_name), params.pretrain
    set_threads(params.threads)
    cfg = dataclasses.replace(cfg, max_steps=cfg.max_steps_by_family.get(family_name, cfg.max_steps))
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer(family_name))
    train_texts, _ = read_split("train", paths)
    heldout_texts, _ = read_split("validation", paths)
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun / accelerate launch
    n_train = cfg.max_steps * cfg.per_device_train_batch_size * world
    train = family.pretraining_examples(train_texts, tokenizer, cfg, n_train, cfg.seed)
    heldout = family.pretraining_examples(heldout_texts, tokenizer, cfg,
                                          cfg.eval_max_batches * cfg.per_device_eval_batch_size, cfg.seed + 1)
    torch.manual_seed(cfg.seed)  # the initial weights: the Trainer seeds only after the model exists
    model = family.pretraining_model(family.build_config(params.model, tokenizer))
    fingerprint = {"family": family_name, "model": params.model.__dict__, "pretrain": dataclasses.asdict(cfg),
                   "tokenizer": params.tokenizer.__dict__, "data": params.data.__dict__}
    ckpt_dir = paths.checkpoints("pretrain", family_name)
    resume_from = prepare_checkpoints(ckpt_dir, fingerprint)
    callback = LiveCallback(paths.metrics("pretrain", family_name), resume=resume_from is not None)
    args = training_args(cfg, ckpt_dir, max_steps=cfg.max_steps, save_steps=cfg.save_steps,
                         remove_unused_columns=False,
                         train_sampling_strategy="group_by_length")  # less padding for variable-length pairs
    trainer = ObjectiveTrainer(model=model, args=args, train_dataset=ListDataset(train),
                               data_collator=family.pretraining_collator(tokenizer, cfg), callbacks=[callback])
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    metrics = {"train/final_loss": result.training_loss, "steps": trainer.state.global_step, "world_size": world,
               "parameters": sum(p.numel() for p in model.parameters()),
               **evaluate_pretraining(model, heldout, trainer.data_collator, cfg.per_device_eval_batch_size,
                                      cfg.seed)}
    # wall-clock figures go to the untracked summary (cache: false) only: the model folder is a DVC output
    timing = {"train_seconds": seconds, "tokens_per_second": trainer.tokens_seen * world / max(seconds, 1e-9)}
    if trainer.is_world_process_zero():
        callback.log_final(metrics)
        base = type(model).__mro__[1].__name__  # e.g. BertForPreTraining, so AutoModel classes load it
        save_model_folder(trainer, tokenizer, paths.pretrained(family_name), {"params": params.to_dict(),
                          "metrics": metrics}, architecture=base)
        write_json(paths.metrics("pretrain", family_name) / "summary.json", {**metrics, **timing})
        drop_checkpoints(trainer, ckpt_dir)
    metrics.update(timing)
    log.info("pretrain %s: %s", family_name, {k: round(v, 4) for k, v in metrics.items() if math.isfinite(v)})
    return metrics
