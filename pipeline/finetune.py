"""finetune stage: train a sequence classifier from the pretrained folder, another checkpoint, or random init;
select the best epoch on validation macro-F1; evaluate it on the test split."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, DataCollatorWithPadding, Trainer

from pipeline.config import ConfigError, Params
from pipeline.data import read_split
from pipeline.families import Family, check_family_keys, get_family
from pipeline.io import read_json, write_json
from pipeline.metrics import classification_metrics, prediction_rows
from pipeline.paths import Paths
from pipeline.pretrain import ListDataset
from pipeline.model_limits import position_limit
from pipeline.training import (LiveCallback, drop_checkpoints, prepare_checkpoints, resolve_checkpoint,
                               save_model_folder, set_threads, set_training_attention, training_args,
                               world_size)

log = logging.getLogger(__name__)


def resolve_init(init: str, family: Family, paths: Paths, key: str = "finetune.init",
                 otherwise: str = "set finetune.init to random or a path") -> str | None:
    """The from_pretrained source for `init`, the value of `key` (None for random init), checked before any work;
    `otherwise`: the other fix the error names when the pretrained folder is missing."""
    if init == "random":
        return None
    if init == "pretrained":
        source = paths.pretrained(family.name)
        if not (source / "config.json").exists():
            raise ConfigError(f"{key}=pretrained but {source} holds no pretrained model; run "
                              f"`dvc repro pretrain@{family.name}` first, or {otherwise}")
        return str(source)
    return resolve_checkpoint(init, family, key, "`pretrained` or `random`")


def build_classifier(family: Family, source: str | None, params: Params, paths: Paths, label2id: dict):
    id2label = {i: label for label, i in label2id.items()}
    # every new weight (all of them, or the classifier head on a checkpoint) from the seed: the Trainer seeds
    # only after the model exists
    torch.manual_seed(params.finetune.seed)
    if source is None:  # the "no pretraining" ablation: same tokenizer and shape, random weights
        tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer(family.name))
        config = family.build_config(params.model, tokenizer, id2label=id2label, label2id=label2id)
        model = family.classifier_for(config)(config)
        family.initialize(model, params.pretrain)  # as a new pretraining model starts: only pretraining differs
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # model.dropout / attention_dropout again: pretraining may have run without them (pretrain.dropout)
        dropout = family.dropout_config(params.model)
        model = family.classifier_for(AutoConfig.from_pretrained(source)).from_pretrained(
            source, num_labels=len(label2id), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
            **dropout)
    family.apply_dropout(model, params.model)
    if source is not None and params.finetune.reinit_top_layers is not None:
        _reinit(model, family.top_modules(model, params.finetune.reinit_top_layers), params.finetune.seed)
    check_max_length(model.config, tokenizer, params.finetune.max_length)
    set_training_attention(model, params.finetune)
    return model, tokenizer


def _reinit(model, modules: list[torch.nn.Module], seed: int) -> None:
    """Give `modules` fresh weights with the model's own initializer (Zhang et al., 2021: re-initialising
    the top of a pretrained encoder helps when few fine-tuning examples are available)."""
    torch.manual_seed(seed)
    for module in modules:
        # transformers 5 marks every weight from_pretrained loaded, and its init helpers skip marked tensors: without
        # clearing the mark, _init_weights leaves a loaded model exactly as it was
        for tensor in (*module.parameters(), *module.buffers()):
            tensor._is_hf_initialized = False
        module.apply(model._init_weights)


def check_max_length(config, tokenizer, max_length: int) -> None:
    """finetune.max_length must fit the model's positions; the saved tokenizer gets the model's limit."""
    positions = position_limit(config.to_dict()) or -1  # XLNet: none, relative positions
    if positions > 0 and max_length > positions:
        raise ConfigError(f"finetune.max_length={max_length} exceeds the model's {positions} position "
                          f"embeddings; set finetune.max_length <= {positions}")
    if positions > 0:  # so that a later user of this folder cannot feed more tokens than the model has
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)


MEGABATCH = 50  # batches per length-sorted group, transformers' LengthGroupedSampler's cap


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Each epoch: shuffle, sort groups of up to MEGABATCH batches by length, cut them into batches, shuffle
    the batches. transformers' LengthGroupedSampler also asks for 4 groups at least, so below 4 x 32 x 50 rows
    its groups shrink, and a 100-review subset gets 1-batch groups: no grouping at all. Then 3 batches in 4 hold
    a review padded to 256 tokens, and a curves run at n = 100 spent 0.76 s a step where a length-sorted epoch
    averages 0.3 s (BERT small, bf16, 2 cores). Random from torch's generator, which the Trainer seeds."""

    def __init__(self, lengths: list[int], batch_size: int):
        super().__init__()
        self.lengths, self.batch_size = lengths, batch_size

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        # the n % batch_size rows that make the short batch are random ones, and it comes last, so the
        # DataLoader's cut into batch_size rows falls on batch edges
        whole = len(order) - len(order) % self.batch_size
        batches, group_rows = [], self.batch_size * MEGABATCH
        for start in range(0, whole, group_rows):
            group = sorted(order[start:min(start + group_rows, whole)], key=self.lengths.__getitem__)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        for b in torch.randperm(len(batches)).tolist():
            yield from batches[b]
        yield from order[whole:]


class WeightedTrainer(Trainer):
    """Cross-entropy with per-class weights (None: plain), so a skewed label set does not cost macro-F1;
    training batches grouped by length (LengthGroupedBatches)."""

    def __init__(self, *args, class_weights: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def _get_train_sampler(self, train_dataset=None):
        rows = self.train_dataset if train_dataset is None else train_dataset
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedBatches([len(rows[i]["input_ids"]) for i in range(len(rows))], batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def _encode(tokenizer, texts: list[str], labels: list[int], max_length: int, by_length: bool = False) -> ListDataset:
    """Tokenized rows with their labels; `by_length`: shortest first, for evaluation. The Trainer pads each
    evaluation batch to its longest row, so in split order nearly every batch of 64 reviews holds one that
    reaches max_length (256 tokens) and is padded to it; sorted, a batch pads to its neighbours' length."""
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i])) if by_length else range(len(texts))
    return ListDataset([{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in order])


def _eval_metrics(id2label: dict[int, str]):
    def compute(pred) -> dict[str, float]:
        m = classification_metrics(pred.label_ids, np.argmax(pred.predictions, -1), id2label)
        return {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"]}
    return compute


def _class_weights(labels: list[int], n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    return torch.tensor(len(labels) / (n * np.maximum(counts, 1)), dtype=torch.float32)


def _make_trainer(family_name: str, params: Params, paths: Paths, stage: str, init: str, model, tokenizer,
                  data: dict, train_labels: list[int], id2label: dict[int, str]):
    """The Trainer (class-weighted loss, per-epoch eval and selection on macro-F1), its dvclive callback,
    and the checkpoint folder with the checkpoint to resume from, if any."""
    cfg = params.finetune
    fingerprint = {"family": family_name, "init": init, "finetune": dataclasses.asdict(cfg),
                   "model": params.model.__dict__, "data": params.data.__dict__}
    ckpt_dir = paths.checkpoints(stage, family_name)
    resume_from = prepare_checkpoints(ckpt_dir, fingerprint)
    callback = LiveCallback(paths.metrics(stage, family_name), resume=resume_from is not None)
    trainer = make_trainer(params, model, tokenizer, data, train_labels, id2label, ckpt_dir, [callback])
    return trainer, callback, ckpt_dir, resume_from


def make_trainer(params: Params, model, tokenizer, data: dict, train_labels: list[int], id2label: dict[int, str],
                 ckpt_dir: Path, callbacks: list, epochs: float | None = None, eval_every: int = 1):
    """The fine-tuning Trainer: class-weighted loss, evaluation and selection on validation macro-F1 every
    `eval_every` epochs (1: at each epoch end), `epochs` (None: finetune.num_train_epochs)."""
    cfg = params.finetune
    epochs = cfg.num_train_epochs if epochs is None else epochs
    steps_per_epoch = math.ceil(len(data["train"]) / (cfg.per_device_train_batch_size * world_size()))
    schedule = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if eval_every > 1:  # long runs on small subsets: as many evaluations as a plain run, not one per epoch
        steps = eval_every * steps_per_epoch
        schedule = {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": steps, "save_steps": steps}
    args = training_args(cfg, ckpt_dir, math.ceil(epochs * steps_per_epoch), num_train_epochs=epochs,
                         load_best_model_at_end=True, metric_for_best_model="f1_macro", greater_is_better=True,
                         **schedule)
    weights = _class_weights(train_labels, len(id2label)) if cfg.class_weighted_loss else None
    return WeightedTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                           data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
                           compute_metrics=_eval_metrics(id2label), callbacks=callbacks, class_weights=weights)


def finetune(family_name: str, params: Params, paths: Paths = Paths(), ablation: bool = False,
             seed_run: bool = False) -> dict:
    """Fine-tune and test one classifier. `ablation`: from finetune.ablation_init; `seed_run`: a repeat with
    `finetune.seed`, written under artifacts/seeds/ so the main model stays as it is."""
    family, cfg = get_family(family_name), params.finetune
    check_family_keys(params)
    set_threads(params.threads)
    init = cfg.ablation_init if ablation else cfg.init
    source = resolve_init(init, family, paths)
    train = read_split("train", paths)
    model, tokenizer, data, id2label = _setup(family, source, params, paths, train)
    stage = "finetune_random_init" if ablation else "finetune"
    out_dir = paths.model(family_name, ablation)
    if seed_run:
        stage, out_dir = f"finetune_seed{cfg.seed}", paths.seed_run(family_name, cfg.seed)
    trainer, callback, ckpt_dir, resume_from = _make_trainer(family_name, params, paths, stage, init, model,
                                                             tokenizer, data, train[1], id2label)
    start = time.perf_counter()
    with family.training_patches(model):
        trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    summary = {"best_validation_f1_macro": trainer.state.best_metric or float("nan")}
    test: dict = {}
    if trainer.is_world_process_zero():
        save_model_folder(trainer, tokenizer, out_dir, {"params": params.to_dict(), "init": init, "source": source,
                                                        "metrics": summary})
        test, actual, predicted = score_test_split(out_dir, params, paths)
        summary.update({"test/accuracy": test["accuracy"], "test/f1_macro": test["f1_macro"]})
        callback.log_final(summary)
        write_json(paths.metrics(stage, family_name) / "test.json", test)
        write_json(paths.metrics(stage, family_name) / "predictions.json",
                   prediction_rows(actual, predicted, id2label))
        drop_checkpoints(trainer, ckpt_dir)
    log.info("%s %s: %.0f s of training", stage, family_name, seconds)  # a log, not a tracked metric
    return {"summary": summary, "test": test}


def _setup(family: Family, source: str | None, params: Params, paths: Paths, train: tuple[list[str], list[int]]):
    """(model, tokenizer, {train, validation} datasets, id2label) for one run; the test split is scored later
    from the saved folder (score_test_split)."""
    label2id = read_json(paths.label_map)
    model, tokenizer = build_classifier(family, source, params, paths, label2id)
    splits = {"train": train, "validation": read_split("validation", paths)}
    data = {name: _encode(tokenizer, *splits[name], params.finetune.max_length, by_length=name == "validation")
            for name in splits}
    return model, tokenizer, data, {i: label for label, i in label2id.items()}


def train_and_score(family_name: str, params: Params, paths: Paths, source: str | None,
                    train: tuple[list[str], list[int]], work_dir: Path, epochs: float | None = None,
                    eval_every: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    """One fine-tuning run on `train` (texts, label ids) with `finetune.seed`, chosen on validation as the
    finetune stage does, and scored on the test split through the same path: (test metrics plus the chosen
    checkpoint's `best_validation_f1_macro`, [n] gold ids, [n] predicted ids). Checkpoints and the model folder
    go to `work_dir`, which the caller removes."""
    family = get_family(family_name)
    model, tokenizer, data, id2label = _setup(family, source, params, paths, train)
    trainer = make_trainer(params, model, tokenizer, data, train[1], id2label, work_dir / "checkpoints", [],
                           epochs, eval_every)
    with family.training_patches(model):
        trainer.train()
    save_model_folder(trainer, tokenizer, work_dir / "model", {"params": params.to_dict(), "source": source})
    quality, actual, predicted = score_test_split(work_dir / "model", params, paths)
    return {**quality, "best_validation_f1_macro": trainer.state.best_metric}, actual, predicted


def score_test_split(folder: Path, params: Params, paths: Paths) -> tuple[dict, np.ndarray, np.ndarray]:
    """Test metrics of the saved classifier through evaluate's own PyTorch path (same predictor, batch size
    and threads), so `dvc metrics show` and evaluate's PyTorch row agree to the last digit."""
    from pipeline.scoring import read_test, score_predictor
    from pipeline.runtime.torch_backend import TorchPredictor

    test = read_test(paths)
    predictor = TorchPredictor(folder, device=params.evaluate.torch_device, threads=params.evaluate.threads)
    quality, predicted, _ = score_predictor(predictor, test, params.evaluate.batch_size, str(folder))
    actual = test.ids_for(predictor.id2label, str(folder))
    return quality, actual, predicted
